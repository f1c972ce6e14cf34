//! In-process integration: a real API server on an ephemeral port, the scheduler running against
//! it, and *hollow nodes* — Node objects created through the API with a Ready condition and
//! allocatable resources, with no agent or runtime behind them.
//!
//! Assertions read API state through watches; no fixed sleeps.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use kapsel_api::client::{Api, Client, ListParams};
use kapsel_api::watcher::{watcher, Event, WatcherConfig};
use kapsel_api::{Event as KEvent, Node, Pod};
use kapsel_apiserver::{start_test_server, TestServer};
use kapsel_scheduler::resources::PodRequest;
use kapsel_scheduler::snapshot::NodeInfo;
use kapsel_scheduler::testing::{hollow_node, NodeBuilder, PodBuilder};
use kapsel_scheduler::{Config, Metrics, Scheduler};
use tokio::sync::oneshot;

const TIMEOUT: Duration = Duration::from_secs(30);

struct Cluster {
    _server: TestServer,
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<kapsel_scheduler::Result<()>>>,
    metrics: std::sync::Arc<Metrics>,
}

impl Cluster {
    async fn start() -> Result<Cluster> {
        let server = start_test_server().await;
        let client = Client::new(&server.url)?;
        let scheduler = Scheduler::new(
            client.clone(),
            Config {
                seed: Some(42),
                ..Config::default()
            },
        )?;
        let metrics = scheduler.metrics();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(scheduler.run(async move {
            let _ = rx.await;
        }));
        Ok(Cluster {
            _server: server,
            client,
            stop: Some(tx),
            task: Some(task),
            metrics,
        })
    }

    fn nodes(&self) -> Api<Node> {
        self.client.api::<Node>(None)
    }
    fn pods(&self) -> Api<Pod> {
        self.client.api::<Pod>(Some("default"))
    }

    /// Register a hollow node through the API.
    async fn add_node(&self, node: Node) -> Result<()> {
        self.nodes().create(&node).await.context("creating node")?;
        Ok(())
    }

    /// The scheduler's node cache lags the API (its own watch). Make sure it has seen `node`
    /// (and, the watch being ordered, every node created before it): a probe pod pinned there
    /// by hostname gets bound, then is deleted.
    async fn sync_nodes(&self, node: &str) -> Result<()> {
        let probe = format!("probe-{node}");
        self.add_pod(
            PodBuilder::new(&probe)
                .container("", "")
                .node_selector("kubernetes.io/hostname", node)
                .toleration("", "Exists", "", "")
                .build(),
        )
        .await?;
        self.wait_pods("probe bound", |p| p.get(&probe).and_then(node_of).is_some())
            .await?;
        self.pods()
            .delete(
                &probe,
                &kapsel_api::DeleteOptions {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await
            .context("deleting probe")?;
        self.wait_pods("probe gone", |p| !p.contains_key(&probe))
            .await?;
        Ok(())
    }

    async fn add_pod(&self, pod: Pod) -> Result<()> {
        self.pods().create(&pod).await.context("creating pod")?;
        Ok(())
    }

    /// Watch the pods in `default` until `done` holds for the whole set (keyed by name).
    async fn wait_pods(
        &self,
        what: &str,
        mut done: impl FnMut(&BTreeMap<String, Pod>) -> bool,
    ) -> Result<BTreeMap<String, Pod>> {
        let stream = watcher(self.pods(), WatcherConfig::default());
        let mut stream = std::pin::pin!(stream);
        let mut pods = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let item = tokio::time::timeout_at(deadline, stream.next())
                .await
                .with_context(|| {
                    format!(
                        "timed out waiting for {what}; last state: {}",
                        summary(&pods)
                    )
                })?;
            match item {
                Some(Ok(Event::Restarted(list))) => {
                    pods = list
                        .into_iter()
                        .map(|p| (p.metadata.name().to_string(), p))
                        .collect();
                }
                Some(Ok(Event::Applied(p))) => {
                    pods.insert(p.metadata.name().to_string(), p);
                }
                Some(Ok(Event::Deleted(p))) => {
                    pods.remove(p.metadata.name());
                }
                Some(Err(e)) => bail!("watch failed: {e}"),
                None => bail!("watch ended"),
            }
            if done(&pods) {
                return Ok(pods);
            }
        }
    }

    async fn shutdown(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await??;
        }
        Ok(())
    }
}

fn summary(pods: &BTreeMap<String, Pod>) -> String {
    let bound = pods.values().filter(|p| node_of(p).is_some()).count();
    format!("{} pods, {} bound", pods.len(), bound)
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn scheduled_condition(p: &Pod) -> Option<(String, String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

fn unschedulable_message(p: &Pod) -> Option<String> {
    match scheduled_condition(p) {
        Some((s, r, m)) if s == "False" && r == "Unschedulable" => Some(m),
        _ => None,
    }
}

/// Create many objects concurrently.
async fn all<F: Future<Output = Result<()>>>(futs: impl IntoIterator<Item = F>) -> Result<()> {
    futures::stream::iter(futs)
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_land_where_they_fit_and_spread_evenly() -> Result<()> {
    let c = Cluster::start().await?;
    c.add_node(hollow_node("small", "2", "4Gi", "110")).await?;
    c.add_node(hollow_node("medium", "4", "8Gi", "110")).await?;
    c.add_node(hollow_node("large", "8", "16Gi", "110")).await?;
    c.sync_nodes("large").await?;

    // Six replicas of one ReplicaSet: spreading beats the small LeastAllocated differences.
    all((0..6).map(|i| {
        c.add_pod(
            PodBuilder::new(&format!("web-{i}"))
                .owner("rs-web")
                .container("100m", "128Mi")
                .build(),
        )
    }))
    .await?;
    let pods = c
        .wait_pods("six bound replicas", |p| {
            p.values().filter(|p| node_of(p).is_some()).count() == 6
        })
        .await?;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for p in pods.values() {
        *per_node.entry(node_of(p).unwrap_or("")).or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("large", 2), ("medium", 2), ("small", 2)]),
        "replicas spread evenly"
    );

    // 6 cpu fits only the large node (7.8 cpu free); then 3.5 cpu fits only the medium one
    // (3.8 free; large has 1.8 left, small 1.8).
    c.add_pod(PodBuilder::new("big").container("6", "1Gi").build())
        .await?;
    let pods = c
        .wait_pods("big bound", |p| p.get("big").and_then(node_of).is_some())
        .await?;
    assert_eq!(pods.get("big").and_then(node_of), Some("large"));
    c.add_pod(PodBuilder::new("mid").container("3500m", "1Gi").build())
        .await?;
    let pods = c
        .wait_pods("mid bound", |p| p.get("mid").and_then(node_of).is_some())
        .await?;
    assert_eq!(pods.get("mid").and_then(node_of), Some("medium"));
    assert_eq!(
        scheduled_condition(&pods["mid"]).map(|c| c.0),
        Some("True".to_string())
    );
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tainted_no_schedule_receives_nothing_without_toleration() -> Result<()> {
    let c = Cluster::start().await?;
    c.add_node(hollow_node("plain", "4", "8Gi", "110")).await?;
    c.add_node(
        NodeBuilder::new("gpu")
            .allocatable("64", "256Gi", "110")
            .label("accelerator", "gpu")
            .taint("dedicated", "gpu", "NoSchedule")
            .build(),
    )
    .await?;
    c.sync_nodes("gpu").await?;
    all((0..20).map(|i| {
        c.add_pod(
            PodBuilder::new(&format!("p{i}"))
                .container("100m", "64Mi")
                .build(),
        )
    }))
    .await?;
    let pods = c
        .wait_pods("20 bound", |p| {
            p.len() == 20 && p.values().all(|p| node_of(p).is_some())
        })
        .await?;
    assert!(
        pods.values().all(|p| node_of(p) == Some("plain")),
        "nothing lands on the tainted node"
    );

    // With a toleration (and a selector to make it deterministic) it does.
    c.add_pod(
        PodBuilder::new("trainer")
            .container("100m", "64Mi")
            .toleration("dedicated", "Equal", "gpu", "NoSchedule")
            .node_selector("accelerator", "gpu")
            .build(),
    )
    .await?;
    let pods = c
        .wait_pods("trainer bound", |p| {
            p.get("trainer").and_then(node_of).is_some()
        })
        .await?;
    assert_eq!(pods.get("trainer").and_then(node_of), Some("gpu"));
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_has_exact_reason_and_is_scheduled_soon_after_a_fitting_node_appears(
) -> Result<()> {
    let c = Cluster::start().await?;
    c.add_node(
        NodeBuilder::new("gpu")
            .allocatable("4", "64Gi", "110")
            .taint("dedicated", "gpu", "NoSchedule")
            .build(),
    )
    .await?;
    c.add_node(hollow_node("a", "4", "1Gi", "110")).await?;
    c.add_node(hollow_node("b", "4", "1Gi", "110")).await?;
    c.sync_nodes("b").await?;
    c.add_pod(PodBuilder::new("hungry").container("100m", "2Gi").build())
        .await?;
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
                2 Insufficient memory.";
    let pods = c
        .wait_pods("PodScheduled=False", |p| {
            p.get("hungry").and_then(unschedulable_message).is_some()
        })
        .await?;
    assert_eq!(
        pods.get("hungry")
            .and_then(unschedulable_message)
            .as_deref(),
        Some(want)
    );

    // A FailedScheduling Warning event with the same message.
    let events = c.client.api::<KEvent>(Some("default"));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let list = events.list(&ListParams::default()).await?;
        let found = list.items.iter().any(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.type_.as_deref() == Some("Warning")
                && e.involved_object.name.as_deref() == Some("hungry")
                && e.message.as_deref() == Some(want)
        });
        if found {
            break;
        }
        if Instant::now() > deadline {
            bail!("no FailedScheduling event: {:?}", list.items);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A fitting node appears: bound within a second (the backoff queue is flushed on node add).
    let t0 = Instant::now();
    c.add_node(hollow_node("roomy", "4", "8Gi", "110")).await?;
    let pods = c
        .wait_pods("hungry bound", |p| {
            p.get("hungry").and_then(node_of).is_some()
        })
        .await?;
    let took = t0.elapsed();
    assert_eq!(pods.get("hungry").and_then(node_of), Some("roomy"));
    assert!(
        took < Duration::from_secs(1),
        "bound {took:?} after the node was added"
    );

    // And a Scheduled event.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let list = events.list(&ListParams::default()).await?;
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some("Scheduled")
                && e.message.as_deref() == Some("Successfully assigned default/hungry to roomy")
        }) {
            break;
        }
        if Instant::now() > deadline {
            bail!("no Scheduled event");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(Metrics::get(&c.metrics.unschedulable) >= 1);
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_500_pods_on_10_nodes_never_overcommits() -> Result<()> {
    let c = Cluster::start().await?;
    // Ten nodes of different sizes: 2..=6 cpu, 4..=12 Gi, 40 pods max each. Total 40 cpu.
    let mut nodes = Vec::new();
    for i in 0..10 {
        let cpu = 2 + (i % 5);
        let mem = 4 + 2 * (i % 5);
        let n = hollow_node(
            &format!("n{i}"),
            &cpu.to_string(),
            &format!("{mem}Gi"),
            "40",
        );
        nodes.push(n.clone());
        c.add_node(n).await?;
    }
    c.sync_nodes("n9").await?;
    // 500 pods, 50m..250m cpu and 64..320 Mi: ~75 cpu requested in total, so a good part
    // cannot fit and must stay pending.
    all((0..500).map(|i| {
        let cpu = format!("{}m", 50 + 50 * (i % 5));
        let mem = format!("{}Mi", 64 * (1 + (i % 5)));
        c.add_pod(
            PodBuilder::new(&format!("burst-{i}"))
                .owner(&format!("rs-{}", i % 7))
                .container(&cpu, &mem)
                .build(),
        )
    }))
    .await?;

    let pods = c
        .wait_pods("every pod bound or unschedulable", |p| {
            p.len() == 500
                && p.values()
                    .all(|p| node_of(p).is_some() || unschedulable_message(p).is_some())
        })
        .await?;

    // Every node's sum of requests (from API state) is within its allocatable.
    let mut infos: HashMap<String, NodeInfo> = nodes
        .iter()
        .map(|n| {
            let info = NodeInfo::new(std::sync::Arc::new(n.clone())).expect("node");
            (n.metadata.name().to_string(), info)
        })
        .collect();
    let mut bound = 0;
    for p in pods.values() {
        if let Some(node) = node_of(p) {
            bound += 1;
            let info = kapsel_scheduler::PodInfo::new(std::sync::Arc::new(p.clone()))?;
            infos
                .get_mut(node)
                .with_context(|| format!("unknown node {node}"))?
                .add_pod(&info);
        }
    }
    for (name, n) in &infos {
        let a = n.allocatable.resources;
        let r = n.requested;
        assert!(
            r.cpu <= a.cpu && r.memory <= a.memory && r.pods <= a.pods,
            "{name} overcommitted: requested {r:?} allocatable {a:?}"
        );
    }
    // The pending ones really do not fit anywhere now.
    for p in pods.values().filter(|p| node_of(p).is_none()) {
        let req = PodRequest::of(p)?.request;
        for (name, n) in &infos {
            let a = n.allocatable.resources;
            let r = n.requested;
            let fits = r.pods < a.pods
                && req.cpu.0 <= a.cpu.0 - r.cpu.0
                && req.memory.0 <= a.memory.0 - r.memory.0;
            assert!(!fits, "{} pending but fits on {name}", p.metadata.name());
        }
    }
    assert!(bound > 200, "only {bound} bound");
    eprintln!("burst: {bound}/500 bound; {}", c.metrics);
    c.shutdown().await
}
