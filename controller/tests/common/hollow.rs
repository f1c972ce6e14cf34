//! **Hollow agents**: a fake kubelet for integration tests. It registers a Node (Ready, with
//! allocatable), renews its Lease in `kube-node-lease` every second, watches the pods bound to it
//! and reports them Running + Ready (with containerStatuses), and finalises graceful deletion
//! (container terminated, then delete with grace 0). No containers are run.
//!
//! Hooks: make a pod (or every pod of an image) Failed, keep pods of an image from ever becoming
//! ready, and stop/resume heartbeating (a stopped agent behaves as a dead node: no lease
//! renewals, no pod status, no deletion).
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kapsel_api::client::{Client, Patch};
use kapsel_api::labels as wk;
use kapsel_api::watcher::{self, reflector, watcher, Store, WatcherConfig};
use kapsel_api::{
    Condition, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    DeleteOptions, Lease, LeaseSpec, MicroTime, Node, NodeStatus, ObjectMeta, Pod, PodIp,
    PodStatus, Preconditions, Quantity, Time,
};
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct Hooks {
    pub heartbeat_stopped: AtomicBool,
    /// Pod names to report Failed.
    pub fail_pods: Mutex<HashSet<String>>,
    /// Images whose pods run but never become Ready.
    pub never_ready_images: Mutex<HashSet<String>>,
}

pub struct HollowAgent {
    pub name: String,
    pub hooks: Arc<Hooks>,
    pub pods: Store<Pod>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for HollowAgent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn cond(t: &str, status: bool, now: Time) -> Condition {
    Condition {
        type_: t.into(),
        status: if status { "True" } else { "False" }.into(),
        last_transition_time: Some(now),
        ..Default::default()
    }
}

impl HollowAgent {
    pub async fn start(client: Client, name: &str, ip_octet: u8) -> HollowAgent {
        let hooks = Arc::new(Hooks::default());
        let mut node = Node::with_meta(ObjectMeta::named(name));
        node.metadata
            .labels
            .insert(wk::HOSTNAME.into(), name.into());
        let alloc: kapsel_api::ResourceList = [
            ("cpu".to_string(), Quantity::from("64")),
            ("memory".to_string(), Quantity::from("256Gi")),
            ("pods".to_string(), Quantity::from("500")),
        ]
        .into();
        node.status = Some(NodeStatus {
            capacity: alloc.clone(),
            allocatable: alloc,
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                last_heartbeat_time: Some(Time::now()),
                last_transition_time: Some(Time::now()),
                ..Default::default()
            }],
            ..Default::default()
        });
        let nodes = client.api::<Node>(None);
        let created = nodes.create(&node).await.expect("register node");
        // Status may be dropped on create (status is a subresource): post it.
        let mut st = created.clone();
        st.status = node.status.clone();
        let _ = nodes.replace_status(name, &st).await;

        let (pods, writer) = watcher::store::<Pod>();
        let wc = WatcherConfig::default().fields(&format!("spec.nodeName={name}"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let stream = reflector(writer, watcher(client.api::<Pod>(None), wc));
        let feed = tokio::spawn(async move {
            let mut s = std::pin::pin!(stream);
            while s.next().await.is_some() {
                let _ = tx.send(());
            }
        });

        // Lease heartbeat + node Ready.
        let hb = {
            let client = client.clone();
            let hooks = hooks.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                let leases = client.api::<Lease>(Some(wk::NODE_LEASE_NAMESPACE));
                let mut t = tokio::time::interval(Duration::from_secs(1));
                loop {
                    t.tick().await;
                    if hooks.heartbeat_stopped.load(Ordering::SeqCst) {
                        continue;
                    }
                    let now = MicroTime::now();
                    match leases.get_opt(&name).await {
                        Ok(Some(mut l)) => {
                            l.spec.get_or_insert_with(Default::default).renew_time = Some(now);
                            let _ = leases.replace(&name, &l).await;
                        }
                        Ok(None) => {
                            let mut l = Lease::with_meta(ObjectMeta::namespaced(
                                wk::NODE_LEASE_NAMESPACE,
                                &name,
                            ));
                            l.spec = Some(LeaseSpec {
                                holder_identity: Some(name.clone()),
                                lease_duration_seconds: Some(40),
                                acquire_time: Some(now),
                                renew_time: Some(now),
                                lease_transitions: Some(0),
                            });
                            let _ = leases.create(&l).await;
                        }
                        Err(_) => {}
                    }
                    // Like the kubelet, post Ready=True if something else changed it.
                    if let Ok(mut n) = nodes.get(&name).await {
                        let ready = n
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                            .map(|c| c.status == "True")
                            .unwrap_or(false);
                        if !ready {
                            let st = n.status.get_or_insert_with(Default::default);
                            st.conditions.retain(|c| c.type_ != "Ready");
                            st.conditions.push(Condition {
                                type_: "Ready".into(),
                                status: "True".into(),
                                reason: Some("KubeletReady".into()),
                                last_heartbeat_time: Some(Time::now()),
                                last_transition_time: Some(Time::now()),
                                ..Default::default()
                            });
                            let _ = nodes.replace_status(&name, &n).await;
                        }
                    }
                }
            })
        };

        // Pod sync loop: on every pod event and every second, converge all pods of this node.
        let sync = {
            let client = client.clone();
            let hooks = hooks.clone();
            let pods = pods.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        r = rx.recv() => if r.is_none() { return },
                        _ = t.tick() => {}
                    }
                    while rx.try_recv().is_ok() {}
                    if hooks.heartbeat_stopped.load(Ordering::SeqCst) {
                        continue;
                    }
                    let all = pods.list();
                    let futs = all.iter().filter_map(|p| {
                        let want = desired(p, &hooks, &name, ip_octet)?;
                        let client = client.clone();
                        Some(async move { apply(&client, want).await })
                    });
                    futures::future::join_all(futs).await;
                }
            })
        };
        HollowAgent {
            name: name.to_string(),
            hooks,
            pods,
            tasks: vec![feed, hb, sync],
        }
    }

    pub fn stop_heartbeat(&self) {
        self.hooks.heartbeat_stopped.store(true, Ordering::SeqCst);
    }
    pub fn resume_heartbeat(&self) {
        self.hooks.heartbeat_stopped.store(false, Ordering::SeqCst);
    }
    pub fn fail_pod(&self, name: &str) {
        self.hooks
            .fail_pods
            .lock()
            .unwrap()
            .insert(name.to_string());
    }
    pub fn never_ready(&self, image: &str) {
        self.hooks
            .never_ready_images
            .lock()
            .unwrap()
            .insert(image.to_string());
    }
}

enum Want {
    Status(Pod),
    Finalize(Pod),
}

fn image_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// What the fake kubelet should write for `p`, if anything.
fn desired(p: &Pod, hooks: &Hooks, node: &str, ip_octet: u8) -> Option<Want> {
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    if p.metadata.deletion_timestamp.is_some() {
        return Some(Want::Finalize(p.clone()));
    }
    if phase == "Failed" || phase == "Succeeded" {
        return None;
    }
    let now = Time::now();
    let fail = hooks.fail_pods.lock().unwrap().contains(p.metadata.name());
    let never_ready = hooks
        .never_ready_images
        .lock()
        .unwrap()
        .contains(&image_of(p));
    let containers = p
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    if fail {
        let mut o = p.clone();
        let st = o.status.get_or_insert_with(Default::default);
        st.phase = Some("Failed".into());
        st.reason = Some("Error".into());
        st.conditions = vec![
            cond("Ready", false, now),
            cond("ContainersReady", false, now),
            cond("PodScheduled", true, now),
        ];
        st.container_statuses = containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                ready: false,
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 1,
                        reason: Some("Error".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        return Some(Want::Status(o));
    }
    let ready = !never_ready;
    let cur_ready = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status == "True");
    if phase == "Running" && cur_ready == Some(ready) {
        return None;
    }
    let mut o = p.clone();
    let st = o.status.get_or_insert_with(PodStatus::default);
    st.phase = Some("Running".into());
    st.host_ip = Some(format!("10.0.{ip_octet}.1"));
    let suffix =
        (kapsel_controller::deployment::util::fnv32a(p.metadata.name().as_bytes()) % 250) + 2;
    let ip = format!("10.{ip_octet}.0.{suffix}");
    st.pod_ip = Some(ip.clone());
    st.pod_ips = vec![PodIp { ip }];
    st.start_time.get_or_insert(now);
    st.conditions = vec![
        cond("Initialized", true, now),
        cond("Ready", ready, now),
        cond("ContainersReady", ready, now),
        cond("PodScheduled", true, now),
    ];
    st.container_statuses = containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            ready,
            started: Some(true),
            container_id: Some(format!("hollow://{node}/{}", p.metadata.name())),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(now),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    Some(Want::Status(o))
}

async fn apply(client: &Client, w: Want) {
    match w {
        Want::Status(p) => {
            let api = client.api::<Pod>(Some(p.metadata.namespace()));
            let _ = api.replace_status(p.metadata.name(), &p).await;
        }
        Want::Finalize(p) => {
            let api = client.api::<Pod>(Some(p.metadata.namespace()));
            let terminated = p.status.as_ref().is_some_and(|s| {
                s.container_statuses
                    .iter()
                    .all(|c| c.state.as_ref().is_some_and(|x| x.terminated.is_some()))
            });
            if !terminated {
                let mut o = p.clone();
                let st = o.status.get_or_insert_with(Default::default);
                for c in st.container_statuses.iter_mut() {
                    c.ready = false;
                    c.state = Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 0,
                            reason: Some("Completed".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
                for c in st
                    .conditions
                    .iter_mut()
                    .filter(|c| c.type_ == "Ready" || c.type_ == "ContainersReady")
                {
                    c.status = "False".into();
                }
                let _ = api.replace_status(p.metadata.name(), &o).await;
            }
            let dp = DeleteOptions {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(p.metadata.uid().to_string()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let _ = api.delete(p.metadata.name(), &dp).await;
        }
    }
}

#[allow(unused)]
fn _unused(_: Patch) {}
