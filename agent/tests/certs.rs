//! Node certificate renewal as the agent's clients see it: a secured in-process API server
//! signs node certificates with a short lifetime; the agent's gRPC client and the REST client
//! built from its identity (the pod network's, the proxy's and DNS' watches) go on working
//! after the first certificate has expired, because both switch to the renewed one. A REST
//! client pinned to the first certificate is refused then (so the server does check expiry).

use std::sync::Arc;
use std::time::Duration;

use kapsel_agent::certs::NodeCerts;
use kapsel_agent::{ControlPlane, GrpcControlPlane};
use kapsel_api::client::Client;
use kapsel_api::{Node, ObjectMeta};
use kapsel_apiserver::security::SecurityConfig;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn not_after(certs: &NodeCerts) -> i64 {
    let (cert, _) = certs.identity();
    kapsel_apiserver::tls::pem_identity(&cert)
        .expect("node certificate")
        .not_after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_grpc_clients_switch_to_the_renewed_certificate() {
    let auth = tempfile::tempdir().unwrap();
    let auth_dir = auth.path().to_path_buf();
    let srv = kapsel_apiserver::server::start_test_server_with(move |c| {
        let mut sec = SecurityConfig::in_dir(&auth_dir);
        sec.node_cert_ttl = Duration::from_secs(6);
        c.security = Some(sec);
    })
    .await;
    let url = format!("https://{}", srv.addr);
    let token = std::fs::read_to_string(auth.path().join("node-token")).unwrap();
    let pki = tempfile::tempdir().unwrap();
    let certs = NodeCerts::join(&url, "kt-renew", pki.path(), token.trim())
        .await
        .expect("joining with the default join token");
    let first = certs.identity();
    let na1 = not_after(&certs);
    assert!(na1 - now() <= 7, "the short test TTL applies");
    tokio::spawn(Arc::clone(&certs).run_renewal());

    let cp = GrpcControlPlane::with_certs(Arc::clone(&certs)).unwrap();
    let node = Node::with_meta(ObjectMeta {
        name: Some("kt-renew".into()),
        ..Default::default()
    });
    cp.register(&node).await.expect("registering over gRPC");
    let rest = Client::from_config(cp.rest_config().expect("an mTLS REST config")).unwrap();
    let nodes = rest.api::<Node>(None);
    nodes.get("kt-renew").await.expect("reading its own Node");

    // A client pinned to the first certificate, for contrast.
    let mut pinned = cp.rest_config().unwrap();
    pinned.identity_source = None;
    pinned.client_identity_pem = Some(format!("{}\n{}", first.0, first.1).into_bytes());
    let pinned = Client::from_config(pinned).unwrap();
    pinned.api::<Node>(None).get("kt-renew").await.unwrap();

    // Keep talking through the renewal and past the first certificate's expiry: every call
    // must be accepted.
    let deadline = na1 + 3;
    let mut calls = 0;
    while now() <= deadline {
        cp.renew_lease("kt-renew", Duration::from_secs(40))
            .await
            .unwrap_or_else(|e| panic!("lease renewal over gRPC at {}: {e}", now() - na1));
        nodes
            .get("kt-renew")
            .await
            .unwrap_or_else(|e| panic!("REST read of its Node at {}: {e}", now() - na1));
        calls += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(calls >= 8, "{calls} calls");
    assert!(certs.generation() >= 1, "the certificate was renewed");
    assert_ne!(certs.identity().0, first.0);
    assert!(not_after(&certs) > na1);
    let e = pinned
        .api::<Node>(None)
        .get("kt-renew")
        .await
        .expect_err("the first certificate has expired");
    assert!(e.is_unauthorized(), "{e}");
}
