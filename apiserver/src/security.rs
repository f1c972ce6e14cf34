//! The secure server: TLS with the cluster CA, the authenticator, the admin and node join
//! tokens of first start, and the two endpoints nodes need to join:
//!
//! - `GET /cacerts` (public): the CA bundle, PEM. A joining agent fetches it without trusting
//!   it, then checks it against the hash pinned in its join token.
//! - `POST /kapsel/v1/nodecsr` `{"nodeName": N, "csr": PEM}`: signs the CSR as a client
//!   certificate for `system:node:N` in `system:nodes` (valid `node_cert_ttl`), answering
//!   `{"certificate": PEM, "ca": PEM}`. Join tokens (`system:bootstrappers`) may ask for any
//!   node, a node only for itself (renewal), cluster admins for any.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use crate::auth::{
    self, Authenticator, ClusterAuthenticator, JoinToken, UserInfo, GROUP_BOOTSTRAPPERS,
    GROUP_MASTERS, GROUP_NODES,
};
use crate::errors::{ApiError, ObjRef};
use crate::rest::{Api, WriteOpts};
use crate::tls::{self, ServerPki, TlsError};

/// Default lifetime of node client certificates (agents renew at two thirds of it).
pub const DEFAULT_NODE_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration like `90s`, `30m`, `8760h` (one number, one unit).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: want N followed by s, m or h"
            ))
        }
    };
    Ok(Duration::from_secs(n * mult))
}

/// What the secure server needs.
#[derive(Clone, Debug)]
pub struct SecurityConfig {
    /// Where the CA and the serving certificate live (`ca.crt`, `ca.key`, `serving.*`).
    pub pki_dir: PathBuf,
    /// Extra names and addresses of the serving certificate (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// The admin token (`system:admin` in `system:masters`), created on first start.
    pub admin_token_file: Option<PathBuf>,
    /// The default join token (`K10…`, no expiry), created on first start.
    pub node_token_file: Option<PathBuf>,
    /// `--token-auth-file` (Kubernetes' CSV format).
    pub token_auth_file: Option<PathBuf>,
    /// Lifetime of node client certificates.
    pub node_cert_ttl: Duration,
    /// Write a client config (kubeconfig: the loopback URL, the CA, the admin token) here.
    pub kubeconfig: Option<PathBuf>,
}

impl SecurityConfig {
    /// Everything under `dir`: `dir/pki/`, `dir/admin-token`, `dir/node-token`.
    pub fn in_dir(dir: &Path) -> Self {
        SecurityConfig {
            pki_dir: dir.join("pki"),
            tls_sans: Vec::new(),
            admin_token_file: Some(dir.join("admin-token")),
            node_token_file: Some(dir.join("node-token")),
            token_auth_file: None,
            node_cert_ttl: DEFAULT_NODE_CERT_TTL,
            kubeconfig: None,
        }
    }
}

/// The prepared security of a server.
pub struct Secured {
    pub pki: Arc<ServerPki>,
    pub tls: Arc<rustls::ServerConfig>,
    pub authenticator: Arc<dyn Authenticator>,
    /// The server's own loopback client (component API) authenticates with this (in memory
    /// only; `system:apiserver` in `system:masters`).
    pub loopback_token: String,
    pub node_cert_ttl: Duration,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ApiError + '_ {
    move |e| ApiError::Internal(format!("{}: {e}", path.display()))
}

fn tls_err(e: TlsError) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// The token in `path`, created (0600) by `make` if missing.
fn ensure_file(path: &Path, make: impl FnOnce() -> String) -> Result<String, ApiError> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    let t = make();
    tls::write_private(path, format!("{t}\n").as_bytes()).map_err(tls_err)?;
    Ok(t)
}

/// Store the Secret of a token unless it exists.
pub async fn ensure_token_secret(
    api: &Api,
    token: &str,
    user: Option<(&str, &[String])>,
    description: &str,
) -> Result<(), ApiError> {
    let def = crate::registry::find("", "v1", "secrets")
        .ok_or_else(|| ApiError::Internal("secrets are not served".into()))?;
    let body = auth::token_secret(token, user, None, description).map_err(ApiError::Internal)?;
    match api
        .create(def, auth::TOKEN_NAMESPACE, body, &WriteOpts::default())
        .await
    {
        Ok(_) | Err(ApiError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Set up TLS and authentication: the PKI, the admin token, the default join token, the
/// token file.
pub async fn secure(
    cfg: &SecurityConfig,
    listen: SocketAddr,
    api: &Arc<Api>,
) -> Result<Secured, crate::server::ServerError> {
    let sans = tls::default_sans(listen, &cfg.tls_sans);
    let pki = ServerPki::load_or_create(&cfg.pki_dir, &sans)?;
    let tls_cfg = pki.server_config()?;
    let mut authn = ClusterAuthenticator::new(Arc::clone(api));
    if let Some(p) = &cfg.admin_token_file {
        let t = ensure_file(p, auth::new_token)?;
        authn.add_token(&t, UserInfo::admin());
        if let Some(k) = &cfg.kubeconfig {
            let url = crate::component::loopback_url_scheme(listen, "https");
            let text = kubeconfig(&url, pki.ca.cert_pem(), &t);
            tls::write_private(k, text.as_bytes())?;
        }
    }
    if let Some(p) = &cfg.token_auth_file {
        let text = std::fs::read_to_string(p).map_err(io_err(p))?;
        let tokens = auth::parse_token_csv(&text)
            .map_err(|e| ApiError::bad_request(format!("{}: {e}", p.display())))?;
        for (t, u) in tokens {
            authn.add_token(&t, u);
        }
    }
    if let Some(p) = &cfg.node_token_file {
        let ca_hash = pki.ca.hash();
        let text = ensure_file(p, || {
            JoinToken {
                ca_hash: ca_hash.clone(),
                token: auth::new_token(),
            }
            .to_string()
        })?;
        let join = JoinToken::parse(&text)
            .map_err(|e| ApiError::Internal(format!("{}: {e}", p.display())))?;
        if join.ca_hash != ca_hash {
            return Err(ApiError::Internal(format!(
                "{} pins another CA ({}) than {} ({ca_hash})",
                p.display(),
                join.ca_hash,
                cfg.pki_dir.display()
            ))
            .into());
        }
        ensure_token_secret(api, &join.token, None, "the server's default join token").await?;
    }
    let loopback_token = auth::new_token();
    authn.add_token(
        &loopback_token,
        UserInfo::authenticated("system:apiserver", vec![GROUP_MASTERS.into()]),
    );
    tracing::info!(ca = %pki.ca.hash(), sans = ?sans, "TLS and authentication on");
    Ok(Secured {
        pki: Arc::new(pki),
        tls: tls_cfg,
        authenticator: Arc::new(authn),
        loopback_token,
        node_cert_ttl: cfg.node_cert_ttl,
    })
}

/// A client config (kubeconfig; JSON is YAML) for `server` with the CA and `token`.
pub fn kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "kapsel", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "kapsel-admin", "user": {"token": token}}],
        "contexts": [{"name": "kapsel", "context": {"cluster": "kapsel", "user": "kapsel-admin"}}],
        "current-context": "kapsel",
    });
    format!("{v:#}\n")
}

#[derive(Clone)]
struct CsrState {
    pki: Arc<ServerPki>,
    ttl: Duration,
}

/// The join endpoints (see the module docs).
pub fn routes(s: &Secured) -> Router {
    Router::new()
        .route("/cacerts", get(cacerts))
        .route(NODE_CSR_PATH, post(node_csr))
        .with_state(CsrState {
            pki: Arc::clone(&s.pki),
            ttl: s.node_cert_ttl,
        })
}

/// Where nodes send CSRs.
pub const NODE_CSR_PATH: &str = "/kapsel/v1/nodecsr";

async fn cacerts(State(st): State<CsrState>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        st.pki.ca.cert_pem().to_string(),
    )
        .into_response()
}

/// The body of `POST /kapsel/v1/nodecsr`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeCsrRequest {
    pub node_name: String,
    pub csr: String,
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCsrResponse {
    pub certificate: String,
    pub ca: String,
}

/// Whether `user` may get a certificate for node `node`. Pure; table-tested.
pub fn may_sign_for(user: &UserInfo, node: &str) -> bool {
    user.in_group(GROUP_MASTERS)
        || user.in_group(GROUP_BOOTSTRAPPERS)
        || (user.in_group(GROUP_NODES) && user.node_name() == Some(node))
}

async fn node_csr(
    State(st): State<CsrState>,
    user: Option<Extension<UserInfo>>,
    body: axum::body::Bytes,
) -> Response {
    let user = user
        .map(|Extension(u)| u)
        .unwrap_or_else(UserInfo::anonymous);
    let req: NodeCsrRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(format!("node CSR: {e}")).into_response(),
    };
    let errs = kapsel_api::validation::dns1123_subdomain_errors(&req.node_name);
    if !errs.is_empty() {
        return ApiError::bad_request(format!(
            "nodeName: Invalid value: {:?}: {}",
            req.node_name,
            errs.join("; ")
        ))
        .into_response();
    }
    if !may_sign_for(&user, &req.node_name) {
        return ApiError::Forbidden {
            obj: ObjRef::new("nodecsr", "kapsel.dev", &req.node_name),
            reason: format!(
                "User {:?} may not get a certificate for node {:?}",
                user.name, req.node_name
            ),
        }
        .into_response();
    }
    let cn = format!("system:node:{}", req.node_name);
    match st
        .pki
        .ca
        .sign_csr(&req.csr, &cn, &[GROUP_NODES.to_string()], st.ttl)
    {
        Ok(certificate) => {
            tracing::info!(user = %user.name, node = %req.node_name, ttl = ?st.ttl, "signed a node certificate");
            Json(NodeCsrResponse {
                certificate,
                ca: st.pki.ca.cert_pem().to_string(),
            })
            .into_response()
        }
        Err(e) => ApiError::bad_request(e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        for (s, want) in [
            ("90s", Some(90)),
            ("30m", Some(1800)),
            ("8760h", Some(31_536_000)),
        ] {
            assert_eq!(parse_ttl(s).ok().map(|d| d.as_secs()), want, "{s}");
        }
        for bad in ["", "h", "10", "10d", "-1s"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn who_may_get_node_certificates() {
        let node1 = UserInfo::authenticated("system:node:n1", vec![GROUP_NODES.into()]);
        let boot =
            UserInfo::authenticated("system:bootstrap:abcdef", vec![GROUP_BOOTSTRAPPERS.into()]);
        let alice = UserInfo::authenticated("alice", vec!["dev".into()]);
        for (u, node, ok) in [
            (&node1, "n1", true),
            (&node1, "n2", false),
            (&boot, "n2", true),
            (&alice, "n1", false),
            (&UserInfo::admin(), "n9", true),
            (&UserInfo::anonymous(), "n1", false),
        ] {
            assert_eq!(may_sign_for(u, node), ok, "{} for {node}", u.name);
        }
    }
}
