//! The crate's error type: one enum, with the cgroup sub-enum aggregated by `#[from]`.

use std::io;
use std::path::PathBuf;

use crate::cgroups::CgroupError;

/// Everything that can go wrong in the runtime. Spec errors (`InvalidSpec`, `UnknownUser`,
/// `UnknownCapability`, `VolumeSourceMissing`, `RunAsNonRoot`) are the caller's fault and map to a
/// clear pod status (`CreateContainerConfigError` in Kubernetes terms); the rest are node faults.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    #[error("user {user:?} not found in the image's /etc/passwd")]
    UnknownUser { user: String },
    #[error("group {group:?} not found in the image's /etc/group")]
    UnknownGroup { group: String },
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("volume source {0} does not exist")]
    VolumeSourceMissing(PathBuf),
    #[error("runAsNonRoot is set but the container would run as uid 0")]
    RunAsNonRoot,
    #[error("container {0} not found")]
    NotFound(String),
    #[error("sandbox {0} not found")]
    SandboxNotFound(String),
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    #[error("container {id} is {state}, operation needs {needed}")]
    InvalidState {
        id: String,
        state: String,
        needed: &'static str,
    },
    #[error("container init failed at step {step}: {message}")]
    InitFailed { step: String, message: String },
    #[error("exec of the container command failed: {0}")]
    ExecFailed(String),
    #[error("seccomp profile: {0}")]
    Seccomp(String),
    #[error("sync channel: {0}")]
    Channel(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },
    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("not supported: {0}")]
    Unsupported(String),
    /// An executable allow-list on a kernel that cannot enforce it (and no `best_effort`).
    #[error("Landlock unavailable: {0}")]
    LandlockUnavailable(String),
}

impl RuntimeError {
    /// Is this a problem with the spec (the user's fault) rather than with the node?
    pub fn is_spec_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidSpec(_)
                | Self::UnknownUser { .. }
                | Self::UnknownGroup { .. }
                | Self::UnknownCapability(_)
                | Self::VolumeSourceMissing(_)
                | Self::RunAsNonRoot
                | Self::LandlockUnavailable(_)
        )
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Attach context to io errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| RuntimeError::Io {
            context: context(),
            source,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| RuntimeError::Sys {
            context: context(),
            source,
        })
    }
}
