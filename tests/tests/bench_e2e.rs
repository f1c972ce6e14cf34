//! End-to-end benchmarks (issue #10), `#[ignore]`d: they print numbers, they assert nothing
//! about them. Run as root:
//!
//! ```sh
//! cargo nextest run -p kapsel-tests --test e2e --run-ignored only bench_e2e:: --no-capture
//! ```
//!
//! - `bench_pod_create_to_running_on_three_nodes`: the multi-node harness (3 real agents, each
//!   in its own network namespace, the control plane on the host); `KT_BENCH_PODS` pods (default
//!   60) created one at a time, each timed from the create call to `Running` seen on a watch.
//! - `bench_server_rss_idle_and_with_100_pods`: `kapsel server` with a hollow local agent
//!   (pods are reported running, nothing runs: the 100 pods cost the control plane and the
//!   agent's bookkeeping only); VmRSS idle and with 100 Running pods.
//!
//! The demo's own timing (built tree → 3/3 Ready) is printed by scripts/demo.sh.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kapsel_api::client::{Api, ListParams};
use kapsel_api::meta::WatchEventType;
use kapsel_api::Pod;
use kapsel_tests::multinode::{Cluster, ClusterOpts};
use kapsel_tests::{pod_phase, require_root, tempdir, Server, ServerOpts};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "e2e"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "c",
                "image": "busybox",
                "command": ["/bin/sleep", "3600"],
            }]
        }
    }))
    .expect("pod")
}

/// Create `n` pods one at a time; for each, the time from the create call to `Running` on a
/// watch opened before the call.
async fn create_to_running(pods: &Api<Pod>, n: usize, prefix: &str) -> Vec<(Duration, String)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let rv = pods
            .list(&ListParams::default().limit(1))
            .await
            .expect("list")
            .metadata
            .resource_version
            .unwrap_or_default();
        let mut w = pods
            .watch(&ListParams::default().labels("bench=e2e").timeout(120), &rv)
            .await
            .expect("watch");
        let t = Instant::now();
        pods.create(&pod(&name)).await.expect("create pod");
        let node = loop {
            let ev = tokio::time::timeout(Duration::from_secs(120), w.next())
                .await
                .unwrap_or_else(|_| panic!("{name} not Running within 120 s"))
                .unwrap_or_else(|| panic!("watch of {name} ended"))
                .expect("watch event");
            if ev.type_ == WatchEventType::Bookmark
                || ev.object.metadata.name.as_deref() != Some(name.as_str())
            {
                continue;
            }
            if pod_phase(&ev.object) == "Running" {
                break ev.object.spec.and_then(|s| s.node_name).unwrap_or_default();
            }
        };
        out.push((t.elapsed(), node));
    }
    out
}

fn summary(what: &str, v: &[(Duration, String)]) {
    let mut d: Vec<Duration> = v.iter().map(|(d, _)| *d).collect();
    d.sort();
    let mut per_node = std::collections::BTreeMap::<&str, usize>::new();
    for (_, n) in v {
        *per_node.entry(n.as_str()).or_default() += 1;
    }
    println!(
        "{what}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms min={:.1} ms; pods per node {per_node:?}",
        d.len(),
        ms(pct(&d, 0.5)),
        ms(pct(&d, 0.99)),
        ms(*d.last().expect("samples")),
        ms(d[0]),
    );
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints numbers (cargo nextest run --run-ignored only)"]
async fn bench_pod_create_to_running_on_three_nodes() {
    let n: usize = std::env::var("KT_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let Some(c) = Cluster::start(
        "bench_pod_create_to_running_on_three_nodes",
        ClusterOpts {
            nodes: 3,
            ..Default::default()
        },
    ) else {
        return;
    };
    c.wait_ready(Duration::from_secs(120)).await;
    let client = c.client();
    let pods: Api<Pod> = client.api(Some("default"));
    println!("load average before: {}", loadavg());
    // one warm-up pod per node (first use of the image store, pod network setup)
    let warm = create_to_running(&pods, 3, "warm").await;
    summary("warm-up (first pods)", &warm);
    let v = create_to_running(&pods, n, "e2e").await;
    summary(
        "pod create -> Running, 3-node multinode harness, real runtime",
        &v,
    );
    println!("load average after: {}", loadavg());
}

fn rss_kib(pid: i32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints numbers (cargo nextest run --run-ignored only)"]
async fn bench_server_rss_idle_and_with_100_pods() {
    if !require_root("bench_server_rss_idle_and_with_100_pods") {
        return;
    }
    let dir = tempdir("kt-bench-rss");
    let s = Server::start(
        dir.path(),
        &ServerOpts {
            hollow: true,
            ..Default::default()
        },
    );
    let client = s.client();
    kapsel_tests::wait_nodes_ready(&client, 1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pid = s.proc.pid();
    let (idle, idle_hwm) = rss_kib(pid);
    println!(
        "kapsel server (hollow local agent) idle: RSS {:.1} MiB (peak {:.1} MiB)",
        idle as f64 / 1024.0,
        idle_hwm as f64 / 1024.0
    );
    let pods: Api<Pod> = client.api(Some("default"));
    let t = Instant::now();
    for i in 0..100 {
        pods.create(&pod(&format!("rss-{i}")))
            .await
            .expect("create");
    }
    kapsel_tests::eventually(Duration::from_secs(120), "100 pods Running", || {
        let pods = pods.clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels("bench=e2e"))
                .await
                .ok()?;
            (l.items.iter().filter(|p| pod_phase(p) == "Running").count() == 100).then_some(())
        }
    })
    .await;
    println!(
        "100 pods created and Running in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (full, full_hwm) = rss_kib(pid);
    println!(
        "kapsel server (hollow local agent) with 100 Running pods: RSS {:.1} MiB (peak {:.1} MiB); load average {}",
        full as f64 / 1024.0,
        full_hwm as f64 / 1024.0,
        loadavg()
    );
}
