//! The Rust `kube` crate (kube-rs 5 with k8s-openapi's `v1_33` types) against a running
//! `kapsel server` with TLS and the admin token, through the kubeconfig the server writes, with
//! a real local agent: CRUD of a ConfigMap and a Deployment (merge patch and server-side
//! apply with managedFields and a 409 conflict), a raw watch seeing ADDED/MODIFIED/DELETED,
//! the runtime `watcher` (list+watch and streaming lists), the scale subresource
//! (`get_scale`/`patch_scale`/`replace_scale`), `get_status`, `Api::<Pod>::logs`, and
//! 404/409 errors carrying Kubernetes' `Status`.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config};
use serde_json::json;
use tokio::sync::mpsc;

use kapsel_tests::local_cluster::start_cluster;
use kapsel_tests::*;

const WAIT: Duration = Duration::from_secs(120);

fn api_err(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Wait for the next item of `rx` for which `f` returns `Some`.
async fn next_match<T, R>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    what: &str,
    mut f: impl FnMut(&T) -> Option<R>,
) -> R {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) => {
                if let Some(r) = f(&ev) {
                    return r;
                }
            }
            Ok(None) => panic!("{what}: the stream ended"),
            Err(_) => panic!("{what}: timed out"),
        }
    }
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "ticker",
                    "image": "kt.local/ticker:v1",
                    "command": ["/bin/busybox", "sh", "-c",
                        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"],
                    "env": [{"name": "A", "value": "1"}]
                }]}
            }
        }
    }))
    .expect("deployment")
}

#[test]
fn kube_rs_drives_kapsel() {
    let test = "kube_rs_drives_kapsel";
    if !require_root(test) || !require_tools(test, &["busybox", "umount"]) {
        return;
    }
    let (_dir, _guard, server) = start_cluster("kt-kubers-");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            wait_nodes_ready(&server.client(), 1, Duration::from_secs(30)).await;
            let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
            let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("config");
            assert!(
                config.cluster_url.scheme_str() == Some("https"),
                "TLS: {}",
                config.cluster_url
            );
            let client = Client::try_from(config).expect("client");
            let v = client.apiserver_version().await.expect("/version");
            assert_eq!(v.major, "1");
            configmaps(client.clone()).await;
            deployments(client).await;
        });
    println!("kube-rs: ok");
}

async fn configmaps(client: Client) {
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    // A raw watch from the list's resourceVersion, and a streaming-list watcher.
    let list = cms.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.clone().expect("list rv");
    let mut raw = cms
        .watch(&WatchParams::default().timeout(290), &rv)
        .await
        .expect("watch")
        .boxed();
    let (tx, mut streamed) = mpsc::unbounded_channel();
    let w = watcher(
        cms.clone(),
        watcher::Config::default()
            .fields("metadata.name=kube-cm")
            .streaming_lists(),
    );
    let streaming = tokio::spawn(async move {
        let mut w = w.boxed();
        while let Some(ev) = w.try_next().await.expect("watcher") {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    next_match(&mut streamed, "InitDone of the streaming list", |e| {
        matches!(e, watcher::Event::InitDone).then_some(())
    })
    .await;

    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "kube-cm", "labels": {"t": "kube"}},
        "data": {"a": "1"}
    }))
    .expect("cm");
    let pp = PostParams {
        field_manager: Some("kube-test".into()),
        ..Default::default()
    };
    let created = cms.create(&pp, &cm).await.expect("create");
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert!(created.metadata.uid.is_some());
    let mf = created
        .metadata
        .managed_fields
        .clone()
        .expect("managedFields");
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("kube-test"));
    assert_eq!(mf[0].operation.as_deref(), Some("Update"));
    assert!(mf[0].time.is_some());

    let got = cms.get("kube-cm").await.expect("get");
    assert_eq!(
        got.data
            .as_ref()
            .and_then(|d| d.get("a"))
            .map(String::as_str),
        Some("1")
    );
    let listed = cms
        .list(&ListParams::default().labels("t=kube"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);

    let patched = cms
        .patch(
            "kube-cm",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"b": "2"}})),
        )
        .await
        .expect("merge patch");
    let data = patched.data.expect("data");
    assert_eq!((data["a"].as_str(), data["b"].as_str()), ("1", "2"));

    // Server-side apply: owns exactly what it applies; dropping a key removes it.
    let applied = cms
        .patch(
            "kube-cm",
            &PatchParams::apply("kube-apply"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-cm"},
                "data": {"c": "3"}
            })),
        )
        .await
        .expect("apply");
    let mf = applied.metadata.managed_fields.expect("managedFields");
    let entry = mf
        .iter()
        .find(|e| e.manager.as_deref() == Some("kube-apply"))
        .expect("the applier's entry");
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    assert_eq!(entry.fields_type.as_deref(), Some("FieldsV1"));
    assert_eq!(
        entry.fields_v1.as_ref().map(|f| &f.0),
        Some(&json!({"f:data": {"f:c": {}}}))
    );
    let applied = cms
        .patch(
            "kube-cm",
            &PatchParams::apply("kube-apply"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-cm"},
                "data": {"d": "4"}
            })),
        )
        .await
        .expect("apply again");
    let keys: Vec<String> = applied.data.expect("data").into_keys().collect();
    assert_eq!(keys, ["a", "b", "d"], "c removed: only kube-apply owned it");
    // Changing a field another manager owns conflicts, force takes it over.
    let conflict = cms
        .patch(
            "kube-cm",
            &PatchParams::apply("kube-other"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-cm"},
                "data": {"a": "changed"}
            })),
        )
        .await
        .map(|_| ())
        .map_err(api_err)
        .expect_err("a conflict");
    assert_eq!(conflict.code, 409);
    assert_eq!(conflict.reason, "Conflict");
    assert_eq!(
        conflict.message,
        "Apply failed with 1 conflict: conflict with \"kube-test\" using v1: .data.a"
    );
    let forced = cms
        .patch(
            "kube-cm",
            &PatchParams::apply("kube-other").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-cm"},
                "data": {"a": "changed"}
            })),
        )
        .await
        .expect("forced apply");
    assert_eq!(forced.data.expect("data")["a"], "changed");

    // 409 AlreadyExists, 404 NotFound.
    let e = api_err(cms.create(&pp, &cm).await.expect_err("duplicate"));
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "configmaps \"kube-cm\" already exists");
    let e = api_err(cms.get("nope").await.expect_err("missing"));
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "configmaps \"nope\" not found");
    assert!(cms.get_opt("nope").await.expect("get_opt").is_none());

    cms.delete("kube-cm", &DeleteParams::default())
        .await
        .expect("delete");

    // The raw watch saw ADDED, MODIFIED (x4) and DELETED of kube-cm, in order.
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("DELETED") {
        let ev = tokio::time::timeout(WAIT, raw.next())
            .await
            .expect("watch event in time")
            .expect("watch stream open")
            .expect("watch event");
        let (kind, cm) = match ev {
            WatchEvent::Added(c) => ("ADDED", c),
            WatchEvent::Modified(c) => ("MODIFIED", c),
            WatchEvent::Deleted(c) => ("DELETED", c),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("watch error: {e:?}"),
        };
        if cm.metadata.name.as_deref() == Some("kube-cm") {
            seen.push(kind.to_string());
        }
    }
    assert_eq!(
        seen,
        ["ADDED", "MODIFIED", "MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
    );
    // The streaming watcher saw it applied and deleted.
    next_match(&mut streamed, "watcher Apply", |e| {
        matches!(e, watcher::Event::Apply(c) if c.metadata.name.as_deref() == Some("kube-cm"))
            .then_some(())
    })
    .await;
    next_match(&mut streamed, "watcher Delete", |e| {
        matches!(e, watcher::Event::Delete(c) if c.metadata.name.as_deref() == Some("kube-cm"))
            .then_some(())
    })
    .await;
    streaming.abort();
}

async fn deployments(client: Client) {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    // The list+watch watcher (with bookmarks) on the deployment.
    let (tx, mut events) = mpsc::unbounded_channel();
    let w = watcher(
        deps.clone(),
        watcher::Config::default().labels("app=kube-web"),
    );
    let watching = tokio::spawn(async move {
        let mut w = w.boxed();
        while let Some(ev) = w.try_next().await.expect("watcher") {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    let ready = |n: i32| {
        move |e: &watcher::Event<Deployment>| match e {
            watcher::Event::Apply(d) | watcher::Event::InitApply(d) => {
                let s = d.status.as_ref()?;
                let want = d.spec.as_ref()?.replicas? == n
                    && s.ready_replicas.unwrap_or(0) == n
                    && s.updated_replicas.unwrap_or(0) == n
                    && s.replicas.unwrap_or(0) == n
                    && s.observed_generation == d.metadata.generation;
                want.then_some(())
            }
            _ => None,
        }
    };

    let pp = PostParams {
        field_manager: Some("kube-test".into()),
        ..Default::default()
    };
    let created = deps
        .create(&pp, &deployment("kube-web"))
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    next_match(&mut events, "kube-web ready with 1 replica", ready(1)).await;

    // Status and list.
    let st = deps.get_status("kube-web").await.expect("get_status");
    assert_eq!(st.status.as_ref().and_then(|s| s.ready_replicas), Some(1));
    let listed = deps.list(&ListParams::default()).await.expect("list");
    assert!(listed
        .items
        .iter()
        .any(|d| d.metadata.name.as_deref() == Some("kube-web")));

    // Merge patch of a label.
    let patched = deps
        .patch(
            "kube-web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        patched
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("a")
    );

    // Server-side apply of the env, then a conflicting replicas apply.
    let applied = deps
        .patch(
            "kube-web",
            &PatchParams::apply("kube-apply"),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "kube-web"},
                "spec": {"template": {"spec": {"containers": [
                    {"name": "ticker", "env": [{"name": "B", "value": "2"}]}
                ]}}}
            })),
        )
        .await
        .expect("apply");
    let env = applied
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod spec")
        .containers[0]
        .env
        .clone()
        .expect("env");
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["A", "B"], "merged by name");
    let e = api_err(
        deps.patch(
            "kube-web",
            &PatchParams::apply("kube-apply"),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "kube-web"},
                "spec": {"replicas": 5}
            })),
        )
        .await
        .expect_err("conflict"),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"kube-test\" using apps/v1: .spec.replicas"
    );
    let causes = e
        .details
        .as_ref()
        .map(|d| d.causes.clone())
        .unwrap_or_default();
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].field, ".spec.replicas");
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    next_match(&mut events, "the applied env rolled out", ready(1)).await;

    // Scale: get_scale, patch_scale, replace_scale.
    let scale = deps.get_scale("kube-web").await.expect("get_scale");
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(1));
    let scaled = deps
        .patch_scale(
            "kube-web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("patch_scale");
    assert_eq!(scaled.spec.as_ref().and_then(|s| s.replicas), Some(2));
    next_match(&mut events, "kube-web ready with 2 replicas", ready(2)).await;
    let mut scale = deps.get_scale("kube-web").await.expect("get_scale");
    assert_eq!(scale.status.as_ref().map(|s| s.replicas), Some(2));
    scale.spec.as_mut().expect("scale spec").replicas = Some(1);
    deps.replace_scale("kube-web", &PostParams::default(), &scale)
        .await
        .expect("replace_scale");
    next_match(&mut events, "kube-web back at 1 replica", ready(1)).await;

    // Logs of the pod.
    let pod_list = pods
        .list(&ListParams::default().labels("app=kube-web"))
        .await
        .expect("pods");
    let pod = pod_list
        .items
        .iter()
        .find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .and_then(|p| p.metadata.name.clone())
        .expect("a running pod");
    let lp = LogParams {
        tail_lines: Some(1),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let line = loop {
        let out = pods.logs(&pod, &lp).await.expect("logs");
        if out.starts_with("tick ") {
            break out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line: {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(line.lines().count(), 1, "{line:?}");
    let n = line.trim_end().strip_prefix("tick ").expect("tick");
    assert!(n.parse::<u64>().is_ok(), "{line:?}");

    // Delete: the watcher sees it go.
    deps.delete("kube-web", &DeleteParams::background())
        .await
        .expect("delete");
    next_match(&mut events, "watcher Delete", |e| {
        matches!(e, watcher::Event::Delete(d) if d.metadata.name.as_deref() == Some("kube-web"))
            .then_some(())
    })
    .await;
    watching.abort();
    // The pods go with it (garbage collection), so the guard finds nothing left running.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = pods
            .list(&ListParams::default().labels("app=kube-web"))
            .await
            .expect("pods");
        if left.items.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "pods left behind");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
