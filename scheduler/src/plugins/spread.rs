//! Spreading pods of the same owner across nodes: PodTopologySpread's scoring with Kubernetes'
//! system default constraint on `kubernetes.io/hostname` (maxSkew 3, ScheduleAnyway), counting the
//! pods that share the pod's controller owner (podtopologyspread/scoring.go).
//!
//! Raw score: `round(count · ln(feasible + 2) + (maxSkew − 1))`; normalised so the emptiest node
//! gets 100: `100 · (max + min − s) / max`. A pod without a controller owner skips the plugin.
//! Every node is its own hostname domain (kapsel does not require the hostname label).

use crate::framework::{CycleState, ScorePlugin, MAX_NODE_SCORE};
use crate::snapshot::NodeInfo;

pub const HOSTNAME_MAX_SKEW: i64 = 3;

pub struct Spread;

impl ScorePlugin for Spread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }
    fn pre_score(&self, state: &mut CycleState<'_>, feasible: &[&NodeInfo]) -> bool {
        state.spread_weight = ((feasible.len() + 2) as f64).ln();
        state.pod.owner.is_some()
    }
    fn score(&self, state: &CycleState<'_>, node: &NodeInfo) -> i64 {
        let count = state
            .pod
            .owner
            .as_ref()
            .and_then(|o| node.pods_by_owner.get(o))
            .copied()
            .unwrap_or(0);
        (f64::from(count) * state.spread_weight + (HOSTNAME_MAX_SKEW - 1) as f64).round() as i64
    }
    fn normalize(&self, _state: &CycleState<'_>, scores: &mut [i64]) {
        let (Some(&min), Some(&max)) = (scores.iter().min(), scores.iter().max()) else {
            return;
        };
        for s in scores.iter_mut() {
            *s = if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn node_with(name: &str, owner: &str, n: usize) -> NodeInfo {
        let mut node = NodeBuilder::new(name).info();
        for i in 0..n {
            node.add_pod(&PodBuilder::new(&format!("{name}-{i}")).owner(owner).info());
        }
        node
    }

    #[test]
    fn spread_score_table() {
        // Three feasible nodes → weight ln(5) = 1.609.
        // counts 0, 1, 2 → raw round(2), round(3.609), round(5.219) = 2, 4, 5;
        // normalised 100·(5+2−s)/5 = 100, 60, 40.
        let nodes = [
            node_with("a", "rs-1", 0),
            node_with("b", "rs-1", 1),
            node_with("c", "rs-1", 2),
        ];
        let pod = PodBuilder::new("p").owner("rs-1").info();
        assert_eq!(run_score(&Spread, &pod, &nodes), vec![100, 60, 40]);

        // Pods of another owner do not count: all raw 2 → 100·(2+2−2)/2 = 100 each.
        let pod = PodBuilder::new("p").owner("rs-2").info();
        assert_eq!(run_score(&Spread, &pod, &nodes), vec![100, 100, 100]);

        // Two feasible nodes → ln(4) = 1.386; counts 3, 0 → round(6.159)=6, 2 →
        // 100·(8−6)/6 = 33, 100·(8−2)/6 = 100.
        let nodes = [node_with("a", "rs-1", 3), node_with("b", "rs-1", 0)];
        let pod = PodBuilder::new("p").owner("rs-1").info();
        assert_eq!(run_score(&Spread, &pod, &nodes), vec![33, 100]);
    }

    #[test]
    fn pod_without_owner_skips() {
        let pod = PodBuilder::new("p").info();
        let nodes = [node_with("a", "rs-1", 2)];
        // run_score returns None-equivalent (empty) when pre_score skips.
        assert!(run_score(&Spread, &pod, &nodes).is_empty());
    }

    #[test]
    fn removing_pods_updates_owner_counts() {
        let mut node = NodeBuilder::new("a").info();
        let p = PodBuilder::new("x").owner("rs-1").info();
        node.add_pod(&p);
        node.add_pod(&p);
        node.remove_pod(&p);
        assert_eq!(node.owner_count("rs-1"), 1);
        node.remove_pod(&p);
        assert!(node.pods_by_owner.is_empty());
    }
}
