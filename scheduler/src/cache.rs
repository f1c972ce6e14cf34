//! The scheduler cache: the node snapshot plus every placed pod — bound (seen on a node through
//! the watch) or *assumed* (placed by us, bind in flight or not yet confirmed by the watch).
//! Assumed pods count against their node immediately, so a burst never double-books a node.
//!
//! An assumed pod is confirmed when the watch shows it bound, forgotten when its bind fails,
//! and expires if the watch never confirms it within `ASSUME_TTL` after the bind succeeded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kapsel_api::{Node, Pod};

use crate::error::Result;
use crate::snapshot::{NodeName, PodInfo, PodUsage, Snapshot};

pub const ASSUME_TTL: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Placed {
    uid: String,
    node: NodeName,
    usage: PodUsage,
    assumed: bool,
    /// Set once the bind returned: the assumption expires at this time.
    deadline: Option<Instant>,
}

/// What a node event changed, for deciding whether to flush the backoff queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeChange {
    Added,
    /// Something scheduling looks at changed (allocatable, labels, taints, readiness, cordon).
    Relevant,
    /// Only heartbeats or the like.
    Irrelevant,
}

#[derive(Debug, Default)]
pub struct Cache {
    snapshot: Snapshot,
    pods: HashMap<String, Placed>,
    /// Placed pods whose node the cache does not know (yet).
    orphans: HashMap<NodeName, HashSet<String>>,
    /// `(deadline, key)` of every finished binding, sorted by deadline. An entry whose pod was
    /// since confirmed, forgotten or re-assumed is skipped when it comes due: `expire` looks only
    /// at the front, not at every placed pod.
    deadlines: VecDeque<(Instant, String)>,
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// A pod in `Succeeded` or `Failed` holds no resources.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn is_placed(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    pub fn placed_keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    fn attach(&mut self, key: &str) {
        let Some(p) = self.pods.get(key) else { return };
        match self.snapshot.get_mut(&p.node) {
            Some(ni) => ni.add_usage(&p.usage),
            None => {
                self.orphans
                    .entry(p.node.clone())
                    .or_default()
                    .insert(key.to_string());
            }
        }
    }

    fn detach(&mut self, key: &str) -> Option<Placed> {
        let p = self.pods.remove(key)?;
        match self.snapshot.get_mut(&p.node) {
            Some(ni) => ni.remove_usage(&p.usage),
            None => {
                if let Some(set) = self.orphans.get_mut(&p.node) {
                    set.remove(key);
                    if set.is_empty() {
                        self.orphans.remove(&p.node);
                    }
                }
            }
        }
        Some(p)
    }

    /// Place `info` on `node` before the bind returns.
    pub fn assume(&mut self, info: PodInfo, node: NodeName) {
        let key = info.key.clone();
        self.detach(&key);
        self.pods.insert(
            key.clone(),
            Placed {
                uid: info.pod.metadata.uid.clone().unwrap_or_default(),
                node,
                usage: PodUsage::of(&info),
                assumed: true,
                deadline: None,
            },
        );
        self.attach(&key);
    }

    /// The bind succeeded; start the expiry clock unless the watch already confirmed it.
    pub fn finish_binding(&mut self, key: &str, now: Instant) {
        if let Some(p) = self.pods.get_mut(key) {
            if p.assumed {
                let deadline = now + ASSUME_TTL;
                p.deadline = Some(deadline);
                // Callers pass a monotonic clock, so this is nearly always a push at the back.
                if self.deadlines.back().is_none_or(|(d, _)| *d <= deadline) {
                    self.deadlines.push_back((deadline, key.to_string()));
                } else {
                    let at = self.deadlines.partition_point(|(d, _)| *d <= deadline);
                    self.deadlines.insert(at, (deadline, key.to_string()));
                }
            }
        }
    }

    /// The bind failed: undo the assumption.
    pub fn forget(&mut self, key: &str) {
        if self.is_assumed(key) {
            self.detach(key);
        }
    }

    /// Drop assumptions the watch never confirmed.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some((deadline, _)) = self.deadlines.front() {
            if *deadline > now {
                break;
            }
            let Some((deadline, key)) = self.deadlines.pop_front() else {
                break;
            };
            // Still the same assumption that this entry timed?
            let due = self
                .pods
                .get(&key)
                .is_some_and(|p| p.assumed && p.deadline == Some(deadline));
            if due {
                self.detach(&key);
                expired += 1;
            }
        }
        expired
    }

    /// A pod as seen by the watch. Bound, non-terminal pods are placed (confirming an
    /// assumption); others are removed. Returns whether resources were freed (a placed pod went
    /// away), which may let pending pods fit.
    pub fn observe_pod(&mut self, key: &str, pod: &Arc<Pod>) -> Result<bool> {
        let Some(node) = node_of(pod).filter(|_| !is_terminal(pod)) else {
            // Unbound (an assumed pod's stale event: keep the assumption) or terminal.
            if is_terminal(pod) {
                return Ok(self.detach(key).is_some());
            }
            return Ok(false);
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(p) = self.pods.get_mut(key) {
            if p.uid == uid && p.node.as_str() == node {
                p.assumed = false;
                p.deadline = None;
                return Ok(false);
            }
        }
        let info = PodInfo::new(pod.clone())?;
        let freed = self.detach(key).is_some();
        self.pods.insert(
            key.to_string(),
            Placed {
                uid,
                node: NodeName(node.to_string()),
                usage: PodUsage::of(&info),
                assumed: false,
                deadline: None,
            },
        );
        self.attach(key);
        Ok(freed)
    }

    /// The pod was deleted. Returns whether it was placed.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        self.detach(key).is_some()
    }

    pub fn upsert_node(&mut self, node: Arc<Node>) -> Result<NodeChange> {
        let name = NodeName(node.metadata.name.clone().unwrap_or_default());
        let before = self.snapshot.get(&name).map(|ni| {
            (
                ni.allocatable,
                ni.ready,
                ni.unschedulable,
                ni.node.metadata.labels.clone(),
                ni.taints().to_vec(),
            )
        });
        self.snapshot.upsert_node(node)?;
        let Some(before) = before else {
            if let Some(keys) = self.orphans.remove(&name) {
                for k in keys {
                    if let (Some(p), Some(ni)) = (self.pods.get(&k), self.snapshot.get_mut(&name)) {
                        ni.add_usage(&p.usage);
                    }
                }
            }
            return Ok(NodeChange::Added);
        };
        let Some(ni) = self.snapshot.get(&name) else {
            return Ok(NodeChange::Added);
        };
        let after = (
            ni.allocatable,
            ni.ready,
            ni.unschedulable,
            ni.node.metadata.labels.clone(),
            ni.taints().to_vec(),
        );
        Ok(if before == after {
            NodeChange::Irrelevant
        } else {
            NodeChange::Relevant
        })
    }

    pub fn remove_node(&mut self, name: &NodeName) {
        if self.snapshot.remove_node(name).is_some() {
            let keys: HashSet<String> = self
                .pods
                .iter()
                .filter(|(_, p)| &p.node == name)
                .map(|(k, _)| k.clone())
                .collect();
            if !keys.is_empty() {
                self.orphans.insert(name.clone(), keys);
            }
        }
    }

    pub fn node_names(&self) -> Vec<NodeName> {
        self.snapshot
            .nodes()
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn cpu_on(c: &Cache, node: &str) -> i64 {
        c.snapshot()
            .get(&NodeName(node.into()))
            .map(|n| n.requested.cpu.0)
            .unwrap_or(-1)
    }

    #[test]
    fn assume_confirm_forget() {
        let mut c = Cache::new();
        c.upsert_node(Arc::new(NodeBuilder::new("n1").build()))
            .expect("node");
        let pb = PodBuilder::new("p").container("500m", "");
        c.assume(pb.clone().info(), NodeName("n1".into()));
        assert_eq!(cpu_on(&c, "n1"), 500);
        // The watch confirms: counted once.
        let bound = Arc::new(pb.clone().node_name("n1").build());
        c.observe_pod("default/p", &bound).expect("ok");
        assert_eq!(cpu_on(&c, "n1"), 500);
        assert!(!c.is_assumed("default/p"));
        // Forgetting a confirmed pod does nothing.
        c.forget("default/p");
        assert_eq!(cpu_on(&c, "n1"), 500);
        assert!(c.remove_pod("default/p"));
        assert_eq!(cpu_on(&c, "n1"), 0);

        // A failed bind forgets the assumption.
        c.assume(pb.info(), NodeName("n1".into()));
        c.forget("default/p");
        assert_eq!(cpu_on(&c, "n1"), 0);
    }

    #[test]
    fn stale_unbound_event_keeps_assumption_and_expiry_drops_it() {
        let mut c = Cache::new();
        c.upsert_node(Arc::new(NodeBuilder::new("n1").build()))
            .expect("node");
        let pb = PodBuilder::new("p").container("1", "");
        c.assume(pb.clone().info(), NodeName("n1".into()));
        c.observe_pod("default/p", &Arc::new(pb.build()))
            .expect("ok");
        assert_eq!(cpu_on(&c, "n1"), 1000);
        let t = Instant::now();
        c.finish_binding("default/p", t);
        assert_eq!(c.expire(t), 0);
        assert_eq!(c.expire(t + ASSUME_TTL), 1);
        assert_eq!(cpu_on(&c, "n1"), 0);
    }

    #[test]
    fn expiry_skips_confirmed_forgotten_and_reassumed_pods() {
        let mut c = Cache::new();
        c.upsert_node(Arc::new(NodeBuilder::new("n1").build()))
            .expect("node");
        let t = Instant::now();
        let pod = |name: &str| PodBuilder::new(name).container("1", "");
        // a: confirmed by the watch after its bind returned.
        c.assume(pod("a").info(), NodeName("n1".into()));
        c.finish_binding("default/a", t);
        c.observe_pod("default/a", &Arc::new(pod("a").node_name("n1").build()))
            .expect("ok");
        // b: bind returned, then forgotten.
        c.assume(pod("b").info(), NodeName("n1".into()));
        c.finish_binding("default/b", t);
        c.forget("default/b");
        // c: its first assumption timed at t, re-assumed and re-timed later.
        c.assume(pod("c").info(), NodeName("n1".into()));
        c.finish_binding("default/c", t);
        c.assume(pod("c").info(), NodeName("n1".into()));
        c.finish_binding("default/c", t + Duration::from_secs(10));
        // d: timed out of order (earlier than the others): still expires on time.
        c.assume(pod("d").info(), NodeName("n1".into()));
        c.finish_binding("default/d", t - Duration::from_secs(5));
        assert_eq!(cpu_on(&c, "n1"), 3000); // a, c, d

        assert_eq!(c.expire(t + ASSUME_TTL - Duration::from_secs(5)), 1); // d
        assert_eq!(c.expire(t + ASSUME_TTL), 0); // a confirmed, b forgotten, c re-timed
        assert!(c.is_placed("default/a") && c.is_assumed("default/c"));
        assert_eq!(c.expire(t + ASSUME_TTL + Duration::from_secs(10)), 1); // c
        assert_eq!(cpu_on(&c, "n1"), 1000); // a
        assert!(c.deadlines.is_empty());
    }

    #[test]
    fn pods_bound_to_unknown_nodes_attach_when_the_node_appears() {
        let mut c = Cache::new();
        let p = Arc::new(
            PodBuilder::new("p")
                .container("2", "")
                .node_name("late")
                .build(),
        );
        c.observe_pod("default/p", &p).expect("ok");
        assert_eq!(
            c.upsert_node(Arc::new(NodeBuilder::new("late").build()))
                .expect("node"),
            NodeChange::Added
        );
        assert_eq!(cpu_on(&c, "late"), 2000);
        // Node goes away and comes back: its pods come back with it.
        c.remove_node(&NodeName("late".into()));
        c.upsert_node(Arc::new(NodeBuilder::new("late").build()))
            .expect("node");
        assert_eq!(cpu_on(&c, "late"), 2000);
    }

    #[test]
    fn terminal_pods_free_resources_and_node_changes_are_classified() {
        let mut c = Cache::new();
        c.upsert_node(Arc::new(NodeBuilder::new("n").build()))
            .expect("node");
        let mut p = PodBuilder::new("p")
            .container("1", "")
            .node_name("n")
            .build();
        c.observe_pod("default/p", &Arc::new(p.clone()))
            .expect("ok");
        p.status.get_or_insert_with(Default::default).phase = Some("Succeeded".into());
        assert!(c.observe_pod("default/p", &Arc::new(p)).expect("ok"));
        assert_eq!(cpu_on(&c, "n"), 0);

        let same = c
            .upsert_node(Arc::new(NodeBuilder::new("n").build()))
            .expect("node");
        assert_eq!(same, NodeChange::Irrelevant);
        let tainted = c
            .upsert_node(Arc::new(
                NodeBuilder::new("n").taint("a", "", "NoSchedule").build(),
            ))
            .expect("node");
        assert_eq!(tainted, NodeChange::Relevant);
    }
}
