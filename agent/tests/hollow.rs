//! In-process integration: API server + hollow agents over the gRPC component API (no root).

use crate::common;

use std::time::Duration;

use common::*;
use kapsel_agent::hollow;
use kapsel_api::client::Client;
use kapsel_api::{
    ConfigMap, DeleteOptions, EnvVar, EnvVarSource, KeySelector, Lease, Node, ObjectMeta,
};
use kapsel_runtime::{ExitStatus, Runtime};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registration_lease_renewal_and_status_updates() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let _a = hollow::start(&srv.url, "n1", dir.path(), |c| {
        c.lease_renew_interval = Duration::from_millis(200);
        c.status_update_interval = Duration::from_millis(300);
        c.node_labels.insert("zone".into(), "lab".into());
        c.register_with_taints =
            kapsel_agent::config::parse_taints("dedicated=ci:NoSchedule").unwrap();
    })
    .unwrap();
    let client = Client::new(&srv.url).unwrap();
    let nodes = client.api::<Node>(None);
    let leases = client.api::<Lease>(Some("kube-node-lease"));
    let node = tokio::time::timeout(T, async {
        loop {
            if let Ok(Some(n)) = nodes.get_opt("n1").await {
                if n.status.as_ref().is_some_and(|s| !s.conditions.is_empty()) {
                    return n;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("node registered");
    let l = &node.metadata.labels;
    assert_eq!(l["kubernetes.io/hostname"], "n1");
    assert_eq!(l["kubernetes.io/os"], "linux");
    assert!(l.contains_key("kubernetes.io/arch"));
    assert_eq!(l["zone"], "lab");
    assert_eq!(node.spec.as_ref().unwrap().taints[0].key, "dedicated");
    let st = node.status.clone().unwrap();
    for r in ["cpu", "memory", "pods"] {
        assert!(st.capacity.contains_key(r), "capacity {r}");
        assert!(st.allocatable.contains_key(r), "allocatable {r}");
    }
    assert_eq!(st.capacity["pods"].as_str(), "110");
    let conds: Vec<&str> = st.conditions.iter().map(|c| c.type_.as_str()).collect();
    for c in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(conds.contains(&c), "condition {c}");
    }
    let info = st.node_info.unwrap();
    assert!(!info.kernel_version.is_empty());
    assert!(info.container_runtime_version.contains("cgroup"));

    // Lease renewals: renewTime moves.
    let first = tokio::time::timeout(T, async {
        loop {
            if let Ok(Some(l)) = leases.get_opt("n1").await {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("lease created");
    let spec = first.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
    let t0 = spec.renew_time.unwrap();
    tokio::time::timeout(T, async {
        loop {
            let l = leases.get("n1").await.unwrap();
            if l.spec.unwrap().renew_time.unwrap() != t0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("lease renewed");

    // Status updates: heartbeat time moves.
    let hb = |n: &Node| {
        n.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .last_heartbeat_time
    };
    let h0 = hb(&node);
    tokio::time::timeout(T, async {
        loop {
            let n = nodes.get("n1").await.unwrap();
            if hb(&n) != h0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("node status updated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_pod_lifecycle_with_init_container_and_graceful_delete() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let a = hollow::start(&srv.url, "n1", dir.path(), |_| {}).unwrap();
    let api = pods(&srv.url);
    let mut p = pod(
        "web",
        "n1",
        vec![
            container("a", "img", &["run"]),
            container("b", "img", &["run"]),
        ],
    );
    p.spec.as_mut().unwrap().init_containers = vec![container("init", "img", &["init"])];
    api.create(&p).await.unwrap();
    // The hollow init container "runs" until told to exit.
    let _ = wait_pod(&api, "web", T, |p| {
        p.status.as_ref().is_some_and(|s| {
            s.init_container_statuses
                .first()
                .is_some_and(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
        })
    })
    .await;
    let got = api.get("web").await.unwrap();
    assert_eq!(phase(&got), "Pending");
    assert_eq!(
        waiting_reason(&got, "a").as_deref(),
        Some("PodInitializing")
    );
    let uid = got.metadata.uid().to_string();
    let init_id = kapsel_runtime::ContainerId::new(format!("{uid}-init-0")).unwrap();
    a.runtime
        .exit(
            &init_id,
            ExitStatus {
                code: 0,
                signal: None,
                oom_killed: false,
            },
        )
        .unwrap();
    let running = wait_pod(&api, "web", T, |p| {
        phase(p) == "Running" && condition(p, "Ready").as_deref() == Some("True")
    })
    .await;
    let st = running.status.unwrap();
    assert_eq!(st.container_statuses.len(), 2);
    for c in &st.container_statuses {
        assert!(c.ready && c.restart_count == 0 && c.state.as_ref().unwrap().running.is_some());
    }
    let init = &st.init_container_statuses[0];
    assert_eq!(
        init.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("Completed")
    );
    for c in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(
            st.conditions
                .iter()
                .any(|x| x.type_ == c && x.status == "True"),
            "{c}"
        );
    }
    assert!(st.start_time.is_some());
    assert_eq!(st.host_ip.as_deref(), Some("10.244.0.1"));

    // Graceful delete: the agent kills the containers and removes the object.
    api.delete(
        "web",
        &DeleteOptions {
            grace_period_seconds: Some(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_gone(&api, "web", T).await;
    assert!(a.runtime.list().unwrap().is_empty(), "no container left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_crash_loop_backoff_and_restart_policies() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let a = hollow::start(&srv.url, "n1", dir.path(), |c| {
        c.backoff.initial = Duration::from_millis(300);
    })
    .unwrap();
    let api = pods(&srv.url);
    let mk = |name: &str, policy: &str| {
        let mut p = pod(name, "n1", vec![container("c", "img", &["x"])]);
        p.spec.as_mut().unwrap().restart_policy = Some(policy.into());
        p
    };
    for (n, pol) in [
        ("always", "Always"),
        ("onfail", "OnFailure"),
        ("never", "Never"),
        ("onfail-ok", "OnFailure"),
    ] {
        api.create(&mk(n, pol)).await.unwrap();
    }
    let mut uids = std::collections::HashMap::new();
    for n in ["always", "onfail", "never", "onfail-ok"] {
        let p = wait_pod(&api, n, T, |p| phase(p) == "Running").await;
        uids.insert(n, p.metadata.uid().to_string());
    }
    let exit = |n: &str, attempt: u32, code: i32| {
        let id = kapsel_runtime::ContainerId::new(format!("{}-c-{attempt}", uids[n])).unwrap();
        a.runtime
            .exit(
                &id,
                ExitStatus {
                    code,
                    signal: None,
                    oom_killed: false,
                },
            )
            .unwrap();
    };
    exit("always", 0, 1);
    exit("onfail", 0, 1);
    exit("never", 0, 1);
    exit("onfail-ok", 0, 0);
    let p = wait_pod(&api, "always", T, |p| {
        waiting_reason(p, "c").as_deref() == Some("CrashLoopBackOff")
    })
    .await;
    assert_eq!(
        cstatus(&p, "c")
            .unwrap()
            .last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        1
    );
    wait_pod(&api, "always", T, |p| {
        cstatus(p, "c").is_some_and(|c| {
            c.restart_count == 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
        })
    })
    .await;
    wait_pod(&api, "onfail", T, |p| {
        cstatus(p, "c").is_some_and(|c| c.restart_count == 1)
    })
    .await;
    let never = wait_pod(&api, "never", T, |p| phase(p) == "Failed").await;
    assert_eq!(cstatus(&never, "c").unwrap().restart_count, 0);
    assert_eq!(
        cstatus(&never, "c")
            .unwrap()
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        1
    );
    let ok = wait_pod(&api, "onfail-ok", T, |p| phase(p) == "Succeeded").await;
    assert_eq!(cstatus(&ok, "c").unwrap().restart_count, 0);

    // Growing backoff: second crash waits longer (0.3 s, then 0.6 s).
    let t1 = std::time::Instant::now();
    exit("always", 1, 1);
    wait_pod(&api, "always", T, |p| {
        cstatus(p, "c").is_some_and(|c| {
            c.restart_count == 2 && c.state.as_ref().is_some_and(|s| s.running.is_some())
        })
    })
    .await;
    assert!(
        t1.elapsed() >= Duration::from_millis(550),
        "second restart waited {:?}",
        t1.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_bad_input_gets_a_reason_and_others_keep_running() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let _a = hollow::start(&srv.url, "n1", dir.path(), |c| {
        c.backoff.initial = Duration::from_millis(200)
    })
    .unwrap();
    let api = pods(&srv.url);
    let mut bad = pod("bad", "n1", vec![container("c", "img", &["x"])]);
    bad.spec.as_mut().unwrap().containers[0].env = vec![EnvVar {
        name: "X".into(),
        value: None,
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(KeySelector {
                name: Some("missing".into()),
                key: "k".into(),
                optional: None,
            }),
            ..Default::default()
        }),
    }];
    api.create(&bad).await.unwrap();
    api.create(&pod("good", "n1", vec![container("c", "img", &["x"])]))
        .await
        .unwrap();
    let p = wait_pod(&api, "bad", T, |p| {
        waiting_reason(p, "c").as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    let msg = cstatus(&p, "c")
        .unwrap()
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(msg.contains("configmap \"missing\" not found"), "{msg}");
    wait_pod(&api, "good", T, |p| phase(p) == "Running").await;
    // Creating the ConfigMap fixes the pod on the next attempt.
    let cms = Client::new(&srv.url)
        .unwrap()
        .api::<ConfigMap>(Some("default"));
    let mut cm = ConfigMap::with_meta(ObjectMeta::namespaced("default", "missing"));
    cm.data.insert("k".into(), "v".into());
    cms.create(&cm).await.unwrap();
    wait_pod(&api, "bad", T, |p| phase(p) == "Running").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_restart_adopts_running_and_kills_deleted() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let a = hollow::start(&srv.url, "n1", dir.path(), |_| {}).unwrap();
    let api = pods(&srv.url);
    api.create(&pod("keep", "n1", vec![container("c", "img", &["x"])]))
        .await
        .unwrap();
    api.create(&pod("drop", "n1", vec![container("c", "img", &["x"])]))
        .await
        .unwrap();
    let keep = wait_pod(&api, "keep", T, |p| phase(p) == "Running").await;
    let dropped = wait_pod(&api, "drop", T, |p| phase(p) == "Running").await;
    let rt = a.runtime.clone();
    drop(a.handle); // the agent dies; its containers stay
    let before = rt.list().unwrap();
    assert_eq!(before.len(), 2);
    // Force-delete one pod while no agent runs.
    api.delete(
        "drop",
        &DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // A new agent on the same runtime.
    let mut cfg = kapsel_agent::AgentConfig::new(&srv.url, "n1", dir.path().join("n1"));
    cfg.hollow = true;
    cfg.node_ip = Some("10.244.0.1".into());
    let agent = kapsel_agent::Agent::connect(
        cfg,
        rt.clone(),
        std::sync::Arc::new(kapsel_agent::HollowImages),
    )
    .unwrap();
    let _h = agent.spawn();
    tokio::time::timeout(T, async {
        loop {
            let l = rt.list().unwrap();
            if l.len() == 1 {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the deleted pod's container is removed");
    let left = rt.list().unwrap();
    assert_eq!(left[0].labels["kapsel.pod.uid"], keep.metadata.uid());
    assert!(
        before.iter().any(|c| c.id == left[0].id),
        "same container, not a new one"
    );
    assert_ne!(left[0].labels["kapsel.pod.uid"], dropped.metadata.uid());
    let p = api.get("keep").await.unwrap();
    assert_eq!(cstatus(&p, "c").unwrap().restart_count, 0);
    assert_eq!(phase(&p), "Running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_hollow_agents_in_one_process() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let agents = hollow::start_many(&srv.url, "h", 5, dir.path()).unwrap();
    let api = pods(&srv.url);
    for (i, a) in agents.iter().enumerate() {
        api.create(&pod(
            &format!("p{i}"),
            &a.node_name,
            vec![container("c", "img", &["x"])],
        ))
        .await
        .unwrap();
    }
    for i in 0..agents.len() {
        wait_pod(&api, &format!("p{i}"), T, |p| phase(p) == "Running").await;
    }
    for a in &agents {
        assert_eq!(a.runtime.list().unwrap().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_pod_usage_served_as_metrics_for_top() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let _a = hollow::start(&srv.url, "n1", dir.path(), |c| {
        c.stats_interval = Duration::from_millis(200)
    })
    .unwrap();
    let api = pods(&srv.url);
    api.create(&pod("m", "n1", vec![container("c", "img", &["x"])]))
        .await
        .unwrap();
    wait_pod(&api, "m", T, |p| phase(p) == "Running").await;
    let client = Client::new(&srv.url).unwrap();
    let (node, pods) = tokio::time::timeout(T, async {
        loop {
            let n: Result<serde_json::Value, _> = client
                .get_json("/apis/metrics.k8s.io/v1beta1/nodes/n1")
                .await;
            let p: Result<serde_json::Value, _> = client
                .get_json("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods")
                .await;
            if let (Ok(n), Ok(p)) = (n, p) {
                if p["items"].as_array().is_some_and(|i| !i.is_empty()) {
                    return (n, p);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("metrics reported");
    assert_eq!(node["kind"], "NodeMetrics");
    assert!(node["usage"]["cpu"].as_str().unwrap().ends_with('n'));
    assert!(node["usage"]["memory"].as_str().unwrap().ends_with("Ki"));
    assert_eq!(pods["items"][0]["metadata"]["name"], "m");
    assert_eq!(pods["items"][0]["containers"][0]["name"], "c");
}
