//! Node restriction (Kubernetes' Node authorizer and NodeRestriction admission, in one pure
//! function): a node's identity (`system:node:NAME` in `system:nodes`) reads only the pods bound
//! to it and the secrets and configmaps those pods use, writes only those pods' status (and
//! deletes them to finish a graceful deletion), and writes only its own Node and Lease.
//!
//! The relationships come from a [`NodeGraph`] kept up to date from the pods' watch.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::de::{Deserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::attributes::Attributes;
use super::rbac::NODES_GROUP;
use crate::auth::UserInfo;

/// The node name of a node identity.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// The node authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeDecision {
    Allow,
    /// Refused, whatever RBAC says; the text is appended to the 403 message.
    Deny(String),
    /// Not a node-restricted request: RBAC decides.
    NoOpinion,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PodRefs {
    node: String,
    secrets: Vec<String>,
    configmaps: Vec<String>,
}

/// Which pods are bound to which node, and which secrets and configmaps they use.
#[derive(Clone, Debug, Default)]
pub struct NodeGraph {
    /// (namespace, pod) → what the pod uses.
    pods: HashMap<(String, String), PodRefs>,
    /// (namespace, secret) → node → number of its pods using it.
    secrets: HashMap<(String, String), BTreeMap<String, usize>>,
    configmaps: HashMap<(String, String), BTreeMap<String, usize>>,
}

fn names_at<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .into_iter()
}

fn array<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The secrets and configmaps a pod object references (volumes, projected volumes, env,
/// envFrom, imagePullSecrets).
fn pod_refs(pod: &Value) -> (Vec<String>, Vec<String>) {
    let mut secrets = Vec::new();
    let mut cms = Vec::new();
    for vol in array(pod, "/spec/volumes") {
        secrets.extend(names_at(vol, "/secret/secretName").map(String::from));
        cms.extend(names_at(vol, "/configMap/name").map(String::from));
        for src in array(vol, "/projected/sources") {
            secrets.extend(names_at(src, "/secret/name").map(String::from));
            cms.extend(names_at(src, "/configMap/name").map(String::from));
        }
    }
    for list in [
        "/spec/containers",
        "/spec/initContainers",
        "/spec/ephemeralContainers",
    ] {
        for c in array(pod, list) {
            for e in array(c, "/env") {
                secrets.extend(names_at(e, "/valueFrom/secretKeyRef/name").map(String::from));
                cms.extend(names_at(e, "/valueFrom/configMapKeyRef/name").map(String::from));
            }
            for e in array(c, "/envFrom") {
                secrets.extend(names_at(e, "/secretRef/name").map(String::from));
                cms.extend(names_at(e, "/configMapRef/name").map(String::from));
            }
        }
    }
    for s in array(pod, "/spec/imagePullSecrets") {
        secrets.extend(names_at(s, "/name").map(String::from));
    }
    secrets.sort();
    secrets.dedup();
    cms.sort();
    cms.dedup();
    (secrets, cms)
}

// ------------------------------------------------------------------------------------------
// The minimal decode of a stored pod: only the fields the graph reads. serde skips everything
// else (labels, images, resources, status…) without building it, and the names the hot path
// needs (namespace, name, nodeName) borrow from the event's bytes.
// ------------------------------------------------------------------------------------------

/// A string field that may be absent or `null`; borrowed from the input when it has no escapes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Name<'a>(Option<Cow<'a, str>>);

impl<'a> Name<'a> {
    fn as_str(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Name(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Name(Some(Cow::Owned(v))))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Name(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodFields<'a> {
    #[serde(borrow)]
    metadata: MetaFields<'a>,
    #[serde(borrow)]
    spec: SpecFields<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MetaFields<'a> {
    #[serde(borrow)]
    namespace: Name<'a>,
    #[serde(borrow)]
    name: Name<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SpecFields<'a> {
    #[serde(borrow)]
    node_name: Name<'a>,
    volumes: Option<Vec<VolumeFields>>,
    containers: Option<Vec<ContainerFields>>,
    init_containers: Option<Vec<ContainerFields>>,
    ephemeral_containers: Option<Vec<ContainerFields>>,
    image_pull_secrets: Option<Vec<NameRef>>,
}

/// `{"name": …}` (a LocalObjectReference and the like).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NameRef {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct VolumeFields {
    secret: Option<SecretVolume>,
    config_map: Option<NameRef>,
    projected: Option<Projected>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SecretVolume {
    secret_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Projected {
    sources: Option<Vec<ProjectedSource>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ProjectedSource {
    secret: Option<NameRef>,
    config_map: Option<NameRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ContainerFields {
    env: Option<Vec<EnvVar>>,
    env_from: Option<Vec<EnvFrom>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct EnvVar {
    value_from: Option<EnvSource>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct EnvSource {
    secret_key_ref: Option<NameRef>,
    config_map_key_ref: Option<NameRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct EnvFrom {
    secret_ref: Option<NameRef>,
    config_map_ref: Option<NameRef>,
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_deref().filter(|s| !s.is_empty()).map(String::from)
}

fn name_of(r: &Option<NameRef>) -> Option<String> {
    r.as_ref().and_then(|r| non_empty(&r.name))
}

impl SpecFields<'_> {
    /// [`pod_refs`] on the decoded fields: the same names, sorted and deduplicated.
    fn refs(&self) -> (Vec<String>, Vec<String>) {
        let mut secrets = Vec::new();
        let mut cms = Vec::new();
        for vol in self.volumes.iter().flatten() {
            secrets.extend(vol.secret.as_ref().and_then(|s| non_empty(&s.secret_name)));
            cms.extend(name_of(&vol.config_map));
            let sources = vol.projected.as_ref().and_then(|p| p.sources.as_ref());
            for src in sources.into_iter().flatten() {
                secrets.extend(name_of(&src.secret));
                cms.extend(name_of(&src.config_map));
            }
        }
        let containers = [
            &self.containers,
            &self.init_containers,
            &self.ephemeral_containers,
        ];
        for c in containers.into_iter().flatten().flatten() {
            for e in c.env.iter().flatten() {
                if let Some(from) = &e.value_from {
                    secrets.extend(name_of(&from.secret_key_ref));
                    cms.extend(name_of(&from.config_map_key_ref));
                }
            }
            for e in c.env_from.iter().flatten() {
                secrets.extend(name_of(&e.secret_ref));
                cms.extend(name_of(&e.config_map_ref));
            }
        }
        for s in self.image_pull_secrets.iter().flatten() {
            secrets.extend(non_empty(&s.name));
        }
        secrets.sort();
        secrets.dedup();
        cms.sort();
        cms.dedup();
        (secrets, cms)
    }
}

fn add(
    index: &mut HashMap<(String, String), BTreeMap<String, usize>>,
    ns: &str,
    names: &[String],
    node: &str,
) {
    for n in names {
        *index
            .entry((ns.to_string(), n.clone()))
            .or_default()
            .entry(node.to_string())
            .or_default() += 1;
    }
}

fn sub(
    index: &mut HashMap<(String, String), BTreeMap<String, usize>>,
    ns: &str,
    names: &[String],
    node: &str,
) {
    for n in names {
        let key = (ns.to_string(), n.clone());
        if let Some(m) = index.get_mut(&key) {
            if let Some(c) = m.get_mut(node) {
                *c -= 1;
                if *c == 0 {
                    m.remove(node);
                }
            }
            if m.is_empty() {
                index.remove(&key);
            }
        }
    }
}

impl NodeGraph {
    /// Record the pod object `pod` (added or modified).
    pub fn put_pod(&mut self, pod: &Value) {
        let str_at = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (ns, name, node) = (
            str_at("/metadata/namespace"),
            str_at("/metadata/name"),
            str_at("/spec/nodeName"),
        );
        self.put(ns, name, node, || pod_refs(pod));
    }

    /// Record a stored pod (added or modified) from its JSON bytes: what [`NodeGraph::put_pod`]
    /// does on the parsed value, decoding only the fields the graph reads. A document the
    /// minimal decode refuses (a field of an unexpected type, a duplicate key) takes the
    /// `Value` path, so the result is the same for every input; `Err` if it is not JSON.
    pub fn put_pod_json(&mut self, bytes: &[u8]) -> Result<(), serde_json::Error> {
        match serde_json::from_slice::<PodFields<'_>>(bytes) {
            Ok(p) => {
                let (meta, spec) = (&p.metadata, &p.spec);
                self.put(
                    meta.namespace.as_str(),
                    meta.name.as_str(),
                    spec.node_name.as_str(),
                    || spec.refs(),
                );
                Ok(())
            }
            Err(_) => {
                let v: Value = serde_json::from_slice(bytes)?;
                self.put_pod(&v);
                Ok(())
            }
        }
    }

    /// Record pod `ns`/`name` bound to `node` (none: not bound, not in the graph) using what
    /// `refs` returns. A pod already recorded with the same node and references (an update of
    /// fields the graph does not read) is left as it is.
    fn put(
        &mut self,
        ns: &str,
        name: &str,
        node: &str,
        refs: impl FnOnce() -> (Vec<String>, Vec<String>),
    ) {
        if node.is_empty() {
            // Kubernetes' node authorizer adds edges only for pods bound to a node.
            self.remove_pod(ns, name);
            return;
        }
        let (secrets, configmaps) = refs();
        let key = (ns.to_string(), name.to_string());
        if let Some(old) = self.pods.get(&key) {
            if old.node == node && old.secrets == secrets && old.configmaps == configmaps {
                return;
            }
        }
        self.remove_pod(ns, name);
        add(&mut self.secrets, ns, &secrets, node);
        add(&mut self.configmaps, ns, &configmaps, node);
        self.pods.insert(
            key,
            PodRefs {
                node: node.to_string(),
                secrets,
                configmaps,
            },
        );
    }

    /// Forget a pod (deleted).
    pub fn remove_pod(&mut self, ns: &str, name: &str) {
        if let Some(old) = self.pods.remove(&(ns.to_string(), name.to_string())) {
            sub(&mut self.secrets, ns, &old.secrets, &old.node);
            sub(&mut self.configmaps, ns, &old.configmaps, &old.node);
        }
    }

    /// The node a pod is bound to.
    pub fn pod_node(&self, ns: &str, name: &str) -> Option<&str> {
        self.pods
            .get(&(ns.to_string(), name.to_string()))
            .map(|p| p.node.as_str())
    }

    fn uses(&self, resource: &str, ns: &str, name: &str, node: &str) -> bool {
        let index = match resource {
            "secrets" => &self.secrets,
            "configmaps" => &self.configmaps,
            _ => return false,
        };
        index
            .get(&(ns.to_string(), name.to_string()))
            .is_some_and(|m| m.contains_key(node))
    }

    /// Whether `node` may read `resource` `ns`/`name` (a secret or configmap its pods use).
    pub fn node_uses(&self, node: &str, resource: &str, ns: &str, name: &str) -> bool {
        self.uses(resource, ns, name, node)
    }
}

fn no_relationship(node: &str) -> NodeDecision {
    NodeDecision::Deny(format!(
        "no relationship found between node '{node}' and this object"
    ))
}

/// Whether a field selector restricts to pods of `node` (`spec.nodeName=NODE`, possibly among
/// other terms).
fn selects_node(selector: Option<&str>, node: &str) -> bool {
    selector.is_some_and(|s| {
        s.split(',').any(|term| {
            let term = term.trim();
            term.strip_prefix("spec.nodeName")
                .and_then(|r| r.strip_prefix("==").or_else(|| r.strip_prefix('=')))
                == Some(node)
        })
    })
}

/// The node authorizer: a decision for requests of node identities about node-restricted
/// resources; `NoOpinion` for everyone else and everything else.
///
/// Creates carry no name in the path: `create_name` is the `metadata.name` of the body (Nodes
/// and Leases; NodeRestriction admission).
pub fn authorize(
    user: &UserInfo,
    a: &Attributes,
    graph: &NodeGraph,
    create_name: Option<&str>,
) -> NodeDecision {
    let Some(node) = node_name(user) else {
        return NodeDecision::NoOpinion;
    };
    if !a.resource_request {
        return NodeDecision::NoOpinion;
    }
    let verb = a.verb.as_str();
    let sub = a.subresource.as_str();
    match (a.api_group.as_str(), a.resource.as_str()) {
        ("", "pods") => {
            let bound = || graph.pod_node(&a.namespace, &a.name) == Some(node);
            match (sub, verb) {
                ("", "list" | "watch") if selects_node(a.field_selector.as_deref(), node) => {
                    NodeDecision::Allow
                }
                ("", "list" | "watch") => NodeDecision::Deny(format!(
                    "node '{node}' can only list and watch pods with fieldSelector spec.nodeName={node}"
                )),
                ("", "get" | "delete") | ("status", "get" | "update" | "patch") if bound() => {
                    NodeDecision::Allow
                }
                ("", "get" | "delete") | ("status", "get" | "update" | "patch") => {
                    no_relationship(node)
                }
                _ => NodeDecision::Deny(format!(
                    "node '{node}' cannot {verb} resource \"{}\"",
                    a.full_resource()
                )),
            }
        }
        ("", "secrets" | "configmaps") => {
            if verb == "get"
                && sub.is_empty()
                && graph.node_uses(node, &a.resource, &a.namespace, &a.name)
            {
                NodeDecision::Allow
            } else {
                no_relationship(node)
            }
        }
        ("", "nodes") => match verb {
            "get" | "list" | "watch" if sub.is_empty() => NodeDecision::NoOpinion,
            "create" if sub.is_empty() => {
                if create_name == Some(node) {
                    NodeDecision::NoOpinion
                } else {
                    NodeDecision::Deny(format!(
                        "node '{node}' cannot create node '{}'",
                        create_name.unwrap_or("")
                    ))
                }
            }
            _ if a.name == node => NodeDecision::NoOpinion,
            _ => NodeDecision::Deny(format!("node '{node}' cannot modify node '{}'", a.name)),
        },
        ("coordination.k8s.io", "leases") => {
            let name = if verb == "create" {
                create_name.unwrap_or("")
            } else {
                a.name.as_str()
            };
            if a.namespace == kapsel_api::labels::NODE_LEASE_NAMESPACE
                && name == node
                && sub.is_empty()
            {
                NodeDecision::NoOpinion
            } else {
                NodeDecision::Deny(format!(
                    "node '{node}' can only access its own lease in namespace {}",
                    kapsel_api::labels::NODE_LEASE_NAMESPACE
                ))
            }
        }
        _ => NodeDecision::NoOpinion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(n: &str) -> UserInfo {
        UserInfo {
            name: format!("system:node:{n}"),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
        }
    }

    fn graph() -> NodeGraph {
        let mut g = NodeGraph::default();
        g.put_pod(&json!({
            "metadata": {"namespace": "a", "name": "p1"},
            "spec": {"nodeName": "n1",
                "volumes": [{"name": "v", "secret": {"secretName": "s1"}},
                            {"name": "w", "projected": {"sources": [{"configMap": {"name": "c-proj"}}]}}],
                "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "c1"}}],
                                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}}]}],
                "imagePullSecrets": [{"name": "pull"}]}
        }));
        g.put_pod(&json!({
            "metadata": {"namespace": "a", "name": "p2"},
            "spec": {"nodeName": "n2", "volumes": [{"name": "v", "secret": {"secretName": "s2"}}],
                     "containers": [{"name": "c"}]}
        }));
        g.put_pod(&json!({
            "metadata": {"namespace": "a", "name": "pending"},
            "spec": {"volumes": [{"name": "v", "secret": {"secretName": "s3"}}], "containers": []}
        }));
        g
    }

    type Case = (Attributes, Option<&'static str>, fn(&NodeDecision) -> bool);

    #[test]
    fn node_table() {
        use NodeDecision::*;
        let g = graph();
        let n1 = node("n1");
        let r = Attributes::resource;
        let mut list_mine = r("watch", "", "", "pods", "");
        list_mine.field_selector = Some("spec.nodeName=n1".into());
        let mut list_other = list_mine.clone();
        list_other.field_selector = Some("spec.nodeName=n2".into());
        let deny = |d: &NodeDecision| matches!(d, Deny(_));
        let table: Vec<Case> = vec![
            (r("get", "", "a", "pods", "p1"), None, |d| *d == Allow),
            (r("get", "", "a", "pods", "p2"), None, deny),
            (r("get", "", "a", "pods", "pending"), None, deny),
            (r("update", "", "a", "pods/status", "p1"), None, |d| {
                *d == Allow
            }),
            (r("patch", "", "a", "pods/status", "p2"), None, deny),
            (r("update", "", "a", "pods", "p1"), None, deny),
            (r("delete", "", "a", "pods", "p1"), None, |d| *d == Allow),
            (r("delete", "", "a", "pods", "p2"), None, deny),
            (r("create", "", "a", "pods", ""), None, deny),
            (r("create", "", "a", "pods/binding", "p2"), None, deny),
            (r("list", "", "", "pods", ""), None, deny),
            (list_mine, None, |d| *d == Allow),
            (list_other, None, deny),
            (r("get", "", "a", "secrets", "s1"), None, |d| *d == Allow),
            (r("get", "", "a", "secrets", "s-env"), None, |d| *d == Allow),
            (r("get", "", "a", "secrets", "pull"), None, |d| *d == Allow),
            (r("get", "", "a", "secrets", "s2"), None, deny),
            (r("get", "", "a", "secrets", "s3"), None, deny),
            (r("get", "", "b", "secrets", "s1"), None, deny),
            (r("list", "", "a", "secrets", ""), None, deny),
            (r("get", "", "a", "configmaps", "c1"), None, |d| *d == Allow),
            (r("get", "", "a", "configmaps", "c-proj"), None, |d| {
                *d == Allow
            }),
            (r("get", "", "a", "configmaps", "s1"), None, deny),
            (r("get", "", "", "nodes", "n2"), None, |d| *d == NoOpinion),
            (r("list", "", "", "nodes", ""), None, |d| *d == NoOpinion),
            (r("update", "", "", "nodes/status", "n1"), None, |d| {
                *d == NoOpinion
            }),
            (r("update", "", "", "nodes/status", "n2"), None, deny),
            (r("delete", "", "", "nodes", "n2"), None, deny),
            (r("create", "", "", "nodes", ""), Some("n1"), |d| {
                *d == NoOpinion
            }),
            (r("create", "", "", "nodes", ""), Some("n2"), deny),
            (
                r(
                    "update",
                    "coordination.k8s.io",
                    "kube-node-lease",
                    "leases",
                    "n1",
                ),
                None,
                |d| *d == NoOpinion,
            ),
            (
                r(
                    "create",
                    "coordination.k8s.io",
                    "kube-node-lease",
                    "leases",
                    "",
                ),
                Some("n1"),
                |d| *d == NoOpinion,
            ),
            (
                r(
                    "update",
                    "coordination.k8s.io",
                    "kube-node-lease",
                    "leases",
                    "n2",
                ),
                None,
                deny,
            ),
            (
                r(
                    "create",
                    "coordination.k8s.io",
                    "kube-node-lease",
                    "leases",
                    "",
                ),
                Some("n2"),
                deny,
            ),
            (
                r("get", "coordination.k8s.io", "default", "leases", "n1"),
                None,
                deny,
            ),
            (r("create", "", "a", "events", ""), None, |d| {
                *d == NoOpinion
            }),
            (r("list", "", "", "services", ""), None, |d| *d == NoOpinion),
        ];
        for (a, create_name, ok) in table {
            let d = authorize(&n1, &a, &g, create_name);
            assert!(ok(&d), "{a:?} → {d:?}");
        }
        // Not a node: no opinion, whatever the request.
        let alice = UserInfo {
            name: "alice".into(),
            groups: vec![],
        };
        assert_eq!(
            authorize(&alice, &r("get", "", "a", "secrets", "s2"), &g, None),
            NoOpinion
        );
        // A node name without the group is not a node.
        let fake = UserInfo {
            name: "system:node:n1".into(),
            groups: vec![],
        };
        assert_eq!(node_name(&fake), None);
    }

    /// What the minimal decode reads of a pod: (namespace, name, nodeName, secrets,
    /// configmaps); `None` when it refuses the document (the `Value` path takes it).
    type Minimal = Option<(String, String, String, Vec<String>, Vec<String>)>;

    fn minimal(bytes: &[u8]) -> Minimal {
        let p = serde_json::from_slice::<PodFields<'_>>(bytes).ok()?;
        let (secrets, cms) = p.spec.refs();
        Some((
            p.metadata.namespace.as_str().to_string(),
            p.metadata.name.as_str().to_string(),
            p.spec.node_name.as_str().to_string(),
            secrets,
            cms,
        ))
    }

    fn same_graph(a: &NodeGraph, b: &NodeGraph) -> bool {
        a.pods == b.pods && a.secrets == b.secrets && a.configmaps == b.configmaps
    }

    #[test]
    fn minimal_pod_decode_table() {
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let full = r#"{"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "a", "name": "p", "labels": {"nodeName": "x"},
                         "annotations": {"k": "{\"spec\": {\"nodeName\": \"n9\"}}"}},
            "spec": {"nodeName": "n1", "schedulerName": "default",
                "volumes": [
                    {"name": "v", "secret": {"secretName": "s-vol", "defaultMode": 420,
                                             "items": [{"key": "k", "path": "p"}]}},
                    {"name": "w", "configMap": {"name": "c-vol", "optional": true}},
                    {"name": "e", "emptyDir": {}},
                    {"name": "x", "projected": {"sources": [
                        {"secret": {"name": "s-proj"}}, {"configMap": {"name": "c-proj"}},
                        {"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "y", "secret": {"secretName": ""}}],
                "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"cpu": "1"}},
                    "env": [{"name": "A", "value": "x"},
                            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}},
                            {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "c-env", "key": "k"}}},
                            {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    "envFrom": [{"secretRef": {"name": "s-from"}}, {"configMapRef": {"name": "c-from"}}]}],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s-init"}}]}],
                "ephemeralContainers": [{"name": "d", "env": [{"name": "E",
                    "valueFrom": {"secretKeyRef": {"name": "s-vol", "key": "k"}}}]}],
                "imagePullSecrets": [{"name": "pull"}, {"name": ""}, {}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}"#;
        let table: Vec<(&str, &str, Minimal)> = vec![
            (
                "every kind of reference, unknown fields skipped",
                full,
                Some((
                    "a".into(),
                    "p".into(),
                    "n1".into(),
                    strs(&["pull", "s-env", "s-from", "s-init", "s-proj", "s-vol"]),
                    strs(&["c-env", "c-from", "c-proj", "c-vol"]),
                )),
            ),
            (
                "unbound",
                r#"{"metadata": {"namespace": "a", "name": "p"},
                    "spec": {"volumes": [{"secret": {"secretName": "s"}}], "containers": []}}"#,
                Some(("a".into(), "p".into(), "".into(), strs(&["s"]), vec![])),
            ),
            (
                "nulls are absent",
                r#"{"metadata": {"namespace": null, "name": "p"},
                    "spec": {"nodeName": null, "volumes": null, "imagePullSecrets": null,
                             "containers": [{"env": null, "envFrom": [{"secretRef": null}]}]}}"#,
                Some(("".into(), "p".into(), "".into(), vec![], vec![])),
            ),
            (
                "escaped strings",
                r#"{"metadata": {"namespace": "a", "name": "p\u0031"},
                    "spec": {"node\u004eame": "n\u0031",
                             "imagePullSecrets": [{"name": "pull\"x"}]}}"#,
                Some((
                    "a".into(),
                    "p1".into(),
                    "n1".into(),
                    strs(&["pull\"x"]),
                    vec![],
                )),
            ),
            (
                "no metadata, no spec",
                r#"{"kind": "Pod"}"#,
                Some(Default::default()),
            ),
            (
                "a nodeName of the wrong type",
                r#"{"metadata": {"namespace": "a", "name": "p"}, "spec": {"nodeName": 5}}"#,
                None,
            ),
            (
                "a secret name of the wrong type",
                r#"{"metadata": {"namespace": "a", "name": "p"},
                    "spec": {"nodeName": "n1", "volumes": [{"secret": {"secretName": 7}},
                                                           {"secret": {"secretName": "s"}}]}}"#,
                None,
            ),
            (
                "volumes not a list",
                r#"{"metadata": {"namespace": "a", "name": "p"},
                    "spec": {"nodeName": "n1", "volumes": {"secret": {"secretName": "s"}}}}"#,
                None,
            ),
            (
                "spec null",
                r#"{"metadata": {"namespace": "a", "name": "p"}, "spec": null}"#,
                None,
            ),
            (
                "duplicate key",
                r#"{"metadata": {"namespace": "a", "name": "p"},
                    "spec": {"nodeName": "n1", "nodeName": "n2"}}"#,
                None,
            ),
        ];
        for (what, json, want) in table {
            assert_eq!(minimal(json.as_bytes()), want, "{what}");
            // Whichever path decodes it, the graph ends as the Value path makes it.
            let mut by_value = graph();
            by_value.put_pod(&serde_json::from_str::<Value>(json).unwrap());
            let mut by_bytes = graph();
            by_bytes.put_pod_json(json.as_bytes()).unwrap();
            assert!(
                same_graph(&by_value, &by_bytes),
                "{what}: {by_value:?} != {by_bytes:?}"
            );
        }
        // The wrong-typed secret name is skipped, the other one kept, as on the Value path.
        let mut g = NodeGraph::default();
        g.put_pod_json(
            br#"{"metadata": {"namespace": "a", "name": "p"},
                 "spec": {"nodeName": "n1", "volumes": [{"secret": {"secretName": 7}},
                                                        {"secret": {"secretName": "s"}}]}}"#,
        )
        .unwrap();
        assert!(g.node_uses("n1", "secrets", "a", "s"));
        // The last of duplicate keys wins, as on the Value path.
        g.put_pod_json(br#"{"metadata": {"namespace": "a", "name": "p"}, "spec": {"nodeName": "n1", "nodeName": "n2"}}"#)
            .unwrap();
        assert_eq!(g.pod_node("a", "p"), Some("n2"));
        assert!(g.put_pod_json(b"{not json").is_err());
        assert!(g.put_pod_json(br#"{"spec": {}} trailing"#).is_err());
    }

    #[test]
    fn graph_follows_pod_bytes() {
        let mut g = graph();
        let before = g.clone();
        // An update of fields the graph does not read (status, labels) changes nothing.
        g.put_pod_json(
            br#"{"metadata": {"namespace": "a", "name": "p2", "labels": {"x": "y"}},
                 "spec": {"nodeName": "n2", "volumes": [{"name": "v", "secret": {"secretName": "s2"}}],
                          "containers": [{"name": "c"}]},
                 "status": {"phase": "Running"}}"#,
        )
        .unwrap();
        assert!(same_graph(&g, &before));
        // An update that changes a reference moves the edge.
        g.put_pod_json(
            br#"{"metadata": {"namespace": "a", "name": "p2"},
                 "spec": {"nodeName": "n2", "volumes": [{"name": "v", "secret": {"secretName": "s1"}}]}}"#,
        )
        .unwrap();
        assert!(g.node_uses("n2", "secrets", "a", "s1"));
        assert!(!g.node_uses("n2", "secrets", "a", "s2"));
        assert!(g.node_uses("n1", "secrets", "a", "s1"));
        // Binding the pending pod adds it; an unbound pod (a create) adds nothing.
        g.put_pod_json(
            br#"{"metadata": {"namespace": "a", "name": "pending"},
                 "spec": {"nodeName": "n1", "volumes": [{"name": "v", "secret": {"secretName": "s3"}}]}}"#,
        )
        .unwrap();
        assert!(g.node_uses("n1", "secrets", "a", "s3"));
        assert_eq!(g.pod_node("a", "pending"), Some("n1"));
        let bound = g.clone();
        g.put_pod_json(
            br#"{"metadata": {"namespace": "b", "name": "new"},
                 "spec": {"volumes": [{"name": "v", "secret": {"secretName": "s4"}}]}}"#,
        )
        .unwrap();
        assert!(same_graph(&g, &bound));
        assert_eq!(g.pod_node("b", "new"), None);
    }

    #[test]
    fn graph_follows_pod_changes() {
        let mut g = graph();
        // p2 moves its secret to s1 and p1 goes away: n1 loses s1, n2 gains it.
        g.put_pod(&json!({"metadata": {"namespace": "a", "name": "p2"},
            "spec": {"nodeName": "n2", "volumes": [{"name": "v", "secret": {"secretName": "s1"}}]}}));
        g.remove_pod("a", "p1");
        assert!(!g.node_uses("n1", "secrets", "a", "s1"));
        assert!(g.node_uses("n2", "secrets", "a", "s1"));
        assert!(!g.node_uses("n2", "secrets", "a", "s2"));
        assert_eq!(g.pod_node("a", "p1"), None);
        // Binding a pending pod creates the relationship.
        g.put_pod(&json!({"metadata": {"namespace": "a", "name": "pending"},
            "spec": {"nodeName": "n1", "volumes": [{"name": "v", "secret": {"secretName": "s3"}}]}}));
        assert!(g.node_uses("n1", "secrets", "a", "s3"));
    }
}
