//! kapsel's built-in container runtime (Linux only): namespaces, cgroups v1/v2, overlayfs +
//! pivot_root, capabilities, no_new_privs, seccomp. No runc, crun or docker underneath.
//!
//! The agent talks to the narrow [`Runtime`] trait. [`LinuxRuntime`] is the real thing;
//! [`HollowRuntime`] is a fake for scale tests. All calls block; call them from
//! `spawn_blocking`.
//!
//! See [`process`] for the process model (main → supervisor → init) and the security
//! reasoning, [`process::init`] for the init sequence, and [`state`] for what survives an agent
//! restart.

pub mod capabilities;
pub mod cgroups;
pub mod error;
pub mod hollow;
pub mod landlock;
pub mod linux;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod syscall;

use std::time::Duration;

pub use error::{Result, RuntimeError};
pub use hollow::HollowRuntime;
pub use landlock::LandlockSpec;
pub use linux::{LinuxRuntime, RuntimeConfig};
pub use spec::{
    CapabilitiesSpec, ContainerId, ContainerSpec, ContainerState, ContainerStats, ContainerStatus,
    ExecKill, ExecProcess, ExecSpec, ExitStatus, Resources, Rlimit, RlimitResource, SandboxId,
    SandboxSpec, SeccompProfile, VolumeMount,
};

/// The runtime as the agent sees it.
pub trait Runtime: Send + Sync {
    /// Create the pod's shared namespaces (net with `lo` up, ipc, uts with the hostname) and the
    /// pod cgroup.
    fn create_sandbox(&self, spec: &SandboxSpec) -> Result<()>;
    /// Delete the sandbox's remaining containers, its namespaces and its cgroup.
    fn remove_sandbox(&self, id: &SandboxId) -> Result<()>;
    /// Set everything up; the command is not running yet (init waits for `start`).
    fn create(&self, spec: &ContainerSpec) -> Result<ContainerId>;
    /// Exec the command. Fails if exec fails.
    fn start(&self, id: &ContainerId) -> Result<()>;
    /// Send a signal to the container's pid 1. A default-action terminating signal that pid 1
    /// does not handle is delivered as SIGKILL (the kernel would drop it) and reported as the
    /// original signal.
    fn signal(&self, id: &ContainerId, signal: i32) -> Result<()>;
    /// Block until the container exits (or `timeout`, then `RuntimeError::Timeout`).
    fn wait(&self, id: &ContainerId, timeout: Option<Duration>) -> Result<ExitStatus>;
    fn try_wait(&self, id: &ContainerId) -> Result<Option<ExitStatus>>;
    /// Kill whatever is left and remove cgroups, state and the container's files.
    fn delete(&self, id: &ContainerId) -> Result<()>;
    fn list(&self) -> Result<Vec<ContainerState>>;
    /// The sandboxes that exist, sorted — what an agent restarting asks to learn which pods
    /// kept their shared namespaces (it never guesses from its own files).
    fn list_sandboxes(&self) -> Result<Vec<SandboxId>>;
    /// Whether the sandbox exists.
    fn sandbox_exists(&self, id: &SandboxId) -> Result<bool> {
        Ok(self.list_sandboxes()?.contains(id))
    }
    fn state(&self, id: &ContainerId) -> Result<ContainerState>;
    fn stats(&self, id: &ContainerId) -> Result<ContainerStats>;
    /// Start a process inside the running container (`kapsel exec`): its namespaces, cgroup,
    /// user, env, cwd, capabilities, no_new_privs, seccomp and Landlock domain — never more
    /// than the container has. Fails (`ExecFailed`, e.g. `EACCES` from an allow-list) when
    /// the command cannot be exec'd; otherwise wait on the returned process.
    fn exec(&self, id: &ContainerId, spec: ExecSpec) -> Result<ExecProcess>;
    /// The sandbox's network namespace as a file (a bind mount a netns fd can be opened
    /// from), for the pod network; `None` when the runtime has none (hollow).
    fn sandbox_netns(&self, _id: &SandboxId) -> Option<std::path::PathBuf> {
        None
    }
}
