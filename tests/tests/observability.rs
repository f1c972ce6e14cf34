//! Observability end to end, through `kapsel server` with the real runtime (root): the web
//! dashboard in a real browser (Debian's chromium driven by Playwright), `kapsel top` against a
//! container burning cpu and holding memory, and the events of a failed scheduling, a crash
//! loop, probe failures and a rollout with their counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use kapsel_api::client::{Api, Client, ListParams};
use kapsel_api::{Event, WatchEventType};
use kapsel_tests::local_cluster::HostGuard;
use kapsel_tests::*;

const PYTHON: &str = "/opt/kapsel-venv/bin/python";

/// A `kapsel server` with a real local agent (own runtime dir and cgroup parent `kt-obs-…`)
/// and the demo image `kapsel.local/demo-httpd:v1` imported into its store. The server is
/// declared first so it stops before the guard kills what is left in its cgroups, unmounts
/// its sandboxes' namespace files and removes the cgroups.
struct Cluster {
    server: Server,
    _cgroups: HostGuard,
    _dir: tempfile::TempDir,
}

fn real_cluster(name: &str) -> Cluster {
    let dir = tempdir(&format!("kt-obs-{name}-"));
    let id = short_id();
    let cgroup_parent = format!("kt-obs-{name}-{id}");
    let cgroups = HostGuard {
        cgroup: cgroup_parent.clone(),
        dir: dir.path().to_path_buf(),
    };
    let server = Server::start(
        dir.path(),
        &ServerOpts {
            node_name: Some(format!("kt-obs-{name}")),
            extra: vec![
                "--runtime-dir".into(),
                dir.path().join("run").display().to_string(),
                "--cgroup-parent".into(),
                cgroup_parent,
                "--backoff-initial-seconds".into(),
                "1".into(),
                "--backoff-max-seconds".into(),
                "4".into(),
            ],
            ..Default::default()
        },
    );
    let image = dir.path().join("demo-v1.tar");
    let st = Command::new(workspace_root().join("scripts/build-demo-image.sh"))
        .arg("v1")
        .arg(&image)
        .status()
        .expect("build-demo-image.sh");
    assert!(st.success(), "building the demo image");
    server.kapsel(&[
        "image",
        "import",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        image.to_str().expect("utf-8"),
    ]);
    Cluster {
        server,
        _cgroups: cgroups,
        _dir: dir,
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn require_playwright(test: &str) -> bool {
    let ok = Path::new("/usr/bin/chromium").exists()
        && Command::new(PYTHON)
            .args(["-c", "import playwright.sync_api"])
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    let msg = format!(
        "{test}: chromium or the playwright Python package (in {PYTHON}) is missing (scripts/install-deps.sh)"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}, and CI=true forbids skipping");
    }
    eprintln!("{msg}: skipped");
    false
}

/// tests/python/dashboard.py: log in, a Deployment's pods appear live while it is applied, a
/// rolling update's progress changes without a reload, a pod's logs open, no polling, the page
/// fits a phone; screenshots in target/artifacts/.
#[test]
fn dashboard_in_a_real_browser() {
    let test = "dashboard_in_a_real_browser";
    if !require_root(test)
        || !require_tools(test, &["umoci", "skopeo", "busybox"])
        || !require_playwright(test)
    {
        return;
    }
    let c = real_cluster("dash");
    let client = c.server.client();
    block_on(wait_nodes_ready(&client, 1, Duration::from_secs(60)));
    let artifacts = workspace_root().join("target/artifacts");
    let out = Command::new(PYTHON)
        .arg(workspace_root().join("tests/python/dashboard.py"))
        .arg(&c.server.url)
        .arg(&c.server.admin_token)
        .arg(binary("kapsel"))
        .arg(c.server.kubeconfig())
        .arg(workspace_root())
        .arg(&artifacts)
        .output()
        .expect("run dashboard.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    assert!(
        out.status.success(),
        "dashboard.py: {}\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        c.server.proc.log_tail(40)
    );
    assert!(stdout.ends_with("dashboard: ok\n"), "{stdout}");
    let shot: PathBuf = artifacts.join("dashboard.png");
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real PNG"
    );
    println!("dashboard screenshot: {}", shot.display());
}

/// Columns of the table row whose column `col` is `value` (a `kapsel top`/`get` table).
fn row<'a>(table: &'a str, col: usize, value: &str) -> Option<Vec<&'a str>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|r| r.get(col) == Some(&value))
}

fn millis(cell: &str) -> f64 {
    cell.strip_suffix('m')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cpu cell {cell:?}"))
}

fn mebibytes(cell: &str) -> f64 {
    cell.strip_suffix("Mi")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("memory cell {cell:?}"))
}

const BURN: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: burn
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: burner
      image: kapsel.local/demo-httpd:v1
      command: ["/bin/sh", "-c", "dd if=/dev/zero of=/dev/shm/hold bs=1M count=48 2>/dev/null; echo held; while :; do :; done"]
    - name: idle
      image: kapsel.local/demo-httpd:v1
      command: ["/bin/sh", "-c", "while true; do sleep 1; done"]
"#;

/// `kapsel top pods|nodes` with a container holding 48 MiB in its /dev/shm (a tmpfs charged to
/// its cgroup) and spinning a shell loop: the pod shows hundreds of millicores and at least the
/// held memory, `--containers` splits it by container, `-A` adds the namespace, and the node is
/// listed with its share.
#[test]
fn top_shows_a_container_burning_cpu_and_holding_memory() {
    let test = "top_shows_a_container_burning_cpu_and_holding_memory";
    if !require_root(test) || !require_tools(test, &["umoci", "skopeo", "busybox"]) {
        return;
    }
    let c = real_cluster("top");
    let s = &c.server;
    block_on(wait_nodes_ready(&s.client(), 1, Duration::from_secs(60)));
    let manifest = c._dir.path().join("burn.yaml");
    std::fs::write(&manifest, BURN).expect("manifest");
    s.kapsel(&["apply", "-f", manifest.to_str().expect("utf-8")]);
    // The agent reports usage every 10 s, cpu as a rate between two reports: wait until
    // `kapsel top` shows the burner with its memory and cpu.
    let top = block_on(eventually(
        Duration::from_secs(180),
        "kapsel top pods --containers shows the burner busy and holding 48Mi",
        || async move {
            let out = s.kapsel_output(&["top", "pods", "--containers"]);
            let t = String::from_utf8_lossy(&out.stdout).into_owned();
            let r = row(&t, 1, "burner")?;
            (millis(r[2]) >= 200.0 && mebibytes(r[3]) >= 48.0).then_some(t)
        },
    ));
    println!("kapsel top pods --containers:\n{top}");
    assert!(top.starts_with("POD"), "{top}");
    let idle = row(&top, 1, "idle").expect("idle container row");
    assert!(millis(idle[2]) < 100.0, "the idle container is idle: {top}");

    let pods = s.kapsel(&["top", "pods"]);
    println!("kapsel top pods:\n{pods}");
    let r = row(&pods, 0, "burn").expect("burn row");
    assert!(
        millis(r[1]) >= 200.0 && mebibytes(r[2]) >= 48.0,
        "pod totals: {pods}"
    );
    let all = s.kapsel(&["top", "pods", "-A"]);
    let r = row(&all, 1, "burn").expect("burn row with -A");
    assert_eq!(r[0], "default", "{all}");

    let nodes = s.kapsel(&["top", "nodes"]);
    println!("kapsel top nodes:\n{nodes}");
    let n = row(&nodes, 0, "kt-obs-top").expect("node row");
    assert!(
        millis(n[1]) >= 200.0 && mebibytes(n[3]) >= 48.0,
        "the node carries the pod: {nodes}"
    );
    assert!(n[2].ends_with('%') && n[4].ends_with('%'), "{nodes}");
    s.kapsel(&["delete", "pod", "burn"]);
}

/// Follow the events of namespace `ns` (list, then watch from its resourceVersion; again when
/// a watch ends) until `done` accepts the current set, keyed by name.
async fn events_until<T>(
    client: &Client,
    ns: &str,
    what: &str,
    mut done: impl FnMut(&BTreeMap<String, Event>) -> Option<T>,
) -> T {
    let api: Api<Event> = client.api(Some(ns));
    let mut seen = BTreeMap::new();
    let fut = async {
        loop {
            let list = api.list(&ListParams::default()).await.expect("list events");
            seen = list
                .items
                .into_iter()
                .map(|e| (e.metadata.name().to_string(), e))
                .collect();
            if let Some(v) = done(&seen) {
                return v;
            }
            let rv = list.metadata.resource_version.clone().unwrap_or_default();
            let mut w = api
                .watch_boxed(&ListParams::default().timeout(60), &rv)
                .await
                .expect("watch events");
            while let Some(Ok(ev)) = w.next().await {
                let name = ev.object.metadata.name().to_string();
                match ev.type_ {
                    WatchEventType::Added | WatchEventType::Modified => {
                        seen.insert(name, ev.object);
                    }
                    WatchEventType::Deleted => {
                        seen.remove(&name);
                    }
                    _ => continue,
                }
                if let Some(v) = done(&seen) {
                    return v;
                }
            }
        }
    };
    let res = tokio::time::timeout(Duration::from_secs(180), fut).await;
    match res {
        Ok(v) => v,
        Err(_) => {
            let all: Vec<String> = seen
                .values()
                .map(|e| {
                    format!(
                        "{:?} {:?} x{:?}: {:?}",
                        e.involved_object.name, e.reason, e.count, e.message
                    )
                })
                .collect();
            panic!("timed out waiting for {what}; events: {all:#?}")
        }
    }
}

fn find<'a>(
    evs: &'a BTreeMap<String, Event>,
    object: &str,
    reason: &str,
) -> impl Iterator<Item = &'a Event> + 'a {
    let (object, reason) = (object.to_string(), reason.to_string());
    evs.values().filter(move |e| {
        e.involved_object
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with(&object))
            && e.reason.as_deref() == Some(&reason)
    })
}

const EVENTS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: nowhere
  namespace: default
spec:
  nodeSelector:
    kt-obs: nowhere
  containers:
    - name: c
      image: kapsel.local/demo-httpd:v1
---
apiVersion: v1
kind: Pod
metadata:
  name: crasher
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: c
      image: kapsel.local/demo-httpd:v1
      command: ["/bin/sh", "-c", "echo crashing; exit 1"]
---
apiVersion: v1
kind: Pod
metadata:
  name: sick
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: c
      image: kapsel.local/demo-httpd:v1
      command: ["/bin/sh", "-c", "while true; do sleep 1; done"]
      readinessProbe:
        exec:
          command: ["/bin/false"]
        periodSeconds: 1
"#;

fn deployment(version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: roll
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {{app: roll}}
  template:
    metadata:
      labels: {{app: roll}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: c
          image: kapsel.local/demo-httpd:v1
          command: ["/bin/sh", "-c", "while true; do sleep 1; done"]
          env:
            - {{name: VERSION, value: "{version}"}}
"#
    )
}

fn time_of(e: &Event, first: bool) -> String {
    let t = if first {
        e.first_timestamp.as_ref()
    } else {
        e.last_timestamp.as_ref()
    };
    t.map(|t| format!("{t:?}")).unwrap_or_default()
}

/// FailedScheduling (retried, count > 1), a crash loop's BackOff (count > 1, first before last),
/// the agent's Created/Started/Unhealthy/Killing, and a rollout's ScalingReplicaSet, all seen
/// through a watch of the events, then shown by `kapsel get events` and `kapsel describe`.
#[test]
fn events_of_failed_scheduling_crash_loop_probes_and_rollout_have_counts() {
    let test = "events_of_failed_scheduling_crash_loop_probes_and_rollout_have_counts";
    if !require_root(test) || !require_tools(test, &["umoci", "skopeo", "busybox"]) {
        return;
    }
    let c = real_cluster("ev");
    let s = &c.server;
    let client = s.client();
    block_on(wait_nodes_ready(&client, 1, Duration::from_secs(60)));
    let dir = c._dir.path();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("manifest");
        p.display().to_string()
    };
    s.kapsel(&["apply", "-f", &write("events.yaml", EVENTS)]);
    s.kapsel(&["apply", "-f", &write("roll-v1.yaml", &deployment("v1"))]);

    let summary = block_on(events_until(
        &client,
        "default",
        "FailedScheduling x2, BackOff x2, Created, Started, Unhealthy x2",
        |evs| {
            let failed = find(evs, "nowhere", "FailedScheduling").find(|e| e.count >= Some(2))?;
            let backoff = find(evs, "crasher", "BackOff").find(|e| {
                e.count >= Some(2)
                    && e.first_timestamp.is_some()
                    && e.first_timestamp < e.last_timestamp
            })?;
            find(evs, "crasher", "Created").next()?;
            find(evs, "crasher", "Started").next()?;
            let unhealthy = find(evs, "sick", "Unhealthy").find(|e| e.count >= Some(2))?;
            Some(format!(
                "FailedScheduling x{:?} ({:?}); BackOff x{:?} from {} to {}; Unhealthy x{:?} ({:?})",
                failed.count,
                failed.message,
                backoff.count,
                time_of(backoff, true),
                time_of(backoff, false),
                unhealthy.count,
                unhealthy.message
            ))
        },
    ));
    println!("{summary}");
    assert!(
        summary.contains("Readiness probe failed"),
        "the kubelet's words: {summary}"
    );

    // A rollout: v1 scaled up, then v2 up and v1 down.
    s.kapsel(&["rollout", "status", "deployment/roll", "--timeout", "120s"]);
    s.kapsel(&["apply", "-f", &write("roll-v2.yaml", &deployment("v2"))]);
    let scaled = block_on(events_until(
        &client,
        "default",
        "ScalingReplicaSet: up for both replica sets and down for the old one",
        |evs| {
            let msgs: Vec<String> = find(evs, "roll", "ScalingReplicaSet")
                .filter_map(|e| e.message.clone())
                .collect();
            let ups = msgs.iter().filter(|m| m.starts_with("Scaled up")).count();
            let downs = msgs.iter().filter(|m| m.starts_with("Scaled down")).count();
            (ups >= 2 && downs >= 1).then_some(msgs)
        },
    ));
    println!("ScalingReplicaSet: {scaled:#?}");

    // Deleting a running pod: the agent stops its container (Killing).
    s.kapsel(&["delete", "pod", "sick"]);
    block_on(events_until(&client, "default", "Killing of sick", |evs| {
        find(evs, "sick", "Killing")
            .find(|e| e.message.as_deref() == Some("Stopping container c"))
            .map(|_| ())
    }));

    let table = s.kapsel(&["get", "events"]);
    println!("kapsel get events:\n{table}");
    for reason in [
        "FailedScheduling",
        "BackOff",
        "Created",
        "Started",
        "Unhealthy",
        "Killing",
        "ScalingReplicaSet",
    ] {
        assert!(table.contains(reason), "{reason} in get events:\n{table}");
    }
    let desc = s.kapsel(&["describe", "pod", "crasher"]);
    println!("kapsel describe pod crasher:\n{desc}");
    let backoff_line = desc
        .lines()
        .find(|l| l.contains("BackOff") && l.contains("Back-off restarting"))
        .unwrap_or_else(|| panic!("BackOff in describe:\n{desc}"));
    assert!(
        backoff_line.contains("(x") && backoff_line.contains(" over "),
        "describe shows the count and the span: {backoff_line}"
    );
    let desc = s.kapsel(&["describe", "pod", "nowhere"]);
    assert!(desc.contains("FailedScheduling"), "{desc}");
    let desc = s.kapsel(&["describe", "deployment", "roll"]);
    assert!(desc.contains("ScalingReplicaSet"), "{desc}");
}
