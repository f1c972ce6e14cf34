//! Reading manifests (files, directories, URLs, stdin), validating them before anything is sent,
//! and kubectl's client-side apply: a three-way JSON merge patch computed from the
//! `last-applied-configuration` annotation, the new manifest and the live object.
//!
//! The patch is sent as `application/merge-patch+json`. A merge patch replaces lists whole, so a
//! list whose manifest content changed is sent complete (server defaults inside its items are
//! re-applied by the server). That is what kubectl does for kinds it has no schema for; a
//! strategic merge patch (lists merged by key) can replace this once the server implements it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use kapsel_api::codec::{self, DecodeError};
use kapsel_api::labels::LAST_APPLIED;
use kapsel_api::validation::{Defaults, Validate};
use serde_json::{Map, Value};

use crate::resources::{self, ResourceInfo};

/// One document of one source.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// File path, URL or `STDIN`.
    pub source: String,
    /// 1-based index of the document in its source (after `kind: List` flattening).
    pub index: usize,
    pub value: Value,
    pub info: ResourceInfo,
}

impl Manifest {
    pub fn name(&self) -> &str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn namespace(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// A source that failed to read, parse or validate: nothing from it is applied.
#[derive(Clone, Debug)]
pub struct SourceError {
    pub source: String,
    pub message: String,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

/// Expand `-f` arguments into sources: files, directory contents (`.yaml`, `.yml`, `.json`;
/// recursive with `-R`), URLs and `-`.
pub fn expand_sources(args: &[String], recursive: bool) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for a in args {
        if a == "-" || a.starts_with("http://") || a.starts_with("https://") {
            out.push(a.clone());
            continue;
        }
        let p = Path::new(a);
        let meta = std::fs::metadata(p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("the path \"{a}\" does not exist")
            } else {
                anyhow!("unable to read file \"{a}\": {e}")
            }
        })?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(p, recursive, &mut files)?;
            files.sort();
            out.extend(files.into_iter().map(|f| f.display().to_string()));
        } else {
            out.push(a.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let rd = std::fs::read_dir(dir)
        .with_context(|| format!("unable to read directory \"{}\"", dir.display()))?;
    for e in rd {
        let e = e?;
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_dir() {
            if recursive {
                walk(&p, recursive, out)?;
            }
        } else if matches!(
            p.extension().and_then(|x| x.to_str()),
            Some("yaml") | Some("yml") | Some("json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// Read one source's text.
pub async fn read_source(source: &str) -> anyhow::Result<String> {
    if source == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| anyhow!("error: unable to read standard input: {e}"))?;
        return Ok(s);
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        let resp = reqwest::get(source)
            .await
            .map_err(|e| anyhow!("unable to read URL \"{source}\": {e}"))?;
        if !resp.status().is_success() {
            bail!(
                "unable to read URL \"{source}\", server reported {}",
                resp.status()
            );
        }
        return resp
            .text()
            .await
            .map_err(|e| anyhow!("unable to read URL \"{source}\": {e}"));
    }
    let bytes =
        std::fs::read(source).map_err(|e| anyhow!("unable to read file \"{source}\": {e}"))?;
    String::from_utf8(bytes)
        .map_err(|_| anyhow!("unable to read file \"{source}\": not UTF-8 text"))
}

/// The display name of a source in messages (`STDIN` for `-`).
pub fn source_name(source: &str) -> String {
    if source == "-" {
        "STDIN".into()
    } else {
        source.to_string()
    }
}

/// Parse and validate every document of one source. Any error rejects the whole source.
pub fn parse_source(
    source: &str,
    text: &str,
    validate: bool,
) -> Result<Vec<Manifest>, SourceError> {
    let name = source_name(source);
    let err = |message: String| SourceError {
        source: name.clone(),
        message,
    };
    let docs = codec::parse_documents(text)
        .map_err(|(i, e)| err(format!("error parsing \"{name}\": document {}: {e}", i + 1)))?;
    let mut out = Vec::new();
    for (i, value) in docs.into_iter().enumerate() {
        let index = i + 1;
        let info = validate_document(&value, validate).map_err(|m| {
            let what = describe_doc(&value);
            err(format!(
                "error validating \"{name}\": document {index}{what}: {m}"
            ))
        })?;
        out.push(Manifest {
            source: name.clone(),
            index,
            value,
            info,
        });
    }
    Ok(out)
}

fn describe_doc(v: &Value) -> String {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match (kind.is_empty(), name.is_empty()) {
        (false, false) => format!(" ({kind} \"{name}\")"),
        (false, true) => format!(" ({kind})"),
        _ => String::new(),
    }
}

/// Check a document: type meta, a known kind, a name, strict decoding (unknown fields and type
/// errors name the field) and the kind's validation rules.
pub fn validate_document(v: &Value, full: bool) -> Result<ResourceInfo, String> {
    let Some(obj) = v.as_object() else {
        return Err("error validating data: the document is not an object".into());
    };
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let mut missing = Vec::new();
    if api_version.is_empty() {
        missing.push("apiVersion not set");
    }
    if kind.is_empty() {
        missing.push("kind not set");
    }
    if !missing.is_empty() {
        return Err(format!("error validating data: [{}]", missing.join(", ")));
    }
    let info = resources::lookup_kind(api_version, kind).ok_or_else(|| {
        format!("resource mapping not found: no matches for kind \"{kind}\" in version \"{api_version}\"")
    })?;
    let name = v.pointer("/metadata/name").and_then(Value::as_str);
    if name.is_none_or(str::is_empty) {
        return Err("field \"metadata.name\": Required value: name is required".into());
    }
    if full {
        let mut v = v.clone();
        // The namespace is filled in from the context when the object is sent.
        if info.namespaced && v.pointer("/metadata/namespace").is_none() {
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("namespace".into(), Value::String("default".into()));
            }
        }
        typed_check(&info, v)?;
    }
    Ok(info)
}

fn decode_check<K: serde::de::DeserializeOwned + Validate + Defaults>(
    v: Value,
) -> Result<(), String> {
    let mut obj: K = codec::from_value_strict(v).map_err(|e| match e {
        DecodeError::Type { path, message } if !path.is_empty() => {
            format!("field \"{path}\": {message}")
        }
        other => other.to_string(),
    })?;
    // The server defaults before it validates; so do we.
    obj.apply_defaults();
    let errs = obj.validate();
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", "))
    }
}

fn typed_check(info: &ResourceInfo, v: Value) -> Result<(), String> {
    use kapsel_api::*;
    match info.kind {
        "Namespace" => decode_check::<Namespace>(v),
        "Node" => decode_check::<Node>(v),
        "Pod" => decode_check::<Pod>(v),
        "ReplicaSet" => decode_check::<ReplicaSet>(v),
        "Deployment" => decode_check::<Deployment>(v),
        "Service" => decode_check::<Service>(v),
        "Endpoints" => decode_check::<Endpoints>(v),
        "ConfigMap" => decode_check::<ConfigMap>(v),
        "Secret" => decode_check::<Secret>(v),
        "LimitRange" => decode_check::<LimitRange>(v),
        "ResourceQuota" => decode_check::<ResourceQuota>(v),
        "Event" => decode_check::<Event>(v),
        "Lease" => decode_check::<Lease>(v),
        "ImageProfile" => decode_check::<ImageProfile>(v),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Three-way merge
// ---------------------------------------------------------------------------------------------

/// Sort object keys recursively so the annotation text is stable.
fn canonical(v: &Value) -> Value {
    crate::printers::sorted(v)
}

/// The object to send: the manifest with its `last-applied-configuration` annotation set to the
/// manifest itself (without that annotation), as kubectl does.
pub fn with_last_applied(manifest: &Value) -> Value {
    let mut base = manifest.clone();
    if let Some(ann) = base
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        ann.remove(LAST_APPLIED);
    }
    let text = format!(
        "{}\n",
        serde_json::to_string(&canonical(&base)).unwrap_or_default()
    );
    let mut out = base;
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !ann.is_object() {
            *ann = Value::Object(Map::new());
        }
        if let Some(a) = ann.as_object_mut() {
            a.insert(LAST_APPLIED.into(), Value::String(text));
        }
    }
    out
}

/// The last-applied configuration stored on a live object.
pub fn last_applied(live: &Value) -> Option<Value> {
    let text = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)?;
    serde_json::from_str(text).ok()
}

/// `true` when everything `want` says is already in `have` (extra fields in `have`, such as
/// server defaults, are fine). Lists must have the same length, item by item.
pub fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().all(|(k, wv)| match h.get(k) {
            Some(hv) => contains(hv, wv),
            None => wv.is_null(),
        }),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(a, b)| contains(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// The JSON merge patch that takes `current` to `modified` while keeping what other writers set:
/// - fields in `modified` that differ from `current` (or are missing there) are set;
/// - fields in `original` (the last applied manifest) that `modified` no longer has are deleted;
/// - fields only in `current` are left alone.
///
/// Lists are atomic: sent whole when `current` does not already contain them or when the
/// manifest's list changed since the last apply.
pub fn three_way_merge_patch(original: Option<&Value>, modified: &Value, current: &Value) -> Value {
    Value::Object(diff_object(original, modified, current))
}

fn diff_object(original: Option<&Value>, modified: &Value, current: &Value) -> Map<String, Value> {
    let mut patch = Map::new();
    let empty = Map::new();
    let m = modified.as_object().unwrap_or(&empty);
    let c = current.as_object();
    let o = original.and_then(Value::as_object);
    for (k, mv) in m {
        let cv = c.and_then(|c| c.get(k));
        let ov = o.and_then(|o| o.get(k));
        match (mv, cv) {
            (Value::Object(_), Some(cv @ Value::Object(_))) => {
                let sub = diff_object(ov, mv, cv);
                if !sub.is_empty() {
                    patch.insert(k.clone(), Value::Object(sub));
                }
            }
            (Value::Null, None) => {}
            _ => {
                let list_changed = mv.is_array() && ov.is_some_and(|ov| ov != mv);
                let differs = match cv {
                    None => true,
                    Some(cv) => !contains(cv, mv),
                };
                if differs || list_changed {
                    patch.insert(k.clone(), mv.clone());
                }
            }
        }
    }
    if let Some(o) = o {
        for k in o.keys() {
            if !m.contains_key(k) && c.is_some_and(|c| c.contains_key(k)) {
                patch.insert(k.clone(), Value::Null);
            }
        }
    }
    patch
}

/// Is the patch a no-op?
pub fn is_empty_patch(p: &Value) -> bool {
    p.as_object().is_none_or(Map::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removed_fields_are_deleted_and_foreign_fields_kept() {
        let original = json!({"metadata": {"name": "web", "labels": {"a": "1", "b": "2"}},
                              "spec": {"replicas": 3, "paused": false}});
        let modified = json!({"metadata": {"name": "web", "labels": {"a": "1"}},
                              "spec": {"paused": false}});
        let current = json!({"metadata": {"name": "web", "labels": {"a": "1", "b": "2", "c": "ctl"},
                                          "annotations": {"x": "y"}},
                             "spec": {"replicas": 5, "paused": false, "minReadySeconds": 0},
                             "status": {"replicas": 5}});
        let p = three_way_merge_patch(Some(&original), &modified, &current);
        assert_eq!(
            p,
            json!({"metadata": {"labels": {"b": null}}, "spec": {"replicas": null}})
        );
    }

    #[test]
    fn scaled_replicas_survive_when_manifest_has_none() {
        let original = json!({"spec": {"template": {"x": 1}}});
        let modified = json!({"spec": {"template": {"x": 2}}});
        let current = json!({"spec": {"replicas": 7, "template": {"x": 1}}});
        let p = three_way_merge_patch(Some(&original), &modified, &current);
        assert_eq!(p, json!({"spec": {"template": {"x": 2}}}));
    }

    #[test]
    fn unchanged_when_live_has_defaults() {
        let m = json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let current = json!({"spec": {"containers": [{"name": "c", "image": "nginx",
            "imagePullPolicy": "IfNotPresent"}], "restartPolicy": "Always"}});
        assert!(is_empty_patch(&three_way_merge_patch(
            Some(&m),
            &m,
            &current
        )));
        // A list item changed: the whole list is sent.
        let m2 = json!({"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}});
        assert_eq!(
            three_way_merge_patch(Some(&m), &m2, &current),
            json!({"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}})
        );
        // A field removed from a list item: the list differs from the last apply, sent whole.
        let m3 = json!({"spec": {"containers": [{"name": "c"}]}});
        assert_eq!(
            three_way_merge_patch(Some(&m), &m3, &current),
            json!({"spec": {"containers": [{"name": "c"}]}})
        );
    }

    #[test]
    fn last_applied_annotation_round_trip() {
        let manifest = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default"}, "data": {"k": "v"}});
        let sent = with_last_applied(&manifest);
        let la = last_applied(&sent).unwrap();
        assert_eq!(la["data"]["k"], "v");
        assert!(la.pointer("/metadata/annotations").is_none());
        let text = sent["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap();
        assert!(text.ends_with('\n'));
        // Applying the same manifest again on the live object is a no-op.
        let again = with_last_applied(&manifest);
        let p = three_way_merge_patch(last_applied(&sent).as_ref(), &again, &sent);
        assert!(is_empty_patch(&p), "{p}");
    }

    #[test]
    fn validation_names_the_field() {
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicaz": 2}});
        let e = validate_document(&bad, true).unwrap_err();
        assert!(e.contains("spec.replicaz"), "{e}");
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": "two"}});
        let e = validate_document(&bad, true).unwrap_err();
        assert!(e.contains("spec.replicas"), "{e}");
        let e = validate_document(&json!({"kind": "Pod"}), true).unwrap_err();
        assert!(e.contains("apiVersion not set"), "{e}");
        let e = validate_document(
            &json!({"apiVersion": "v9", "kind": "Widget", "metadata": {"name": "w"}}),
            true,
        )
        .unwrap_err();
        assert!(e.contains("no matches for kind \"Widget\""), "{e}");
    }

    #[test]
    fn a_bad_document_rejects_its_source() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndatta: {}\n";
        let e = parse_source("cms.yaml", text, true).unwrap_err();
        assert!(
            e.message
                .starts_with("error validating \"cms.yaml\": document 2 (ConfigMap \"b\")"),
            "{}",
            e.message
        );
        assert!(e.message.contains("datta"));
        let ok = parse_source(
            "-",
            "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"x\"}}",
            true,
        )
        .unwrap();
        assert_eq!(ok[0].source, "STDIN");
    }
}
