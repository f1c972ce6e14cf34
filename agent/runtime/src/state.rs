//! State persisted as JSON under the state dir, so a new [`crate::LinuxRuntime`] (after an agent
//! restart) can list, re-adopt and delete containers.
//!
//! ```text
//! <state>/containers/<id>/state.json   PersistedContainer
//!                        /exit.json    written by the supervisor when init exits
//!                        /rootfs /upper /work /etc-*   overlay dirs and /etc files
//! <state>/sandboxes/<id>/sandbox.json  PersistedSandbox
//!                       /net /ipc /uts  bind mounts of the namespace files
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::spec::{ContainerId, SandboxId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedContainer {
    pub id: ContainerId,
    pub sandbox: Option<SandboxId>,
    /// Host pid of init (the command) and its start time (/proc/pid/stat field 22) to detect
    /// pid reuse.
    pub pid: i32,
    pub pid_start: u64,
    pub supervisor_pid: i32,
    pub supervisor_start: u64,
    /// Cgroup path relative to the hierarchy root(s).
    pub cgroup: String,
    pub started: bool,
    /// A default-action signal the runtime turned into SIGKILL because pid 1 had no handler.
    pub emulated_signal: Option<i32>,
    pub created_unix_ms: u64,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedSandbox {
    pub id: SandboxId,
    pub hostname: String,
    pub cgroup: String,
    /// (pid, start time) of the pod pid namespace's pid 1 when the pod shares its pid namespace.
    #[serde(default)]
    pub pid_holder: Option<(i32, u64)>,
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let err = |message: String| RuntimeError::State {
        path: path.to_path_buf(),
        message,
    };
    let buf = serde_json::to_vec_pretty(value).map_err(|e| err(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, buf).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(buf) => serde_json::from_slice(&buf)
            .map(Some)
            .map_err(|e| RuntimeError::State {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// /proc/<pid>/stat start time, or `None` when the process is gone.
pub(crate) fn pid_start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parens: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    // rest starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub(crate) fn dirs(state_dir: &Path) -> (PathBuf, PathBuf) {
    (state_dir.join("containers"), state_dir.join("sandboxes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_stable() {
        let me = std::process::id() as i32;
        let a = pid_start_time(me).unwrap();
        assert_eq!(Some(a), pid_start_time(me));
        assert_eq!(pid_start_time(i32::MAX), None);
    }

    #[test]
    fn json_roundtrip() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("s.json");
        let v = PersistedSandbox {
            id: SandboxId::new("p1").unwrap(),
            hostname: "h".into(),
            cgroup: "kapsel/pod-p1".into(),
            pid_holder: None,
        };
        write_json(&p, &v).unwrap();
        assert_eq!(read_json::<PersistedSandbox>(&p).unwrap(), Some(v));
        assert_eq!(
            read_json::<PersistedSandbox>(&tmp.path().join("x")).unwrap(),
            None
        );
    }
}
