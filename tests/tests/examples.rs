//! Every file in examples/ is exercised here, through `kapsel server` and the `kapsel` CLI the
//! way the walkthroughs tell a user to run them.

use std::process::Command;
use std::time::Duration;

use kapsel_api::client::{Api, ListParams};
use kapsel_api::{Deployment, Pod};
use kapsel_tests::local_cluster::HostGuard;
use kapsel_tests::*;

fn hollow_server(dir: &std::path::Path, node: &str, extra: &[&str]) -> Server {
    Server::start(
        dir,
        &ServerOpts {
            hollow: true,
            node_name: Some(node.into()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    )
}

/// The demo Deployment `default/web` with all its replicas Ready (its live pods).
async fn web_ready(client: &kapsel_api::client::Client) -> Vec<Pod> {
    wait_deployment_ready(client, "default", "web", "app=web", Duration::from_secs(60)).await
}

/// `kapsel rollout status deployment/web` (waits for the rollout; its output).
fn rollout_status(server: &Server) -> String {
    server.kapsel(&["rollout", "status", "deployment/web", "--timeout", "120s"])
}

fn template_image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// examples/namespace-limits.yaml: the LimitRange fills in defaults, its max refuses, and the
/// ResourceQuota refuses the pod that would go over budget — with Kubernetes' messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_limits_example() {
    let dir = tempdir("kt-ex-limits-");
    let server = hollow_server(dir.path(), "kt-ex-limits", &[]);
    let client = server.client();
    wait_nodes_ready(&client, 1, Duration::from_secs(30)).await;
    let out = server.kapsel(&["apply", "-f", "examples/namespace-limits.yaml"]);
    for want in [
        "namespace/team-a",
        "limitrange/team-a-defaults",
        "resourcequota/team-a-quota",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }

    let pod = |name: &str, limits: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"team-a"}},
            "spec":{{"containers":[{{"name":"c","image":"kapsel.local/demo-httpd:v1"{limits}}}]}}}}"#
        )
    };
    let create = |body: String| {
        let path = dir.path().join("pod.json");
        std::fs::write(&path, body).expect("write pod");
        server.kapsel_output(&["create", "-f", path.to_str().expect("utf-8 path")])
    };

    // Defaults from the LimitRange.
    let out = create(pod("defaults", ""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods: Api<Pod> = client.api(Some("team-a"));
    let p = pods.get("defaults").await.expect("pod");
    let res = serde_json::to_value(&p.spec.as_ref().expect("spec").containers[0].resources)
        .expect("json");
    assert_eq!(res["limits"]["memory"], "64Mi", "{res}");
    assert_eq!(res["limits"]["cpu"], "200m", "{res}");
    assert_eq!(res["requests"]["memory"], "32Mi", "{res}");
    assert_eq!(res["requests"]["cpu"], "50m", "{res}");

    // Above the LimitRange's max: refused, nothing written.
    let out = create(pod(
        "too-big",
        r#","resources":{"limits":{"memory":"1Gi"}}"#,
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "too-big must be refused");
    assert!(
        err.contains("maximum memory usage per Container is 256Mi, but limit is 1Gi"),
        "LimitRange message: {err}"
    );
    assert!(pods.get_opt("too-big").await.expect("get").is_none());

    // Quota: pods: 4 — three more fit, the fifth is refused with the quota message.
    for i in 1..=3 {
        let out = create(pod(&format!("p{i}"), ""));
        assert!(
            out.status.success(),
            "p{i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = create(pod("p4", ""));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the fifth pod must be refused");
    assert!(
        err.contains("exceeded quota: team-a-quota") && err.contains("pods=1"),
        "quota message: {err}"
    );
    let n = pods
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .len();
    assert_eq!(n, 4, "a refused create writes nothing");
    println!("namespace-limits: defaults applied, max and quota refusals as Kubernetes words them");
}

/// examples/rolling-update.md: v1 → v2 with `kapsel rollout status`, then undo back to v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_walkthrough() {
    let dir = tempdir("kt-ex-roll-");
    let server = hollow_server(dir.path(), "kt-ex-roll", &[]);
    let client = server.client();
    wait_nodes_ready(&client, 1, Duration::from_secs(30)).await;
    let deploys: Api<Deployment> = client.api(Some("default"));

    server.kapsel(&["apply", "-f", "examples/deployment.yaml"]);
    let out = rollout_status(&server);
    assert!(out.contains("successfully rolled out"), "{out}");

    server.kapsel(&["apply", "-f", "examples/deployment-v2.yaml"]);
    let out = rollout_status(&server);
    println!("rollout status (v2):\n{out}");
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = web_ready(&client).await;
    for p in &pods {
        let img = p.spec.as_ref().expect("spec").containers[0]
            .image
            .clone()
            .unwrap_or_default();
        assert!(img.ends_with("demo-httpd:v2"), "pod runs v2: {img}");
    }
    let history = server.kapsel(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains('1') && history.contains('2'),
        "two revisions: {history}"
    );

    let out = server.kapsel(&["rollout", "undo", "deployment/web"]);
    assert!(out.contains("rolled back"), "{out}");
    rollout_status(&server);
    let d = deploys.get("web").await.expect("deployment");
    assert!(
        template_image(&d).ends_with("demo-httpd:v1"),
        "undo restores the v1 template: {}",
        template_image(&d)
    );
    let pods = web_ready(&client).await;
    assert_eq!(pods.len(), 3);
    println!("rolling update v1 -> v2 -> undo (v1) done");
}

/// examples/node-failure.md with two hollow nodes: kill -9 one agent, its pods are replaced on
/// the other node; bring it back and the Deployment still has exactly its replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_failure_walkthrough() {
    let dir = tempdir("kt-ex-nodefail-");
    let server = hollow_server(
        dir.path(),
        "kt-ex-a",
        &[
            "--node-monitor-grace-seconds",
            "4",
            "--pod-eviction-timeout-seconds",
            "2",
        ],
    );
    let client = server.client();
    let spawn_b = || {
        let mut cmd = Command::new(binary("kapsel"));
        cmd.arg("agent")
            .args([
                "--server",
                &server.url,
                "--token",
                &server.node_token,
                "--hollow",
                "--node-name",
                "kt-ex-b",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("kt-ex-b"));
        Proc::spawn("agent kt-ex-b", cmd, dir.path().join("kt-ex-b.log"))
    };
    let mut b = spawn_b();
    wait_nodes_ready(&client, 2, Duration::from_secs(30)).await;

    server.kapsel(&["apply", "-f", "examples/deployment.yaml"]);
    server.kapsel(&["scale", "deployment/web", "--replicas", "4"]);
    let pods = web_ready(&client).await;
    let on_b = |pods: &[Pod]| {
        pods.iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("kt-ex-b"))
            .count()
    };
    println!("before: {} of {} pods on kt-ex-b", on_b(&pods), pods.len());
    assert!(
        on_b(&pods) > 0,
        "the scheduler spreads the pods over both nodes"
    );

    b.kill9();
    println!("killed agent kt-ex-b (pid {}) with SIGKILL", b.pid());
    let all: Api<Pod> = client.api(Some("default"));
    let pods = eventually(
        Duration::from_secs(90),
        "4 live pods Ready, none on kt-ex-b",
        || {
            let all = all.clone();
            async move {
                let l = all
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .ok()?;
                let live: Vec<Pod> = l
                    .items
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                (live.len() == 4 && live.iter().all(pod_ready) && on_b(&live) == 0).then_some(live)
            }
        },
    )
    .await;
    assert_eq!(pods.len(), 4);
    let out = server.kapsel(&["get", "nodes"]);
    assert!(
        !out.lines()
            .any(|l| l.starts_with("kt-ex-b") && l.split_whitespace().nth(1) == Some("Ready")),
        "kt-ex-b is not shown Ready:\n{out}"
    );

    let _b = spawn_b();
    wait_nodes_ready(&client, 2, Duration::from_secs(30)).await;
    let pods = web_ready(&client).await;
    assert_eq!(
        pods.len(),
        4,
        "exactly the Deployment's replicas after the node returns"
    );
    eventually(
        Duration::from_secs(30),
        "the old pods of kt-ex-b are gone",
        || {
            let all = all.clone();
            async move {
                let l = all
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .ok()?;
                (l.items.len() == 4).then_some(())
            }
        },
    )
    .await;
    println!("node failure: pods replaced on kt-ex-a; kt-ex-b rejoined; 4/4 pods");
}

/// examples/crashloop.yaml with the real runtime: the container exits 1, is restarted with
/// backoff, shows CrashLoopBackOff, and `logs --previous` shows the crashed instance's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashloop_example() {
    if !require_root("crashloop_example")
        || !require_tools("crashloop_example", &["umoci", "skopeo", "busybox"])
    {
        return;
    }
    let dir = tempdir("kt-ex-crash-");
    let id = short_id();
    let runtime_dir = dir.path().join("run");
    let cgroup_parent = format!("kt-ex-crash-{id}");
    // kills what the server leaves in its cgroups, unmounts its sandboxes, removes the cgroups
    let _cgroups = HostGuard {
        cgroup: cgroup_parent.clone(),
        dir: dir.path().to_path_buf(),
    };
    let server = Server::start(
        dir.path(),
        &ServerOpts {
            node_name: Some("kt-ex-crash".into()),
            extra: vec![
                "--runtime-dir".into(),
                runtime_dir.display().to_string(),
                "--cgroup-parent".into(),
                cgroup_parent.clone(),
                "--backoff-initial-seconds".into(),
                "1".into(),
                "--backoff-max-seconds".into(),
                "4".into(),
            ],
            ..Default::default()
        },
    );
    let client = server.client();
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
    wait_nodes_ready(&client, 1, Duration::from_secs(30)).await;

    server.kapsel(&["apply", "-f", "examples/crashloop.yaml"]);
    let pods: Api<Pod> = client.api(Some("default"));
    let p = eventually(
        Duration::from_secs(90),
        "crashloop restarted twice and in CrashLoopBackOff",
        || {
            let pods = pods.clone();
            async move {
                let p = pods.get("crashloop").await.ok()?;
                let cs = p.status.as_ref()?.container_statuses.first()?.clone();
                let waiting = cs
                    .state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.clone());
                (cs.restart_count >= 2 && waiting.as_deref() == Some("CrashLoopBackOff"))
                    .then_some(p)
            }
        },
    )
    .await;
    let cs = &p.status.as_ref().expect("status").container_statuses[0];
    let last = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState.terminated");
    assert_eq!(last.exit_code, 1, "the crashed instance exited 1");
    println!(
        "crashloop: restartCount {}, waiting CrashLoopBackOff, last exit {}",
        cs.restart_count, last.exit_code
    );
    let logs = server.kapsel(&["logs", "crashloop", "--previous"]);
    assert!(
        logs.contains("starting"),
        "previous instance's logs: {logs:?}"
    );
    let desc = server.kapsel(&["describe", "pod", "crashloop"]);
    assert!(
        desc.contains("BackOff"),
        "BackOff events in describe:\n{desc}"
    );

    server.kapsel(&["delete", "-f", "examples/crashloop.yaml"]);
    assert!(
        pods.get_opt("crashloop").await.expect("get").is_none(),
        "kapsel delete returns when the pod is gone"
    );
}

/// examples/systemd/*.service: systemd accepts the units without a warning, and their
/// ExecStart command lines are ones the `kapsel` binary accepts.
#[test]
fn homelab_systemd_units_verify() {
    if !require_tools("homelab_systemd_units_verify", &["systemd-analyze"]) {
        return;
    }
    let kapsel = binary("kapsel");
    let dir = tempdir("kt-ex-units-");
    for unit in ["kapsel-server.service", "kapsel-agent.service"] {
        let text = std::fs::read_to_string(workspace_root().join("examples/systemd").join(unit))
            .expect("unit file");
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        let mut args = exec.split_whitespace();
        assert_eq!(args.next(), Some("/usr/local/bin/kapsel"), "{unit}");
        let args: Vec<&str> = args.collect();
        let out = Command::new(&kapsel)
            .args(&args)
            .arg("--help")
            .env("KAPSEL_SERVER", "https://192.0.2.1:6443")
            .output()
            .expect("kapsel");
        assert!(
            out.status.success(),
            "{unit}: `kapsel {}` is refused: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let local = dir.path().join(unit);
        std::fs::write(
            &local,
            text.replace("/usr/local/bin/kapsel", &kapsel.display().to_string()),
        )
        .expect("write unit");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&local)
            .output()
            .expect("systemd-analyze");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "{unit}: systemd-analyze verify: {err}"
        );
    }
}
