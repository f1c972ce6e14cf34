//! Discovery (legacy format, kubectl's "minimal profile": see KUBECTL-COMPAT.md §1 and §11),
//! `/version`, health endpoints and the two OpenAPI answers kubectl needs.
//! Aggregated discovery can be added later as a content negotiation on `/api` and `/apis`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::registry::{self, ResourceDef};

/// The Kubernetes version kapsel's API corresponds to (clients pick behaviour by `minor`).
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    let mut r = (code, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": KUBE_MAJOR,
            "minor": KUBE_MINOR,
            "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0-kapsel.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        }),
    )
}

pub async fn api_versions() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]
        }),
    )
}

pub async fn api_groups() -> Response {
    let groups: Vec<Value> = registry::group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_entries(d: &ResourceDef) -> Vec<Value> {
    let mut out = vec![json!({
        "name": d.plural,
        "singularName": d.singular,
        "namespaced": d.namespaced,
        "kind": d.kind,
        "verbs": VERBS,
        "shortNames": d.short_names,
        "categories": d.categories,
    })];
    for sub in d.subresources {
        let e = match *sub {
            "status" => {
                json!({"name": format!("{}/status", d.plural), "singularName": "", "namespaced": d.namespaced,
                               "kind": d.kind, "verbs": ["get", "patch", "update"]})
            }
            "scale" => {
                json!({"name": format!("{}/scale", d.plural), "singularName": "", "namespaced": d.namespaced,
                              "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
            }
            "binding" => {
                json!({"name": format!("{}/binding", d.plural), "singularName": "", "namespaced": d.namespaced,
                                "kind": "Binding", "verbs": ["create"]})
            }
            _ => continue,
        };
        out.push(e);
    }
    out
}

/// `GET /api/v1`, `GET /apis/{group}/{version}`.
pub fn resource_list(group: &str, version: &str) -> Result<Response, ApiError> {
    let resources: Vec<Value> = registry::all()
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .flat_map(resource_entries)
        .collect();
    if resources.is_empty() {
        return Err(ApiError::NoSuchResource);
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    ))
}

/// `GET /apis/{group}`.
pub fn api_group(group: &str) -> Result<Response, ApiError> {
    let (g, v) = registry::group_versions()
        .into_iter()
        .find(|(g, _)| *g == group && !g.is_empty())
        .ok_or(ApiError::NoSuchResource)?;
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv.clone()], "preferredVersion": gv}),
    ))
}

pub async fn ok_text() -> Response {
    let mut r = (StatusCode::OK, "ok").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `GET /openapi/v2`: an empty body is a valid, empty protobuf `openapi_v2.Document`; it makes
/// kubectl's `apply` work with client-side validation skipped (KUBECTL-COMPAT.md §2).
pub async fn openapi_v2() -> Response {
    (StatusCode::OK, "").into_response()
}

pub async fn openapi_v3() -> Response {
    ApiError::NoSuchResource.into_response()
}
