//! `kapsel image pull|import|ls|rm` on a node's store (the `kapsel` binary), and a pod that runs
//! from an imported `docker-archive` tar with no registry anywhere. Needs root and Debian's
//! docker-registry, skopeo, umoci and busybox-static; under CI=true their absence fails.

#[path = "../../agent/runtime/tests/common/mod.rs"]
mod rt;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kapsel_agent::{Agent, AgentConfig, StoreImages};
use kapsel_api::client::{Api, Client, ListParams, LogParams};
use kapsel_api::{Container, ObjectMeta, Pod, PodSpec, WatchEventType};
use kapsel_image::testing::{build_busybox, require_root, require_tools, Registry, REGISTRY_TOOLS};
use kapsel_image::ImageStore;
use kapsel_runtime::LinuxRuntime;

const T: Duration = Duration::from_secs(60);

fn kapsel(data: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kapsel"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("KAPSEL_DATA_DIR")
        .output()
        .expect("run kapsel");
    assert!(
        out.status.success(),
        "kapsel {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn image_pull_ls_and_rm_work_on_the_node_store() {
    if !require_tools(REGISTRY_TOOLS) || !require_root() {
        return;
    }
    let reg = Registry::start().expect("docker-registry");
    let dir = tempfile::Builder::new()
        .prefix("kt-cli-")
        .tempdir()
        .unwrap();
    let layout = build_busybox(dir.path(), "1.36").unwrap();
    let digest = reg
        .push_layout(&layout, "1.36", "library/busybox:1.36", false)
        .unwrap();
    let data = dir.path().join("node");
    let image = format!("{}/library/busybox:1.36", reg.host());
    let host = reg.host();
    let pull = ["image", "pull", "--insecure-registry", &host, &image];
    let out = stdout(&kapsel(&data, &pull));
    let id = format!("{}/library/busybox@{digest}", reg.host());
    assert!(out.contains(&id) && out.contains("downloaded"), "{out}");
    // a second pull finds everything present
    let out = stdout(&kapsel(&data, &pull));
    assert!(out.contains("up to date"), "{out}");
    // without --insecure-registry the registry is spoken to over HTTPS only: refused
    let plain = Command::new(env!("CARGO_BIN_EXE_kapsel"))
        .args(["image", "pull", &image, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!plain.status.success());
    let ls = stdout(&kapsel(&data, &["image", "ls"]));
    assert!(ls.contains(&image), "{ls}");
    let rm = stdout(&kapsel(&data, &["image", "rm", &image]));
    assert!(rm.contains("removed"), "{rm}");
    let ls = stdout(&kapsel(&data, &["image", "ls"]));
    assert!(!ls.contains(&image), "{ls}");
    // nothing left behind: rm pruned the snapshots
    let snaps = std::fs::read_dir(data.join("agent/images/snapshots"))
        .unwrap()
        .count();
    assert_eq!(snaps, 0);
}

async fn wait_pod(api: &Api<Pod>, name: &str, pred: impl Fn(&Pod) -> bool) -> Pod {
    let fut = async {
        loop {
            let lp = ListParams::default().fields(&format!("metadata.name={name}"));
            let list = api.list(&lp).await.expect("list");
            if let Some(p) = list.items.iter().find(|p| pred(p)) {
                return p.clone();
            }
            let rv = list.metadata.resource_version.clone().unwrap_or_default();
            let mut w = api.watch_boxed(&lp.timeout(30), &rv).await.expect("watch");
            while let Some(Ok(ev)) = w.next().await {
                if matches!(ev.type_, WatchEventType::Added | WatchEventType::Modified)
                    && pred(&ev.object)
                {
                    return ev.object;
                }
            }
        }
    };
    match tokio::time::timeout(T, fut).await {
        Ok(p) => p,
        Err(_) => panic!(
            "pod {name}: {:?}",
            api.get(name).await.ok().and_then(|p| p.status)
        ),
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn pod(name: &str, image: &str, policy: &str, cmd: &[&str], restart: &str) -> Pod {
    let mut p = Pod::with_meta(ObjectMeta::namespaced("default", name));
    p.spec = Some(PodSpec {
        node_name: Some("kt-node".into()),
        restart_policy: Some(restart.into()),
        termination_grace_period_seconds: Some(1),
        containers: vec![Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: Some(policy.into()),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }],
        ..Default::default()
    });
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_of_a_docker_archive_runs_a_pod_without_any_registry() {
    if !require_tools(&["skopeo", "umoci", "/bin/busybox"]) {
        return;
    }
    let Some(env) = rt::Env::new() else { return };
    let dir = tempfile::Builder::new()
        .prefix("kt-cli-")
        .tempdir()
        .unwrap();
    let layout = build_busybox(dir.path(), "1.36").unwrap();
    // `skopeo copy … docker-archive:` as the issue says (what `docker save` gives)
    let tar = dir.path().join("busybox.tar");
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg(format!("oci:{}:1.36", layout.display()))
        .arg(format!(
            "docker-archive:{}:kt.local/imported:1.0",
            tar.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = dir.path().join("node");
    let imported = stdout(&kapsel(&data, &["image", "import", tar.to_str().unwrap()]));
    assert!(imported.contains("kt.local/imported:1.0"), "{imported}");
    let ls = stdout(&kapsel(&data, &["image", "ls"]));
    assert!(ls.contains("kt.local/imported:1.0"), "{ls}");

    // an agent on that data dir: no registry is configured, kt.local does not resolve
    let srv = kapsel_apiserver::start_test_server().await;
    let rtm = Arc::new(LinuxRuntime::new(env.config.clone()).unwrap());
    let mut cfg = AgentConfig::new(&srv.url, "kt-node", data.join("agent"));
    cfg.node_ip = Some("127.0.0.1".into());
    cfg.eviction_memory_available = 0;
    let store = ImageStore::open(data.join("agent/images")).unwrap();
    let images = StoreImages::new(Arc::new(store), BTreeMap::new());
    let agent = Agent::connect(cfg, rtm, Arc::new(images)).unwrap().spawn();
    let api: Api<Pod> = Client::new(&srv.url).unwrap().api(Some("default"));
    // the image's own Cmd, IfNotPresent
    api.create(&pod(
        "once",
        "kt.local/imported:1.0",
        "IfNotPresent",
        &[],
        "Never",
    ))
    .await
    .unwrap();
    // and Never
    api.create(&pod(
        "never",
        "kt.local/imported:1.0",
        "Never",
        &["/bin/sleep", "1000"],
        "Always",
    ))
    .await
    .unwrap();
    let p = wait_pod(&api, "once", |p| phase(p) == "Succeeded").await;
    let st = &p.status.as_ref().unwrap().container_statuses[0];
    assert!(
        st.image_id.starts_with("kt.local/imported@sha256:"),
        "{}",
        st.image_id
    );
    let logs = api
        .logs_string(
            "once",
            &LogParams {
                container: Some("c".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(logs.contains("hello from busybox"), "{logs}");
    wait_pod(&api, "never", |p| phase(p) == "Running").await;
    for n in ["once", "never"] {
        let _ = api
            .delete(
                n,
                &kapsel_api::DeleteOptions {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await;
    }
    let gone = async {
        loop {
            if api
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(T, gone).await.expect("pods deleted");
    drop(agent);
    drop(srv);
}
