//! `metav1` shapes shared by every kind: object metadata, lists, `Status`, watch events, options.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_with::skip_serializing_none;

/// A `metav1.Time`: RFC 3339 with second precision, serialised like `2024-01-02T03:04:05Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub DateTime<Utc>);

impl Time {
    pub fn now() -> Self {
        Time(Utc::now().trunc_subsecs(0))
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| Time(t.with_timezone(&Utc)))
            .map_err(|e| serde::de::Error::custom(format!("invalid time {s:?}: {e}")))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Field by field: chrono's `format("%Y-…")` parses its pattern on every call, and every
        // create and update stamps a time (this is ~10x faster).
        use chrono::{Datelike, Timelike};
        let t = &self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

/// A `metav1.MicroTime`: RFC 3339 with microseconds (`2024-01-02T03:04:05.123456Z`), used by Lease and Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicroTime(pub DateTime<Utc>);

impl MicroTime {
    pub fn now() -> Self {
        MicroTime(Utc::now().trunc_subsecs(6))
    }
}

impl Serialize for MicroTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }
}

impl<'de> Deserialize<'de> for MicroTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| MicroTime(t.with_timezone(&Utc)))
            .map_err(|e| serde::de::Error::custom(format!("invalid time {s:?}: {e}")))
    }
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub creation_timestamp: Option<Time>,
    pub deletion_timestamp: Option<Time>,
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// Server-side apply bookkeeping, kept as the JSON text it came in (see [`ManagedFields`]).
    #[serde(default, skip_serializing_if = "ManagedFields::is_empty")]
    pub managed_fields: ManagedFields,
}

/// `metadata.managedFields`, kept as compact JSON text rather than decoded.
///
/// The API server owns field ownership and works on it as JSON (`managed.rs`); clients only
/// carry it. Decoded into `serde_json::Value` trees it was half of a watched Pod's bytes and
/// most of the time spent decoding and dropping one (the scheduler decodes every Pod event).
/// Kubernetes keeps `FieldsV1` as raw bytes for the same reason.
///
/// It decodes from JSON text (copied as is after validation) and from a `serde_json::Value`,
/// which covers every path typed objects take here: YAML manifests become a `Value` first.
/// `null` and `[]` are empty. Two lists are equal when their texts are (the API server writes
/// them compactly, so the same list read twice compares equal).
#[derive(Clone, Debug, Default)]
pub struct ManagedFields(Option<Box<serde_json::value::RawValue>>);

impl ManagedFields {
    /// No entries (absent, `null` or `[]`): not serialized.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(|r| {
            let t = r.get().trim();
            t == "null" || t == "[]" || (t.starts_with('[') && t[1..].trim() == "]")
        })
    }

    /// The entries' JSON text (`None` when empty).
    pub fn json(&self) -> Option<&str> {
        (!self.is_empty())
            .then(|| self.0.as_deref().map(|r| r.get()))
            .flatten()
    }

    /// The entries as JSON values (for the rare reader; the API server works on the object).
    pub fn entries(&self) -> Vec<serde_json::Value> {
        self.json()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }
}

impl PartialEq for ManagedFields {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl Serialize for ManagedFields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(raw) => raw.serialize(s),
            None => s.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for ManagedFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        match raw.get().trim_start().as_bytes().first() {
            Some(b'[') | Some(b'n') => Ok(ManagedFields(Some(raw))),
            _ => Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Other("a non-list value"),
                &"a list of managedFields entries",
            )),
        }
    }
}

impl ObjectMeta {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
    pub fn uid(&self) -> &str {
        self.uid.as_deref().unwrap_or("")
    }
    pub fn resource_version(&self) -> &str {
        self.resource_version.as_deref().unwrap_or("")
    }
    /// The owner reference with `controller: true`, if any.
    pub fn controller_ref(&self) -> Option<&OwnerReference> {
        self.owner_references
            .iter()
            .find(|o| o.controller == Some(true))
    }
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        }
    }
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        }
    }
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub controller: Option<bool>,
    pub block_owner_deletion: Option<bool>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    pub resource_version: Option<String>,
    #[serde(rename = "continue")]
    pub continue_: Option<String>,
    pub remaining_item_count: Option<i64>,
}

/// A typed list (`PodList`, `DeploymentList`, …).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

/// `metav1.Status`, the body of every error answer.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ListMeta,
    pub status: Option<String>,
    pub message: Option<String>,
    pub reason: Option<String>,
    pub details: Option<StatusDetails>,
    pub code: Option<u16>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    pub name: Option<String>,
    pub group: Option<String>,
    pub kind: Option<String>,
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    pub retry_after_seconds: Option<i32>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCause {
    pub reason: Option<String>,
    pub message: Option<String>,
    pub field: Option<String>,
}

impl Status {
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Status {
            api_version: "v1".into(),
            kind: "Status".into(),
            status: Some("Failure".into()),
            message: Some(message.into()),
            reason: if reason.is_empty() {
                None
            } else {
                Some(reason.into())
            },
            code: Some(code),
            ..Default::default()
        }
    }
    pub fn success() -> Self {
        Status {
            api_version: "v1".into(),
            kind: "Status".into(),
            status: Some("Success".into()),
            ..Default::default()
        }
    }
    pub fn with_details(mut self, details: StatusDetails) -> Self {
        self.details = Some(details);
        self
    }
    pub fn reason(&self) -> &str {
        self.reason.as_deref().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.message.as_deref().unwrap_or("")
    }
    pub fn code(&self) -> u16 {
        self.code.unwrap_or(0)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code(), self.reason(), self.message())
    }
}

impl std::error::Error for Status {}

/// A watch event as sent on the wire: `{"type":"ADDED","object":{…}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatchEvent<T> {
    #[serde(rename = "type")]
    pub type_: WatchEventType,
    pub object: T,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Error,
}

impl WatchEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventType::Added => "ADDED",
            WatchEventType::Modified => "MODIFIED",
            WatchEventType::Deleted => "DELETED",
            WatchEventType::Bookmark => "BOOKMARK",
            WatchEventType::Error => "ERROR",
        }
    }
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub preconditions: Option<Preconditions>,
    pub propagation_policy: Option<String>,
    pub orphan_dependents: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<String>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// `metav1.LabelSelector`.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// `intstr.IntOrString`: `3` or `"25%"` or a named port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i32),
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => write!(f, "{s}"),
        }
    }
}

/// `metav1.Condition`-like shape shared by Deployment, ReplicaSet, Node and Pod conditions.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub last_probe_time: Option<Time>,
    pub last_heartbeat_time: Option<Time>,
    pub last_update_time: Option<Time>,
    pub last_transition_time: Option<Time>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn time_formats_as_chrono_rfc3339_seconds() {
        for text in [
            "0001-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "2026-11-29T07:05:09Z",
            "9999-12-31T23:59:59Z",
        ] {
            let t: Time = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(t.to_string(), text);
            assert_eq!(t.to_string(), t.0.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(text));
        }
        let now = Time::now();
        assert_eq!(
            now.to_string(),
            now.0.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        );
    }
}

#[cfg(test)]
mod managed_fields_tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::core::Pod;

    fn with_entries() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "managedFields": [
            {"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
             "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}, "x-unknown": [1, 2]}
        ]}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
    }

    #[test]
    fn managed_fields_survive_every_decode_path_unchanged() {
        let v = with_entries();
        let want = v["metadata"]["managedFields"].clone();
        let text = serde_json::to_string(&v).unwrap();
        let decoded: Vec<Pod> = vec![
            serde_json::from_str(&text).unwrap(),
            serde_json::from_value(v.clone()).unwrap(),
            Pod::deserialize(&v).unwrap(),
            crate::codec::from_value::<Pod>(v.clone()).unwrap().0,
            crate::codec::from_value_strict::<Pod>(v.clone()).unwrap(),
        ];
        for (i, p) in decoded.iter().enumerate() {
            assert_eq!(
                Value::Array(p.metadata.managed_fields.entries()),
                want,
                "path {i}"
            );
            let back = serde_json::to_value(p).unwrap();
            assert_eq!(back["metadata"]["managedFields"], want, "path {i}");
            let back: Value = serde_json::from_slice(&serde_json::to_vec(p).unwrap()).unwrap();
            assert_eq!(back["metadata"]["managedFields"], want, "path {i}");
            assert_eq!(p, &decoded[0], "path {i}");
        }
    }

    #[test]
    fn empty_managed_fields_are_not_written_and_a_non_list_is_refused() {
        for empty in [json!(null), json!([])] {
            let mut v = with_entries();
            v["metadata"]["managedFields"] = empty;
            for p in [
                serde_json::from_value::<Pod>(v.clone()).unwrap(),
                serde_json::from_str::<Pod>(&v.to_string()).unwrap(),
            ] {
                assert!(p.metadata.managed_fields.is_empty());
                assert_eq!(p.metadata.managed_fields.json(), None);
                let back = serde_json::to_value(&p).unwrap();
                assert!(back["metadata"].get("managedFields").is_none(), "{back}");
            }
        }
        let spaced: Pod = serde_json::from_str(
            r#"{"metadata":{"name":"p","managedFields":[ ]},"spec":{"containers":[]}}"#,
        )
        .unwrap();
        assert!(spaced.metadata.managed_fields.is_empty());
        let mut v = with_entries();
        v["metadata"]["managedFields"] = json!({"manager": "x"});
        let err = crate::codec::from_value::<Pod>(v).unwrap_err().to_string();
        assert!(err.contains("metadata.managedFields"), "{err}");
        assert!(err.contains("a list of managedFields entries"), "{err}");
    }
}
