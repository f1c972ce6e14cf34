//! Server-side apply (`PATCH` with `Content-Type: application/apply-patch+yaml`, what
//! `kubectl apply --server-side` sends; KUBECTL-COMPAT.md §4).
//!
//! - The body is YAML (kubectl sends JSON, which is YAML too): the manager's full intent.
//! - `fieldManager` is required; `force` is accepted.
//! - The object is created when it does not exist (201), else the applied configuration is
//!   merged into the live object (200): maps merge, lists with a merge key (containers by
//!   `name`, ports by `containerPort`, …: Kubernetes' associative lists of the built-in kinds)
//!   merge by key, other lists are replaced.
//!
//! kapsel does not track field ownership yet, so it keeps **no** `managedFields` (it strips
//! any that a body carries rather than storing fabricated ones, which would make kubectl run its
//! client-side→server-side migration), never answers a 409 field-manager conflict, and does
//! not remove fields that a manager applied before and left out now.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::errors::ApiError;
use crate::handlers::{outcome_response, Params, Target};
use crate::objects as o;
use crate::patch;
use crate::rest::{Api, Sub, WriteOpts};

/// Decode an apply body (YAML or JSON) into the applied configuration.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "an apply patch must be a YAML or JSON object",
        ));
    }
    Ok(v)
}

/// The applied configuration without what a client may not set through apply.
fn sanitize(mut applied: Value) -> Value {
    o::remove_meta(&mut applied, "managedFields");
    applied
}

/// Merge an applied configuration into the live object (see the module docs).
pub fn merge(live: &Value, applied: &Value) -> Result<Value, ApiError> {
    let mut doc = live.clone();
    patch::strategic_merge(&mut doc, &without_directives(applied))?;
    Ok(doc)
}

/// An applied configuration is plain data: `$`-keys are not directives there.
fn without_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

/// `PATCH …/{name}` with an apply patch.
pub async fn apply(
    api: &Api,
    t: &Target,
    name: &str,
    sub: Sub,
    body: &[u8],
    q: &Params,
) -> Result<Response, ApiError> {
    if q.field_manager.is_none() {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let applied = sanitize(decode(body)?);
    let applied_name = o::name(&applied);
    if applied_name.is_empty() {
        return Err(ApiError::bad_request(
            "metadata.name: Required value: name is required for apply patches",
        ));
    }
    if applied_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({applied_name}) does not match the name on the URL ({name})"
        )));
    }
    let opts = WriteOpts {
        dry_run: q.dry_run,
        field_validation: q.field_validation,
    };
    let precondition = !o::resource_version(&applied).is_empty();
    for _ in 0..2 {
        match api.get_object(t.def, t.ns(), name) {
            Err(ApiError::NotFound(r)) => {
                if sub != Sub::Main || precondition {
                    return Err(ApiError::NotFound(r));
                }
                match api.create(t.def, t.ns(), applied.clone(), &opts).await {
                    Ok(out) => return Ok(outcome_response(StatusCode::CREATED, &out)),
                    // Created concurrently: apply to it.
                    Err(ApiError::AlreadyExists(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
            Ok(_) => {
                let out = api
                    .update(t.def, t.ns(), name, sub, &opts, |old| {
                        Ok((merge(old, &applied)?, precondition))
                    })
                    .await?;
                return Ok(outcome_response(StatusCode::OK, &out));
            }
        }
    }
    Err(ApiError::stale(t.def.err_ref(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_and_json_bodies() {
        let y = decode(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n")
            .unwrap();
        assert_eq!(y["data"]["k"], "v");
        let j =
            decode(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#).unwrap();
        assert_eq!(j["metadata"]["name"], "a");
        assert_eq!(decode(b"- a\n- b\n").unwrap_err().code(), 400);
        assert_eq!(decode(b"a: [").unwrap_err().code(), 400);
    }

    #[test]
    fn applied_config_merges_by_merge_keys() {
        let live = json!({
            "metadata": {"name": "web", "labels": {"app": "web", "team": "a"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}], "resources": {}},
                {"name": "log", "image": "log:1"}
            ]}}}
        });
        let applied = json!({
            "metadata": {"name": "web", "labels": {"app": "web"}, "managedFields": [{"manager": "x"}]},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:2", "$patch": "delete"}
            ]}}}
        });
        let merged = merge(&live, &sanitize(applied)).unwrap();
        let cs = &merged["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "web:2", "merged by name");
        assert_eq!(
            cs[0]["ports"],
            json!([{"containerPort": 80}]),
            "other fields kept"
        );
        assert_eq!(cs[1]["name"], "log", "other elements kept");
        assert_eq!(merged["spec"]["replicas"], 3);
        assert_eq!(merged["metadata"]["labels"]["team"], "a");
        assert!(merged["metadata"].get("managedFields").is_none());
    }
}
