//! kapsel-agent: the node agent. It registers the Node, renews its Lease and posts node
//! status; watches the pods bound to the node and converges the container runtime to them
//! (one worker per pod); runs probes; keeps and serves container logs; evicts under memory
//! pressure. It talks to the control plane only over the gRPC component API and only dials
//! out ([`control`]).
//!
//! Modules: [`config`], [`node`] (registration, lease, status), [`sync`] (pod workers),
//! [`actions`] (pure `compute_pod_actions`), [`status`] (pure pod status), [`probes`],
//! [`backoff`], [`logs`], [`volumes`], [`env`], [`images`], [`control`], [`hollow`].

pub mod actions;
pub mod backoff;
pub mod certs;
pub mod config;
pub mod control;
pub mod env;
pub mod error;
pub mod evict;
pub mod handoff;
pub mod hollow;
pub mod images;
pub mod logs;
pub mod logserver;
pub mod metrics;
pub mod model;
pub mod net;
pub mod node;
pub mod probes;
pub mod profile;
pub mod stats;
pub mod status;
pub mod sync;
pub mod volumes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kapsel_runtime::Runtime;

pub use config::{AgentConfig, BackoffConfig};
pub use control::{ControlPlane, GrpcControlPlane};
pub use error::{AgentError, Result};
pub use images::{DirImages, HollowImages, Images, PullRequest, StoreImages};

/// Lock a mutex, ignoring poisoning (the data is plain state, still usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A configured agent, ready to run.
pub struct Agent {
    ctx: Arc<sync::Ctx>,
}

impl Agent {
    pub fn new(
        cfg: AgentConfig,
        cp: Arc<dyn ControlPlane>,
        rt: Arc<dyn Runtime>,
        images: Arc<dyn Images>,
    ) -> Result<Self> {
        cfg.validate()?;
        let host_ip = cfg.node_ip.clone().unwrap_or_else(node::detect_node_ip);
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| AgentError::Io {
            context: format!("create {}", cfg.data_dir.display()),
            source: e,
        })?;
        let net = match (&cfg.pod_network, cfg.hollow) {
            (Some(o), false) => Some(net::PodNetwork::from_agent(o, &cfg, &host_ip)?),
            _ => None,
        };
        // The REST client of the endpoint hand-off (only where a service proxy runs).
        let api = match &net {
            Some(_) => Some(net::api_client(&cfg, cp.as_ref())?),
            None => None,
        };
        Ok(Agent {
            ctx: Arc::new(sync::Ctx {
                cfg: Arc::new(cfg),
                cp,
                rt,
                images,
                pumps: logs::Pumps::default(),
                index: Arc::default(),
                health: Arc::default(),
                evictions: Mutex::default(),
                qos: Mutex::default(),
                host_ip,
                pod_images: Mutex::default(),
                net,
                api,
                profiles: Default::default(),
            }),
        })
    }

    /// An agent talking gRPC to `cfg.server`.
    pub fn connect(
        cfg: AgentConfig,
        rt: Arc<dyn Runtime>,
        images: Arc<dyn Images>,
    ) -> Result<Self> {
        let cp = GrpcControlPlane::new(&cfg.server, cfg.token.as_deref())?;
        Self::new(cfg, Arc::new(cp), rt, images)
    }

    pub fn config(&self) -> &AgentConfig {
        &self.ctx.cfg
    }

    /// Run until the future is dropped (or a fatal error at startup).
    pub async fn run(self) -> Result<()> {
        let ctx = self.ctx;
        let mgr = sync::PodManager::new(ctx.clone()).await?;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(node::run_heartbeat(
            ctx.cfg.clone(),
            ctx.cp.clone(),
            ctx.health.clone(),
        ));
        tasks.spawn(ctx.pumps.clone().run(Duration::from_millis(200)));
        let logsvc: Arc<dyn control::LogServer> = Arc::new(
            logserver::LogService::new(ctx.log_root(), ctx.index.clone(), ctx.cfg.log_max_files)
                .with_runtime(ctx.rt.clone()),
        );
        let (cp, node) = (ctx.cp.clone(), ctx.cfg.node_name.clone());
        tasks.spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match cp.serve_logs(&node, logsvc.clone()).await {
                    Ok(()) => delay = Duration::from_millis(200),
                    Err(e) => tracing::debug!(error = %e, "log relay stream ended"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
        if !ctx.cfg.hollow && ctx.cfg.eviction_memory_available > 0 {
            tasks.spawn(evict::run(ctx.clone()));
        }
        tasks.spawn(stats::run(ctx.clone(), ctx.cfg.stats_interval));
        if let Some(n) = &ctx.net {
            tasks.spawn(n.clone().run(net::api_client(&ctx.cfg, ctx.cp.as_ref())?));
            // Services: the node's nftables table ip kapsel-svc (net::proxy).
            let (programmed, rx) = tokio::sync::watch::channel(net::proxy::Programmed::default());
            // What it has programmed, published on the Node for the endpoint hand-off.
            tasks.spawn(handoff::publish(
                net::api_client(&ctx.cfg, ctx.cp.as_ref())?,
                ctx.cfg.node_name.clone(),
                rx,
            ));
            tasks.spawn(net::proxy::run(
                net::api_client(&ctx.cfg, ctx.cp.as_ref())?,
                ctx.cfg.node_name.clone(),
                net::proxy::TABLE.into(),
                Arc::new(net::nft::NftCli::default()),
                programmed,
            ));
            // Cluster DNS on the pod bridge's address (net::dns).
            tasks.spawn(net::dns::run(
                net::api_client(&ctx.cfg, ctx.cp.as_ref())?,
                n.clone(),
            ));
        }
        if !ctx.cfg.hollow {
            tasks.spawn(images::run_gc(ctx.clone()));
        }
        tasks.spawn(mgr.run());
        // The tasks loop forever; if one ends, something is badly wrong.
        if let Some(Err(e)) = tasks.join_next().await {
            return Err(AgentError::Control(format!("agent task failed: {e}")));
        }
        Ok(())
    }

    /// Run on a task; the agent stops when the handle is dropped.
    pub fn spawn(self) -> AgentHandle {
        AgentHandle {
            task: tokio::spawn(self.run()),
        }
    }
}

/// A running agent; dropping it stops it (containers keep running, as after a crash).
pub struct AgentHandle {
    task: tokio::task::JoinHandle<Result<()>>,
}

impl AgentHandle {
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
