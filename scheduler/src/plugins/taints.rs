//! TaintToleration (tainttoleration/taint_toleration.go): untolerated `NoSchedule`/`NoExecute`
//! taints reject the node; untolerated `PreferNoSchedule` taints lower its score.

use kapsel_api::{Taint, Toleration};

use crate::framework::{
    default_normalize_score, CycleState, FilterPlugin, Reason, ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::snapshot::NodeInfo;

/// `v1.Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if key != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

pub struct TaintToleration;

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }
    fn filter(&self, state: &CycleState<'_>, node: &NodeInfo) -> Status {
        let tolerations = state.pod.tolerations();
        let untolerated = node.taints().iter().find(|taint| {
            (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                && !tolerations.iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            None => Status::success(),
            Some(taint) => Status::unresolvable(Reason::UntoleratedTaint {
                key: taint.key.clone(),
                value: taint.value.clone().unwrap_or_default(),
            }),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }
    /// Number of `PreferNoSchedule` taints not tolerated by a toleration whose effect is empty or
    /// `PreferNoSchedule`.
    fn score(&self, state: &CycleState<'_>, node: &NodeInfo) -> i64 {
        let tolerations = state.pod.tolerations();
        node.taints()
            .iter()
            .filter(|taint| taint.effect == "PreferNoSchedule")
            .filter(|taint| {
                !tolerations.iter().any(|t| {
                    matches!(
                        t.effect.as_deref(),
                        None | Some("") | Some("PreferNoSchedule")
                    ) && tolerates(t, taint)
                })
            })
            .count() as i64
    }
    fn normalize(&self, _state: &CycleState<'_>, scores: &mut [i64]) {
        default_normalize_score(MAX_NODE_SCORE, true, scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }
    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: (!op.is_empty()).then(|| op.into()),
            value: (!value.is_empty()).then(|| value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: None,
        }
    }

    #[test]
    fn tolerates_table() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        let cases = [
            (
                "equal key value effect",
                tol("dedicated", "Equal", "gpu", "NoSchedule"),
                true,
            ),
            (
                "default operator is Equal",
                tol("dedicated", "", "gpu", "NoSchedule"),
                true,
            ),
            (
                "wrong value",
                tol("dedicated", "Equal", "cpu", "NoSchedule"),
                false,
            ),
            (
                "exists ignores value",
                tol("dedicated", "Exists", "", "NoSchedule"),
                true,
            ),
            (
                "empty effect matches all effects",
                tol("dedicated", "Exists", "", ""),
                true,
            ),
            (
                "other effect",
                tol("dedicated", "Exists", "", "NoExecute"),
                false,
            ),
            (
                "empty key + Exists tolerates everything",
                tol("", "Exists", "", ""),
                true,
            ),
            ("other key", tol("team", "Exists", "", ""), false),
            (
                "unknown operator",
                tol("dedicated", "Like", "gpu", ""),
                false,
            ),
        ];
        for (name, tl, want) in cases {
            assert_eq!(tolerates(&tl, &t), want, "{name}");
        }
    }

    #[test]
    fn filter_effects_table() {
        // (taint effect, pod tolerates it, want rejected)
        let cases = [
            ("NoSchedule", false, true),
            ("NoSchedule", true, false),
            ("NoExecute", false, true),
            ("NoExecute", true, false),
            // PreferNoSchedule never rejects, only scores.
            ("PreferNoSchedule", false, false),
        ];
        for (effect, tolerate, rejected) in cases {
            let node = NodeBuilder::new("n")
                .taint("dedicated", "gpu", effect)
                .info();
            let mut pb = PodBuilder::new("p");
            if tolerate {
                pb = pb.toleration("dedicated", "Equal", "gpu", effect);
            }
            let got = first_failure(&[&TaintToleration], &pb.info(), &node);
            let want = rejected.then(|| Reason::UntoleratedTaint {
                key: "dedicated".into(),
                value: "gpu".into(),
            });
            assert_eq!(got, want, "effect {effect} tolerate {tolerate}");
        }
    }

    #[test]
    fn filter_reports_first_untolerated_taint_and_its_code() {
        let node = NodeBuilder::new("n")
            .taint("a", "1", "NoSchedule")
            .taint("b", "", "NoExecute")
            .info();
        let pod = PodBuilder::new("p")
            .toleration("a", "Exists", "", "")
            .info();
        let st = TaintToleration.filter(&CycleState::new(&pod), &node);
        assert_eq!(
            st.code,
            crate::framework::Code::UnschedulableAndUnresolvable
        );
        assert_eq!(
            st.reasons[0].to_string(),
            "node(s) had untolerated taint {b: }"
        );
    }

    #[test]
    fn prefer_no_schedule_score_table() {
        // Nodes with 0, 1, 2 untolerated PreferNoSchedule taints: raw 0,1,2;
        // reverse-normalised: 100 - 100*s/2 = 100, 50, 0.
        let nodes = [
            NodeBuilder::new("a").info(),
            NodeBuilder::new("b")
                .taint("x", "", "PreferNoSchedule")
                .info(),
            NodeBuilder::new("c")
                .taint("x", "", "PreferNoSchedule")
                .taint("y", "", "PreferNoSchedule")
                .taint("z", "", "NoSchedule")
                .info(),
        ];
        let pod = PodBuilder::new("p").info();
        assert_eq!(run_score(&TaintToleration, &pod, &nodes), vec![100, 50, 0]);
        // Tolerating x with effect PreferNoSchedule: raw 0,0,1 → 100,100,0.
        let pod = PodBuilder::new("p")
            .toleration("x", "Exists", "", "PreferNoSchedule")
            .info();
        assert_eq!(run_score(&TaintToleration, &pod, &nodes), vec![100, 100, 0]);
        // A NoSchedule toleration does not count for PreferNoSchedule taints.
        let pod = PodBuilder::new("p")
            .toleration("x", "Exists", "", "NoSchedule")
            .info();
        assert_eq!(run_score(&TaintToleration, &pod, &nodes), vec![100, 50, 0]);
    }
}
