//! End-to-end scheduler benchmark through the API server.
//!
//! cargo run --release -p kapsel-scheduler --example bench -- [--nodes 1000] [--pods 30000]
//!     [--burst 1000] [--concurrency 256] [--no-events] [--strategy MostAllocated]
//!     [--parallel-binds 64] [--client reqwest]
//!
//! - The API server runs in this process (sled in a temp dir, watch history raised to 200k
//!   events so no watcher is dropped); the load generator and the create→bound stopwatch run
//!   here too.
//! - The scheduler runs as a **separate process** (this binary re-executed with
//!   `--role scheduler`), so its RSS is its own: read from `/proc/<pid>/status` (VmRSS sampled
//!   every 100 ms, and VmHWM at the end).
//! - Hollow nodes (Node objects with Ready=True and allocatable, no runtime) are registered
//!   through the API; pods (100m / 128Mi, owned by one of 100 ReplicaSets) are created in bursts
//!   of `--burst`, each burst as concurrent creates, the next burst as soon as the previous one is
//!   acknowledged. The creates go over `--concurrency` bare hyper HTTP/1.1 connections with the
//!   bodies rendered up front (`--client reqwest`: through the kapsel client, as before).
//! - Reported: pods/s bound end to end (first create sent → last pod seen bound on a watch),
//!   p50/p99 of (create sent → bound seen), scheduler RSS, and the scheduler's own counters.

/// The binary's allocator, as in `kapsel server` and `kapsel-scheduler` (see src/main.rs).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use kapsel_api::client::{Client, ClientConfig};
use kapsel_api::watcher::{watcher, Event, WatcherConfig};
use kapsel_api::{Namespace, Node, ObjectMeta, Pod};
use kapsel_scheduler::testing::{hollow_node, PodBuilder};
use kapsel_scheduler::{Config, Scheduler, ScoringStrategy};

struct Opts {
    role_scheduler: bool,
    server: String,
    nodes: usize,
    pods: usize,
    burst: usize,
    concurrency: usize,
    events: bool,
    strategy: ScoringStrategy,
    parallel_binds: usize,
    precreate: bool,
    reqwest: bool,
}

fn parse() -> Result<Opts> {
    let mut o = Opts {
        role_scheduler: false,
        server: String::new(),
        nodes: 1000,
        pods: 30_000,
        burst: 1000,
        concurrency: 256,
        events: true,
        strategy: ScoringStrategy::LeastAllocated,
        parallel_binds: Config::default().parallel_binds,
        precreate: false,
        reqwest: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().context("missing value");
        match a.as_str() {
            "--role" => o.role_scheduler = val()? == "scheduler",
            "--server" => o.server = val()?,
            "--nodes" => o.nodes = val()?.parse()?,
            "--pods" => o.pods = val()?.parse()?,
            "--burst" => o.burst = val()?.parse()?,
            "--concurrency" => o.concurrency = val()?.parse()?,
            "--no-events" => o.events = false,
            "--precreate" => o.precreate = true,
            "--client" => o.reqwest = val()? == "reqwest",
            "--parallel-binds" => o.parallel_binds = val()?.parse()?,
            "--strategy" => o.strategy = val()?.parse().map_err(anyhow::Error::msg)?,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Child: run the scheduler until stdin closes, then print its counters.
fn run_scheduler(o: &Opts) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = Client::from_config(ClientConfig::new(&o.server))?;
        let scheduler = Scheduler::new(
            client,
            Config {
                events: o.events,
                scoring_strategy: o.strategy,
                parallel_binds: o.parallel_binds,
                ..Config::default()
            },
        )?;
        let metrics = scheduler.metrics();
        let stop = async {
            // Stdin closes when the parent is done.
            let _ = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                let _ = std::io::stdin().lock().read_line(&mut line);
            })
            .await;
        };
        // On a worker thread, as the binary runs it (see `Scheduler::run`).
        tokio::spawn(scheduler.run(stop)).await??;
        println!("scheduler metrics: {metrics}");
        let pid = std::process::id();
        println!(
            "scheduler VmHWM {} kB, VmRSS {} kB",
            proc_status_kb(pid, "VmHWM:").unwrap_or(0),
            proc_status_kb(pid, "VmRSS:").unwrap_or(0)
        );
        std::io::stdout().flush()?;
        Ok(())
    })
}

fn spawn_scheduler(o: &Opts, url: &str) -> Result<std::process::Child> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .args(["--role", "scheduler", "--server", url])
        .args(if o.events {
            vec![]
        } else {
            vec!["--no-events"]
        })
        .args(["--strategy", &format!("{:?}", o.strategy)])
        .args(["--parallel-binds", &o.parallel_binds.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the scheduler process")
}

/// One keep-alive HTTP/1.1 connection to the API server.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: Arc<String>,
}

async fn connect(url: &str, n: usize) -> Result<Vec<Conn>> {
    let host = Arc::new(url.trim_start_matches("http://").to_string());
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let tcp = tokio::net::TcpStream::connect(host.as_str()).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        conns.push(Conn {
            sender,
            host: host.clone(),
        });
    }
    Ok(conns)
}

/// Create the pods `range` over all connections at once (one request in flight on each) and
/// wait for every answer; any answer but `201 Created` fails the run.
async fn burst(
    conns: Vec<Conn>,
    bodies: &[bytes::Bytes],
    range: std::ops::Range<usize>,
    sent_at: &Arc<Mutex<Vec<Option<Instant>>>>,
) -> Result<Vec<Conn>> {
    use http_body_util::BodyExt;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(range.start));
    let end = range.end;
    let bodies: Arc<[bytes::Bytes]> = bodies[range].into();
    let first = end - bodies.len();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let (next, bodies, sent_at) = (next.clone(), bodies.clone(), sent_at.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i - first) else {
                        return Ok::<_, anyhow::Error>(c);
                    };
                    let req = hyper::Request::post("/api/v1/namespaces/bench/pods")
                        .header("host", c.host.as_str())
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(body.clone()))?;
                    if let Ok(mut s) = sent_at.lock() {
                        s[i] = Some(Instant::now());
                    }
                    let resp = c.sender.send_request(req).await?;
                    let status = resp.status();
                    // Read the whole answer (the created pod), as a client would.
                    let answer = resp.into_body().collect().await?.to_bytes();
                    if status != hyper::StatusCode::CREATED {
                        bail!(
                            "create p-{i}: {status}: {}",
                            String::from_utf8_lossy(&answer)
                        );
                    }
                }
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(tasks.len());
    for t in tasks {
        conns.push(t.await??);
    }
    Ok(conns)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn run_bench(o: Opts) -> Result<()> {
    let server = kapsel_apiserver::server::start_test_server_with(|c| {
        c.watch_history = 200_000;
        c.cache_bytes = 256 * 1024 * 1024;
    })
    .await;
    let client = Client::from_config(ClientConfig::new(&server.url))?;
    println!(
        "bench: {} nodes, {} pods in bursts of {}, {} concurrent creates, events {}, {:?}, \
         {} parallel binds",
        o.nodes, o.pods, o.burst, o.concurrency, o.events, o.strategy, o.parallel_binds
    );

    // Hollow nodes.
    let t = Instant::now();
    let nodes = client.api::<Node>(None);
    futures::stream::iter(0..o.nodes)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                nodes
                    .create(&hollow_node(&format!("node-{i:04}"), "32", "128Gi", "110"))
                    .await
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    println!("registered {} hollow nodes in {:?}", o.nodes, t.elapsed());
    client
        .api::<Namespace>(None)
        .create(&Namespace::with_meta(ObjectMeta::named("bench")))
        .await?;

    // Stopwatch: when each pod is first seen bound.
    let bound_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; o.pods]));
    let bound_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let bound_at = bound_at.clone();
        let bound_count = bound_count.clone();
        let stream = watcher(client.api::<Pod>(Some("bench")), WatcherConfig::default());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                let now = Instant::now();
                let pods = match ev {
                    Ok(Event::Applied(p)) => vec![p],
                    Ok(Event::Restarted(ps)) => ps,
                    _ => continue,
                };
                let mut b = bound_at.lock().unwrap_or_else(|e| e.into_inner());
                for p in pods {
                    let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                    let idx = p
                        .metadata
                        .name()
                        .strip_prefix("p-")
                        .and_then(|n| n.parse::<usize>().ok());
                    if let (true, Some(i)) = (bound, idx) {
                        if let Some(slot) = b.get_mut(i) {
                            if slot.is_none() {
                                *slot = Some(now);
                                bound_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        });
    }

    // The scheduler, as its own process (with --precreate: after all pods exist).
    let mut child = None;
    if !o.precreate {
        child = Some(spawn_scheduler(&o, &server.url)?);
        // Let it list the nodes before the first burst.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The load generator: `--concurrency` keep-alive HTTP/1.1 connections (bare hyper, as in
    // apiserver_bench) and every request body rendered before the clock starts, so the
    // measuring client takes as little as it can of the CPUs it shares with what it measures.
    // `--client reqwest` sends through the kapsel client instead (as components do).
    let bodies: Vec<bytes::Bytes> = (0..o.pods)
        .map(|i| {
            let mut pod = PodBuilder::new(&format!("p-{i}"))
                .namespace("bench")
                .owner(&format!("rs-{}", i % 100))
                .container("100m", "128Mi")
                .build();
            pod.metadata.uid = None;
            serde_json::to_vec(&pod).map(bytes::Bytes::from)
        })
        .collect::<Result<_, _>>()?;
    let conns = if o.reqwest {
        Vec::new()
    } else {
        connect(&server.url, o.concurrency).await?
    };
    let pods_api = client.api::<Pod>(Some("bench"));
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; o.pods]));
    let mut start = Instant::now();
    let mut created = 0;
    let mut conns = conns;
    while created < o.pods {
        let end = (created + o.burst).min(o.pods);
        if o.reqwest {
            let results: Vec<Result<(), String>> = futures::stream::iter(created..end)
                .map(|i| {
                    let api = pods_api.clone();
                    let sent_at = sent_at.clone();
                    let body = bodies[i].clone();
                    async move {
                        let pod: Pod = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                        if let Ok(mut s) = sent_at.lock() {
                            s[i] = Some(Instant::now());
                        }
                        api.create(&pod)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                })
                .buffer_unordered(o.concurrency)
                .collect()
                .await;
            for r in results {
                r.map_err(anyhow::Error::msg)?;
            }
        } else {
            conns = burst(conns, &bodies, created..end, &sent_at).await?;
        }
        created = end;
    }
    let create_secs = start.elapsed().as_secs_f64();
    println!(
        "created {} pods in {:.2}s ({:.0} creates/s)",
        o.pods,
        create_secs,
        o.pods as f64 / create_secs
    );
    let mut child = match child {
        Some(c) => c,
        None => {
            start = Instant::now();
            spawn_scheduler(&o, &server.url)?
        }
    };
    let pid = child.id();

    // RSS sampler.
    let peak_rss = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let peak_rss = peak_rss.clone();
        tokio::spawn(async move {
            loop {
                if let Some(kb) = proc_status_kb(pid, "VmRSS:") {
                    peak_rss.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while bound_count.load(std::sync::atomic::Ordering::Relaxed) < o.pods {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} pods bound after 10 minutes",
                bound_count.load(std::sync::atomic::Ordering::Relaxed),
                o.pods
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (sent, bound) = {
        let s = sent_at.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let b = bound_at.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (s, b)
    };
    let last = bound.iter().flatten().max().copied().unwrap_or(start);
    let total = last.duration_since(start).as_secs_f64();
    let mut lat: Vec<Duration> = sent
        .iter()
        .zip(bound.iter())
        .filter_map(|(s, b)| Some(b.as_ref()?.saturating_duration_since(*s.as_ref()?)))
        .collect();
    lat.sort();
    let rss_now = proc_status_kb(pid, "VmRSS:").unwrap_or(0);

    // Stop the scheduler, collect its report.
    drop(child.stdin.take());
    let mut report = String::new();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            report.push_str(&line?);
            report.push('\n');
        }
    }
    let _ = child.wait();

    if o.precreate {
        println!(
            "(--precreate: the clock starts when the scheduler starts; latencies include the wait)"
        );
    }
    println!(
        "RESULT: {} pods bound on {} nodes in {:.2}s = {:.0} pods/s end to end; \
         create->bound p50 {:?} p99 {:?} max {:?}",
        o.pods,
        o.nodes,
        total,
        o.pods as f64 / total,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
    );
    println!(
        "scheduler RSS (separate process, sampled every 100 ms): peak {} MiB, after run {} MiB ({} nodes, {} pods)",
        peak_rss.load(std::sync::atomic::Ordering::Relaxed) / 1024,
        rss_now / 1024,
        o.nodes,
        o.pods,
    );
    print!("{report}");
    server.shutdown().await;
    Ok(())
}

fn main() -> Result<()> {
    let o = parse()?;
    if o.role_scheduler {
        return run_scheduler(&o);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_bench(o))
}
