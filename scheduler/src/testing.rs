//! Builders for tests and benchmarks (after Kubernetes' `st.MakePod()` / `st.MakeNode()`), and
//! `hollow_node`: a Node object with a Ready condition and allocatable resources, backed by no
//! runtime at all — a clearly fake node for integration tests and benchmarks.

use std::collections::BTreeMap;
use std::sync::Arc;

use kapsel_api::{
    Affinity, Condition, Container, ContainerPort, Node, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, NodeSpec, NodeStatus, ObjectMeta, OwnerReference,
    Pod, PodSpec, PreferredSchedulingTerm, Quantity, ResourceRequirements, Taint, Toleration,
};

use crate::framework::{CycleState, FilterPlugin, Reason, ScorePlugin};
use crate::snapshot::{NodeInfo, PodInfo};

/// A hollow node: `Ready=True`, the given allocatable (= capacity), the hostname label, and no
/// agent behind it. Create it through the API to get a schedulable node without a runtime.
pub fn hollow_node(name: &str, cpu: &str, memory: &str, pods: &str) -> Node {
    NodeBuilder::new(name)
        .allocatable(cpu, memory, pods)
        .build()
}

fn resource_list(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), Quantity::from(*v)))
        .collect()
}

/// Builds a Pod in namespace `default`.
#[derive(Clone, Debug)]
pub struct PodBuilder {
    pod: Pod,
}

impl PodBuilder {
    pub fn new(name: &str) -> Self {
        let mut pod = Pod::with_meta(ObjectMeta::namespaced("default", name));
        pod.metadata.uid = Some(format!("uid-{name}"));
        pod.spec = Some(PodSpec::default());
        PodBuilder { pod }
    }
    fn spec(&mut self) -> &mut PodSpec {
        self.pod.spec.get_or_insert_with(Default::default)
    }
    fn make_container(name: String, cpu: &str, memory: &str) -> Container {
        let requests = resource_list(&[("cpu", cpu), ("memory", memory)]);
        Container {
            name,
            image: Some("registry.invalid/pause:1".into()),
            resources: (!requests.is_empty()).then(|| ResourceRequirements {
                requests,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
    pub fn namespace(mut self, ns: &str) -> Self {
        self.pod.metadata.namespace = Some(ns.into());
        self
    }
    /// An app container requesting `cpu` and `memory` (`""` = no request).
    pub fn container(mut self, cpu: &str, memory: &str) -> Self {
        let n = self.spec().containers.len();
        let c = Self::make_container(format!("c{n}"), cpu, memory);
        self.spec().containers.push(c);
        self
    }
    pub fn init_container(mut self, cpu: &str, memory: &str) -> Self {
        let n = self.spec().init_containers.len();
        let c = Self::make_container(format!("init{n}"), cpu, memory);
        self.spec().init_containers.push(c);
        self
    }
    /// Adds an ephemeral-storage request to the first container (creating one if needed).
    pub fn ephemeral_storage(mut self, q: &str) -> Self {
        if self.spec().containers.is_empty() {
            self = self.container("", "");
        }
        let c = &mut self.spec().containers[0];
        c.resources
            .get_or_insert_with(Default::default)
            .requests
            .insert("ephemeral-storage".into(), Quantity::from(q));
        self
    }
    pub fn host_port(mut self, protocol: &str, ip: &str, port: i32) -> Self {
        if self.spec().containers.is_empty() {
            self = self.container("", "");
        }
        self.spec().containers[0].ports.push(ContainerPort {
            host_port: Some(port),
            container_port: 8080,
            protocol: Some(protocol.into()),
            host_ip: (!ip.is_empty()).then(|| ip.into()),
            ..Default::default()
        });
        self
    }
    pub fn toleration(mut self, key: &str, op: &str, value: &str, effect: &str) -> Self {
        self.spec().tolerations.push(Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: (!op.is_empty()).then(|| op.into()),
            value: (!value.is_empty()).then(|| value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: None,
        });
        self
    }
    pub fn node_selector(mut self, k: &str, v: &str) -> Self {
        self.spec().node_selector.insert(k.into(), v.into());
        self
    }
    fn node_affinity(&mut self) -> &mut NodeAffinity {
        self.spec()
            .affinity
            .get_or_insert_with(Affinity::default)
            .node_affinity
            .get_or_insert_with(NodeAffinity::default)
    }
    /// Adds one required term (terms are ORed).
    pub fn required_affinity(mut self, exprs: Vec<NodeSelectorRequirement>) -> Self {
        self.node_affinity()
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(NodeSelector::default)
            .node_selector_terms
            .push(NodeSelectorTerm {
                match_expressions: exprs,
                match_fields: vec![],
            });
        self
    }
    pub fn preferred_affinity(mut self, weight: i32, exprs: Vec<NodeSelectorRequirement>) -> Self {
        self.node_affinity()
            .preferred_during_scheduling_ignored_during_execution
            .push(PreferredSchedulingTerm {
                weight,
                preference: NodeSelectorTerm {
                    match_expressions: exprs,
                    match_fields: vec![],
                },
            });
        self
    }
    /// A controller owner reference (a ReplicaSet with this uid).
    pub fn owner(mut self, uid: &str) -> Self {
        self.pod.metadata.owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: uid.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: None,
        });
        self
    }
    pub fn node_name(mut self, node: &str) -> Self {
        self.spec().node_name = Some(node.into());
        self
    }
    pub fn build(self) -> Pod {
        self.pod
    }
    /// The `PodInfo`; panics on invalid quantities (test input).
    pub fn info(self) -> PodInfo {
        PodInfo::new(Arc::new(self.pod)).expect("valid test pod")
    }
}

/// Builds a Ready node with 4 cpu, 8Gi memory, 110 pods.
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    node: Node,
}

impl NodeBuilder {
    pub fn new(name: &str) -> Self {
        let mut node = Node::with_meta(ObjectMeta::named(name));
        node.metadata
            .labels
            .insert("kubernetes.io/hostname".into(), name.into());
        node.spec = Some(NodeSpec::default());
        node.status = Some(NodeStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("HollowNode".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        NodeBuilder { node }.allocatable("4", "8Gi", "110")
    }
    fn status(&mut self) -> &mut NodeStatus {
        self.node.status.get_or_insert_with(Default::default)
    }
    pub fn allocatable(mut self, cpu: &str, memory: &str, pods: &str) -> Self {
        let list = resource_list(&[("cpu", cpu), ("memory", memory), ("pods", pods)]);
        let st = self.status();
        st.allocatable = list.clone();
        st.capacity = list;
        self
    }
    pub fn ephemeral_storage(mut self, q: &str) -> Self {
        let st = self.status();
        st.allocatable
            .insert("ephemeral-storage".into(), Quantity::from(q));
        st.capacity
            .insert("ephemeral-storage".into(), Quantity::from(q));
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.node.metadata.labels.insert(k.into(), v.into());
        self
    }
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.node
            .spec
            .get_or_insert_with(Default::default)
            .taints
            .push(Taint {
                key: key.into(),
                value: (!value.is_empty()).then(|| value.into()),
                effect: effect.into(),
                time_added: None,
            });
        self
    }
    pub fn not_ready(mut self) -> Self {
        for c in &mut self.status().conditions {
            if c.type_ == "Ready" {
                c.status = "False".into();
            }
        }
        self
    }
    pub fn unschedulable(mut self) -> Self {
        self.node
            .spec
            .get_or_insert_with(Default::default)
            .unschedulable = Some(true);
        self
    }
    pub fn build(self) -> Node {
        self.node
    }
    pub fn info(self) -> NodeInfo {
        NodeInfo::new(Arc::new(self.node)).expect("valid test node")
    }
}

/// Run `filters` in order; the first reason of the first failure.
pub fn first_failure(
    filters: &[&dyn FilterPlugin],
    pod: &PodInfo,
    node: &NodeInfo,
) -> Option<Reason> {
    let state = CycleState::new(pod);
    filters
        .iter()
        .map(|f| f.filter(&state, node))
        .find(|st| !st.is_success())
        .and_then(|st| st.reasons.into_iter().next())
}

/// PreScore, Score and NormalizeScore of one plugin over `nodes` (all treated as feasible).
/// Empty when the plugin skips the pod.
pub fn run_score(plugin: &dyn ScorePlugin, pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<i64> {
    let mut state = CycleState::new(pod);
    let refs: Vec<&NodeInfo> = nodes.iter().collect();
    if !plugin.pre_score(&mut state, &refs) {
        return Vec::new();
    }
    let mut scores: Vec<i64> = refs.iter().map(|n| plugin.score(&state, n)).collect();
    plugin.normalize(&state, &mut scores);
    scores
}
