//! Decoding manifests and request bodies into typed objects, reporting every unknown field and the
//! exact path of a type error, the way Kubernetes' strict decoding does.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a document could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not well-formed JSON/YAML.
    #[error("{0}")]
    Syntax(String),
    /// A field has the wrong type or an invalid value (path like `spec.replicas`).
    #[error("{path}: {message}")]
    Type { path: String, message: String },
    /// Fields the schema does not know, as `spec.template.spec.containers[0].foo`.
    #[error("strict decoding error: {}", unknown_fields_message(.0))]
    UnknownFields(Vec<String>),
}

fn unknown_fields_message(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decode a JSON value into `T`. Unknown fields are collected (not an error here) and returned.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<(T, Vec<String>), DecodeError> {
    // Tracking the path of every field costs as much as the decode itself; it is only needed to
    // name the field of an error, so decode without it first and redo it on failure.
    let mut unknown = Vec::new();
    let fast = serde_ignored::deserialize(&value, |path| unknown.push(format_path(&path)));
    if let Ok(v) = fast {
        return Ok((v, unknown));
    }
    unknown.clear();
    let mut cb = |path: serde_ignored::Path<'_>| unknown.push(format_path(&path));
    let de = serde_ignored::Deserializer::new(value, &mut cb);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok((v, unknown)),
        Err(e) => {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            Err(DecodeError::Type {
                path: kube_path(&path),
                message,
            })
        }
    }
}

/// Decode strictly: unknown fields are an error.
pub fn from_value_strict<T: DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    let (v, unknown) = from_value(value)?;
    if unknown.is_empty() {
        Ok(v)
    } else {
        Err(DecodeError::UnknownFields(unknown))
    }
}

/// Parse a body that is JSON or YAML (one document) into a JSON value.
pub fn parse_document(body: &[u8]) -> Result<Value, DecodeError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| DecodeError::Syntax(format!("body is not UTF-8: {e}")))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(text).map_err(|e| DecodeError::Syntax(format!("invalid JSON: {e}")))
    } else {
        serde_yaml::from_str::<Value>(text)
            .map_err(|e| DecodeError::Syntax(format!("invalid YAML: {e}")))
    }
}

/// Split a multi-document YAML (or a single JSON document, or a JSON `List`) into JSON values.
/// Empty documents are skipped. `kind: List` documents are flattened into their items.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, (usize, DecodeError)> {
    let mut out = Vec::new();
    let trimmed = text.trim_start();
    let docs: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // A stream of JSON documents.
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        let mut v = Vec::new();
        for (i, d) in stream.enumerate() {
            v.push(d.map_err(|e| (i, DecodeError::Syntax(format!("invalid JSON: {e}"))))?);
        }
        v
    } else {
        let mut v = Vec::new();
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = <Value as serde::Deserialize>::deserialize(doc)
                .map_err(|e| (i, DecodeError::Syntax(format!("invalid YAML: {e}"))))?;
            v.push(value);
        }
        v
    };
    for d in docs {
        match d {
            Value::Null => {}
            Value::Object(ref m)
                if m.get("kind").and_then(Value::as_str) == Some("List")
                    || m.get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.ends_with("List") && m.contains_key("items")) =>
            {
                if let Some(Value::Array(items)) = m.get("items") {
                    out.extend(items.iter().cloned());
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Turn serde_path_to_error's `a.b[0].c` / `a.b.0.c` into Kubernetes' `a.b[0].c`.
fn kube_path(p: &str) -> String {
    if p == "." {
        return String::new();
    }
    let mut out = String::new();
    for seg in p.split('.') {
        if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

fn format_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", format_path(parent)),
        Path::Map { parent, key } => {
            let p = format_path(parent);
            if p.is_empty() {
                key.to_string()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Pod;

    #[test]
    fn unknown_fields_are_reported_with_paths() {
        let v: Value = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "colour": "red"}]}
        });
        let (_pod, unknown) = from_value::<Pod>(v).unwrap();
        assert_eq!(unknown, vec!["metadata.bogus", "spec.containers[0].colour"]);
    }

    #[test]
    fn type_errors_carry_the_field_path() {
        let v: Value = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": "eighty"}]}]}
        });
        match from_value::<Pod>(v) {
            Err(DecodeError::Type { path, .. }) => {
                assert_eq!(path, "spec.containers[0].ports[0].containerPort")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn multi_document_yaml_and_lists() {
        let docs = parse_documents(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert!(parse_documents("a: [").is_err());
    }
}
