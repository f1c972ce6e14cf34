//! What the plugins see: per-pod facts computed once (`PodInfo`, the PreFilter work) and per-node
//! aggregates kept up to date incrementally (`NodeInfo`), collected in a `Snapshot`.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use kapsel_api::{Node, Pod, Toleration};

use crate::error::Result;
use crate::plugins::node_affinity::{CompiledNodeSelector, CompiledTerm};
use crate::resources::{format_key, Allocatable, PodRequest, Resources};

/// A node's name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(pub String);

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl NodeName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A host port a pod occupies: `(protocol, hostIP, port)`; the IP `0.0.0.0` means every address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Kubernetes' `HostPortInfo.CheckConflict`: same protocol and port, and the same IP or
    /// either side on `0.0.0.0`.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A controller owner's uid with its hash computed once, so the per-node spread lookup costs an
/// integer probe and, on a hit, an integer comparison rather than a string one (a call to
/// `memcmp` per probe was the spread score's largest cost).
#[derive(Clone, Debug, Eq)]
pub struct OwnerKey {
    hash: u64,
    id: OwnerId,
    uid: Arc<str>,
}

/// The uid as a number where one represents it exactly. Which variant a uid gets depends only
/// on the string, and each numbering is injective, so equal ids mean equal strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OwnerId {
    /// The lower-case hyphenated form of this UUID (every uid Kubernetes or kapsel generates).
    Uuid(u128),
    /// Up to 15 bytes, packed with their length.
    Short(u128),
    /// Anything else: compare the strings.
    Long,
}

impl OwnerId {
    fn of(uid: &str) -> OwnerId {
        if let Some(u) = uuid::Uuid::try_parse(uid).ok().filter(|u| {
            u.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                == uid
        }) {
            return OwnerId::Uuid(u.as_u128());
        }
        if uid.len() < 16 {
            let mut b = [0u8; 16];
            b[..uid.len()].copy_from_slice(uid.as_bytes());
            b[15] = uid.len() as u8;
            return OwnerId::Short(u128::from_le_bytes(b));
        }
        OwnerId::Long
    }
}

impl OwnerKey {
    pub fn new(uid: &str) -> OwnerKey {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        uid.hash(&mut h);
        OwnerKey {
            hash: h.finish(),
            id: OwnerId::of(uid),
            uid: Arc::from(uid),
        }
    }
    pub fn uid(&self) -> &str {
        &self.uid
    }
}

impl PartialEq for OwnerKey {
    fn eq(&self, o: &OwnerKey) -> bool {
        self.hash == o.hash && self.id == o.id && (self.id != OwnerId::Long || self.uid == o.uid)
    }
}

impl Hash for OwnerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes a precomputed `u64` through (only ever fed by `OwnerKey::hash`).
#[derive(Default)]
pub struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(5) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type OwnerCounts = HashMap<OwnerKey, u32, BuildHasherDefault<PrehashedHasher>>;

/// Everything about a pod the filters and scores need, computed once per pod (Kubernetes does this
/// in PreFilter and stores it in the CycleState; we compute it when the pod enters the queue).
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    pub request: PodRequest,
    pub host_ports: Vec<HostPort>,
    /// The uid of the controller owner (ReplicaSet, …), used for spreading.
    pub owner: Option<OwnerKey>,
    pub required_affinity: Option<CompiledNodeSelector>,
    pub preferred_affinity: Vec<(i64, CompiledTerm)>,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Result<PodInfo> {
        let request = PodRequest::of(&pod)?;
        let mut host_ports = Vec::new();
        let mut required_affinity = None;
        let mut preferred_affinity = Vec::new();
        if let Some(spec) = &pod.spec {
            for c in spec.containers.iter().chain(spec.init_containers.iter()) {
                for p in &c.ports {
                    if let Some(hp) = p.host_port.filter(|&hp| hp > 0) {
                        host_ports.push(HostPort {
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            ip: p
                                .host_ip
                                .clone()
                                .filter(|s| !s.is_empty())
                                .unwrap_or_else(|| "0.0.0.0".into()),
                            port: hp,
                        });
                    }
                }
            }
            if let Some(na) = spec
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
            {
                required_affinity = na
                    .required_during_scheduling_ignored_during_execution
                    .as_ref()
                    .map(CompiledNodeSelector::compile);
                preferred_affinity = na
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .filter(|t| t.weight != 0)
                    .map(|t| (i64::from(t.weight), CompiledTerm::compile(&t.preference)))
                    .collect();
            }
        }
        let owner = pod
            .metadata
            .controller_ref()
            .filter(|o| !o.uid.is_empty())
            .map(|o| OwnerKey::new(&o.uid));
        Ok(PodInfo {
            key: format_key(&pod),
            pod,
            request,
            host_ports,
            owner,
            required_affinity,
            preferred_affinity,
        })
    }

    pub fn tolerations(&self) -> &[Toleration] {
        self.pod
            .spec
            .as_ref()
            .map(|s| s.tolerations.as_slice())
            .unwrap_or(&[])
    }
}

/// What a placed pod takes from its node: all the cache keeps of a bound pod (not the object).
#[derive(Clone, Debug)]
pub struct PodUsage {
    pub request: PodRequest,
    pub host_ports: Vec<HostPort>,
    pub owner: Option<OwnerKey>,
}

impl PodUsage {
    pub fn of(info: &PodInfo) -> PodUsage {
        PodUsage {
            request: info.request,
            host_ports: info.host_ports.clone(),
            owner: info.owner.clone(),
        }
    }
}

/// A node plus the aggregate of the pods placed on it (bound or assumed).
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: NodeName,
    pub allocatable: Allocatable,
    /// Sum of the requests of the pods on the node; `pods` is their number.
    pub requested: Resources,
    /// Same with Kubernetes' non-zero defaults, for scoring.
    pub non_zero_requested: Resources,
    /// The node's Ready condition is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Host ports in use, one entry per pod port (so removal is exact).
    pub used_ports: Vec<HostPort>,
    /// Number of pods on this node per controller owner.
    pub pods_by_owner: OwnerCounts,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> Result<NodeInfo> {
        let allocatable = Allocatable::of(&node)?;
        Ok(NodeInfo {
            name: NodeName(node.metadata.name.clone().unwrap_or_default()),
            allocatable,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            ready: node_ready(&node),
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            used_ports: Vec::new(),
            pods_by_owner: OwnerCounts::default(),
            node,
        })
    }

    /// Replace the node object, keeping the pod aggregate.
    pub fn set_node(&mut self, node: Arc<Node>) -> Result<()> {
        let fresh = NodeInfo::new(node)?;
        self.allocatable = fresh.allocatable;
        self.ready = fresh.ready;
        self.unschedulable = fresh.unschedulable;
        self.node = fresh.node;
        Ok(())
    }

    pub fn add_pod(&mut self, pod: &PodInfo) {
        self.add_usage(&PodUsage::of(pod));
    }

    pub fn remove_pod(&mut self, pod: &PodInfo) {
        self.remove_usage(&PodUsage::of(pod));
    }

    pub fn add_usage(&mut self, pod: &PodUsage) {
        self.requested += pod.request.request;
        self.non_zero_requested += pod.request.non_zero;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if let Some(owner) = &pod.owner {
            *self.pods_by_owner.entry(owner.clone()).or_insert(0) += 1;
        }
    }

    pub fn remove_usage(&mut self, pod: &PodUsage) {
        self.requested -= pod.request.request;
        self.non_zero_requested -= pod.request.non_zero;
        for hp in &pod.host_ports {
            if let Some(i) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(i);
            }
        }
        if let Some(owner) = &pod.owner {
            if let Some(n) = self.pods_by_owner.get_mut(owner) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.pods_by_owner.remove(owner);
                }
            }
        }
    }

    /// Pods on this node owned by the controller with this uid.
    pub fn owner_count(&self, uid: &str) -> u32 {
        self.pods_by_owner
            .get(&OwnerKey::new(uid))
            .copied()
            .unwrap_or(0)
    }

    pub fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        &self.node.metadata.labels
    }

    pub fn taints(&self) -> &[kapsel_api::Taint] {
        self.node
            .spec
            .as_ref()
            .map(|s| s.taints.as_slice())
            .unwrap_or(&[])
    }
}

/// The node's `Ready` condition is `True`.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .unwrap_or(false)
}

/// All nodes, in a stable order, with an index by name.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    nodes: Vec<NodeInfo>,
    index: HashMap<NodeName, usize>,
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    /// A snapshot of the given nodes with the given pods placed on them (pods naming an unknown
    /// node are ignored). For tests and tools.
    pub fn from_objects(nodes: &[Node], pods: &[Pod]) -> Result<Snapshot> {
        let mut s = Snapshot::new();
        for n in nodes {
            s.upsert_node(Arc::new(n.clone()))?;
        }
        for p in pods {
            let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            let info = PodInfo::new(Arc::new(p.clone()))?;
            if let Some(ni) = s.get_mut(&NodeName(node)) {
                ni.add_pod(&info);
            }
        }
        Ok(s)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }
    pub fn get(&self, name: &NodeName) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }
    pub fn get_mut(&mut self, name: &NodeName) -> Option<&mut NodeInfo> {
        self.index.get(name).map(|&i| &mut self.nodes[i])
    }

    /// Add a node or replace its object. Returns true when the node is new.
    pub fn upsert_node(&mut self, node: Arc<Node>) -> Result<bool> {
        let name = NodeName(node.metadata.name.clone().unwrap_or_default());
        if let Some(&i) = self.index.get(&name) {
            self.nodes[i].set_node(node)?;
            Ok(false)
        } else {
            let info = NodeInfo::new(node)?;
            self.index.insert(name, self.nodes.len());
            self.nodes.push(info);
            Ok(true)
        }
    }

    /// Insert a ready-made `NodeInfo` (replacing one of the same name). For tests and tools.
    pub fn insert(&mut self, info: NodeInfo) {
        match self.index.get(&info.name) {
            Some(&i) => self.nodes[i] = info,
            None => {
                self.index.insert(info.name.clone(), self.nodes.len());
                self.nodes.push(info);
            }
        }
    }

    /// Remove a node; its pod aggregate goes with it.
    pub fn remove_node(&mut self, name: &NodeName) -> Option<NodeInfo> {
        let i = self.index.remove(name)?;
        let removed = self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
        Some(removed)
    }
}

#[cfg(test)]
mod owner_key_tests {
    use super::OwnerKey;

    #[test]
    fn owner_keys_are_equal_exactly_when_their_uids_are() {
        let u = "0b5e4c1e-6a3e-4f55-9d2a-8d2f7c1d0e11";
        let table: &[(&str, &str, bool)] = &[
            (u, u, true),
            (u, "0b5e4c1e-6a3e-4f55-9d2a-8d2f7c1d0e12", false),
            // The same UUID spelled differently is a different uid string.
            (u, "0B5E4C1E-6A3E-4F55-9D2A-8D2F7C1D0E11", false),
            (u, "0b5e4c1e6a3e4f559d2a8d2f7c1d0e11", false),
            (u, "{0b5e4c1e-6a3e-4f55-9d2a-8d2f7c1d0e11}", false),
            ("rs-1", "rs-1", true),
            ("rs-1", "rs-2", false),
            ("rs-1", "rs-1\0", false),
            ("", "", true),
            ("", "\0", false),
            ("fifteen-bytes-x", "fifteen-bytes-x", true),
            ("fifteen-bytes-x", "fifteen-bytes-y", false),
            ("sixteen-bytes-xx", "sixteen-bytes-xx", true),
            ("sixteen-bytes-xx", "sixteen-bytes-xy", false),
            ("fifteen-bytes-x", "sixteen-bytes-xx", false),
            (
                "0B5E4C1E-6A3E-4F55-9D2A-8D2F7C1D0E11",
                "0B5E4C1E-6A3E-4F55-9D2A-8D2F7C1D0E11",
                true,
            ),
        ];
        for &(a, b, want) in table {
            assert_eq!(OwnerKey::new(a) == OwnerKey::new(b), want, "{a} vs {b}");
            assert_eq!(OwnerKey::new(b) == OwnerKey::new(a), want, "{b} vs {a}");
        }
    }
}
