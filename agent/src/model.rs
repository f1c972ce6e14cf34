//! What the agent knows about a pod's containers: runtime instances ([`Instance`]) and the
//! worker's memory ([`PodMemo`]: backoff, last errors, probe results). Pure data.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use kapsel_api::{Container, Pod};
use kapsel_runtime::{ContainerId, ContainerState, ContainerStatus, SandboxId};

use crate::backoff::Backoff;

pub const LABEL_POD_UID: &str = "kapsel.pod.uid";
pub const LABEL_POD_NAME: &str = "kapsel.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "kapsel.pod.namespace";
pub const LABEL_CONTAINER: &str = "kapsel.container.name";
pub const LABEL_ATTEMPT: &str = "kapsel.container.attempt";
pub const LABEL_INIT: &str = "kapsel.container.init";
/// The image ID the container was created from (`containerStatuses[].imageID`).
pub const LABEL_IMAGE_ID: &str = "kapsel.container.image-id";

/// The runtime sandbox id of a pod.
pub fn sandbox_id(uid: &str) -> Option<SandboxId> {
    SandboxId::new(format!("p-{uid}")).ok()
}

/// The runtime id of one instance of a container: `<uid>-<name>-<attempt>`.
pub fn container_id(uid: &str, name: &str, attempt: u32) -> Option<ContainerId> {
    ContainerId::new(format!("{uid}-{name}-{attempt}")).ok()
}

/// One runtime container of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: ContainerId,
    pub name: String,
    pub init: bool,
    pub attempt: u32,
    pub pid: i32,
    pub state: InstanceState,
    pub created_ms: u64,
    /// `registry/repository@sha256:…` of its image.
    pub image_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    Created,
    Running,
    Exited {
        code: i32,
        signal: Option<i32>,
        oom: bool,
    },
}

impl InstanceState {
    pub fn from_runtime(s: ContainerStatus) -> Self {
        match s {
            ContainerStatus::Created => InstanceState::Created,
            ContainerStatus::Running => InstanceState::Running,
            ContainerStatus::Exited(e) => InstanceState::Exited {
                code: e.code,
                signal: e.signal,
                oom: e.oom_killed,
            },
            // The supervisor vanished without an exit status: treat as a failed exit.
            ContainerStatus::Unknown => InstanceState::Exited {
                code: 255,
                signal: None,
                oom: false,
            },
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self {
            InstanceState::Exited { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self, InstanceState::Running)
    }
}

impl Instance {
    /// Rebuild from the runtime's state (labels written at create time). `None` for containers
    /// the agent did not create.
    pub fn from_runtime(c: &ContainerState) -> Option<(String, Instance)> {
        let uid = c.labels.get(LABEL_POD_UID)?.clone();
        let name = c.labels.get(LABEL_CONTAINER)?.clone();
        let attempt = c.labels.get(LABEL_ATTEMPT)?.parse().ok()?;
        Some((
            uid,
            Instance {
                id: c.id.clone(),
                name,
                init: c.labels.get(LABEL_INIT).is_some_and(|v| v == "true"),
                attempt,
                pid: c.pid,
                state: InstanceState::from_runtime(c.status),
                created_ms: c.created_unix_ms,
                image_id: c.labels.get(LABEL_IMAGE_ID).cloned().unwrap_or_default(),
            },
        ))
    }

    pub fn labels(pod: &Pod, name: &str, init: bool, attempt: u32) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        l.insert(LABEL_POD_UID.into(), pod.metadata.uid().into());
        l.insert(LABEL_POD_NAME.into(), pod.metadata.name().into());
        l.insert(LABEL_POD_NAMESPACE.into(), pod.metadata.namespace().into());
        l.insert(LABEL_CONTAINER.into(), name.into());
        l.insert(LABEL_ATTEMPT.into(), attempt.to_string());
        l.insert(LABEL_INIT.into(), init.to_string());
        l
    }
}

/// The newest and the previous instance of container `name`.
pub fn latest<'a>(
    instances: &'a [Instance],
    name: &str,
    init: bool,
) -> (Option<&'a Instance>, Option<&'a Instance>) {
    let mut v: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.name == name && i.init == init)
        .collect();
    v.sort_by_key(|i| i.attempt);
    let last = v.pop();
    (last, v.pop())
}

/// Probe results of one instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeState {
    /// Readiness (true when no readiness probe).
    pub ready: bool,
    /// Startup passed (true when no startup probe).
    pub started: bool,
    /// Liveness or startup failed: restart it.
    pub kill: Option<KillCause>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillCause {
    Liveness,
    Startup,
}

/// A create/start failure shown as the waiting reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartError {
    /// `CreateContainerConfigError`, `RunContainerError`, `ErrImagePull`, ...
    pub reason: String,
    pub message: String,
}

/// Per-container memory of a pod worker.
#[derive(Clone, Debug, Default)]
pub struct ContainerMemo {
    pub backoff: Backoff,
    /// No (re)start before this time (unix ms).
    pub restart_at_ms: u64,
    pub error: Option<StartError>,
    /// Image pull backoff (kept apart from the crash backoff, as the kubelet does).
    pub pull_backoff: Backoff,
}

/// Everything the worker remembers between syncs.
#[derive(Clone, Debug, Default)]
pub struct PodMemo {
    /// By `(init, name)`.
    pub containers: HashMap<(bool, String), ContainerMemo>,
    /// Probe results by instance id.
    pub probes: HashMap<ContainerId, ProbeState>,
    /// Exits already accounted for (backoff computed).
    pub exits_seen: HashSet<ContainerId>,
    /// When each exit was first seen (unix ms): the runtime does not record finish times.
    pub finished_ms: HashMap<ContainerId, u64>,
    /// Evicted: the message.
    pub evicted: Option<String>,
    /// When the agent first saw the pod (unix ms).
    pub start_ms: u64,
}

impl PodMemo {
    pub fn container(&mut self, init: bool, name: &str) -> &mut ContainerMemo {
        self.containers.entry((init, name.to_string())).or_default()
    }

    pub fn get(&self, init: bool, name: &str) -> Option<&ContainerMemo> {
        self.containers.get(&(init, name.to_string()))
    }

    pub fn probe(&self, id: &ContainerId) -> Option<&ProbeState> {
        self.probes.get(id)
    }
}

/// `restartPolicy` of the pod (default Always).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Should a container that exited with `code` run again?
pub fn should_restart(policy: &str, init: bool, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        // Init containers that succeeded are done even under Always.
        _ if init => code != 0,
        _ => true,
    }
}

pub fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map_or(&[], |s| s.init_containers.as_slice())
}

pub fn app_containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map_or(&[], |s| s.containers.as_slice())
}

/// The grace period of a deletion: `deletionGracePeriodSeconds`, else the spec's, else 30 s.
pub fn grace_period(pod: &Pod) -> Duration {
    let s = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// Kubernetes' QoS class.
pub fn qos_class(pod: &Pod) -> &'static str {
    let all: Vec<&Container> = init_containers(pod)
        .iter()
        .chain(app_containers(pod))
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let r = c.resources.clone().unwrap_or_default();
        if !r.requests.is_empty() || !r.limits.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let lim = r.limits.get(res);
            let req = r.requests.get(res).or(lim);
            match (lim, req) {
                (Some(l), Some(q)) if l.cmp_value(q).is_ok_and(|o| o.is_eq()) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
