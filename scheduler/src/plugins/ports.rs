//! NodePorts: a pod asking for a host port cannot go where that port is taken.

use crate::framework::{CycleState, FilterPlugin, Reason, Status};
use crate::snapshot::NodeInfo;

pub struct NodePorts;

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }
    fn filter(&self, state: &CycleState<'_>, node: &NodeInfo) -> Status {
        let conflict = state
            .pod
            .host_ports
            .iter()
            .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
        if conflict {
            Status::unschedulable(vec![Reason::PortsConflict])
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn host_port_conflict_table() {
        // (used: proto, ip, port) vs (wanted: proto, ip, port) → conflict?
        let cases = [
            (("TCP", "", 80), ("TCP", "", 80), true),
            (("TCP", "", 80), ("TCP", "", 81), false),
            (("TCP", "", 80), ("UDP", "", 80), false),
            (("TCP", "10.0.0.1", 80), ("TCP", "10.0.0.2", 80), false),
            (("TCP", "10.0.0.1", 80), ("TCP", "10.0.0.1", 80), true),
            // 0.0.0.0 (the default) overlaps every address.
            (("TCP", "", 80), ("TCP", "10.0.0.2", 80), true),
            (("TCP", "10.0.0.1", 80), ("TCP", "0.0.0.0", 80), true),
        ];
        for (used, want, conflict) in cases {
            let existing = PodBuilder::new("old")
                .host_port(used.0, used.1, used.2)
                .info();
            let mut node = NodeBuilder::new("n").info();
            node.add_pod(&existing);
            let pod = PodBuilder::new("new")
                .host_port(want.0, want.1, want.2)
                .info();
            let got = first_failure(&[&NodePorts], &pod, &node);
            assert_eq!(got.is_some(), conflict, "used {used:?} want {want:?}");
            // Removing the pod frees the port.
            node.remove_pod(&existing);
            assert_eq!(first_failure(&[&NodePorts], &pod, &node), None);
        }
    }

    #[test]
    fn container_port_without_host_port_takes_nothing() {
        let existing = PodBuilder::new("old").host_port("TCP", "", 0).info();
        assert!(existing.host_ports.is_empty());
    }
}
