//! Node lifecycle (`pkg/controller/nodelifecycle` + the NoExecute taint manager), as a pure plan:
//! agents heartbeat by renewing a Lease in `kube-node-lease`; a node whose heartbeat is older than
//! the grace period gets `Ready=Unknown` and the `node.kubernetes.io/unreachable:NoExecute` taint,
//! and its pods are deleted once their toleration of that taint runs out (pods without one get
//! the default toleration, like Kubernetes' DefaultTolerationSeconds admission). A node whose
//! lease is renewed again gets `Ready=True` back and loses the taint.

use std::collections::HashMap;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use kapsel_api::labels as wk;
use kapsel_api::{Condition, Lease, Node, ObjectReference, Pod, Taint, Time, Toleration};

use crate::events::{object_ref, EventSpec};
use crate::podutil;

pub const NO_EXECUTE: &str = "NoExecute";
pub const REASON_NODE_STATUS_UNKNOWN: &str = "NodeStatusUnknown";

#[derive(Clone, Debug, PartialEq)]
pub enum NodeAction {
    /// Replace the node's Ready condition.
    SetReady { node: String, condition: Condition },
    /// Replace the node's taints (spec).
    SetTaints { node: String, taints: Vec<Taint> },
    /// Set the pod's Ready condition to False (`MarkPodsNotReady`).
    MarkPodNotReady { namespace: String, name: String },
    /// Delete the pod (`TaintManagerEviction`).
    EvictPod {
        namespace: String,
        name: String,
        uid: String,
    },
    Event {
        involved: ObjectReference,
        event: EventSpec,
    },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodePlan {
    pub actions: Vec<NodeAction>,
    pub requeue_after: Option<std::time::Duration>,
}

#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// `--node-monitor-grace-period` (kapsel default 10 s; Kubernetes 40–50 s).
    pub grace: Duration,
    /// `--pod-eviction-timeout`: default toleration of unreachable/not-ready (kapsel 5 s; Kubernetes 300 s).
    pub toleration: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grace: Duration::seconds(10),
            toleration: Duration::seconds(5),
        }
    }
}

fn ready_condition(n: &Node) -> Option<&Condition> {
    n.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The node's last heartbeat: lease renewal, else the Ready condition's heartbeat, else creation.
pub fn last_heartbeat(n: &Node, lease: Option<&Lease>) -> Option<DateTime<Utc>> {
    let l = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.or(s.acquire_time))
        .map(|t| t.0);
    let h = ready_condition(n)
        .and_then(|c| c.last_heartbeat_time)
        .map(|t| t.0);
    let c = n.metadata.creation_timestamp.map(|t| t.0);
    [l, h, c].into_iter().flatten().max()
}

/// `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        _ => {
            key == taint.key
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// How long `pod` tolerates `taint`: `None` = forever.
pub fn toleration_for(pod: &Pod, taint: &Taint, default: Duration) -> Option<Duration> {
    let tols: Vec<&Toleration> = pod
        .spec
        .as_ref()
        .map(|s| {
            s.tolerations
                .iter()
                .filter(|t| tolerates(t, taint))
                .collect()
        })
        .unwrap_or_default();
    if tols.is_empty() {
        return Some(default);
    }
    if tols.iter().any(|t| t.toleration_seconds.is_none()) {
        return None;
    }
    tols.iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map(|s| Duration::seconds(s.max(0)))
}

fn node_ref(n: &Node) -> ObjectReference {
    let mut r = object_ref(n);
    r.namespace = None;
    r
}

fn min_dur(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// One pass over all nodes. `leases` are the Leases of `kube-node-lease`.
pub fn plan(
    nodes: &[Node],
    leases: &[Lease],
    pods: &[Pod],
    now: DateTime<Utc>,
    cfg: Config,
) -> NodePlan {
    let mut out = NodePlan::default();
    let leases: HashMap<&str, &Lease> = leases.iter().map(|l| (l.metadata.name(), l)).collect();
    let mut pods_by_node: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for p in pods {
        if let Some(n) = podutil::node_name(p) {
            pods_by_node.entry(n).or_default().push(p);
        }
    }
    let now_s = now.trunc_subsecs(0);
    let mut next: Option<Duration> = None;
    for n in nodes {
        let name = n.metadata.name();
        let Some(last) = last_heartbeat(n, leases.get(name).copied()) else {
            continue;
        };
        let stale = now - last > cfg.grace;
        let ready = ready_condition(n);
        let ready_status = ready.map(|c| c.status.as_str()).unwrap_or("Unknown");
        let mut taints = n
            .spec
            .as_ref()
            .map(|s| s.taints.clone())
            .unwrap_or_default();
        let before = taints.clone();
        let effective_status = if stale {
            if ready_status != "Unknown" {
                out.actions.push(NodeAction::SetReady {
                    node: name.into(),
                    condition: Condition {
                        type_: "Ready".into(),
                        status: "Unknown".into(),
                        last_heartbeat_time: ready.and_then(|c| c.last_heartbeat_time),
                        last_transition_time: Some(Time(now_s)),
                        reason: Some(REASON_NODE_STATUS_UNKNOWN.into()),
                        message: Some("Kubelet stopped posting node status.".into()),
                        ..Default::default()
                    },
                });
                out.actions.push(NodeAction::Event {
                    involved: node_ref(n),
                    event: EventSpec::normal(
                        "NodeNotReady",
                        format!("Node {name} status is now: NodeNotReady"),
                    ),
                });
                for p in pods_by_node.get(name).into_iter().flatten() {
                    if podutil::is_ready(p) {
                        out.actions.push(NodeAction::MarkPodNotReady {
                            namespace: p.metadata.namespace().into(),
                            name: p.metadata.name().into(),
                        });
                    }
                }
            }
            "Unknown"
        } else {
            // Fresh heartbeat: a Ready=Unknown this controller set is lifted.
            if ready_status == "Unknown" {
                out.actions.push(NodeAction::SetReady {
                    node: name.into(),
                    condition: Condition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_heartbeat_time: Some(Time(last.trunc_subsecs(0))),
                        last_transition_time: Some(Time(now_s)),
                        reason: Some("KubeletReady".into()),
                        message: Some("node lease renewed: agent is posting ready status".into()),
                        ..Default::default()
                    },
                });
                out.actions.push(NodeAction::Event {
                    involved: node_ref(n),
                    event: EventSpec::normal(
                        "NodeReady",
                        format!("Node {name} status is now: NodeReady"),
                    ),
                });
            }
            next = min_dur(next, last + cfg.grace - now);
            if ready_status == "Unknown" {
                "True"
            } else {
                ready_status
            }
        };
        // Desired NoExecute taint for the effective Ready status.
        let want = match effective_status {
            "Unknown" => Some(wk::TAINT_UNREACHABLE),
            "False" => Some(wk::TAINT_NOT_READY),
            _ => None,
        };
        taints.retain(|t| {
            !(t.effect == NO_EXECUTE
                && (t.key == wk::TAINT_UNREACHABLE || t.key == wk::TAINT_NOT_READY)
                && Some(t.key.as_str()) != want)
        });
        if let Some(key) = want {
            if !taints
                .iter()
                .any(|t| t.key == key && t.effect == NO_EXECUTE)
            {
                taints.push(Taint {
                    key: key.into(),
                    value: None,
                    effect: NO_EXECUTE.into(),
                    time_added: Some(Time(now_s)),
                });
            }
        }
        if taints != before {
            out.actions.push(NodeAction::SetTaints {
                node: name.into(),
                taints: taints.clone(),
            });
        }
        // Taint manager: evict pods whose toleration of a NoExecute taint ran out.
        for taint in taints.iter().filter(|t| t.effect == NO_EXECUTE) {
            let added = taint.time_added.map(|t| t.0).unwrap_or(now);
            for p in pods_by_node.get(name).into_iter().flatten() {
                if podutil::is_terminating(p) {
                    continue;
                }
                let Some(tol) = toleration_for(p, taint, cfg.toleration) else {
                    continue;
                };
                let at = added + tol;
                if at <= now {
                    out.actions.push(NodeAction::EvictPod {
                        namespace: p.metadata.namespace().into(),
                        name: p.metadata.name().into(),
                        uid: p.metadata.uid().into(),
                    });
                    let mut r = object_ref(*p);
                    r.resource_version = None;
                    out.actions.push(NodeAction::Event {
                        involved: r,
                        event: EventSpec::normal(
                            "TaintManagerEviction",
                            format!(
                                "Marking for deletion Pod {}/{}",
                                p.metadata.namespace(),
                                p.metadata.name()
                            ),
                        ),
                    });
                } else {
                    next = min_dur(next, at - now);
                }
            }
        }
    }
    out.requeue_after = next.and_then(|d| (d + Duration::milliseconds(100)).to_std().ok());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{LeaseSpec, MicroTime, NodeSpec, NodeStatus, ObjectMeta, PodSpec, PodStatus};

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn node(name: &str, ready: &str) -> Node {
        let mut n = Node::with_meta(ObjectMeta::named(name));
        n.metadata.creation_timestamp = Some(Time(t0() - Duration::hours(1)));
        n.status = Some(NodeStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ready.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        n
    }

    fn lease(name: &str, renewed_ago: i64) -> Lease {
        let mut l = Lease::with_meta(ObjectMeta::namespaced(wk::NODE_LEASE_NAMESPACE, name));
        l.spec = Some(LeaseSpec {
            holder_identity: Some(name.into()),
            renew_time: Some(MicroTime(t0() - Duration::seconds(renewed_ago))),
            ..Default::default()
        });
        l
    }

    fn pod(name: &str, node: &str, tolerations: Vec<Toleration>) -> Pod {
        let mut p = Pod::with_meta(ObjectMeta::namespaced("default", name));
        p.metadata.uid = Some(format!("uid-{name}"));
        p.spec = Some(PodSpec {
            node_name: Some(node.into()),
            tolerations,
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    fn taint(key: &str, added_ago: i64) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: NO_EXECUTE.into(),
            time_added: Some(Time(t0() - Duration::seconds(added_ago))),
        }
    }

    #[test]
    fn fresh_lease_keeps_node_ready_and_requeues_at_expiry() {
        let p = plan(
            &[node("n1", "True")],
            &[lease("n1", 3)],
            &[],
            t0(),
            Config::default(),
        );
        assert!(p.actions.is_empty());
        let after = p.requeue_after.unwrap();
        assert!(
            after > std::time::Duration::from_secs(6) && after < std::time::Duration::from_secs(8)
        );
    }

    #[test]
    fn stale_lease_marks_unknown_taints_and_marks_pods_not_ready() {
        let pods = [pod("a", "n1", vec![]), pod("b", "n2", vec![])];
        let p = plan(
            &[node("n1", "True"), node("n2", "True")],
            &[lease("n1", 11), lease("n2", 1)],
            &pods,
            t0(),
            Config::default(),
        );
        let ready = p.actions.iter().find_map(|a| match a {
            NodeAction::SetReady { node, condition } if node == "n1" => Some(condition.clone()),
            _ => None,
        });
        let ready = ready.unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("Unknown", Some(REASON_NODE_STATUS_UNKNOWN))
        );
        let taints = p.actions.iter().find_map(|a| match a {
            NodeAction::SetTaints { node, taints } if node == "n1" => Some(taints.clone()),
            _ => None,
        });
        assert_eq!(taints.unwrap()[0].key, wk::TAINT_UNREACHABLE);
        assert!(p.actions.contains(&NodeAction::MarkPodNotReady {
            namespace: "default".into(),
            name: "a".into()
        }));
        assert!(p.actions.iter().any(
            |a| matches!(a, NodeAction::Event { event, .. } if event.reason == "NodeNotReady")
        ));
        // No eviction yet: the taint was added just now, the default toleration is 5 s.
        assert!(!p
            .actions
            .iter()
            .any(|a| matches!(a, NodeAction::EvictPod { .. })));
        assert!(p.requeue_after.unwrap() <= std::time::Duration::from_secs(6));
    }

    #[test]
    fn pods_are_evicted_after_their_toleration() {
        let mut n = node("n1", "Unknown");
        n.spec = Some(NodeSpec {
            taints: vec![taint(wk::TAINT_UNREACHABLE, 6)],
            ..Default::default()
        });
        let tol = |secs: Option<i64>| Toleration {
            key: Some(wk::TAINT_UNREACHABLE.into()),
            operator: Some("Exists".into()),
            effect: Some(NO_EXECUTE.into()),
            toleration_seconds: secs,
            ..Default::default()
        };
        let pods = [
            pod("default-tol", "n1", vec![]),
            pod("tolerates-60", "n1", vec![tol(Some(60))]),
            pod("tolerates-forever", "n1", vec![tol(None)]),
            pod("tolerates-2", "n1", vec![tol(Some(2))]),
        ];
        let p = plan(&[n], &[lease("n1", 30)], &pods, t0(), Config::default());
        let evicted: Vec<&str> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                NodeAction::EvictPod { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(evicted, vec!["default-tol", "tolerates-2"]);
        assert!(p.actions.iter().any(|a| matches!(a, NodeAction::Event { event, .. } if event.reason == "TaintManagerEviction")));
        // tolerates-60 is due in 54 s.
        let after = p.requeue_after.unwrap();
        assert!(
            after > std::time::Duration::from_secs(53)
                && after < std::time::Duration::from_secs(55)
        );
    }

    #[test]
    fn returning_lease_makes_node_ready_and_removes_taint() {
        let mut n = node("n1", "Unknown");
        n.spec = Some(NodeSpec {
            taints: vec![
                taint(wk::TAINT_UNREACHABLE, 60),
                Taint {
                    key: "dedicated".into(),
                    value: Some("gpu".into()),
                    effect: "NoSchedule".into(),
                    time_added: None,
                },
            ],
            ..Default::default()
        });
        let p = plan(
            &[n],
            &[lease("n1", 0)],
            &[pod("a", "n1", vec![])],
            t0(),
            Config::default(),
        );
        assert!(p.actions.iter().any(
            |a| matches!(a, NodeAction::SetReady { condition, .. } if condition.status == "True")
        ));
        let taints = p.actions.iter().find_map(|a| match a {
            NodeAction::SetTaints { taints, .. } => Some(taints.clone()),
            _ => None,
        });
        assert_eq!(
            taints
                .unwrap()
                .iter()
                .map(|t| t.key.as_str())
                .collect::<Vec<_>>(),
            vec!["dedicated"]
        );
        assert!(!p
            .actions
            .iter()
            .any(|a| matches!(a, NodeAction::EvictPod { .. })));
    }

    #[test]
    fn not_ready_nodes_get_the_not_ready_taint() {
        let p = plan(
            &[node("n1", "False")],
            &[lease("n1", 1)],
            &[],
            t0(),
            Config::default(),
        );
        let taints = p.actions.iter().find_map(|a| match a {
            NodeAction::SetTaints { taints, .. } => Some(taints.clone()),
            _ => None,
        });
        assert_eq!(taints.unwrap()[0].key, wk::TAINT_NOT_READY);
    }

    #[test]
    fn toleration_matching() {
        let t = taint(wk::TAINT_UNREACHABLE, 0);
        let all = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(tolerates(&all, &t));
        let other_key = Toleration {
            key: Some("x".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(!tolerates(&other_key, &t));
        let wrong_effect = Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        };
        assert!(!tolerates(&wrong_effect, &t));
    }
}
