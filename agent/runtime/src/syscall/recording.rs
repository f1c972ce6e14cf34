//! A [`Syscall`] test double that records each call, in order, and can inject failures.

use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::{Create, DevNode, SysResult, Syscall};
use crate::process::channel::SyncMsg;

/// Records every call as `name(args)`; `fail_on(name)` makes the first call with that name
/// return `EPERM`. Fds it hands out are fake numbers from 1000 up.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: RefCell<Vec<String>>,
    fail: RefCell<Option<String>>,
    next_fd: Cell<RawFd>,
    cwd: RefCell<Option<PathBuf>>,
}

impl RecordingSyscall {
    pub fn new() -> Self {
        Self {
            next_fd: Cell::new(1000),
            ..Self::default()
        }
    }

    /// Make the first call named `name` fail with `EPERM`.
    pub fn fail_on(&self, name: &str) {
        *self.fail.borrow_mut() = Some(name.to_string());
    }

    /// Make `getcwd` return this (e.g. a leaked fd's `(unreachable)/...`).
    pub fn pretend_cwd(&self, cwd: &str) {
        *self.cwd.borrow_mut() = Some(PathBuf::from(cwd));
    }

    /// All calls so far, `name(args)`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    /// Just the call names, in order.
    pub fn names(&self) -> Vec<String> {
        self.calls
            .borrow()
            .iter()
            .map(|c| c.split('(').next().unwrap_or_default().to_string())
            .collect()
    }

    fn rec(&self, name: &str, args: String) -> SysResult<()> {
        self.calls.borrow_mut().push(format!("{name}({args})"));
        let mut fail = self.fail.borrow_mut();
        if fail.as_deref() == Some(name) {
            *fail = None;
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    fn fd(&self) -> RawFd {
        let fd = self.next_fd.get();
        self.next_fd.set(fd + 1);
        fd
    }
}

impl Syscall for RecordingSyscall {
    fn write_fd(&self, fd: RawFd, data: &[u8]) -> SysResult<()> {
        self.rec(
            "write_fd",
            format!("{fd}, {:?}", String::from_utf8_lossy(data)),
        )
    }
    fn close(&self, fd: RawFd) {
        let _ = self.rec("close", fd.to_string());
    }
    fn setns(&self, fd: RawFd, nstype: CloneFlags) -> SysResult<()> {
        self.rec("setns", format!("{fd}, {nstype:?}"))
    }
    fn unshare(&self, flags: CloneFlags) -> SysResult<()> {
        self.rec("unshare", format!("{flags:?}"))
    }
    fn sethostname(&self, name: &str) -> SysResult<()> {
        self.rec("sethostname", name.to_string())
    }
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()> {
        self.rec(
            "mount",
            format!(
                "{:?}, {}, {:?}, {flags:?}, {:?}",
                source,
                target.display(),
                fstype,
                data
            ),
        )
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult<()> {
        self.rec("umount2", format!("{}, {flags:?}", target.display()))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult<()> {
        self.rec(
            "pivot_root",
            format!("{}, {}", new_root.display(), put_old.display()),
        )
    }
    fn chdir(&self, path: &Path) -> SysResult<()> {
        self.rec("chdir", path.display().to_string())
    }
    fn getcwd(&self) -> SysResult<PathBuf> {
        self.rec("getcwd", String::new())?;
        if let Some(cwd) = self.cwd.borrow().clone() {
            return Ok(cwd);
        }
        // Pretend the last chdir succeeded.
        let calls = self.calls.borrow();
        let last = calls
            .iter()
            .rev()
            .find_map(|c| c.strip_prefix("chdir("))
            .map(|s| s.trim_end_matches(')').to_string())
            .unwrap_or_else(|| "/".into());
        Ok(PathBuf::from(last))
    }
    fn open_dir(&self, path: &Path) -> SysResult<RawFd> {
        self.rec("open_dir", path.display().to_string())?;
        Ok(self.fd())
    }
    fn open_in_root(&self, root: RawFd, path: &Path, create: Create) -> SysResult<RawFd> {
        self.rec(
            "open_in_root",
            format!("{root}, {}, {create:?}", path.display()),
        )?;
        Ok(self.fd())
    }
    fn mknod_char(&self, path: &Path, dev: DevNode) -> SysResult<()> {
        self.rec(
            "mknod_char",
            format!("{}, {}:{}", path.display(), dev.major, dev.minor),
        )
    }
    fn symlink(&self, target: &Path, link: &Path) -> SysResult<()> {
        self.rec(
            "symlink",
            format!("{}, {}", target.display(), link.display()),
        )
    }
    fn mkdir(&self, path: &Path, mode: u32) -> SysResult<()> {
        self.rec("mkdir", format!("{}, {mode:o}", path.display()))
    }
    fn set_dumpable(&self, on: bool) -> SysResult<()> {
        self.rec("set_dumpable", on.to_string())
    }
    fn set_parent_death_kill(&self) -> SysResult<()> {
        self.rec("set_parent_death_kill", String::new())
    }
    fn reset_signals(&self) -> SysResult<()> {
        self.rec("reset_signals", String::new())
    }
    fn set_no_new_privs(&self) -> SysResult<()> {
        self.rec("set_no_new_privs", String::new())
    }
    fn set_keep_caps(&self, on: bool) -> SysResult<()> {
        self.rec("set_keep_caps", on.to_string())
    }
    fn drop_bounding_caps(&self, keep: u64) -> SysResult<()> {
        self.rec("drop_bounding_caps", format!("{keep:#x}"))
    }
    fn set_caps(&self, effective: u64, permitted: u64, inheritable: u64) -> SysResult<()> {
        self.rec(
            "set_caps",
            format!("{effective:#x}, {permitted:#x}, {inheritable:#x}"),
        )
    }
    fn clear_ambient_caps(&self) -> SysResult<()> {
        self.rec("clear_ambient_caps", String::new())
    }
    fn setgroups(&self, gids: &[u32]) -> SysResult<()> {
        self.rec("setgroups", format!("{gids:?}"))
    }
    fn setresgid(&self, gid: u32) -> SysResult<()> {
        self.rec("setresgid", gid.to_string())
    }
    fn setresuid(&self, uid: u32) -> SysResult<()> {
        self.rec("setresuid", uid.to_string())
    }
    fn setrlimit(
        &self,
        resource: libc::__rlimit_resource_t,
        soft: u64,
        hard: u64,
    ) -> SysResult<()> {
        self.rec("setrlimit", format!("{resource}, {soft}, {hard}"))
    }
    fn dup2(&self, old: RawFd, new: RawFd) -> SysResult<()> {
        self.rec("dup2", format!("{old}, {new}"))
    }
    fn close_fds_from_3(&self, keep: RawFd) -> SysResult<()> {
        self.rec("close_fds_from_3", keep.to_string())
    }
    fn verify_fds(&self, keep: RawFd) -> SysResult<()> {
        self.rec("verify_fds", keep.to_string())
    }
    fn send_sync(&self, fd: RawFd, msg: &SyncMsg) -> SysResult<()> {
        self.rec("send_sync", format!("{fd}, {msg:?}"))
    }
    fn recv_sync(&self, fd: RawFd) -> SysResult<SyncMsg> {
        self.rec("recv_sync", fd.to_string())?;
        Ok(SyncMsg::Start)
    }
    fn apply_seccomp(&self, filter: &[seccompiler::sock_filter]) -> SysResult<()> {
        self.rec("apply_seccomp", format!("{} insns", filter.len()))
    }
    fn landlock_restrict(&self, spec: &crate::landlock::LandlockSpec) -> SysResult<()> {
        self.rec(
            "landlock_restrict",
            format!("{:?}, {:?}", spec.allowed_executables, spec.writable_paths),
        )
    }
    fn resolve_exec(&self, candidates: &[PathBuf]) -> SysResult<CString> {
        self.rec("resolve_exec", format!("{candidates:?}"))?;
        let first = candidates.first().ok_or(Errno::ENOENT)?;
        CString::new(first.to_string_lossy().into_owned()).map_err(|_| Errno::EINVAL)
    }
    fn execve(&self, path: &CString, argv: &[CString], _envp: &[CString]) -> Errno {
        let _ = self.rec("execve", format!("{path:?}, {argv:?}"));
        // Like a failed exec; the recording init then reports and returns.
        Errno::ENOEXEC
    }
}
