//! `spec.nodeSelector`: every key/value must be a label of the node. (Kubernetes checks it inside
//! the NodeAffinity plugin and uses the same message.)

use crate::framework::{CycleState, FilterPlugin, Reason, Status};
use crate::snapshot::NodeInfo;

pub struct NodeSelector;

impl FilterPlugin for NodeSelector {
    fn name(&self) -> &'static str {
        "NodeSelector"
    }
    fn filter(&self, state: &CycleState<'_>, node: &NodeInfo) -> Status {
        let Some(spec) = &state.pod.pod.spec else {
            return Status::success();
        };
        let labels = node.labels();
        if spec
            .node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            Status::success()
        } else {
            Status::unresolvable(Reason::NodeAffinityMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn node_selector_table() {
        let node = NodeBuilder::new("n")
            .label("disk", "ssd")
            .label("zone", "a")
            .info();
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], true),
            (&[("disk", "ssd")], true),
            (&[("disk", "ssd"), ("zone", "a")], true),
            (&[("disk", "hdd")], false),
            (&[("disk", "ssd"), ("gpu", "yes")], false),
            // An empty value is a value: it does not mean "exists".
            (&[("disk", "")], false),
        ];
        for (sel, fits) in cases {
            let mut pb = PodBuilder::new("p");
            for (k, v) in sel.iter() {
                pb = pb.node_selector(k, v);
            }
            let got = first_failure(&[&NodeSelector], &pb.info(), &node);
            assert_eq!(got.is_none(), *fits, "{sel:?}");
        }
    }
}
