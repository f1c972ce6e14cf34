//! Observability of the API server: `/metrics` parses as OpenMetrics and Prometheus text with
//! the official Python client and its counters move as requests arrive; open watches show in
//! `apiserver_registered_watchers`; the `/ui` shell is served with a strict CSP; Events expire
//! after `event_ttl` (older ones deleted, fresh ones kept).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use kapsel_apiserver::server::start_test_server_with;
use serde_json::{json, Value};

const PYTHON: &str = "/opt/kapsel-venv/bin/python";

/// The parser script is present with its package; else skip, or fail under CI=true.
fn python_ready(test: &str) -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {PYTHON} with prometheus_client is missing (scripts/install-deps.sh)");
    }
    eprintln!("{test}: skipped ({PYTHON} with prometheus_client missing)");
    false
}

/// Samples of an exposition, as parsed by Python's prometheus_client (panics if invalid).
fn parse(text: &str) -> Vec<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/scripts/parse_metrics.py"
    );
    let mut child = Command::new(PYTHON)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Sum of the samples named `name` whose labels include `want`.
fn value(samples: &[Value], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| want.iter().all(|(k, v)| s["labels"][k] == *v))
        .map(|s| s["value"].as_f64().unwrap_or(0.0))
        .sum()
}

async fn scrape(base: &str) -> Vec<Value> {
    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    parse(&r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_counters_move() {
    if !python_ready("metrics_parse_and_counters_move") {
        return;
    }
    let server = start_test_server_with(|_| {}).await;
    let base = server.url.clone();
    let http = reqwest::Client::new();
    // One request counted before the first look.
    let v = http.get(format!("{base}/version")).send().await.unwrap();
    assert_eq!(v.status(), 200);
    let before = scrape(&base).await;
    let families: std::collections::BTreeSet<&str> =
        before.iter().filter_map(|s| s["family"].as_str()).collect();
    for f in [
        "apiserver_request",
        "apiserver_request_duration_seconds",
        "etcd_request_duration_seconds",
        "apiserver_storage_size_bytes",
    ] {
        assert!(families.contains(f), "family {f} missing: {families:?}");
    }
    assert!(value(&before, "apiserver_storage_size_bytes", &[]) > 0.0);
    let created = |s: &[Value]| {
        value(
            s,
            "apiserver_request_total",
            &[
                ("verb", "POST"),
                ("resource", "configmaps"),
                ("code", "201"),
            ],
        )
    };
    let conflicts = |s: &[Value]| {
        value(
            s,
            "apiserver_request_total",
            &[
                ("verb", "POST"),
                ("resource", "configmaps"),
                ("code", "409"),
            ],
        )
    };
    let writes = |s: &[Value]| {
        value(
            s,
            "etcd_request_duration_seconds_count",
            &[("operation", "write")],
        )
    };

    // 5 creates, then one duplicate (409), and a watch held open.
    let cms = format!("{base}/api/v1/namespaces/default/configmaps");
    for i in 0..5 {
        let r = http
            .post(&cms)
            .json(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("m{i}")}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = http
        .post(&cms)
        .json(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m0"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let watch = http.get(format!("{cms}?watch=1")).send().await.unwrap();
    assert_eq!(watch.status(), 200);
    let mut stream = watch.bytes_stream();

    let after = scrape(&base).await;
    assert!(
        created(&after) >= created(&before) + 5.0,
        "creates counted: {} -> {}",
        created(&before),
        created(&after)
    );
    assert!(conflicts(&after) >= conflicts(&before) + 1.0);
    assert!(
        writes(&after) >= writes(&before) + 5.0,
        "store writes timed"
    );
    assert!(
        value(
            &after,
            "apiserver_request_duration_seconds_count",
            &[("verb", "POST"), ("resource", "configmaps")]
        ) >= 6.0
    );
    let watchers = |s: &[Value]| {
        value(
            s,
            "apiserver_registered_watchers",
            &[("resource", "configmaps")],
        )
    };
    assert!(watchers(&after) >= 1.0, "the open watch is registered");
    assert!(
        value(
            &after,
            "apiserver_longrunning_requests",
            &[("verb", "WATCH"), ("resource", "configmaps")]
        ) >= 1.0
    );
    // The watch really is live (the event of a new object arrives).
    http.post(&cms)
        .json(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}}))
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watch event")
        .expect("stream open")
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("ADDED"));
    let open = watchers(&after);
    drop(stream);
    // Closing it unregisters it (the body is dropped when the connection closes).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = scrape(&base).await;
        if watchers(&now) <= open - 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watcher gauge did not drop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn dashboard_shell_is_self_contained() {
    let server = start_test_server_with(|_| {}).await;
    let r = reqwest::get(format!("{}/ui/", server.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"login-token\""));
    for asset in ["/ui/app.js", "/ui/style.css"] {
        let r = reqwest::get(format!("{}{asset}", server.url))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(!r.text().await.unwrap().contains("https://"));
    }
}

fn event(name: &str, last: chrono::DateTime<chrono::Utc>) -> Value {
    let t = last.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p"},
        "reason": "Test", "message": name, "type": "Normal", "count": 1,
        "firstTimestamp": t, "lastTimestamp": t,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_the_ttl() {
    let server = start_test_server_with(|c| c.event_ttl = Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let evs = format!("{}/api/v1/namespaces/default/events", server.url);
    let list: Value = http.get(&evs).send().await.unwrap().json().await.unwrap();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watch = http
        .get(format!("{evs}?watch=1&resourceVersion={rv}"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let now = chrono::Utc::now();
    for (name, at) in [
        ("old", now - chrono::Duration::seconds(120)),
        ("fresh", now),
    ] {
        let r = http.post(&evs).json(&event(name, at)).send().await.unwrap();
        assert_eq!(r.status(), 201, "{name}");
    }
    // The sweeper (every ttl/10 = 3 s) deletes the old one: seen as DELETED on the watch.
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen
        .get("old")
        .is_some_and(|v| v.iter().any(|t| t == "DELETED"))
    {
        let chunk = tokio::time::timeout_at(deadline, watch.next())
            .await
            .expect("the expired event is deleted within 20 s")
            .expect("watch open")
            .unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let ev: Value = serde_json::from_slice(&line).unwrap();
            let name = ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            seen.entry(name)
                .or_default()
                .push(ev["type"].as_str().unwrap().to_string());
        }
    }
    assert!(
        !seen
            .get("fresh")
            .is_some_and(|v| v.iter().any(|t| t == "DELETED")),
        "{seen:?}"
    );
    let r = http.get(format!("{evs}/fresh")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the fresh event is kept");
    let r = http.get(format!("{evs}/old")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
