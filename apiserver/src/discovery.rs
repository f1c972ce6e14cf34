//! Discovery as kubectl expects it (KUBECTL-COMPAT.md §1, §2 and §11): legacy `/api`, `/apis`,
//! `/api/v1`, `/apis/{group}/{version}`, and — when the `Accept` header asks for it — aggregated
//! discovery (`APIGroupDiscoveryList`, v2 or v2beta1, the Content-Type echoing the choice);
//! `/version`, health endpoints, and OpenAPI: `/openapi/v2` as an empty protobuf document and
//! `/openapi/v3` with per-group-version documents whose PATCH operations declare the
//! `fieldValidation` parameter (so kubectl leaves validation to the server).

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
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

pub async fn api_versions(headers: HeaderMap) -> Response {
    if let Some(v) = aggregated_version(&headers) {
        return aggregated(v, true);
    }
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]
        }),
    )
}

pub async fn api_groups(headers: HeaderMap) -> Response {
    if let Some(v) = aggregated_version(&headers) {
        return aggregated(v, false);
    }
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

/// Subresources of `d` as discovery lists them: `(name, group, version, kind, verbs)`.
fn subresources(
    d: &ResourceDef,
) -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
)> {
    const RW: &[&str] = &["get", "patch", "update"];
    let mut out = Vec::new();
    for sub in d.subresources {
        match *sub {
            "status" => out.push(("status", d.group, d.version, d.kind, RW)),
            "scale" => out.push(("scale", "autoscaling", "v1", "Scale", RW)),
            "binding" => out.push(("binding", "", "v1", "Binding", &["create"][..])),
            _ => {}
        }
    }
    if d.plural == "pods" && d.group.is_empty() {
        // Served by the log relay (component/).
        out.push(("log", "", "v1", "Pod", &["get"][..]));
    }
    out
}

fn resource_entries(d: &ResourceDef) -> Vec<Value> {
    let mut main = json!({
        "name": d.plural,
        "singularName": d.singular,
        "namespaced": d.namespaced,
        "kind": d.kind,
        "verbs": VERBS,
    });
    if !d.short_names.is_empty() {
        main["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        main["categories"] = json!(d.categories);
    }
    let mut out = vec![main];
    for (sub, group, version, kind, verbs) in subresources(d) {
        let mut e = json!({"name": format!("{}/{sub}", d.plural), "singularName": "",
                           "namespaced": d.namespaced, "kind": kind, "verbs": verbs});
        if group != d.group || version != d.version {
            e["group"] = group.into();
            e["version"] = version.into();
        }
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

/// The aggregated discovery version the `Accept` header asks for (`v2` or `v2beta1`), in the
/// client's order of preference; `None`: legacy discovery.
pub fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let (mut as_, mut g, mut v) = ("", "", "");
        for p in parts {
            match p.split_once('=') {
                Some(("as", x)) => as_ = x,
                Some(("g", x)) => g = x,
                Some(("v", x)) => v = x,
                _ => {}
            }
        }
        if media.eq_ignore_ascii_case("application/json")
            && as_ == "APIGroupDiscoveryList"
            && g == "apidiscovery.k8s.io"
        {
            match v {
                "v2" => return Some("v2"),
                "v2beta1" => return Some("v2beta1"),
                _ => {}
            }
        }
        if as_.is_empty() {
            // A plain type before any aggregated one: the client prefers legacy.
            return None;
        }
    }
    None
}

fn discovery_resource(d: &ResourceDef) -> Value {
    let kind = |g: &str, v: &str, k: &str| json!({"group": g, "version": v, "kind": k});
    let subs: Vec<Value> = subresources(d)
        .into_iter()
        .map(|(sub, g, v, k, verbs)| {
            json!({"subresource": sub, "responseKind": kind(g, v, k), "verbs": verbs})
        })
        .collect();
    let mut r = json!({
        "resource": d.plural,
        "responseKind": kind(d.group, d.version, d.kind),
        "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": d.singular,
        "verbs": VERBS,
    });
    if !d.short_names.is_empty() {
        r["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        r["categories"] = json!(d.categories);
    }
    if !subs.is_empty() {
        r["subresources"] = Value::Array(subs);
    }
    r
}

/// The `APIGroupDiscoveryList` of the core group (`core == true`, for `/api`) or of every other
/// group (`/apis`).
pub fn aggregated_body(version: &str, core: bool) -> Value {
    let items: Vec<Value> = registry::group_versions()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, v)| {
            let resources: Vec<Value> = registry::all()
                .iter()
                .filter(|d| d.group == g && d.version == v)
                .map(discovery_resource)
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null},
                   "versions": [{"version": v, "resources": resources, "freshness": "Current"}]})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"),
           "metadata": {}, "items": items})
}

fn aggregated(version: &'static str, core: bool) -> Response {
    let mut r = (StatusCode::OK, aggregated_body(version, core).to_string()).into_response();
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    if let Ok(h) = HeaderValue::from_str(&ct) {
        r.headers_mut().insert(header::CONTENT_TYPE, h);
    }
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

/// `/api/v1` → `api/v1`, `apps/v1` → `apis/apps/v1`: the OpenAPI v3 path of a group-version.
fn openapi_gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI v3 document of one group-version: every resource's operations, with the query
/// parameters kapsel honours (kubectl reads `fieldValidation` off the PATCH operation to learn
/// that the server validates). No schemas, and so no strategic-merge-patch content type:
/// kubectl then computes its patches from its built-in types (KUBECTL-COMPAT.md §2).
pub fn openapi_v3_document(group: &str, version: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = registry::all()
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let root = format!("/{}", openapi_gv_path(group, version));
    let q = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": true});
    let write_params = || json!([q("dryRun"), q("fieldManager"), q("fieldValidation")]);
    let mut patch_params = write_params();
    if let Some(a) = patch_params.as_array_mut() {
        a.push(q("force"));
    }
    let mut paths = serde_json::Map::new();
    for d in defs {
        let gvk = json!({"group": d.group, "version": d.version, "kind": d.kind});
        let base = if d.namespaced {
            format!("{root}/namespaces/{{namespace}}/{}", d.plural)
        } else {
            format!("{root}/{}", d.plural)
        };
        let op = |action: &str, params: Value, content: &[&str]| {
            let mut o = json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
                               "parameters": params, "responses": {"200": {"description": "OK"}}});
            if !content.is_empty() {
                let c: serde_json::Map<String, Value> =
                    content.iter().map(|t| (t.to_string(), json!({}))).collect();
                o["requestBody"] = json!({"content": c, "required": true});
            }
            o
        };
        paths.insert(
            base.clone(),
            json!({
                "get": op("list", json!([]), &[]),
                "post": op("post", write_params(), &["application/json", "application/yaml"]),
            }),
        );
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "get": op("get", json!([]), &[]),
                "put": op("put", write_params(), &["application/json", "application/yaml"]),
                "patch": op("patch", patch_params.clone(), &[
                    crate::patch::JSON, crate::patch::MERGE, crate::patch::APPLY,
                ]),
                "delete": op("delete", json!([q("dryRun")]), &[]),
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0")},
        "paths": paths,
    }))
}

/// Every served group-version's OpenAPI v3 document and its content hash, computed once.
fn openapi_v3_documents() -> &'static Vec<(String, String, Value)> {
    static DOCS: OnceLock<Vec<(String, String, Value)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        registry::group_versions()
            .into_iter()
            .filter_map(|(g, v)| {
                let doc = openapi_v3_document(g, v)?;
                // Clients cache the documents by URL: the hash changes with the content.
                let hash = {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    doc.to_string().hash(&mut h);
                    format!("{:016X}", h.finish())
                };
                Some((openapi_gv_path(g, v), hash, doc))
            })
            .collect()
    })
}

/// `GET /openapi/v3`: the index of the per-group-version documents (URLs carry the content
/// hash, which clients cache by).
pub async fn openapi_v3() -> Response {
    let paths: serde_json::Map<String, Value> = openapi_v3_documents()
        .iter()
        .map(|(p, h, _)| {
            (
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={h}")}),
            )
        })
        .collect();
    json_response(StatusCode::OK, &json!({"paths": paths}))
}

/// `GET /openapi/v3/{api/v1 | apis/GROUP/VERSION}`.
pub async fn openapi_v3_gv(Path(rest): Path<String>) -> Response {
    let rest = rest.trim_matches('/');
    match openapi_v3_documents().iter().find(|(p, _, _)| p == rest) {
        Some((_, _, doc)) => json_response(StatusCode::OK, doc),
        None => ApiError::NoSuchResource.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(s: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, s.parse().unwrap());
        h
    }

    #[test]
    fn aggregated_discovery_negotiation() {
        for (a, want) in [
            ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json", Some("v2")),
            ("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json", Some("v2beta1")),
            ("application/json, */*", None),
            ("application/json,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", None),
            ("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList,application/json", None),
        ] {
            assert_eq!(aggregated_version(&accept(a)), want, "{a}");
        }
    }

    #[test]
    fn aggregated_bodies() {
        let core = aggregated_body("v2", true);
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let res = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap();
        let pods = res.iter().find(|r| r["resource"] == "pods").unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(pods["responseKind"]["kind"], "Pod");
        let subs: Vec<&str> = pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subresource"].as_str().unwrap())
            .collect();
        assert!(
            subs.contains(&"log") && subs.contains(&"status"),
            "{subs:?}"
        );
        let groups = aggregated_body("v2beta1", false);
        let apps = groups["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        let scale = deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .unwrap();
        assert_eq!(scale["responseKind"]["group"], "autoscaling");
    }

    #[test]
    fn openapi_v3_patch_declares_field_validation() {
        let doc = openapi_v3_document("apps", "v1").unwrap();
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(params.contains(&"fieldValidation"));
        assert!(
            op["requestBody"]["content"]
                .get(crate::patch::STRATEGIC)
                .is_none(),
            "no SMP without schemas"
        );
        let nodes = openapi_v3_document("", "v1").unwrap();
        assert!(nodes["paths"].get("/api/v1/nodes/{name}").is_some());
        assert!(openapi_v3_document("nope", "v1").is_none());
        let docs = openapi_v3_documents();
        assert!(docs
            .iter()
            .any(|(p, h, _)| p == "apis/apps/v1" && h.len() == 16));
    }
}
