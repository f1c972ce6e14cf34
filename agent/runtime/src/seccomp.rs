//! The default seccomp profile, kept as data (`seccomp/default.json`, seccompiler's JSON format)
//! and compiled to BPF when a [`crate::LinuxRuntime`] is built (a unit test compiles it too, so a
//! broken profile fails the build's tests, not a pod).
//!
//! The profile is Docker's default (moby `profiles/seccomp/default.json`) for the case without
//! extra capabilities: an allow-list with `EPERM` for everything else, argument filters for
//! `personality`, `clone` (no namespace flags) and `socket` (no `AF_VSOCK`), and a second filter
//! that turns `clone3` into `ENOSYS` so glibc falls back to `clone`. Known gap: syscalls newer
//! than seccompiler 0.4's table (`epoll_pwait2`, `fchmodat2`, `futex_waitv`, `landlock_*`,
//! `cachestat`, ...) are not in the allow-list and get `EPERM`.

use seccompiler::{BpfProgram, TargetArch};

use crate::error::{Result, RuntimeError};

/// The profile source.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("../seccomp/default.json");

/// Compiled filters, installed in this order.
#[derive(Debug, Clone, Default)]
pub struct CompiledProfile {
    pub filters: Vec<BpfProgram>,
}

fn target_arch() -> Result<TargetArch> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        other => Err(RuntimeError::Unsupported(format!(
            "seccomp profile for architecture {other}"
        ))),
    }
}

/// Compile the default profile (Docker's).
pub fn compile_default() -> Result<CompiledProfile> {
    compile_json(DEFAULT_PROFILE_JSON)
}

/// Compile a profile with filters `main` and optionally `enosys`.
pub fn compile_json(json: &str) -> Result<CompiledProfile> {
    let mut map = seccompiler::compile_from_json(json.as_bytes(), target_arch()?)
        .map_err(|e| RuntimeError::Seccomp(e.to_string()))?;
    let main = map
        .remove("main")
        .ok_or_else(|| RuntimeError::Seccomp("profile has no \"main\" filter".into()))?;
    let mut filters = vec![main];
    if let Some(enosys) = map.remove("enosys") {
        filters.push(enosys);
    }
    Ok(CompiledProfile { filters })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_and_has_docker_shape() {
        let p = compile_default().expect("default profile must compile");
        assert_eq!(p.filters.len(), 2);
        assert!(p.filters[0].len() > 300, "allow-list filter is substantial");
        let v: serde_json::Value = serde_json::from_str(DEFAULT_PROFILE_JSON).unwrap();
        let names: Vec<&str> = v["main"]["filter"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["syscall"].as_str().unwrap())
            .collect();
        for must in [
            "read",
            "write",
            "execve",
            "clone",
            "socket",
            "wait4",
            "exit_group",
        ] {
            assert!(names.contains(&must), "{must} allowed");
        }
        for never in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "pivot_root",
            "kexec_load",
            "bpf",
            "init_module",
            "open_by_handle_at",
            "reboot",
            "swapon",
            "keyctl",
            "add_key",
            "userfaultfd",
            "perf_event_open",
            "io_uring_setup",
        ] {
            assert!(!names.contains(&never), "{never} must not be allowed");
        }
        assert_eq!(v["main"]["mismatch_action"]["errno"], 1);
        assert_eq!(v["enosys"]["match_action"]["errno"], 38);
    }

    #[test]
    fn broken_profile_is_rejected() {
        let err = compile_json(r#"{"main":{"mismatch_action":"allow","match_action":"allow","filter":[{"syscall":"no_such_call"}]}}"#)
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Seccomp(_)));
    }
}
