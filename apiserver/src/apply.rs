//! Server-side apply (`PATCH` with `Content-Type: application/apply-patch+yaml`, what
//! `kubectl apply --server-side` sends; KUBECTL-COMPAT.md §4), with field ownership
//! (managed.rs):
//!
//! - The body is YAML (kubectl sends JSON, which is YAML too): the manager's full intent.
//! - `fieldManager` is required.
//! - The object is created when it does not exist (201), else the applied configuration is
//!   merged into the live object (200) by the schema's list types (associative lists by their
//!   keys, sets, atomic lists and maps).
//! - The manager's `Apply` entry in `metadata.managedFields` becomes exactly the applied
//!   fields; fields it applied before and no longer applies are removed unless another manager
//!   owns them; changing fields other managers own is a `409` (`Apply failed with 1 conflict:
//!   conflict with "kubectl" using apps/v1: .spec.replicas`, causes `FieldManagerConflict`)
//!   unless `force=true`, which takes them over.

use axum::http::StatusCode;
use axum::response::Response;
use kapsel_api::StatusCause;
use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::handlers::{outcome_response, Params, Target};
use crate::managed;
use crate::objects as o;
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
    without_directives(&applied)
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

/// The 409 of apply conflicts, as Kubernetes answers it.
pub fn conflict_error(conflicts: &[managed::Conflict]) -> ApiError {
    ApiError::ApplyConflict {
        message: managed::conflict_message(conflicts),
        causes: conflicts
            .iter()
            .map(|c| StatusCause {
                reason: Some("FieldManagerConflict".into()),
                message: Some(format!("conflict with {}", c.manager)),
                field: Some(c.field.clone()),
            })
            .collect(),
    }
}

/// Apply `applied` by `w` to `live` (`{}`: create): the new object with its managedFields.
pub fn apply_to(
    live: &Value,
    applied: &Value,
    w: &managed::Writer,
    force: bool,
    has_status: bool,
) -> Result<Value, ApiError> {
    let sub = w.subresource.clone();
    let proj = move |v: &Value| managed::project(v, &sub, has_status);
    let entries = managed::starting_entries(&json!({}), live);
    let out = managed::apply(live, applied, entries, w, force, &o::now_string(), &proj)
        .map_err(|c| conflict_error(&c))?;
    let mut obj = out.object;
    managed::set_entries(&mut obj, &out.entries);
    Ok(obj)
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
    // Ownership is computed here (an Apply entry), not by the write path (an Update entry).
    let opts = WriteOpts {
        dry_run: q.dry_run,
        field_validation: q.field_validation,
        owner: None,
    };
    let w = managed::Writer {
        manager: q.manager(),
        operation: managed::APPLY,
        api_version: t.def.api_version.to_string(),
        subresource: if sub == Sub::Status { "status" } else { "" }.to_string(),
    };
    let has_status = t.def.has_status;
    let precondition = !o::resource_version(&applied).is_empty();
    for _ in 0..2 {
        match api.get_object(t.def, t.ns(), name) {
            Err(ApiError::NotFound(r)) => {
                if sub != Sub::Main || precondition {
                    return Err(ApiError::NotFound(r));
                }
                let body = apply_to(&json!({}), &applied, &w, q.force, has_status)?;
                match api.create(t.def, t.ns(), body, &opts).await {
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
                        Ok((
                            apply_to(old, &applied, &w, q.force, has_status)?,
                            precondition,
                        ))
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
    fn applied_config_merges_and_records_ownership() {
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "team": "a"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}], "resources": {}},
                {"name": "log", "image": "log:1"}
            ]}}}
        });
        let applied = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "managedFields": [{"manager": "x"}]},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:2", "$patch": "delete"}
            ]}}}
        });
        let w = managed::Writer {
            manager: "kubectl".into(),
            operation: managed::APPLY,
            api_version: "apps/v1".into(),
            subresource: String::new(),
        };
        let merged = apply_to(&live, &sanitize(applied), &w, false, true).unwrap();
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
        let mf = &merged["metadata"]["managedFields"];
        assert_eq!(mf.as_array().map(Vec::len), Some(1), "{mf}");
        assert_eq!(mf[0]["manager"], "kubectl");
        assert_eq!(mf[0]["operation"], "Apply");
        assert!(mf[0]["fieldsV1"]["f:metadata"]["f:labels"]
            .get("f:app")
            .is_some());
    }

    #[test]
    fn conflicts_are_kubernetes_409s() {
        let e = conflict_error(&[managed::Conflict {
            manager: "\"kubectl-client-side-apply\" using apps/v1".into(),
            field: ".spec.replicas".into(),
        }]);
        let st = e.to_status();
        assert_eq!(e.code(), 409);
        assert_eq!(st.reason.as_deref(), Some("Conflict"));
        assert_eq!(
            st.message.as_deref(),
            Some("Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas")
        );
        let c = &st.details.unwrap().causes[0];
        assert_eq!(c.reason.as_deref(), Some("FieldManagerConflict"));
        assert_eq!(c.field.as_deref(), Some(".spec.replicas"));
        assert_eq!(
            c.message.as_deref(),
            Some("conflict with \"kubectl-client-side-apply\" using apps/v1")
        );
    }
}
