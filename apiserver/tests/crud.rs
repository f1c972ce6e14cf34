//! Create/get/list/update/delete through the real HTTP server.

use crate::common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn crud_round_trip_with_kubernetes_shapes() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);

    // System namespaces exist from the first start.
    let ns = h.get("/api/v1/namespaces").await;
    assert_eq!(ns.code(), 200);
    assert_eq!(ns.body["kind"], "NamespaceList");
    let names: Vec<&str> = ns.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&n), "{names:?}");
    }

    let c = h
        .post("/api/v1/namespaces/default/pods", &pod("web-1"))
        .await;
    assert_eq!(c.code(), 201, "{}", c.body);
    assert_eq!(c.body["metadata"]["namespace"], "default");
    assert_eq!(c.body["metadata"]["generation"], 1);
    assert!(c.body["metadata"]["uid"].as_str().unwrap().len() > 10);
    assert!(c.body["metadata"]["creationTimestamp"].is_string());
    assert_eq!(c.body["status"]["phase"], "Pending");
    let rv = c.rv();
    assert!(!rv.is_empty());

    let g = h.get("/api/v1/namespaces/default/pods/web-1").await;
    assert_eq!(g.code(), 200);
    assert_eq!(g.body, c.body);

    let l = h.get("/api/v1/namespaces/default/pods").await;
    assert_eq!(l.body["kind"], "PodList");
    assert_eq!(l.body["apiVersion"], "v1");
    assert!(l.body["metadata"]["resourceVersion"].is_string());
    assert_eq!(l.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(l.body["items"][0]["kind"], "Pod");

    let dup = h
        .post("/api/v1/namespaces/default/pods", &pod("web-1"))
        .await;
    assert_eq!(dup.code(), 409);
    assert_eq!(dup.reason(), "AlreadyExists");
    assert_eq!(dup.message(), "pods \"web-1\" already exists");

    let nf = h.get("/api/v1/namespaces/default/pods/nope").await;
    assert_eq!(nf.code(), 404);
    assert_eq!(nf.message(), "pods \"nope\" not found");
    assert_eq!(nf.body["kind"], "Status");

    let d = h.delete("/api/v1/namespaces/default/pods/web-1").await;
    assert_eq!(d.code(), 200, "{}", d.body);
    assert_eq!(
        h.get("/api/v1/namespaces/default/pods/web-1").await.code(),
        404
    );

    // A configmap update.
    let cm = h
        .post("/api/v1/namespaces/default/configmaps", &configmap("cm"))
        .await;
    assert_eq!(cm.code(), 201);
    let mut upd = cm.body.clone();
    upd["data"]["k"] = json!("v2");
    let u = h
        .put("/api/v1/namespaces/default/configmaps/cm", &upd)
        .await;
    assert_eq!(u.code(), 200, "{}", u.body);
    assert_eq!(u.body["data"]["k"], "v2");
    assert!(u.rv().parse::<u64>().unwrap() > cm.rv().parse::<u64>().unwrap());
    srv.shutdown().await;
}
