//! The node's identity: a client certificate for `system:node:NAME` (group `system:nodes`)
//! signed by the cluster CA, its key (generated here, never sent anywhere), and the CA.
//!
//! Joining ([`NodeCerts::join`]), kubeadm/k3s style: the join token `K10<CA hash>::ID.SECRET`
//! pins the cluster CA. The agent fetches `GET /cacerts` without trusting it, refuses unless
//! its SHA-256 matches the pin, then sends a CSR to `POST /kapsel/v1/nodecsr` over TLS
//! verified against that CA, authenticated by the join token. From then on it uses mTLS.
//!
//! Renewal ([`NodeCerts::run_renewal`]): at two thirds of the certificate's lifetime the agent
//! sends a new CSR (new key) authenticated by its current certificate and switches to the new
//! one; [`NodeCerts::generation`] tells connections to reconnect.
//!
//! Files in the directory (0600): `ca.crt`, `node.crt`, `node.key`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{AgentError, IoContext, Result};

/// Where nodes send CSRs (kapsel-apiserver's `security::NODE_CSR_PATH`).
pub const NODE_CSR_PATH: &str = "/kapsel/v1/nodecsr";

fn cfg_err(e: impl std::fmt::Display) -> AgentError {
    AgentError::InvalidConfig(e.to_string())
}

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// `sha256:<hex>` of the CA certificate's DER.
    pub ca_hash: String,
    /// `ID.SECRET`, the bearer token.
    pub token: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .finish_non_exhaustive()
    }
}

/// Parse `K10<64 hex>::ID.SECRET`.
pub fn parse_join_token(s: &str) -> Result<JoinToken> {
    let bad = || {
        AgentError::InvalidConfig(
            "the join token must look like K10<CA hash>::<id>.<secret> (the server's \
             DATA_DIR/server/node-token, or `kapsel token create`)"
                .into(),
        )
    };
    let rest = s.trim().strip_prefix("K10").ok_or_else(bad)?;
    let (hash, token) = rest.split_once("::").ok_or_else(bad)?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let (id, secret) = token.split_once('.').ok_or_else(bad)?;
    if id.is_empty() || secret.is_empty() {
        return Err(bad());
    }
    Ok(JoinToken {
        ca_hash: format!("sha256:{}", hash.to_lowercase()),
        token: token.to_string(),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn first_cert_der(pem: &str) -> Result<Vec<u8>> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| cfg_err(format!("the server's CA is not a PEM certificate: {e}")))?;
    Ok(p.contents)
}

/// Refuse a CA whose hash is not `pin`.
pub fn verify_pin(ca_pem: &str, pin: &str) -> Result<()> {
    let got = format!("sha256:{}", hex(&Sha256::digest(first_cert_der(ca_pem)?)));
    if got.eq_ignore_ascii_case(pin) {
        Ok(())
    } else {
        Err(AgentError::InvalidConfig(format!(
            "the server's CA does not match the join token: pinned {pin}, server has {got}; \
             refusing to join"
        )))
    }
}

/// Validity of a PEM certificate: (not before, not after), seconds since the epoch.
pub fn validity(cert_pem: &str) -> Result<(i64, i64)> {
    let der = first_cert_der(cert_pem)?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).map_err(cfg_err)?;
    Ok((
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    ))
}

/// When to renew a certificate valid from `nb` to `na`: at two thirds of its lifetime.
pub fn renew_at(nb: i64, na: i64) -> i64 {
    nb + (na - nb).max(0) * 2 / 3
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A new key and a CSR for it (PEM). The signer decides the subject.
fn new_csr(node: &str) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate().map_err(cfg_err)?;
    let mut p = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    p.distinguished_name = dn;
    let csr = p.serialize_request(&key).map_err(cfg_err)?;
    Ok((csr.pem().map_err(cfg_err)?, key.serialize_pem()))
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CsrRequest<'a> {
    node_name: &'a str,
    csr: &'a str,
}

#[derive(serde::Deserialize)]
struct CsrResponse {
    certificate: String,
    ca: String,
}

fn write_private(path: &Path, data: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .ctx(|| format!("writing {}", tmp.display()))?;
    f.write_all(data.as_bytes())
        .and_then(|()| f.sync_all())
        .ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("writing {}", path.display()))
}

fn http_err(e: reqwest::Error) -> AgentError {
    AgentError::Connect(format!("{e}"))
}

async fn post_csr(
    http: &reqwest::Client,
    server: &str,
    node: &str,
    csr: &str,
) -> Result<CsrResponse> {
    let url = format!("{}{NODE_CSR_PATH}", server.trim_end_matches('/'));
    let resp = http
        .post(url)
        .json(&CsrRequest {
            node_name: node,
            csr,
        })
        .send()
        .await
        .map_err(http_err)?;
    let code = resp.status();
    if !code.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or(body);
        return Err(AgentError::Control(format!(
            "the server refused the node certificate request ({code}): {msg}"
        )));
    }
    resp.json().await.map_err(http_err)
}

/// REST clients built with the node's certificates switch to a renewed one by themselves.
impl kapsel_api::client::IdentitySource for NodeCerts {
    fn generation(&self) -> u64 {
        NodeCerts::generation(self)
    }
    fn identity_pem(&self) -> Vec<u8> {
        let (cert, key) = self.identity();
        format!("{cert}\n{key}").into_bytes()
    }
}

/// The node's certificates (see the module docs).
pub struct NodeCerts {
    server: String,
    node: String,
    dir: PathBuf,
    ca_pem: String,
    /// (certificate, key), PEM.
    current: RwLock<(String, String)>,
    generation: AtomicU64,
}

impl std::fmt::Debug for NodeCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCerts")
            .field("node", &self.node)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl NodeCerts {
    /// Certificates obtained some other way (the in-process agent of `kapsel server`, whose CA
    /// issues them directly); written to `dir`.
    pub fn from_parts(
        server: &str,
        node: &str,
        dir: &Path,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Arc<Self>> {
        write_private(&dir.join("ca.crt"), ca_pem)?;
        write_private(&dir.join("node.key"), key_pem)?;
        write_private(&dir.join("node.crt"), cert_pem)?;
        Ok(Arc::new(NodeCerts {
            server: server.trim_end_matches('/').to_string(),
            node: node.into(),
            dir: dir.into(),
            ca_pem: ca_pem.into(),
            current: RwLock::new((cert_pem.into(), key_pem.into())),
            generation: AtomicU64::new(0),
        }))
    }

    /// The certificates in `dir`, if there are some still valid for this node.
    pub fn load(server: &str, node: &str, dir: &Path) -> Result<Option<Arc<Self>>> {
        let read = |f: &str| match std::fs::read_to_string(dir.join(f)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx(|| format!("reading {}", dir.join(f).display())),
        };
        let (Some(ca), Some(cert), Some(key)) =
            (read("ca.crt")?, read("node.crt")?, read("node.key")?)
        else {
            return Ok(None);
        };
        let (_, na) = validity(&cert)?;
        if na <= now() {
            tracing::warn!(dir = %dir.display(), "the node certificate has expired; joining again");
            return Ok(None);
        }
        Ok(Some(Arc::new(NodeCerts {
            server: server.trim_end_matches('/').to_string(),
            node: node.into(),
            dir: dir.into(),
            ca_pem: ca,
            current: RwLock::new((cert, key)),
            generation: AtomicU64::new(0),
        })))
    }

    /// Join with `token` (see the module docs).
    pub async fn join(server: &str, node: &str, dir: &Path, token: &str) -> Result<Arc<Self>> {
        let join = parse_join_token(token)?;
        let server = server.trim_end_matches('/');
        // Unverified on purpose: the pin below is what makes this CA trusted.
        let insecure = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(http_err)?;
        let ca_pem = insecure
            .get(format!("{server}/cacerts"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(http_err)?
            .text()
            .await
            .map_err(http_err)?;
        verify_pin(&ca_pem, &join.ca_hash)?;
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(cfg_err)?,
            )
            .timeout(Duration::from_secs(15))
            .default_headers({
                let mut h = reqwest::header::HeaderMap::new();
                let v = format!("Bearer {}", join.token).parse().map_err(cfg_err)?;
                h.insert(reqwest::header::AUTHORIZATION, v);
                h
            })
            .build()
            .map_err(http_err)?;
        let (csr, key) = new_csr(node)?;
        let resp = post_csr(&http, server, node, &csr).await?;
        tracing::info!(node, server, "joined: got a node certificate");
        Self::from_parts(server, node, dir, &ca_pem, &resp.certificate, &key)
    }

    /// [`NodeCerts::load`], else [`NodeCerts::join`] with `token`.
    pub async fn load_or_join(
        server: &str,
        node: &str,
        dir: &Path,
        token: Option<&str>,
    ) -> Result<Arc<Self>> {
        if let Some(c) = Self::load(server, node, dir)? {
            return Ok(c);
        }
        let token = token.ok_or_else(|| {
            AgentError::InvalidConfig(format!(
                "no node certificate in {} and no join token (--token)",
                dir.display()
            ))
        })?;
        Self::join(server, node, dir, token).await
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// (certificate, key), PEM.
    pub fn identity(&self) -> (String, String) {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Bumped on every renewal: connections made before use the old certificate.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// An HTTP client with the CA and the current identity.
    fn mtls_client(&self) -> Result<reqwest::Client> {
        let (cert, key) = self.identity();
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).map_err(cfg_err)?,
            )
            .identity(
                reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes())
                    .map_err(cfg_err)?,
            )
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(http_err)
    }

    /// Get a new certificate (new key) with the current one, store it, switch to it.
    pub async fn renew(&self) -> Result<()> {
        let (csr, key) = new_csr(&self.node)?;
        let resp = post_csr(&self.mtls_client()?, &self.server, &self.node, &csr).await?;
        let _ = resp.ca;
        write_private(&self.dir.join("node.key.new"), &key)?;
        write_private(&self.dir.join("node.crt"), &resp.certificate)?;
        std::fs::rename(self.dir.join("node.key.new"), self.dir.join("node.key"))
            .ctx(|| format!("writing {}", self.dir.join("node.key").display()))?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (resp.certificate, key);
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Renew before expiry, forever.
    pub async fn run_renewal(self: Arc<Self>) {
        loop {
            let (cert, _) = self.identity();
            let (nb, na) = match validity(&cert) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the node certificate");
                    return;
                }
            };
            let wait = (renew_at(nb, na) - now()).max(0);
            tokio::time::sleep(Duration::from_secs(u64::try_from(wait).unwrap_or(0))).await;
            match self.renew().await {
                Ok(()) => {
                    let (c, _) = self.identity();
                    let v = validity(&c).map(|v| v.1).unwrap_or_default();
                    tracing::info!(node = %self.node, not_after = v, "renewed the node certificate");
                }
                Err(e) => {
                    let left = (na - now()).max(1);
                    let retry = (left / 10).clamp(1, 30);
                    tracing::warn!(error = %e, retry_s = retry, "renewing the node certificate");
                    tokio::time::sleep(Duration::from_secs(u64::try_from(retry).unwrap_or(1)))
                        .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_and_renewal_times() {
        let h = "ab".repeat(32);
        let t = parse_join_token(&format!("K10{h}::abcdef.0123456789abcdef")).unwrap();
        assert_eq!(t.ca_hash, format!("sha256:{h}"));
        assert_eq!(t.token, "abcdef.0123456789abcdef");
        for bad in [
            "abcdef.0123456789abcdef",
            "K10ab::abcdef.0123456789abcdef",
            &format!("K10{h}::"),
            &format!("K10{h}abcdef.0123456789abcdef"),
        ] {
            assert!(parse_join_token(bad).is_err(), "{bad}");
        }
        for (nb, na, want) in [
            (0, 30, 20),
            (100, 100, 100),
            (10, 5, 10),
            (0, 365 * 86400, 243 * 86400 + 8 * 3600),
        ] {
            assert_eq!(renew_at(nb, na), want, "{nb}..{na}");
        }
    }

    #[test]
    fn pins_compare_the_ca_hash() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pin = format!("sha256:{}", hex(&Sha256::digest(cert.der())));
        verify_pin(&cert.pem(), &pin).unwrap();
        verify_pin(&cert.pem(), &pin.to_uppercase().replace("SHA256", "sha256")).unwrap();
        let e = verify_pin(&cert.pem(), &format!("sha256:{}", "00".repeat(32))).unwrap_err();
        assert!(e.to_string().contains("refusing to join"), "{e}");
        assert!(verify_pin("not pem", &pin).is_err());
    }
}
