//! REST semantics: optimistic concurrency, generation, patch, subresources, deletion,
//! namespaces, list paging and selectors, discovery.

use crate::common;

use common::*;
use serde_json::{json, Value};

const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

#[tokio::test]
async fn stale_resource_version_is_409_conflict() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let c = h.post(DEPLOYS, &deployment("web", 1)).await;
    assert_eq!(c.code(), 201, "{}", c.body);
    let mut a = c.body.clone();
    a["spec"]["replicas"] = json!(2);
    let ok = h.put(&format!("{DEPLOYS}/web"), &a).await;
    assert_eq!(ok.code(), 200, "{}", ok.body);
    // The same (now stale) resourceVersion again.
    let mut b = c.body.clone();
    b["spec"]["replicas"] = json!(3);
    let stale = h.put(&format!("{DEPLOYS}/web"), &b).await;
    assert_eq!(stale.code(), 409);
    assert_eq!(stale.reason(), "Conflict");
    assert_eq!(
        stale.message(),
        "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(
        h.get(&format!("{DEPLOYS}/web")).await.body["spec"]["replicas"],
        2
    );
    // A patch carrying a stale resourceVersion is a conflict too; without one it never is.
    let p = h
        .patch(
            &format!("{DEPLOYS}/web"),
            "application/merge-patch+json",
            &json!({"metadata": {"resourceVersion": c.rv()}, "spec": {"replicas": 4}}),
        )
        .await;
    assert_eq!(p.code(), 409);
    let p = h
        .patch(
            &format!("{DEPLOYS}/web"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 4}}),
        )
        .await;
    assert_eq!(p.code(), 200);
    // Delete preconditions.
    let d = h
        .delete_with(
            &format!("{DEPLOYS}/web"),
            &json!({"preconditions": {"resourceVersion": c.rv()}}),
        )
        .await;
    assert_eq!(d.code(), 409);
    let d = h
        .delete_with(
            &format!("{DEPLOYS}/web"),
            &json!({"preconditions": {"uid": "nope"}}),
        )
        .await;
    assert_eq!(d.code(), 409);
    assert!(
        d.message()
            .contains("Precondition failed: UID in precondition: nope"),
        "{}",
        d.message()
    );
}

#[tokio::test]
async fn concurrent_updates_with_the_same_version_exactly_one_wins() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let c = h
        .post("/api/v1/namespaces/default/configmaps", &configmap("race"))
        .await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let base = srv.url.clone();
        let mut body = c.body.clone();
        body["data"]["k"] = json!(format!("v{i}"));
        tasks.push(tokio::spawn(async move {
            Http::at(&base)
                .put("/api/v1/namespaces/default/configmaps/race", &body)
                .await
                .code()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 409).count(), 7, "{codes:?}");
}

#[tokio::test]
async fn generation_moves_only_with_spec_changes() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let path = format!("{DEPLOYS}/gen");
    let c = h.post(DEPLOYS, &deployment("gen", 1)).await;
    assert_eq!(c.body["metadata"]["generation"], 1);
    // Kubernetes defaults were applied.
    assert_eq!(c.body["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        c.body["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        "25%"
    );
    assert_eq!(c.body["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(c.body["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(
        c.body["spec"]["template"]["spec"]["restartPolicy"],
        "Always"
    );
    assert_eq!(
        c.body["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        30
    );

    // Metadata-only change: no bump.
    let m = h
        .patch(
            &path,
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await;
    assert_eq!(m.code(), 200);
    assert_eq!(m.body["metadata"]["generation"], 1);
    // Status change through /status: no bump.
    let s = h
        .patch(
            &format!("{path}/status"),
            "application/merge-patch+json",
            &json!({"status": {"observedGeneration": 1, "replicas": 1}}),
        )
        .await;
    assert_eq!(s.code(), 200, "{}", s.body);
    assert_eq!(s.body["metadata"]["generation"], 1);
    assert_eq!(s.body["status"]["replicas"], 1);
    // Status in a main-resource update is ignored.
    let mut body = s.body.clone();
    body["status"]["replicas"] = json!(99);
    let u = h.put(&path, &body).await;
    assert_eq!(u.code(), 200);
    assert_eq!(u.body["status"]["replicas"], 1);
    assert_eq!(u.body["metadata"]["generation"], 1);
    // A no-op update does not even change the resourceVersion.
    assert_eq!(u.rv(), s.rv());
    // Spec changes in /status are ignored.
    let s2 = h
        .patch(
            &format!("{path}/status"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 7}}),
        )
        .await;
    assert_eq!(s2.body["spec"]["replicas"], 1);
    // Spec change: +1, and again.
    let p = h
        .patch(
            &path,
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 3}}),
        )
        .await;
    assert_eq!(p.body["metadata"]["generation"], 2);
    let p = h
        .patch(&path, "application/json-patch+json",
               &json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.26"}]))
        .await;
    assert_eq!(p.code(), 200, "{}", p.body);
    assert_eq!(p.body["metadata"]["generation"], 3);
    // Scale changes replicas and bumps generation.
    let sc = h.get(&format!("{path}/scale")).await;
    assert_eq!(sc.body["kind"], "Scale");
    assert_eq!(sc.body["apiVersion"], "autoscaling/v1");
    assert_eq!(sc.body["spec"]["replicas"], 3);
    assert_eq!(sc.body["status"]["selector"], "app=gen");
    let sc = h
        .patch(
            &format!("{path}/scale"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 5}}),
        )
        .await;
    assert_eq!(sc.code(), 200, "{}", sc.body);
    assert_eq!(sc.body["spec"]["replicas"], 5);
    let g = h.get(&path).await;
    assert_eq!(g.body["spec"]["replicas"], 5);
    assert_eq!(g.body["metadata"]["generation"], 4);
    // PUT scale with a stale resourceVersion.
    let stale = h
        .put(&format!("{path}/scale"),
             &json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "gen", "resourceVersion": c.rv()}, "spec": {"replicas": 1}}))
        .await;
    assert_eq!(stale.code(), 409);
    let neg = h
        .patch(
            &format!("{path}/scale"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": -1}}),
        )
        .await;
    assert_eq!(neg.code(), 422);
}

#[tokio::test]
async fn strategic_merge_patch_from_kubectl_apply() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let mut d = deployment("smp", 1);
    d["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}]);
    h.post(DEPLOYS, &d).await;
    let p = h
        .patch(&format!("{DEPLOYS}/smp"), "application/strategic-merge-patch+json",
               &json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "c"}],
                 "containers": [{"name": "c", "image": "nginx:1.27", "env": [{"name": "B", "value": "2"}]}]}}}}))
        .await;
    assert_eq!(p.code(), 200, "{}", p.body);
    let c = &p.body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:1.27");
    assert_eq!(c["env"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn binding_assigns_a_node_once() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    h.post("/api/v1/namespaces/default/pods", &pod("web-1"))
        .await;
    let bind = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web-1"},
                      "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}});
    let b = h
        .post("/api/v1/namespaces/default/pods/web-1/binding", &bind)
        .await;
    assert_eq!(b.code(), 201, "{}", b.body);
    assert_eq!(b.body["status"], "Success");
    let p = h.get("/api/v1/namespaces/default/pods/web-1").await;
    assert_eq!(p.body["spec"]["nodeName"], "n1");
    let conds = p.body["status"]["conditions"].as_array().unwrap();
    assert!(conds
        .iter()
        .any(|c| c["type"] == "PodScheduled" && c["status"] == "True"));
    let mut again = bind.clone();
    again["target"]["name"] = json!("n2");
    let b2 = h
        .post("/api/v1/namespaces/default/pods/web-1/binding", &again)
        .await;
    assert_eq!(b2.code(), 409);
    assert!(
        b2.message()
            .contains("pod web-1 is already assigned to node \"n1\""),
        "{}",
        b2.message()
    );
}

#[tokio::test]
async fn pod_deletion_is_graceful_once_bound() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let pods = "/api/v1/namespaces/default/pods";
    // Unbound: deleted at once.
    h.post(pods, &pod("a")).await;
    assert_eq!(h.delete(&format!("{pods}/a")).await.code(), 200);
    assert_eq!(h.get(&format!("{pods}/a")).await.code(), 404);
    // Bound: kept with deletionTimestamp until the kubelet deletes with grace 0.
    h.post(pods, &pod("b")).await;
    h.post(
        &format!("{pods}/b/binding"),
        &json!({"target": {"kind": "Node", "name": "n1"}}),
    )
    .await;
    let d = h.delete(&format!("{pods}/b")).await;
    assert_eq!(d.code(), 200);
    assert!(d.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(d.body["metadata"]["deletionGracePeriodSeconds"], 30);
    assert_eq!(h.get(&format!("{pods}/b")).await.code(), 200);
    let f = h
        .delete_with(&format!("{pods}/b"), &json!({"gracePeriodSeconds": 0}))
        .await;
    assert_eq!(f.code(), 200);
    assert_eq!(h.get(&format!("{pods}/b")).await.code(), 404);
}

#[tokio::test]
async fn finalizers_keep_an_object_until_removed() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let cms = "/api/v1/namespaces/default/configmaps";
    let mut cm = configmap("fin");
    cm["metadata"]["finalizers"] = json!(["example.com/keep"]);
    h.post(cms, &cm).await;
    let d = h.delete(&format!("{cms}/fin")).await;
    assert_eq!(d.code(), 200);
    assert!(d.body["metadata"]["deletionTimestamp"].is_string());
    // No new finalizers while deleting.
    let add = h
        .patch(
            &format!("{cms}/fin"),
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": ["example.com/keep", "other"]}}),
        )
        .await;
    assert_eq!(add.code(), 422, "{}", add.body);
    let rm = h
        .patch(
            &format!("{cms}/fin"),
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(rm.code(), 200, "{}", rm.body);
    assert_eq!(h.get(&format!("{cms}/fin")).await.code(), 404);

    // Foreground and Orphan add their finalizers.
    h.post(DEPLOYS, &deployment("fg", 1)).await;
    let d = h
        .delete_with(
            &format!("{DEPLOYS}/fg"),
            &json!({"propagationPolicy": "Foreground"}),
        )
        .await;
    assert_eq!(
        d.body["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    h.post(DEPLOYS, &deployment("or", 1)).await;
    let d = h
        .delete(&format!("{DEPLOYS}/or?propagationPolicy=Orphan"))
        .await;
    assert_eq!(d.body["metadata"]["finalizers"], json!(["orphan"]));
    let bad = h
        .delete_with(
            &format!("{DEPLOYS}/or"),
            &json!({"propagationPolicy": "Sideways"}),
        )
        .await;
    assert_eq!(bad.code(), 400);
}

#[tokio::test]
async fn deleting_a_namespace_deletes_everything_in_it() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let ns = h
        .post(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        )
        .await;
    assert_eq!(ns.code(), 201, "{}", ns.body);
    assert_eq!(ns.body["status"]["phase"], "Active");
    for i in 0..5 {
        assert_eq!(
            h.post(
                "/api/v1/namespaces/team/configmaps",
                &configmap(&format!("c{i}"))
            )
            .await
            .code(),
            201
        );
    }
    assert_eq!(
        h.post(
            "/apis/apps/v1/namespaces/team/deployments",
            &deployment("d", 1)
        )
        .await
        .code(),
        201
    );
    h.post(
        "/api/v1/namespaces/default/configmaps",
        &configmap("survivor"),
    )
    .await;
    let d = h.delete("/api/v1/namespaces/team").await;
    assert_eq!(d.code(), 200, "{}", d.body);
    assert_eq!(d.body["status"]["phase"], "Terminating");
    assert_eq!(h.get("/api/v1/namespaces/team").await.code(), 404);
    assert_eq!(
        h.get("/api/v1/namespaces/team/configmaps").await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        h.get("/apis/apps/v1/namespaces/team/deployments")
            .await
            .body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        h.get("/api/v1/namespaces/default/configmaps/survivor")
            .await
            .code(),
        200
    );
    // Creating in a missing namespace is a 404; the system namespaces cannot be deleted.
    let c = h
        .post("/api/v1/namespaces/team/configmaps", &configmap("late"))
        .await;
    assert_eq!(c.code(), 404);
    assert_eq!(c.message(), "namespaces \"team\" not found");
    let k = h.delete("/api/v1/namespaces/kube-system").await;
    assert_eq!(k.code(), 403);
}

#[tokio::test]
async fn terminating_namespace_refuses_new_content() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "slow", "finalizers": ["example.com/wait"]}});
    h.post("/api/v1/namespaces", &ns).await;
    let d = h.delete("/api/v1/namespaces/slow").await;
    assert_eq!(d.code(), 200);
    assert_eq!(
        h.get("/api/v1/namespaces/slow").await.body["status"]["phase"],
        "Terminating"
    );
    let c = h
        .post("/api/v1/namespaces/slow/configmaps", &configmap("x"))
        .await;
    assert_eq!(c.code(), 403);
    assert_eq!(c.reason(), "Forbidden");
    assert!(
        c.message().contains("because it is being terminated"),
        "{}",
        c.message()
    );
    ns["metadata"]["finalizers"] = Value::Null;
    let rm = h
        .patch(
            "/api/v1/namespaces/slow",
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(rm.code(), 200, "{}", rm.body);
    assert_eq!(h.get("/api/v1/namespaces/slow").await.code(), 404);
}

#[tokio::test]
async fn list_selectors_paging_and_generate_name() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let pods = "/api/v1/namespaces/default/pods";
    for i in 0..7 {
        let mut p = pod(&format!("p{i}"));
        p["metadata"]["labels"] =
            json!({"app": if i % 2 == 0 { "even" } else { "odd" }, "i": i.to_string()});
        assert_eq!(h.post(pods, &p).await.code(), 201);
    }
    h.post(
        &format!("{pods}/p3/binding"),
        &json!({"target": {"name": "n1"}}),
    )
    .await;
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let l = h.get(&format!("{pods}?labelSelector=app%3Deven")).await;
    assert_eq!(names(&l.body), vec!["p0", "p2", "p4", "p6"]);
    let l = h
        .get(&format!("{pods}?labelSelector=app%20in%20(odd),i!%3D1"))
        .await;
    assert_eq!(names(&l.body), vec!["p3", "p5"]);
    let l = h
        .get(&format!("{pods}?fieldSelector=spec.nodeName%3Dn1"))
        .await;
    assert_eq!(names(&l.body), vec!["p3"]);
    let l = h
        .get(&format!("{pods}?fieldSelector=metadata.name%3Dp5"))
        .await;
    assert_eq!(names(&l.body), vec!["p5"]);
    let l = h
        .get("/api/v1/pods?fieldSelector=metadata.namespace%3Ddefault,status.phase%3DPending")
        .await;
    assert_eq!(names(&l.body).len(), 7);
    // Paging: 3 + 3 + 1 with continue tokens, also with a selector.
    let mut all = Vec::new();
    let mut cont = String::new();
    let mut pages = 0;
    loop {
        let url = if cont.is_empty() {
            format!("{pods}?limit=3")
        } else {
            format!("{pods}?limit=3&continue={cont}")
        };
        let r = h.get(&url).await;
        pages += 1;
        all.extend(names(&r.body));
        match r.body["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(all.len(), 7);
    let r = h
        .get(&format!("{pods}?limit=2&labelSelector=app%3Dodd"))
        .await;
    assert_eq!(names(&r.body), vec!["p1", "p3"]);
    let c = r.body["metadata"]["continue"].as_str().unwrap().to_string();
    let r = h
        .get(&format!(
            "{pods}?limit=2&labelSelector=app%3Dodd&continue={c}"
        ))
        .await;
    assert_eq!(names(&r.body), vec!["p5"]);
    // generateName.
    let mut g = pod("");
    g["metadata"] = json!({"generateName": "web-"});
    let c = h.post(pods, &g).await;
    assert_eq!(c.code(), 201, "{}", c.body);
    let n = c.body["metadata"]["name"].as_str().unwrap();
    assert!(n.starts_with("web-") && n.len() == 9, "{n}");
    // deletecollection with a selector.
    let d = h.delete(&format!("{pods}?labelSelector=app%3Deven")).await;
    assert_eq!(d.code(), 200);
    assert_eq!(d.body["items"].as_array().unwrap().len(), 4);
    assert_eq!(
        names(
            &h.get(&format!("{pods}?labelSelector=app%3Deven"))
                .await
                .body
        )
        .len(),
        0
    );
}

#[tokio::test]
async fn discovery_and_health() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    assert_eq!(h.get("/healthz").await.code(), 200);
    assert_eq!(h.get("/readyz").await.code(), 200);
    let v = h.get("/version").await;
    assert_eq!(v.body["major"], "1");
    assert_eq!(h.get("/api").await.body["versions"], json!(["v1"]));
    let apis = h.get("/apis").await;
    let groups: Vec<&str> = apis.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        vec![
            "apps",
            "coordination.k8s.io",
            "rbac.authorization.k8s.io",
            "kapsel.dev"
        ]
    );
    let core = h.get("/api/v1").await;
    let res = core.body["resources"].as_array().unwrap();
    let pods = res.iter().find(|r| r["name"] == "pods").unwrap();
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["namespaced"], true);
    assert_eq!(pods["categories"], json!(["all"]));
    assert!(res.iter().any(|r| r["name"] == "pods/binding"));
    let apps = h.get("/apis/apps/v1").await;
    assert!(apps.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "deployments/scale" && r["kind"] == "Scale"));
    assert_eq!(h.get("/apis/coordination.k8s.io/v1").await.code(), 200);
    assert_eq!(h.get("/openapi/v2").await.code(), 200);
    assert_eq!(h.get("/openapi/v3").await.code(), 200);
    let nf = h.get("/apis/nope/v1").await;
    assert_eq!(nf.code(), 404);
    assert_eq!(nf.body["kind"], "Status");
}

#[tokio::test]
async fn leases_nodes_and_events_work_too() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let node = h
        .post(
            "/api/v1/nodes",
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}),
        )
        .await;
    assert_eq!(node.code(), 201, "{}", node.body);
    let st = h
        .patch(
            "/api/v1/nodes/n1/status",
            "application/merge-patch+json",
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .await;
    assert_eq!(st.code(), 200, "{}", st.body);
    let lease = h.post("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"},
                "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}})).await;
    assert_eq!(lease.code(), 201, "{}", lease.body);
    let ev = h.post("/api/v1/namespaces/default/events", &json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "x", "namespace": "default"},
        "reason": "Scheduled", "message": "ok", "type": "Normal"})).await;
    assert_eq!(ev.code(), 201, "{}", ev.body);
    let l = h.get("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dx,reason%3DScheduled").await;
    assert_eq!(l.body["items"].as_array().unwrap().len(), 1);
    let svc = h.post("/api/v1/namespaces/default/services", &json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).await;
    assert_eq!(svc.code(), 201, "{}", svc.body);
    let sec = h
        .post(
            "/api/v1/namespaces/default/secrets",
            &json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s"}, "data": {"k": "dmFsdWU="}}),
        )
        .await;
    assert_eq!(sec.code(), 201, "{}", sec.body);
}
