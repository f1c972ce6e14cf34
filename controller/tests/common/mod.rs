//! In-process cluster for the controller's integration tests: the API server on an ephemeral
//! port over a temp dir, the scheduler, the controller, and hollow agents.
#![allow(dead_code)]

pub mod hollow;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use kapsel_api::client::{Client, ListParams};
use kapsel_api::{
    Container, Deployment, DeploymentSpec, DeploymentStrategy, IntOrString, LabelSelector,
    ObjectMeta, Pod, PodSpec, PodTemplateSpec, ReplicaSet, RollingUpdateDeployment,
};
use kapsel_apiserver::TestServer;
use tokio::task::JoinHandle;

pub use hollow::HollowAgent;

pub struct Cluster {
    pub server: TestServer,
    pub client: Client,
    pub agents: Vec<HollowAgent>,
    controller: Option<JoinHandle<()>>,
    scheduler: Option<JoinHandle<()>>,
    stop_scheduler: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(c) = self.controller.take() {
            c.abort();
        }
        if let Some(s) = self.stop_scheduler.take() {
            let _ = s.send(());
        }
        if let Some(s) = self.scheduler.take() {
            s.abort();
        }
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

impl Cluster {
    pub async fn start(nodes: usize) -> Cluster {
        Self::start_with(nodes, kapsel_controller::Config::default()).await
    }

    pub async fn start_with(nodes: usize, cfg: kapsel_controller::Config) -> Cluster {
        init_tracing();
        let server = kapsel_apiserver::start_test_server().await;
        let client = Client::new(&server.url).expect("client");
        let mut agents = Vec::new();
        for i in 0..nodes {
            agents
                .push(HollowAgent::start(client.clone(), &format!("node-{i}"), i as u8 + 1).await);
        }
        let sched = kapsel_scheduler::Scheduler::new(
            client.clone(),
            kapsel_scheduler::Config {
                seed: Some(1),
                events: false,
                ..Default::default()
            },
        )
        .expect("scheduler");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let scheduler = tokio::spawn(async move {
            let _ = sched
                .run(async move {
                    let _ = rx.await;
                })
                .await;
        });
        let c = client.clone();
        let controller = tokio::spawn(async move {
            let _ = kapsel_controller::Controller::run(c, cfg).await;
        });
        Cluster {
            server,
            client,
            agents,
            controller: Some(controller),
            scheduler: Some(scheduler),
            stop_scheduler: Some(tx),
        }
    }

    pub fn agent(&self, node: &str) -> &HollowAgent {
        self.agents.iter().find(|a| a.name == node).expect("agent")
    }

    pub async fn pods(&self, ns: &str, app: &str) -> Vec<Pod> {
        self.client
            .api::<Pod>(Some(ns))
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    pub async fn rss(&self, ns: &str) -> Vec<ReplicaSet> {
        self.client
            .api::<ReplicaSet>(Some(ns))
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    pub async fn deployment(&self, ns: &str, name: &str) -> Deployment {
        self.client
            .api::<Deployment>(Some(ns))
            .get(name)
            .await
            .expect("deployment")
    }

    /// Read-modify-write a deployment (retrying conflicts).
    pub async fn update_deployment(
        &self,
        ns: &str,
        name: &str,
        f: impl Fn(&mut Deployment),
    ) -> Deployment {
        let api = self.client.api::<Deployment>(Some(ns));
        for _ in 0..20 {
            let mut d = api.get(name).await.expect("get deployment");
            f(&mut d);
            match api.replace(name, &d).await {
                Ok(d) => return d,
                Err(e) if e.is_conflict() => continue,
                Err(e) => panic!("update deployment: {e}"),
            }
        }
        panic!("update deployment: too many conflicts")
    }
}

/// Poll `f` until it returns `Some`, or panic after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn is_ready(p: &Pod) -> bool {
    kapsel_controller::podutil::is_ready(p)
}

pub fn image(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

pub fn live(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
}

/// A Deployment of `replicas` pods of `image`, app label = name.
pub fn deployment(
    name: &str,
    replicas: i32,
    image: &str,
    surge: IntOrString,
    unavailable: IntOrString,
) -> Deployment {
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
        strategy: Some(DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(surge),
                max_unavailable: Some(unavailable),
            }),
        }),
        ..Default::default()
    });
    d
}

pub fn set_image(d: &mut Deployment, image: &str) {
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
        .image = Some(image.into());
}
