//! Chaos tests (issue #10): things are killed or cut off while the cluster works, and the
//! invariants that must hold are checked on every watch event or awaited through watches.
//!
//! Every test is seeded: it prints its seed, and `KAPSEL_CHAOS_SEED=N` replays the same choices
//! (which pod, which node, when). Every test is bounded in time ([`bounded`]) and prints what it
//! did and which invariants it checked.
//!
//! 1. [`chaos_kill_containers_restart_within_backoff`]: kill -9 the processes of random
//!    containers of a 6-replica Deployment for 60 s (real runtime, one node).
//! 2. [`chaos_kill_agent_pods_move_and_agent_cleans_up`]: kill -9 a node's agent (3 nodes).
//! 3. [`chaos_kill_apiserver_during_apply_burst`]: kill -9 the separate `kapsel-apiserver`
//!    during 500 server-side applies from 8 clients (hollow agent, no root needed).
//! 4. [`chaos_kill_new_pod_during_rolling_update`]: kill -9 a new pod's container mid-rollout.
//! 5. [`chaos_partition_node_pods_replaced_and_duplicates_stopped`]: a node's link goes down
//!    for 20 s.
//!
//! Tests 1, 2, 4 and 5 need root (real containers, network namespaces); under `CI=true` they
//! fail instead of skipping.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kapsel_api::client::{
    Api, ApiResource, Client, ClientConfig, DynamicApi, ListParams, Patch, PatchParams,
};
use kapsel_api::watcher::{watcher, Event, WatcherConfig};
use kapsel_api::{Deployment, Node, Pod, Resource};
use kapsel_tests::local_cluster::cgroup_tree_dirs;
use kapsel_tests::multinode::{leftovers, Cluster, ClusterOpts};
use kapsel_tests::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

// ------------------------------------------------------------------------------------------
// Seeds, logging, time bounds
// ------------------------------------------------------------------------------------------

/// The seed: `KAPSEL_CHAOS_SEED` if set, else random; printed either way.
fn seed(test: &str) -> StdRng {
    let seed = std::env::var("KAPSEL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(rand::random);
    println!("{test}: seed {seed} (replay with KAPSEL_CHAOS_SEED={seed})");
    StdRng::seed_from_u64(seed)
}

/// Timestamped lines (seconds since the test started).
#[derive(Clone, Copy)]
struct Log {
    t0: Instant,
}

impl Log {
    fn new() -> Log {
        Log { t0: Instant::now() }
    }
    fn p(&self, msg: impl Display) {
        println!("[{:7.2}s] {msg}", self.t0.elapsed().as_secs_f64());
    }
}

/// Run the test body with a hard time bound (everything it owns is dropped on expiry).
async fn bounded<F: std::future::Future<Output = ()>>(test: &str, limit: Duration, f: F) {
    if tokio::time::timeout(limit, f).await.is_err() {
        panic!("{test}: exceeded its time bound of {limit:?}");
    }
}

// ------------------------------------------------------------------------------------------
// Watches: a local view of a kind, an invariant checked on every event, waits on the view
// ------------------------------------------------------------------------------------------

/// The state after one watch event.
struct Snap<K> {
    /// By name.
    objs: BTreeMap<String, K>,
    /// Events seen so far (a relist counts as one).
    events: u64,
}

type Check<K> = Box<dyn FnMut(&Snap<K>) -> Result<(), String> + Send>;

/// A watcher over one kind; `check` runs on every event and records what it returns as a
/// violation.
struct Watch<K: Resource> {
    rx: tokio::sync::watch::Receiver<Arc<Snap<K>>>,
    task: tokio::task::JoinHandle<()>,
    violations: Arc<Mutex<Vec<String>>>,
}

trait Describe {
    fn describe(&self) -> String;
}

impl Describe for Pod {
    fn describe(&self) -> String {
        format!(
            "{} node={} phase={} ready={} restarts={}{}",
            self.metadata.name(),
            node_name(self),
            pod_phase(self),
            pod_ready(self),
            restart_count(self),
            if self.metadata.deletion_timestamp.is_some() {
                " TERMINATING"
            } else {
                ""
            }
        )
    }
}

impl Describe for Deployment {
    fn describe(&self) -> String {
        let s = self.status.clone().unwrap_or_default();
        format!(
            "{} gen={:?} observed={:?} replicas={:?} updated={:?} ready={:?} available={:?}",
            self.metadata.name(),
            self.metadata.generation,
            s.observed_generation,
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas
        )
    }
}

impl Describe for Node {
    fn describe(&self) -> String {
        format!("{} ready={}", self.metadata.name(), node_ready(self))
    }
}

impl<K: Resource + Describe> Watch<K> {
    fn start(api: Api<K>, selector: Option<&str>, mut check: Check<K>) -> Watch<K> {
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(Snap {
            objs: BTreeMap::new(),
            events: 0,
        }));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let v = violations.clone();
        let mut cfg = WatcherConfig::default();
        if let Some(s) = selector {
            cfg = cfg.labels(s);
        }
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, cfg).boxed();
            let mut objs: BTreeMap<String, K> = BTreeMap::new();
            let mut n = 0u64;
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(Event::Restarted(all)) => {
                        objs = all.into_iter().map(|o| (o.name().to_string(), o)).collect();
                    }
                    Ok(Event::Applied(o)) => {
                        objs.insert(o.name().to_string(), o);
                    }
                    Ok(Event::Deleted(o)) => {
                        objs.remove(o.name());
                    }
                    Err(_) => continue,
                }
                n += 1;
                let snap = Snap {
                    objs: objs.clone(),
                    events: n,
                };
                if let Err(e) = check(&snap) {
                    let mut v = v.lock().expect("violations");
                    if v.len() < 50 {
                        v.push(format!("event {n}: {e}"));
                    }
                }
                if tx.send(Arc::new(snap)).is_err() {
                    return;
                }
            }
        });
        Watch {
            rx,
            task,
            violations,
        }
    }

    /// Wait (woken by watch events) until `f` holds on the view; panics after `timeout`.
    async fn wait(
        &self,
        timeout: Duration,
        what: &str,
        f: impl Fn(&Snap<K>) -> bool,
    ) -> Arc<Snap<K>> {
        let mut rx = self.rx.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = rx.borrow_and_update().clone();
            if s.events > 0 && f(&s) {
                return s;
            }
            // The deadline is checked here too: `timeout_at` returns the inner future's result
            // whenever it is ready, so a watch changing without pause would never let it expire.
            let expired = tokio::time::Instant::now() >= deadline;
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) if !expired => {}
                Ok(Err(_)) => panic!("the watch ended while waiting for: {what}"),
                Ok(Ok(())) | Err(_) => {
                    let s = rx.borrow().clone();
                    let view: Vec<String> = s.objs.values().map(|o| o.describe()).collect();
                    panic!(
                        "timed out after {timeout:?} waiting for: {what}\nview after {} events:\n  {}",
                        s.events,
                        view.join("\n  ")
                    );
                }
            }
        }
    }

    fn events(&self) -> u64 {
        self.rx.borrow().events
    }

    fn violations(&self) -> Vec<String> {
        self.violations.lock().expect("violations").clone()
    }
}

impl<K: Resource> Drop for Watch<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn no_check<K>() -> Check<K> {
    Box::new(|_: &Snap<K>| Ok(()))
}

fn node_name(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn live(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
}

/// Live pods, all Ready.
fn live_ready(s: &Snap<Pod>) -> Vec<&Pod> {
    s.objs
        .values()
        .filter(|p| live(p) && pod_ready(p))
        .collect()
}

fn count_live(s: &Snap<Pod>) -> usize {
    s.objs.values().filter(|p| live(p)).count()
}

/// A pod watch on `selector` in `default` that records a violation on every event where more
/// than `max` pods are live.
fn watch_live_pods_at_most(client: &Client, selector: &str, max: usize) -> Watch<Pod> {
    Watch::<Pod>::start(
        client.api(Some("default")),
        Some(selector),
        Box::new(move |s: &Snap<Pod>| {
            if count_live(s) > max {
                return Err(format!("{} live pods (> {max} replicas)", count_live(s)));
            }
            Ok(())
        }),
    )
}

// ------------------------------------------------------------------------------------------
// Manifests
// ------------------------------------------------------------------------------------------

/// A busybox httpd Deployment (`app=<name>`), readiness by TCP on 8080.
fn web_deployment(name: &str, replicas: u32, version: &str, strategy: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
{strategy}  template:
    metadata:
      labels:
        app: {name}
        version: {version}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: busybox
        command: ["/bin/sh", "-c", "mkdir -p /tmp/www && echo {version} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
        readinessProbe:
          tcpSocket:
            port: 8080
          initialDelaySeconds: 1
          periodSeconds: 1
"#
    )
}

// ------------------------------------------------------------------------------------------
// The node as the host sees it: container processes, cgroups, mounts, veths
// ------------------------------------------------------------------------------------------

/// cgroup hierarchy roots to look in (v1 controllers first, then the v2 root).
const CG_ROOTS: &[&str] = &[
    "/sys/fs/cgroup/pids",
    "/sys/fs/cgroup/memory",
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup",
];

fn read_procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The host pids of a pod's (first) container, from its cgroup
/// `<cgroup parent>/pod-p-<uid>/<container id>` (the runtime's layout).
fn container_pids(cgroup_parent: &str, pod: &Pod) -> Vec<i32> {
    let Some(cid) = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.first())
        .and_then(|c| c.container_id.clone())
    else {
        return Vec::new();
    };
    let cid = cid.trim_start_matches("kapsel://");
    let rel = format!("{cgroup_parent}/pod-p-{}/{cid}", pod.metadata.uid());
    for root in CG_ROOTS {
        let d = Path::new(root).join(&rel);
        if d.is_dir() {
            return read_procs(&d);
        }
    }
    Vec::new()
}

/// kill -9 every process of the pod's container; the pids killed.
fn kill_container(cgroup_parent: &str, pod: &Pod) -> Vec<i32> {
    let pids = container_pids(cgroup_parent, pod);
    for &pid in &pids {
        // SAFETY: kill(2) of a process in a container cgroup this test's cluster owns.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    pids
}

/// Every cgroup directory below `parent` (relative paths, all hierarchies, deduplicated).
fn cgroups_below(parent: &str) -> BTreeSet<String> {
    cgroup_tree_dirs(parent)
        .into_iter()
        .filter(|(top, d)| top != d)
        .filter_map(|(top, d)| Some(d.strip_prefix(&top).ok()?.display().to_string()))
        .collect()
}

/// Every process in the cgroup trees named `parent` (all hierarchies).
fn procs_below(parent: &str) -> BTreeSet<i32> {
    cgroup_tree_dirs(parent)
        .into_iter()
        .flat_map(|(_, d)| read_procs(&d))
        .collect()
}

/// Pod uids that still have a cgroup (running or leftover containers) on a node.
fn pod_uids_with_cgroups(cgroup_parent: &str) -> BTreeSet<String> {
    cgroups_below(cgroup_parent)
        .into_iter()
        .filter_map(|rel| {
            let first = rel.split('/').next()?.to_string();
            first.strip_prefix("pod-p-").map(str::to_string)
        })
        .collect()
}

/// Pod uids whose containers still have processes on a node.
fn pod_uids_with_procs(cgroup_parent: &str) -> BTreeSet<String> {
    pod_uids_with_cgroups(cgroup_parent)
        .into_iter()
        .filter(|uid| !procs_below(&format!("{cgroup_parent}/pod-p-{uid}")).is_empty())
        .collect()
}

/// What a node holds on the host: the leak check compares this before and after.
#[derive(Debug, PartialEq, Eq)]
struct NodeFootprint {
    cgroups: BTreeSet<String>,
    procs: BTreeSet<i32>,
    mounts: BTreeSet<String>,
    veths: BTreeSet<String>,
    runtime_state: BTreeSet<String>,
}

fn mounts_under(dirs: &[&Path]) -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| dirs.iter().any(|d| Path::new(m).starts_with(d)))
        .map(str::to_string)
        .collect()
}

fn dir_entries(d: &Path) -> BTreeSet<String> {
    std::fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .map(|e| format!("{}/{}", d.display(), e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

fn footprint(c: &Cluster, i: usize) -> NodeFootprint {
    let n = &c.nodes[i];
    let veths = c
        .node_sh(i, "ip -o link show type veth")
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
        .collect();
    let mut runtime_state = dir_entries(&n.runtime_dir.join("containers"));
    runtime_state.extend(dir_entries(&n.runtime_dir.join("sandboxes")));
    NodeFootprint {
        cgroups: cgroups_below(&n.cgroup_parent),
        procs: procs_below(&n.cgroup_parent),
        mounts: mounts_under(&[&n.runtime_dir, &n.data_dir]),
        veths,
        runtime_state,
    }
}

/// Poll the node's footprint until it equals `want` (host state has no watch); panics with
/// the difference after `timeout`.
async fn footprint_back_to(c: &Cluster, i: usize, want: &NodeFootprint, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let now = footprint(c, i);
        if &now == want {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "node {} leaked after {timeout:?}:\n  cgroups {:?}\n  processes {:?}\n  mounts {:?}\n  veths {:?}\n  runtime state {:?}",
                c.nodes[i].name,
                now.cgroups.difference(&want.cgroups).collect::<Vec<_>>(),
                now.procs.difference(&want.procs).collect::<Vec<_>>(),
                now.mounts.difference(&want.mounts).collect::<Vec<_>>(),
                now.veths.difference(&want.veths).collect::<Vec<_>>(),
                now.runtime_state
                    .difference(&want.runtime_state)
                    .collect::<Vec<_>>(),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Poll until no container of the given pods has a process or cgroup left on node `i`.
async fn containers_gone(c: &Cluster, i: usize, uids: &BTreeSet<String>, timeout: Duration) {
    let parent = c.nodes[i].cgroup_parent.clone();
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<String> = pod_uids_with_cgroups(&parent)
            .intersection(uids)
            .cloned()
            .collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "node {}: containers of deleted pods still there after {timeout:?}: {left:?}",
                c.nodes[i].name
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ------------------------------------------------------------------------------------------
// 1. kill -9 random containers for 60 s
// ------------------------------------------------------------------------------------------

/// Restart backoff of the test's agent: 1 s doubling to 4 s (`--backoff-initial-seconds 1
/// --backoff-max-seconds 4`); the n-th kill of one container is restarted after
/// min(2^(n-1), 4) s.
const BACKOFF_MAX: f64 = 4.0;
/// What a restart may take beyond its backoff on this (2-core, shared) machine: noticing the
/// exit, creating the container, reporting the status, the watch event.
const RESTART_SLACK: f64 = 6.0;

struct KillRecord {
    pod: String,
    uid: String,
    at: Instant,
    restarts_before: i32,
    /// Backoff the agent applies to this restart (s).
    backoff: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_containers_restart_within_backoff() {
    const TEST: &str = "chaos_kill_containers_restart_within_backoff";
    let mut rng = seed(TEST);
    let Some(c) = Cluster::start(
        TEST,
        ClusterOpts {
            nodes: 1,
            internet: false,
            agent_args: [
                "--backoff-initial-seconds",
                "1",
                "--backoff-max-seconds",
                "4",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
    ) else {
        return;
    };
    bounded(TEST, Duration::from_secs(240), async {
        let log = Log::new();
        c.wait_ready(Duration::from_secs(60)).await;
        let before = footprint(&c, 0);
        log.p(format!(
            "node {} up; host footprint before: {} cgroups, {} processes, {} mounts, veths {:?}",
            c.nodes[0].name,
            before.cgroups.len(),
            before.procs.len(),
            before.mounts.len(),
            before.veths
        ));
        let client = c.client();
        // restartCount of every pod as seen on each event: the timeline the bounds are checked on
        type Timeline = BTreeMap<String, Vec<(Instant, i32)>>;
        let timeline: Arc<Mutex<Timeline>> = Arc::default();
        let tl = timeline.clone();
        let pods = Watch::<Pod>::start(
            client.api(Some("default")),
            Some("app=chaos1"),
            Box::new(move |s: &Snap<Pod>| {
                let mut tl = tl.lock().expect("timeline");
                let now = Instant::now();
                for p in s.objs.values() {
                    let v = tl.entry(p.metadata.uid().to_string()).or_default();
                    let rc = restart_count(p);
                    if v.last().map(|x| x.1) != Some(rc) {
                        v.push((now, rc));
                    }
                }
                // a kill restarts the container in place: the pods are never replaced
                if count_live(s) > 6 {
                    return Err(format!("{} live pods (> 6)", count_live(s)));
                }
                Ok(())
            }),
        );
        let deps = Watch::<Deployment>::start(client.api(Some("default")), None, no_check());
        c.apply_async(&web_deployment("chaos1", 6, "v1", "")).await;
        let s = pods
            .wait(Duration::from_secs(90), "6 pods Ready", |s| {
                live_ready(s).len() == 6
            })
            .await;
        let uids: BTreeSet<String> = s.objs.values().map(|p| p.metadata.uid().to_string()).collect();
        log.p("deployment chaos1: 6/6 Ready; killing containers for 60 s");

        let parent = c.nodes[0].cgroup_parent.clone();
        let mut kills: Vec<KillRecord> = Vec::new();
        let mut kills_per_pod: BTreeMap<String, u32> = BTreeMap::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            // a random Ready pod whose container is up (has processes)
            let snap = pods.rx.borrow().clone();
            let mut ready: Vec<&Pod> = live_ready(&snap);
            ready.sort_by_key(|p| p.metadata.name().to_string());
            if !ready.is_empty() {
                let p = ready[rng.gen_range(0..ready.len())];
                let pids = kill_container(&parent, p);
                if !pids.is_empty() {
                    let n = kills_per_pod.entry(p.metadata.uid().to_string()).or_default();
                    *n += 1;
                    let backoff = 2f64.powi(i32::try_from(*n).unwrap_or(8) - 1).min(BACKOFF_MAX);
                    log.p(format!(
                        "kill #{}: SIGKILL pids {pids:?} of {} (restarts {}, kill {n} of this container, backoff {backoff} s)",
                        kills.len() + 1,
                        p.metadata.name(),
                        restart_count(p)
                    ));
                    kills.push(KillRecord {
                        pod: p.metadata.name().to_string(),
                        uid: p.metadata.uid().to_string(),
                        at: Instant::now(),
                        restarts_before: restart_count(p),
                        backoff,
                    });
                }
            }
            let pause = rng.gen_range(1500..4000u64);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let last = kills.last().map(|k| k.at).expect("at least one kill");
        assert!(kills.len() >= 10, "only {} kills in 60 s", kills.len());

        // 6/6 Ready within 10 s of the last kill: the pods (watch) and the Deployment status
        let s = pods
            .wait(
                Duration::from_secs(10).saturating_sub(last.elapsed()),
                "6/6 pods Ready within 10 s of the last kill",
                |s| {
                    live_ready(s).len() == 6
                        // every kill has been followed by a restart of its pod
                        && s.objs.values().all(|p| {
                            kills
                                .iter()
                                .filter(|k| k.uid == p.metadata.uid())
                                .all(|k| restart_count(p) > k.restarts_before)
                        })
                },
            )
            .await;
        let pods_ready_after = last.elapsed();
        deps.wait(
            Duration::from_secs(10).saturating_sub(last.elapsed()),
            "deployment chaos1 status 6/6 ready and available within 10 s of the last kill",
            |s| {
                s.objs.get("chaos1").is_some_and(|d| {
                    let st = d.status.clone().unwrap_or_default();
                    st.ready_replicas == Some(6) && st.available_replicas == Some(6)
                })
            },
        )
        .await;
        log.p(format!(
            "6/6 pods Ready {:.1} s and the Deployment 6/6 available {:.1} s after the last kill (bound 10 s)",
            pods_ready_after.as_secs_f64(),
            last.elapsed().as_secs_f64()
        ));
        let now_uids: BTreeSet<String> = s.objs.values().map(|p| p.metadata.uid().to_string()).collect();
        assert_eq!(now_uids, uids, "the same 6 pods (restarted in place, none replaced)");

        // every kill followed by a restart (restartCount above its value at the kill) within
        // its backoff + slack, from the watch timeline
        let tl = timeline.lock().expect("timeline").clone();
        let mut worst = 0f64;
        for (i, k) in kills.iter().enumerate() {
            let seen = tl
                .get(&k.uid)
                .and_then(|v| v.iter().find(|(t, rc)| *t >= k.at && *rc > k.restarts_before))
                .map(|(t, _)| t.duration_since(k.at).as_secs_f64());
            let bound = k.backoff + RESTART_SLACK;
            match seen {
                Some(d) => {
                    worst = worst.max(d - k.backoff);
                    assert!(
                        d <= bound,
                        "kill #{} of {}: restart seen after {d:.1} s, bound {bound:.1} s (backoff {} s + {RESTART_SLACK} s)",
                        i + 1,
                        k.pod,
                        k.backoff
                    );
                }
                None => panic!("kill #{} of {}: no restart seen in the pod watch", i + 1, k.pod),
            }
        }
        log.p(format!(
            "invariant: each of {} kills was followed by a restart (restartCount up, seen in the pod watch) within backoff min(2^(n-1), {BACKOFF_MAX}) s + {RESTART_SLACK} s; worst time beyond the backoff {worst:.1} s",
            kills.len()
        ));
        let v = pods.violations();
        assert!(v.is_empty(), "violations: {v:?}");
        log.p(format!(
            "invariant: never more than 6 live pods, same 6 pod uids throughout ({} pod events checked)",
            pods.events()
        ));

        c.kapsel_async(&["delete", "deployment", "chaos1"]).await;
        pods.wait(Duration::from_secs(60), "every pod of chaos1 gone", |s| {
            s.objs.is_empty()
        })
        .await;
        footprint_back_to(&c, 0, &before, Duration::from_secs(30)).await;
        log.p("deployment deleted: the node's cgroups, processes, mounts, veths and runtime state are back to what they were before (no leaks)");
    })
    .await;
    drop(c);
    let left = leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ------------------------------------------------------------------------------------------
// 2. kill -9 an agent
// ------------------------------------------------------------------------------------------

/// Node lifecycle timing for tests 2 and 5 (flags of `kapsel server` and `kapsel agent`).
const GRACE_S: u64 = 8;
const EVICTION_S: u64 = 2;

fn short_lifecycle() -> ClusterOpts {
    ClusterOpts {
        nodes: 3,
        internet: false,
        server_args: [
            "--node-monitor-grace-seconds".to_string(),
            GRACE_S.to_string(),
            "--pod-eviction-timeout-seconds".to_string(),
            EVICTION_S.to_string(),
        ]
        .to_vec(),
        agent_args: ["--lease-renew-seconds", "1"].map(String::from).to_vec(),
        ..Default::default()
    }
}

/// Pods per node index, live only.
fn live_by_node(c: &Cluster, s: &Snap<Pod>) -> BTreeMap<usize, Vec<String>> {
    let mut m: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for p in s.objs.values().filter(|p| live(p)) {
        if let Some(i) = c.nodes.iter().position(|n| n.name == node_name(p)) {
            m.entry(i).or_default().push(p.metadata.name().to_string());
        }
    }
    m
}

/// The replicas on nodes other than `victim`, all Running (and Ready).
fn replaced_off(s: &Snap<Pod>, victim: &str, replicas: usize) -> bool {
    let l: Vec<&Pod> = s
        .objs
        .values()
        .filter(|p| live(p) && node_name(p) != victim && pod_phase(p) == "Running" && pod_ready(p))
        .collect();
    l.len() == replicas && count_live(s) == replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_agent_pods_move_and_agent_cleans_up() {
    const TEST: &str = "chaos_kill_agent_pods_move_and_agent_cleans_up";
    let mut rng = seed(TEST);
    let Some(mut c) = Cluster::start(TEST, short_lifecycle()) else {
        return;
    };
    bounded(TEST, Duration::from_secs(240), async {
        let log = Log::new();
        c.wait_ready(Duration::from_secs(60)).await;
        let client = c.client();
        let pods = watch_live_pods_at_most(&client, "app=chaos2", 6);
        c.apply_async(&web_deployment("chaos2", 6, "v1", "")).await;
        let s = pods
            .wait(Duration::from_secs(90), "6 pods Ready", |s| live_ready(s).len() == 6)
            .await;
        let by_node = live_by_node(&c, &s);
        log.p(format!("6/6 Ready; pods per node {:?}", by_node.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()));
        let candidates: Vec<usize> = by_node.keys().copied().collect();
        let victim = candidates[rng.gen_range(0..candidates.len())];
        let vname = c.nodes[victim].name.clone();
        let old: BTreeSet<String> = s
            .objs
            .values()
            .filter(|p| node_name(p) == vname)
            .map(|p| p.metadata.uid().to_string())
            .collect();

        c.kill_agent(victim);
        let killed = Instant::now();
        log.p(format!("kill -9 the agent of {vname} (its {} pods' containers keep running)", old.len()));
        let bound = Duration::from_secs(GRACE_S + EVICTION_S + 5);
        pods.wait(bound, "6 pods Running and Ready on the other nodes", |s| replaced_off(s, &vname, 6))
            .await;
        log.p(format!(
            "invariant: its pods Running on the other nodes {:.1} s after the kill (bound: grace {GRACE_S} s + eviction {EVICTION_S} s + 5 s = {} s)",
            killed.elapsed().as_secs_f64(),
            bound.as_secs()
        ));
        let stale = pod_uids_with_procs(&c.nodes[victim].cgroup_parent);
        log.p(format!(
            "{vname} still runs {} stale containers of the evicted pods (no agent to stop them)",
            stale.intersection(&old).count()
        ));
        assert!(!stale.is_disjoint(&old), "the killed agent's containers kept running");

        c.start_agent(victim);
        log.p(format!("agent of {vname} started again"));
        wait_nodes_ready(&client, 3, Duration::from_secs(60)).await;
        pods.wait(Duration::from_secs(60), "the evicted pods are gone from the API", |s| {
            s.objs.values().all(|p| !old.contains(p.metadata.uid()))
        })
        .await;
        containers_gone(&c, victim, &old, Duration::from_secs(30)).await;
        log.p(format!("invariant: the restarted agent removed the containers and cgroups of all {} stale pods", old.len()));

        // the bound was checked on every event until now (the scale-up below lifts it to 8)
        let v = pods.violations();
        assert!(v.is_empty(), "violations: {v:?}");
        log.p(format!(
            "invariant: never more than 6 live pods while the node was down and after ({} pod events checked)",
            pods.events()
        ));

        // it takes new pods: scale up; the scheduler puts the new pods on the emptiest node
        c.kapsel_async(&["scale", "deployment/chaos2", "--replicas", "8"]).await;
        pods.wait(Duration::from_secs(60), "a new pod Running on the restarted node", |s| {
            s.objs.values().any(|p| live(p) && node_name(p) == vname && pod_ready(p))
                && live_ready(s).len() == 8
        })
        .await;
        log.p(format!("invariant: {vname} takes new pods again (scaled to 8: pods Ready on it)"));
    })
    .await;
    drop(c);
    let left = leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ------------------------------------------------------------------------------------------
// 3. kill -9 the API server during a burst of applies
// ------------------------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn apiserver(dir: &Path, port: u16) -> Proc {
    let mut cmd = Command::new(binary("kapsel-apiserver"));
    cmd.arg("--data-dir")
        .arg(dir.join("store"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--insecure-http"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    let log = dir.join(format!("apiserver-{}.log", short_id()));
    Proc::spawn("kapsel-apiserver", cmd, log)
}

async fn wait_serving(client: &Client, p: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.get_bytes("/readyz").await.is_ok() {
            return;
        }
        assert!(p.alive(), "kapsel-apiserver exited:\n{}", p.log_tail(30));
        assert!(
            Instant::now() < deadline,
            "kapsel-apiserver not ready:\n{}",
            p.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Object `i` of the burst: every 25th a Deployment (1 replica), the rest ConfigMaps.
fn burst_object(i: usize) -> (bool, String, Value) {
    if i.is_multiple_of(25) {
        let name = format!("dep-{i:03}");
        let v = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "labels": {"chaos": "burst"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name, "chaos": "burst"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}
                }
            }
        });
        (true, name, v)
    } else {
        let name = format!("cm-{i:03}");
        let v = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": {"chaos": "burst"}},
            "data": {"i": i.to_string(), "payload": "x".repeat(1024)}
        });
        (false, name, v)
    }
}

fn configmaps(client: &Client) -> DynamicApi {
    client.dynamic(
        ApiResource::new("", "v1", "ConfigMap", "configmaps", true),
        Some("default"),
    )
}

fn deployments_dyn(client: &Client) -> DynamicApi {
    client.dynamic(ApiResource::of::<Deployment>(), Some("default"))
}

/// Whether a stored object carries everything its apply wrote.
fn complete(want: &Value, got: &Value, deployment: bool) -> bool {
    let labels_ok = got.pointer("/metadata/labels/chaos") == Some(&json!("burst"));
    if deployment {
        labels_ok
            && got.pointer("/spec/replicas") == want.pointer("/spec/replicas")
            && got.pointer("/spec/template/spec/containers/0/image")
                == want.pointer("/spec/template/spec/containers/0/image")
            && got.pointer("/spec/selector") == want.pointer("/spec/selector")
    } else {
        labels_ok && got.get("data") == want.get("data")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_kill_apiserver_during_apply_burst() {
    const TEST: &str = "chaos_kill_apiserver_during_apply_burst";
    const N: usize = 500;
    const CLIENTS: usize = 8;
    let mut rng = seed(TEST);
    let kill_after = rng.gen_range(100..300usize);
    let down_ms = rng.gen_range(200..1200u64);
    let dir = tempdir("kt-chaos3-");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::from_config(ClientConfig::new(&url)).expect("client");
    let mut api = apiserver(dir.path(), port);
    wait_serving(&client, &mut api).await;
    let comp = |bin: &str| {
        let mut cmd = Command::new(binary(bin));
        cmd.args(["--server", &url, "--metrics-addr", ""])
            .env("RUST_LOG", "warn");
        Proc::spawn(bin, cmd, dir.path().join(format!("{bin}.log")))
    };
    let _sched = comp("kapsel-scheduler");
    let _ctrl = comp("kapsel-controller");
    let mut agent_cmd = Command::new(binary("kapsel-agent"));
    agent_cmd
        .args(["--server", &url, "--hollow", "--node-name", "kt-chaos3"])
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .args(["--cgroup-parent", "kt-chaos3", "--max-pods", "100"])
        .env("RUST_LOG", "warn");
    let _agent = Proc::spawn("kapsel-agent", agent_cmd, dir.path().join("agent.log"));

    bounded(TEST, Duration::from_secs(240), async {
        let log = Log::new();
        wait_nodes_ready(&client, 1, Duration::from_secs(60)).await;
        log.p(format!(
            "kapsel-apiserver (127.0.0.1:{port}), kapsel-scheduler, kapsel-controller and a hollow agent up; {N} server-side applies from {CLIENTS} clients; kill -9 after {kill_after} acknowledgements, restart {down_ms} ms later"
        ));
        // (index, resourceVersion) acknowledged; indexes that failed
        let acked: Arc<Mutex<BTreeMap<usize, String>>> = Arc::default();
        let failed: Arc<Mutex<BTreeMap<usize, String>>> = Arc::default();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (client, acked, failed, next) =
                (client.clone(), acked.clone(), failed.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let (cms, deps) = (configmaps(&client), deployments_dyn(&client));
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= N {
                        return;
                    }
                    let (is_dep, name, body) = burst_object(i);
                    let api = if is_dep { &deps } else { &cms };
                    let patch = Patch::Apply {
                        body,
                        field_manager: "chaos".into(),
                        force: true,
                    };
                    match api.patch(&name, &patch, &PatchParams::default()).await {
                        Ok(v) => {
                            let rv = v
                                .pointer("/metadata/resourceVersion")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string();
                            acked.lock().expect("acked").insert(i, rv);
                        }
                        Err(e) => {
                            failed.lock().expect("failed").insert(i, e.to_string());
                            // the server is down: don't burn through the rest in a millisecond
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }));
        }
        // kill -9 in the middle of the burst
        loop {
            if acked.lock().expect("acked").len() >= kill_after {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        api.kill9();
        let acked_at_kill = acked.lock().expect("acked").len();
        log.p(format!("kill -9 kapsel-apiserver after {acked_at_kill} acknowledged applies"));
        tokio::time::sleep(Duration::from_millis(down_ms)).await;
        api = apiserver(dir.path(), port);
        wait_serving(&client, &mut api).await;
        log.p("kapsel-apiserver restarted on the same data dir and port");
        for t in tasks {
            t.await.expect("client task");
        }
        let acked = acked.lock().expect("acked").clone();
        let failed = failed.lock().expect("failed").clone();
        log.p(format!("burst done: {} acknowledged, {} failed", acked.len(), failed.len()));
        assert_eq!(acked.len() + failed.len(), N);
        assert!(!failed.is_empty(), "the kill happened during the burst (some applies failed)");
        assert!(acked.len() > kill_after, "applies went on after the restart");

        // what the store holds
        let lp = ListParams::default().labels("chaos=burst");
        let mut stored: BTreeMap<String, Value> = BTreeMap::new();
        for o in configmaps(&client).list(&lp).await.expect("list").items {
            stored.insert(o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").into(), o);
        }
        for o in deployments_dyn(&client).list(&lp).await.expect("list").items {
            stored.insert(o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").into(), o);
        }
        let names: BTreeSet<String> = (0..N).map(|i| burst_object(i).1).collect();
        let strays: Vec<&String> = stored.keys().filter(|k| !names.contains(*k)).collect();
        assert!(strays.is_empty(), "objects nobody applied: {strays:?}");
        let mut status_moved = 0;
        let mut max_rv = 0u64;
        for (i, rv) in &acked {
            let (is_dep, name, want) = burst_object(*i);
            let got = stored
                .get(&name)
                .unwrap_or_else(|| panic!("acknowledged {name} (rv {rv}) is missing after the restart"));
            assert!(complete(&want, got, is_dep), "acknowledged {name} is incomplete: {got}");
            let got_rv = got.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("");
            max_rv = max_rv.max(rv.parse().unwrap_or(0));
            if is_dep {
                // the controller writes Deployment status, which moves resourceVersion on; the
                // spec (generation 1) is exactly the acknowledged one
                assert_eq!(got.pointer("/metadata/generation"), Some(&json!(1)), "{name}");
                if got_rv != rv {
                    status_moved += 1;
                }
            } else {
                assert_eq!(got_rv, rv, "acknowledged {name}: resourceVersion after the restart");
            }
        }
        let mut failed_present = 0;
        for i in failed.keys() {
            let (is_dep, name, want) = burst_object(*i);
            if let Some(got) = stored.get(&name) {
                failed_present += 1;
                assert!(complete(&want, got, is_dep), "failed apply of {name} is half-written: {got}");
            }
        }
        log.p(format!(
            "invariant: all {} acknowledged objects are back, ConfigMaps with the acknowledged resourceVersion, Deployments with their acknowledged spec at generation 1 ({status_moved} had status written since); no object nobody applied",
            acked.len()
        ));
        log.p(format!(
            "invariant: of {} failed applies, {failed_present} were stored (committed, answer lost) and complete, the rest absent; none half-written",
            failed.len()
        ));
        let cm = configmaps(&client)
            .patch(
                "cm-after",
                &Patch::Apply {
                    body: json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-after", "namespace": "default"}}),
                    field_manager: "chaos".into(),
                    force: true,
                },
                &PatchParams::default(),
            )
            .await
            .expect("apply after the restart");
        let after_rv: u64 = cm
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(after_rv > max_rv, "resourceVersion {after_rv} after the restart is past every acknowledged one ({max_rv})");

        // the controllers converge: every stored Deployment has its ReplicaSet and 1 pod Running
        let deps_stored: BTreeSet<String> = stored.keys().filter(|k| k.starts_with("dep-")).cloned().collect();
        let deps = Watch::<Deployment>::start(client.api(Some("default")), Some("chaos=burst"), no_check());
        let pods = Watch::<Pod>::start(client.api(Some("default")), Some("chaos=burst"), no_check());
        deps.wait(Duration::from_secs(120), "every Deployment observed and 1/1 available", |s| {
            s.objs.len() == deps_stored.len()
                && s.objs.values().all(|d| {
                    let st = d.status.clone().unwrap_or_default();
                    st.observed_generation == d.metadata.generation
                        && st.replicas == Some(1)
                        && st.updated_replicas == Some(1)
                        && st.available_replicas == Some(1)
                })
        })
        .await;
        pods.wait(Duration::from_secs(60), "exactly one Running pod per Deployment", |s| {
            let mut per: BTreeMap<String, usize> = BTreeMap::new();
            for p in s.objs.values().filter(|p| live(p) && pod_phase(p) == "Running") {
                *per.entry(p.metadata.labels.get("app").cloned().unwrap_or_default()).or_default() += 1;
            }
            count_live(s) == deps_stored.len()
                && per.len() == deps_stored.len()
                && per.values().all(|&n| n == 1)
        })
        .await;
        log.p(format!(
            "invariant: the controllers converged after the restart: {} Deployments each observed, 1/1 available, exactly 1 Running pod each",
            deps_stored.len()
        ));
    })
    .await;
}

// ------------------------------------------------------------------------------------------
// 4. kill -9 a new pod during a rolling update
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_new_pod_during_rolling_update() {
    const TEST: &str = "chaos_kill_new_pod_during_rolling_update";
    const REPLICAS: usize = 4;
    const SURGE: usize = 1;
    const UNAVAILABLE: usize = 1;
    let mut rng = seed(TEST);
    let Some(c) = Cluster::start(
        TEST,
        ClusterOpts {
            nodes: 2,
            internet: false,
            ..Default::default()
        },
    ) else {
        return;
    };
    let strategy = format!(
        "  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: {SURGE}\n      maxUnavailable: {UNAVAILABLE}\n"
    );
    bounded(TEST, Duration::from_secs(240), async {
        let log = Log::new();
        c.wait_ready(Duration::from_secs(60)).await;
        let client = c.client();
        let killed: Arc<Mutex<Option<String>>> = Arc::default();
        let checking = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stats: Arc<Mutex<(usize, usize)>> = Arc::new(Mutex::new((0, usize::MAX)));
        let (k2, ch2, st2) = (killed.clone(), checking.clone(), stats.clone());
        let pods = Watch::<Pod>::start(
            client.api(Some("default")),
            Some("app=chaos4"),
            Box::new(move |s: &Snap<Pod>| {
                if !ch2.load(std::sync::atomic::Ordering::SeqCst) {
                    return Ok(());
                }
                let live_n = count_live(s);
                let ready = live_ready(s).len();
                // the pod this test killed counts as available while it restarts: its outage is
                // the test's doing, not the controller's
                let disrupted = k2.lock().expect("killed").as_ref().map_or(0, |uid| {
                    s.objs
                        .values()
                        .filter(|p| live(p) && p.metadata.uid() == uid && !pod_ready(p))
                        .count()
                });
                let mut st = st2.lock().expect("stats");
                st.0 = st.0.max(live_n);
                st.1 = st.1.min(ready + disrupted);
                if live_n > REPLICAS + SURGE {
                    return Err(format!("{live_n} live pods > replicas {REPLICAS} + maxSurge {SURGE}"));
                }
                if ready + disrupted < REPLICAS - UNAVAILABLE {
                    let view: Vec<String> = s.objs.values().map(|p| p.describe()).collect();
                    return Err(format!(
                        "{ready} ready (+{disrupted} killed by the test) < replicas {REPLICAS} - maxUnavailable {UNAVAILABLE}: {view:?}"
                    ));
                }
                Ok(())
            }),
        );
        let deps = Watch::<Deployment>::start(client.api(Some("default")), None, no_check());
        c.apply_async(&web_deployment("chaos4", 4, "v1", &strategy)).await;
        pods.wait(Duration::from_secs(90), "4 v1 pods Ready", |s| {
            live_ready(s).len() == REPLICAS && count_live(s) == REPLICAS
        })
        .await;
        log.p("chaos4 v1: 4/4 Ready; rolling to v2 (maxSurge 1, maxUnavailable 1)");
        checking.store(true, std::sync::atomic::Ordering::SeqCst);
        c.apply_async(&web_deployment("chaos4", 4, "v2", &strategy)).await;
        let v2 = |p: &Pod| p.metadata.labels.get("version").map(String::as_str) == Some("v2");
        let s = pods
            .wait(Duration::from_secs(60), "a v2 pod Ready while v1 pods remain", |s| {
                s.objs.values().any(|p| live(p) && v2(p) && pod_ready(p))
                    && s.objs.values().any(|p| live(p) && !v2(p))
            })
            .await;
        let mut new: Vec<&Pod> = s.objs.values().filter(|p| live(p) && v2(p) && pod_ready(p)).collect();
        new.sort_by_key(|p| p.metadata.name().to_string());
        let victim = new[rng.gen_range(0..new.len())];
        let parent = &c.nodes[c.node_of(victim)].cgroup_parent;
        *killed.lock().expect("killed") = Some(victim.metadata.uid().to_string());
        let pids = kill_container(parent, victim);
        assert!(!pids.is_empty(), "found the processes of {}", victim.metadata.name());
        let v1_left = s.objs.values().filter(|p| live(p) && !v2(p)).count();
        log.p(format!(
            "kill -9 pids {pids:?} of new pod {} ({v1_left} v1 pods still live)",
            victim.metadata.name()
        ));
        let victim_uid = victim.metadata.uid().to_string();
        pods.wait(Duration::from_secs(60), "the killed pod restarted", |s| {
            s.objs.values().any(|p| p.metadata.uid() == victim_uid && restart_count(p) >= 1)
        })
        .await;
        deps.wait(Duration::from_secs(120), "rollout of chaos4 complete", |s| {
            s.objs.get("chaos4").is_some_and(|d| {
                let st = d.status.clone().unwrap_or_default();
                st.observed_generation == d.metadata.generation
                    && st.replicas == Some(4)
                    && st.updated_replicas == Some(4)
                    && st.ready_replicas == Some(4)
                    && st.available_replicas == Some(4)
            })
        })
        .await;
        pods.wait(Duration::from_secs(60), "4 v2 pods Ready and nothing else", |s| {
            s.objs.len() == REPLICAS && s.objs.values().all(|p| live(p) && v2(p) && pod_ready(p))
        })
        .await;
        log.p("rollout complete: 4/4 v2 pods Ready, no v1 pod left");
        let v = pods.violations();
        assert!(v.is_empty(), "bounds violated: {v:?}");
        let (max_live, min_avail) = *stats.lock().expect("stats");
        log.p(format!(
            "invariant on every one of {} pod events during the rollout: live pods <= {} (max seen {max_live}), ready (+ the killed pod) >= {} (min seen {min_avail})",
            pods.events(),
            REPLICAS + SURGE,
            REPLICAS - UNAVAILABLE
        ));
    })
    .await;
    drop(c);
    let left = leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ------------------------------------------------------------------------------------------
// 5. a node cut off the network for 20 s
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_partition_node_pods_replaced_and_duplicates_stopped() {
    const TEST: &str = "chaos_partition_node_pods_replaced_and_duplicates_stopped";
    const CUT: Duration = Duration::from_secs(20);
    let mut rng = seed(TEST);
    let Some(c) = Cluster::start(TEST, short_lifecycle()) else {
        return;
    };
    bounded(TEST, Duration::from_secs(240), async {
        let log = Log::new();
        c.wait_ready(Duration::from_secs(60)).await;
        let client = c.client();
        let pods = watch_live_pods_at_most(&client, "app=chaos5", 6);
        let nodes = Watch::<Node>::start(client.api(None), None, no_check());
        c.apply_async(&web_deployment("chaos5", 6, "v1", "")).await;
        let s = pods
            .wait(Duration::from_secs(90), "6 pods Ready", |s| live_ready(s).len() == 6)
            .await;
        let by_node = live_by_node(&c, &s);
        let candidates: Vec<usize> = by_node.keys().copied().collect();
        let victim = candidates[rng.gen_range(0..candidates.len())];
        let vname = c.nodes[victim].name.clone();
        let old: BTreeSet<String> = s
            .objs
            .values()
            .filter(|p| node_name(p) == vname)
            .map(|p| p.metadata.uid().to_string())
            .collect();
        log.p(format!(
            "6/6 Ready, pods per node {:?}; cutting {vname} off (eth0 down in its netns) for {} s",
            by_node.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>(),
            CUT.as_secs()
        ));
        c.node_sh(victim, "ip link set eth0 down");
        let cut = Instant::now();
        let restore = |c: &Cluster| {
            c.node_sh(
                victim,
                &format!("ip link set eth0 up && ip route replace default via {}", c.host_ip),
            );
        };
        // pods replaced before the node returns (teardown restores nothing: it removes all)
        pods.wait(
            CUT.saturating_sub(cut.elapsed()),
            "6 pods Running and Ready on the other nodes before the node returns",
            |s| replaced_off(s, &vname, 6),
        )
        .await;
        log.p(format!(
            "invariant: its {} pods replaced on the other nodes {:.1} s into the cut",
            old.len(),
            cut.elapsed().as_secs_f64()
        ));
        let dup = pod_uids_with_procs(&c.nodes[victim].cgroup_parent);
        let dups = dup.intersection(&old).count();
        log.p(format!("{vname} still runs {dups} duplicates (it cannot hear that they were evicted)"));
        tokio::time::sleep(CUT.saturating_sub(cut.elapsed())).await;
        restore(&c);
        log.p(format!("{vname} back on the network after {:.1} s", cut.elapsed().as_secs_f64()));
        nodes
            .wait(Duration::from_secs(60), "every node Ready again", |s| {
                s.objs.len() == 3 && s.objs.values().all(node_ready)
            })
            .await;
        pods.wait(Duration::from_secs(60), "the evicted pods gone and exactly 6 pods", |s| {
            s.objs.values().all(|p| !old.contains(p.metadata.uid()))
                && s.objs.len() == 6
                && live_ready(s).len() == 6
        })
        .await;
        containers_gone(&c, victim, &old, Duration::from_secs(30)).await;
        log.p(format!(
            "invariant: on its return {vname} stopped all {} duplicates (containers and cgroups gone); the Deployment has exactly 6 pods, all Ready",
            old.len()
        ));
        let v = pods.violations();
        assert!(v.is_empty(), "violations: {v:?}");
        log.p(format!(
            "invariant: never more than 6 live pods ({} pod events checked)",
            pods.events()
        ));
    })
    .await;
    drop(c);
    let left = leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}
