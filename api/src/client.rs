//! The typed client every kapsel component uses to talk to the API server, over the Kubernetes REST
//! paths (`/api/v1/…`, `/apis/{group}/{version}/…`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), kapsel_api::client::ClientError> {
//! use kapsel_api::client::{Client, ListParams};
//! use kapsel_api::Pod;
//! let client = Client::new("http://127.0.0.1:6443")?;
//! let pods = client.api::<Pod>(Some("default"));
//! let list = pods.list(&ListParams::default().labels("app=web")).await?;
//! for pod in &list.items {
//!     println!("{}", pod.metadata.name());
//! }
//! # Ok(()) }
//! ```
//!
//! - [`Client`] is cheap to clone (an `Arc` around a connection pool).
//! - [`Api<K>`] is the typed view of one kind in one namespace (or all namespaces).
//! - [`DynamicApi`] is the same over `serde_json::Value`, for kinds chosen at run time (the CLI).
//! - Every non-2xx answer becomes [`ClientError::Api`] carrying the server's `metav1.Status`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::apps::Scale;
use crate::core::{Binding, Pod};
use crate::meta::{DeleteOptions, List, ObjectMeta, Status, WatchEvent, WatchEventType};
use crate::resource::Resource;

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-2xx status. The body's `metav1.Status`, or one synthesised
    /// from the HTTP code when the body was not a Status.
    /// Boxed to keep `Result<_, ClientError>` small; construct with `ClientError::from(status)`.
    #[error("Error from server ({}): {}", status_reason_for_display(.0), .0.message())]
    Api(Box<Status>),
    /// Transport failure: connection refused, TLS, timeout, broken stream.
    #[error("{}", describe_http_error(.0))]
    Http(#[from] reqwest::Error),
    /// A 2xx body that is not what was expected.
    #[error("cannot decode {context}: {message}")]
    Decode { context: String, message: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A request the client refuses to send (no namespace for a namespaced kind, bad URL, bad
    /// certificate …).
    #[error("{0}")]
    Invalid(String),
}

fn status_reason_for_display(s: &Status) -> &str {
    if s.reason().is_empty() {
        "Unknown"
    } else {
        s.reason()
    }
}

fn describe_http_error(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

impl From<Status> for ClientError {
    fn from(s: Status) -> Self {
        ClientError::Api(Box::new(s))
    }
}

impl ClientError {
    /// The `metav1.Status` of an API error.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Api(s) => Some(s),
            _ => None,
        }
    }
    /// HTTP status code of an API error.
    pub fn code(&self) -> Option<u16> {
        self.status().map(|s| s.code())
    }
    fn reason_is(&self, reason: &str) -> bool {
        self.status().is_some_and(|s| s.reason() == reason)
    }
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404) || self.reason_is("NotFound")
    }
    /// A stale `resourceVersion` (409 `Conflict`): refresh and retry. `AlreadyExists` is not a conflict.
    pub fn is_conflict(&self) -> bool {
        self.reason_is("Conflict") || (self.code() == Some(409) && !self.reason_is("AlreadyExists"))
    }
    pub fn is_already_exists(&self) -> bool {
        self.reason_is("AlreadyExists")
    }
    /// 410 Gone / `Expired`: the resourceVersion is older than the server's history; relist.
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410) || self.reason_is("Expired") || self.reason_is("Gone")
    }
    pub fn is_invalid(&self) -> bool {
        self.code() == Some(422) || self.reason_is("Invalid")
    }
    pub fn is_forbidden(&self) -> bool {
        self.code() == Some(403) || self.reason_is("Forbidden")
    }
    pub fn is_unauthorized(&self) -> bool {
        self.code() == Some(401) || self.reason_is("Unauthorized")
    }
    /// The server could not be reached at all (connection refused, DNS, connect timeout).
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Http(e) if e.is_connect())
    }
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Http(e) if e.is_timeout())
    }

    fn decode(context: impl Into<String>, message: impl fmt::Display) -> Self {
        ClientError::Decode {
            context: context.into(),
            message: message.to_string(),
        }
    }
}

/// The `reason` Kubernetes uses for an HTTP code.
pub fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

fn default_message_for_code(code: u16) -> String {
    match code {
        400 => "the server rejected our request for an unknown reason".into(),
        401 => "the server has asked for the client to provide credentials".into(),
        403 => "the server does not allow access to the requested resource".into(),
        404 => "the server could not find the requested resource".into(),
        405 => "the server does not allow this method on the requested resource".into(),
        409 => "the server reported a conflict".into(),
        410 => "the server has expired the requested resource version".into(),
        422 => "the server rejected our request due to an error in our request".into(),
        429 => {
            "the server has received too many requests and has asked us to try again later".into()
        }
        500 => "an error on the server has prevented the request from succeeding".into(),
        503 => "the server is currently unable to handle the request".into(),
        504 => "the server was unable to return a response in the time allotted".into(),
        c => format!(
            "the server responded with the status code {c} but did not return more information"
        ),
    }
}

/// Turn an error answer into a `Status`: the body itself when it is one, else a synthesised one.
pub fn status_from_response(code: u16, body: &[u8]) -> Status {
    if let Ok(mut s) = serde_json::from_slice::<Status>(body) {
        if s.kind == "Status" || s.reason.is_some() && s.message.is_some() {
            if s.code.is_none() || s.code == Some(0) {
                s.code = Some(code);
            }
            if s.reason.is_none() {
                let r = reason_for_code(code);
                if !r.is_empty() {
                    s.reason = Some(r.into());
                }
            }
            return s;
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let looks_structured = text.starts_with('{') || text.starts_with('<');
    let message = if text.is_empty() || looks_structured {
        default_message_for_code(code)
    } else {
        let mut t: String = text.chars().take(1024).collect();
        if t.len() < text.len() {
            t.push('…');
        }
        t
    };
    Status::failure(code, reason_for_code(code), message)
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// How to reach and authenticate to the API server.
#[derive(Clone, Default)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port` (a trailing `/` and a path prefix are allowed).
    pub server: String,
    /// Sent as `Authorization: Bearer …`.
    pub token: Option<String>,
    /// PEM CA bundle to trust in addition to the system roots.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// PEM client certificate and key (both in one buffer, or cert followed by key).
    pub client_identity_pem: Option<Vec<u8>>,
    /// Skip server certificate verification (`insecure-skip-tls-verify`).
    pub insecure_skip_tls_verify: bool,
    /// Timeout of ordinary (non-streaming) requests. `None`: no timeout. Watches and log
    /// streams never time out on the client side.
    pub request_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub user_agent: Option<String>,
    /// A client identity that changes (a node certificate renewed before it expires): when
    /// its generation moves, the client builds a new HTTP client with it, so new requests
    /// present the new certificate. Takes precedence over `client_identity_pem`.
    pub identity_source: Option<Arc<dyn IdentitySource>>,
}

/// A client certificate that can be replaced while a [`Client`] uses it.
pub trait IdentitySource: Send + Sync {
    /// Changes whenever the identity does.
    fn generation(&self) -> u64;
    /// The current PEM client certificate followed by its key.
    fn identity_pem(&self) -> Vec<u8>;
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert_pem", &self.ca_cert_pem.is_some())
            .field("client_identity_pem", &self.client_identity_pem.is_some())
            .field("identity_source", &self.identity_source.is_some())
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl ClientConfig {
    pub fn new(server: impl Into<String>) -> Self {
        ClientConfig {
            server: server.into(),
            request_timeout: Some(Duration::from_secs(60)),
            connect_timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        }
    }
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

struct Inner {
    /// The HTTP client and the generation of the identity it was built with.
    http: std::sync::RwLock<(u64, reqwest::Client)>,
    /// What the HTTP client is rebuilt from when the identity source moves on.
    cfg: ClientConfig,
    base: String,
    token: Option<String>,
    request_timeout: Option<Duration>,
}

/// A reqwest client for `cfg` presenting `identity` (PEM certificate and key), if any.
fn build_http(cfg: &ClientConfig, identity: Option<&[u8]>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().user_agent(
        cfg.user_agent
            .clone()
            .unwrap_or_else(|| format!("kapsel/{}", env!("CARGO_PKG_VERSION"))),
    );
    if let Some(t) = cfg.connect_timeout {
        b = b.connect_timeout(t);
    }
    if let Some(pem) = &cfg.ca_cert_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ClientError::Invalid(format!("invalid CA certificate: {e}")))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let Some(pem) = identity {
        let id = reqwest::Identity::from_pem(pem)
            .map_err(|e| ClientError::Invalid(format!("invalid client certificate/key: {e}")))?;
        b = b.identity(id);
    }
    if cfg.insecure_skip_tls_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| ClientError::Invalid(format!("cannot build HTTP client: {e}")))
}

/// A connection to one API server. Clone freely.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base)
            .finish()
    }
}

impl Client {
    /// A client for `server_url` with default settings and no credentials.
    pub fn new(server_url: &str) -> Result<Self> {
        Self::from_config(ClientConfig::new(server_url))
    }

    pub fn from_config(cfg: ClientConfig) -> Result<Self> {
        let base = cfg.server.trim().trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base)
            .map_err(|e| ClientError::Invalid(format!("invalid server URL {base:?}: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ClientError::Invalid(format!(
                "invalid server URL {base:?}: scheme must be http or https"
            )));
        }
        let (gen, identity) = match &cfg.identity_source {
            Some(src) => (src.generation(), Some(src.identity_pem())),
            None => (0, cfg.client_identity_pem.clone()),
        };
        let http = build_http(&cfg, identity.as_deref())?;
        Ok(Client {
            inner: Arc::new(Inner {
                http: std::sync::RwLock::new((gen, http)),
                base,
                token: cfg.token.clone(),
                request_timeout: cfg.request_timeout,
                cfg,
            }),
        })
    }

    /// The HTTP client for the current identity (rebuilt after the identity source renewed).
    fn http(&self) -> reqwest::Client {
        let cur = {
            let g = self
                .inner
                .http
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            g.clone()
        };
        let Some(src) = &self.inner.cfg.identity_source else {
            return cur.1;
        };
        let gen = src.generation();
        if gen == cur.0 {
            return cur.1;
        }
        match build_http(&self.inner.cfg, Some(&src.identity_pem())) {
            Ok(http) => {
                let mut g = self
                    .inner
                    .http
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *g = (gen, http.clone());
                http
            }
            Err(e) => {
                tracing::error!(error = %e, "rebuilding the API client with the renewed identity");
                cur.1
            }
        }
    }

    /// The server URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The typed API of kind `K`. `namespace: None` means all namespaces for list/watch; it is
    /// ignored for cluster-scoped kinds.
    pub fn api<K: Resource>(&self, namespace: Option<&str>) -> Api<K> {
        Api {
            raw: self.dynamic(ApiResource::of::<K>(), namespace),
            _k: PhantomData,
        }
    }

    /// The untyped API of a resource chosen at run time.
    pub fn dynamic(&self, resource: ApiResource, namespace: Option<&str>) -> DynamicApi {
        DynamicApi {
            client: self.clone(),
            namespace: if resource.namespaced {
                namespace.filter(|n| !n.is_empty()).map(str::to_string)
            } else {
                None
            },
            resource,
        }
    }

    /// A request builder for `path` (starting with `/`), with credentials and `Accept: application/json`.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = format!("{}{}", self.inner.base, path);
        let mut rb = self
            .http()
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(t) = &self.inner.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    /// Send, turning a non-2xx answer into [`ClientError::Api`].
    pub async fn send(&self, rb: RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb.send().await?;
        let code = resp.status();
        if code.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(status_from_response(code.as_u16(), &body).into())
    }

    /// Send an ordinary request (with the configured timeout) and return the body.
    pub async fn send_bytes(&self, mut rb: RequestBuilder) -> Result<Bytes> {
        if let Some(t) = self.inner.request_timeout {
            rb = rb.timeout(t);
        }
        let resp = self.send(rb).await?;
        Ok(resp.bytes().await?)
    }

    async fn send_json<T: DeserializeOwned>(&self, rb: RequestBuilder, context: &str) -> Result<T> {
        let body = self.send_bytes(rb).await?;
        decode_json(&body, context)
    }

    /// `GET path` decoded as JSON (`/version`, `/api`, `/apis`, …).
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send_json(self.request(Method::GET, path), path).await
    }

    /// `GET path`, raw body.
    pub async fn get_bytes(&self, path: &str) -> Result<Bytes> {
        self.send_bytes(self.request(Method::GET, path)).await
    }
}

fn decode_json<T: DeserializeOwned>(body: &[u8], context: &str) -> Result<T> {
    // The plain decoder first; only a failure pays for tracking the path to name the field.
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path.is_empty() || path == "." {
            ClientError::decode(context, e.inner())
        } else {
            ClientError::decode(context, format!("{path}: {}", e.inner()))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Resource description and paths
// ---------------------------------------------------------------------------------------------

/// What the client needs to know about a resource to build its REST paths.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ApiResource {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl ApiResource {
    pub fn of<K: Resource>() -> Self {
        ApiResource {
            group: K::GROUP.into(),
            version: K::VERSION.into(),
            kind: K::KIND.into(),
            plural: K::PLURAL.into(),
            namespaced: K::NAMESPACED,
        }
    }
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ApiResource {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
        }
    }
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// `deployments.apps`, `pods`.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// `/api/v1` or `/apis/apps/v1`.
    pub fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
    /// `…/namespaces/{ns}/{plural}`, or `…/{plural}` for all namespaces / cluster-scoped kinds.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced && !ns.is_empty() => format!(
                "{}/namespaces/{}/{}",
                self.prefix(),
                encode_segment(ns),
                self.plural
            ),
            _ => format!("{}/{}", self.prefix(), self.plural),
        }
    }
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!(
            "{}/{}",
            self.collection_path(namespace),
            encode_segment(name)
        )
    }
}

/// Percent-encode a path segment (names are DNS-like, but the CLI passes user input through).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

/// Parameters of list, watch and delete-collection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<u32>,
    pub continue_token: Option<String>,
    /// For list: `None` = most recent; `"0"` = any (cache). Ignored by `watch` (which takes its own).
    pub resource_version: Option<String>,
    /// Watch only: the server ends the stream after this many seconds.
    pub timeout_seconds: Option<u32>,
    /// Watch only: do not ask for bookmarks.
    pub disable_bookmarks: bool,
}

impl ListParams {
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.to_string());
        self
    }
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.to_string());
        self
    }
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
    pub fn continue_token(mut self, token: &str) -> Self {
        self.continue_token = Some(token.to_string());
        self
    }
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }

    fn selector_query(&self, q: &mut Vec<(&'static str, String)>) {
        if let Some(s) = self.label_selector.as_ref().filter(|s| !s.is_empty()) {
            q.push(("labelSelector", s.clone()));
        }
        if let Some(s) = self.field_selector.as_ref().filter(|s| !s.is_empty()) {
            q.push(("fieldSelector", s.clone()));
        }
    }

    fn list_query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        self.selector_query(&mut q);
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(c) = self.continue_token.as_ref().filter(|s| !s.is_empty()) {
            q.push(("continue", c.clone()));
        }
        if let Some(rv) = &self.resource_version {
            q.push(("resourceVersion", rv.clone()));
        }
        q
    }

    fn watch_query(&self, resource_version: &str) -> Vec<(&'static str, String)> {
        let mut q = vec![("watch", "1".to_string())];
        self.selector_query(&mut q);
        if !resource_version.is_empty() {
            q.push(("resourceVersion", resource_version.to_string()));
        }
        if !self.disable_bookmarks {
            q.push(("allowWatchBookmarks", "true".into()));
        }
        if let Some(t) = self.timeout_seconds {
            q.push(("timeoutSeconds", t.to_string()));
        }
        q
    }
}

/// Options of create and replace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PostParams {
    /// `dryRun=All`: the server validates and answers but does not persist.
    pub dry_run: bool,
    pub field_manager: Option<String>,
    /// `Strict`, `Warn` or `Ignore`.
    pub field_validation: Option<String>,
}

impl PostParams {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if self.dry_run {
            q.push(("dryRun", "All".to_string()));
        }
        if let Some(m) = &self.field_manager {
            q.push(("fieldManager", m.clone()));
        }
        if let Some(v) = &self.field_validation {
            q.push(("fieldValidation", v.clone()));
        }
        q
    }
}

/// A patch body; the variant selects the `Content-Type`.
#[derive(Clone, Debug, PartialEq)]
pub enum Patch {
    /// RFC 7386 JSON merge patch (`application/merge-patch+json`): maps merge, `null` deletes,
    /// lists are replaced whole.
    Merge(Value),
    /// RFC 6902 JSON patch (`application/json-patch+json`): an array of operations.
    Json(Value),
    /// Kubernetes strategic merge patch (`application/strategic-merge-patch+json`).
    Strategic(Value),
    /// Server-side apply (`application/apply-patch+yaml`; the body is JSON, which is YAML).
    Apply {
        body: Value,
        field_manager: String,
        force: bool,
    },
}

impl Patch {
    pub fn content_type(&self) -> &'static str {
        match self {
            Patch::Merge(_) => "application/merge-patch+json",
            Patch::Json(_) => "application/json-patch+json",
            Patch::Strategic(_) => "application/strategic-merge-patch+json",
            Patch::Apply { .. } => "application/apply-patch+yaml",
        }
    }
    pub fn body(&self) -> &Value {
        match self {
            Patch::Merge(v) | Patch::Json(v) | Patch::Strategic(v) => v,
            Patch::Apply { body, .. } => body,
        }
    }
}

/// Options of patch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatchParams {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: Option<String>,
}

/// What `DELETE` answered.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum DeleteResult<T> {
    /// A `Status` (usually `Success`): the object is gone.
    Deleted(Status),
    /// The object itself: with `metadata.deletionTimestamp` set, deletion is pending (graceful
    /// deletion or finalizers); some servers also return the final state of a deleted object.
    Object(T),
}

impl<T> DeleteResult<T> {
    pub fn object(&self) -> Option<&T> {
        match self {
            DeleteResult::Object(o) => Some(o),
            DeleteResult::Deleted(_) => None,
        }
    }
}

/// Parameters of `GET pods/{name}/log`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogParams {
    pub container: Option<String>,
    pub follow: bool,
    pub tail_lines: Option<i64>,
    pub previous: bool,
    pub since_seconds: Option<i64>,
    pub timestamps: bool,
    pub limit_bytes: Option<i64>,
}

impl LogParams {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(c) = &self.container {
            q.push(("container", c.clone()));
        }
        if self.follow {
            q.push(("follow", "true".into()));
        }
        if let Some(t) = self.tail_lines {
            q.push(("tailLines", t.to_string()));
        }
        if self.previous {
            q.push(("previous", "true".into()));
        }
        if let Some(s) = self.since_seconds {
            q.push(("sinceSeconds", s.to_string()));
        }
        if self.timestamps {
            q.push(("timestamps", "true".into()));
        }
        if let Some(l) = self.limit_bytes {
            q.push(("limitBytes", l.to_string()));
        }
        q
    }
}

// ---------------------------------------------------------------------------------------------
// Dynamic API (the implementation both APIs share)
// ---------------------------------------------------------------------------------------------

/// The API of one resource over JSON values. Same verbs as [`Api`].
#[derive(Clone, Debug)]
pub struct DynamicApi {
    client: Client,
    resource: ApiResource,
    namespace: Option<String>,
}

/// A decoder for watch-event objects: gets the event type (bookmarks carry only metadata) and
/// the object's JSON text, so a typed watch decodes each object once, straight from the wire.
pub type ObjectDecoder<T> = fn(WatchEventType, &RawValue) -> Result<T, serde_json::Error>;

fn decode_value(_: WatchEventType, raw: &RawValue) -> Result<Value, serde_json::Error> {
    serde_json::from_str(raw.get())
}

/// Decode a watch object into `K`; a bookmark that does not decode as `K` becomes a default `K`
/// carrying the bookmark's metadata.
pub fn decode_resource<K: Resource>(
    t: WatchEventType,
    raw: &RawValue,
) -> Result<K, serde_json::Error> {
    if t == WatchEventType::Bookmark {
        return serde_json::from_str(raw.get()).or_else(|e| {
            #[derive(serde::Deserialize)]
            struct OnlyMeta {
                metadata: Option<ObjectMeta>,
            }
            let Some(meta) = serde_json::from_str::<OnlyMeta>(raw.get())?.metadata else {
                return Err(e);
            };
            let mut k = K::default();
            k.set_type_meta();
            *k.meta_mut() = meta;
            Ok(k)
        });
    }
    serde_json::from_str(raw.get())
}

fn json_body<T: Serialize>(
    rb: RequestBuilder,
    body: &T,
    content_type: &str,
) -> Result<RequestBuilder> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| ClientError::Invalid(format!("cannot encode request body: {e}")))?;
    Ok(rb
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(bytes))
}

impl DynamicApi {
    pub fn resource(&self) -> &ApiResource {
        &self.resource
    }
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The namespace for a single-object call: the API's, else the object's.
    fn object_ns<'a>(&'a self, from_object: Option<&'a str>) -> Result<Option<&'a str>> {
        if !self.resource.namespaced {
            return Ok(None);
        }
        let from_object = from_object.filter(|s| !s.is_empty());
        match (self.namespace.as_deref(), from_object) {
            (Some(a), Some(o)) if a != o => Err(ClientError::Invalid(format!(
                "the namespace from the provided object \"{o}\" does not match the namespace \"{a}\". You must pass '--namespace={o}' to perform this operation."
            ))),
            (Some(a), _) => Ok(Some(a)),
            (None, Some(o)) => Ok(Some(o)),
            (None, None) => Err(ClientError::Invalid(format!(
                "a namespace is required for {}",
                self.resource.group_resource()
            ))),
        }
    }

    fn object_path(&self, ns_from_object: Option<&str>, name: &str, sub: &str) -> Result<String> {
        if name.is_empty() {
            return Err(ClientError::Invalid(format!(
                "resource name may not be empty ({})",
                self.resource.group_resource()
            )));
        }
        let ns = self.object_ns(ns_from_object)?;
        let mut p = self.resource.object_path(ns, name);
        if !sub.is_empty() {
            p.push('/');
            p.push_str(sub);
        }
        Ok(p)
    }

    fn collection_path(&self) -> String {
        self.resource.collection_path(self.namespace.as_deref())
    }

    pub(crate) async fn get_as<T: DeserializeOwned>(&self, name: &str, sub: &str) -> Result<T> {
        let path = self.object_path(None, name, sub)?;
        self.client
            .send_json(self.client.request(Method::GET, &path), &path)
            .await
    }

    pub(crate) async fn list_as<T: DeserializeOwned>(&self, lp: &ListParams) -> Result<List<T>> {
        let path = self.collection_path();
        let rb = self
            .client
            .request(Method::GET, &path)
            .query(&lp.list_query());
        self.client.send_json(rb, &path).await
    }

    pub(crate) async fn create_as<B: Serialize, T: DeserializeOwned>(
        &self,
        ns_from_object: Option<&str>,
        body: &B,
        pp: &PostParams,
    ) -> Result<T> {
        let ns = self.object_ns(ns_from_object)?;
        let path = self.resource.collection_path(ns);
        let rb = self.client.request(Method::POST, &path).query(&pp.query());
        let rb = json_body(rb, body, "application/json")?;
        self.client.send_json(rb, &path).await
    }

    pub(crate) async fn replace_as<B: Serialize, T: DeserializeOwned>(
        &self,
        ns_from_object: Option<&str>,
        name: &str,
        sub: &str,
        body: &B,
        pp: &PostParams,
    ) -> Result<T> {
        let path = self.object_path(ns_from_object, name, sub)?;
        let rb = self.client.request(Method::PUT, &path).query(&pp.query());
        let rb = json_body(rb, body, "application/json")?;
        self.client.send_json(rb, &path).await
    }

    pub(crate) async fn patch_as<T: DeserializeOwned>(
        &self,
        name: &str,
        sub: &str,
        patch: &Patch,
        pp: &PatchParams,
    ) -> Result<T> {
        let path = self.object_path(None, name, sub)?;
        let mut q = Vec::new();
        if pp.dry_run {
            q.push(("dryRun", "All".to_string()));
        }
        match patch {
            Patch::Apply {
                field_manager,
                force,
                ..
            } => {
                q.push(("fieldManager", field_manager.clone()));
                if *force {
                    q.push(("force", "true".into()));
                }
            }
            _ => {
                if let Some(m) = &pp.field_manager {
                    q.push(("fieldManager", m.clone()));
                }
            }
        }
        if let Some(v) = &pp.field_validation {
            q.push(("fieldValidation", v.clone()));
        }
        let rb = self.client.request(Method::PATCH, &path).query(&q);
        let rb = json_body(rb, patch.body(), patch.content_type())?;
        self.client.send_json(rb, &path).await
    }

    pub(crate) async fn delete_as<T: DeserializeOwned>(
        &self,
        name: &str,
        dp: &DeleteOptions,
    ) -> Result<DeleteResult<T>> {
        let path = self.object_path(None, name, "")?;
        let rb = self.client.request(Method::DELETE, &path);
        let mut q = Vec::new();
        if !dp.dry_run.is_empty() {
            q.push(("dryRun", "All".to_string()));
        }
        let rb = json_body(rb.query(&q), dp, "application/json")?;
        let body = self.client.send_bytes(rb).await?;
        decode_delete(&body, &path)
    }

    pub(crate) async fn delete_collection_as<T: DeserializeOwned>(
        &self,
        lp: &ListParams,
        dp: &DeleteOptions,
    ) -> Result<DeleteResult<List<T>>> {
        let path = self.collection_path();
        let mut q = Vec::new();
        lp.selector_query(&mut q);
        let rb = self.client.request(Method::DELETE, &path).query(&q);
        let rb = json_body(rb, dp, "application/json")?;
        let body = self.client.send_bytes(rb).await?;
        decode_delete(&body, &path)
    }

    pub(crate) async fn watch_as<T: Send + 'static>(
        &self,
        lp: &ListParams,
        resource_version: &str,
        decode: ObjectDecoder<T>,
    ) -> Result<BoxStream<'static, Result<WatchEvent<T>>>> {
        let path = self.collection_path();
        let rb = self
            .client
            .request(Method::GET, &path)
            .query(&lp.watch_query(resource_version));
        let resp = self.client.send(rb).await?;
        let bytes = resp.bytes_stream().map_err(ClientError::Http);
        Ok(decode_watch_stream(bytes, decode).boxed())
    }

    // ---- public Value verbs ----

    pub async fn get(&self, name: &str) -> Result<Value> {
        self.get_as(name, "").await
    }
    pub async fn get_opt(&self, name: &str) -> Result<Option<Value>> {
        opt(self.get(name).await)
    }
    /// `GET …/{name}/{subresource}` (`status`, `scale`).
    pub async fn get_subresource(&self, name: &str, subresource: &str) -> Result<Value> {
        self.get_as(name, subresource).await
    }
    pub async fn list(&self, lp: &ListParams) -> Result<List<Value>> {
        self.list_as(lp).await
    }
    /// The object's namespace (`metadata.namespace`) is used when the API has none.
    pub async fn create(&self, obj: &Value, pp: &PostParams) -> Result<Value> {
        self.create_as(value_namespace(obj), obj, pp).await
    }
    pub async fn replace(&self, name: &str, obj: &Value, pp: &PostParams) -> Result<Value> {
        self.replace_as(value_namespace(obj), name, "", obj, pp)
            .await
    }
    pub async fn replace_status(&self, name: &str, obj: &Value) -> Result<Value> {
        self.replace_as(
            value_namespace(obj),
            name,
            "status",
            obj,
            &PostParams::default(),
        )
        .await
    }
    pub async fn replace_subresource(
        &self,
        name: &str,
        subresource: &str,
        obj: &Value,
    ) -> Result<Value> {
        self.replace_as(
            value_namespace(obj),
            name,
            subresource,
            obj,
            &PostParams::default(),
        )
        .await
    }
    pub async fn patch(&self, name: &str, patch: &Patch, pp: &PatchParams) -> Result<Value> {
        self.patch_as(name, "", patch, pp).await
    }
    pub async fn patch_subresource(
        &self,
        name: &str,
        subresource: &str,
        patch: &Patch,
        pp: &PatchParams,
    ) -> Result<Value> {
        self.patch_as(name, subresource, patch, pp).await
    }
    pub async fn delete(&self, name: &str, dp: &DeleteOptions) -> Result<DeleteResult<Value>> {
        self.delete_as(name, dp).await
    }
    pub async fn delete_collection(
        &self,
        lp: &ListParams,
        dp: &DeleteOptions,
    ) -> Result<DeleteResult<List<Value>>> {
        self.delete_collection_as(lp, dp).await
    }
    pub async fn watch(
        &self,
        lp: &ListParams,
        resource_version: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent<Value>>>> {
        self.watch_as(lp, resource_version, decode_value).await
    }
}

fn value_namespace(v: &Value) -> Option<&str> {
    v.pointer("/metadata/namespace").and_then(Value::as_str)
}

fn opt<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn decode_delete<T: DeserializeOwned>(body: &[u8], context: &str) -> Result<DeleteResult<T>> {
    let v: Value = decode_json(body, context)?;
    if v.get("kind").and_then(Value::as_str) == Some("Status") {
        let s: Status = serde_json::from_value(v).map_err(|e| ClientError::decode(context, e))?;
        Ok(DeleteResult::Deleted(s))
    } else {
        let o: T = serde_json::from_value(v).map_err(|e| ClientError::decode(context, e))?;
        Ok(DeleteResult::Object(o))
    }
}

// ---------------------------------------------------------------------------------------------
// Watch stream decoding
// ---------------------------------------------------------------------------------------------

/// Split a byte stream into non-empty lines (without the trailing `\n` / `\r\n`). A final line
/// without a newline is returned when the stream ends. After an error the stream ends.
pub fn split_lines<S, E>(input: S) -> impl Stream<Item = Result<Bytes, E>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    struct St<S> {
        input: S,
        buf: BytesMut,
        /// `buf[..scanned]` holds no newline: a long line spread over many chunks is searched
        /// once, not once per chunk.
        scanned: usize,
        done: bool,
    }
    futures::stream::unfold(
        St {
            input,
            buf: BytesMut::new(),
            scanned: 0,
            done: false,
        },
        |mut st| async move {
            loop {
                if let Some(pos) = st.buf[st.scanned..].iter().position(|&b| b == b'\n') {
                    // Splitting off the front moves no bytes (unlike draining a Vec).
                    let mut line = st.buf.split_to(st.scanned + pos + 1);
                    st.scanned = 0;
                    line.truncate(line.len() - 1);
                    if line.last() == Some(&b'\r') {
                        line.truncate(line.len() - 1);
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some((Ok(line.freeze()), st));
                }
                st.scanned = st.buf.len();
                if st.done {
                    if st.buf.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    let line = std::mem::take(&mut st.buf);
                    st.scanned = 0;
                    return Some((Ok(line.freeze()), st));
                }
                match st.input.next().await {
                    Some(Ok(chunk)) => st.buf.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        st.done = true;
                        st.buf.clear();
                        st.scanned = 0;
                        return Some((Err(e), st));
                    }
                    None => st.done = true,
                }
            }
        },
    )
}

/// Decode one line of a watch stream. An `ERROR` event becomes `Err(ClientError::Api(status))`.
pub fn decode_watch_line<T>(line: &[u8], decode: ObjectDecoder<T>) -> Result<WatchEvent<T>> {
    /// The envelope, with the object left as text for `decode`.
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type", default, borrow)]
        type_: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        object: Option<&'a RawValue>,
    }
    let env: Envelope<'_> = serde_json::from_slice(line)
        .map_err(|e| ClientError::decode("watch event", format!("{e}: {}", preview(line))))?;
    let ty = env.type_.as_deref().unwrap_or_default();
    let object = env.object.unwrap_or(RawValue::NULL);
    let type_ = match ty {
        "ADDED" => WatchEventType::Added,
        "MODIFIED" => WatchEventType::Modified,
        "DELETED" => WatchEventType::Deleted,
        "BOOKMARK" => WatchEventType::Bookmark,
        "ERROR" => {
            let mut s: Status = serde_json::from_str(object.get()).unwrap_or_else(|_| {
                Status::failure(
                    500,
                    "InternalError",
                    format!("watch error: {}", object.get()),
                )
            });
            if s.code.is_none() || s.code == Some(0) {
                s.code = Some(500);
            }
            return Err(s.into());
        }
        other => {
            return Err(ClientError::decode(
                "watch event",
                format!("unknown event type {other:?}"),
            ))
        }
    };
    let object = decode(type_, object)
        .map_err(|e| ClientError::decode(format!("{ty} watch event object"), e))?;
    Ok(WatchEvent { type_, object })
}

fn preview(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    if s.chars().count() > 200 {
        let t: String = s.chars().take(200).collect();
        format!("{t}…")
    } else {
        s.into_owned()
    }
}

/// Decode a newline-delimited watch body into events.
pub fn decode_watch_stream<S, T>(
    bytes: S,
    decode: ObjectDecoder<T>,
) -> impl Stream<Item = Result<WatchEvent<T>>>
where
    S: Stream<Item = Result<Bytes>> + Send + 'static,
    T: Send + 'static,
{
    split_lines(Box::pin(bytes)).map(move |line| line.and_then(|l| decode_watch_line(&l, decode)))
}

// ---------------------------------------------------------------------------------------------
// Typed API
// ---------------------------------------------------------------------------------------------

/// The typed API of kind `K` in one namespace (or all, for list/watch).
pub struct Api<K> {
    raw: DynamicApi,
    _k: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            raw: self.raw.clone(),
            _k: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("resource", &self.raw.resource)
            .field("namespace", &self.raw.namespace)
            .finish()
    }
}

fn some_ns<K: Resource>(k: &K) -> Option<&str> {
    k.meta().namespace.as_deref()
}

impl<K: Resource> Api<K> {
    pub fn namespace(&self) -> Option<&str> {
        self.raw.namespace()
    }
    pub fn client(&self) -> &Client {
        self.raw.client()
    }
    /// The untyped API of the same resource and namespace.
    pub fn dynamic(&self) -> &DynamicApi {
        &self.raw
    }

    pub async fn get(&self, name: &str) -> Result<K> {
        self.raw.get_as(name, "").await
    }
    /// `None` on 404.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>> {
        opt(self.get(name).await)
    }
    pub async fn get_status(&self, name: &str) -> Result<K> {
        self.raw.get_as(name, "status").await
    }
    pub async fn list(&self, lp: &ListParams) -> Result<List<K>> {
        self.raw.list_as(lp).await
    }
    pub async fn create(&self, obj: &K) -> Result<K> {
        self.create_with(obj, &PostParams::default()).await
    }
    pub async fn create_with(&self, obj: &K, pp: &PostParams) -> Result<K> {
        self.raw.create_as(some_ns(obj), &typed_body(obj), pp).await
    }
    /// `create` for a writer that has no use for the stored object the server answers with
    /// (Events): the answer is checked for status and skimmed, not decoded into a `K`.
    pub async fn create_unread(&self, obj: &K) -> Result<()> {
        self.raw
            .create_as::<_, serde::de::IgnoredAny>(
                some_ns(obj),
                &typed_body(obj),
                &PostParams::default(),
            )
            .await?;
        Ok(())
    }
    /// `PUT`: carries the object's `resourceVersion`; a stale one is a 409 Conflict.
    pub async fn replace(&self, name: &str, obj: &K) -> Result<K> {
        self.replace_with(name, obj, &PostParams::default()).await
    }
    pub async fn replace_with(&self, name: &str, obj: &K, pp: &PostParams) -> Result<K> {
        self.raw
            .replace_as(some_ns(obj), name, "", &typed_body(obj), pp)
            .await
    }
    /// `PUT …/status`.
    pub async fn replace_status(&self, name: &str, obj: &K) -> Result<K> {
        self.raw
            .replace_as(
                some_ns(obj),
                name,
                "status",
                &typed_body(obj),
                &PostParams::default(),
            )
            .await
    }
    pub async fn patch(&self, name: &str, patch: &Patch) -> Result<K> {
        self.raw
            .patch_as(name, "", patch, &PatchParams::default())
            .await
    }
    pub async fn patch_with(&self, name: &str, patch: &Patch, pp: &PatchParams) -> Result<K> {
        self.raw.patch_as(name, "", patch, pp).await
    }
    /// `PATCH …/status`.
    pub async fn patch_status(&self, name: &str, patch: &Patch) -> Result<K> {
        self.raw
            .patch_as(name, "status", patch, &PatchParams::default())
            .await
    }
    pub async fn delete(&self, name: &str, dp: &DeleteOptions) -> Result<DeleteResult<K>> {
        self.raw.delete_as(name, dp).await
    }
    pub async fn delete_collection(
        &self,
        lp: &ListParams,
        dp: &DeleteOptions,
    ) -> Result<DeleteResult<List<K>>> {
        self.raw.delete_collection_as(lp, dp).await
    }
    /// Watch from `resource_version` (`""`: the server's choice, usually "now" plus synthetic
    /// ADDED events). ERROR events arrive as `Err(ClientError::Api(status))` (410: relist).
    /// The stream ends when the server closes it (`lp.timeout_seconds`).
    pub async fn watch(
        &self,
        lp: &ListParams,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<K>>> + Send + 'static> {
        self.raw
            .watch_as(lp, resource_version, decode_resource::<K>)
            .await
    }
    /// Same as [`Api::watch`] with a boxed stream.
    pub async fn watch_boxed(
        &self,
        lp: &ListParams,
        resource_version: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent<K>>>> {
        self.raw
            .watch_as(lp, resource_version, decode_resource::<K>)
            .await
    }

    /// `GET …/{name}/scale` (Deployments, ReplicaSets).
    pub async fn get_scale(&self, name: &str) -> Result<Scale> {
        self.raw.get_as(name, "scale").await
    }
    /// `PUT …/{name}/scale` (carries the Scale's resourceVersion).
    pub async fn replace_scale(&self, name: &str, scale: &Scale) -> Result<Scale> {
        let mut s = scale.clone();
        s.set_type_meta();
        self.raw
            .replace_as(some_ns(scale), name, "scale", &s, &PostParams::default())
            .await
    }
    /// `PATCH …/{name}/scale`, e.g. `Patch::Merge(json!({"spec":{"replicas":3}}))`.
    pub async fn patch_scale(&self, name: &str, patch: &Patch) -> Result<Scale> {
        self.raw
            .patch_as(name, "scale", patch, &PatchParams::default())
            .await
    }
}

/// The object with `apiVersion`/`kind` filled in when the caller left them empty.
fn typed_body<K: Resource>(obj: &K) -> std::borrow::Cow<'_, K> {
    let (av, kind) = obj.type_meta();
    if av.is_empty() || kind.is_empty() {
        let mut o = obj.clone();
        o.set_type_meta();
        std::borrow::Cow::Owned(o)
    } else {
        std::borrow::Cow::Borrowed(obj)
    }
}

impl Api<Pod> {
    /// `POST pods/{name}/binding`: place the pod on `binding.target.name`.
    pub async fn bind(&self, name: &str, binding: &Binding) -> Result<Status> {
        let mut b = binding.clone();
        b.set_type_meta();
        if b.metadata.name.is_none() {
            b.metadata.name = Some(name.to_string());
        }
        let path = self
            .raw
            .object_path(binding.metadata.namespace.as_deref(), name, "binding")?;
        let rb = self.raw.client.request(Method::POST, &path);
        let rb = json_body(rb, &b, "application/json")?;
        let body = self.raw.client.send_bytes(rb).await?;
        // The server answers a Status (Success) or the bound object; either is success.
        Ok(serde_json::from_slice::<Status>(&body)
            .ok()
            .filter(|s| s.kind == "Status")
            .unwrap_or_else(Status::success))
    }

    /// `GET pods/{name}/log` as a byte stream (chunks as the server sends them).
    pub async fn logs(
        &self,
        name: &str,
        lp: &LogParams,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static> {
        let path = self.raw.object_path(None, name, "log")?;
        let mut rb = self
            .raw
            .client
            .request(Method::GET, &path)
            .query(&lp.query());
        if !lp.follow {
            if let Some(t) = self.raw.client.inner.request_timeout {
                rb = rb.timeout(t);
            }
        }
        let resp = self.raw.client.send(rb).await?;
        Ok(resp.bytes_stream().map_err(ClientError::Http))
    }

    /// The whole log as a string (no follow).
    pub async fn logs_string(&self, name: &str, lp: &LogParams) -> Result<String> {
        let mut lp = lp.clone();
        lp.follow = false;
        let mut s = Box::pin(self.logs(name, &lp).await?);
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::Deployment;
    use crate::core::{Namespace, Node};

    fn chunks(parts: &[&str]) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        let v: Vec<Result<Bytes>> = parts
            .iter()
            .map(|p| Ok(Bytes::from(p.to_string())))
            .collect();
        futures::stream::iter(v)
    }

    async fn collect<T: Send + 'static>(
        parts: &[&str],
        decode: ObjectDecoder<T>,
    ) -> Vec<Result<WatchEvent<T>>> {
        decode_watch_stream(chunks(parts), decode).collect().await
    }

    #[tokio::test]
    async fn watch_stream_splits_across_chunks() {
        let parts = [
            r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","resourceVersion":"5"}}}"#,
            "\n{\"type\":\"MODI",
            r#"FIED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","resourceVersion":"6"}}}"#,
            "\r\n\n",
            r#"{"type":"DELETED","object":{"metadata":{"name":"a","resourceVersion":"7"}}}"#,
        ];
        let evs = collect(&parts, decode_resource::<Pod>).await;
        assert_eq!(evs.len(), 3);
        let evs: Vec<_> = evs.into_iter().map(|e| e.unwrap()).collect();
        assert_eq!(evs[0].type_, WatchEventType::Added);
        assert_eq!(evs[1].type_, WatchEventType::Modified);
        assert_eq!(evs[1].object.metadata.resource_version(), "6");
        assert_eq!(evs[2].type_, WatchEventType::Deleted);
        assert_eq!(evs[2].object.metadata.name(), "a");
    }

    #[tokio::test]
    async fn watch_stream_one_byte_chunks_and_many_lines_per_chunk() {
        let mut text = String::new();
        for i in 0..50 {
            text.push_str(&format!(
                "{{\"type\":\"ADDED\",\"object\":{{\"kind\":\"Pod\",\"metadata\":{{\"name\":\"p{i}\"}}}}}}\n"
            ));
            if i % 7 == 0 {
                text.push_str("\r\n \n");
            }
        }
        let names = |evs: Vec<Result<WatchEvent<Pod>>>| -> Vec<String> {
            evs.into_iter()
                .map(|e| e.expect("event").object.metadata.name().to_string())
                .collect()
        };
        let want: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
        // All 50 lines in one chunk.
        assert_eq!(names(collect(&[&text], decode_resource::<Pod>).await), want);
        // One byte per chunk.
        let bytes: Vec<String> = text.chars().map(String::from).collect();
        let parts: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(names(collect(&parts, decode_resource::<Pod>).await), want);
    }

    #[tokio::test]
    async fn watch_error_event_is_an_api_error() {
        let parts = [
            "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"reason\":\"Expired\",\"code\":410,\"message\":\"too old resource version: 1 (50)\"}}\n",
        ];
        let evs = collect(&parts, decode_resource::<Pod>).await;
        assert_eq!(evs.len(), 1);
        let err = evs.into_iter().next().unwrap().unwrap_err();
        assert!(err.is_gone(), "{err:?}");
        assert_eq!(
            err.status().unwrap().message(),
            "too old resource version: 1 (50)"
        );
    }

    #[tokio::test]
    async fn bookmark_with_only_metadata_decodes() {
        // A Scale requires nothing, but a bookmark for a kind with required fields must still
        // decode: the fallback builds a default object carrying the metadata.
        let parts = [
            "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Deployment\",\"apiVersion\":\"apps/v1\",\"metadata\":{\"resourceVersion\":\"42\"}}}\n",
        ];
        let evs = collect(&parts, decode_resource::<Deployment>).await;
        let ev = evs.into_iter().next().unwrap().unwrap();
        assert_eq!(ev.type_, WatchEventType::Bookmark);
        assert_eq!(ev.object.metadata.resource_version(), "42");
    }

    #[tokio::test]
    async fn garbage_line_is_a_decode_error_and_stream_continues() {
        let parts = [
            "not json\n",
            "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"n\"}}}\n",
        ];
        let evs = collect(&parts, decode_value).await;
        assert_eq!(evs.len(), 2);
        assert!(matches!(evs[0], Err(ClientError::Decode { .. })));
        assert_eq!(evs[1].as_ref().unwrap().object["metadata"]["name"], "n");
    }

    #[tokio::test]
    async fn final_line_without_newline_and_transport_error() {
        let v: Vec<Result<Bytes>> = vec![
            Ok(Bytes::from_static(
                b"{\"type\":\"ADDED\",\"object\":{}}\n{\"type\":",
            )),
            Err(ClientError::Invalid("boom".into())),
        ];
        let evs: Vec<_> = decode_watch_stream(futures::stream::iter(v), decode_value)
            .collect()
            .await;
        assert_eq!(evs.len(), 2);
        assert!(evs[0].is_ok());
        assert!(matches!(evs[1], Err(ClientError::Invalid(_))));

        let tail: Vec<_> = decode_watch_stream(
            chunks(&["{\"type\":\"ADDED\",\"object\":{}}"]),
            decode_value,
        )
        .collect()
        .await;
        assert_eq!(tail.len(), 1);
        assert!(tail[0].is_ok());
    }

    #[test]
    fn paths() {
        let pods = ApiResource::of::<Pod>();
        assert_eq!(pods.collection_path(None), "/api/v1/pods");
        assert_eq!(
            pods.object_path(Some("default"), "web-1"),
            "/api/v1/namespaces/default/pods/web-1"
        );
        let d = ApiResource::of::<Deployment>();
        assert_eq!(
            d.object_path(Some("prod"), "web"),
            "/apis/apps/v1/namespaces/prod/deployments/web"
        );
        assert_eq!(d.collection_path(None), "/apis/apps/v1/deployments");
        assert_eq!(d.group_resource(), "deployments.apps");
        let n = ApiResource::of::<Node>();
        assert_eq!(n.object_path(Some("ignored"), "n1"), "/api/v1/nodes/n1");
        assert_eq!(
            ApiResource::of::<Namespace>().collection_path(None),
            "/api/v1/namespaces"
        );
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn namespace_resolution() {
        let c = Client::new("http://127.0.0.1:1").unwrap();
        let all = c.dynamic(ApiResource::of::<Pod>(), None);
        assert!(matches!(
            all.object_path(None, "x", ""),
            Err(ClientError::Invalid(_))
        ));
        assert_eq!(
            all.object_path(Some("ns1"), "x", "status").unwrap(),
            "/api/v1/namespaces/ns1/pods/x/status"
        );
        let ns = c.dynamic(ApiResource::of::<Pod>(), Some("a"));
        assert!(ns.object_path(Some("b"), "x", "").is_err());
        let nodes = c.dynamic(ApiResource::of::<Node>(), Some("a"));
        assert_eq!(nodes.object_path(None, "n", "").unwrap(), "/api/v1/nodes/n");
        assert!(Client::new("ftp://x").is_err());
        assert!(Client::new("not a url").is_err());
    }

    #[test]
    fn query_strings() {
        let lp = ListParams::default()
            .labels("app=web,tier in (a,b)")
            .fields("metadata.name=x")
            .limit(10)
            .continue_token("c1")
            .timeout(30);
        assert_eq!(
            lp.list_query(),
            vec![
                ("labelSelector", "app=web,tier in (a,b)".to_string()),
                ("fieldSelector", "metadata.name=x".to_string()),
                ("limit", "10".to_string()),
                ("continue", "c1".to_string()),
            ]
        );
        assert_eq!(
            lp.watch_query("17"),
            vec![
                ("watch", "1".to_string()),
                ("labelSelector", "app=web,tier in (a,b)".to_string()),
                ("fieldSelector", "metadata.name=x".to_string()),
                ("resourceVersion", "17".to_string()),
                ("allowWatchBookmarks", "true".to_string()),
                ("timeoutSeconds", "30".to_string()),
            ]
        );
        let q = LogParams {
            container: Some("c".into()),
            follow: true,
            tail_lines: Some(5),
            ..Default::default()
        }
        .query();
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn error_bodies() {
        let s = status_from_response(
            404,
            br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"deployments.apps \"nope\" not found","reason":"NotFound","code":404}"#,
        );
        let e = ClientError::from(s);
        assert!(e.is_not_found());
        assert_eq!(
            e.to_string(),
            "Error from server (NotFound): deployments.apps \"nope\" not found"
        );
        let e = ClientError::from(status_from_response(409, b"{\"error\":\"x\"}"));
        assert!(e.is_conflict());
        assert_eq!(
            e.status().unwrap().message(),
            "the server reported a conflict"
        );
        let e = ClientError::from(status_from_response(
            409,
            br#"{"kind":"Status","reason":"AlreadyExists","message":"x","code":409}"#,
        ));
        assert!(e.is_already_exists() && !e.is_conflict());
        let e = ClientError::from(status_from_response(410, b""));
        assert!(e.is_gone());
        let e = ClientError::from(status_from_response(422, b"bad field\n"));
        assert!(e.is_invalid());
        assert_eq!(e.status().unwrap().message(), "bad field");
    }

    #[test]
    fn patch_content_types() {
        assert_eq!(
            Patch::Merge(Value::Null).content_type(),
            "application/merge-patch+json"
        );
        assert_eq!(
            Patch::Json(Value::Null).content_type(),
            "application/json-patch+json"
        );
        assert_eq!(
            Patch::Strategic(Value::Null).content_type(),
            "application/strategic-merge-patch+json"
        );
    }

    #[tokio::test]
    async fn unreachable_server_is_a_connect_error() {
        // Port 1 on loopback: nothing listens there.
        let c = Client::new("http://127.0.0.1:1").unwrap();
        let err = c.api::<Pod>(Some("default")).get("x").await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }

    #[test]
    fn delete_answers() {
        let r: DeleteResult<Pod> = decode_delete(
            br#"{"kind":"Status","apiVersion":"v1","status":"Success"}"#,
            "x",
        )
        .unwrap();
        assert!(matches!(r, DeleteResult::Deleted(_)));
        let r: DeleteResult<Pod> = decode_delete(
            br#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","deletionTimestamp":"2024-01-01T00:00:00Z"}}"#,
            "x",
        )
        .unwrap();
        assert!(r.object().unwrap().metadata.deletion_timestamp.is_some());
    }
}
