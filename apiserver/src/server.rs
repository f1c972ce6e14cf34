//! Server assembly: the router, middleware, startup (store, system namespaces), clean shutdown,
//! and an in-process test server for every crate's integration tests.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::auth::{AllowAll, Authenticator};
use crate::discovery;
use crate::errors::ApiError;
use crate::handlers::{self, AppState};
use crate::rest::Api;
use crate::store::sled_store::SledOptions;
use crate::store::{SledStore, StoreError};

/// The encryption key file's name in the data directory when `--encryption-key-file` is not set.
pub const DEFAULT_ENCRYPTION_KEY_FILE: &str = "encryption-key";

/// How long open requests (watches) get to finish after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Events kept for watchers (older resourceVersions answer 410).
    pub watch_history: usize,
    /// sled's page cache, bytes.
    pub cache_bytes: u64,
    /// Group-commit delay under concurrent writes (see [`SledOptions::commit_delay`]).
    pub commit_delay: Duration,
    /// Used when `security` is `None` (plain HTTP: the test server, `--insecure-http`).
    pub authenticator: Arc<dyn Authenticator>,
    /// TLS and authentication (the default of the binaries); `None`: plain HTTP.
    pub security: Option<crate::security::SecurityConfig>,
    /// `--event-ttl`: Events are deleted this long after they last happened.
    pub event_ttl: Duration,
    /// `--service-cidr` and the node port range Services are allocated from.
    pub service_ranges: crate::svcalloc::Ranges,
    /// Authorization, audit log and abuse limits (authz/).
    pub guards: crate::authz::GuardsConfig,
    /// `--encryption-key-file`: the key of Secrets at rest, created at first start (`None`:
    /// `DATA_DIR/encryption-key`).
    pub encryption_key_file: Option<PathBuf>,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        let d = SledOptions::default();
        ServerConfig {
            data_dir: data_dir.into(),
            listen,
            watch_history: d.watch_history,
            cache_bytes: d.cache_bytes,
            commit_delay: d.commit_delay,
            authenticator: Arc::new(AllowAll),
            security: None,
            event_ttl: crate::eventttl::DEFAULT_EVENT_TTL,
            service_ranges: crate::svcalloc::Ranges::default(),
            guards: Default::default(),
            encryption_key_file: None,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("watch_history", &self.watch_history)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("startup: {0}")]
    Api(#[from] ApiError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// The REST routes, without fallback or middleware (so other routers can be merged in).
pub fn rest_routes(api: AppState) -> Router {
    Router::new()
        .route("/version", get(discovery::version))
        .route("/healthz", get(discovery::ok_text))
        .route("/livez", get(discovery::ok_text))
        .route("/readyz", get(discovery::ok_text))
        .route("/api", get(discovery::api_versions))
        .route("/api/v1", get(handlers::core_v1))
        .route("/api/v1/{*rest}", any(handlers::core))
        .route("/apis", get(discovery::api_groups))
        .route("/apis/{group}", get(handlers::group))
        .route("/apis/{group}/{version}", get(handlers::group_version))
        .route("/apis/{group}/{version}/{*rest}", any(handlers::grouped))
        .route("/openapi/v2", get(discovery::openapi_v2))
        .route("/openapi/v3", get(discovery::openapi_v3))
        .route("/openapi/v3/{*rest}", get(discovery::openapi_v3_gv))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// A server whose store is open and whose system namespaces exist, not yet accepting.
pub struct Prepared {
    api: Arc<Api>,
    store: SledStore,
    stop_tx: watch::Sender<bool>,
    authenticator: Arc<dyn Authenticator>,
    event_ttl: Duration,
    /// TLS, the CA and the loopback credentials of the secure server.
    security: Option<crate::security::Secured>,
    guards: Arc<crate::authz::Guards>,
}

impl Prepared {
    /// The secure server's PKI (CA, serving certificate); `None` for plain HTTP.
    pub fn pki(&self) -> Option<&Arc<crate::tls::ServerPki>> {
        self.security.as_ref().map(|s| &s.pki)
    }
}

/// Open the store and create the system namespaces.
pub async fn prepare(config: &ServerConfig) -> Result<Prepared, ServerError> {
    let dir = config.data_dir.clone();
    let key_file = config
        .encryption_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join(DEFAULT_ENCRYPTION_KEY_FILE));
    let encryption = Some(Arc::new(
        crate::store::encryption::Encryption::load_or_create(&key_file)?,
    ));
    let opts = SledOptions {
        encryption,
        watch_history: config.watch_history,
        cache_bytes: config.cache_bytes,
        commit_delay: config.commit_delay,
        ..SledOptions::default()
    };
    let store = tokio::task::spawn_blocking(move || SledStore::open(&dir, opts))
        .await
        .map_err(|e| ServerError::Io(std::io::Error::other(e)))??;
    let (stop_tx, stop_rx) = watch::channel(false);
    let api = Arc::new(Api {
        store: store.clone(),
        shutdown: stop_rx,
        service_ranges: config.service_ranges.clone(),
    });
    api.bootstrap().await?;
    let guards = crate::authz::Guards::start(&config.guards, &api).await?;
    let (authenticator, security) = match &config.security {
        None => (Arc::clone(&config.authenticator), None),
        Some(sec) => {
            let secured = crate::security::secure(sec, config.listen, &api).await?;
            (Arc::clone(&secured.authenticator), Some(secured))
        }
    };
    Ok(Prepared {
        api,
        store,
        stop_tx,
        authenticator,
        event_ttl: config.event_ttl,
        security,
        guards,
    })
}

/// Serve on `listener` until `shutdown` resolves; then stop accepting, end watches, let open
/// requests finish (at most a few seconds) and flush the store.
pub async fn run(
    prepared: Prepared,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let Prepared {
        api,
        store,
        stop_tx,
        authenticator,
        event_ttl,
        security,
        guards,
    } = prepared;
    let app = rest_routes(Arc::clone(&api));
    let loopback = crate::component::Loopback {
        tls_ca_pem: security.as_ref().map(|s| s.pki.ca.cert_pem().to_string()),
        token: security.as_ref().map(|s| s.loopback_token.clone()),
    };
    // The CA bundle, node certificate signing (join, renewal): security.rs.
    let app = match &security {
        Some(s) => app.merge(crate::security::routes(s)),
        None => app,
    };
    // The agents' gRPC component API and the pods/{name}/log relay, same listener (component/).
    let app = crate::component::mount(app, &listener, &loopback);
    // Observability: /metrics (authenticated), request metrics, the /ui shell, event expiry.
    let app = app.merge(crate::metrics::routes(Arc::clone(&api)));
    // Authorization runs after authentication (inner), audit and limits around both.
    let connections = guards.connections;
    let app = crate::gate::layer(
        app.fallback(handlers::not_found),
        crate::gate::Gate {
            authenticator,
            guards,
        },
    )
    .merge(crate::ui::routes());
    crate::eventttl::spawn(Arc::clone(&api), event_ttl);
    let stopped = api.shutdown.clone();
    drop(api);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "kapsel-apiserver listening");
    }
    // TLS (when secured), TCP_NODELAY (streamed frames: watches, gRPC, log relay), HTTP/1
    // and HTTP/2, graceful shutdown: accept.rs.
    let tls = security
        .as_ref()
        .map(|s| tokio_rustls::TlsAcceptor::from(Arc::clone(&s.tls)));
    let result = crate::accept::serve(listener, app, tls, connections, stopped, SHUTDOWN_GRACE)
        .await
        .map_err(ServerError::from);
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(|e| ServerError::Io(std::io::Error::other(e)))?;
    tracing::info!("kapsel-apiserver stopped");
    result
}

/// Run the API server: bind `config.listen`, serve until `shutdown` resolves.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let prepared = prepare(&config).await?;
    let listener = TcpListener::bind(config.listen).await?;
    run(prepared, listener, shutdown).await
}

/// An API server on an ephemeral loopback port over a temporary data directory, for tests.
/// It stops when dropped (or, waiting for it, with [`TestServer::shutdown`]).
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: SocketAddr,
    pub handle: Option<JoinHandle<Result<(), ServerError>>>,
    pub tempdir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub fn data_dir(&self) -> &Path {
        self.tempdir.path()
    }

    /// Stop the server and wait until it has flushed its store.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Start an API server for a test (needs a multi-threaded or current-thread tokio runtime).
/// Panics if it cannot start: this is test support.
pub async fn start_test_server() -> TestServer {
    start_test_server_with(|_| {}).await
}

/// [`start_test_server`] with a chance to adjust the configuration (e.g. a small watch history).
pub async fn start_test_server_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let tempdir = tempfile::tempdir().expect("creating a temporary data directory");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let mut config = ServerConfig::new(tempdir.path().join("data"), addr);
    adjust(&mut config);
    let prepared = prepare(&config)
        .await
        .expect("starting the test API server");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(run(prepared, listener, async move {
        let _ = rx.await;
    }));
    TestServer {
        url: format!("http://{addr}"),
        addr,
        handle: Some(handle),
        tempdir,
        stop: Some(tx),
    }
}
