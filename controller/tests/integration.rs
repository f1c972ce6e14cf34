//! In-process integration: API server + scheduler + controller + hollow agents.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use kapsel_api::client::ListParams;
use kapsel_api::labels as wk;
use kapsel_api::watcher::{self, reflector, watcher, WatcherConfig};
use kapsel_api::{DeleteOptions, Deployment, Event, IntOrString, Node, Pod, ReplicaSet};
use kapsel_controller::deployment::util;

const NS: &str = "default";
const T: Duration = Duration::from_secs(60);

fn int(i: i32) -> IntOrString {
    IntOrString::Int(i)
}

async fn create(c: &Cluster, d: &Deployment) {
    c.client
        .api::<Deployment>(Some(NS))
        .create(d)
        .await
        .expect("create deployment");
}

/// Wait until the deployment is complete (Kubernetes' DeploymentComplete) on `image`, with
/// exactly `n` live ready pods, all of that image.
async fn wait_complete(c: &Cluster, name: &str, n: usize, image: &str) {
    wait_for(T, &format!("{name}: {n} ready pods of {image}"), || async {
        let d = c.deployment(NS, name).await;
        let st = d.status.clone().unwrap_or_default();
        if !util::deployment_complete(&d, &st) {
            return None;
        }
        let pods: Vec<Pod> = c.pods(NS, name).await.into_iter().filter(live).collect();
        (pods.len() == n
            && pods
                .iter()
                .all(|p| is_ready(p) && common::image(p) == image))
        .then_some(())
    })
    .await
}

async fn events(c: &Cluster, reason: &str) -> Vec<Event> {
    c.client
        .api::<Event>(Some(NS))
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_0_to_5_to_2() {
    let c = Cluster::start(2).await;
    create(&c, &deployment("web", 0, "web:v1", int(1), int(0))).await;
    wait_for(T, "empty replica set", || async {
        let rss = c.rss(NS).await;
        (rss.len() == 1 && util::rs_replicas(&rss[0]) == 0).then_some(())
    })
    .await;
    c.update_deployment(NS, "web", |d| d.spec.as_mut().unwrap().replicas = Some(5))
        .await;
    wait_complete(&c, "web", 5, "web:v1").await;
    let pods = c.pods(NS, "web").await;
    assert!(pods
        .iter()
        .all(|p| kapsel_controller::podutil::node_name(p).is_some()));
    let rs = &c.rss(NS).await[0];
    let owner = rs.metadata.controller_ref().unwrap();
    assert_eq!(owner.kind, "Deployment");
    for p in &pods {
        let o = p.metadata.controller_ref().unwrap();
        assert_eq!(
            (o.kind.as_str(), o.uid.as_str()),
            ("ReplicaSet", rs.metadata.uid())
        );
        assert!(p
            .metadata
            .name()
            .starts_with(&format!("{}-", rs.metadata.name())));
    }
    c.update_deployment(NS, "web", |d| d.spec.as_mut().unwrap().replicas = Some(2))
        .await;
    wait_complete(&c, "web", 2, "web:v1").await;
    let rs = &c.rss(NS).await[0];
    let st = rs.status.clone().unwrap();
    assert_eq!(
        (st.replicas, st.ready_replicas, st.available_replicas),
        (2, Some(2), Some(2))
    );
    assert_eq!(st.fully_labeled_replicas, Some(2));
    assert_eq!(st.observed_generation, rs.metadata.generation);
    wait_for(T, "events", || async {
        let created = events(&c, "SuccessfulCreate").await.len();
        let deleted = events(&c, "SuccessfulDelete").await.len();
        let scaled = events(&c, "ScalingReplicaSet").await.len();
        (created >= 5 && deleted >= 3 && scaled >= 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_failed_pods_are_replaced() {
    let c = Cluster::start(2).await;
    create(&c, &deployment("web", 3, "web:v1", int(1), int(0))).await;
    wait_complete(&c, "web", 3, "web:v1").await;
    let pods = c.pods(NS, "web").await;
    let victim = pods[0].metadata.name().to_string();
    c.client
        .api::<Pod>(Some(NS))
        .delete(&victim, &DeleteOptions::default())
        .await
        .unwrap();
    wait_for(T, "replacement of the deleted pod", || async {
        let pods: Vec<Pod> = c.pods(NS, "web").await.into_iter().filter(live).collect();
        (pods.len() == 3
            && pods.iter().all(is_ready)
            && pods.iter().all(|p| p.metadata.name() != victim))
        .then_some(())
    })
    .await;
    // Make one Failed through its agent.
    let pods = c.pods(NS, "web").await;
    let failing = pods.iter().find(|p| live(p)).unwrap().clone();
    let node = kapsel_controller::podutil::node_name(&failing)
        .unwrap()
        .to_string();
    c.agent(&node).fail_pod(failing.metadata.name());
    wait_for(T, "replacement of the failed pod", || async {
        let pods = c.pods(NS, "web").await;
        let failed = pods.iter().any(|p| {
            p.metadata.name() == failing.metadata.name()
                && kapsel_controller::podutil::phase(p) == "Failed"
        });
        let healthy: Vec<&Pod> = pods
            .iter()
            .filter(|p| kapsel_controller::podutil::is_active(p) && is_ready(p))
            .collect();
        (failed && healthy.len() == 3).then_some(())
    })
    .await;
}

/// Counts over every watch event of the pods of `app`.
#[derive(Default, Debug, Clone)]
struct Bounds {
    events: usize,
    max_total: usize,
    min_ready: usize,
}

fn observe(c: &Cluster, app: &str) -> (Arc<Mutex<Bounds>>, tokio::task::JoinHandle<()>) {
    let b = Arc::new(Mutex::new(Bounds {
        min_ready: usize::MAX,
        ..Default::default()
    }));
    let (store, writer) = watcher::store::<Pod>();
    let stream = reflector(
        writer,
        watcher(
            c.client.api::<Pod>(Some(NS)),
            WatcherConfig::default().labels(&format!("app={app}")),
        ),
    );
    let b2 = b.clone();
    let h = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(ev) = s.next().await {
            if ev.is_err() {
                continue;
            }
            let pods = store.list();
            let active: Vec<_> = pods
                .iter()
                .filter(|p| kapsel_controller::podutil::is_active(p))
                .collect();
            let ready = active.iter().filter(|p| is_ready(p)).count();
            let mut g = b2.lock().unwrap();
            g.events += 1;
            g.max_total = g.max_total.max(active.len());
            g.min_ready = g.min_ready.min(ready);
        }
    });
    (b, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_10_replicas_surge3_unavailable2_respects_bounds_on_every_event() {
    let c = Cluster::start(3).await;
    create(&c, &deployment("web", 10, "web:v1", int(3), int(2))).await;
    wait_complete(&c, "web", 10, "web:v1").await;
    let (bounds, h) = observe(&c, "web");
    // Let the observer's initial list land before the rollout starts.
    wait_for(T, "observer synced", || async {
        (bounds.lock().unwrap().events > 0).then_some(())
    })
    .await;
    c.update_deployment(NS, "web", |d| set_image(d, "web:v2"))
        .await;
    wait_complete(&c, "web", 10, "web:v2").await;
    h.abort();
    let b = bounds.lock().unwrap().clone();
    eprintln!("rolling update bounds: {b:?}");
    assert!(b.events > 20, "observed {} events", b.events);
    assert!(
        b.max_total <= 13,
        "total pods reached {} > 10 + maxSurge 3",
        b.max_total
    );
    assert!(
        b.min_ready >= 8,
        "ready pods fell to {} < 10 − maxUnavailable 2",
        b.min_ready
    );
    // Only the new template remains; the old RS is scaled to 0 and kept as history.
    let rss = c.rss(NS).await;
    assert_eq!(rss.len(), 2);
    let old = rss
        .iter()
        .find(|r| {
            util::rs_template(r).spec.unwrap().containers[0]
                .image
                .as_deref()
                == Some("web:v1")
        })
        .unwrap();
    assert_eq!(util::rs_replicas(old), 0);
    let d = c.deployment(NS, "web").await;
    let st = d.status.unwrap();
    assert_eq!(
        (
            st.replicas,
            st.updated_replicas,
            st.ready_replicas,
            st.available_replicas,
            st.unavailable_replicas
        ),
        (Some(10), Some(10), Some(10), Some(10), Some(0))
    );
    let prog = util::get_condition(&st_of(&c, "web").await, util::COND_PROGRESSING)
        .cloned()
        .unwrap();
    assert_eq!(prog.reason.as_deref(), Some(util::REASON_NEW_RS_AVAILABLE));
}

async fn st_of(c: &Cluster, name: &str) -> kapsel_api::DeploymentStatus {
    c.deployment(NS, name).await.status.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_whose_pods_never_become_ready_exceeds_progress_deadline() {
    let c = Cluster::start(2).await;
    let mut d = deployment("web", 4, "web:v1", int(1), int(0));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(3);
    create(&c, &d).await;
    wait_complete(&c, "web", 4, "web:v1").await;
    for a in &c.agents {
        a.never_ready("web:v2");
    }
    c.update_deployment(NS, "web", |d| set_image(d, "web:v2"))
        .await;
    let cond = wait_for(T, "ProgressDeadlineExceeded", || async {
        let st = st_of(&c, "web").await;
        util::get_condition(&st, util::COND_PROGRESSING)
            .filter(|c| c.reason.as_deref() == Some(util::REASON_TIMED_OUT))
            .cloned()
    })
    .await;
    assert_eq!(cond.status, "False");
    // The old pods keep serving: maxUnavailable 0, so all 4 are still there and ready.
    let pods: Vec<Pod> = c.pods(NS, "web").await.into_iter().filter(live).collect();
    let old_ready = pods
        .iter()
        .filter(|p| common::image(p) == "web:v1" && is_ready(p))
        .count();
    assert_eq!(old_ready, 4);
    let new: Vec<&Pod> = pods
        .iter()
        .filter(|p| common::image(p) == "web:v2")
        .collect();
    assert_eq!(new.len(), 1, "one surge pod, never ready");
    assert!(!is_ready(new[0]));
    let st = st_of(&c, "web").await;
    let avail = util::get_condition(&st, util::COND_AVAILABLE).unwrap();
    assert_eq!(avail.status, "True");
}

fn revision(rs: &ReplicaSet) -> String {
    rs.metadata
        .annotations
        .get(wk::REVISION)
        .cloned()
        .unwrap_or_default()
}

async fn rs_for(c: &Cluster, image: &str) -> ReplicaSet {
    c.rss(NS)
        .await
        .into_iter()
        .find(|r| {
            util::rs_template(r).spec.unwrap().containers[0]
                .image
                .as_deref()
                == Some(image)
        })
        .expect("replica set for image")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_restores_previous_template_with_kubernetes_revision_numbering() {
    let c = Cluster::start(2).await;
    create(&c, &deployment("web", 3, "web:v1", int(1), int(0))).await;
    wait_complete(&c, "web", 3, "web:v1").await;
    c.update_deployment(NS, "web", |d| set_image(d, "web:v2"))
        .await;
    wait_complete(&c, "web", 3, "web:v2").await;
    assert_eq!(revision(&rs_for(&c, "web:v1").await), "1");
    assert_eq!(revision(&rs_for(&c, "web:v2").await), "2");
    wait_for(T, "deployment revision 2", || async {
        (c.deployment(NS, "web")
            .await
            .metadata
            .annotations
            .get(wk::REVISION)
            .map(String::as_str)
            == Some("2"))
        .then_some(())
    })
    .await;
    // kapsel rollout undo (kubectl's algorithm: copy the previous revision's template).
    let d = c.deployment(NS, "web").await;
    let rss = c.rss(NS).await;
    let undone = kapsel_controller::deployment::rollback::rollback_deployment(&d, &rss, 0).unwrap();
    c.client
        .api::<Deployment>(Some(NS))
        .replace("web", &undone)
        .await
        .unwrap();
    wait_complete(&c, "web", 3, "web:v1").await;
    let rss = c.rss(NS).await;
    assert_eq!(rss.len(), 2, "the old ReplicaSet is reused");
    let v1 = rs_for(&c, "web:v1").await;
    assert_eq!(revision(&v1), "3");
    assert_eq!(
        v1.metadata
            .annotations
            .get(wk::REVISION_HISTORY)
            .map(String::as_str),
        Some("1")
    );
    wait_for(T, "deployment revision 3", || async {
        (c.deployment(NS, "web")
            .await
            .metadata
            .annotations
            .get(wk::REVISION)
            .map(String::as_str)
            == Some("3"))
        .then_some(())
    })
    .await;
    // --to-revision=2 goes forward to v2 again, as revision 4.
    let d = c.deployment(NS, "web").await;
    let undone =
        kapsel_controller::deployment::rollback::rollback_deployment(&d, &c.rss(NS).await, 2)
            .unwrap();
    c.client
        .api::<Deployment>(Some(NS))
        .replace("web", &undone)
        .await
        .unwrap();
    wait_complete(&c, "web", 3, "web:v2").await;
    assert_eq!(revision(&rs_for(&c, "web:v2").await), "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_progress_and_resume_continues() {
    let c = Cluster::start(2).await;
    create(&c, &deployment("web", 4, "web:v1", int(1), int(1))).await;
    wait_complete(&c, "web", 4, "web:v1").await;
    c.update_deployment(NS, "web", |d| d.spec.as_mut().unwrap().paused = Some(true))
        .await;
    c.update_deployment(NS, "web", |d| set_image(d, "web:v2"))
        .await;
    let cond = wait_for(T, "DeploymentPaused", || async {
        let st = st_of(&c, "web").await;
        util::get_condition(&st, util::COND_PROGRESSING)
            .filter(|c| c.reason.as_deref() == Some(util::REASON_PAUSED))
            .cloned()
    })
    .await;
    assert_eq!(cond.status, "Unknown");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.rss(NS).await.len(), 1, "paused: no new ReplicaSet");
    let pods: Vec<Pod> = c.pods(NS, "web").await.into_iter().filter(live).collect();
    assert!(pods.iter().all(|p| common::image(p) == "web:v1"));
    // Scaling still works while paused.
    c.update_deployment(NS, "web", |d| d.spec.as_mut().unwrap().replicas = Some(5))
        .await;
    wait_for(T, "scaled while paused", || async {
        let pods: Vec<Pod> = c.pods(NS, "web").await.into_iter().filter(live).collect();
        (pods.len() == 5
            && pods
                .iter()
                .all(|p| common::image(p) == "web:v1" && is_ready(p)))
        .then_some(())
    })
    .await;
    c.update_deployment(NS, "web", |d| d.spec.as_mut().unwrap().paused = Some(false))
        .await;
    wait_complete(&c, "web", 5, "web:v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_propagation_background_foreground_orphan() {
    let c = Cluster::start(2).await;
    for name in ["bg", "fg", "orphan"] {
        create(&c, &deployment(name, 2, "web:v1", int(1), int(0))).await;
    }
    for name in ["bg", "fg", "orphan"] {
        wait_complete(&c, name, 2, "web:v1").await;
    }
    let dapi = c.client.api::<Deployment>(Some(NS));
    let rs_of = |name: &'static str| {
        let c = &c;
        async move {
            c.rss(NS)
                .await
                .into_iter()
                .filter(|r| r.metadata.labels.get("app").map(String::as_str) == Some(name))
                .collect::<Vec<_>>()
        }
    };
    let del = |p: &str| DeleteOptions {
        propagation_policy: Some(p.into()),
        ..Default::default()
    };

    // Background: the deployment goes at once, the GC removes its ReplicaSet, then the pods.
    dapi.delete("bg", &del("Background")).await.unwrap();
    assert!(dapi.get_opt("bg").await.unwrap().is_none());
    wait_for(T, "background cascade", || async {
        (rs_of("bg").await.is_empty() && c.pods(NS, "bg").await.is_empty()).then_some(())
    })
    .await;

    // Foreground: the deployment stays (deletionTimestamp + foregroundDeletion) until its
    // dependents are gone; when it disappears, nothing of it is left.
    dapi.delete("fg", &del("Foreground")).await.unwrap();
    let d = dapi.get("fg").await.unwrap();
    assert!(d.metadata.deletion_timestamp.is_some());
    assert!(d
        .metadata
        .finalizers
        .iter()
        .any(|f| f == "foregroundDeletion"));
    wait_for(T, "foreground cascade", || async {
        if dapi.get_opt("fg").await.unwrap().is_some() {
            return None;
        }
        // The owner disappears only after its blocking dependents.
        assert!(
            c.pods(NS, "fg").await.is_empty(),
            "pods outlived their foreground-deleted deployment"
        );
        assert!(rs_of("fg").await.is_empty());
        Some(())
    })
    .await;

    // Orphan: the deployment goes, its ReplicaSet stays without owner reference, the pods stay.
    dapi.delete("orphan", &del("Orphan")).await.unwrap();
    wait_for(T, "orphaning", || async {
        if dapi.get_opt("orphan").await.unwrap().is_some() {
            return None;
        }
        let rss = rs_of("orphan").await;
        (rss.len() == 1 && rss[0].metadata.owner_references.is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rs_of("orphan").await;
    assert_eq!(rss.len(), 1);
    let pods: Vec<Pod> = c
        .pods(NS, "orphan")
        .await
        .into_iter()
        .filter(live)
        .collect();
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(
        |p| p.metadata.controller_ref().map(|o| o.uid.as_str()) == Some(rss[0].metadata.uid())
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_stops_heartbeating_has_its_pods_moved_and_recovers() {
    let grace = Duration::from_secs(3);
    let toleration = Duration::from_secs(2);
    let cfg = kapsel_controller::Config {
        node_monitor_grace_period: grace,
        pod_eviction_timeout: toleration,
        ..Default::default()
    };
    let c = Cluster::start_with(3, cfg).await;
    create(&c, &deployment("web", 6, "web:v1", int(1), int(0))).await;
    wait_complete(&c, "web", 6, "web:v1").await;
    let pods = c.pods(NS, "web").await;
    let victim = kapsel_controller::podutil::node_name(&pods[0])
        .unwrap()
        .to_string();
    let on_victim = pods
        .iter()
        .filter(|p| kapsel_controller::podutil::node_name(p) == Some(&victim))
        .count();
    assert!(on_victim > 0);
    c.agent(&victim).stop_heartbeat();
    let start = std::time::Instant::now();
    let margin = Duration::from_secs(8);
    wait_for(
        grace + toleration + margin,
        "pods running on the other nodes",
        || async {
            let pods: Vec<Pod> = c.pods(NS, "web").await.into_iter().filter(live).collect();
            let elsewhere = pods
                .iter()
                .filter(|p| {
                    is_ready(p)
                        && kapsel_controller::podutil::node_name(p).is_some_and(|n| n != victim)
                })
                .count();
            (elsewhere == 6).then_some(())
        },
    )
    .await;
    eprintln!("pods moved off {victim} after {:?}", start.elapsed());
    let node = c.client.api::<Node>(None).get(&victim).await.unwrap();
    let ready = node
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "Unknown");
    assert!(node
        .spec
        .as_ref()
        .unwrap()
        .taints
        .iter()
        .any(|t| t.key == wk::TAINT_UNREACHABLE && t.effect == "NoExecute"));
    wait_for(
        T,
        "NodeNotReady and TaintManagerEviction events",
        || async {
            (!events(&c, "NodeNotReady").await.is_empty()
                && !events(&c, "TaintManagerEviction").await.is_empty())
            .then_some(())
        },
    )
    .await;
    // The node comes back: Ready again, taint removed, its terminating pods finalised.
    c.agent(&victim).resume_heartbeat();
    wait_for(T, "node Ready again without the taint", || async {
        let node = c.client.api::<Node>(None).get(&victim).await.ok()?;
        let ready = node
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?
            .status
            == "True";
        let tainted = node
            .spec
            .as_ref()
            .is_some_and(|s| s.taints.iter().any(|t| t.key == wk::TAINT_UNREACHABLE));
        (ready && !tainted).then_some(())
    })
    .await;
    wait_for(T, "evicted pods finalised", || async {
        let pods = c.pods(NS, "web").await;
        (pods.len() == 6 && pods.iter().all(live)).then_some(())
    })
    .await;
}
