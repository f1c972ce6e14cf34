//! LimitRange and ResourceQuota admission through the server.

use crate::common;

use common::*;
use serde_json::{json, Value};

const PODS: &str = "/api/v1/namespaces/default/pods";

fn pod_with(name: &str, requests: Value, limits: Value) -> Value {
    let mut p = pod(name);
    p["spec"]["containers"][0]["resources"] = json!({"requests": requests, "limits": limits});
    p
}

#[tokio::test]
async fn limit_range_defaults_and_rejects() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let lr = h
        .post("/api/v1/namespaces/default/limitranges", &json!({
            "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits"},
            "spec": {"limits": [
                {"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
                 "defaultRequest": {"cpu": "100m"}, "min": {"cpu": "50m"}, "max": {"cpu": "1", "memory": "1Gi"}},
                {"type": "Pod", "max": {"memory": "1Gi"}}
            ]}
        }))
        .await;
    assert_eq!(lr.code(), 201, "{}", lr.body);
    // Stored LimitRange is defaulted as Kubernetes does (defaultRequest.memory from default).
    assert_eq!(
        lr.body["spec"]["limits"][0]["defaultRequest"]["memory"],
        "256Mi"
    );

    // Defaults fill missing requests and limits.
    let p = h.post(PODS, &pod("plain")).await;
    assert_eq!(p.code(), 201, "{}", p.body);
    let r = &p.body["spec"]["containers"][0]["resources"];
    assert_eq!(r["requests"], json!({"cpu": "100m", "memory": "256Mi"}));
    assert_eq!(r["limits"], json!({"cpu": "500m", "memory": "256Mi"}));
    assert!(
        p.body["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
            .as_str()
            .unwrap()
            .starts_with("LimitRanger plugin set:")
    );

    // Given values are kept.
    let p = h
        .post(
            PODS,
            &pod_with("given", json!({"cpu": "200m"}), json!({"cpu": "800m"})),
        )
        .await;
    assert_eq!(p.code(), 201, "{}", p.body);
    assert_eq!(
        p.body["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "200m"
    );
    assert_eq!(
        p.body["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "800m"
    );

    // Over max.
    let before = h.get("/api/v1/namespaces/default/pods").await.rv();
    let big = h
        .post(
            PODS,
            &pod_with("big", json!({"cpu": "500m"}), json!({"cpu": "2"})),
        )
        .await;
    assert_eq!(big.code(), 403, "{}", big.body);
    assert_eq!(big.reason(), "Forbidden");
    assert_eq!(
        big.message(),
        "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
    );
    // Under min.
    let small = h
        .post(PODS, &pod_with("small", json!({"cpu": "10m"}), json!({})))
        .await;
    assert_eq!(small.code(), 403);
    assert_eq!(
        small.message(),
        "pods \"small\" is forbidden: minimum cpu usage per Container is 50m, but request is 10m"
    );
    // Pod max over two containers.
    let mut two = pod_with("two", json!({}), json!({"memory": "600Mi"}));
    let c2 = two["spec"]["containers"][0].clone();
    let mut c2 = c2;
    c2["name"] = json!("d");
    two["spec"]["containers"].as_array_mut().unwrap().push(c2);
    let t = h.post(PODS, &two).await;
    assert_eq!(t.code(), 403);
    assert!(
        t.message()
            .contains("maximum memory usage per Pod is 1Gi, but limit is 1200Mi"),
        "{}",
        t.message()
    );
    assert_eq!(
        h.get("/api/v1/namespaces/default/pods").await.rv(),
        before,
        "rejections wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_holds_under_16_concurrent_creates_and_used_stays_exact() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let q = h
        .post(
            "/api/v1/namespaces/default/resourcequotas",
            &json!({
                "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute"},
                "spec": {"hard": {"pods": "5", "requests.cpu": "2", "requests.memory": "1Gi",
                                  "limits.cpu": "4", "limits.memory": "2Gi", "configmaps": "3",
                                  "count/deployments.apps": "1", "services": "1", "secrets": "10"}}
            }),
        )
        .await;
    assert_eq!(q.code(), 201, "{}", q.body);
    assert_eq!(q.body["status"]["used"]["pods"], "0");
    assert_eq!(q.body["status"]["hard"]["pods"], "5");

    // 16 concurrent pod creates: exactly 5 fit.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let base = srv.url.clone();
        tasks.push(tokio::spawn(async move {
            let h = Http::at(&base);
            let r = h
                .post(
                    PODS,
                    &pod_with(
                        &format!("q{i}"),
                        json!({"cpu": "100m", "memory": "64Mi"}),
                        json!({"cpu": "200m", "memory": "128Mi"}),
                    ),
                )
                .await;
            (r.code(), r.message().to_string())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (code, msg) = t.await.unwrap();
        match code {
            201 => ok += 1,
            403 => assert!(
                msg.contains(
                    "exceeded quota: compute, requested: pods=1, used: pods=5, limited: pods=5"
                ),
                "{msg}"
            ),
            other => panic!("unexpected {other}: {msg}"),
        }
    }
    assert_eq!(ok, 5);
    let used = |b: &Value| b["status"]["used"].clone();
    let qq = h
        .get("/api/v1/namespaces/default/resourcequotas/compute")
        .await;
    assert_eq!(used(&qq.body)["pods"], "5");
    assert_eq!(used(&qq.body)["requests.cpu"], "500m");
    assert_eq!(used(&qq.body)["requests.memory"], "320Mi");
    assert_eq!(used(&qq.body)["limits.cpu"], "1");
    assert_eq!(used(&qq.body)["limits.memory"], "640Mi");
    assert_eq!(h.get(PODS).await.body["items"].as_array().unwrap().len(), 5);

    // Pods without the required compute resources are refused with Kubernetes' message.
    let bare = h.post(PODS, &pod("bare")).await;
    assert_eq!(bare.code(), 403);
    assert!(
        bare.message()
            .contains("failed quota: compute: must specify"),
        "{}",
        bare.message()
    );

    // Objects going away free quota exactly; a pod that finished stops counting compute.
    let pods_now: Vec<String> = h.get(PODS).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        h.delete(&format!("{PODS}/{}", pods_now[4])).await.code(),
        200
    );
    let done = &pods_now[0];
    let st = h
        .patch(
            &format!("{PODS}/{done}/status"),
            "application/merge-patch+json",
            &json!({"status": {"phase": "Succeeded"}}),
        )
        .await;
    assert_eq!(st.code(), 200, "{}", st.body);
    let qq = h
        .get("/api/v1/namespaces/default/resourcequotas/compute")
        .await;
    assert_eq!(used(&qq.body)["pods"], "3");
    assert_eq!(used(&qq.body)["requests.cpu"], "300m");
    assert_eq!(used(&qq.body)["requests.memory"], "192Mi");

    // Object counts.
    for i in 0..3 {
        assert_eq!(
            h.post(
                "/api/v1/namespaces/default/configmaps",
                &configmap(&format!("c{i}"))
            )
            .await
            .code(),
            201
        );
    }
    let c = h
        .post("/api/v1/namespaces/default/configmaps", &configmap("c3"))
        .await;
    assert_eq!(c.code(), 403);
    assert_eq!(c.message(), "configmaps \"c3\" is forbidden: exceeded quota: compute, requested: configmaps=1, used: configmaps=3, limited: configmaps=3");
    assert_eq!(
        h.post(
            "/apis/apps/v1/namespaces/default/deployments",
            &deployment("d1", 1)
        )
        .await
        .code(),
        201
    );
    let d2 = h
        .post(
            "/apis/apps/v1/namespaces/default/deployments",
            &deployment("d2", 1),
        )
        .await;
    assert_eq!(d2.code(), 403);
    assert!(
        d2.message().contains("count/deployments.apps=1"),
        "{}",
        d2.message()
    );

    // A new quota computes usage from what exists.
    let q2 = h
        .post(
            "/api/v1/namespaces/default/resourcequotas",
            &json!({
                "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "counts"},
                "spec": {"hard": {"configmaps": "10", "pods": "10"}}
            }),
        )
        .await;
    assert_eq!(
        q2.body["status"]["used"],
        json!({"configmaps": "3", "pods": "3"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_counts_concurrent_creates_and_deletes_exactly() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    h.post(
        "/api/v1/namespaces/default/resourcequotas",
        &json!({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "cm"},
        "spec": {"hard": {"configmaps": "1000"}}}),
    )
    .await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let base = srv.url.clone();
        tasks.push(tokio::spawn(async move {
            let h = Http::at(&base);
            for i in 0..10 {
                h.post(
                    "/api/v1/namespaces/default/configmaps",
                    &configmap(&format!("w{w}-{i}")),
                )
                .await;
                if i % 3 == 0 {
                    h.delete(&format!("/api/v1/namespaces/default/configmaps/w{w}-{i}"))
                        .await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = h.get("/api/v1/namespaces/default/configmaps").await.body["items"]
        .as_array()
        .unwrap()
        .len();
    let q = h.get("/api/v1/namespaces/default/resourcequotas/cm").await;
    assert_eq!(q.body["status"]["used"]["configmaps"], n.to_string());
    assert_eq!(n, 16 * 6);
}
