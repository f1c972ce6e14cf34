//! Agent benchmark (prints numbers; not a pass/fail test). Needs root for the real runtime.
//!
//! `cargo run --release -p kapsel-agent --example bench_agent -- [PODS] [--hollow]`
//!
//! Starts an in-process API server, runs the `kapsel-agent` binary (built next to this example)
//! as its own process with the real runtime and a busybox rootfs image (so "the image is
//! present"), and measures:
//! - pod create (API call) → `Running` observed through a watch, one pod at a time: p50/p99;
//! - the agent's RSS idle and with 50 pods; its CPU use while idle.

#[path = "../runtime/tests/common/mod.rs"]
#[allow(unused_imports)]
mod rt;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kapsel_api::client::{Client, ListParams};
use kapsel_api::{Container, DeleteOptions, ObjectMeta, Pod, PodSpec, WatchEventType};
use tokio::sync::mpsc;

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12) // utime, stime (fields 14, 15)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn pod(name: &str, node: &str) -> Pod {
    let mut p = Pod::with_meta(ObjectMeta::namespaced("default", name));
    p.spec = Some(PodSpec {
        node_name: Some(node.into()),
        termination_grace_period_seconds: Some(1),
        containers: vec![Container {
            name: "c".into(),
            image: Some("busybox".into()),
            command: vec!["/bin/sleep".into(), "100000".into()],
            ..Default::default()
        }],
        ..Default::default()
    });
    p
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hollow = args.iter().any(|a| a == "--hollow");
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200);
    let env = if hollow {
        None
    } else {
        Some(rt::Env::new().ok_or_else(|| anyhow::anyhow!("needs root and /bin/busybox"))?)
    };
    let srv = kapsel_apiserver::start_test_server().await;
    let data = tempfile::tempdir()?;
    let bin = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("kapsel-agent"))
        .ok_or_else(|| anyhow::anyhow!("no binary dir"))?;
    let mut cmd = std::process::Command::new(&bin);
    cmd.args([
        "--server",
        &srv.url,
        "--node-name",
        "bench",
        "--node-ip",
        "127.0.0.1",
        "--eviction-memory-available",
        "0",
        // The pod network needs a podCIDR from the controller (not running here) and would
        // put its bridge and nft table on the host: this benchmark measures the agent and the
        // runtime; create→Running with the pod network is bench_e2e's (3 nodes in netns).
        "--no-pod-network",
    ])
    .arg("--data-dir")
    .arg(data.path())
    .env("RUST_LOG", "warn");
    if let Some(env) = &env {
        cmd.arg("--runtime-dir")
            .arg(&env.config.state_dir)
            .args(["--cgroup-parent", &env.config.cgroup_parent])
            .arg("--image-dir")
            .arg(format!("busybox={}", env.rootfs.display()));
    } else {
        cmd.arg("--hollow");
    }
    let agent = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("{}: {e}", bin.display()))?;
    // Killed on every way out, errors included (an orphaned agent would keep running pods).
    let mut agent = KillOnDrop(agent);
    let pid = agent.0.id();
    let client = Client::new(&srv.url)?;
    let nodes = client.api::<kapsel_api::Node>(None);
    let t0 = Instant::now();
    while nodes.get_opt("bench").await?.is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "agent: {} ({}), registered in {:?}",
        bin.display(),
        if hollow {
            "hollow runtime"
        } else {
            "real runtime"
        },
        t0.elapsed()
    );

    // Idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = rss_kib(pid);
    let c0 = cpu_ticks(pid);
    let idle_for = Duration::from_secs(10);
    tokio::time::sleep(idle_for).await;
    let ticks = cpu_ticks(pid) - c0;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let idle_cpu = ticks as f64 / hz / idle_for.as_secs_f64() * 100.0;

    // Latency: one watch sees every transition to Running.
    let pods = client.api::<Pod>(Some("default"));
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let list = pods.list(&ListParams::default()).await?;
    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut w = pods
        .watch_boxed(&ListParams::default().fields("spec.nodeName=bench"), &rv)
        .await?;
    tokio::spawn(async move {
        while let Some(Ok(ev)) = w.next().await {
            if matches!(ev.type_, WatchEventType::Added | WatchEventType::Modified)
                && ev.object.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            {
                let _ = tx.send((ev.object.metadata.name().to_string(), Instant::now()));
            }
        }
    });
    let mut lat = Vec::with_capacity(n);
    let mut create_lat = Vec::with_capacity(n);
    let mut rss_50 = 0;
    let mut running: HashMap<String, Instant> = HashMap::new();
    for i in 0..n {
        let name = format!("b{i:04}");
        let start = Instant::now();
        pods.create(&pod(&name, "bench")).await?;
        create_lat.push(start.elapsed());
        let seen = loop {
            if let Some(t) = running.get(&name) {
                break *t;
            }
            let (k, t) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("watch ended"))?;
            running.entry(k).or_insert(t);
        };
        lat.push(seen - start);
        if i + 1 == 50 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            rss_50 = rss_kib(pid);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_n = rss_kib(pid);
    lat.sort();
    create_lat.sort();
    println!("pods: {n}");
    println!(
        "create -> Running (watch): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&lat, 0.50).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "of which the create call itself (durable write): p50 {:.1} ms, p99 {:.1} ms",
        pct(&create_lat, 0.50).as_secs_f64() * 1e3,
        pct(&create_lat, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "agent RSS: idle {:.1} MiB, 50 pods {:.1} MiB, {n} pods {:.1} MiB",
        rss_idle as f64 / 1024.0,
        rss_50 as f64 / 1024.0,
        rss_n as f64 / 1024.0
    );
    println!("agent CPU idle: {idle_cpu:.2}% of one core over {idle_for:?}");

    // Clean up: delete everything and wait until the agent removed it all.
    let t = Instant::now();
    for i in 0..n {
        let _ = pods
            .delete(
                &format!("b{i:04}"),
                &DeleteOptions {
                    grace_period_seconds: Some(1),
                    ..Default::default()
                },
            )
            .await;
    }
    loop {
        let l = pods.list(&ListParams::default()).await?;
        if l.items.is_empty() || t.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "deleted {n} pods (graceful, agent-finalized) in {:?}",
        t.elapsed()
    );
    let _ = agent.0.kill();
    let _ = agent.0.wait();
    Ok(())
}
