//! Shared helpers of the agent's integration tests: an in-process API server, pod builders,
//! and waits driven by watches.
#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use kapsel_api::client::{Api, Client, ListParams};
use kapsel_api::{Container, ObjectMeta, Pod, PodSpec, Resource, WatchEventType};

pub async fn server() -> kapsel_apiserver::TestServer {
    let srv = kapsel_apiserver::start_test_server().await;
    // The agent tests use hostPath volumes, which Pod Security's default (baseline) refuses.
    Client::new(&srv.url)
        .expect("client")
        .api::<kapsel_api::Namespace>(None)
        .patch(
            "default",
            &kapsel_api::client::Patch::Merge(serde_json::json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "privileged"}}})),
        )
        .await
        .expect("label the default namespace privileged");
    srv
}

pub fn pods(url: &str) -> Api<Pod> {
    Client::new(url)
        .expect("client")
        .api::<Pod>(Some("default"))
}

pub fn container(name: &str, image: &str, cmd: &[&str]) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A pod bound to `node` directly (no scheduler needed).
pub fn pod(name: &str, node: &str, containers: Vec<Container>) -> Pod {
    let mut p = Pod::with_meta(ObjectMeta::namespaced("default", name));
    p.spec = Some(PodSpec {
        node_name: Some(node.into()),
        containers,
        termination_grace_period_seconds: Some(5),
        ..Default::default()
    });
    p
}

/// Wait (through a watch) until `pred` holds for the pod, or fail after `timeout`.
pub async fn wait_pod(
    api: &Api<Pod>,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&Pod) -> bool,
) -> Pod {
    let fut = async {
        loop {
            let lp = ListParams::default().fields(&format!("metadata.name={name}"));
            let list = api.list(&lp).await.expect("list");
            if let Some(p) = list.items.iter().find(|p| pred(p)) {
                return p.clone();
            }
            let rv = list.metadata.resource_version.clone().unwrap_or_default();
            let mut w = api.watch_boxed(&lp.timeout(30), &rv).await.expect("watch");
            while let Some(ev) = w.next().await {
                let Ok(ev) = ev else { break };
                if matches!(ev.type_, WatchEventType::Added | WatchEventType::Modified)
                    && pred(&ev.object)
                {
                    return ev.object;
                }
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(p) => p,
        Err(_) => {
            let cur = api.get(name).await.ok();
            panic!(
                "pod {name}: condition not met within {timeout:?}; status: {}",
                serde_json::to_string_pretty(&cur.and_then(|p| p.status)).unwrap_or_default()
            )
        }
    }
}

/// Wait until the pod object is gone.
pub async fn wait_gone(api: &Api<Pod>, name: &str, timeout: Duration) {
    let fut = async {
        loop {
            let lp = ListParams::default().fields(&format!("metadata.name={name}"));
            let list = api.list(&lp).await.expect("list");
            if list.items.is_empty() {
                return;
            }
            let rv = list.metadata.resource_version.clone().unwrap_or_default();
            let mut w = api.watch_boxed(&lp.timeout(30), &rv).await.expect("watch");
            while let Some(ev) = w.next().await {
                let Ok(ev) = ev else { break };
                if ev.type_ == WatchEventType::Deleted {
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(timeout, fut).await.is_err() {
        let cur = api.get(name).await.ok();
        panic!("pod {name} still exists after {timeout:?}: {cur:?}");
    }
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn cstatus<'a>(p: &'a Pod, name: &str) -> Option<&'a kapsel_api::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .iter()
        .find(|c| c.name == name)
}

pub fn waiting_reason(p: &Pod, name: &str) -> Option<String> {
    cstatus(p, name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

pub fn condition(p: &Pod, t: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
}

pub fn kind_of<K: Resource>() -> &'static str {
    K::KIND
}
