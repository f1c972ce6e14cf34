//! The runtime around the pure decision cores: watch-fed caches, one deduplicating work queue per
//! controller (one in-flight reconcile per key, requeue with backoff on error, requeue-after for
//! deadlines), fan-in from children to owners, writes with resourceVersion CAS, and the event
//! recorder.

pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod namespace;
pub mod node;
pub mod podcidr;
pub mod queue;
pub mod recorder;
pub mod replicaset;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kapsel_api::client::{Api, Client};
use kapsel_api::labels as wk;
use kapsel_api::watcher::{self, watcher, Event, ObjectKey, Store, WatcherConfig, Writer};
use kapsel_api::{Deployment, Lease, Namespace, Node, Pod, ReplicaSet, Resource, ResourceQuota};
use tokio::task::JoinSet;

use crate::clock::{Clock, SystemClock};
use crate::error::Result;
use crate::labels;
use crate::podutil;
use queue::WorkQueue;

/// Settings of [`Controller::run`].
#[derive(Clone)]
pub struct Config {
    /// `--node-monitor-grace-period` (default 10 s).
    pub node_monitor_grace_period: Duration,
    /// `--pod-eviction-timeout`: default toleration of unreachable nodes (default 5 s).
    pub pod_eviction_timeout: Duration,
    /// Concurrent reconciles per controller (distinct keys).
    pub workers: usize,
    /// Every key is reconciled at least this often (level-triggered safety net).
    pub resync: Duration,
    /// How often ResourceQuota usage is recomputed from the caches.
    pub quota_resync: Duration,
    /// `source.component` of events.
    pub component: String,
    pub clock: Arc<dyn Clock>,
    /// Node podCIDR allocation (`--cluster-cidr`, `--node-cidr-mask-size`); `None`: off.
    pub pod_cidr: Option<crate::podcidr::CidrConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_monitor_grace_period: Duration::from_secs(10),
            pod_eviction_timeout: Duration::from_secs(5),
            workers: 4,
            resync: Duration::from_secs(30),
            quota_resync: Duration::from_secs(10),
            component: "kapsel-controller".into(),
            clock: Arc::new(SystemClock),
            pod_cidr: crate::podcidr::CidrConfig::new(crate::podcidr::DEFAULT_CLUSTER_CIDR, 24)
                .ok(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("node_monitor_grace_period", &self.node_monitor_grace_period)
            .field("pod_eviction_timeout", &self.pod_eviction_timeout)
            .field("workers", &self.workers)
            .finish()
    }
}

/// Shared state of all reconcilers.
pub struct Ctx {
    pub client: Client,
    pub cfg: Config,
    pub pods: Store<Pod>,
    pub rss: Store<ReplicaSet>,
    pub deployments: Store<Deployment>,
    pub nodes: Store<Node>,
    pub leases: Store<Lease>,
    pub namespaces: Store<Namespace>,
    pub quotas: Store<ResourceQuota>,
    pub rs_queue: Arc<WorkQueue<ObjectKey>>,
    pub dep_queue: Arc<WorkQueue<ObjectKey>>,
    pub node_queue: Arc<WorkQueue<()>>,
    pub gc_queue: Arc<WorkQueue<()>>,
    pub ns_queue: Arc<WorkQueue<String>>,
    pub rs_expectations: Mutex<HashMap<ObjectKey, crate::replicaset::Expectations>>,
    pub recorder: recorder::Recorder,
}

impl Ctx {
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.cfg.clock.now()
    }
    pub fn api<K: Resource>(&self, ns: &str) -> Api<K> {
        if K::NAMESPACED {
            self.client.api::<K>(Some(ns))
        } else {
            self.client.api::<K>(None)
        }
    }
}

/// The controller manager.
pub struct Controller;

impl Controller {
    /// Run every controller until the returned future is dropped (all tasks are aborted then).
    pub async fn run(client: Client, cfg: Config) -> Result<()> {
        let mut tasks = JoinSet::new();
        let (ctx, writers) = build(client, cfg, &mut tasks);
        start(ctx, writers, &mut tasks).await;
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                if e.is_panic() {
                    tracing::error!(error = %e, "controller task panicked");
                }
            }
        }
        Ok(())
    }
}

struct Writers {
    pods: Writer<Pod>,
    rss: Writer<ReplicaSet>,
    deployments: Writer<Deployment>,
    nodes: Writer<Node>,
    leases: Writer<Lease>,
    namespaces: Writer<Namespace>,
    quotas: Writer<ResourceQuota>,
}

fn build(client: Client, cfg: Config, tasks: &mut JoinSet<()>) -> (Arc<Ctx>, Writers) {
    let (pods, pods_w) = watcher::store::<Pod>();
    let (rss, rss_w) = watcher::store::<ReplicaSet>();
    let (deployments, dep_w) = watcher::store::<Deployment>();
    let (nodes, nodes_w) = watcher::store::<Node>();
    let (leases, leases_w) = watcher::store::<Lease>();
    let (namespaces, ns_w) = watcher::store::<Namespace>();
    let (quotas, quotas_w) = watcher::store::<ResourceQuota>();
    let recorder = recorder::Recorder::start(
        client.clone(),
        cfg.component.clone(),
        cfg.clock.clone(),
        tasks,
    );
    let ctx = Arc::new(Ctx {
        client,
        cfg,
        pods,
        rss,
        deployments,
        nodes,
        leases,
        namespaces,
        quotas,
        rs_queue: WorkQueue::named("replicaset"),
        dep_queue: WorkQueue::named("deployment"),
        node_queue: WorkQueue::named("nodelifecycle"),
        gc_queue: WorkQueue::named("garbagecollector"),
        ns_queue: WorkQueue::named("namespace"),
        rs_expectations: Mutex::new(HashMap::new()),
        recorder,
    });
    (
        ctx,
        Writers {
            pods: pods_w,
            rss: rss_w,
            deployments: dep_w,
            nodes: nodes_w,
            leases: leases_w,
            namespaces: ns_w,
            quotas: quotas_w,
        },
    )
}

/// Feed a store from a watcher and call `on` with each event and the object's previous state.
fn informer<K, F>(
    api: Api<K>,
    cfg: WatcherConfig,
    mut writer: Writer<K>,
    on: F,
) -> impl Future<Output = ()> + Send
where
    K: Resource,
    F: Fn(&Event<K>, Option<Arc<K>>) + Send + 'static,
{
    let reader = writer.as_reader();
    async move {
        let stream = watcher(api, cfg);
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(ev) => {
                    let old = match &ev {
                        Event::Applied(o) | Event::Deleted(o) => {
                            reader.get(o.namespace(), o.name())
                        }
                        Event::Restarted(_) => None,
                    };
                    writer.apply(&ev);
                    on(&ev, old);
                }
                Err(e) => {
                    tracing::debug!(kind = K::KIND, error = %e, "watch error (the watcher recovers)")
                }
            }
        }
    }
}

fn key_of<K: Resource>(o: &K) -> ObjectKey {
    ObjectKey::new(o.namespace(), o.name())
}

/// ReplicaSets a pod event concerns: its controller, or (orphans) every RS in the namespace
/// whose selector matches.
fn rs_keys_for_pod(ctx: &Ctx, p: &Pod) -> Vec<ObjectKey> {
    if let Some(o) = podutil::controller_of(&p.metadata) {
        if o.kind == ReplicaSet::KIND {
            return vec![ObjectKey::new(p.namespace(), &o.name)];
        }
        return vec![];
    }
    ctx.rss
        .list_namespace(p.namespace())
        .iter()
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|sel| {
                    !labels::is_everything(sel) && labels::selects(sel, &p.metadata.labels)
                })
        })
        .map(|rs| key_of(&**rs))
        .collect()
}

fn dep_keys_for_rs(ctx: &Ctx, rs: &ReplicaSet) -> Vec<ObjectKey> {
    if let Some(o) = podutil::controller_of(&rs.metadata) {
        if o.kind == Deployment::KIND {
            return vec![ObjectKey::new(rs.namespace(), &o.name)];
        }
        return vec![];
    }
    ctx.deployments
        .list_namespace(rs.namespace())
        .iter()
        .filter(|d| {
            d.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|sel| {
                    !labels::is_everything(sel) && labels::selects(sel, &rs.metadata.labels)
                })
        })
        .map(|d| key_of(&**d))
        .collect()
}

async fn start(ctx: Arc<Ctx>, w: Writers, tasks: &mut JoinSet<()>) {
    let wc = WatcherConfig::default;
    // Pods → owner RS (old and new owner), GC, node lifecycle.
    {
        let c = ctx.clone();
        tasks.spawn(informer(
            c.client.api::<Pod>(None),
            wc(),
            w.pods,
            move |ev, old| {
                match ev {
                    Event::Restarted(_) => {
                        for rs in c.rss.list() {
                            c.rs_queue.add(key_of(&*rs));
                        }
                    }
                    Event::Applied(p) | Event::Deleted(p) => {
                        let mut keys = rs_keys_for_pod(&c, p);
                        if let Some(o) = old {
                            if o.metadata.labels != p.metadata.labels
                                || o.metadata.owner_references != p.metadata.owner_references
                            {
                                keys.extend(rs_keys_for_pod(&c, &o));
                            }
                        }
                        for k in keys {
                            c.rs_queue.add(k);
                        }
                    }
                }
                c.gc_queue.add(());
            },
        ));
    }
    // ReplicaSets → themselves, owner deployment, GC.
    {
        let c = ctx.clone();
        tasks.spawn(informer(
            c.client.api::<ReplicaSet>(None),
            wc(),
            w.rss,
            move |ev, old| {
                match ev {
                    Event::Restarted(all) => {
                        for rs in all {
                            c.rs_queue.add(key_of(rs));
                        }
                        for d in c.deployments.list() {
                            c.dep_queue.add(key_of(&*d));
                        }
                    }
                    Event::Applied(rs) | Event::Deleted(rs) => {
                        c.rs_queue.add(key_of(rs));
                        let mut keys = dep_keys_for_rs(&c, rs);
                        if let Some(o) = old {
                            if o.metadata.labels != rs.metadata.labels
                                || o.metadata.owner_references != rs.metadata.owner_references
                            {
                                keys.extend(dep_keys_for_rs(&c, &o));
                            }
                        }
                        for k in keys {
                            c.dep_queue.add(k);
                        }
                    }
                }
                c.gc_queue.add(());
            },
        ));
    }
    {
        let c = ctx.clone();
        tasks.spawn(informer(
            c.client.api::<Deployment>(None),
            wc(),
            w.deployments,
            move |ev, _| {
                for d in ev.objects() {
                    c.dep_queue.add(key_of(d));
                }
                c.gc_queue.add(());
            },
        ));
    }
    {
        let c = ctx.clone();
        tasks.spawn(informer(
            c.client.api::<Node>(None),
            wc(),
            w.nodes,
            move |_, _| {
                c.node_queue.add(());
            },
        ));
    }
    {
        let c = ctx.clone();
        let api = c.client.api::<Lease>(Some(wk::NODE_LEASE_NAMESPACE));
        tasks.spawn(informer(api, wc(), w.leases, move |_, _| {
            c.node_queue.add(());
        }));
    }
    {
        let c = ctx.clone();
        tasks.spawn(informer(
            c.client.api::<Namespace>(None),
            wc(),
            w.namespaces,
            move |ev, _| {
                for n in ev.objects() {
                    c.ns_queue.add(n.name().to_string());
                }
            },
        ));
    }
    {
        tasks.spawn(informer(
            ctx.client.api::<ResourceQuota>(None),
            wc(),
            w.quotas,
            |_, _| {},
        ));
    }

    // Endpoints (own caches of Services, Endpoints and Pods).
    tasks.spawn(endpoints::run(
        ctx.client.clone(),
        ctx.cfg.workers,
        ctx.cfg.resync,
    ));

    if let Some(cidr) = ctx.cfg.pod_cidr {
        tasks.spawn(podcidr::run(ctx.client.clone(), cidr));
    }

    // Workers start once the caches they read are synced.
    let c = ctx.clone();
    tasks.spawn(async move {
        c.pods.wait_until_ready().await;
        c.rss.wait_until_ready().await;
        c.deployments.wait_until_ready().await;
        c.nodes.wait_until_ready().await;
        c.leases.wait_until_ready().await;
        c.namespaces.wait_until_ready().await;
        c.quotas.wait_until_ready().await;
        tracing::info!("caches synced; controllers starting");
        let mut inner = JoinSet::new();
        for _ in 0..c.cfg.workers.max(1) {
            inner.spawn(worker(
                c.clone(),
                c.rs_queue.clone(),
                "replicaset",
                |c, k| Box::pin(replicaset::reconcile(c, k)),
            ));
            inner.spawn(worker(
                c.clone(),
                c.dep_queue.clone(),
                "deployment",
                |c, k| Box::pin(deployment::reconcile(c, k)),
            ));
        }
        inner.spawn(worker(
            c.clone(),
            c.node_queue.clone(),
            "nodelifecycle",
            |c, _| Box::pin(node::reconcile(c)),
        ));
        inner.spawn(worker(
            c.clone(),
            c.gc_queue.clone(),
            "garbagecollector",
            |c, _| Box::pin(gc::reconcile(c)),
        ));
        inner.spawn(worker(
            c.clone(),
            c.ns_queue.clone(),
            "namespace",
            |c, k| Box::pin(namespace::reconcile(c, k)),
        ));
        inner.spawn(namespace::quota_loop(c.clone()));
        // Periodic resync.
        let r = c.clone();
        inner.spawn(async move {
            let mut t = tokio::time::interval(r.cfg.resync);
            t.tick().await;
            loop {
                t.tick().await;
                for rs in r.rss.list() {
                    r.rs_queue.add(key_of(&*rs));
                }
                for d in r.deployments.list() {
                    r.dep_queue.add(key_of(&*d));
                }
                r.node_queue.add(());
                r.gc_queue.add(());
            }
        });
        c.node_queue.add(());
        c.gc_queue.add(());
        for d in c.deployments.list() {
            c.dep_queue.add(key_of(&*d));
        }
        for rs in c.rss.list() {
            c.rs_queue.add(key_of(&*rs));
        }
        while inner.join_next().await.is_some() {}
    });
}

type BoxFut<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Option<Duration>>> + Send + 'a>>;

/// One worker: take a key, reconcile, requeue as the result says.
async fn worker<K>(
    ctx: Arc<Ctx>,
    q: Arc<WorkQueue<K>>,
    name: &'static str,
    f: for<'a> fn(&'a Ctx, &'a K) -> BoxFut<'a>,
) where
    K: Clone + Eq + std::hash::Hash + Send + Sync + std::fmt::Debug + 'static,
{
    while let Some(key) = q.get().await {
        let started = std::time::Instant::now();
        let r = f(&ctx, &key).await;
        let result = match &r {
            Ok(None) => "success",
            Ok(Some(_)) => "requeue_after",
            Err(_) => "error",
        };
        crate::metrics::reconciled(name, result, started.elapsed());
        match r {
            Ok(after) => {
                q.forget(&key);
                if let Some(d) = after {
                    q.add_after(key.clone(), d);
                }
            }
            Err(e) => {
                match &e {
                    crate::Error::Conflict(_)
                    | crate::Error::NotFound(_)
                    | crate::Error::AlreadyExists(_) => {
                        tracing::debug!(controller = name, ?key, error = %e, "requeue")
                    }
                    _ => {
                        tracing::warn!(controller = name, ?key, error = %e, "reconcile failed; requeue with backoff")
                    }
                }
                q.add_rate_limited(key.clone());
            }
        }
        q.done(&key);
    }
}
