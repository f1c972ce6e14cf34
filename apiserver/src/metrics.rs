//! Prometheus metrics of the API server (the names kube-apiserver uses, so existing dashboards
//! work): `apiserver_request_total{verb,group,version,resource,subresource,code}`,
//! `apiserver_request_duration_seconds`, `apiserver_longrunning_requests`,
//! `apiserver_registered_watchers`, `etcd_request_duration_seconds{operation}` (the sled store)
//! and `apiserver_storage_size_bytes`.
//!
//! `GET /metrics` sits in the authenticated router. It also serves whatever other components
//! running in this process registered with [`add_component`] (`kapsel server`: scheduler,
//! controller, agent).

use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::handlers::AppState;
use crate::registry;

/// The content type of the exposition (OpenMetrics text; Prometheus scrapes it natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// kube-apiserver's request latency buckets (seconds).
pub const REQUEST_BUCKETS: [f64; 24] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0,
    8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// Store latency buckets (seconds): fsyncs take 100 µs .. 1 s.
pub const STORE_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

type RequestLabels = [(&'static str, String); 6];
type Labels2 = [(&'static str, String); 2];
type Labels1 = [(&'static str, String); 1];

struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<[(&'static str, String); 5], Histogram>,
    longrunning: Family<Labels2, Gauge>,
    watchers: Family<Labels1, Gauge>,
    store: Family<Labels1, Histogram>,
    storage_size: Gauge,
}

static M: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    requests: Family::default(),
    duration: Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS)),
    longrunning: Family::default(),
    watchers: Family::default(),
    store: Family::new_with_constructor(|| Histogram::new(STORE_BUCKETS)),
    storage_size: Gauge::default(),
});

/// Adds a component's metrics to the registry `/metrics` encodes.
pub type RegisterFn = fn(&mut Registry);

static COMPONENTS: Mutex<Vec<RegisterFn>> = Mutex::new(Vec::new());

/// Serve another in-process component's metrics on this server's `/metrics` too.
pub fn add_component(f: RegisterFn) {
    let mut v = COMPONENTS.lock().unwrap_or_else(|p| p.into_inner());
    if !v.iter().any(|g| std::ptr::fn_addr_eq(*g, f)) {
        v.push(f);
    }
}

/// Register the API server's metrics.
pub fn register(reg: &mut Registry) {
    let m = &*M;
    reg.register(
        "apiserver_request",
        "Counter of apiserver requests broken out for each verb, group, version, resource, subresource and HTTP response code",
        m.requests.clone(),
    );
    reg.register(
        "apiserver_request_duration_seconds",
        "Response latency distribution in seconds for each verb, group, version, resource and subresource (long-running requests excluded)",
        m.duration.clone(),
    );
    reg.register(
        "apiserver_longrunning_requests",
        "Gauge of all active long-running apiserver requests (watches, followed logs, streams) by verb and resource",
        m.longrunning.clone(),
    );
    reg.register(
        "apiserver_registered_watchers",
        "Number of currently registered watchers for a given resource",
        m.watchers.clone(),
    );
    reg.register(
        "etcd_request_duration_seconds",
        "Store (sled) request latency in seconds by operation; write is transaction start to durable (fsync'd)",
        m.store.clone(),
    );
    reg.register(
        "apiserver_storage_size_bytes",
        "Size of the storage database file on disk in bytes",
        m.storage_size.clone(),
    );
}

/// Encode a registry filled by `fill` as an OpenMetrics exposition.
pub fn render(fill: impl FnOnce(&mut Registry)) -> String {
    let mut reg = Registry::default();
    fill(&mut reg);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode_registry(&mut out, &reg);
    let _ = encode_eof(&mut out);
    out
}

/// An exposition as an HTTP response.
pub fn response(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

/// Record one store operation's latency.
pub fn observe_store(operation: &'static str, started: Instant) {
    M.store
        .get_or_create(&[("operation", operation.to_string())])
        .observe(started.elapsed().as_secs_f64());
}

async fn metrics(State(api): State<AppState>) -> Response {
    let size = api.store.size_on_disk();
    M.storage_size.set(i64::try_from(size).unwrap_or(i64::MAX));
    let components: Vec<RegisterFn> = COMPONENTS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    response(render(|reg| {
        register(reg);
        for f in components {
            f(reg);
        }
    }))
}

/// `GET /metrics` (merge into the router before authentication is layered on).
pub fn routes(api: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(api)
}

/// What a request is, in kube-apiserver's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub verb: &'static str,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    /// Watches, followed logs, gRPC streams: not in the latency histogram.
    pub long_running: bool,
}

fn query_flag(query: &str, key: &str) -> bool {
    query.split('&').any(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        k == key && matches!(v, "1" | "true" | "True" | "TRUE")
    })
}

/// Classify a request by method and path (pure; labels stay bounded: unknown resources are
/// reported as `resource=""`).
pub fn classify(method: &Method, path: &str, query: &str) -> RequestInfo {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut info = RequestInfo {
        verb: verb_of(method, false, false),
        group: String::new(),
        version: String::new(),
        resource: String::new(),
        subresource: String::new(),
        long_running: false,
    };
    if segs.first() == Some(&"kapsel.v1.NodeAgent") {
        // The agents' gRPC component API.
        info.group = "kapsel.v1.NodeAgent".into();
        let m = segs.get(1).copied().unwrap_or("");
        info.resource = match m {
            "Register"
            | "RenewLease"
            | "UpdateNodeStatus"
            | "WatchPods"
            | "GetObject"
            | "UpdatePodStatus"
            | "FinalizePodDeletion"
            | "CreateEvent"
            | "ReportStats"
            | "LogStream" => m.to_string(),
            _ => String::new(),
        };
        info.long_running = matches!(m, "WatchPods" | "LogStream");
        return info;
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return info,
    };
    let rest = match rest {
        ["watch", r @ ..] => {
            info.long_running = true;
            r
        }
        r => r,
    };
    let namespaced = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let rest = if namespaced { &rest[2..] } else { rest };
    let Some(plural) = rest.first() else {
        return info;
    };
    let known = registry::find(group, version, plural).is_some()
        || (group == "metrics.k8s.io" && matches!(*plural, "nodes" | "pods"));
    if !known {
        return info;
    }
    info.group = group.to_string();
    info.version = version.to_string();
    info.resource = plural.to_string();
    info.subresource = match rest.get(2) {
        Some(s)
            if matches!(
                *s,
                "status" | "scale" | "binding" | "log" | "proxy" | "finalize"
            ) =>
        {
            s.to_string()
        }
        _ => String::new(),
    };
    let collection = rest.len() == 1;
    let watch = info.long_running || (method == Method::GET && query_flag(query, "watch"));
    if info.subresource == "log" && query_flag(query, "follow") {
        info.long_running = true;
    }
    info.long_running |= watch;
    info.verb = verb_of(method, collection, watch);
    info
}

fn verb_of(method: &Method, collection: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET if watch => "WATCH",
        Method::GET if collection => "LIST",
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE if collection => "DELETECOLLECTION",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Decrements its gauges when the long-running response ends.
struct Active {
    gauges: Vec<Gauge>,
}

impl Active {
    fn new(gauges: Vec<Gauge>) -> Self {
        for g in &gauges {
            g.inc();
        }
        Active { gauges }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        for g in &self.gauges {
            g.dec();
        }
    }
}

/// A response body that holds the long-running gauges up until it is dropped.
struct Guarded {
    inner: Body,
    _active: Active,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// One request being counted and timed: [`Tracked::begin`] before anything else looks at it
/// (so 401s and 413s count too), [`Tracked::end`] with the answer.
pub struct Tracked {
    info: RequestInfo,
    started: Instant,
    active: Option<Active>,
}

impl Tracked {
    pub fn begin(req: &Request) -> Tracked {
        let info = classify(
            req.method(),
            req.uri().path(),
            req.uri().query().unwrap_or(""),
        );
        let active = info.long_running.then(|| {
            let mut g = vec![M
                .longrunning
                .get_or_create(&[
                    ("verb", info.verb.to_string()),
                    ("resource", info.resource.clone()),
                ])
                .clone()];
            if info.verb == "WATCH" {
                g.push(
                    M.watchers
                        .get_or_create(&[("resource", info.resource.clone())])
                        .clone(),
                );
            }
            Active::new(g)
        });
        Tracked {
            info,
            started: Instant::now(),
            active,
        }
    }

    /// Count the answer; time it unless it is long-running, whose gauges then stay up until
    /// its body ends.
    pub fn end(self, resp: Response) -> Response {
        let Tracked {
            info,
            started,
            active,
        } = self;
        let code = resp.status().as_u16().to_string();
        M.requests
            .get_or_create(&[
                ("verb", info.verb.to_string()),
                ("group", info.group.clone()),
                ("version", info.version.clone()),
                ("resource", info.resource.clone()),
                ("subresource", info.subresource.clone()),
                ("code", code),
            ])
            .inc();
        match active {
            None => {
                M.duration
                    .get_or_create(&[
                        ("verb", info.verb.to_string()),
                        ("group", info.group),
                        ("version", info.version),
                        ("resource", info.resource),
                        ("subresource", info.subresource),
                    ])
                    .observe(started.elapsed().as_secs_f64());
                resp
            }
            Some(active) => {
                let (parts, body) = resp.into_parts();
                Response::from_parts(
                    parts,
                    Body::new(Guarded {
                        inner: body,
                        _active: active,
                    }),
                )
            }
        }
    }
}

/// Shared handle for tests: the current value of `apiserver_request_total` for some labels.
pub fn request_count(verb: &str, resource: &str, code: &str) -> u64 {
    let mut n = 0;
    let text = render(register);
    for line in text.lines() {
        if line.starts_with("apiserver_request_total{")
            && line.contains(&format!("verb=\"{verb}\""))
            && line.contains(&format!("resource=\"{resource}\""))
            && line.contains(&format!("code=\"{code}\""))
        {
            n += line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(m: Method, path: &str, q: &str) -> (&'static str, String, String, bool) {
        let i = classify(&m, path, q);
        (i.verb, i.resource, i.subresource, i.long_running)
    }

    #[test]
    fn classifies_requests_like_kube_apiserver() {
        let s = |x: &str| x.to_string();
        let table = [
            (
                Method::GET,
                "/api/v1/pods",
                "",
                ("LIST", s("pods"), s(""), false),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods",
                "watch=1",
                ("WATCH", s("pods"), s(""), true),
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/d/pods",
                "",
                ("WATCH", s("pods"), s(""), true),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/p",
                "",
                ("GET", s("pods"), s(""), false),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/d/pods/p/status",
                "",
                ("PUT", s("pods"), s("status"), false),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/d/pods/p/binding",
                "",
                ("POST", s("pods"), s("binding"), false),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/p/log",
                "follow=true",
                ("GET", s("pods"), s("log"), true),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/p/log",
                "",
                ("GET", s("pods"), s("log"), false),
            ),
            (
                Method::DELETE,
                "/apis/apps/v1/namespaces/d/deployments",
                "",
                ("DELETECOLLECTION", s("deployments"), s(""), false),
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/d/deployments/x/scale",
                "",
                ("PATCH", s("deployments"), s("scale"), false),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/kube-system",
                "",
                ("GET", s("namespaces"), s(""), false),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/x/finalize",
                "",
                ("PUT", s("namespaces"), s("finalize"), false),
            ),
            (
                Method::GET,
                "/api/v1/nodes/n1/proxy/metrics",
                "",
                ("GET", s("nodes"), s("proxy"), false),
            ),
            (
                Method::GET,
                "/api/v1/nosuchthings",
                "",
                ("GET", s(""), s(""), false),
            ),
            (Method::GET, "/healthz", "", ("GET", s(""), s(""), false)),
            (
                Method::POST,
                "/kapsel.v1.NodeAgent/WatchPods",
                "",
                ("POST", s("WatchPods"), s(""), true),
            ),
            (
                Method::POST,
                "/kapsel.v1.NodeAgent/Evil",
                "",
                ("POST", s(""), s(""), false),
            ),
        ];
        for (m, p, q, want) in table {
            assert_eq!(c(m, p, q), want, "{p}?{q}");
        }
    }

    #[test]
    fn exposition_ends_with_eof_and_counts() {
        let before = request_count("GET", "pods", "200");
        M.requests
            .get_or_create(&[
                ("verb", "GET".into()),
                ("group", String::new()),
                ("version", "v1".into()),
                ("resource", "pods".into()),
                ("subresource", String::new()),
                ("code", "200".into()),
            ])
            .inc();
        assert_eq!(request_count("GET", "pods", "200"), before + 1);
        assert!(render(register).ends_with("# EOF\n"));
    }
}
