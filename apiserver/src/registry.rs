//! The table of served resources, and per kind the typed operations the generic handlers need.
//!
//! The handlers work on `serde_json::Value`s (what the store holds); everything kind-specific —
//! strict decoding, Kubernetes defaults, validation — goes through a `&'static dyn KindOps` built
//! from the typed [`Ops<K>`].

use std::marker::PhantomData;

use serde_json::Value;

use kapsel_api::codec::{self, DecodeError};
use kapsel_api::{
    ApiObject, ClusterRole, ClusterRoleBinding, ConfigMap, Deployment, Endpoints, ErrorList, Event,
    ImageProfile, Lease, LimitRange, Namespace, Node, Pod, ReplicaSet, ResourceQuota, Role,
    RoleBinding, Secret, Service,
};

/// Kind-specific operations on JSON objects.
pub trait KindOps: Send + Sync {
    /// Decode `v` as this kind (collecting unknown field paths), apply Kubernetes' defaults, set
    /// `apiVersion`/`kind`, and encode again. Unknown fields are dropped from the result.
    fn decode_default(&self, v: Value) -> Result<(Value, Vec<String>), DecodeError>;
    /// Validation errors of `v` as a new object (`old == None`) or as an update of `old`.
    fn validate(&self, v: &Value, old: Option<&Value>) -> ErrorList;
}

/// [`KindOps`] for a typed kind.
pub struct Ops<K>(PhantomData<fn() -> K>);

impl<K> Ops<K> {
    pub const NEW: Self = Ops(PhantomData);
}

impl<K: ApiObject> KindOps for Ops<K> {
    fn decode_default(&self, v: Value) -> Result<(Value, Vec<String>), DecodeError> {
        let (mut obj, unknown) = codec::from_value::<K>(v)?;
        obj.apply_defaults();
        obj.set_type_meta();
        let v = serde_json::to_value(&obj).map_err(|e| DecodeError::Type {
            path: String::new(),
            message: e.to_string(),
        })?;
        Ok((v, unknown))
    }

    fn validate(&self, v: &Value, old: Option<&Value>) -> ErrorList {
        // Values given here went through `decode_default`, so they decode.
        let Ok(new) = <K as serde::Deserialize>::deserialize(v) else {
            return Vec::new();
        };
        match old.and_then(|o| <K as serde::Deserialize>::deserialize(o).ok()) {
            Some(old) => new.validate_update(&old),
            None => new.validate(),
        }
    }
}

/// One served resource.
pub struct ResourceDef {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// `v1`, `apps/v1`.
    pub api_version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served: `status`, `scale`, `binding`.
    pub subresources: &'static [&'static str],
    /// Field selector labels beyond `metadata.name` and `metadata.namespace`.
    pub field_labels: &'static [&'static str],
    /// Whether the kind has a `spec` whose changes bump `metadata.generation`.
    pub has_spec: bool,
    /// Whether the kind has a `status` that only the `/status` subresource may change.
    pub has_status: bool,
    pub ops: &'static dyn KindOps,
}

impl std::fmt::Debug for ResourceDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResourceDef({})", self.group_resource())
    }
}

impl ResourceDef {
    /// `deployments.apps` / `pods`.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `/registry/apps/deployments/` (all namespaces) or `/registry/apps/deployments/{ns}/`.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        let g = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        match namespace.filter(|n| !n.is_empty() && self.namespaced) {
            Some(ns) => format!("/registry/{g}/{}/{ns}/", self.plural),
            None => format!("/registry/{g}/{}/", self.plural),
        }
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        let mut k = self.prefix(Some(namespace));
        k.push_str(name);
        k
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// Whether `field` may be used in a field selector on this kind.
    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || (field == "metadata.namespace" && self.namespaced)
            || self.field_labels.contains(&field)
    }

    pub fn err_ref(&self, name: &str) -> crate::errors::ObjRef {
        crate::errors::ObjRef::new(self.plural, self.group, name)
    }
}

macro_rules! def {
    ($k:ty, cats: $cats:expr, subs: $subs:expr, fields: $fields:expr, spec: $spec:expr, status: $status:expr) => {
        ResourceDef {
            group: <$k as kapsel_api::Resource>::GROUP,
            version: <$k as kapsel_api::Resource>::VERSION,
            api_version: <$k as kapsel_api::Resource>::API_VERSION,
            plural: <$k as kapsel_api::Resource>::PLURAL,
            singular: <$k as kapsel_api::Resource>::SINGULAR,
            kind: <$k as kapsel_api::Resource>::KIND,
            namespaced: <$k as kapsel_api::Resource>::NAMESPACED,
            short_names: <$k as kapsel_api::Resource>::SHORT_NAMES,
            categories: $cats,
            subresources: $subs,
            field_labels: $fields,
            has_spec: $spec,
            has_status: $status,
            ops: &Ops::<$k>::NEW,
        }
    };
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

static DEFS: [ResourceDef; 18] = [
    def!(Namespace, cats: NONE, subs: &["status", "finalize"], fields: &["status.phase"], spec: true, status: true),
    def!(Node, cats: NONE, subs: &["status"], fields: &["spec.unschedulable"], spec: true, status: true),
    def!(Pod, cats: ALL, subs: &["status", "binding"],
        fields: &["spec.nodeName", "status.phase", "spec.restartPolicy", "spec.schedulerName",
                  "spec.serviceAccountName", "status.podIP", "status.nominatedNodeName"],
        spec: true, status: true),
    def!(Deployment, cats: ALL, subs: &["status", "scale"], fields: NONE, spec: true, status: true),
    def!(ReplicaSet, cats: ALL, subs: &["status", "scale"], fields: &["status.replicas"], spec: true, status: true),
    def!(Service, cats: ALL, subs: &["status"], fields: &["spec.clusterIP", "spec.type"], spec: true, status: true),
    def!(Endpoints, cats: NONE, subs: NONE, fields: NONE, spec: false, status: false),
    def!(ConfigMap, cats: NONE, subs: NONE, fields: NONE, spec: false, status: false),
    def!(Secret, cats: NONE, subs: NONE, fields: &["type"], spec: false, status: false),
    def!(LimitRange, cats: NONE, subs: NONE, fields: NONE, spec: true, status: false),
    def!(ResourceQuota, cats: NONE, subs: &["status"], fields: NONE, spec: true, status: true),
    def!(Event, cats: NONE, subs: NONE,
        fields: &["involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                  "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                  "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"],
        spec: false, status: false),
    def!(Lease, cats: NONE, subs: NONE, fields: NONE, spec: true, status: false),
    def!(Role, cats: NONE, subs: NONE, fields: NONE, spec: false, status: false),
    def!(ClusterRole, cats: NONE, subs: NONE, fields: NONE, spec: false, status: false),
    def!(RoleBinding, cats: NONE, subs: NONE, fields: NONE, spec: false, status: false),
    def!(ClusterRoleBinding, cats: NONE, subs: NONE, fields: NONE, spec: false, status: false),
    def!(ImageProfile, cats: NONE, subs: NONE, fields: NONE, spec: true, status: false),
];

/// Every served resource.
pub fn all() -> &'static [ResourceDef] {
    &DEFS
}

/// The resource `plural` of `group`/`version`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    DEFS.iter()
        .find(|d| d.group == group && d.version == version && d.plural == plural)
}

/// The resource serving `kind` in `group`.
pub fn find_kind(group: &str, kind: &str) -> Option<&'static ResourceDef> {
    DEFS.iter().find(|d| d.group == group && d.kind == kind)
}

/// Served group-versions, core first: `("", "v1")`, `("apps", "v1")`, …
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for d in DEFS.iter() {
        if !out.contains(&(d.group, d.version)) {
            out.push((d.group, d.version));
        }
    }
    out
}

/// The value of a dotted field path (`spec.nodeName`) as a field selector compares it: strings
/// as they are, numbers and booleans printed, missing fields as `""`.
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_prefixes() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key("default", "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(pods.prefix(None), "/registry/core/pods/");
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(ns.key("", "default"), "/registry/core/namespaces/default");
        assert_eq!(
            ns.key("ignored", "default"),
            "/registry/core/namespaces/default"
        );
        let d = find("apps", "v1", "deployments").unwrap();
        assert_eq!(d.group_resource(), "deployments.apps");
        assert_eq!(
            group_versions(),
            vec![
                ("", "v1"),
                ("apps", "v1"),
                ("coordination.k8s.io", "v1"),
                ("rbac.authorization.k8s.io", "v1"),
                ("kapsel.dev", "v1")
            ]
        );
    }

    #[test]
    fn field_values() {
        let v = serde_json::json!({"spec": {"nodeName": "n1", "unschedulable": true}});
        assert_eq!(field_value(&v, "spec.nodeName"), "n1");
        assert_eq!(field_value(&v, "spec.unschedulable"), "true");
        assert_eq!(field_value(&v, "status.phase"), "");
    }

    #[test]
    fn ops_default_and_type_meta() {
        let pods = find("", "v1", "pods").unwrap();
        let (v, unknown) = pods
            .ops
            .decode_default(serde_json::json!({"metadata": {"name": "a"}, "spec": {"containers": [], "bogus": 1}}))
            .unwrap();
        assert_eq!(unknown, vec!["spec.bogus"]);
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["apiVersion"], "v1");
        assert!(v["spec"].get("bogus").is_none());
    }
}
