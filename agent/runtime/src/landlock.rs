//! Executable allow-lists and writable paths with Landlock (kapsel's image profiles).
//!
//! A container with a [`LandlockSpec`] gets a Landlock domain, applied by init after
//! `pivot_root` (paths are the container's) and before seccomp and execve: only the listed
//! files, or files beneath listed directories, may be executed — `execve` of anything else,
//! including a script's interpreter, fails with `EACCES`. With `writable_paths`, every write
//! access (create, remove, write, truncate, rename/link across directories) is refused outside
//! those paths as well. The domain is inherited by every child and cannot be lifted (a future
//! `kapsel exec` must apply the same ruleset, via [`restrict_self`], to the process it starts).
//!
//! Landlock rules name files (inodes), not path strings: listing a symlink allows its target,
//! and listing a directory allows everything beneath it. On the container's overlay root (it
//! always has an upper layer) the hard links of an image layer are separate inodes, so busybox
//! applets can be allowed one by one. Missing paths are skipped (the rule cannot match
//! anything). A dynamically linked program also needs its ELF interpreter (`ld-linux*.so`)
//! listed, as the kernel opens it for execution.

use std::path::{Path, PathBuf};

use landlock::{
    AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, ABI,
};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// What the container may execute and write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockSpec {
    /// Absolute paths inside the container of the files (or directories, for everything
    /// beneath them) that may be executed.
    pub allowed_executables: Vec<PathBuf>,
    /// When set, writes are allowed only beneath these absolute paths.
    #[serde(default)]
    pub writable_paths: Option<Vec<PathBuf>>,
    /// Run unrestricted when the kernel has no Landlock (instead of failing the container).
    #[serde(default)]
    pub best_effort: bool,
}

/// The write accesses handled when `writable_paths` is set: ABI 1's writes, cross-directory
/// rename/link (ABI 2) and truncate (ABI 3). Device ioctls (ABI 5) stay unrestricted.
fn write_access() -> landlock::BitFlags<AccessFs> {
    AccessFs::from_write(ABI::V3)
}

/// Write accesses that apply to a regular file (the rest only make sense on directories).
fn file_write_access() -> landlock::BitFlags<AccessFs> {
    AccessFs::WriteFile | AccessFs::Truncate
}

/// The Landlock ABI of the running kernel (`None`: not built in or disabled at boot).
pub fn kernel_abi() -> Option<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset with a null attr, size 0 and the VERSION flag only
    // returns the ABI version (or an error); it creates no fd and touches no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as i32)
}

/// Check a spec before a container is created: absolute paths without `..`, and a kernel with
/// Landlock unless `best_effort`. `abi` is [`kernel_abi`]'s answer.
pub fn check(spec: &LandlockSpec, abi: Option<i32>) -> Result<()> {
    let paths = spec
        .allowed_executables
        .iter()
        .chain(spec.writable_paths.iter().flatten());
    for p in paths {
        let bad = !p.is_absolute()
            || p.components().any(|c| c == std::path::Component::ParentDir)
            || p.as_os_str().as_encoded_bytes().contains(&0);
        if bad {
            return Err(RuntimeError::InvalidSpec(format!(
                "Landlock path {} must be absolute, without ..",
                p.display()
            )));
        }
    }
    if spec.allowed_executables.is_empty() {
        return Err(RuntimeError::InvalidSpec(
            "an executable allow-list needs at least one entry".into(),
        ));
    }
    let needed = if spec.writable_paths.is_some() { 3 } else { 1 };
    match abi {
        Some(v) if v >= needed => Ok(()),
        _ if spec.best_effort => Ok(()),
        Some(v) => Err(RuntimeError::LandlockUnavailable(format!(
            "the kernel's Landlock ABI is {v}, restricting writes needs ABI {needed} (set bestEffort to run without)"
        ))),
        None => Err(RuntimeError::LandlockUnavailable(
            "the kernel has no Landlock (CONFIG_SECURITY_LANDLOCK, lsm=landlock); set bestEffort to run without".into(),
        )),
    }
}

/// The errno behind a landlock error (the first `io::Error` in its source chain).
fn errno_of(err: &(dyn std::error::Error + 'static)) -> Errno {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(n) = io.raw_os_error() {
                return Errno::from_raw(n);
            }
        }
        cur = e.source();
    }
    Errno::EOPNOTSUPP
}

fn open_path(p: &Path) -> std::result::Result<Option<(PathFd, bool)>, Errno> {
    let is_dir = match std::fs::metadata(p) {
        Ok(m) => m.is_dir(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
    };
    match PathFd::new(p) {
        Ok(fd) => Ok(Some((fd, is_dir))),
        Err(e) => Err(errno_of(&e)),
    }
}

/// Restrict the calling thread (and its future children) to `spec`. Needs `no_new_privs` or
/// `CAP_SYS_ADMIN`. Returns whether the ruleset is enforced (`false` only with `best_effort`
/// on a kernel without Landlock).
pub fn restrict_self(spec: &LandlockSpec) -> std::result::Result<bool, Errno> {
    let level = if spec.best_effort {
        CompatLevel::BestEffort
    } else {
        CompatLevel::HardRequirement
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::Execute)
        .map_err(|e| errno_of(&e))?;
    if spec.writable_paths.is_some() {
        ruleset = ruleset
            .handle_access(write_access())
            .map_err(|e| errno_of(&e))?;
    }
    let mut created = ruleset.create().map_err(|e| errno_of(&e))?;
    for p in &spec.allowed_executables {
        if let Some((fd, _)) = open_path(p)? {
            created = created
                .add_rule(PathBeneath::new(fd, AccessFs::Execute))
                .map_err(|e| errno_of(&e))?;
        }
    }
    if let Some(writable) = &spec.writable_paths {
        // Output redirected to /dev/null is everyday shell practice; it writes nothing.
        let extra = [PathBuf::from("/dev/null")];
        for p in writable.iter().chain(&extra) {
            if let Some((fd, is_dir)) = open_path(p)? {
                let access = if is_dir {
                    write_access()
                } else {
                    file_write_access()
                };
                created = created
                    .add_rule(PathBeneath::new(fd, access))
                    .map_err(|e| errno_of(&e))?;
            }
        }
    }
    let status = created.restrict_self().map_err(|e| errno_of(&e))?;
    Ok(status.ruleset != RulesetStatus::NotEnforced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(exe: &[&str], writable: Option<&[&str]>, best_effort: bool) -> LandlockSpec {
        LandlockSpec {
            allowed_executables: exe.iter().map(PathBuf::from).collect(),
            writable_paths: writable.map(|w| w.iter().map(PathBuf::from).collect()),
            best_effort,
        }
    }

    #[test]
    fn check_paths_and_kernel_support() {
        let ok = |s: &LandlockSpec, abi| check(s, abi).is_ok();
        let exe = spec(&["/bin/httpd"], None, false);
        let wr = spec(&["/bin/httpd"], Some(&["/tmp"]), false);
        let table = [
            (exe.clone(), Some(7), true),
            (exe.clone(), Some(1), true),
            (exe.clone(), None, false),
            (spec(&["/bin/httpd"], None, true), None, true),
            (wr.clone(), Some(3), true),
            (wr.clone(), Some(2), false),
            (spec(&["/bin/httpd"], Some(&["/tmp"]), true), Some(1), true),
            (spec(&["bin/httpd"], None, false), Some(7), false),
            (spec(&["/bin/../sbin/x"], None, false), Some(7), false),
            (spec(&["/bin/true"], Some(&["tmp"]), true), Some(7), false),
            (spec(&[], None, true), Some(7), false),
        ];
        for (s, abi, want) in table {
            assert_eq!(ok(&s, abi), want, "{s:?} abi {abi:?}");
        }
        let err = check(&exe, None).unwrap_err();
        assert!(err.to_string().contains("no Landlock"), "{err}");
        assert!(err.is_spec_error());
    }
}
