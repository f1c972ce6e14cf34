//! Networking benchmarks (issue #9), `#[ignore]`d: they print numbers and assert only that
//! the measured things worked. Run as root:
//!
//! ```sh
//! cargo nextest run -p kapsel-tests --test e2e --run-ignored only bench_net:: --no-capture
//! ```
//!
//! On the multi-node harness (3 real agents, each node a network namespace on one bridge):
//!
//! - Service programming latency: a Service without a selector whose Endpoints the benchmark
//!   rewrites (`KT_BENCH_ROUNDS`, default 40, one new address each); from just before the API
//!   write until `nft monitor` in each node's netns shows the DNAT rule to the new address
//!   (every node: the slowest of the three). The full path: API → watch → agent proxy →
//!   render → `nft -f`.
//! - Requests through the proxy: one busybox `httpd` pod on node 1; a closed-loop load
//!   generator in node 0's netns (`KT_BENCH_CONNS` connections, default 8, each a new TCP
//!   connection per request, as busybox httpd closes every one) for `KT_BENCH_SECS` seconds
//!   (default 8) per target: the pod IP directly, the ClusterIP, the NodePort on node 0's own
//!   IP and on node 2's IP. Requests/s and p50/p99 latency, same run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kapsel_api::client::{Api, Patch};
use kapsel_api::{Endpoints, Pod, Service};
use kapsel_tests::multinode::{Cluster, ClusterOpts};
use kapsel_tests::{eventually, pod_ready};

const T: Duration = Duration::from_secs(120);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const MANIFEST: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: prog
spec:
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: bench-web
  labels:
    app: benchweb
spec:
  nodeName: kt-node-1
  containers:
  - name: web
    image: busybox
    command: ["/bin/sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
    readinessProbe:
      tcpSocket:
        port: 8080
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: benchweb
spec:
  type: NodePort
  selector:
    app: benchweb
  ports:
  - port: 80
    targetPort: 8080
"#;

/// `nft monitor` in a node's netns; lines with a DNAT to 10.88.250.* arrive on `tx`.
fn monitor(netns: &str, node: usize, tx: mpsc::Sender<(usize, Instant, String)>) -> Child {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args(["nft", "monitor", "new", "rules"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nft monitor");
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("dnat to 10.88.250.") && tx.send((node, Instant::now(), line)).is_err()
            {
                return;
            }
        }
    });
    child
}

/// One load run: `conns` threads in the netns `netns`, each doing GETs of `to` for `secs`.
fn load(netns: PathBuf, to: SocketAddr, conns: usize, secs: u64) -> (usize, usize, Vec<Duration>) {
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let netns = netns.clone();
            std::thread::spawn(move || {
                let f = std::fs::File::open(&netns).expect("open netns");
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                let end = Instant::now() + Duration::from_secs(secs);
                let (mut ok, mut err, mut lat) = (0usize, 0usize, Vec::new());
                let mut buf = Vec::with_capacity(1024);
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let r = (|| -> std::io::Result<bool> {
                        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
                        s.set_read_timeout(Some(Duration::from_secs(2)))?;
                        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                        buf.clear();
                        s.read_to_end(&mut buf)?;
                        Ok(buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200"))
                    })();
                    match r {
                        Ok(true) => {
                            ok += 1;
                            lat.push(t0.elapsed());
                        }
                        _ => err += 1,
                    }
                }
                (ok, err, lat)
            })
        })
        .collect();
    let (mut ok, mut err, mut lat) = (0, 0, Vec::new());
    for h in handles {
        let (o, e, l) = h.join().expect("load thread");
        ok += o;
        err += e;
        lat.extend(l);
    }
    lat.sort();
    (ok, err, lat)
}

/// One GET from inside `netns`; whether it got a 200.
fn get_once(netns: PathBuf, to: SocketAddr) -> bool {
    std::thread::spawn(move || {
        let f = std::fs::File::open(&netns).ok()?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut b = Vec::new();
        s.read_to_end(&mut b).ok()?;
        (b.starts_with(b"HTTP/1.0 200") || b.starts_with(b"HTTP/1.1 200")).then_some(())
    })
    .join()
    .ok()
    .flatten()
    .is_some()
}

#[ignore = "benchmark: prints numbers; run with --run-ignored only"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_service_programming_and_proxy_throughput() {
    let Some(c) = Cluster::start(
        "bench_service_programming_and_proxy_throughput",
        ClusterOpts {
            internet: false,
            ..Default::default()
        },
    ) else {
        return;
    };
    c.wait_ready(T).await;
    c.apply(MANIFEST);
    let client = c.client();
    let pods: Api<Pod> = client.api(Some("default"));
    let eps: Api<Endpoints> = client.api(Some("default"));
    let svcs: Api<Service> = client.api(Some("default"));

    // --- programming latency ---------------------------------------------------------------
    let rounds = env_or("KT_BENCH_ROUNDS", 40).min(250);
    let (tx, rx) = mpsc::channel();
    let mut monitors: Vec<Child> = c
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| monitor(&n.netns, i, tx.clone()))
        .collect();
    // the monitors are listening once a first change shows up everywhere
    let endpoints = |ip: String| {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "prog", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": ip}], "ports": [{"port": 8080, "protocol": "TCP"}]}],
        })
    };
    let obj: Endpoints = serde_json::from_value(endpoints("10.88.250.254".into())).unwrap();
    match eps.get_opt("prog").await.expect("get endpoints") {
        Some(_) => eps
            .patch(
                "prog",
                &Patch::Merge(serde_json::to_value(&obj).expect("json")),
            )
            .await
            .expect("patch"),
        None => eps.create(&obj).await.expect("create endpoints"),
    };
    let mut seen = [false; 3];
    let deadline = Instant::now() + T;
    while !seen.iter().all(|s| *s) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (n, _, l) = rx.recv_timeout(left).expect("first rules on every node");
        if l.contains("dnat to 10.88.250.254:") {
            seen[n] = true;
        }
    }
    let mut all = Vec::new();
    let mut per_node: BTreeMap<usize, Vec<Duration>> = BTreeMap::new();
    for r in 1..=rounds {
        let ip = format!("10.88.250.{r}");
        let want = format!("dnat to {ip}:");
        let patch = Patch::Merge(endpoints(ip.clone()));
        let t0 = Instant::now();
        eps.patch("prog", &patch).await.expect("patch endpoints");
        let mut done: [Option<Duration>; 3] = [None; 3];
        while done.iter().any(Option::is_none) {
            let left = (t0 + Duration::from_secs(30)).saturating_duration_since(Instant::now());
            let (n, at, l) = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("round {r}: {ip} not programmed everywhere: {done:?}"));
            if l.contains(&want) && done[n].is_none() {
                done[n] = Some(at.duration_since(t0));
            }
        }
        let d: Vec<Duration> = done.iter().map(|d| d.unwrap()).collect();
        for (i, x) in d.iter().enumerate() {
            per_node.entry(i).or_default().push(*x);
        }
        all.push(*d.iter().max().unwrap());
    }
    for m in &mut monitors {
        let _ = m.kill();
        let _ = m.wait();
    }
    all.sort();
    println!(
        "Service programming, endpoint change -> DNAT rule live on all 3 nodes, {rounds} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(pct(&all, 0.5)),
        ms(pct(&all, 0.99)),
        ms(*all.last().unwrap())
    );
    for (i, v) in &mut per_node {
        v.sort();
        println!(
            "  node {i}: p50 {:.1} ms, p99 {:.1} ms",
            ms(pct(v, 0.5)),
            ms(pct(v, 0.99))
        );
    }

    // --- requests through the proxy ---------------------------------------------------------
    let pod = eventually(T, "bench-web ready", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("bench-web").await.ok()?;
            pod_ready(&p).then_some(p)
        }
    })
    .await;
    let pod_ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let svc = svcs.get("benchweb").await.expect("service");
    let spec = svc.spec.unwrap();
    let cluster_ip = spec.cluster_ip.unwrap();
    let np = spec.ports[0].node_port.expect("nodePort");
    let node0 = PathBuf::from(format!("/run/netns/{}", c.nodes[0].netns));
    let targets = [
        ("pod IP (direct)", format!("{pod_ip}:8080")),
        ("ClusterIP", format!("{cluster_ip}:80")),
        ("NodePort, own node", format!("{}:{np}", c.nodes[0].ip)),
        ("NodePort, other node", format!("{}:{np}", c.nodes[2].ip)),
    ];
    // every path answers before measuring (rules may still be on their way)
    for (what, to) in &targets {
        let to: SocketAddr = to.parse().unwrap();
        let n0 = node0.clone();
        eventually(T, &format!("{what} answers"), || {
            let ok = get_once(n0.clone(), to);
            async move { ok.then_some(()) }
        })
        .await;
    }
    let conns = env_or("KT_BENCH_CONNS", 8);
    let secs = env_or("KT_BENCH_SECS", 8) as u64;
    println!("HTTP GETs from node 0's netns to busybox httpd on node 1 ({conns} connections, {secs} s each, one TCP connection per request):");
    for (what, to) in &targets {
        let (ok, err, lat) = load(node0.clone(), to.parse().unwrap(), conns, secs);
        println!(
            "  {what:<22} {to:<22} {:>7.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {err}",
            ok as f64 / secs as f64,
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.99))
        );
        assert!(ok > 0, "{what}: no request answered");
    }
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average: {}", load_avg.trim());
}
