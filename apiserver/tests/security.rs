//! The secure server over real TLS on loopback: no credentials → 401 on every resource path
//! (iterating discovery), bad and expired tokens → 401, static token file, user tokens,
//! client certificates (CN/O) from the cluster CA and not from another CA, and the node CSR
//! endpoint with valid, revoked and expired join tokens.

use std::path::PathBuf;
use std::time::Duration;

use kapsel_apiserver::auth::{self, JoinToken};
use kapsel_apiserver::security::{SecurityConfig, NODE_CSR_PATH};
use kapsel_apiserver::server::{prepare, run};
use kapsel_apiserver::tls::{self, Ca};
use kapsel_apiserver::ServerConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::oneshot;

struct Secure {
    url: String,
    dir: tempfile::TempDir,
    ca_pem: String,
    admin_token: String,
    node_token: JoinToken,
    _stop: oneshot::Sender<()>,
}

impl Secure {
    fn pki(&self) -> PathBuf {
        self.dir.path().join("auth/pki")
    }

    /// A client trusting the cluster CA; `identity`: client certificate + key (PEM).
    fn http(&self, identity: Option<&str>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(10));
        if let Some(id) = identity {
            b = b.identity(reqwest::Identity::from_pem(id.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut rb = self.http(None).get(format!("{}{path}", self.url));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.unwrap();
        let code = r.status();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    async fn create_secret(&self, obj: &Value) {
        let r = self
            .http(None)
            .post(format!(
                "{}/api/v1/namespaces/kube-system/secrets",
                self.url
            ))
            .bearer_auth(&self.admin_token)
            .json(obj)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    }
}

async fn start(token_file: Option<&str>, node_cert_ttl: Duration) -> Secure {
    start_with(token_file, node_cert_ttl, |_| {}).await
}

async fn start_with(
    token_file: Option<&str>,
    node_cert_ttl: Duration,
    adjust: impl FnOnce(&mut ServerConfig),
) -> Secure {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = ServerConfig::new(dir.path().join("db"), addr);
    let mut sec = SecurityConfig::in_dir(&dir.path().join("auth"));
    if let Some(text) = token_file {
        let p = dir.path().join("tokens.csv");
        std::fs::write(&p, text).unwrap();
        sec.token_auth_file = Some(p);
    }
    sec.node_cert_ttl = node_cert_ttl;
    cfg.security = Some(sec);
    adjust(&mut cfg);
    let prepared = prepare(&cfg).await.expect("secure server starts");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(run(prepared, listener, async move {
        let _ = rx.await;
    }));
    let read = |f: &str| {
        std::fs::read_to_string(dir.path().join("auth").join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    let ca_pem = read("pki/ca.crt");
    let node_token = JoinToken::parse(&read("node-token")).unwrap();
    Secure {
        url: format!("https://127.0.0.1:{}", addr.port()),
        admin_token: read("admin-token"),
        ca_pem,
        node_token,
        dir,
        _stop: tx,
    }
}

/// Every resource path of discovery (collections, cluster-wide and in a namespace).
async fn resource_paths(s: &Secure) -> Vec<String> {
    let mut gvs = vec!["/api/v1".to_string()];
    let (code, groups) = s.get("/apis", Some(&s.admin_token)).await;
    assert_eq!(code, StatusCode::OK);
    for g in groups["groups"].as_array().unwrap() {
        for v in g["versions"].as_array().unwrap() {
            gvs.push(format!("/apis/{}", v["groupVersion"].as_str().unwrap()));
        }
    }
    let mut paths = Vec::new();
    for gv in gvs {
        let (code, list) = s.get(&gv, Some(&s.admin_token)).await;
        assert_eq!(code, StatusCode::OK, "{gv}");
        for r in list["resources"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            if name.contains('/') {
                continue;
            }
            paths.push(format!("{gv}/{name}"));
            if r["namespaced"].as_bool() == Some(true) {
                paths.push(format!("{gv}/namespaces/default/{name}"));
                paths.push(format!("{gv}/namespaces/default/{name}/x"));
            } else {
                paths.push(format!("{gv}/{name}/x"));
            }
        }
    }
    assert!(paths.len() > 20, "discovery lists the resources: {paths:?}");
    paths
}

fn assert_401(code: StatusCode, body: &Value, what: &str) {
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert_eq!(body["kind"], "Status", "{what}: {body}");
    assert_eq!(body["reason"], "Unauthorized", "{what}: {body}");
    assert_eq!(body["code"], 401, "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_path_wants_credentials() {
    let s = start(None, Duration::from_secs(3600)).await;
    let paths = resource_paths(&s).await;
    let http = s.http(None);
    for p in &paths {
        for (method, token) in [
            (reqwest::Method::GET, None),
            (reqwest::Method::POST, None),
            (reqwest::Method::DELETE, None),
            (reqwest::Method::GET, Some("abcdef.0123456789abcdef")),
            (reqwest::Method::GET, Some("not-a-token")),
            (reqwest::Method::GET, Some("")),
        ] {
            let mut rb = http.request(method.clone(), format!("{}{p}", s.url));
            if let Some(t) = token {
                rb = rb.header("authorization", format!("Bearer {t}"));
            }
            if method == reqwest::Method::POST {
                rb = rb.json(
                    &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
                );
            }
            let r = rb.send().await.unwrap();
            let code = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_401(code, &body, &format!("{method} {p} token {token:?}"));
        }
    }
    // Discovery and the other API paths too; health, version and the CA bundle are public.
    for p in [
        "/api",
        "/apis",
        "/api/v1",
        "/openapi/v2",
        "/nope",
        "/kapsel/v1/nodecsr",
    ] {
        let (code, body) = s.get(p, None).await;
        assert_401(code, &body, p);
    }
    for p in ["/healthz", "/readyz", "/livez", "/version", "/cacerts"] {
        let r = http.get(format!("{}{p}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{p} is public");
    }
    // The admin token works everywhere the 401s were.
    let (code, _) = s
        .get(
            "/api/v1/namespaces/default/configmaps",
            Some(&s.admin_token),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    // Plain HTTP on the TLS port gets nothing.
    let plain = reqwest::Client::new()
        .get(s.url.replace("https://", "http://") + "/api/v1/pods")
        .send()
        .await;
    assert!(
        plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true),
        "no plain HTTP on the TLS listener"
    );
    println!("{} resource paths x 6 requests: all 401", paths.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_file_and_the_store_expire_and_revoke() {
    let s = start(
        Some("# static tokens\nfile-admin-token,fran,1,\"system:masters\"\nfile-plain,paul,2\n"),
        Duration::from_secs(3600),
    )
    .await;
    let pods = "/api/v1/namespaces/default/pods";
    let (code, _) = s.get(pods, Some("file-admin-token")).await;
    assert_eq!(code, StatusCode::OK, "token file user in system:masters");
    let (code, body) = s.get(pods, Some("file-admin-tokenX")).await;
    assert_401(code, &body, "a near miss of a file token");
    let (code, _) = s.get(pods, Some("file-plain")).await;
    assert_ne!(code, StatusCode::UNAUTHORIZED, "paul is authenticated");

    // User tokens in the store: valid, expired, revoked.
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    let masters = vec!["system:masters".to_string()];
    let good = auth::new_token();
    let old = auth::new_token();
    s.create_secret(
        &auth::token_secret(&good, Some(("alice", &masters)), Some(&future), "").unwrap(),
    )
    .await;
    s.create_secret(&auth::token_secret(&old, Some(("bob", &masters)), Some(&past), "").unwrap())
        .await;
    let (code, _) = s.get(pods, Some(&good)).await;
    assert_eq!(code, StatusCode::OK, "a valid user token");
    let (code, body) = s.get(pods, Some(&old)).await;
    assert_401(code, &body, "an expired user token");
    let wrong = format!("{}.{}", &good[..6], "0000000000000000");
    let (code, body) = s.get(pods, Some(&wrong)).await;
    assert_401(code, &body, "a user token with the wrong secret");
    // The stored Secret holds only a hash.
    let (_, sec) = s
        .get(
            &format!(
                "/api/v1/namespaces/kube-system/secrets/kapsel-token-{}",
                &good[..6]
            ),
            Some(&s.admin_token),
        )
        .await;
    assert!(!sec.to_string().contains(&good[7..]), "{sec}");
    let r = s
        .http(None)
        .delete(format!(
            "{}/api/v1/namespaces/kube-system/secrets/kapsel-token-{}",
            s.url,
            &good[..6]
        ))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (code, body) = s.get(pods, Some(&good)).await;
    assert_401(code, &body, "a revoked user token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_of_the_cluster_ca_only() {
    let s = start(None, Duration::from_secs(3600)).await;
    let ca = Ca::load_or_create(&s.pki()).unwrap();
    let ck = ca
        .issue_client(
            "carol",
            &["system:masters".to_string()],
            Duration::from_secs(600),
        )
        .unwrap();
    let id = format!("{}\n{}", ck.cert_pem, ck.key_pem);
    let r = s
        .http(Some(&id))
        .get(format!("{}/api/v1/namespaces", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a CA-signed client certificate");

    // Another CA's certificate with the same subject: the handshake fails.
    let other = Ca::generate("other").unwrap();
    let ck = other
        .issue_client(
            "carol",
            &["system:masters".to_string()],
            Duration::from_secs(600),
        )
        .unwrap();
    let r = s
        .http(Some(&format!("{}\n{}", ck.cert_pem, ck.key_pem)))
        .get(format!("{}/api/v1/namespaces", s.url))
        .send()
        .await;
    assert!(r.is_err(), "another CA's certificate is refused: {r:?}");

    // An expired certificate of the right CA: refused as well.
    let ck = ca
        .issue_client("dave", &[], Duration::from_secs(1))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = s
        .http(Some(&format!("{}\n{}", ck.cert_pem, ck.key_pem)))
        .get(format!("{}/api/v1/namespaces", s.url))
        .send()
        .await;
    match r {
        Err(_) => {}
        Ok(r) => assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "expired certificate"),
    }

    // The server's certificate is the CA's (the pin of the join token matches).
    assert_eq!(s.node_token.ca_hash, ca.hash());
    let served = tls::pem_certs(s.ca_pem.as_bytes()).unwrap();
    assert_eq!(tls::ca_hash(&served[0]), ca.hash());
}

async fn post_csr(
    s: &Secure,
    token: Option<&str>,
    identity: Option<&str>,
    node: &str,
) -> (StatusCode, Value) {
    let (csr, _key) = tls::new_csr("ignored").unwrap();
    let mut rb = s
        .http(identity)
        .post(format!("{}{NODE_CSR_PATH}", s.url))
        .json(&json!({"nodeName": node, "csr": csr}));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    let code = r.status();
    (code, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_need_a_live_join_token() {
    let s = start(None, Duration::from_secs(5)).await;
    // The default join token: a certificate for system:node:n1 in system:nodes, 5 s.
    let (code, body) = post_csr(&s, Some(&s.node_token.token), None, "n1").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let cert = body["certificate"].as_str().unwrap();
    let id = tls::pem_identity(cert).unwrap();
    assert_eq!(id.user, "system:node:n1");
    assert_eq!(id.groups, vec!["system:nodes".to_string()]);
    assert!(id.not_after - chrono::Utc::now().timestamp() <= 6, "{id:?}");
    assert_eq!(body["ca"].as_str().unwrap().trim(), s.ca_pem.trim());

    // Renewal: the node's own certificate may renew itself, not another node.
    let ca = Ca::load_or_create(&s.pki()).unwrap();
    let n1 = ca
        .issue_client(
            "system:node:n1",
            &["system:nodes".to_string()],
            Duration::from_secs(60),
        )
        .unwrap();
    let n1_id = format!("{}\n{}", n1.cert_pem, n1.key_pem);
    let (code, body) = post_csr(&s, None, Some(&n1_id), "n1").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = post_csr(&s, None, Some(&n1_id), "n2").await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");

    // Expired and revoked join tokens, a token that is not a join token: refused.
    let past = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    let expired = auth::new_token();
    s.create_secret(&auth::token_secret(&expired, None, Some(&past), "").unwrap())
        .await;
    let (code, body) = post_csr(&s, Some(&expired), None, "n3").await;
    assert_401(code, &body, "expired join token");
    let revoked = auth::new_token();
    s.create_secret(&auth::token_secret(&revoked, None, None, "").unwrap())
        .await;
    let (code, _) = post_csr(&s, Some(&revoked), None, "n4").await;
    assert_eq!(code, StatusCode::OK, "before revocation");
    let r = s
        .http(None)
        .delete(format!(
            "{}/api/v1/namespaces/kube-system/secrets/bootstrap-token-{}",
            s.url,
            &revoked[..6]
        ))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (code, body) = post_csr(&s, Some(&revoked), None, "n4").await;
    assert_401(code, &body, "revoked join token");
    let (code, body) = post_csr(&s, None, None, "n5").await;
    assert_401(code, &body, "no token");
    // Bad input: a 400 Status, not a certificate.
    let (code, body) = post_csr(&s, Some(&s.node_token.token), None, "Not_A_Name").await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let r = s
        .http(None)
        .post(format!("{}{NODE_CSR_PATH}", s.url))
        .bearer_auth(&s.node_token.token)
        .json(&json!({"nodeName": "n6", "csr": "garbage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// A TLS connection to the server trusting the cluster CA, no client certificate.
async fn tls_connect(s: &Secure) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in tls::pem_certs(s.ca_pem.as_bytes()).unwrap() {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = s.url.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// Read until the server closes the connection (EOF or reset), at most `limit`; when it did.
async fn closed_within<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    limit: Duration,
) -> Option<std::time::Instant> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    tokio::time::timeout(limit, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| std::time::Instant::now())
}

/// Slowloris clients (TCP but never a TLS handshake; a handshake and then half a request
/// header) fill the connection cap: connections beyond it are closed at once, the admin's
/// open connection keeps being answered, and the slow ones are closed after the handshake
/// and header timeouts, after which new clients get in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_dropped_and_the_connection_cap_holds() {
    use tokio::io::AsyncWriteExt;
    const CAP: usize = 40;
    const SLOW: Duration = Duration::from_secs(8);
    let s = start_with(None, Duration::from_secs(3600), |c| {
        c.guards.connections = kapsel_apiserver::accept::ConnLimits {
            handshake_timeout: SLOW,
            header_read_timeout: SLOW,
            max_connections: CAP,
        };
    })
    .await;
    let admin = s.http(None);
    let list = |c: &reqwest::Client| {
        c.get(format!("{}/api/v1/namespaces/default/pods", s.url))
            .bearer_auth(&s.admin_token)
            .send()
    };
    // The admin's connection is open (keep-alive) before the flood: one of CAP.
    assert_eq!(list(&admin).await.unwrap().status(), StatusCode::OK);

    let started = std::time::Instant::now();
    let addr = s.url.trim_start_matches("https://").to_string();
    let mut no_handshake = Vec::new();
    let mut half_header = Vec::new();
    for i in 0..CAP - 1 {
        if i % 2 == 0 {
            let mut t = tls_connect(&s).await;
            t.write_all(b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            t.flush().await.unwrap();
            half_header.push(t);
        } else {
            no_handshake.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
        }
    }
    // Let the accept loop take the last of them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Beyond the cap: closed at once.
    let mut extra = Vec::new();
    for _ in 0..10 {
        extra.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    for (i, c) in extra.iter_mut().enumerate() {
        let took = closed_within(c, Duration::from_secs(3)).await;
        assert!(
            took.is_some(),
            "connection {i} over the cap was not closed quickly"
        );
    }
    assert!(
        started.elapsed() < SLOW,
        "the flood took too long to be a test of the cap"
    );
    // The admin's open connection is still answered while the cap is full.
    assert_eq!(list(&admin).await.unwrap().status(), StatusCode::OK);

    // The slow ones are closed after their timeouts (not before).
    for (what, took) in futures::future::join_all(
        no_handshake
            .iter_mut()
            .map(|c| closed_within(c, Duration::from_secs(30))),
    )
    .await
    .into_iter()
    .map(|t| ("no TLS handshake", t))
    .chain(
        futures::future::join_all(
            half_header
                .iter_mut()
                .map(|c| closed_within(c, Duration::from_secs(30))),
        )
        .await
        .into_iter()
        .map(|t| ("half a request header", t)),
    ) {
        let at = took.unwrap_or_else(|| panic!("a client with {what} was never closed"));
        let after = at - started;
        assert!(
            after >= SLOW - Duration::from_millis(100),
            "{what}: closed {after:?} after the flood began, before its timeout"
        );
    }
    // Room again: a new client gets in.
    let fresh = s.http(None);
    assert_eq!(list(&fresh).await.unwrap().status(), StatusCode::OK);
}
