//! Durability: acknowledged writes survive `kill -9` of the real `kapsel-apiserver` binary.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    url: String,
}

async fn start(dir: &std::path::Path) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_kapsel-apiserver"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        // this test is about the store: plain HTTP on loopback (TLS has apiserver/tests/security.rs)
        .arg("--insecure-http")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning kapsel-apiserver");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "kapsel-apiserver did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Server { child, url }
}

fn sigkill(child: &mut Child) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped; no memory is shared.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 failed");
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_with_their_resource_versions() {
    const N: usize = 400;
    const CONCURRENCY: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let mut srv = start(dir.path()).await;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (url, tx, next) = (srv.url.clone(), tx.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let h = Http::at(&url);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= N {
                    return;
                }
                let name = format!("d{i}");
                let r = h
                    .post("/api/v1/namespaces/default/configmaps", &configmap(&name))
                    .await;
                assert_eq!(r.code(), 201, "{}", r.body);
                tx.send((name, r.rv())).unwrap();
            }
        }));
    }
    drop(tx);
    for t in tasks {
        t.await.unwrap();
    }
    // Right after the last acknowledgement: kill -9.
    sigkill(&mut srv.child);
    let mut acked = BTreeMap::new();
    while let Some((n, rv)) = rx.recv().await {
        acked.insert(n, rv);
    }
    assert_eq!(acked.len(), N);

    let mut srv2 = start(dir.path()).await;
    let h = Http::at(&srv2.url);
    let list = h.get("/api/v1/namespaces/default/configmaps").await;
    let found: BTreeMap<String, String> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["metadata"]["name"].as_str().unwrap().to_string(),
                i["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        found, acked,
        "every acknowledged write is back with its resourceVersion"
    );
    // The revision counter continues past every acknowledged write.
    let max_rv = acked
        .values()
        .map(|v| v.parse::<u64>().unwrap())
        .max()
        .unwrap();
    let c = h
        .post("/api/v1/namespaces/default/configmaps", &configmap("after"))
        .await;
    assert!(c.rv().parse::<u64>().unwrap() > max_rv);
    sigkill(&mut srv2.child);
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = start(dir.path()).await;
    let h = Http::at(&srv.url);
    assert_eq!(
        h.post("/api/v1/namespaces/default/configmaps", &configmap("x"))
            .await
            .code(),
        201
    );
    // An open watch must not hold the shutdown up.
    let w = reqwest::Client::new()
        .get(format!("{}/api/v1/configmaps?watch=1", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(w.status(), 200);
    let pid = libc::pid_t::try_from(srv.child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = srv.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    drop(w);
    let srv2 = start(dir.path()).await;
    let mut child = srv2.child;
    assert_eq!(
        Http::at(&srv2.url)
            .get("/api/v1/namespaces/default/configmaps/x")
            .await
            .code(),
        200
    );
    sigkill(&mut child);
}
