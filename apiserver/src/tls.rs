//! The cluster PKI: a cluster CA created on first start, the API server's serving certificate
//! (SANs: localhost, the hostname, the machine's addresses and `--tls-san`), client
//! certificates for users and nodes (CN = user, O = groups) issued directly or from a CSR whose
//! key never leaves its owner, and the rustls configurations of both ends.
//!
//! Files in the PKI directory (all 0600): `ca.crt`, `ca.key`, `serving.crt`, `serving.key`.
//! The serving certificate is re-issued on every start, so a new `--tls-san` or address takes
//! effect with a restart; the CA lives for ten years.
//!
//! The CA's pin (what join tokens carry, like `kubeadm join --discovery-token-ca-cert-hash`)
//! is `sha256:` + the hex SHA-256 of the CA certificate's DER ([`ca_hash`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Errors of the PKI.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Cert(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn cert_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Cert(e.to_string())
}

/// How long the cluster CA is valid.
const CA_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the serving certificate is valid (re-issued on every start).
const SERVING_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates are valid from a little before they are issued (clock skew between nodes).
const BACKDATE: Duration = Duration::from_secs(60);

/// The crypto provider of every rustls configuration here (ring, as reqwest's).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `sha256:<hex>` of a DER certificate: the CA pin of join tokens.
pub fn ca_hash(der: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(der)))
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The DER certificates of a PEM bundle.
pub fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_err)?;
    if certs.is_empty() {
        return Err(TlsError::Cert("no certificate in PEM data".into()));
    }
    Ok(certs)
}

fn pem_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem).map_err(cert_err)
}

fn offset(t: std::time::SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

fn random_serial() -> SerialNumber {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

fn read(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io {
            path: path.into(),
            source,
        }),
    }
}

/// Write a file readable by its owner only, atomically.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Io {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey").finish_non_exhaustive()
    }
}

/// The cluster CA.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("hash", &self.hash())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA (in memory).
    pub fn generate(common_name: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = std::time::SystemTime::now();
        p.not_before = offset(now - BACKDATE);
        p.not_after = offset(now + CA_TTL);
        p.serial_number = Some(random_serial());
        let cert = p.self_signed(&key).map_err(cert_err)?;
        let cert_pem = cert.pem();
        Self::from_pem(&cert_pem, &key.serialize_pem())
    }

    /// A CA from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_err)?;
        let cert_der = pem_certs(cert_pem.as_bytes())?.remove(0);
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(cert_err)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
        })
    }

    /// `DIR/ca.crt` and `DIR/ca.key`, created on first use.
    pub fn load_or_create(dir: &Path) -> Result<Ca, TlsError> {
        let (cp, kp) = (dir.join("ca.crt"), dir.join("ca.key"));
        if let (Some(c), Some(k)) = (read(&cp)?, read(&kp)?) {
            return Ca::from_pem(&c, &k);
        }
        let ca = Ca::generate("kapsel-ca")?;
        write_private(&kp, ca.issuer.key().serialize_pem().as_bytes())?;
        write_private(&cp, ca.cert_pem.as_bytes())?;
        tracing::info!(dir = %dir.display(), hash = %ca.hash(), "created the cluster CA");
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The pin of join tokens (`sha256:…`).
    pub fn hash(&self) -> String {
        ca_hash(&self.cert_der)
    }

    fn leaf_params(ttl: Duration) -> CertificateParams {
        let mut p = CertificateParams::default();
        let now = std::time::SystemTime::now();
        p.not_before = offset(now - BACKDATE.min(ttl / 10));
        p.not_after = offset(now + ttl);
        p.serial_number = Some(random_serial());
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p
    }

    fn client_params(user: &str, groups: &[String], ttl: Duration) -> CertificateParams {
        let mut p = Self::leaf_params(ttl);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, user);
        for g in groups {
            dn.push(DnType::OrganizationName, g.as_str());
        }
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p
    }

    /// The API server's certificate for `sans` (DNS names or IP addresses).
    pub fn issue_serving(&self, sans: &[String]) -> Result<CertKey, TlsError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut p = Self::leaf_params(SERVING_TTL);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kapsel-apiserver");
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for s in sans {
            let san = match s.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(s.as_str().try_into().map_err(cert_err)?),
            };
            if !p.subject_alt_names.contains(&san) {
                p.subject_alt_names.push(san);
            }
        }
        let cert = p.signed_by(&key, &self.issuer).map_err(cert_err)?;
        Ok(CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate and a new key for `user` in `groups` (the CA's own users: the
    /// in-process agent, tests). Remote nodes use [`Ca::sign_csr`], keeping their key.
    pub fn issue_client(
        &self,
        user: &str,
        groups: &[String],
        ttl: Duration,
    ) -> Result<CertKey, TlsError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = Self::client_params(user, groups, ttl)
            .signed_by(&key, &self.issuer)
            .map_err(cert_err)?;
        Ok(CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Sign the public key of a PEM CSR (its signature verified) as a client certificate for
    /// `user` in `groups`. The subject the CSR asks for is ignored: the caller decides.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        user: &str,
        groups: &[String],
        ttl: Duration,
    ) -> Result<String, TlsError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| TlsError::Cert(format!("invalid CSR: {e}")))?;
        let cert = Self::client_params(user, groups, ttl)
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(cert_err)?;
        Ok(cert.pem())
    }
}

/// A new key and a PEM CSR for it (the subject is decided by the signer).
pub fn new_csr(common_name: &str) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    let csr = p.serialize_request(&key).map_err(cert_err)?;
    Ok((csr.pem().map_err(cert_err)?, key.serialize_pem()))
}

/// The names and addresses the serving certificate covers: `localhost`, the hostname, the
/// loopback and local interface addresses, the listen address, and `extra` (`--tls-san`).
pub fn default_sans(listen: std::net::SocketAddr, extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_lowercase();
        if !h.is_empty() {
            v.push(h);
        }
    }
    if !listen.ip().is_unspecified() {
        v.push(listen.ip().to_string());
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            if let Some(s) = sa.as_sockaddr_in() {
                v.push(IpAddr::V4(s.ip()).to_string());
            } else if let Some(s) = sa.as_sockaddr_in6() {
                let ip = s.ip();
                // Link-local addresses need a zone; they are no use in a certificate.
                if ip.segments()[0] & 0xffc0 != 0xfe80 {
                    v.push(IpAddr::V6(ip).to_string());
                }
            }
        }
    }
    v.extend(extra.iter().map(|s| s.trim().to_string()));
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| !s.is_empty() && seen.insert(s.clone()));
    v
}

/// The PKI of a server: the CA and the serving certificate, written to `dir`.
pub struct ServerPki {
    pub ca: Arc<Ca>,
    pub serving: CertKey,
    pub dir: PathBuf,
}

impl ServerPki {
    /// Load (or create) the CA in `dir` and issue a serving certificate for `sans`.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<ServerPki, TlsError> {
        let ca = Ca::load_or_create(dir)?;
        let serving = ca.issue_serving(sans)?;
        write_private(&dir.join("serving.key"), serving.key_pem.as_bytes())?;
        write_private(&dir.join("serving.crt"), serving.cert_pem.as_bytes())?;
        Ok(ServerPki {
            ca: Arc::new(ca),
            serving,
            dir: dir.into(),
        })
    }

    /// The server's rustls configuration: HTTP/2 and HTTP/1.1, client certificates optional
    /// but, when presented, verified against the cluster CA.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.cert_der().clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Cert(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                pem_certs(self.serving.cert_pem.as_bytes())?,
                pem_key(self.serving.key_pem.as_bytes())?,
            )?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// What a client certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIdentity {
    /// CN.
    pub user: String,
    /// O (every one).
    pub groups: Vec<String>,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// Hex serial number.
    pub serial: String,
}

/// Read the subject and validity of a DER certificate (its signature is checked by rustls
/// during the handshake, not here).
pub fn cert_identity(der: &[u8]) -> Result<CertIdentity, TlsError> {
    let (_, c) = x509_parser::parse_x509_certificate(der).map_err(cert_err)?;
    let subject = c.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    Ok(CertIdentity {
        user,
        groups,
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        serial: c.raw_serial_as_string().replace(':', ""),
    })
}

/// [`cert_identity`] of the first certificate of a PEM bundle.
pub fn pem_identity(pem: &str) -> Result<CertIdentity, TlsError> {
    cert_identity(&pem_certs(pem.as_bytes())?[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_issues_client_certificates_from_csrs_with_the_signers_subject() {
        let ca = Ca::generate("test-ca").unwrap();
        let (csr, _key) = new_csr("whatever-the-node-asks").unwrap();
        let groups = vec!["system:nodes".to_string()];
        let pem = ca
            .sign_csr(&csr, "system:node:n1", &groups, Duration::from_secs(60))
            .unwrap();
        let id = pem_identity(&pem).unwrap();
        assert_eq!(id.user, "system:node:n1");
        assert_eq!(id.groups, groups);
        assert!(id.not_after - id.not_before <= 120, "{id:?}");
        assert!(ca
            .sign_csr("garbage", "u", &[], Duration::from_secs(1))
            .is_err());
        // The CA reloads from its PEM files with the same pin.
        let dir = tempfile::tempdir().unwrap();
        let a = Ca::load_or_create(dir.path()).unwrap();
        let b = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), ca.hash());
        assert!(a.hash().starts_with("sha256:") && a.hash().len() == 7 + 64);
    }

    #[test]
    fn sans_cover_loopback_and_extras_once() {
        let s = default_sans(
            "0.0.0.0:6443".parse().unwrap(),
            &["kapsel.example".into(), "127.0.0.1".into(), " ".into()],
        );
        assert!(s.contains(&"localhost".to_string()));
        assert!(s.contains(&"kapsel.example".to_string()));
        assert_eq!(s.iter().filter(|x| *x == "127.0.0.1").count(), 1);
        assert!(!s.iter().any(|x| x.trim().is_empty()));
    }
}
