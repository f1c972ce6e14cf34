//! Generic REST handlers: one handler for `/api/v1/…` and one for `/apis/{group}/{version}/…`,
//! dispatching by path segments to list/watch/create/get/update/patch/delete and the
//! subresources (`status`, `scale`, `binding`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};

use kapsel_api::codec;
use kapsel_api::validation::field;
use kapsel_api::{Binding, DeleteOptions, FieldError, FieldErrorKind, LabelSelector, Scale};

use crate::discovery;
use crate::errors::{ApiError, ObjRef, MAX_BODY_BYTES};
use crate::filter::Filter;
use crate::objects as o;
use crate::patch::PatchBody;
use crate::registry::{self, ResourceDef};
use crate::rest::{Api, FieldValidation, Outcome, Sub, WriteOpts};
use crate::store::Store;
use crate::watch::{self, WatchRequest};

pub type AppState = Arc<Api>;

/// What a request path names.
#[derive(Debug)]
pub struct Target {
    pub def: &'static ResourceDef,
    /// The namespace from the path (`None` for cluster-scoped kinds and all-namespace lists).
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    pub(crate) fn ns(&self) -> &str {
        self.ns.as_deref().unwrap_or("")
    }
}

/// Namespace subresources (so `/namespaces/x/status` is not a collection named `status`).
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// Resolve path segments after `/api/v1` or `/apis/{group}/{version}`.
pub fn resolve(group: &str, version: &str, segs: &[&str]) -> Result<Target, ApiError> {
    let namespaced_path = segs.len() >= 3
        && segs[0] == "namespaces"
        && !(segs.len() == 3 && NAMESPACE_SUBRESOURCES.contains(&segs[2]));
    let (ns, rest) = if namespaced_path {
        (Some(segs[1].to_string()), &segs[2..])
    } else {
        (None, segs)
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::NoSuchResource),
    };
    let def = registry::find(group, version, plural).ok_or(ApiError::NoSuchResource)?;
    if ns.is_some() && !def.namespaced {
        return Err(ApiError::NoSuchResource);
    }
    if ns.is_none() && def.namespaced && name.is_some() {
        return Err(ApiError::NoSuchResource);
    }
    if let Some(s) = &sub {
        if !def.has_subresource(s) {
            return Err(ApiError::NoSuchResource);
        }
    }
    Ok(Target { def, ns, name, sub })
}

/// Query parameters of REST requests.
#[derive(Debug, Default)]
pub struct Params {
    pub watch: bool,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: usize,
    pub continue_: Option<String>,
    pub resource_version: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_bookmarks: bool,
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub orphan_dependents: Option<bool>,
    /// `fieldManager` (required for server-side apply) and `force` (apply conflicts).
    pub field_manager: Option<String>,
    pub force: bool,
    /// `sendInitialEvents=true` (client-go's streaming list, kubectl 1.37's `rollout status`).
    pub send_initial_events: bool,
    /// The request's User-Agent (its first word is the default field manager).
    pub user_agent: String,
}

fn parse_bool(k: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "1" | "true" | "True" | "TRUE" => Ok(true),
        "" | "0" | "false" | "False" | "FALSE" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "invalid value for {k}: {v:?} (expected true or false)"
        ))),
    }
}

fn parse_num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, ApiError> {
    v.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?}")))
}

impl Params {
    pub fn parse(uri: &Uri) -> Result<Params, ApiError> {
        if uri.query().is_none_or(str::is_empty) {
            // Most requests (every create of a controller or the CLI) have no query.
            return Ok(Params::default());
        }
        let Query(map) = Query::<HashMap<String, String>>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
        let mut p = Params::default();
        for (k, v) in &map {
            match k.as_str() {
                "watch" => p.watch = parse_bool(k, v)?,
                "labelSelector" => p.label_selector = Some(v.clone()),
                "fieldSelector" => p.field_selector = Some(v.clone()),
                "limit" => p.limit = parse_num(k, v)?,
                "continue" => p.continue_ = Some(v.clone()).filter(|s| !s.is_empty()),
                "resourceVersion" => p.resource_version = Some(v.clone()).filter(|s| !s.is_empty()),
                "timeoutSeconds" => p.timeout_seconds = Some(parse_num(k, v)?),
                "allowWatchBookmarks" => p.allow_bookmarks = parse_bool(k, v)?,
                "dryRun" => match v.as_str() {
                    "All" => p.dry_run = true,
                    "" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "dryRun: Unsupported value: {other:?}: supported values: \"All\""
                        )))
                    }
                },
                "fieldValidation" => {
                    p.field_validation = match v.to_ascii_lowercase().as_str() {
                        "strict" | "" => FieldValidation::Strict,
                        "warn" => FieldValidation::Warn,
                        "ignore" => FieldValidation::Ignore,
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "fieldValidation parameter unsupported: {v:?}; supported values: Ignore, Warn, Strict"
                            )))
                        }
                    }
                }
                "gracePeriodSeconds" => p.grace_period_seconds = Some(parse_num(k, v)?),
                "propagationPolicy" => p.propagation_policy = Some(v.clone()),
                "orphanDependents" => p.orphan_dependents = Some(parse_bool(k, v)?),
                "fieldManager" => p.field_manager = Some(v.clone()).filter(|s| !s.is_empty()),
                "force" => p.force = parse_bool(k, v)?,
                "sendInitialEvents" => p.send_initial_events = parse_bool(k, v)?,
                // Accepted and ignored: fieldManager, pretty, timeout, resourceVersionMatch, force, …
                _ => {}
            }
        }
        Ok(p)
    }

    fn write_opts(&self) -> WriteOpts {
        self.write_opts_for("")
    }

    /// The field manager: `fieldManager`, else the User-Agent up to its first `/` (Kubernetes'
    /// default: `kubectl/v1.20.2 (linux/amd64) …` → `kubectl`).
    pub fn manager(&self) -> String {
        match &self.field_manager {
            Some(m) => m.clone(),
            None => self.user_agent.split('/').next().unwrap_or("").to_string(),
        }
    }

    /// Write options of a write to `subresource` (`""`, `status`, `scale`).
    fn write_opts_for(&self, subresource: &'static str) -> WriteOpts {
        WriteOpts {
            dry_run: self.dry_run,
            field_validation: self.field_validation,
            owner: Some(crate::rest::FieldOwner {
                manager: self.manager(),
                subresource,
            }),
        }
    }
}

/// The media type of a request body, lower-case, without parameters.
fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Read a body, at most 3 MiB.
pub async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::TooLarge);
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let msg = e.to_string();
            if msg.contains("length limit") {
                ApiError::TooLarge
            } else {
                ApiError::bad_request(format!("reading the request body: {msg}"))
            }
        })
}

/// Parse an object body (JSON, or YAML when the content type says so).
pub fn parse_object(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let ct = content_type(headers);
    let v: Value = match ct.as_str() {
        "" | "application/json" | "*/*" | "text/json" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            serde_yaml::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
            })?
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: application/json, application/yaml"
            )))
        }
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "the request body must be a JSON object, not {}",
            match v {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )));
    }
    Ok(v)
}

fn with_json_type(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Quote a warning text as RFC 7234 wants it: `299 - "text"`.
fn warning_header(text: &str) -> Option<HeaderValue> {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    HeaderValue::from_str(&format!("299 - \"{escaped}\"")).ok()
}

pub(crate) fn object_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = with_json_type((code, body).into_response());
    for w in warnings {
        if let Some(h) = warning_header(w) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

pub(crate) fn outcome_response(code: StatusCode, out: &Outcome) -> Response {
    let Some(bytes) = &out.encoded else {
        return object_response(code, &out.object, &out.warnings);
    };
    let mut r = raw_response(code, bytes.clone());
    for w in &out.warnings {
        if let Some(h) = warning_header(w) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

fn raw_response(code: StatusCode, bytes: Bytes) -> Response {
    with_json_type((code, Body::from(bytes)).into_response())
}

/// `/api/v1/{*rest}`.
pub async fn core(
    State(api): State<AppState>,
    Path(rest): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    dispatch(api, "", "v1", &rest, method, uri, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `/apis/{group}/{version}/{*rest}`.
pub async fn grouped(
    State(api): State<AppState>,
    Path((group, version, rest)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    dispatch(api, &group, &version, &rest, method, uri, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `/apis/{group}/{version}`.
pub async fn group_version(Path((group, version)): Path<(String, String)>) -> Response {
    discovery::resource_list(&group, &version).unwrap_or_else(IntoResponse::into_response)
}

/// `/apis/{group}`.
pub async fn group(Path(group): Path<String>) -> Response {
    discovery::api_group(&group).unwrap_or_else(IntoResponse::into_response)
}

pub async fn core_v1() -> Response {
    discovery::resource_list("", "v1").unwrap_or_else(IntoResponse::into_response)
}

pub async fn not_found() -> Response {
    ApiError::NoSuchResource.into_response()
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    api: AppState,
    group: &str,
    version: &str,
    rest: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let t = resolve(group, version, &segs)?;
    let mut q = Params::parse(&uri)?;
    q.user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let def = t.def;
    // Table / PartialObjectMetadata for reads (table.rs), plain JSON otherwise.
    let fmt = if method == Method::GET {
        crate::table::negotiate(&headers, &uri)?
    } else {
        crate::table::Format::Json
    };
    match (t.name.as_deref(), t.sub.as_deref()) {
        (None, _) => match method {
            Method::GET if q.watch => watch_collection(api, &t, &q, fmt),
            Method::GET => list(&api, &t, &q, fmt),
            Method::POST => {
                if def.namespaced && t.ns.is_none() {
                    return Err(ApiError::MethodNotAllowed);
                }
                let b = read_body(&headers, body).await?;
                let v = parse_object(&headers, &b)?;
                let out = api.create(def, t.ns(), v, &q.write_opts()).await?;
                Ok(outcome_response(StatusCode::CREATED, &out))
            }
            Method::DELETE => {
                let b = read_body(&headers, body).await?;
                let opts = delete_options(&headers, &b, &q)?;
                delete_collection(&api, &t, &q, &opts).await
            }
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), None) => match method {
            Method::GET => {
                let b = api
                    .store
                    .get(&def.key(t.ns(), name))?
                    .ok_or_else(|| ApiError::NotFound(def.err_ref(name)))?;
                Ok(raw_response(
                    StatusCode::OK,
                    crate::table::object(fmt, def, b),
                ))
            }
            Method::PUT => {
                let b = read_body(&headers, body).await?;
                let v = parse_object(&headers, &b)?;
                put(&api, &t, name, Sub::Main, v, &q).await
            }
            Method::PATCH => {
                let b = read_body(&headers, body).await?;
                patch(&api, &t, name, Sub::Main, &headers, &b, &q).await
            }
            Method::DELETE => {
                let b = read_body(&headers, body).await?;
                let opts = delete_options(&headers, &b, &q)?;
                let (obj, _) = api.delete(def, t.ns(), name, &opts, q.dry_run).await?;
                Ok(object_response(StatusCode::OK, &obj, &[]))
            }
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), Some("status")) => match method {
            Method::GET => {
                let (v, _) = api.get_object(def, t.ns(), name)?;
                Ok(object_response(StatusCode::OK, &v, &[]))
            }
            Method::PUT => {
                let b = read_body(&headers, body).await?;
                let v = parse_object(&headers, &b)?;
                put(&api, &t, name, Sub::Status, v, &q).await
            }
            Method::PATCH => {
                let b = read_body(&headers, body).await?;
                patch(&api, &t, name, Sub::Status, &headers, &b, &q).await
            }
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), Some("scale")) => match method {
            Method::GET => {
                let (v, _) = api.get_object(def, t.ns(), name)?;
                Ok(object_response(StatusCode::OK, &scale_of(&v), &[]))
            }
            Method::PUT => {
                let b = read_body(&headers, body).await?;
                let v = parse_object(&headers, &b)?;
                scale_update(&api, &t, name, &q, ScaleInput::Replace(v)).await
            }
            Method::PATCH => {
                let b = read_body(&headers, body).await?;
                let p = PatchBody::decode(&content_type(&headers), &b)?;
                scale_update(&api, &t, name, &q, ScaleInput::Patch(p)).await
            }
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), Some("binding")) => match method {
            Method::POST => {
                let b = read_body(&headers, body).await?;
                let v = parse_object(&headers, &b)?;
                bind(&api, &t, name, v, &q).await
            }
            _ => Err(ApiError::MethodNotAllowed),
        },
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn sub_write_opts(q: &Params, sub: Sub) -> WriteOpts {
    q.write_opts_for(if sub == Sub::Status { "status" } else { "" })
}

async fn put(
    api: &Api,
    t: &Target,
    name: &str,
    sub: Sub,
    body: Value,
    q: &Params,
) -> Result<Response, ApiError> {
    let precondition = !o::resource_version(&body).is_empty();
    let out = api
        .update(t.def, t.ns(), name, sub, &sub_write_opts(q, sub), |_old| {
            Ok((body.clone(), precondition))
        })
        .await?;
    Ok(outcome_response(StatusCode::OK, &out))
}

async fn patch(
    api: &Api,
    t: &Target,
    name: &str,
    sub: Sub,
    headers: &HeaderMap,
    body: &[u8],
    q: &Params,
) -> Result<Response, ApiError> {
    if content_type(headers) == crate::patch::APPLY {
        return crate::apply::apply(api, t, name, sub, body, q).await;
    }
    let p = PatchBody::decode(&content_type(headers), body)?;
    let precondition = p.sets_resource_version();
    let out = api
        .update(t.def, t.ns(), name, sub, &sub_write_opts(q, sub), |old| {
            let mut doc = old.clone();
            p.apply(&mut doc)?;
            Ok((doc, precondition))
        })
        .await?;
    Ok(outcome_response(StatusCode::OK, &out))
}

fn list(
    api: &Api,
    t: &Target,
    q: &Params,
    fmt: crate::table::Format,
) -> Result<Response, ApiError> {
    let def = t.def;
    let filter = Filter::parse(
        def,
        q.label_selector.as_deref(),
        q.field_selector.as_deref(),
    )?;
    let prefix = def.prefix(t.ns.as_deref());
    let mut start: Option<String> = match &q.continue_ {
        Some(tok) => {
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(tok)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|k| k.starts_with(&prefix))
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            Some(key)
        }
        None => None,
    };
    // Pages after the first are served from the latest state, not from the first page's
    // revision (sled keeps no old versions); each page's metadata.resourceVersion says which.
    let mut items: Vec<Bytes> = Vec::new();
    let mut revision = None;
    let mut next: Option<String> = None;
    let page_size = if filter.is_empty() || q.limit == 0 {
        q.limit
    } else {
        q.limit.max(500)
    };
    'pages: loop {
        let page = api.store.list(&prefix, start.as_deref(), page_size)?;
        revision.get_or_insert(page.revision);
        let n = page.items.len();
        let mut last = None;
        for (i, (k, v)) in page.items.into_iter().enumerate() {
            if filter.matches_bytes(&v) {
                items.push(v);
            }
            if q.limit > 0 && items.len() == q.limit {
                if i + 1 < n || page.more {
                    next = Some(k);
                }
                break 'pages;
            }
            last = Some(k);
        }
        if !page.more {
            break;
        }
        start = last;
    }
    let mut meta = json!({"resourceVersion": revision.unwrap_or(0).to_string()});
    if let Some(k) = next {
        meta["continue"] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(k.as_bytes())
            .into();
    }
    if let Some(v) = crate::table::list(fmt, def, &meta, &items) {
        return Ok(object_response(StatusCode::OK, &v, &[]));
    }
    Ok(raw_response(StatusCode::OK, list_body(def, &meta, &items)))
}

/// `{"kind":"PodList","apiVersion":"v1","metadata":{…},"items":[…]}` from stored bytes.
fn list_body(def: &ResourceDef, meta: &Value, items: &[Bytes]) -> Bytes {
    let total: usize = items.iter().map(|i| i.len() + 1).sum();
    let mut b = BytesMut::with_capacity(total + 128);
    b.put_slice(b"{\"kind\":\"");
    b.put_slice(def.kind.as_bytes());
    b.put_slice(b"List\",\"apiVersion\":\"");
    b.put_slice(def.api_version.as_bytes());
    b.put_slice(b"\",\"metadata\":");
    b.put_slice(meta.to_string().as_bytes());
    b.put_slice(b",\"items\":[");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            b.put_u8(b',');
        }
        b.put_slice(it);
    }
    b.put_slice(b"]}");
    b.freeze()
}

fn watch_collection(
    api: AppState,
    t: &Target,
    q: &Params,
    fmt: crate::table::Format,
) -> Result<Response, ApiError> {
    let filter = Filter::parse(
        t.def,
        q.label_selector.as_deref(),
        q.field_selector.as_deref(),
    )?;
    let from = match q.resource_version.as_deref() {
        _ if q.send_initial_events => None,
        None | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    watch::watch(
        api,
        WatchRequest {
            def: t.def,
            prefix: t.def.prefix(t.ns.as_deref()),
            from,
            filter,
            timeout: q.timeout_seconds.map(Duration::from_secs),
            bookmarks: q.allow_bookmarks,
            format: fmt,
            initial_events_end: q.send_initial_events,
        },
    )
}

fn delete_options(headers: &HeaderMap, body: &[u8], q: &Params) -> Result<DeleteOptions, ApiError> {
    let mut opts = if body.iter().all(|b| b.is_ascii_whitespace()) {
        DeleteOptions::default()
    } else {
        let v = parse_object(headers, body)?;
        let (opts, _unknown) = codec::from_value::<DeleteOptions>(v).map_err(|e| {
            ApiError::bad_request(format!("the DeleteOptions in the body are not valid: {e}"))
        })?;
        opts
    };
    if q.grace_period_seconds.is_some() {
        opts.grace_period_seconds = q.grace_period_seconds;
    }
    if q.propagation_policy.is_some() {
        opts.propagation_policy = q.propagation_policy.clone();
    }
    if q.orphan_dependents.is_some() {
        opts.orphan_dependents = q.orphan_dependents;
    }
    Ok(opts)
}

async fn delete_collection(
    api: &Api,
    t: &Target,
    q: &Params,
    opts: &DeleteOptions,
) -> Result<Response, ApiError> {
    let def = t.def;
    let filter = Filter::parse(
        def,
        q.label_selector.as_deref(),
        q.field_selector.as_deref(),
    )?;
    let page = api.store.list(&def.prefix(t.ns.as_deref()), None, 0)?;
    let mut deleted = Vec::new();
    for (_, b) in page.items {
        let Ok(v) = serde_json::from_slice::<Value>(&b) else {
            continue;
        };
        if !filter.matches(&v) {
            continue;
        }
        match api
            .delete(def, o::namespace(&v), o::name(&v), opts, q.dry_run)
            .await
        {
            Ok((obj, _)) => deleted.push(Bytes::from(serde_json::to_vec(&obj).unwrap_or_default())),
            Err(ApiError::NotFound(_)) => {}
            // The system namespaces are skipped, as Kubernetes' deletecollection skips them.
            Err(ApiError::Forbidden { .. }) if def.plural == "namespaces" => {}
            Err(e) => return Err(e),
        }
    }
    let meta = json!({"resourceVersion": api.store.current_revision().to_string()});
    Ok(raw_response(
        StatusCode::OK,
        list_body(def, &meta, &deleted),
    ))
}

/// The string form of a label selector (`a=b,c in (x,y),!d`), sorted by key as Kubernetes.
pub fn selector_string(ls: &LabelSelector) -> String {
    let mut parts: Vec<(String, String)> = ls
        .match_labels
        .iter()
        .map(|(k, v)| (k.clone(), format!("{k}={v}")))
        .collect();
    for e in &ls.match_expressions {
        let mut vals = e.values.clone();
        vals.sort();
        let s = match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, vals.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, vals.join(",")),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({})", e.key, vals.join(",")),
        };
        parts.push((e.key.clone(), s));
    }
    parts.sort();
    parts
        .into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(",")
}

/// The `autoscaling/v1 Scale` view of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let mut meta = serde_json::Map::new();
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = o::meta_value(obj, f) {
            meta.insert(f.into(), v.clone());
        }
    }
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| <LabelSelector as serde::Deserialize>::deserialize(s).ok())
        .map(|ls| selector_string(&ls))
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        }
    })
}

enum ScaleInput {
    Replace(Value),
    Patch(PatchBody),
}

async fn scale_update(
    api: &Api,
    t: &Target,
    name: &str,
    q: &Params,
    input: ScaleInput,
) -> Result<Response, ApiError> {
    let fv = q.field_validation;
    let opts = q.write_opts_for("scale");
    let out = api
        .update(t.def, t.ns(), name, Sub::Main, &opts, |old| {
            let (mut s, precondition) = match &input {
                ScaleInput::Replace(v) => (v.clone(), !o::resource_version(v).is_empty()),
                ScaleInput::Patch(p) => {
                    let mut s = scale_of(old);
                    p.apply(&mut s)?;
                    (s, p.sets_resource_version())
                }
            };
            let scale_def = ScaleDef;
            scale_def.check(&mut s)?;
            let (scale, unknown) = codec::from_value::<Scale>(s).map_err(|e| {
                ApiError::bad_request(format!(
                    "Scale in version \"v1\" cannot be handled as a Scale: {e}"
                ))
            })?;
            if !unknown.is_empty() && fv == FieldValidation::Strict {
                return Err(ApiError::bad_request(format!(
                    "Scale in version \"v1\" cannot be handled as a Scale: {}",
                    codec::DecodeError::UnknownFields(unknown)
                )));
            }
            let sname = scale.metadata.name();
            if !sname.is_empty() && sname != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({sname}) does not match the name on the URL ({name})"
                )));
            }
            let replicas = scale.spec.replicas.unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::Invalid {
                    kind: "Scale".into(),
                    group: "autoscaling".into(),
                    name: name.into(),
                    errors: vec![FieldError {
                        kind: FieldErrorKind::Invalid,
                        field: "spec.replicas".into(),
                        value: Some(replicas.to_string()),
                        detail: "must be greater than or equal to 0".into(),
                    }],
                });
            }
            let mut new = old.clone();
            if !new.get("spec").is_some_and(Value::is_object) {
                new["spec"] = json!({});
            }
            new["spec"]["replicas"] = replicas.into();
            match scale
                .metadata
                .resource_version
                .as_deref()
                .filter(|s| !s.is_empty())
            {
                Some(rv) => o::set_meta(&mut new, "resourceVersion", rv.into()),
                None => o::remove_meta(&mut new, "resourceVersion"),
            }
            Ok((new, precondition))
        })
        .await?;
    Ok(object_response(
        StatusCode::OK,
        &scale_of(&out.object),
        &out.warnings,
    ))
}

/// Type checks of a Scale body (apiVersion autoscaling/v1, kind Scale).
struct ScaleDef;
impl ScaleDef {
    fn check(&self, v: &mut Value) -> Result<(), ApiError> {
        let Some(m) = v.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the body of a Scale must be a JSON object",
            ));
        };
        for (field, want) in [("apiVersion", "autoscaling/v1"), ("kind", "Scale")] {
            match m.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.is_empty() || s == want => {}
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "the {field} in the data ({other}) does not match the expected {field} ({want})"
                    )))
                }
            }
        }
        m.insert("apiVersion".into(), "autoscaling/v1".into());
        m.insert("kind".into(), "Scale".into());
        Ok(())
    }
}

async fn bind(
    api: &Api,
    t: &Target,
    name: &str,
    mut body: Value,
    q: &Params,
) -> Result<Response, ApiError> {
    let binding_def = BindingCheck;
    binding_def.check(&mut body)?;
    let (binding, unknown) = codec::from_value::<Binding>(body).map_err(|e| {
        ApiError::bad_request(format!(
            "Binding in version \"v1\" cannot be handled as a Binding: {e}"
        ))
    })?;
    if !unknown.is_empty() && q.field_validation == FieldValidation::Strict {
        return Err(ApiError::bad_request(format!(
            "Binding in version \"v1\" cannot be handled as a Binding: {}",
            codec::DecodeError::UnknownFields(unknown)
        )));
    }
    let bname = binding.metadata.name();
    if !bname.is_empty() && bname != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({bname}) does not match the name on the URL ({name})"
        )));
    }
    let node = binding.target.name.clone().unwrap_or_default();
    // The update below skips pod validation (as Kubernetes' binding does), so the node name
    // is checked here.
    let bad_node = if node.is_empty() {
        Some(field::required("target.name", ""))
    } else {
        let errs = kapsel_api::validation::meta::name_is_dns_subdomain(&node, false);
        (!errs.is_empty()).then(|| field::invalid("target.name", &node, errs.join("; ")))
    };
    if let Some(e) = bad_node {
        return Err(ApiError::Invalid {
            kind: "Binding".into(),
            group: String::new(),
            name: name.into(),
            errors: vec![e],
        });
    }
    let bind_ref = ObjRef::new("pods/binding", "", name);
    let want_uid = binding.metadata.uid.clone().filter(|u| !u.is_empty());
    api.update(t.def, t.ns(), name, Sub::Internal, &q.write_opts(), |old| {
        if let Some(u) = &want_uid {
            if u != o::uid(old) {
                return Err(ApiError::conflict(
                    bind_ref.clone(),
                    format!(
                        "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                        o::uid(old)
                    ),
                ));
            }
        }
        if o::is_deleting(old) {
            return Err(ApiError::conflict(
                bind_ref.clone(),
                format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let current = old
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !current.is_empty() {
            return Err(ApiError::conflict(
                bind_ref.clone(),
                format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        let mut new = old.clone();
        if !new.get("spec").is_some_and(Value::is_object) {
            new["spec"] = json!({});
        }
        new["spec"]["nodeName"] = node.clone().into();
        if !new.get("status").is_some_and(Value::is_object) {
            new["status"] = json!({});
        }
        let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                          "lastTransitionTime": o::now_string()});
        let conds = new["status"]
            .as_object_mut()
            .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
        if let Some(Value::Array(list)) = conds {
            list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
            list.push(cond);
        }
        Ok((new, false))
    })
    .await?;
    let mut st = kapsel_api::Status::success();
    st.code = Some(201);
    Ok(object_response(
        StatusCode::CREATED,
        &serde_json::to_value(&st).unwrap_or_default(),
        &[],
    ))
}

struct BindingCheck;
impl BindingCheck {
    fn check(&self, v: &mut Value) -> Result<(), ApiError> {
        let Some(m) = v.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the body of a Binding must be a JSON object",
            ));
        };
        match m.get("kind") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() || s == "Binding" => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({other}) does not match the expected kind (Binding)"
                )))
            }
        }
        m.insert("apiVersion".into(), "v1".into());
        m.insert("kind".into(), "Binding".into());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths() {
        let t = resolve(
            "",
            "v1",
            &["namespaces", "default", "pods", "web", "status"],
        )
        .unwrap();
        assert_eq!(t.def.plural, "pods");
        assert_eq!(t.ns.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.sub.as_deref(), Some("status"));
        let t = resolve("", "v1", &["namespaces", "default", "pods"]).unwrap();
        assert!(t.name.is_none());
        let t = resolve("", "v1", &["namespaces", "default"]).unwrap();
        assert_eq!(t.def.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("default"));
        let t = resolve("", "v1", &["namespaces", "x", "status"]).unwrap();
        assert_eq!(t.def.plural, "namespaces");
        assert_eq!(t.sub.as_deref(), Some("status"));
        let t = resolve("", "v1", &["pods"]).unwrap();
        assert!(t.ns.is_none());
        assert!(resolve("", "v1", &["pods", "x"]).is_err());
        assert!(resolve("", "v1", &["widgets"]).is_err());
        assert!(resolve("", "v1", &["namespaces", "d", "nodes"]).is_err());
        assert!(resolve("", "v1", &["namespaces", "d", "pods", "x", "scale"]).is_err());
        let t = resolve(
            "apps",
            "v1",
            &["namespaces", "d", "deployments", "w", "scale"],
        )
        .unwrap();
        assert_eq!(t.def.kind, "Deployment");
    }

    #[test]
    fn selector_strings() {
        let ls: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert_eq!(selector_string(&ls), "app=web,!canary,tier in (a,b)");
    }
}
