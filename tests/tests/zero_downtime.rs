//! Zero-downtime rolling updates on the multi-node harness (root; CI=true fails instead of
//! skipping): a 3-replica busybox-httpd Deployment behind a NodePort Service, a client in this
//! process opening a new connection for each of 400 requests/s (round robin over the three
//! nodes' NodePorts, ≥ 100/s asserted) for the whole of two rolling updates, v1 → v2 → v3.
//! With the agents' endpoint
//! hand-off (a terminating pod leaves every node's rules before SIGTERM; no preStop sleep) no
//! request fails. The same run with the hand-off turned off (`kapsel agent
//! --endpoint-handoff-timeout-seconds 0`) shows the failures it prevents: busybox httpd dies
//! at once on SIGTERM while the nodes still route new connections to it.
//!
//! Each test prints the number of requests and their split between versions per second.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kapsel_api::client::{Api, ListParams};
use kapsel_api::{Pod, Service};
use kapsel_tests::multinode::{leftovers, Cluster, ClusterOpts};
use kapsel_tests::*;

const T: Duration = Duration::from_secs(120);
/// Total request rate of the client (requests/s), spread over `WORKERS` threads.
const RATE: u32 = 400;
const WORKERS: u32 = 8;
/// The versions rolled out one after the other (two rolling updates: six pod terminations).
const VERSIONS: [&str; 3] = ["v1", "v2", "v3"];

/// The Deployment at `version`: each pod's page is "VERSION HOSTNAME". Readiness by TCP on
/// 8080 (a new pod gets traffic once httpd listens); surge 1, never fewer than 3 ready.
fn deployment(version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app: web
        version: {version}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: busybox
        command: ["/bin/sh", "-c", "mkdir -p /tmp/www && echo \"{version} $(hostname)\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
        readinessProbe:
          tcpSocket:
            port: 8080
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
"#
    )
}

/// One request: new connection, `GET /` over HTTP/1.0, the whole answer; `Ok(body)` on 200.
fn get(addr: SocketAddr) -> Result<String, String> {
    let t = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&addr, t).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(t)).map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("short answer ({} bytes)", buf.len()))?;
    if !(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")) {
        return Err(format!(
            "status: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.trim().to_string())
}

/// One request's outcome: when (since the load started), where, and the page or the error.
struct Sample {
    at: Duration,
    node: usize,
    result: Result<String, String>,
}

/// The client: `WORKERS` threads, `RATE` requests/s in total, round robin over `targets`,
/// until `stop`.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    fn start(targets: Vec<SocketAddr>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let interval = Duration::from_secs(1) * WORKERS / RATE;
        let threads = (0..WORKERS)
            .map(|w| {
                let (stop, samples, targets) = (stop.clone(), samples.clone(), targets.clone());
                std::thread::spawn(move || {
                    // staggered starts spread the workers' requests over each interval
                    let mut next = started + interval * w / WORKERS;
                    let mut i = w as usize;
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        next += interval;
                        let node = i % targets.len();
                        i += 1;
                        let at = started.elapsed();
                        let result = get(targets[node]);
                        samples.lock().unwrap().push(Sample { at, node, result });
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            threads,
            started,
        }
    }

    fn finish(self) -> (Vec<Sample>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
        let took = self.started.elapsed();
        let mut s = std::mem::take(&mut *self.samples.lock().unwrap());
        s.sort_by_key(|s| s.at);
        (s, took)
    }
}

/// What a run measured.
struct Report {
    total: usize,
    failed: usize,
    rate: f64,
    /// Versions answering in the first and the last whole second.
    first: BTreeMap<String, usize>,
    last: BTreeMap<String, usize>,
    /// The agents' log lines: hand-offs completed, and bounds hit.
    handoffs: usize,
    handoff_timeouts: usize,
}

/// Print the requests per second, split by version, and the failures.
fn report(samples: &[Sample], took: Duration, updates: &[(Duration, Duration)]) -> Report {
    let secs = took.as_secs() as usize + 1;
    let mut per: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); secs];
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for s in samples {
        let key = match &s.result {
            Ok(body) => body.split_whitespace().next().unwrap_or("?").to_string(),
            Err(e) => {
                *failures.entry(format!("node {}: {e}", s.node)).or_default() += 1;
                "FAILED".to_string()
            }
        };
        *per[s.at.as_secs() as usize].entry(key).or_default() += 1;
    }
    let failed: usize = failures.values().sum();
    let rate = samples.len() as f64 / took.as_secs_f64();
    println!(
        "{} requests in {:.1} s ({rate:.0}/s), {failed} failed",
        samples.len(),
        took.as_secs_f64(),
    );
    for (v, (applied, done)) in VERSIONS[1..].iter().zip(updates) {
        println!(
            "{v} applied at {:.1} s, rollout done (old pods gone) at {:.1} s",
            applied.as_secs_f64(),
            done.as_secs_f64()
        );
    }
    println!("second    v1    v2    v3  failed");
    for (i, m) in per.iter().enumerate() {
        let g = |k: &str| m.get(k).copied().unwrap_or(0);
        println!(
            "{i:>6} {:>5} {:>5} {:>5} {:>5}",
            g("v1"),
            g("v2"),
            g("v3"),
            g("FAILED")
        );
    }
    for (e, n) in &failures {
        println!("failure ×{n}: {e}");
    }
    // the first and last whole seconds (the last one may be cut short)
    let whole = took.as_secs() as usize;
    Report {
        total: samples.len(),
        failed,
        rate,
        first: per.first().cloned().unwrap_or_default(),
        last: per
            .get(whole.saturating_sub(1))
            .cloned()
            .unwrap_or_default(),
        handoffs: 0,
        handoff_timeouts: 0,
    }
}

/// `s` without terminal colour sequences (`ESC [ … m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for ch in s.chars() {
        match (esc, ch) {
            (false, '\u{1b}') => esc = true,
            (false, c) => out.push(c),
            (true, 'm') => esc = false,
            (true, _) => {}
        }
    }
    out
}

/// Start a 3-node cluster with `agent_args`, run v1, load it, roll out v2 and then v3 under
/// the load, and report.
async fn rollout_under_load(test: &str, agent_args: &[&str]) -> Option<Report> {
    let c = Cluster::start(
        test,
        ClusterOpts {
            nodes: 3,
            internet: false,
            agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
            ..ClusterOpts::default()
        },
    )?;
    c.wait_ready(T).await;
    let client = c.client();
    c.apply(&deployment("v1"));
    let v1 = wait_deployment_ready(&client, "default", "web", "app=web", T).await;
    let spread: BTreeMap<String, String> = v1
        .iter()
        .map(|p| {
            (
                p.metadata.name().to_string(),
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    println!("v1 pods: {spread:?}");
    let svc: Api<Service> = client.api(Some("default"));
    let node_port = svc
        .get("web")
        .await
        .expect("service web")
        .spec
        .and_then(|s| s.ports.first().and_then(|p| p.node_port))
        .expect("nodePort allocated");
    let targets: Vec<SocketAddr> = c
        .nodes
        .iter()
        .map(|n| SocketAddr::new(n.ip.into(), u16::try_from(node_port).unwrap()))
        .collect();
    // every node's NodePort serves all three v1 pods before the load starts
    for (i, t) in targets.iter().enumerate() {
        let t = *t;
        eventually(
            T,
            &format!("node {i}'s NodePort reaches the 3 v1 pods"),
            || {
                let seen: std::collections::BTreeSet<String> =
                    (0..30).filter_map(|_| get(t).ok()).collect();
                async move {
                    (seen.len() == 3 && seen.iter().all(|b| b.starts_with("v1 "))).then_some(())
                }
            },
        )
        .await;
    }
    println!("NodePort {node_port} on {targets:?}");

    let load = Load::start(targets);
    let pods: Api<Pod> = client.api(Some("default"));
    let mut updates = Vec::new();
    for w in VERSIONS.windows(2) {
        let (old, new) = (w[0], w[1]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let applied = load.started.elapsed();
        c.apply(&deployment(new));
        wait_deployment_ready(&client, "default", "web", "app=web", T).await;
        // and every old pod is gone (terminated and finalized)
        eventually(T, &format!("every {old} pod gone"), || {
            let pods = pods.clone();
            async move {
                let l = pods
                    .list(&ListParams::default().labels(&format!("app=web,version={old}")))
                    .await
                    .ok()?;
                l.items.is_empty().then_some(())
            }
        })
        .await;
        updates.push((applied, load.started.elapsed()));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (samples, took) = load.finish();
    let mut r = report(&samples, took, &updates);
    for i in 0..c.nodes.len() {
        let log = c.agent_log(i, 100_000);
        for l in log.lines().filter(|l| l.contains("hand-off")) {
            println!("node {i}: {}", strip_ansi(l));
            r.handoffs += usize::from(l.contains("endpoint hand-off done"));
            r.handoff_timeouts += usize::from(l.contains("hand-off bound hit"));
        }
    }
    drop(c);
    let left = leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    Some(r)
}

/// With the hand-off (the default), rolling updates under ≥ 100 requests/s lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_under_load_loses_no_request() {
    let Some(r) = rollout_under_load("rolling_update_under_load_loses_no_request", &[]).await
    else {
        return;
    };
    assert!(r.rate >= 100.0, "client rate {:.0}/s below 100/s", r.rate);
    assert_eq!(r.failed, 0, "{} of {} requests failed", r.failed, r.total);
    // each of the six old pods waited for every node, none until the bound
    assert_eq!(
        (r.handoffs, r.handoff_timeouts),
        (6, 0),
        "hand-offs done and bounds hit"
    );
    assert!(
        r.first.keys().all(|k| k == "v1") && r.first.contains_key("v1"),
        "first second: {:?}",
        r.first
    );
    assert!(
        r.last.keys().all(|k| k == "v3") && r.last.contains_key("v3"),
        "last second: {:?}",
        r.last
    );
}

/// Without the hand-off (`--endpoint-handoff-timeout-seconds 0`) the same rollout loses
/// requests: the test above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_hand_off_a_rolling_update_loses_requests() {
    let Some(r) = rollout_under_load(
        "without_the_hand_off_a_rolling_update_loses_requests",
        &["--endpoint-handoff-timeout-seconds", "0"],
    )
    .await
    else {
        return;
    };
    assert!(r.rate >= 100.0, "client rate {:.0}/s below 100/s", r.rate);
    assert_eq!(r.handoffs + r.handoff_timeouts, 0, "hand-off turned off");
    assert!(
        r.failed > 0,
        "no request of {} failed without the hand-off",
        r.total
    );
}
