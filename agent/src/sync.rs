//! The pod sync loop: one worker task per pod, level-triggered against the desired pod from the
//! watch. Each pass refreshes the runtime state, runs [`compute_pod_actions`], executes the
//! actions, and posts the status ([`crate::status::pod_status`]) when it changed. Deletion runs
//! preStop → SIGTERM → grace period → SIGKILL, cleans up, and finalizes the pod object.
//!
//! On start the [`PodManager`] adopts what the runtime already runs: containers of pods that are
//! still desired keep running (same pid, same restart count); everything else is killed and
//! removed once the first full pod list has arrived.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kapsel_api::{Container, Event, EventSource, ObjectMeta, ObjectReference, Pod, PodStatus};
use kapsel_runtime::{ContainerId, ContainerSpec, Resources, Runtime, RuntimeError, SandboxSpec};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::actions::{compute_pod_actions, Action};
use crate::config::AgentConfig;
use crate::control::ControlPlane;
use crate::env::{self, EnvSources};
use crate::error::{AgentError, Result};
use crate::images::Images;
use crate::logs::{self, LogPump, Pumps};
use crate::model::{
    app_containers, container_id, grace_period, init_containers, now_ms, restart_policy,
    sandbox_id, should_restart, Instance, InstanceState, KillCause, PodMemo, StartError,
};
use crate::node::NodeHealth;
use crate::probes::{self, ProbeResults, Target};
use crate::{lock, status, volumes};

/// What the log server needs to know about a pod.
#[derive(Clone, Debug, Default)]
pub struct PodLogInfo {
    pub uid: String,
    /// App containers first, then init containers.
    pub containers: Vec<String>,
    pub app_containers: usize,
    /// Newest attempt of each container and whether it is running.
    pub latest: HashMap<String, (u32, bool)>,
}

/// Pods by (namespace, name), for the log server.
pub type PodIndex = Arc<Mutex<HashMap<(String, String), PodLogInfo>>>;

/// Everything the workers share.
pub struct Ctx {
    pub cfg: Arc<AgentConfig>,
    pub cp: Arc<dyn ControlPlane>,
    pub rt: Arc<dyn Runtime>,
    pub images: Arc<dyn Images>,
    pub pumps: Pumps,
    pub index: PodIndex,
    pub health: Arc<NodeHealth>,
    /// Pods to evict (uid → message), set by the evictor.
    pub evictions: Mutex<HashMap<String, String>>,
    /// QoS class of each pod (uid), for the evictor.
    pub qos: Mutex<HashMap<String, &'static str>>,
    pub host_ip: String,
    /// Images each pod (uid) uses, for image GC.
    pub pod_images: Mutex<HashMap<String, Vec<String>>>,
    /// The pod network (`None`: hollow, or turned off; pods then have only `lo`).
    pub net: Option<Arc<crate::net::PodNetwork>>,
    /// REST client of the endpoint hand-off ([`crate::handoff`]); `None` without a pod network.
    pub api: Option<kapsel_api::client::Client>,
    /// The cluster's ImageProfiles (a watch started on the first container).
    pub profiles: crate::profile::ProfileCache,
}

/// How long a container waits for the first list of ImageProfiles before it fails (and is
/// retried) with `CreateContainerConfigError`.
const PROFILE_LIST_WAIT: Duration = Duration::from_secs(10);

impl Ctx {
    pub fn log_root(&self) -> PathBuf {
        self.cfg.data_dir.join("logs")
    }
    pub fn pods_root(&self) -> PathBuf {
        self.cfg.data_dir.join("pods")
    }
    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_root().join(uid)
    }
    fn can_mount(&self) -> bool {
        // SAFETY: geteuid has no preconditions.
        !self.cfg.hollow && unsafe { libc::geteuid() } == 0
    }

    /// Post a Warning/Normal event about `pod` (fire and forget).
    pub(crate) fn event(&self, pod: &Pod, type_: &str, reason: &str, message: String) {
        let now = crate::node::now();
        let ev = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", pod.metadata.name())),
                namespace: Some(pod.metadata.namespace().to_string()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(pod.metadata.namespace().into()),
                name: Some(pod.metadata.name().into()),
                uid: Some(pod.metadata.uid().into()),
                api_version: Some("v1".into()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            source: Some(EventSource {
                component: Some("kapsel-agent".into()),
                host: Some(self.cfg.node_name.clone()),
            }),
            first_timestamp: Some(now),
            last_timestamp: Some(now),
            count: Some(1),
            type_: Some(type_.into()),
            reporting_component: Some("kapsel-agent".into()),
            reporting_instance: Some(self.cfg.node_name.clone()),
            ..Event::with_meta(ObjectMeta::default())
        };
        let cp = self.cp.clone();
        tokio::spawn(async move {
            if let Err(e) = cp.create_event(&ev).await {
                tracing::debug!(error = %e, "event not recorded");
            }
        });
    }
}

/// `shareProcessNamespace: true`.
fn share_pid(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.share_process_namespace) == Some(true)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::Control(format!("blocking task failed: {e}")))
}

/// The desired state of one pod as the manager tells its worker.
#[derive(Clone, Debug)]
pub enum Desired {
    Pod(Arc<Pod>),
    /// The pod object is gone: kill and clean up.
    Gone,
}

/// One pod's worker.
struct Worker {
    ctx: Arc<Ctx>,
    uid: String,
    rx: watch::Receiver<Desired>,
    instances: Vec<Instance>,
    sandbox: bool,
    memo: PodMemo,
    probes: ProbeResults,
    probe_tasks: HashMap<ContainerId, AbortHandle>,
    killing: HashSet<ContainerId>,
    last_status: Option<PodStatus>,
    /// The pod's IP once its network is up (reported as status.podIP).
    pod_ip: Option<String>,
    /// The last pod network error reported as an event (no event storm while retrying).
    net_error: Option<String>,
    last_pod: Option<Arc<Pod>>,
    volumes: Option<BTreeMap<String, PathBuf>>,
    sources: Option<EnvSources>,
    last_volume_sync: Option<Instant>,
}

impl Worker {
    fn new(
        ctx: Arc<Ctx>,
        uid: String,
        rx: watch::Receiver<Desired>,
        adopted: Vec<Instance>,
        sandbox: bool,
    ) -> Self {
        let mut w = Worker {
            ctx,
            uid,
            rx,
            instances: Vec::new(),
            sandbox,
            memo: PodMemo {
                start_ms: now_ms(),
                ..Default::default()
            },
            probes: ProbeResults::default(),
            probe_tasks: HashMap::new(),
            killing: HashSet::new(),
            last_status: None,
            pod_ip: None,
            net_error: None,
            last_pod: None,
            volumes: None,
            sources: None,
            last_volume_sync: None,
        };
        for i in &adopted {
            if !i.state.is_running() {
                w.memo.exits_seen.insert(i.id.clone());
            }
        }
        w.instances = adopted;
        w
    }

    async fn run(mut self) {
        loop {
            let desired = self.rx.borrow_and_update().clone();
            match desired {
                Desired::Gone => {
                    let grace = self.last_pod.as_deref().map_or(Duration::ZERO, |p| {
                        grace_period(p).min(Duration::from_secs(2))
                    });
                    self.teardown(grace, None).await;
                    return;
                }
                Desired::Pod(p) => {
                    self.last_pod = Some(p.clone());
                    if p.metadata.deletion_timestamp.is_some() {
                        self.terminate(&p).await;
                        return;
                    }
                    if let Err(e) = self.sync(&p).await {
                        tracing::warn!(pod = %p.metadata.name(), error = %e, "pod sync failed");
                    }
                }
            }
            let wake = self.next_wake();
            tokio::select! {
                r = self.rx.changed() => if r.is_err() { return }, // the agent is shutting down
                _ = tokio::time::sleep(wake) => {}
                _ = self.probes.changed.notified() => {}
            }
        }
    }

    fn next_wake(&self) -> Duration {
        let now = now_ms();
        let mut wake = self.ctx.cfg.sync_period;
        if crate::images::backoff_pending(&self.memo, now) {
            return Duration::ZERO; // report ImagePullBackOff right after ErrImagePull
        }
        for m in self.memo.containers.values() {
            if m.restart_at_ms > now {
                wake = wake.min(Duration::from_millis(m.restart_at_ms - now));
            }
        }
        wake
    }

    fn pod_name(&self) -> String {
        self.last_pod
            .as_ref()
            .map(|p| format!("{}/{}", p.metadata.namespace(), p.metadata.name()))
            .unwrap_or_else(|| self.uid.clone())
    }

    /// Ask the runtime about every live instance; account for new exits.
    ///
    /// Every exit goes through here before any status mentions it: its log pump's final
    /// flush runs first, so a reader who sees `terminated` finds all of the output. (An
    /// instance can already be `Exited` without a runtime query — a short-lived container
    /// seen exited right after `start` — so the exit accounting runs even when nothing is
    /// left to query.)
    async fn refresh(&mut self, pod: Option<&Pod>) -> Result<()> {
        let ids: Vec<ContainerId> = self
            .instances
            .iter()
            .filter(|i| !matches!(i.state, InstanceState::Exited { .. }))
            .map(|i| i.id.clone())
            .collect();
        let rt = self.ctx.rt.clone();
        let states = if ids.is_empty() {
            Vec::new()
        } else {
            blocking(move || {
                ids.into_iter()
                    .map(|id| (id.clone(), rt.state(&id)))
                    .collect::<Vec<_>>()
            })
            .await?
        };
        let now = now_ms();
        for (id, st) in states {
            let Some(i) = self.instances.iter_mut().find(|i| i.id == id) else {
                continue;
            };
            match st {
                Ok(s) => {
                    i.state = InstanceState::from_runtime(s.status);
                    i.pid = s.pid;
                }
                Err(RuntimeError::NotFound(_)) => {
                    i.state = InstanceState::Exited {
                        code: 255,
                        signal: None,
                        oom: false,
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        // New exits: backoff, logs, probes.
        let cfg = self.ctx.cfg.clone();
        let policy = pod.map_or("Always", restart_policy).to_string();
        for i in self.instances.clone() {
            let InstanceState::Exited { code, .. } = i.state else {
                continue;
            };
            if !self.memo.exits_seen.insert(i.id.clone()) {
                continue;
            }
            self.memo.finished_ms.insert(i.id.clone(), now);
            if let Some(h) = self.probe_tasks.remove(&i.id) {
                h.abort();
            }
            self.ctx.pumps.finish(&i.id);
            self.killing.remove(&i.id);
            // A container stopped because its pod is being deleted is not restarted: no
            // restart count, no BackOff event.
            let deleting = pod.is_some_and(|p| p.metadata.deletion_timestamp.is_some());
            if !deleting && should_restart(&policy, i.init, code) {
                crate::metrics::container_restarted();
                let ran = Duration::from_millis(now.saturating_sub(i.created_ms));
                let m = self.memo.container(i.init, &i.name);
                let delay = m.backoff.next(&cfg.backoff, ran);
                m.restart_at_ms = now + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                if code != 0 {
                    if let Some(p) = pod {
                        self.ctx.event(
                            p,
                            "Warning",
                            "BackOff",
                            format!(
                                "Back-off restarting failed container {} in pod {}",
                                i.name,
                                p.metadata.name()
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Fetch the ConfigMaps and Secrets the pod uses.
    async fn load_sources(&mut self, pod: &Pod) -> EnvSources {
        let (cms, secrets) = env::references(pod);
        let ns = pod.metadata.namespace();
        let mut src = EnvSources {
            node_name: self.ctx.cfg.node_name.clone(),
            host_ip: self.ctx.host_ip.clone(),
            pod_ip: pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default(),
            ..Default::default()
        };
        {
            let m = lock(&self.ctx.health.machine);
            src.node_cpu_millis = m.cpu_millis;
            src.node_memory_bytes = m.memory_bytes;
        }
        for n in cms {
            match self.ctx.cp.get_config_map(ns, &n).await {
                Ok(Some(c)) => {
                    src.config_maps.insert(n, c);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "reading configmap {ns}/{n}"),
            }
        }
        for n in secrets {
            match self.ctx.cp.get_secret(ns, &n).await {
                Ok(Some(s)) => {
                    src.secrets.insert(n, s);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "reading secret {ns}/{n}"),
            }
        }
        src
    }

    /// Create/refresh volumes (first start, then every `volume_resync`).
    async fn ensure_volumes(
        &mut self,
        pod: &Pod,
        force: bool,
    ) -> Result<BTreeMap<String, PathBuf>> {
        let due = self
            .last_volume_sync
            .is_none_or(|t| t.elapsed() >= self.ctx.cfg.volume_resync);
        if let (Some(v), false, false) = (&self.volumes, force, due) {
            return Ok(v.clone());
        }
        let src = self.load_sources(pod).await;
        self.sources = Some(src.clone());
        let p = pod.clone();
        let dir = self.ctx.pod_dir(&self.uid);
        let can_mount = self.ctx.can_mount();
        let vols = blocking(move || volumes::prepare(&p, &dir, &src, can_mount)).await??;
        self.volumes = Some(vols.clone());
        self.last_volume_sync = Some(Instant::now());
        Ok(vols)
    }

    async fn sync(&mut self, pod: &Pod) -> Result<()> {
        self.refresh(Some(pod)).await?;
        // Before anything is pulled: image GC keeps what the index lists, and a pod's first
        // sync pulls its images before `publish` would index them — an image pulled for a
        // starting pod could be collected before its container used it.
        self.update_index(pod);
        for (id, st) in lock(&self.probes.map).iter() {
            self.memo.probes.insert(id.clone(), *st);
        }
        // Eviction.
        if self.memo.evicted.is_none() {
            let evict = lock(&self.ctx.evictions).remove(&self.uid);
            if let Some(msg) = evict {
                self.ctx.event(pod, "Warning", "Evicted", msg.clone());
                self.memo.evicted = Some(msg);
                let running: Vec<ContainerId> = self
                    .instances
                    .iter()
                    .filter(|i| i.state.is_running())
                    .map(|i| i.id.clone())
                    .collect();
                for id in running {
                    self.kill_now(&id).await;
                }
                self.refresh(Some(pod)).await?;
            }
        }
        for (init, name, msg) in crate::images::enter_pull_backoff(&mut self.memo, now_ms()) {
            let kind = if init { "init container" } else { "container" };
            tracing::debug!(pod = %self.pod_name(), container = %name, "{kind} in image pull backoff");
            self.ctx.event(pod, "Normal", "BackOff", msg);
        }
        let terminal_in_api = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        if self.sandbox {
            self.ensure_network(pod).await?;
        }
        let actions = if terminal_in_api && self.instances.is_empty() {
            Vec::new() // a finished pod is never started again (agent restart, GC'd containers)
        } else {
            compute_pod_actions(pod, self.sandbox, &self.instances, &self.memo, now_ms())
        };
        let mut changed = false;
        for a in actions {
            changed = true;
            match a {
                Action::CreateSandbox => self.create_sandbox(pod).await?,
                Action::Start {
                    name,
                    init,
                    attempt,
                } => self.start(pod, &name, init, attempt).await,
                Action::Kill { id, cause } => self.kill_for_probe(pod, &id, cause),
                Action::Remove { id } => self.remove_instance(pod, &id).await,
            }
        }
        if changed {
            self.refresh(Some(pod)).await?;
        }
        // Projected volumes follow their ConfigMaps and Secrets.
        if self.volumes.is_some()
            && self
                .last_volume_sync
                .is_some_and(|t| t.elapsed() >= self.ctx.cfg.volume_resync)
        {
            if let Err(e) = self.ensure_volumes(pod, true).await {
                tracing::warn!(pod = %self.pod_name(), error = %e, "volume refresh failed");
            }
        }
        self.publish(pod).await;
        Ok(())
    }

    fn update_index(&self, pod: &Pod) {
        lock(&self.ctx.qos).insert(self.uid.clone(), crate::model::qos_class(pod));
        let images = init_containers(pod)
            .iter()
            .chain(app_containers(pod))
            .filter_map(|c| c.image.clone())
            .chain(self.instances.iter().map(|i| i.image_id.clone()))
            .filter(|i| !i.is_empty())
            .collect();
        lock(&self.ctx.pod_images).insert(self.uid.clone(), images);
        let mut containers: Vec<String> =
            app_containers(pod).iter().map(|c| c.name.clone()).collect();
        let apps = containers.len();
        containers.extend(init_containers(pod).iter().map(|c| c.name.clone()));
        let mut latest_map = HashMap::new();
        for i in &self.instances {
            let e = latest_map
                .entry(i.name.clone())
                .or_insert((i.attempt, i.state.is_running()));
            if i.attempt >= e.0 {
                *e = (
                    i.attempt,
                    i.state.is_running() || matches!(i.state, InstanceState::Created),
                );
            }
        }
        lock(&self.ctx.index).insert(
            (
                pod.metadata.namespace().to_string(),
                pod.metadata.name().to_string(),
            ),
            PodLogInfo {
                uid: self.uid.clone(),
                containers,
                app_containers: apps,
                latest: latest_map,
            },
        );
    }

    /// Post the status if it changed.
    async fn publish(&mut self, pod: &Pod) {
        self.update_index(pod);
        let mut base = pod.clone();
        if let Some(last) = &self.last_status {
            // Keep our own transition times and startTime even if the watch lags.
            base.status = Some(last.clone());
        }
        let mut st = status::pod_status(
            &base,
            &self.instances,
            &self.memo,
            &self.ctx.host_ip,
            now_ms(),
        );
        if let Some(ip) = &self.pod_ip {
            st.pod_ip = Some(ip.clone());
            st.pod_ips = vec![kapsel_api::PodIp { ip: ip.clone() }];
        }
        if self.last_status.as_ref() == Some(&st) {
            return;
        }
        let running = |s: Option<&PodStatus>| s.and_then(|s| s.phase.as_deref()) == Some("Running");
        if running(Some(&st))
            && !running(self.last_status.as_ref())
            && self
                .instances
                .iter()
                .all(|i| i.created_ms >= self.memo.start_ms)
        {
            let ms = now_ms().saturating_sub(self.memo.start_ms);
            crate::metrics::pod_started(Duration::from_millis(ms));
        }
        match self.ctx.cp.update_pod_status(pod, &st).await {
            Ok(()) => self.last_status = Some(st),
            Err(AgentError::NotFound(_)) => {}
            Err(e) => tracing::warn!(pod = %self.pod_name(), error = %e, "status update failed"),
        }
    }

    async fn create_sandbox(&mut self, pod: &Pod) -> Result<()> {
        let id = sandbox_id(&self.uid)
            .ok_or_else(|| AgentError::Config(format!("bad pod uid {:?}", self.uid)))?;
        let mut hostname: String = pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| pod.metadata.name().to_string());
        hostname.truncate(63);
        let spec = SandboxSpec {
            id,
            hostname,
            resources: Resources::default(),
            share_pid: share_pid(pod),
            host_network: crate::net::host_network(pod),
        };
        std::fs::create_dir_all(self.ctx.pod_dir(&self.uid)).map_err(|e| AgentError::Io {
            context: "create pod dir".into(),
            source: e,
        })?;
        let rt = self.ctx.rt.clone();
        let t0 = Instant::now();
        match blocking(move || rt.create_sandbox(&spec)).await? {
            Ok(()) | Err(RuntimeError::AlreadyExists { .. }) => {
                tracing::debug!(pod = %self.pod_name(), elapsed_ms = t0.elapsed().as_secs_f64() * 1e3, "sandbox created");
                self.sandbox = true;
                self.ensure_network(pod).await
            }
            Err(e) => {
                self.ctx
                    .event(pod, "Warning", "FailedCreatePodSandBox", e.to_string());
                Err(e.into())
            }
        }
    }

    /// Bring up the pod's network (IP, veth, routes; see [`crate::net`]) once its sandbox
    /// exists; idempotent, so an adopted pod just learns its IP again. Until it succeeds no
    /// container starts (the next sync retries).
    async fn ensure_network(&mut self, pod: &Pod) -> Result<()> {
        let Some(net) = self.ctx.net.clone() else {
            return Ok(());
        };
        if self.pod_ip.is_some() {
            return Ok(());
        }
        let Some(netns) = sandbox_id(&self.uid).and_then(|sb| self.ctx.rt.sandbox_netns(&sb))
        else {
            return Ok(());
        };
        let p = pod.clone();
        match blocking(move || net.setup_pod(&p, &netns)).await? {
            Ok(ip) => {
                self.pod_ip = Some(ip.to_string());
                self.net_error = None;
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                if self.net_error.as_deref() != Some(msg.as_str()) {
                    if !matches!(e, crate::net::NetError::NotReady(_)) {
                        self.ctx.event(
                            pod,
                            "Warning",
                            "FailedCreatePodSandBox",
                            format!("pod network: {msg}"),
                        );
                    }
                    self.net_error = Some(msg);
                }
                Err(e.into())
            }
        }
    }

    fn fail_start(&mut self, pod: &Pod, c: &str, init: bool, reason: &str, message: String) {
        tracing::info!(pod = %self.pod_name(), container = c, reason, %message, "container not started");
        let image_reason = crate::images::is_pull_reason(reason);
        // image failures already have their event (with the registry's message)
        let ev = if image_reason { reason } else { &message };
        self.ctx
            .event(pod, "Warning", "Failed", format!("Error: {ev}"));
        let cfg = self.ctx.cfg.clone();
        let m = self.memo.container(init, c);
        let delay = if image_reason {
            m.pull_backoff.next(&cfg.backoff, Duration::ZERO)
        } else {
            m.backoff.next(&cfg.backoff, Duration::ZERO)
        };
        m.restart_at_ms = now_ms() + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        m.error = Some(StartError {
            reason: reason.into(),
            message,
        });
    }

    async fn build_spec(
        &mut self,
        pod: &Pod,
        c: &Container,
        init: bool,
        attempt: u32,
        id: &ContainerId,
    ) -> std::result::Result<(ContainerSpec, Vec<String>), (String, String)> {
        let cfg_err = |e: AgentError| ("CreateContainerConfigError".to_string(), e.to_string());
        let img = crate::images::ensure_for(&self.ctx, &Arc::new(pod.clone()), c).await?;
        // After a config error, read the ConfigMaps/Secrets again (they may exist now).
        let retry = self
            .memo
            .get(init, &c.name)
            .is_some_and(|m| m.error.is_some());
        let vols = self.ensure_volumes(pod, retry).await.map_err(cfg_err)?;
        let src = self.sources.clone().unwrap_or_default();
        let envs = env::resolve(pod, c, &img.env, &src).map_err(cfg_err)?;
        let mounts = volumes::mounts(pod, c, &vols).map_err(cfg_err)?;
        // Command: container command, else the image entrypoint; args likewise (Kubernetes rules).
        let (command, args) = if !c.command.is_empty() {
            (c.command.clone(), c.args.clone())
        } else if !c.args.is_empty() {
            (img.entrypoint.clone(), c.args.clone())
        } else {
            (img.entrypoint.clone(), img.cmd.clone())
        };
        let (command, args) = if command.is_empty() && !args.is_empty() {
            (vec![args[0].clone()], args[1..].to_vec())
        } else {
            (command, args)
        };
        if command.is_empty() {
            return Err((
                "CreateContainerConfigError".into(),
                format!(
                    "no command specified for container {:?} and the image has none",
                    c.name
                ),
            ));
        }
        let log_dir = logs::container_log_dir(
            &self.ctx.log_root(),
            pod.metadata.namespace(),
            pod.metadata.name(),
            &self.uid,
            &c.name,
        );
        std::fs::create_dir_all(&log_dir).map_err(|e| {
            cfg_err(AgentError::Io {
                context: "create log dir".into(),
                source: e,
            })
        })?;
        let mut spec = ContainerSpec::new(id.clone(), img.lower_dirs.clone(), command);
        spec.args = args;
        spec.env = envs.clone();
        spec.sandbox = sandbox_id(&self.uid);
        spec.cwd = c
            .working_dir
            .clone()
            .or(img.working_dir.clone())
            .filter(|w| !w.is_empty())
            .map(PathBuf::from);
        spec.image_user = img.user.clone();
        let psc = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        spec.run_as_user = sc
            .run_as_user
            .or(psc.run_as_user)
            .and_then(|u| u32::try_from(u).ok());
        spec.run_as_group = sc
            .run_as_group
            .or(psc.run_as_group)
            .and_then(|u| u32::try_from(u).ok());
        spec.supplemental_groups = psc
            .supplemental_groups
            .iter()
            .filter_map(|g| u32::try_from(*g).ok())
            .collect();
        spec.run_as_non_root = sc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false);
        spec.privileged = sc.privileged.unwrap_or(false);
        // The ImageProfile of the image, narrowed by the pod's annotations (profile.rs).
        let ctx = self.ctx.clone();
        let profile = self
            .ctx
            .profiles
            .for_image(
                || crate::net::api_client(&ctx.cfg, ctx.cp.as_ref()),
                c.image.as_deref().unwrap_or(""),
                PROFILE_LIST_WAIT,
            )
            .await
            .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        let confinement = crate::profile::effective(
            profile.as_deref(),
            &pod.metadata.annotations,
            &c.name,
            sc.read_only_root_filesystem.unwrap_or(false),
        )
        .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        spec.read_only_rootfs = confinement.read_only_rootfs;
        spec.landlock = confinement.landlock;
        if let Some(caps) = &sc.capabilities {
            spec.capabilities.add = caps.add.clone();
            spec.capabilities.drop = caps.drop.clone();
        }
        if sc.allow_privilege_escalation == Some(true) {
            spec.no_new_privs = false;
        }
        let seccomp = sc.seccomp_profile.or(psc.seccomp_profile).map(|s| s.type_);
        if seccomp.as_deref() == Some("Unconfined") {
            spec.seccomp = kapsel_runtime::SeccompProfile::Unconfined;
        }
        if let Some(r) = &c.resources {
            spec.resources.memory_limit = r
                .limits
                .get("memory")
                .and_then(|q| q.value().ok())
                .and_then(|v| u64::try_from(v).ok());
            spec.resources.cpu_limit_millis = r
                .limits
                .get("cpu")
                .and_then(|q| q.milli_value().ok())
                .and_then(|v| u64::try_from(v).ok());
            spec.resources.cpu_request_millis = r
                .requests
                .get("cpu")
                .or_else(|| r.limits.get("cpu"))
                .and_then(|q| q.milli_value().ok())
                .and_then(|v| u64::try_from(v).ok());
        }
        spec.mounts = mounts;
        spec.share_process_namespace = share_pid(pod);
        if let Some(h) = pod.spec.as_ref().and_then(|s| s.host_users) {
            spec.host_users = h;
        }
        spec.etc_hosts = Some(format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
            pod.metadata.name()
        ));
        let dns_ip = self
            .ctx
            .net
            .as_deref()
            .and_then(crate::net::dns::node_dns_ip);
        spec.resolv_conf =
            crate::net::dns::pod_resolv_conf(pod, dns_ip, crate::net::dns::CLUSTER_DOMAIN)
                .or_else(|| std::fs::read_to_string("/etc/resolv.conf").ok());
        spec.stdout_path = Some(logs::raw_path(&log_dir, attempt, "stdout"));
        spec.stderr_path = Some(logs::raw_path(&log_dir, attempt, "stderr"));
        spec.labels = Instance::labels(pod, &c.name, init, attempt);
        if let Some(p) = confinement.profile {
            spec.labels.insert(crate::profile::PROFILE_LABEL.into(), p);
        }
        spec.labels
            .insert(crate::model::LABEL_IMAGE_ID.into(), img.image_id.clone());
        Ok((spec, envs))
    }

    async fn start(&mut self, pod: &Pod, name: &str, init: bool, attempt: u32) {
        let list = if init {
            init_containers(pod)
        } else {
            app_containers(pod)
        };
        let Some(c) = list.iter().find(|c| c.name == name).cloned() else {
            return;
        };
        let Some(id) = container_id(&self.uid, name, attempt) else {
            self.fail_start(
                pod,
                name,
                init,
                "CreateContainerConfigError",
                format!("container name {name:?} gives no valid id"),
            );
            return;
        };
        let (spec, envs) = match self.build_spec(pod, &c, init, attempt, &id).await {
            Ok(s) => s,
            Err((reason, msg)) => {
                self.fail_start(pod, name, init, &reason, msg);
                return;
            }
        };
        let image_id = spec
            .labels
            .get(crate::model::LABEL_IMAGE_ID)
            .cloned()
            .unwrap_or_default();
        let rt = self.ctx.rt.clone();
        let id2 = id.clone();
        let t0 = Instant::now();
        let res = blocking(move || -> std::result::Result<(), RuntimeError> {
            rt.create(&spec)?;
            if let Err(e) = rt.start(&id2) {
                // Nothing half-made stays behind.
                let _ = rt.delete(&id2);
                return Err(e);
            }
            Ok(())
        })
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let reason = if e.is_spec_error() {
                    "CreateContainerConfigError"
                } else {
                    "RunContainerError"
                };
                self.fail_start(pod, name, init, reason, e.to_string());
                return;
            }
            Err(e) => {
                self.fail_start(pod, name, init, "RunContainerError", e.to_string());
                return;
            }
        }
        tracing::debug!(pod = %self.pod_name(), container = name, elapsed_ms = t0.elapsed().as_secs_f64() * 1e3, "container created and started");
        crate::metrics::container_started();
        self.ctx.event(
            pod,
            "Normal",
            "Created",
            format!("Created container {name}"),
        );
        self.ctx.event(
            pod,
            "Normal",
            "Started",
            format!("Started container {name}"),
        );
        self.memo.container(init, name).error = None;
        let now = now_ms();
        self.instances.push(Instance {
            id: id.clone(),
            name: name.into(),
            init,
            attempt,
            pid: 0,
            state: InstanceState::Running,
            created_ms: now,
            image_id,
        });
        // Learn the pid (for probes) right away.
        let rt = self.ctx.rt.clone();
        let id3 = id.clone();
        if let Ok(Ok(st)) = blocking(move || rt.state(&id3)).await {
            if let Some(i) = self.instances.iter_mut().find(|i| i.id == id) {
                i.pid = st.pid;
                i.created_ms = st.created_unix_ms;
                i.state = InstanceState::from_runtime(st.status);
            }
        }
        self.track(pod, &c, &id, attempt, envs);
    }

    /// Log pump and probes of a running instance (new or adopted).
    fn track(
        &mut self,
        pod: &Pod,
        c: &Container,
        id: &ContainerId,
        attempt: u32,
        env: Vec<String>,
    ) {
        let log_dir = logs::container_log_dir(
            &self.ctx.log_root(),
            pod.metadata.namespace(),
            pod.metadata.name(),
            &self.uid,
            &c.name,
        );
        self.ctx.pumps.add(
            id.clone(),
            LogPump::new(
                log_dir,
                attempt,
                self.ctx.cfg.log_max_bytes,
                self.ctx.cfg.log_max_files,
            ),
        );
        let has_probes =
            c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some();
        if has_probes && !self.probe_tasks.contains_key(id) {
            let pid = self
                .instances
                .iter()
                .find(|i| &i.id == id)
                .map_or(0, |i| i.pid);
            let t = Target {
                pid,
                env,
                hollow_never_ready: pod
                    .metadata
                    .annotations
                    .get("hollow.kapsel.io/never-ready")
                    .is_some_and(|v| v == "true"),
                exec: Some((self.ctx.rt.clone(), id.clone())),
            };
            let report: probes::FailureReporter = {
                let (ctx, pod) = (self.ctx.clone(), pod.clone());
                Arc::new(move |msg| ctx.event(&pod, "Warning", "Unhealthy", msg))
            };
            let h = tokio::spawn(probes::run_probes(
                c.clone(),
                t,
                id.clone(),
                self.probes.clone(),
                report,
            ));
            self.probe_tasks.insert(id.clone(), h.abort_handle());
        }
    }

    fn kill_for_probe(&mut self, pod: &Pod, id: &ContainerId, cause: KillCause) {
        if let Some(s) = lock(&self.probes.map).get_mut(id) {
            s.kill = None;
        }
        self.memo.probes.remove(id);
        if !self.killing.insert(id.clone()) {
            return;
        }
        let name = self
            .instances
            .iter()
            .find(|i| &i.id == id)
            .map(|i| i.name.clone())
            .unwrap_or_default();
        let what = match cause {
            KillCause::Liveness => "liveness",
            KillCause::Startup => "startup",
        };
        self.ctx.event(
            pod,
            "Normal",
            "Killing",
            format!("Container {name} failed {what} probe, will be restarted"),
        );
        let rt = self.ctx.rt.clone();
        let grace = grace_period(pod);
        let id = id.clone();
        let notify = self.probes.changed.clone();
        tokio::spawn(async move {
            stop_container(rt, id, grace).await;
            notify.notify_one();
        });
    }

    async fn kill_now(&mut self, id: &ContainerId) {
        stop_container(self.ctx.rt.clone(), id.clone(), Duration::ZERO).await;
    }

    async fn remove_instance(&mut self, pod: &Pod, id: &ContainerId) {
        let rt = self.ctx.rt.clone();
        let id2 = id.clone();
        match blocking(move || rt.delete(&id2)).await {
            Ok(Ok(())) | Ok(Err(RuntimeError::NotFound(_))) => {}
            Ok(Err(e)) => {
                tracing::warn!(container = %id, error = %e, "removing old container");
                return;
            }
            Err(_) => return,
        }
        if let Some(i) = self.instances.iter().find(|i| &i.id == id).cloned() {
            let dir = logs::container_log_dir(
                &self.ctx.log_root(),
                pod.metadata.namespace(),
                pod.metadata.name(),
                &self.uid,
                &i.name,
            );
            if let Ok(rd) = std::fs::read_dir(&dir) {
                let prefix = format!("{}.", i.attempt);
                for e in rd.filter_map(|e| e.ok()) {
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        self.instances.retain(|i| &i.id != id);
        self.memo.probes.remove(id);
        lock(&self.probes.map).remove(id);
    }

    /// Graceful deletion: preStop, SIGTERM, wait, SIGKILL; final status; clean up; finalize.
    async fn terminate(&mut self, pod: &Pod) {
        let grace = grace_period(pod);
        tracing::info!(pod = %self.pod_name(), ?grace, "terminating pod");
        if let Err(e) = self.refresh(Some(pod)).await {
            tracing::warn!(error = %e, "refresh before termination");
        }
        let deadline = Instant::now() + grace;
        self.hand_off(pod, grace).await;
        let mut stops = Vec::new();
        for i in self
            .instances
            .iter()
            .filter(|i| !matches!(i.state, InstanceState::Exited { .. }))
        {
            let c = init_containers(pod)
                .iter()
                .chain(app_containers(pod))
                .find(|c| c.name == i.name)
                .cloned();
            self.ctx.event(
                pod,
                "Normal",
                "Killing",
                format!("Stopping container {}", i.name),
            );
            let rt = self.ctx.rt.clone();
            let id = i.id.clone();
            let pid = i.pid;
            let env = self
                .sources
                .clone()
                .and_then(|s| c.as_ref().and_then(|c| env::resolve(pod, c, &[], &s).ok()))
                .unwrap_or_default();
            stops.push(async move {
                if let Some(h) = c
                    .as_ref()
                    .and_then(|c| c.lifecycle.as_ref())
                    .and_then(|l| l.pre_stop.clone())
                {
                    let c = c.clone().unwrap_or_default();
                    let t = Target {
                        pid,
                        env,
                        hollow_never_ready: false,
                        exec: Some((rt.clone(), id.clone())),
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    let hook = probes::run_handler(
                        &c,
                        &t,
                        h.exec.as_ref(),
                        h.http_get.as_ref(),
                        h.tcp_socket.as_ref(),
                        left,
                    );
                    let _ = tokio::time::timeout(left, hook).await;
                }
                stop_container(rt, id, deadline.saturating_duration_since(Instant::now())).await;
            });
        }
        futures::future::join_all(stops).await;
        for (_, h) in self.probe_tasks.drain() {
            h.abort();
        }
        let _ = self.refresh(Some(pod)).await;
        // Final status: everything terminated.
        let mut final_pod = pod.clone();
        if let Some(s) = &self.last_status {
            final_pod.status = Some(s.clone());
        }
        let st = status::pod_status(
            &final_pod,
            &self.instances,
            &self.memo,
            &self.ctx.host_ip,
            now_ms(),
        );
        let _ = self.ctx.cp.update_pod_status(pod, &st).await;
        self.cleanup(pod).await;
        // The containers are gone: remove the object (retried; a restarted agent finishes it too).
        let mut delay = Duration::from_millis(100);
        for attempt in 0..10 {
            match self.ctx.cp.finalize_pod_deletion(pod).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(pod = %self.pod_name(), error = %e, attempt, "finalizing the deletion failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Before preStop/SIGTERM: wait until no node's service proxy routes new connections to the
    /// pod ([`crate::handoff`]), bounded by `min(--endpoint-handoff-timeout, grace)`. Counts
    /// against the grace period, like preStop.
    async fn hand_off(&mut self, pod: &Pod, grace: Duration) {
        let limit = crate::handoff::bound(self.ctx.cfg.endpoint_handoff_timeout, grace);
        let running = self
            .instances
            .iter()
            .any(|i| !matches!(i.state, InstanceState::Exited { .. }));
        let Some(api) = self.ctx.api.clone() else {
            return;
        };
        if limit.is_zero() || !running {
            return;
        }
        let ip = self.pod_ip.clone().or_else(|| {
            pod.status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty())
        });
        let started = Instant::now();
        let state = crate::handoff::wait(&api, pod, ip.as_deref(), limit).await;
        let took = started.elapsed();
        if state == crate::handoff::Handoff::Done {
            tracing::info!(pod = %self.pod_name(), ?took, "endpoint hand-off done: no proxy routes to the pod");
        } else {
            let msg = format!(
                "stopping the pod after {:.1} s although {}",
                took.as_secs_f64(),
                crate::handoff::describe(&state)
            );
            tracing::warn!(pod = %self.pod_name(), "endpoint hand-off bound hit: {msg}");
            self.ctx
                .event(pod, "Warning", "EndpointHandoffTimeout", msg);
        }
    }

    /// The pod is gone from the API: stop everything and clean up.
    async fn teardown(&mut self, grace: Duration, _why: Option<&str>) {
        tracing::info!(pod = %self.pod_name(), "cleaning up a pod that no longer exists");
        let _ = self.refresh(None).await;
        let stops: Vec<_> = self
            .instances
            .iter()
            .filter(|i| !matches!(i.state, InstanceState::Exited { .. }))
            .map(|i| stop_container(self.ctx.rt.clone(), i.id.clone(), grace))
            .collect();
        futures::future::join_all(stops).await;
        for (_, h) in self.probe_tasks.drain() {
            h.abort();
        }
        if let Some(p) = self.last_pod.clone() {
            self.cleanup(&p).await;
        } else {
            self.cleanup_runtime().await;
            volumes::cleanup(&self.ctx.pod_dir(&self.uid));
            let suffix = format!("_{}", self.uid);
            if let Ok(rd) = std::fs::read_dir(self.ctx.log_root()) {
                for e in rd.filter_map(|e| e.ok()) {
                    if e.file_name().to_string_lossy().ends_with(&suffix) {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
    }

    async fn cleanup_runtime(&mut self) {
        let rt = self.ctx.rt.clone();
        let ids: Vec<ContainerId> = self.instances.iter().map(|i| i.id.clone()).collect();
        for id in &ids {
            self.ctx.pumps.finish(id);
        }
        let sb = sandbox_id(&self.uid);
        let _ = blocking(move || {
            for id in &ids {
                if let Err(e) = rt.delete(id) {
                    if !matches!(e, RuntimeError::NotFound(_)) {
                        tracing::warn!(container = %id, error = %e, "delete container");
                    }
                }
            }
            if let Some(sb) = sb {
                match rt.remove_sandbox(&sb) {
                    Ok(())
                    | Err(RuntimeError::SandboxNotFound(_))
                    | Err(RuntimeError::NotFound(_)) => {}
                    Err(e) => tracing::warn!(sandbox = %sb, error = %e, "remove sandbox"),
                }
            }
        })
        .await;
        // The sandbox (and with it the pod's netns) is gone: free the IP, drop its rules.
        if let Some(net) = self.ctx.net.clone() {
            let uid = self.uid.clone();
            match blocking(move || net.teardown_pod(&uid)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(pod = %self.pod_name(), error = %e, "pod network teardown")
                }
                Err(e) => {
                    tracing::warn!(pod = %self.pod_name(), error = %e, "pod network teardown task")
                }
            }
        }
        self.pod_ip = None;
        self.instances.clear();
        self.sandbox = false;
    }

    async fn cleanup(&mut self, pod: &Pod) {
        self.cleanup_runtime().await;
        let dir = self.ctx.pod_dir(&self.uid);
        let logs = logs::pod_log_dir(
            &self.ctx.log_root(),
            pod.metadata.namespace(),
            pod.metadata.name(),
            &self.uid,
        );
        let _ = blocking(move || {
            volumes::cleanup(&dir);
            let _ = std::fs::remove_dir_all(&logs);
        })
        .await;
        lock(&self.ctx.qos).remove(&self.uid);
        lock(&self.ctx.pod_images).remove(&self.uid);
        let key = (
            pod.metadata.namespace().to_string(),
            pod.metadata.name().to_string(),
        );
        let mut idx = lock(&self.ctx.index);
        if idx.get(&key).is_some_and(|i| i.uid == self.uid) {
            idx.remove(&key);
        }
    }
}

/// SIGTERM, wait up to `grace`, SIGKILL, wait for the exit.
pub async fn stop_container(rt: Arc<dyn Runtime>, id: ContainerId, grace: Duration) {
    let exited =
        |rt: &Arc<dyn Runtime>, id: &ContainerId| -> bool { !matches!(rt.try_wait(id), Ok(None)) };
    let (rt2, id2) = (rt.clone(), id.clone());
    let done = blocking(move || {
        if exited(&rt2, &id2) {
            return true;
        }
        if !grace.is_zero() {
            let _ = rt2.signal(&id2, libc::SIGTERM);
        }
        false
    })
    .await
    .unwrap_or(true);
    if done {
        return;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        let (rt2, id2) = (rt.clone(), id.clone());
        if blocking(move || exited(&rt2, &id2)).await.unwrap_or(true) {
            return;
        }
    }
    let _ = blocking(move || {
        let _ = rt.signal(&id, libc::SIGKILL);
        let _ = rt.wait(&id, Some(Duration::from_secs(10)));
    })
    .await;
}

/// Owns the workers.
pub struct PodManager {
    ctx: Arc<Ctx>,
    workers: HashMap<String, watch::Sender<Desired>>,
    done_tx: mpsc::UnboundedSender<String>,
    done_rx: mpsc::UnboundedReceiver<String>,
    /// Finished pods (uids) whose late events are ignored; bounded.
    tombstones: HashSet<String>,
    tomb_order: VecDeque<String>,
    /// Runtime containers found at startup, by pod uid, until the first full list.
    adopted: Option<HashMap<String, Vec<Instance>>>,
    /// Pods (uids) whose sandbox the runtime still has at startup.
    adopted_sandboxes: HashSet<String>,
    /// Pods (uids) found at startup with a pod dir or a sandbox: cleaned up after the first
    /// full list unless still desired.
    adopted_dirs: HashSet<String>,
    seen: HashSet<String>,
}

impl PodManager {
    /// Read what the runtime runs (to adopt after the first list).
    pub async fn new(ctx: Arc<Ctx>) -> Result<Self> {
        let rt = ctx.rt.clone();
        let (list, sandboxes) =
            blocking(move || -> Result<_> { Ok((rt.list()?, rt.list_sandboxes()?)) }).await??;
        let adopted_sandboxes: HashSet<String> = sandboxes
            .iter()
            .filter_map(|s| s.as_str().strip_prefix("p-").map(str::to_string))
            .collect();
        let mut adopted: HashMap<String, Vec<Instance>> = HashMap::new();
        for c in &list {
            if let Some((uid, i)) = Instance::from_runtime(c) {
                adopted.entry(uid).or_default().push(i);
            }
        }
        let mut adopted_dirs: HashSet<String> = std::fs::read_dir(ctx.pods_root())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        adopted_dirs.extend(adopted_sandboxes.iter().cloned());
        if !adopted.is_empty() {
            tracing::info!(
                pods = adopted.len(),
                containers = list.len(),
                "found containers from a previous run"
            );
        }
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Ok(PodManager {
            ctx,
            workers: HashMap::new(),
            done_tx,
            done_rx,
            tombstones: HashSet::new(),
            tomb_order: VecDeque::new(),
            adopted: Some(adopted),
            adopted_sandboxes,
            adopted_dirs,
            seen: HashSet::new(),
        })
    }

    fn spawn(&mut self, uid: String, d: Desired) {
        let (instances, sandbox) = match &mut self.adopted {
            Some(a) => {
                let inst = a.remove(&uid).unwrap_or_default();
                // The runtime says whether the pod's sandbox survived the restart.
                self.adopted_dirs.remove(&uid);
                let sb = self.adopted_sandboxes.remove(&uid);
                (inst, sb)
            }
            None => (Vec::new(), false),
        };
        self.spawn_with(uid, d, instances, sandbox);
    }

    fn spawn_with(&mut self, uid: String, d: Desired, instances: Vec<Instance>, sandbox: bool) {
        let (tx, rx) = watch::channel(d.clone());
        let mut w = Worker::new(self.ctx.clone(), uid.clone(), rx, instances, sandbox);
        // Adopted running containers: logs and probes resume.
        if let Desired::Pod(p) = &d {
            for i in w.instances.clone().iter().filter(|i| i.state.is_running()) {
                let list = if i.init {
                    init_containers(p)
                } else {
                    app_containers(p)
                };
                if let Some(c) = list.iter().find(|c| c.name == i.name).cloned() {
                    w.track(p, &c, &i.id, i.attempt, Vec::new());
                }
            }
            // Adopted instances that exited while the agent was away: their output is
            // complete, so move what the pump had not yet moved before any status says so.
            for i in w
                .instances
                .iter()
                .filter(|i| matches!(i.state, InstanceState::Exited { .. }))
            {
                let dir = logs::container_log_dir(
                    &self.ctx.log_root(),
                    p.metadata.namespace(),
                    p.metadata.name(),
                    &uid,
                    &i.name,
                );
                let mut pump = LogPump::new(
                    dir,
                    i.attempt,
                    self.ctx.cfg.log_max_bytes,
                    self.ctx.cfg.log_max_files,
                );
                if let Err(e) = pump.pump(true) {
                    tracing::warn!(error = %e, container = %i.id, "log pump");
                }
            }
        }
        let done = self.done_tx.clone();
        let u = uid.clone();
        tokio::spawn(async move {
            w.run().await;
            let _ = done.send(u);
        });
        self.workers.insert(uid, tx);
    }

    /// A pod bound to this node exists (new or changed).
    pub fn upsert(&mut self, pod: Pod) {
        let uid = pod.metadata.uid().to_string();
        if uid.is_empty() || self.tombstones.contains(&uid) {
            return;
        }
        self.seen.insert(uid.clone());
        let d = Desired::Pod(Arc::new(pod));
        match self.workers.get(&uid) {
            Some(tx) => {
                let _ = tx.send(d);
            }
            None if self.adopted.is_some() => {
                // Before the first full list: start now; adoption data is used.
                self.spawn(uid, d);
            }
            None => self.spawn(uid, d),
        }
    }

    pub fn deleted(&mut self, uid: &str) {
        if let Some(tx) = self.workers.get(uid) {
            let _ = tx.send(Desired::Gone);
        }
    }

    /// The watch delivered every existing pod: the rest are gone; adopted orphans die.
    pub fn synced(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        let gone: Vec<String> = self
            .workers
            .keys()
            .filter(|u| !seen.contains(*u))
            .cloned()
            .collect();
        for u in gone {
            self.deleted(&u);
        }
        if let Some(orphans) = self.adopted.take() {
            for (uid, inst) in orphans {
                tracing::info!(pod_uid = %uid, containers = inst.len(), "killing containers of a pod that no longer exists");
                self.adopted_dirs.remove(&uid);
                self.spawn_with(uid, Desired::Gone, inst, true);
            }
            self.adopted_sandboxes.clear();
            for uid in std::mem::take(&mut self.adopted_dirs) {
                if !self.workers.contains_key(&uid) {
                    self.spawn_with(uid, Desired::Gone, Vec::new(), true);
                }
            }
        }
    }

    /// A worker ended.
    fn reap(&mut self, uid: String) {
        self.workers.remove(&uid);
        if self.tombstones.insert(uid.clone()) {
            self.tomb_order.push_back(uid);
            if self.tomb_order.len() > 10_000 {
                if let Some(old) = self.tomb_order.pop_front() {
                    self.tombstones.remove(&old);
                }
            }
        }
    }

    /// Run the watch → workers loop forever (reopening the watch on errors).
    pub async fn run(mut self) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.ctx.cp.watch_pods(&self.ctx.cfg.node_name).await {
                Ok(mut s) => {
                    use futures::StreamExt;
                    self.seen.clear();
                    loop {
                        tokio::select! {
                            ev = s.next() => match ev {
                                Some(Ok(crate::control::PodUpdate::Upsert(p))) => {
                                    delay = Duration::from_millis(100);
                                    self.upsert(*p)
                                }
                                Some(Ok(crate::control::PodUpdate::Deleted(p))) => self.deleted(p.metadata.uid()),
                                Some(Ok(crate::control::PodUpdate::Synced)) => self.synced(),
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "pod watch ended");
                                    break;
                                }
                                None => break,
                            },
                            Some(uid) = self.done_rx.recv() => self.reap(uid),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch pods"),
            }
            let until = tokio::time::Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    Some(uid) = self.done_rx.recv() => self.reap(uid),
                }
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}
