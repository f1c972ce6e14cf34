//! Controller benchmark (prints numbers; not a pass/fail test).
//!
//! `cargo build --release -p kapsel-controller --bins --examples && target/release/examples/controller-bench`
//!
//! The API server, the scheduler and the hollow agents run in this process; the controller runs
//! as its own process (`target/release/kapsel-controller`) so its RSS can be read from /proc.
//! 1. time from applying a new image to a completed rollout of a 100-replica Deployment
//!    (maxSurge 25 %, maxUnavailable 25 %), and
//! 2. the controller's RSS with 1,000 Deployments (1 replica each) reconciled.

#[path = "../tests/common/hollow.rs"]
mod hollow;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kapsel_api::client::{Client, ListParams};
use kapsel_api::{
    Container, Deployment, DeploymentSpec, LabelSelector, ObjectMeta, Pod, PodSpec, PodTemplateSpec,
};
use kapsel_controller::deployment::util;

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    let labels: BTreeMap<String, String> = [("app".to_string(), name.to_string())].into();
    let mut d = Deployment::with_meta(ObjectMeta::namespaced("default", name));
    d.spec = Some(DeploymentSpec {
        replicas: Some(replicas),
        selector: Some(LabelSelector {
            match_labels: labels.clone(),
            ..Default::default()
        }),
        template: Some(PodTemplateSpec {
            metadata: ObjectMeta {
                labels,
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                termination_grace_period_seconds: Some(1),
                ..Default::default()
            }),
        }),
        ..Default::default()
    });
    d
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn spawn_controller(url: &str) -> Child {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("kapsel-controller"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build --release -p kapsel-controller --bins --examples)",
        bin.display()
    );
    Command::new(bin)
        .args(["--server", url])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn kapsel-controller")
}

async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn complete(client: &Client, name: &str, n: usize, image: &str) -> bool {
    let Ok(d) = client.api::<Deployment>(Some("default")).get(name).await else {
        return false;
    };
    if !util::deployment_complete(&d, &d.status.clone().unwrap_or_default()) {
        return false;
    }
    let Ok(pods) = client
        .api::<Pod>(Some("default"))
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await
    else {
        return false;
    };
    let live: Vec<&Pod> = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    live.len() == n
        && live.iter().all(|p| {
            kapsel_controller::podutil::is_ready(p)
                && p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(image)
        })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let server = kapsel_apiserver::start_test_server().await;
    let client = Client::new(&server.url).unwrap();
    let mut agents = Vec::new();
    for i in 0..4u8 {
        agents.push(hollow::HollowAgent::start(client.clone(), &format!("node-{i}"), i + 1).await);
    }
    let sched = kapsel_scheduler::Scheduler::new(
        client.clone(),
        kapsel_scheduler::Config {
            events: false,
            ..Default::default()
        },
    )
    .unwrap();
    tokio::spawn(sched.run(std::future::pending()));
    let mut ctrl = spawn_controller(&server.url);
    let idle = {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss_kib(ctrl.id()).unwrap_or(0)
    };

    // 1. 100-replica rollout.
    let dapi = client.api::<Deployment>(Some("default"));
    dapi.create(&deployment("big", 100, "big:v1"))
        .await
        .unwrap();
    let t = Instant::now();
    wait_until(Duration::from_secs(300), "100 replicas", || {
        complete(&client, "big", 100, "big:v1")
    })
    .await;
    let initial = t.elapsed();
    let mut d = dapi.get("big").await.unwrap();
    d.spec
        .as_mut()
        .unwrap()
        .template
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("big:v2".into());
    let t = Instant::now();
    dapi.replace("big", &d).await.unwrap();
    wait_until(Duration::from_secs(300), "rollout", || {
        complete(&client, "big", 100, "big:v2")
    })
    .await;
    let rollout = t.elapsed();
    println!(
        "controller: 100-replica initial scale-up (create -> 100 ready): {:.2} s",
        initial.as_secs_f64()
    );
    println!(
        "controller: 100-replica rollout, maxSurge 25% (apply new image -> complete): {:.2} s",
        rollout.as_secs_f64()
    );
    dapi.delete("big", &Default::default()).await.unwrap();
    wait_until(Duration::from_secs(120), "cleanup", || async {
        client
            .api::<Pod>(Some("default"))
            .list(&ListParams::default().labels("app=big"))
            .await
            .is_ok_and(|l| l.items.is_empty())
    })
    .await;

    // 2. RSS with 1,000 Deployments.
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for chunk in 0..20 {
        let dapi = dapi.clone();
        set.spawn(async move {
            for i in 0..50 {
                let n = chunk * 50 + i;
                dapi.create(&deployment(&format!("d{n:04}"), 1, "small:v1"))
                    .await
                    .unwrap();
            }
        });
    }
    while set.join_next().await.is_some() {}
    wait_until(
        Duration::from_secs(600),
        "1000 deployments available",
        || async {
            dapi.list(&ListParams::default()).await.is_ok_and(|l| {
                l.items.len() == 1000
                    && l.items
                        .iter()
                        .all(|d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(1))
            })
        },
    )
    .await;
    let converge = t.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_kib(ctrl.id()).unwrap_or(0);
    println!(
        "controller: 1,000 Deployments (1 replica each) created -> all available: {:.1} s",
        converge.as_secs_f64()
    );
    println!("controller: RSS idle {:.1} MiB; with 1,000 Deployments + 1,000 ReplicaSets + 1,000 Pods: {:.1} MiB", idle as f64 / 1024.0, rss as f64 / 1024.0);
    let _ = ctrl.kill();
    let _ = ctrl.wait();
    drop(agents);
}
