//! Pod Security admission through the server: namespace labels, enforce/warn, Kubernetes'
//! messages, and a refused pod leaves nothing behind.

use crate::common;

use common::*;
use serde_json::{json, Value};

fn ns(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn privileged_pod(name: &str) -> Value {
    let mut p = pod(name);
    p["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    p
}

fn restricted_ok(name: &str) -> Value {
    let mut p = pod(name);
    p["spec"]["securityContext"] = json!({"runAsNonRoot": true, "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"}});
    p["spec"]["containers"][0]["securityContext"] =
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    p
}

fn warnings(r: &Resp) -> Vec<String> {
    r.headers
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn baseline_by_default_restricted_and_privileged_by_label() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);

    // default namespace: baseline refuses a privileged pod, with Kubernetes' message.
    let r = h
        .post("/api/v1/namespaces/default/pods", &privileged_pod("x"))
        .await;
    assert_eq!(r.code(), 403, "{}", r.body);
    assert_eq!(r.reason(), "Forbidden");
    assert_eq!(
        r.message(),
        "pods \"x\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
    );
    let r = h.get("/api/v1/namespaces/default/pods/x").await;
    assert_eq!(r.code(), 404, "a refused pod is not stored");
    // hostPath and host namespaces too, in one message.
    let mut p = pod("hp");
    p["spec"]["hostNetwork"] = json!(true);
    p["spec"]["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
    let r = h.post("/api/v1/namespaces/default/pods", &p).await;
    assert_eq!(r.code(), 403);
    assert!(
        r.message().ends_with("violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true), hostPath volumes (volume \"root\")"),
        "{}",
        r.message()
    );
    // A plain pod is fine.
    let r = h
        .post("/api/v1/namespaces/default/pods", &pod("plain"))
        .await;
    assert_eq!(r.code(), 201, "{}", r.body);

    // restricted: a pod running as root is refused; a hardened one is admitted.
    let r = h
        .post(
            "/api/v1/namespaces",
            &ns(
                "strict",
                json!({"pod-security.kubernetes.io/enforce": "restricted"}),
            ),
        )
        .await;
    assert_eq!(r.code(), 201, "{}", r.body);
    let mut root = restricted_ok("root");
    root["spec"]["securityContext"]["runAsUser"] = json!(0);
    let r = h.post("/api/v1/namespaces/strict/pods", &root).await;
    assert_eq!(r.code(), 403, "{}", r.body);
    assert_eq!(
        r.message(),
        "pods \"root\" is forbidden: violates PodSecurity \"restricted:latest\": runAsUser=0 (pod must not set runAsUser=0)"
    );
    let r = h
        .post("/api/v1/namespaces/strict/pods", &pod("plain"))
        .await;
    assert_eq!(r.code(), 403);
    assert!(r.message().contains("allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)"), "{}", r.message());
    let r = h
        .post("/api/v1/namespaces/strict/pods", &restricted_ok("ok"))
        .await;
    assert_eq!(r.code(), 201, "{}", r.body);

    // privileged enforce with a baseline warning: admitted, with a Warning header.
    let r = h
        .post(
            "/api/v1/namespaces",
            &ns(
                "infra",
                json!({"pod-security.kubernetes.io/enforce": "privileged",
                       "pod-security.kubernetes.io/warn": "baseline",
                       "pod-security.kubernetes.io/warn-version": "v1.30"}),
            ),
        )
        .await;
    assert_eq!(r.code(), 201, "{}", r.body);
    let r = h
        .post("/api/v1/namespaces/infra/pods", &privileged_pod("x"))
        .await;
    assert_eq!(r.code(), 201, "{}", r.body);
    let w = warnings(&r);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("would violate PodSecurity \\\"baseline:v1.30\\\": privileged"),
        "{w:?}"
    );

    // kube-system is exempt.
    let r = h
        .post("/api/v1/namespaces/kube-system/pods", &privileged_pod("x"))
        .await;
    assert_eq!(r.code(), 201, "{}", r.body);

    // Relabelling a namespace takes effect for the next pod.
    let r = h
        .patch(
            "/api/v1/namespaces/infra",
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}),
        )
        .await;
    assert_eq!(r.code(), 200, "{}", r.body);
    let r = h
        .post("/api/v1/namespaces/infra/pods", &privileged_pod("y"))
        .await;
    assert_eq!(r.code(), 403, "{}", r.body);
}

#[tokio::test]
async fn invalid_pod_security_labels_are_refused() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let r = h
        .post(
            "/api/v1/namespaces",
            &ns(
                "bad",
                json!({"pod-security.kubernetes.io/enforce": "strictest"}),
            ),
        )
        .await;
    assert_eq!(r.code(), 422, "{}", r.body);
    assert_eq!(r.reason(), "Invalid");
    assert_eq!(
        r.body["details"]["causes"][0]["field"],
        "metadata.labels[pod-security.kubernetes.io/enforce]"
    );
    assert_eq!(h.get("/api/v1/namespaces/bad").await.code(), 404);
    let r = h
        .patch(
            "/api/v1/namespaces/default",
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"pod-security.kubernetes.io/audit-version": "2"}}}),
        )
        .await;
    assert_eq!(r.code(), 422, "{}", r.body);
}
