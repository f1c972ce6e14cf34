//! NodeReady (the node's Ready condition is True) and NodeUnschedulable (cordoned nodes take no
//! new pods unless the pod tolerates `node.kubernetes.io/unschedulable:NoSchedule`).
//!
//! Kubernetes expresses "not ready" as the `node.kubernetes.io/not-ready` taint added by the node
//! lifecycle controller; kapsel checks the condition directly so a node is never picked in the
//! window before that taint lands.

use kapsel_api::Taint;

use crate::framework::{CycleState, FilterPlugin, Reason, Status};
use crate::plugins::taints::tolerates;
use crate::snapshot::NodeInfo;

pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

pub struct NodeReady;

impl FilterPlugin for NodeReady {
    fn name(&self) -> &'static str {
        "NodeReady"
    }
    fn filter(&self, _state: &CycleState<'_>, node: &NodeInfo) -> Status {
        if node.ready {
            Status::success()
        } else {
            Status::unresolvable(Reason::NodeNotReady)
        }
    }
}

pub struct NodeUnschedulable;

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
    fn filter(&self, state: &CycleState<'_>, node: &NodeInfo) -> Status {
        if !node.unschedulable {
            return Status::success();
        }
        let taint = Taint {
            key: TAINT_NODE_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if state.pod.tolerations().iter().any(|t| tolerates(t, &taint)) {
            Status::success()
        } else {
            Status::unresolvable(Reason::NodeUnschedulable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn ready_and_cordon_table() {
        // (node ready, cordoned, pod tolerates unschedulable, want reason)
        let cases = [
            (true, false, false, None),
            (false, false, false, Some(Reason::NodeNotReady)),
            (true, true, false, Some(Reason::NodeUnschedulable)),
            (true, true, true, None),
            // Not ready wins over cordoned: NodeReady runs first.
            (false, true, true, Some(Reason::NodeNotReady)),
        ];
        for (ready, cordoned, tolerate, want) in cases {
            let mut nb = NodeBuilder::new("n");
            if !ready {
                nb = nb.not_ready();
            }
            if cordoned {
                nb = nb.unschedulable();
            }
            let mut pb = PodBuilder::new("p");
            if tolerate {
                pb = pb.toleration(TAINT_NODE_UNSCHEDULABLE, "Exists", "", "NoSchedule");
            }
            let got = first_failure(&[&NodeReady, &NodeUnschedulable], &pb.info(), &nb.info());
            assert_eq!(
                got, want,
                "ready={ready} cordoned={cordoned} tolerate={tolerate}"
            );
        }
    }
}
