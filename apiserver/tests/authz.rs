//! Authorization end to end on the in-process server, with a test authenticator that takes
//! `Authorization: Bearer NAME[|GROUP,GROUP]` at its word: RBAC (view, edit, namespaces), node
//! restriction, the audit log, Secrets encrypted at rest, and the abuse limits.

use crate::common;

use std::time::Duration;

use axum::http::request::Parts;
use common::*;
use kapsel_apiserver::authz::audit::{AuditConfig, Entry};
use kapsel_apiserver::{ApiError, Authenticator, UserInfo};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `Bearer alice` → alice in system:authenticated; `Bearer n|g1,g2` → n in g1, g2 and
/// system:authenticated; no header → 401 (except the server's own loopback client).
struct TestAuth;

impl Authenticator for TestAuth {
    fn authenticate(&self, parts: &Parts) -> Result<UserInfo, ApiError> {
        let Some(token) = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            // The component service's loopback client (no token on the plain test server)
            // is the server itself.
            let ua = parts
                .headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok());
            if ua == Some("kapsel-apiserver/component") {
                return Ok(UserInfo::admin());
            }
            return Err(ApiError::Unauthorized);
        };
        let (name, groups) = token.split_once('|').unwrap_or((token, ""));
        let mut groups: Vec<String> = groups
            .split(',')
            .filter(|g| !g.is_empty())
            .map(String::from)
            .collect();
        groups.push("system:authenticated".into());
        Ok(UserInfo {
            name: name.into(),
            groups,
        })
    }
}

const ADMIN: &str = "root|system:masters";

fn as_user(srv: &TestServer, token: &str) -> Http {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    Http {
        base: srv.url.clone(),
        client: reqwest::Client::builder()
            .default_headers(h)
            .build()
            .unwrap(),
    }
}

fn node_user(n: &str) -> String {
    format!("system:node:{n}|system:nodes")
}

async fn start(adjust: impl FnOnce(&mut kapsel_apiserver::ServerConfig)) -> TestServer {
    start_test_server_with(|c| {
        c.authenticator = std::sync::Arc::new(TestAuth);
        adjust(c);
    })
    .await
}

async fn namespace(admin: &Http, name: &str) {
    let r = admin
        .post(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .await;
    assert_eq!(r.code(), 201, "{}", r.body);
}

async fn bind(admin: &Http, ns: &str, user: &str, role: &str) {
    let r = admin
        .post(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
            &json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": format!("{user}-{role}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]
            }),
        )
        .await;
    assert_eq!(r.code(), 201, "{}", r.body);
}

fn assert_forbidden(r: &Resp, message: &str) {
    assert_eq!(r.code(), 403, "{}", r.body);
    assert_eq!(r.reason(), "Forbidden");
    assert_eq!(r.message(), message);
    assert_eq!(r.body["kind"], "Status");
}

#[tokio::test]
async fn default_roles_and_bindings_exist() {
    let srv = start(|_| {}).await;
    let admin = as_user(&srv, ADMIN);
    let list = admin
        .get("/apis/rbac.authorization.k8s.io/v1/clusterroles")
        .await;
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    for want in ["cluster-admin", "admin", "edit", "view", "system:node"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let b = admin
        .get("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/cluster-admin")
        .await;
    assert_eq!(b.body["subjects"][0]["name"], "system:masters");
    // A bad binding is a 422 with field paths, like any other kind.
    let bad = admin
        .post(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": "x"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}}),
        )
        .await;
    assert_eq!(bad.code(), 422, "{}", bad.body);
    assert_eq!(bad.body["details"]["causes"][0]["field"], "roleRef.kind");
}

#[tokio::test]
async fn view_user_lists_pods_but_cannot_create_them() {
    let srv = start(|_| {}).await;
    let admin = as_user(&srv, ADMIN);
    namespace(&admin, "a").await;
    let alice = as_user(&srv, "alice");
    // Nothing bound yet.
    assert_forbidden(
        &alice.get("/api/v1/namespaces/a/pods").await,
        r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "a""#,
    );
    bind(&admin, "a", "alice", "view").await;
    let l = alice.get("/api/v1/namespaces/a/pods").await;
    assert_eq!(l.code(), 200, "{}", l.body);
    let c = alice.post("/api/v1/namespaces/a/pods", &pod("web")).await;
    assert_forbidden(
        &c,
        r#"pods is forbidden: User "alice" cannot create resource "pods" in API group "" in the namespace "a""#,
    );
    assert_eq!(c.body["details"]["kind"], "pods");
    // The rejected write changed nothing.
    assert_eq!(admin.get("/api/v1/namespaces/a/pods/web").await.code(), 404);
    // View does not include secrets, other namespaces, or the cluster scope.
    assert_forbidden(
        &alice.get("/api/v1/namespaces/a/secrets/s").await,
        r#"secrets "s" is forbidden: User "alice" cannot get resource "secrets" in API group "" in the namespace "a""#,
    );
    assert_forbidden(
        &alice.get("/api/v1/pods").await,
        r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" at the cluster scope"#,
    );
    assert_eq!(
        alice.get("/api/v1/namespaces/default/pods").await.code(),
        403
    );
    // Discovery is open to every authenticated user.
    assert_eq!(alice.get("/apis").await.code(), 200);
    // Revoking the binding revokes the access.
    let d = admin
        .delete("/apis/rbac.authorization.k8s.io/v1/namespaces/a/rolebindings/alice-view")
        .await;
    assert_eq!(d.code(), 200, "{}", d.body);
    // (The cache follows the store's watch: eventually, as in Kubernetes.)
    let mut code = 0;
    for _ in 0..100 {
        code = alice.get("/api/v1/namespaces/a/pods").await.code();
        if code == 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, 403);
}

#[tokio::test]
async fn edit_user_in_one_namespace_cannot_touch_another() {
    let srv = start(|_| {}).await;
    let admin = as_user(&srv, ADMIN);
    namespace(&admin, "a").await;
    namespace(&admin, "b").await;
    bind(&admin, "a", "bob", "edit").await;
    let c = admin
        .post("/api/v1/namespaces/b/configmaps", &configmap("cm"))
        .await;
    assert_eq!(c.code(), 201);
    let bob = as_user(&srv, "bob");
    for (path, what) in [
        ("/api/v1/namespaces/a/pods", "pods"),
        ("/api/v1/namespaces/a/configmaps", "configmaps"),
        ("/api/v1/namespaces/a/secrets", "secrets"),
    ] {
        let body = match what {
            "pods" => pod("p"),
            "configmaps" => configmap("cm"),
            _ => {
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}})
            }
        };
        let r = bob.post(path, &body).await;
        assert_eq!(r.code(), 201, "{path}: {}", r.body);
    }
    let scale = bob
        .post(
            "/apis/apps/v1/namespaces/a/deployments",
            &deployment("web", 1),
        )
        .await;
    assert_eq!(scale.code(), 201, "{}", scale.body);
    let s = bob
        .patch(
            "/apis/apps/v1/namespaces/a/deployments/web/scale",
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 3}}),
        )
        .await;
    assert_eq!(s.code(), 200, "{}", s.body);
    // Namespace b: nothing at all.
    assert_forbidden(
        &bob.get("/api/v1/namespaces/b/configmaps/cm").await,
        r#"configmaps "cm" is forbidden: User "bob" cannot get resource "configmaps" in API group "" in the namespace "b""#,
    );
    assert_forbidden(
        &bob.post("/api/v1/namespaces/b/pods", &pod("p")).await,
        r#"pods is forbidden: User "bob" cannot create resource "pods" in API group "" in the namespace "b""#,
    );
    assert_forbidden(
        &bob.delete("/api/v1/namespaces/b/configmaps/cm").await,
        r#"configmaps "cm" is forbidden: User "bob" cannot delete resource "configmaps" in API group "" in the namespace "b""#,
    );
    assert_forbidden(
        &bob.delete("/api/v1/namespaces/b/configmaps").await,
        r#"configmaps is forbidden: User "bob" cannot deletecollection resource "configmaps" in API group "" in the namespace "b""#,
    );
    assert_eq!(
        admin.get("/api/v1/namespaces/b/configmaps/cm").await.code(),
        200
    );
    // edit may not grant itself more (no RBAC writes), nor write pod status.
    let rb = bob
        .post(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/a/rolebindings",
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "x"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                    "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bob"}]}),
        )
        .await;
    assert_eq!(rb.code(), 403, "{}", rb.body);
    let st = bob
        .patch(
            "/api/v1/namespaces/a/pods/p/status",
            "application/merge-patch+json",
            &json!({"status": {"phase": "Running"}}),
        )
        .await;
    assert_forbidden(
        &st,
        r#"pods "p" is forbidden: User "bob" cannot patch resource "pods/status" in API group "" in the namespace "a""#,
    );
}

fn bound_pod(name: &str, node: &str, secret: &str, cm: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "volumes": [{"name": "s", "secret": {"secretName": secret}}],
            "containers": [{"name": "c", "image": "busybox:1.36",
                            "envFrom": [{"configMapRef": {"name": cm}}]}]
        }
    })
}

fn secret(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"password": value}})
}

fn node_obj(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

#[tokio::test]
async fn node_reads_and_writes_only_what_is_bound_to_it() {
    let srv = start(|_| {}).await;
    let admin = as_user(&srv, ADMIN);
    let ns = "/api/v1/namespaces/default";
    for (name, body) in [
        ("secrets", secret("s1", "one")),
        ("secrets", secret("s2", "two")),
        ("configmaps", configmap("c1")),
        ("configmaps", configmap("c2")),
        ("pods", bound_pod("p1", "node-1", "s1", "c1")),
        ("pods", bound_pod("p2", "node-2", "s2", "c2")),
    ] {
        let r = admin.post(&format!("{ns}/{name}"), &body).await;
        assert_eq!(r.code(), 201, "{}", r.body);
    }
    let n1 = as_user(&srv, &node_user("node-1"));
    // Its own node: create, then status.
    assert_eq!(
        n1.post("/api/v1/nodes", &node_obj("node-1")).await.code(),
        201
    );
    let other = n1.post("/api/v1/nodes", &node_obj("node-2")).await;
    assert_eq!(other.code(), 403, "{}", other.body);
    assert_eq!(
        admin
            .post("/api/v1/nodes", &node_obj("node-2"))
            .await
            .code(),
        201
    );
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let own = n1
        .patch(
            "/api/v1/nodes/node-1/status",
            "application/merge-patch+json",
            &ready,
        )
        .await;
    assert_eq!(own.code(), 200, "{}", own.body);
    let r = n1
        .patch(
            "/api/v1/nodes/node-2/status",
            "application/merge-patch+json",
            &ready,
        )
        .await;
    assert_eq!(r.code(), 403, "{}", r.body);
    assert_eq!(n1.delete("/api/v1/nodes/node-2").await.code(), 403);
    // Reading nodes is allowed (as Kubernetes).
    assert_eq!(n1.get("/api/v1/nodes/node-2").await.code(), 200);

    // Secrets and configmaps: only those its pods use.
    let s1 = n1.get(&format!("{ns}/secrets/s1")).await;
    assert_eq!(s1.code(), 200, "{}", s1.body);
    let s2 = n1.get(&format!("{ns}/secrets/s2")).await;
    assert_forbidden(
        &s2,
        r#"secrets "s2" is forbidden: User "system:node:node-1" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'node-1' and this object"#,
    );
    assert_eq!(n1.get(&format!("{ns}/configmaps/c1")).await.code(), 200);
    assert_eq!(n1.get(&format!("{ns}/configmaps/c2")).await.code(), 403);
    assert_eq!(n1.get(&format!("{ns}/secrets")).await.code(), 403);

    // Pods: its own, and lists only by its node name.
    assert_eq!(n1.get(&format!("{ns}/pods/p1")).await.code(), 200);
    assert_eq!(n1.get(&format!("{ns}/pods/p2")).await.code(), 403);
    let mine = n1
        .get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1")
        .await;
    assert_eq!(mine.code(), 200, "{}", mine.body);
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(n1.get("/api/v1/pods").await.code(), 403);
    assert_eq!(
        n1.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-2")
            .await
            .code(),
        403
    );
    let status = json!({"status": {"phase": "Running"}});
    let up = n1
        .patch(
            &format!("{ns}/pods/p1/status"),
            "application/merge-patch+json",
            &status,
        )
        .await;
    assert_eq!(up.code(), 200, "{}", up.body);
    let up2 = n1
        .patch(
            &format!("{ns}/pods/p2/status"),
            "application/merge-patch+json",
            &status,
        )
        .await;
    assert_eq!(up2.code(), 403, "{}", up2.body);
    assert_eq!(
        admin.get(&format!("{ns}/pods/p2")).await.body["status"]["phase"],
        "Pending"
    );
    // Never the spec, never other nodes' pods, never new pods or bindings.
    let spec = n1
        .patch(
            &format!("{ns}/pods/p1"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await;
    assert_eq!(spec.code(), 403, "{}", spec.body);
    assert_eq!(
        n1.post(&format!("{ns}/pods"), &pod("evil")).await.code(),
        403
    );
    assert_eq!(n1.delete(&format!("{ns}/pods/p2")).await.code(), 403);
    // Leases: its own only.
    let lease = |n: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": n}, "spec": {"holderIdentity": n}})
    };
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    assert_eq!(n1.post(leases, &lease("node-1")).await.code(), 201);
    assert_eq!(n1.post(leases, &lease("node-2")).await.code(), 403);
    // Events, services: allowed by the system:node role.
    let ev = n1
        .post(
            &format!("{ns}/events"),
            &json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
                    "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default"},
                    "reason": "Started", "message": "x", "type": "Normal"}),
        )
        .await;
    assert_eq!(ev.code(), 201, "{}", ev.body);
    assert_eq!(n1.get("/api/v1/services").await.code(), 200);
    // Not deployments, not RBAC.
    assert_eq!(n1.get("/apis/apps/v1/deployments").await.code(), 403);

    // A pod bound to node-1 later gives it access to its secret at once.
    let r = admin
        .post(
            &format!("{ns}/pods"),
            &bound_pod("p3", "node-1", "s2", "c2"),
        )
        .await;
    assert_eq!(r.code(), 201);
    assert_eq!(n1.get(&format!("{ns}/secrets/s2")).await.code(), 200);
    // And deleting it takes the access away.
    let d = admin
        .delete_with(&format!("{ns}/pods/p3"), &json!({"gracePeriodSeconds": 0}))
        .await;
    assert_eq!(d.code(), 200, "{}", d.body);
    let mut code = 0;
    for _ in 0..100 {
        code = n1.get(&format!("{ns}/secrets/s2")).await.code();
        if code == 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, 403);
}

#[tokio::test]
async fn audit_log_lists_every_request_with_its_user() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let p2 = path.clone();
    let srv = start(move |c| c.guards.audit = Some(AuditConfig::new(p2))).await;
    let admin = as_user(&srv, ADMIN);
    let alice = as_user(&srv, "alice");
    let anon = Http::new(&srv);
    namespace(&admin, "a").await;
    bind(&admin, "a", "alice", "view").await;
    let session: Vec<(&Http, Method, &str, Option<Value>, u16)> = vec![
        (&alice, Method::GET, "/api/v1/namespaces/a/pods", None, 200),
        (
            &alice,
            Method::POST,
            "/api/v1/namespaces/a/pods",
            Some(pod("x")),
            403,
        ),
        (
            &admin,
            Method::POST,
            "/api/v1/namespaces/a/secrets",
            Some(secret("db", "hunter2-audit")),
            201,
        ),
        (
            &admin,
            Method::GET,
            "/api/v1/namespaces/a/secrets/db",
            None,
            200,
        ),
        (
            &alice,
            Method::GET,
            "/api/v1/namespaces/a/secrets/db",
            None,
            403,
        ),
        (&anon, Method::GET, "/api/v1/namespaces/a/pods", None, 401),
        (
            &admin,
            Method::DELETE,
            "/api/v1/namespaces/a/secrets/db",
            None,
            200,
        ),
    ];
    for (h, m, p, body, want) in &session {
        let r = h
            .send(
                m.clone(),
                p,
                body.as_ref().map(|_| "application/json"),
                body.as_ref().map(|b| serde_json::to_vec(b).unwrap()),
            )
            .await;
        assert_eq!(r.code(), *want, "{m} {p}: {}", r.body);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("hunter2"),
        "a secret value reached the audit log"
    );
    assert!(!text.contains(&base64_of("hunter2-audit")));
    let entries: Vec<Entry> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The setup (2 requests) and the session, in order.
    assert_eq!(entries.len(), 2 + session.len(), "{text}");
    let got: Vec<(String, String, String, String, u16)> = entries[2..]
        .iter()
        .map(|e| {
            (
                e.user.clone(),
                e.verb.clone(),
                e.resource.clone(),
                e.name.clone(),
                e.code,
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        got,
        vec![
            (s("alice"), s("list"), s("pods"), s(""), 200),
            (s("alice"), s("create"), s("pods"), s(""), 403),
            (s("root"), s("create"), s("secrets"), s(""), 201),
            (s("root"), s("get"), s("secrets"), s("db"), 200),
            (s("alice"), s("get"), s("secrets"), s("db"), 403),
            (s(""), s("list"), s("pods"), s(""), 401),
            (s("root"), s("delete"), s("secrets"), s("db"), 200),
        ]
    );
    // The peer address from the accept loop, on every line (also the refused ones).
    for e in &entries {
        assert_eq!(e.source_ip, "127.0.0.1", "{e:?}");
    }
    let e = &entries[2];
    assert_eq!(e.namespace, "a");
    assert_eq!(e.groups, vec!["system:authenticated"]);
    assert_eq!(
        entries[4].groups,
        vec!["system:masters", "system:authenticated"]
    );
    assert!(e.latency_ms >= 0.0);
    assert!(e.timestamp.ends_with('Z'));
    assert_eq!(e.request_uri, "/api/v1/namespaces/a/pods");
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                found.push(p);
            }
        }
    }
    found
}

#[tokio::test]
async fn secrets_are_not_stored_in_plaintext() {
    let srv = start(|_| {}).await;
    let admin = as_user(&srv, ADMIN);
    let value = "correct-horse-battery-staple-7f3a";
    let b64 = base64_of(value);
    let ns = "/api/v1/namespaces/default";
    // A watch started before the write sees the plaintext.
    let watch = admin
        .client
        .get(format!("{}{ns}/secrets?watch=true", srv.url))
        .send()
        .await
        .unwrap();
    let c = admin
        .post(
            &format!("{ns}/secrets"),
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                    "data": {"password": b64}}),
        )
        .await;
    assert_eq!(c.code(), 201, "{}", c.body);
    // A configmap with the same text is stored as it is (the grep below can find plaintext).
    let cm = admin
        .post(
            &format!("{ns}/configmaps"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "control"},
                    "data": {"v": "control-plaintext-9c1d"}}),
        )
        .await;
    assert_eq!(cm.code(), 201);
    let g = admin.get(&format!("{ns}/secrets/db")).await;
    assert_eq!(g.body["data"]["password"], b64.as_str());
    let mut stream = watch.bytes_stream();
    use futures::StreamExt;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(&b64) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("watch event")
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&chunk);
    }
    drop(stream);
    let mut srv = srv;
    // Keep the data directory past the server's shutdown (which drops the test server).
    let kept = std::mem::replace(&mut srv.tempdir, tempfile::tempdir().unwrap());
    srv.shutdown().await;
    let data = kept.path().to_path_buf();
    assert!(
        !files_containing(&data, b"control-plaintext-9c1d").is_empty(),
        "the grep must find plaintext that is stored as it is"
    );
    for needle in [value.as_bytes(), b64.as_bytes()] {
        let hits = files_containing(&data, needle);
        assert!(
            hits.is_empty(),
            "{:?} found in {hits:?}",
            String::from_utf8_lossy(needle)
        );
    }
    let key = data.join("data/encryption-key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

const IDLE: usize = 10_000;

/// Not a test of its own: the helper process of the idle-connections test (one process could
/// not hold both ends of 10,000 connections under this machine's RLIMIT_NOFILE of 20,000).
/// With `KT_HOLD_IDLE=ADDR` it opens `IDLE` connections to ADDR, starts a request on every
/// other one without finishing its headers (slowloris), prints `READY`, and holds them until
/// its stdin closes.
#[test]
fn idle_connection_holder() {
    use std::io::{BufRead, Write};
    let Ok(addr) = std::env::var("KT_HOLD_IDLE") else {
        return;
    };
    let mut conns = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut s =
            std::net::TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        if i % 2 == 0 {
            s.write_all(b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
        conns.push(s);
        if i % 1000 == 999 {
            eprintln!("holder: {} connections", i + 1);
        }
    }
    println!("READY {}", conns.len());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line).unwrap_or(0) > 0 {}
    drop(conns);
}

/// Kills the helper process even when the test fails.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_huge_bodies_do_not_take_the_server_down() {
    let srv = start(|_| {}).await;
    let admin = as_user(&srv, ADMIN);
    let mut child = Child(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "authz::idle_connection_holder",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KT_HOLD_IDLE", srv.addr.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawning the connection holder"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // (libtest may print "test idle_connection_holder ... " before it on the line.)
            .find_map(|l| l.find("READY").map(|i| l[i..].to_string()))
    });
    let ready = tokio::time::timeout(Duration::from_secs(120), ready)
        .await
        .expect("the holder opens its connections")
        .unwrap();
    assert_eq!(ready.as_deref(), Some("READY 10000"));
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        admin.get("/api/v1/namespaces/default/pods"),
    )
    .await
    .expect("the server answers while 10,000 connections sit idle");
    assert_eq!(r.code(), 200);

    // 100 MiB declared: refused before reading.
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        100 * 1024 * 1024
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(&vec![b' '; 1024 * 1024]).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer to the huge body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("RequestEntityTooLarge"), "{answer}");
    drop(s);

    // 100 MiB streamed without a length: cut at the limit.
    let chunk = bytes::Bytes::from(vec![b' '; 1024 * 1024]);
    let body = futures::stream::iter((0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = admin
        .client
        .post(format!("{}/api/v1/namespaces/default/configmaps", srv.url))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    // Still answering, and nothing was written.
    let r = admin.get("/api/v1/namespaces/default/configmaps").await;
    assert_eq!(r.code(), 200);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0);
    let ok = admin
        .post("/api/v1/namespaces/default/configmaps", &configmap("after"))
        .await;
    assert_eq!(ok.code(), 201);
    // The holder still has its connections (it exits only when its stdin closes).
    assert!(child.0.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn in_flight_and_watch_limits_answer_429() {
    let srv = start(|c| {
        c.guards.limits.max_mutating_requests_inflight = 2;
        c.guards.limits.max_watches_per_user = 2;
    })
    .await;
    let admin = as_user(&srv, ADMIN);
    bind(&admin, "default", "bob", "edit").await;
    // Two writes of bob that never finish their bodies hold both mutating slots.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(
            b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bob\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
        stalled.push(s);
    }
    let bob = as_user(&srv, "bob");
    let mut r = bob
        .post("/api/v1/namespaces/default/configmaps", &configmap("c"))
        .await;
    for _ in 0..100 {
        if r.code() == 429 {
            break;
        }
        // The stalled requests may not have reached the server yet.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = bob.delete("/api/v1/namespaces/default/configmaps/c").await;
        r = bob
            .post("/api/v1/namespaces/default/configmaps", &configmap("c"))
            .await;
    }
    assert_eq!(r.code(), 429, "{}", r.body);
    assert_eq!(r.reason(), "TooManyRequests");
    assert_eq!(r.headers["retry-after"], "1");
    // Reads have their own budget; cluster admins are exempt.
    assert_eq!(
        bob.get("/api/v1/namespaces/default/configmaps")
            .await
            .code(),
        200
    );
    assert_eq!(
        admin
            .post("/api/v1/namespaces/default/configmaps", &configmap("admin"))
            .await
            .code(),
        201
    );
    drop(stalled);
    let mut code = 0;
    for i in 0..100 {
        code = bob
            .post(
                "/api/v1/namespaces/default/configmaps",
                &configmap(&format!("later-{i}")),
            )
            .await
            .code();
        if code == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, 201, "slots are freed when the stalled requests end");

    // Watches per user.
    let url = format!("{}/api/v1/namespaces/default/pods?watch=true", srv.url);
    let w1 = bob.client.get(&url).send().await.unwrap();
    let w2 = bob.client.get(&url).send().await.unwrap();
    assert_eq!((w1.status().as_u16(), w2.status().as_u16()), (200, 200));
    let w3 = bob.client.get(&url).send().await.unwrap();
    assert_eq!(w3.status().as_u16(), 429);
    let alice_ok = admin.client.get(&url).send().await.unwrap();
    assert_eq!(alice_ok.status().as_u16(), 200);
    drop(w1);
    let mut code = 0;
    for i in 0..100 {
        // An event makes the server write to the closed watch, and notice.
        let p = admin
            .post(
                "/api/v1/namespaces/default/pods",
                &pod(&format!("wake-{i}")),
            )
            .await;
        assert_eq!(p.code(), 201);
        let w = bob.client.get(&url).send().await.unwrap();
        code = w.status().as_u16();
        if code == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, 200, "a closed watch frees its slot");
    drop(w2);
}

fn grpc_req<T>(who: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {who}").parse().unwrap());
    r
}

#[tokio::test]
async fn node_restriction_holds_on_the_component_api() {
    use kapsel_proto::v1::{ObjectRef, RenewLeaseRequest, UpdatePodStatusRequest};
    let srv = start(|_| {}).await;
    let admin = as_user(&srv, ADMIN);
    let ns = "/api/v1/namespaces/default";
    for (name, body) in [
        ("secrets", secret("s1", "one")),
        ("secrets", secret("s2", "two")),
        ("configmaps", configmap("c1")),
        ("configmaps", configmap("c2")),
        ("pods", bound_pod("p1", "node-1", "s1", "c1")),
        ("pods", bound_pod("p2", "node-2", "s2", "c2")),
    ] {
        let r = admin.post(&format!("{ns}/{name}"), &body).await;
        assert_eq!(r.code(), 201, "{}", r.body);
    }
    let channel = tonic::transport::Endpoint::from_shared(srv.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = kapsel_proto::NodeAgentClient::new(channel);
    let n1 = node_user("node-1");
    let get = |kind: &str, name: &str| ObjectRef {
        kind: kind.into(),
        namespace: "default".into(),
        name: name.into(),
    };
    let ok = c.get_object(grpc_req(&n1, get("Secret", "s1"))).await;
    assert!(ok.is_ok(), "{ok:?}");
    let denied = c
        .get_object(grpc_req(&n1, get("Secret", "s2")))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied
        .message()
        .contains("no relationship found between node 'node-1'"));
    assert_eq!(
        c.get_object(grpc_req(&n1, get("Pod", "p2")))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::PermissionDenied
    );
    let status = |name: &str| UpdatePodStatusRequest {
        namespace: "default".into(),
        name: name.into(),
        status_json: serde_json::to_vec(&json!({"phase": "Running"})).unwrap(),
        ..Default::default()
    };
    let own = c.update_pod_status(grpc_req(&n1, status("p1"))).await;
    assert!(own.is_ok(), "{own:?}");
    let other = c
        .update_pod_status(grpc_req(&n1, status("p2")))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        admin.get(&format!("{ns}/pods/p2")).await.body["status"]["phase"],
        "Pending"
    );
    assert_eq!(
        admin.get(&format!("{ns}/pods/p1")).await.body["status"]["phase"],
        "Running"
    );
    let lease = |n: &str| RenewLeaseRequest {
        node_name: n.into(),
        lease_duration_seconds: 40,
    };
    assert!(c.renew_lease(grpc_req(&n1, lease("node-1"))).await.is_ok());
    assert_eq!(
        c.renew_lease(grpc_req(&n1, lease("node-2")))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::PermissionDenied
    );
    // A user that is neither a node nor an admin does not reach the component API at all.
    let eve = c
        .renew_lease(grpc_req("eve", lease("node-1")))
        .await
        .unwrap_err();
    assert_ne!(eve.code(), tonic::Code::Ok);
    // Cluster admins are not restricted.
    assert!(c
        .get_object(grpc_req(ADMIN, get("Secret", "s2")))
        .await
        .is_ok());
}
