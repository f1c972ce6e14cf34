//! The runtime's own spec types (no Kubernetes types): what the agent asks for.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// A container id: `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}` (it becomes a directory and cgroup name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerId(String);

/// A sandbox (pod) id, same alphabet as [`ContainerId`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SandboxId(String);

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

macro_rules! id_impl {
    ($t:ident, $what:literal) => {
        impl $t {
            /// Validate and wrap an id.
            pub fn new(s: impl Into<String>) -> Result<Self> {
                let s = s.into();
                if valid_id(&s) {
                    Ok(Self(s))
                } else {
                    Err(RuntimeError::InvalidSpec(format!(
                        concat!("bad ", $what, " id {:?}"),
                        s
                    )))
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
id_impl!(ContainerId, "container");
id_impl!(SandboxId, "sandbox");

/// A pod sandbox: the net, ipc and uts namespaces shared by the pod's containers, kept alive by
/// bind mounts under the state dir (no pause process), plus the pod-level cgroup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub id: SandboxId,
    pub hostname: String,
    /// Pod-level limits (the pod cgroup). `pids_limit` defaults to the runtime's default.
    #[serde(default)]
    pub resources: Resources,
    /// `shareProcessNamespace`: a pod pid namespace whose pid 1 is a tiny reaper process (the
    /// only long-lived helper; a pid namespace cannot outlive its init).
    #[serde(default)]
    pub share_pid: bool,
    /// `hostNetwork: true`: the sandbox's `net` is the caller's network namespace (the node's)
    /// instead of a new one.
    #[serde(default)]
    pub host_network: bool,
}

/// Cgroup limits. `None` means unlimited / kernel default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Hard memory limit in bytes; exceeding it gets the container OOM-killed.
    pub memory_limit: Option<u64>,
    /// CPU limit in millicores (CFS quota over a 100 ms period).
    pub cpu_limit_millis: Option<u64>,
    /// CPU request in millicores (cpu.shares on v1, cpu.weight on v2).
    pub cpu_request_millis: Option<u64>,
    /// Maximum number of tasks.
    pub pids_limit: Option<u64>,
}

/// A bind mount of a host path (a volume) into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Host path; must exist.
    pub source: PathBuf,
    /// Absolute path inside the container; resolved inside the rootfs (symlinks cannot escape).
    pub destination: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// Capability adjustments, on top of the default set (Docker's default minus `NET_RAW`).
/// Names with or without the `CAP_` prefix, any case; `ALL` in `drop` drops everything first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitiesSpec {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    /// Docker's default profile (allow-list, `EPERM` otherwise, `clone3` → `ENOSYS`).
    #[default]
    RuntimeDefault,
    Unconfined,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RlimitResource {
    Nofile,
    Nproc,
    Core,
    Memlock,
    Stack,
    Fsize,
    Cpu,
    As,
}

impl RlimitResource {
    pub(crate) fn raw(self) -> libc::__rlimit_resource_t {
        match self {
            Self::Nofile => libc::RLIMIT_NOFILE,
            Self::Nproc => libc::RLIMIT_NPROC,
            Self::Core => libc::RLIMIT_CORE,
            Self::Memlock => libc::RLIMIT_MEMLOCK,
            Self::Stack => libc::RLIMIT_STACK,
            Self::Fsize => libc::RLIMIT_FSIZE,
            Self::Cpu => libc::RLIMIT_CPU,
            Self::As => libc::RLIMIT_AS,
        }
    }
}

/// An rlimit; the runtime clamps it to the agent's own hard limit (it never needs
/// `CAP_SYS_RESOURCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: RlimitResource,
    pub soft: u64,
    pub hard: u64,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub id: ContainerId,
    /// Join this sandbox's net/ipc/uts namespaces and put the cgroup under its pod cgroup.
    /// `None`: a standalone container with its own namespaces.
    pub sandbox: Option<SandboxId>,
    /// Image layers, lowest first (read-only overlay lower dirs). At least one.
    pub lower_dirs: Vec<PathBuf>,
    /// `command ++ args` is the argv; `command[0]` is looked up in `PATH` inside the container
    /// when it has no `/`.
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs. `PATH` defaults to the usual one when missing.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container (absolute, no `..`); default `/`.
    pub cwd: Option<PathBuf>,
    /// The image's `USER` (`name`, `uid`, `name:group` or `uid:gid`), resolved against the
    /// image's /etc/passwd and /etc/group. Overridden by `run_as_user` / `run_as_group`.
    pub image_user: Option<String>,
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    #[serde(default)]
    pub supplemental_groups: Vec<u32>,
    /// Refuse to start when the resolved uid is 0.
    #[serde(default)]
    pub run_as_non_root: bool,
    /// Hostname of a standalone container (a sandbox's containers share the sandbox hostname).
    pub hostname: Option<String>,
    /// Contents of /etc/hosts and /etc/resolv.conf (bind mounted from the state dir).
    pub etc_hosts: Option<String>,
    pub resolv_conf: Option<String>,
    #[serde(default)]
    pub mounts: Vec<VolumeMount>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub capabilities: CapabilitiesSpec,
    #[serde(default)]
    pub privileged: bool,
    /// `allowPrivilegeEscalation: false` → `no_new_privs`. Default true (no_new_privs on).
    #[serde(default = "yes")]
    pub no_new_privs: bool,
    #[serde(default)]
    pub seccomp: SeccompProfile,
    #[serde(default)]
    pub read_only_rootfs: bool,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// `hostUsers: false` runs the container in its own user namespace: container ids
    /// `0..65536` map to host ids `userns_host_id..+65536` (default from the runtime config).
    /// The namespaces and mounts stay owned by the host's user namespace (the runtime sets them
    /// up as host root and enters the user namespace last), so container root holds no
    /// privilege over them. Known limit: without idmapped layers the image's files show as
    /// owned by `nobody`, so container root cannot modify root-owned image files (world-writable
    /// dirs like /tmp and new files work).
    #[serde(default = "yes")]
    pub host_users: bool,
    pub userns_host_id: Option<u32>,
    /// Join the sandbox's pid namespace (the sandbox needs `share_pid`); the command is then
    /// not pid 1, the sandbox's reaper is.
    #[serde(default)]
    pub share_process_namespace: bool,
    /// Files that receive the container's stdout / stderr (appended); `/dev/null` when unset.
    pub stdout_path: Option<PathBuf>,
    pub stderr_path: Option<PathBuf>,
    /// Free-form labels persisted with the state (the agent's pod uid, container name, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Executable allow-list and writable paths, enforced with Landlock.
    #[serde(default)]
    pub landlock: Option<crate::landlock::LandlockSpec>,
}

fn yes() -> bool {
    true
}

impl ContainerSpec {
    /// A spec with defaults everywhere, for `argv` on top of `lower_dirs`.
    pub fn new(id: ContainerId, lower_dirs: Vec<PathBuf>, command: Vec<String>) -> Self {
        Self {
            id,
            sandbox: None,
            lower_dirs,
            command,
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            image_user: None,
            run_as_user: None,
            run_as_group: None,
            supplemental_groups: Vec::new(),
            run_as_non_root: false,
            hostname: None,
            etc_hosts: None,
            resolv_conf: None,
            mounts: Vec::new(),
            resources: Resources::default(),
            capabilities: CapabilitiesSpec::default(),
            privileged: false,
            no_new_privs: true,
            seccomp: SeccompProfile::RuntimeDefault,
            read_only_rootfs: false,
            rlimits: Vec::new(),
            host_users: true,
            userns_host_id: None,
            share_process_namespace: false,
            stdout_path: None,
            stderr_path: None,
            labels: BTreeMap::new(),
            landlock: None,
        }
    }
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, or `128 + signal` when killed by a signal (the shell convention).
    pub code: i32,
    /// The terminating signal, if any.
    pub signal: Option<i32>,
    /// The memory cgroup recorded an OOM kill.
    pub oom_killed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerStatus {
    /// Created, init waiting for `start`.
    Created,
    Running,
    Exited(ExitStatus),
    /// The supervisor vanished without recording an exit status (killed from outside).
    Unknown,
}

/// What `list`/`state` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: ContainerId,
    pub sandbox: Option<SandboxId>,
    /// Host pid of the container's pid 1 (0 for fakes).
    pub pid: i32,
    pub status: ContainerStatus,
    pub created_unix_ms: u64,
    pub labels: BTreeMap<String, String>,
}

/// Resource usage from the container's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    /// usage minus inactive file cache (what the kubelet calls working set).
    pub memory_working_set_bytes: u64,
    pub pids: u64,
}

/// A process to start inside a running container with [`crate::Runtime::exec`]. It gets the
/// container's namespaces, cgroup, user, environment, cwd, capabilities, no_new_privs, seccomp
/// filter and Landlock domain; only argv and stdio come from here.
#[derive(Debug)]
pub struct ExecSpec {
    /// argv; `command[0]` is looked up in the container's `PATH` when it has no `/`.
    pub command: Vec<String>,
    /// `/dev/null` when unset.
    pub stdin: Option<std::os::fd::OwnedFd>,
    pub stdout: std::os::fd::OwnedFd,
    pub stderr: std::os::fd::OwnedFd,
}

/// Kills an exec'd process (through a pidfd: never another process that reused the pid).
#[derive(Debug, Clone, Default)]
pub struct ExecKill {
    pidfd: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

impl ExecKill {
    pub fn kill(&self) {
        if let Some(fd) = &self.pidfd {
            use std::os::fd::AsRawFd;
            // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
    }
}

/// A started exec: wait for its exit code.
#[derive(Debug)]
pub struct ExecProcess {
    pid: i32,
    kill: ExecKill,
    finished: Option<i32>,
}

impl ExecProcess {
    pub(crate) fn running(pid: i32, pidfd: Option<std::os::fd::OwnedFd>) -> Self {
        Self {
            pid,
            kill: ExecKill {
                pidfd: pidfd.map(std::sync::Arc::new),
            },
            finished: None,
        }
    }

    /// An exec that already ended (fake runtimes).
    pub fn exited(code: i32) -> Self {
        Self {
            pid: 0,
            kill: ExecKill::default(),
            finished: Some(code),
        }
    }

    /// Host pid of the attacher (the exec'd process's parent); 0 for fakes.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn killer(&self) -> ExecKill {
        self.kill.clone()
    }

    /// Block until the process exits: its exit code, `128 + signal` when killed.
    pub fn wait(&mut self) -> Result<i32> {
        if let Some(c) = self.finished {
            return Ok(c);
        }
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child with a valid out pointer.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if rc == self.pid {
                break;
            }
            let err = std::io::Error::last_os_error();
            if rc < 0 && err.raw_os_error() != Some(libc::EINTR) {
                return Err(RuntimeError::Io {
                    context: "wait for exec".into(),
                    source: err,
                });
            }
        }
        let code = if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            libc::WEXITSTATUS(status)
        };
        self.finished = Some(code);
        Ok(code)
    }
}
