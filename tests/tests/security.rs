//! Secure by default, end to end with the real binaries: `kapsel` works against the HTTPS
//! server with the client config it wrote; agents join only with a live join token whose CA
//! pin matches, and renew their certificate before it expires (short test TTL), going on
//! with the new one after the old one has expired.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kapsel_api::client::Api;
use kapsel_api::Lease;
use kapsel_tests::*;

fn spawn_agent(server: &Server, dir: &Path, name: &str, token: &str) -> Proc {
    let mut cmd = Command::new(binary("kapsel"));
    cmd.arg("agent")
        .args(["--server", &server.url, "--token", token])
        .args(["--hollow", "--node-name", name])
        .arg("--data-dir")
        .arg(dir.join(name))
        .env("RUST_LOG", "info");
    Proc::spawn(name, cmd, dir.join(format!("{name}.log")))
}

/// Wait for the agent to give up; returns its log.
fn refused(mut p: Proc, why: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.alive() {
        assert!(
            Instant::now() < deadline,
            "agent with {why} still running:\n{}",
            p.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = p.child.take().and_then(|mut c| c.wait().ok());
    assert!(
        st.is_some_and(|s| !s.success()),
        "agent with {why} exits non-zero"
    );
    p.log_tail(30)
}

/// Certificate validity (not before, not after) and the PEM.
fn cert_of(path: &Path) -> (i64, i64, String) {
    let pem = std::fs::read_to_string(path).expect("node certificate");
    let id = kapsel_apiserver::tls::pem_identity(&pem).expect("valid PEM");
    assert_eq!(
        id.user,
        format!(
            "system:node:{}",
            path.iter().rev().nth(3).unwrap().to_string_lossy()
        )
    );
    assert_eq!(id.groups, vec!["system:nodes".to_string()]);
    (id.not_before, id.not_after, pem)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_pins_the_ca_refuses_dead_tokens_and_renews_certificates() {
    let dir = tempdir("kt-sec-join-");
    let server = Server::start(
        dir.path(),
        &ServerOpts {
            no_agent: true,
            extra: vec!["--node-cert-ttl".into(), "9s".into()],
            ..Default::default()
        },
    );
    // A join token pinning another CA: the agent refuses before sending anything.
    let live = server.kapsel(&["token", "create", "--ttl", "1h", "--description", "kt"]);
    let live = live.trim();
    assert!(live.starts_with("K10"), "{live}");
    let secret = live.split("::").nth(1).expect("K10…::id.secret");
    let wrong_pin = format!("K10{}::{secret}", "0".repeat(64));
    let log = refused(
        spawn_agent(&server, dir.path(), "kt-pin", &wrong_pin),
        "a wrong CA hash",
    );
    assert!(log.contains("does not match"), "{log}");

    // Revoked and expired join tokens: the server refuses the CSR.
    let revoked = server.kapsel(&["token", "create"]);
    let revoked_id = revoked.trim().split("::").nth(1).unwrap()[..6].to_string();
    let out = server.kapsel(&["token", "revoke", &revoked_id]);
    assert!(out.contains("revoked"), "{out}");
    let expired = server.kapsel(&["token", "create", "--ttl", "1s"]);
    let list = server.kapsel(&["token", "list"]);
    assert!(!list.contains(&revoked_id), "{list}");
    assert!(list.contains(&secret[..6]), "{list}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (name, token, why) in [
        ("kt-revoked", revoked.trim(), "a revoked join token"),
        ("kt-expired", expired.trim(), "an expired join token"),
    ] {
        let log = refused(spawn_agent(&server, dir.path(), name, token), why);
        assert!(
            log.contains("401") || log.contains("Unauthorized"),
            "{why}: {log}"
        );
        assert!(!dir.path().join(name).join("agent/pki/node.crt").exists());
    }

    // The default join token: the agent joins over mTLS and becomes Ready.
    let _good = spawn_agent(&server, dir.path(), "kt-good", &server.node_token);
    let client = server.client();
    let nodes = wait_nodes_ready(&client, 1, Duration::from_secs(30)).await;
    let names: Vec<&str> = nodes.iter().map(|n| n.metadata.name()).collect();
    assert_eq!(names, vec!["kt-good"]);
    let crt = dir.path().join("kt-good/agent/pki/node.crt");
    let (nb1, na1, pem1) = cert_of(&crt);
    assert!(na1 - nb1 <= 12, "the short test TTL applies: {nb1}..{na1}");
    let key_mode = std::fs::metadata(dir.path().join("kt-good/agent/pki/node.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(key_mode, 0o600, "the node key is private");

    // Renewal before expiry: a new certificate appears while the old one is still valid.
    let (nb2, na2) = eventually(Duration::from_secs(20), "the certificate renewed", || {
        let crt = crt.clone();
        let pem1 = pem1.clone();
        async move {
            let (nb, na, pem) = cert_of(&crt);
            (pem != pem1).then_some((nb, na))
        }
    })
    .await;
    let seen = now();
    assert!(seen < na1, "renewed before expiry ({seen} < {na1})");
    assert!(
        na2 > na1 && nb2 <= seen,
        "a fresh certificate: {nb2}..{na2}"
    );

    // After the first certificate has expired the node keeps renewing its lease: the agent
    // talks with the new certificate (the server refuses expired ones per request).
    let leases: Api<Lease> = client.api(Some("kube-node-lease"));
    eventually(
        Duration::from_secs(30),
        "the lease renewed after the first certificate expired",
        || {
            let leases = leases.clone();
            async move {
                let l = leases.get("kt-good").await.ok()?;
                let t = l.spec.as_ref()?.renew_time?;
                (t.0.timestamp() > na1 + 2).then_some(())
            }
        },
    )
    .await;
    let nodes = wait_nodes_ready(&client, 1, Duration::from_secs(5)).await;
    assert_eq!(nodes[0].metadata.name(), "kt-good");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_works_with_the_written_client_config() {
    let dir = tempdir("kt-sec-cli-");
    let server = Server::start(
        dir.path(),
        &ServerOpts {
            no_agent: true,
            ..Default::default()
        },
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let kc = std::fs::read_to_string(server.kubeconfig()).unwrap();
    assert!(kc.contains("certificate-authority-data"), "{kc}");
    let out = server.kapsel(&["get", "namespaces"]);
    assert!(out.contains("kube-system"), "{out}");

    // A user token made with the CLI works with the config's CA; a bogus one does not.
    let token = server.kapsel(&[
        "create",
        "token",
        "kt-alice",
        "--group",
        "system:masters",
        "--ttl",
        "1h",
    ]);
    let out = server.kapsel(&["--token", token.trim(), "get", "namespaces"]);
    assert!(out.contains("default"), "{out}");
    let bad = server.kapsel_output(&["--token", "abcdef.0123456789abcdef", "get", "pods"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("Unauthorized"), "{err}");

    // Without the CA the server's certificate is not trusted.
    let mut cfg: serde_json::Value = serde_yaml::from_str(&kc).unwrap();
    cfg["clusters"][0]["cluster"]
        .as_object_mut()
        .unwrap()
        .remove("certificate-authority-data");
    let no_ca = dir.path().join("no-ca.yaml");
    std::fs::write(&no_ca, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let out = Command::new(binary("kapsel"))
        .arg("--kubeconfig")
        .arg(&no_ca)
        .args(["get", "namespaces"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an untrusted server certificate fails"
    );

    // Plain HTTP only on loopback.
    let out = Command::new(binary("kapsel"))
        .args([
            "server",
            "--insecure-http",
            "--listen",
            "0.0.0.0:0",
            "--no-agent",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("insecure"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
}
