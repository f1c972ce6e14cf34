//! API server benchmark: starts the real `kapsel-apiserver` binary (from the same target
//! directory) on a temporary data directory and measures it over HTTP.
//!
//! ```text
//! cargo build --release -p kapsel-apiserver --bin kapsel-apiserver --example apiserver_bench
//! target/release/examples/apiserver_bench [--pods 10000] [--server PATH]
//! ```
//!
//! Prints: durable creates/s with 1 and 32 clients, get p50/p99, list of all pods, watch
//! latency write→event p50/p99, server RSS idle and with the pods stored. Numbers, not pass/fail.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::{json, Value};

mod common;
use common::cpu_secs;

/// `--dry-run`: every create is `?dryRun=All` — the whole request path without the store write,
/// to see what the store costs.
fn query() -> &'static str {
    if std::env::args().any(|a| a == "--dry-run") {
        "?dryRun=All"
    } else {
        ""
    }
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{
            "name": "app", "image": "registry.local/app:1.0",
            "ports": [{"containerPort": 8080}],
            "env": [{"name": "MODE", "value": "bench"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}
        }]}
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `--client reqwest`: the creates go through reqwest (as the CLI and components do) instead of
/// a bare hyper HTTP/1.1 connection per client. Client and server share the two vCPUs, so the
/// client's own CPU per request shows up in the server's throughput.
fn use_reqwest() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .any(|w| w[0] == "--client" && w[1] == "reqwest")
}

/// Create `n` pods named `{prefix}-{i}` in `ns` with `clients` concurrent connections.
/// Returns the wall time and the number of requests not answered `201 Created`.
async fn create_many(
    url: &str,
    ns: &str,
    prefix: &str,
    n: usize,
    clients: usize,
) -> (Duration, usize) {
    // The request bodies are rendered before the clock starts: this measures the server.
    let bodies: Vec<bytes::Bytes> = (0..n)
        .map(|i| pod(&format!("{prefix}-{i}")).to_string().into())
        .collect();
    let path = format!("/api/v1/namespaces/{ns}/pods{}", query());
    if use_reqwest() {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()
            .unwrap();
        let target = Arc::new(format!("{url}{path}"));
        let states = vec![(client, target); clients];
        return drive(states, bodies, |(client, target), body| async move {
            let ok = match client
                .post(target.as_str())
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => r.status().as_u16() == 201 && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            ((client, target), ok)
        })
        .await;
    }
    let addr = Arc::new(url.trim_start_matches("http://").to_string());
    let path = Arc::new(path);
    // One keep-alive HTTP/1.1 connection per client, opened before the clock starts.
    let mut states = Vec::new();
    for _ in 0..clients {
        let tcp = tokio::net::TcpStream::connect(addr.as_str()).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        states.push((sender, addr.clone(), path.clone()));
    }
    drive(
        states,
        bodies,
        |(mut sender, host, path), body| async move {
            let req = hyper::Request::post(path.as_str())
                .header("host", host.as_str())
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(body))
                .unwrap();
            let ok = match sender.send_request(req).await {
                // Read the whole response (the created object) as a client would.
                Ok(resp) => {
                    resp.status().as_u16() == 201 && resp.into_body().collect().await.is_ok()
                }
                Err(_) => false,
            };
            ((sender, host, path), ok)
        },
    )
    .await
}

/// Sends every body once, spread over one task per client state; `send` hands its state back
/// with whether the request succeeded. Returns the wall time and the number of failures.
async fn drive<S, F, Fut>(states: Vec<S>, bodies: Vec<bytes::Bytes>, send: F) -> (Duration, usize)
where
    S: Send + 'static,
    F: Fn(S, bytes::Bytes) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (S, bool)> + Send,
{
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for mut state in states {
        let (next, errors, bodies, send) =
            (next.clone(), errors.clone(), bodies.clone(), send.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { return };
                let (back, ok) = send(state, body.clone()).await;
                state = back;
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (t0.elapsed(), errors.load(Ordering::Relaxed))
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let pods: usize = arg("--pods").and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let server_bin = arg("--server")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("kapsel-apiserver")
        });
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(&server_bin)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        // Plain HTTP on loopback: this measures the API and the store, not TLS.
        .arg("--insecure-http")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", server_bin.display()));
    let pid = child.id();
    let _server = Server(child);
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    while http.get(format!("{url}/readyz")).send().await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_kib(pid);

    println!(
        "kapsel-apiserver benchmark ({pods} pods, data dir {})",
        dir.path().display()
    );
    println!(
        "  RSS idle:                       {:.1} MiB",
        rss_idle as f64 / 1024.0
    );

    // Namespace for the single-client run.
    http.post(format!("{url}/api/v1/namespaces"))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "one"}}))
        .send()
        .await
        .unwrap();
    let n1 = (pods / 5).max(200);
    let me = std::process::id();
    let (c0, b0) = (cpu_secs(pid), cpu_secs(me));
    let (d1, e1) = create_many(&url, "one", "s", n1, 1).await;
    let (c1, b1) = (cpu_secs(pid), cpu_secs(me));
    println!(
        "  creates/s, 1 client:            {:.0}  ({n1} pods in {:.2} s, {e1} errors; server CPU {:.0} us/create, client {:.0} us)",
        n1 as f64 / d1.as_secs_f64(),
        d1.as_secs_f64(),
        (c1 - c0) * 1e6 / n1 as f64,
        (b1 - b0) * 1e6 / n1 as f64
    );
    let (d32, e32) = create_many(&url, "default", "p", pods, 32).await;
    let (c2, b2) = (cpu_secs(pid), cpu_secs(me));
    println!(
        "  creates/s, 32 clients:          {:.0}  ({pods} pods in {:.2} s, {e32} errors; server CPU {:.0} us/create, client {:.0} us)",
        pods as f64 / d32.as_secs_f64(),
        d32.as_secs_f64(),
        (c2 - c1) * 1e6 / pods as f64,
        (b2 - b1) * 1e6 / pods as f64
    );
    if !query().is_empty() {
        return;
    }

    // GET latency, one client.
    let mut lat = Vec::new();
    for i in 0..2000usize {
        let name = format!("p-{}", (i * 7919) % pods);
        let t = Instant::now();
        let r = http
            .get(format!("{url}/api/v1/namespaces/default/pods/{name}"))
            .send()
            .await
            .unwrap();
        let _ = r.bytes().await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "  get p50 / p99:                  {} / {}",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99))
    );

    // List of all pods in the namespace.
    let mut lists = Vec::new();
    let mut size = 0;
    let mut count = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let r = http
            .get(format!("{url}/api/v1/namespaces/default/pods"))
            .send()
            .await
            .unwrap();
        let b = r.bytes().await.unwrap();
        lists.push(t.elapsed());
        size = b.len();
        let v: Value = serde_json::from_slice(&b).unwrap();
        count = v["items"].as_array().map(|a| a.len()).unwrap_or(0);
    }
    lists.sort();
    println!(
        "  list {count} pods:                {} median, {} min ({:.1} MiB JSON)",
        ms(pct(&lists, 0.5)),
        ms(lists[0]),
        size as f64 / 1048576.0
    );
    let rss_full = rss_kib(pid);

    // Watch latency: write → event.
    let list = http
        .get(format!("{url}/api/v1/namespaces/kube-public/configmaps"))
        .send()
        .await
        .unwrap();
    let rv = list.json::<Value>().await.unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w = http
        .get(format!(
            "{url}/api/v1/namespaces/kube-public/configmaps?watch=1&resourceVersion={rv}"
        ))
        .send()
        .await
        .unwrap();
    let mut wl = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for i in 0..500 {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("w{i}")}, "data": {"k": "v"}});
        let t = Instant::now();
        let post = http
            .post(format!("{url}/api/v1/namespaces/kube-public/configmaps"))
            .json(&body)
            .send();
        let wait = async {
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    buf.drain(..=pos);
                    return;
                }
                match w.chunk().await {
                    Ok(Some(c)) => buf.extend_from_slice(&c),
                    _ => return,
                }
            }
        };
        let (r, ()) = tokio::join!(post, wait);
        wl.push(t.elapsed());
        let _ = r.unwrap().bytes().await;
    }
    wl.sort();
    println!(
        "  watch write→event p50 / p99:    {} / {}",
        ms(pct(&wl, 0.5)),
        ms(pct(&wl, 0.99))
    );
    println!(
        "  RSS with {pods} pods:           {:.1} MiB",
        rss_full as f64 / 1024.0
    );
}
