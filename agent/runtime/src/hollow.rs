//! [`HollowRuntime`]: a FAKE runtime that starts nothing. It records containers as running so the
//! agent can be scale-tested without root; tests make containers fail or exit on command.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Result, RuntimeError};
use crate::spec::{
    ContainerId, ContainerSpec, ContainerState, ContainerStats, ContainerStatus, ExecProcess,
    ExecSpec, ExitStatus, SandboxId, SandboxSpec,
};
use crate::Runtime;

#[derive(Debug, Clone)]
struct FakeContainer {
    sandbox: Option<SandboxId>,
    status: ContainerStatus,
    created_unix_ms: u64,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Inner {
    sandboxes: HashMap<SandboxId, SandboxSpec>,
    containers: HashMap<ContainerId, FakeContainer>,
    /// Next `create` of this id fails with this error message.
    fail_create: HashMap<ContainerId, String>,
}

/// A fake runtime for scale tests: no processes, no cgroups, no root. NOT a container runtime.
#[derive(Debug, Default)]
pub struct HollowRuntime {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl HollowRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the next `create` of `id` fail (as `InitFailed` with `message`).
    pub fn fail_next_create(&self, id: &ContainerId, message: &str) {
        self.lock()
            .fail_create
            .insert(id.clone(), message.to_string());
    }

    /// Make a (running or created) container exit with `status`.
    pub fn exit(&self, id: &ContainerId, status: ExitStatus) -> Result<()> {
        let mut inner = self.lock();
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        c.status = ContainerStatus::Exited(status);
        self.changed.notify_all();
        Ok(())
    }

    /// Number of containers it holds.
    pub fn len(&self) -> usize {
        self.lock().containers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Runtime for HollowRuntime {
    fn create_sandbox(&self, spec: &SandboxSpec) -> Result<()> {
        let mut inner = self.lock();
        if inner.sandboxes.contains_key(&spec.id) {
            return Err(RuntimeError::AlreadyExists {
                kind: "sandbox",
                id: spec.id.to_string(),
            });
        }
        inner.sandboxes.insert(spec.id.clone(), spec.clone());
        Ok(())
    }

    fn remove_sandbox(&self, id: &SandboxId) -> Result<()> {
        let mut inner = self.lock();
        inner
            .sandboxes
            .remove(id)
            .ok_or_else(|| RuntimeError::SandboxNotFound(id.to_string()))?;
        inner
            .containers
            .retain(|_, c| c.sandbox.as_ref() != Some(id));
        Ok(())
    }

    fn create(&self, spec: &ContainerSpec) -> Result<ContainerId> {
        if spec.command.first().is_none_or(|c| c.is_empty()) {
            return Err(RuntimeError::InvalidSpec("missing command".into()));
        }
        let mut inner = self.lock();
        if let Some(msg) = inner.fail_create.remove(&spec.id) {
            return Err(RuntimeError::InitFailed {
                step: "hollow".into(),
                message: msg,
            });
        }
        if let Some(sb) = &spec.sandbox {
            if !inner.sandboxes.contains_key(sb) {
                return Err(RuntimeError::SandboxNotFound(sb.to_string()));
            }
        }
        if inner.containers.contains_key(&spec.id) {
            return Err(RuntimeError::AlreadyExists {
                kind: "container",
                id: spec.id.to_string(),
            });
        }
        inner.containers.insert(
            spec.id.clone(),
            FakeContainer {
                sandbox: spec.sandbox.clone(),
                status: ContainerStatus::Created,
                created_unix_ms: now_ms(),
                labels: spec.labels.clone(),
            },
        );
        Ok(spec.id.clone())
    }

    fn start(&self, id: &ContainerId) -> Result<()> {
        let mut inner = self.lock();
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        if c.status != ContainerStatus::Created {
            return Err(RuntimeError::InvalidState {
                id: id.to_string(),
                state: format!("{:?}", c.status),
                needed: "created",
            });
        }
        c.status = ContainerStatus::Running;
        Ok(())
    }

    fn signal(&self, id: &ContainerId, signal: i32) -> Result<()> {
        let mut inner = self.lock();
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        if matches!(
            c.status,
            ContainerStatus::Running | ContainerStatus::Created
        ) && signal != 0
        {
            c.status = ContainerStatus::Exited(ExitStatus {
                code: 128 + signal,
                signal: Some(signal),
                oom_killed: false,
            });
            self.changed.notify_all();
        }
        Ok(())
    }

    fn wait(&self, id: &ContainerId, timeout: Option<Duration>) -> Result<ExitStatus> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut inner = self.lock();
        loop {
            let c = inner
                .containers
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
            if let ContainerStatus::Exited(s) = c.status {
                return Ok(s);
            }
            inner = match deadline {
                None => self.changed.wait(inner).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(RuntimeError::Timeout("container exit"));
                    }
                    self.changed
                        .wait_timeout(inner, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    fn try_wait(&self, id: &ContainerId) -> Result<Option<ExitStatus>> {
        let inner = self.lock();
        let c = inner
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        Ok(match c.status {
            ContainerStatus::Exited(s) => Some(s),
            _ => None,
        })
    }

    fn delete(&self, id: &ContainerId) -> Result<()> {
        self.lock()
            .containers
            .remove(id)
            .map(drop)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    fn list(&self) -> Result<Vec<ContainerState>> {
        let inner = self.lock();
        let mut v: Vec<ContainerState> = inner
            .containers
            .iter()
            .map(|(id, c)| ContainerState {
                id: id.clone(),
                sandbox: c.sandbox.clone(),
                pid: 0,
                status: c.status,
                created_unix_ms: c.created_unix_ms,
                labels: c.labels.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    fn state(&self, id: &ContainerId) -> Result<ContainerState> {
        self.list()?
            .into_iter()
            .find(|c| &c.id == id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    fn stats(&self, id: &ContainerId) -> Result<ContainerStats> {
        self.state(id)?;
        Ok(ContainerStats::default())
    }

    /// Only this process' sandboxes: a new `HollowRuntime` (a restarted agent) has none.
    fn list_sandboxes(&self) -> Result<Vec<SandboxId>> {
        let mut v: Vec<SandboxId> = self.lock().sandboxes.keys().cloned().collect();
        v.sort();
        Ok(v)
    }

    /// Runs nothing: a running container "execs" by writing the argv (space-joined, one line)
    /// to stdout and exiting 0 (1 when the command is `false`, to test exit codes).
    fn exec(&self, id: &ContainerId, spec: ExecSpec) -> Result<ExecProcess> {
        let st = self.state(id)?;
        if st.status != ContainerStatus::Running {
            return Err(RuntimeError::InvalidState {
                id: id.to_string(),
                state: format!("{:?}", st.status),
                needed: "running",
            });
        }
        if spec.command.is_empty() {
            return Err(RuntimeError::InvalidSpec("exec needs a command".into()));
        }
        let mut out = std::fs::File::from(spec.stdout);
        std::io::Write::write_all(&mut out, format!("{}\n", spec.command.join(" ")).as_bytes())
            .map_err(|source| RuntimeError::Io {
                context: "hollow exec output".into(),
                source,
            })?;
        Ok(ExecProcess::exited(i32::from(spec.command[0] == "false")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> ContainerSpec {
        ContainerSpec::new(
            ContainerId::new(id).unwrap(),
            vec!["/img".into()],
            vec!["/bin/true".into()],
        )
    }

    #[test]
    fn hollow_lifecycle_and_exit_on_command() {
        let rt = HollowRuntime::new();
        let id = rt.create(&spec("c1")).unwrap();
        assert_eq!(rt.state(&id).unwrap().status, ContainerStatus::Created);
        rt.start(&id).unwrap();
        assert_eq!(rt.state(&id).unwrap().status, ContainerStatus::Running);
        assert_eq!(rt.try_wait(&id).unwrap(), None);
        assert!(matches!(
            rt.wait(&id, Some(Duration::from_millis(10))),
            Err(RuntimeError::Timeout(_))
        ));
        let st = ExitStatus {
            code: 137,
            signal: Some(9),
            oom_killed: true,
        };
        rt.exit(&id, st).unwrap();
        assert_eq!(rt.wait(&id, None).unwrap(), st);
        rt.delete(&id).unwrap();
        assert!(rt.is_empty());
    }

    #[test]
    fn hollow_fails_on_command_and_checks_sandboxes() {
        let rt = HollowRuntime::new();
        let id = ContainerId::new("c2").unwrap();
        rt.fail_next_create(&id, "boom");
        assert!(matches!(
            rt.create(&spec("c2")),
            Err(RuntimeError::InitFailed { .. })
        ));
        rt.create(&spec("c2")).unwrap();
        let mut s = spec("c3");
        s.sandbox = Some(SandboxId::new("nope").unwrap());
        assert!(matches!(
            rt.create(&s),
            Err(RuntimeError::SandboxNotFound(_))
        ));
        let mut s = spec("c4");
        s.command.clear();
        assert!(rt.create(&s).unwrap_err().is_spec_error());
    }

    #[test]
    fn hollow_lists_only_its_own_sandboxes() {
        let rt = HollowRuntime::new();
        let sb = |n: &str| SandboxSpec {
            id: SandboxId::new(n).unwrap(),
            hostname: n.into(),
            resources: Default::default(),
            share_pid: false,
            host_network: false,
        };
        rt.create_sandbox(&sb("p-b")).unwrap();
        rt.create_sandbox(&sb("p-a")).unwrap();
        let ids = |v: Vec<SandboxId>| v.iter().map(|s| s.as_str().to_string()).collect::<Vec<_>>();
        assert_eq!(ids(rt.list_sandboxes().unwrap()), ["p-a", "p-b"]);
        assert!(rt.sandbox_exists(&SandboxId::new("p-a").unwrap()).unwrap());
        rt.remove_sandbox(&SandboxId::new("p-a").unwrap()).unwrap();
        assert_eq!(ids(rt.list_sandboxes().unwrap()), ["p-b"]);
        // A restarted agent's runtime: nothing survived the process.
        assert!(HollowRuntime::new().list_sandboxes().unwrap().is_empty());
    }

    #[test]
    fn hollow_signal_terminates() {
        let rt = HollowRuntime::new();
        let id = rt.create(&spec("c5")).unwrap();
        rt.start(&id).unwrap();
        rt.signal(&id, libc::SIGTERM).unwrap();
        assert_eq!(rt.wait(&id, None).unwrap().signal, Some(libc::SIGTERM));
    }
}
