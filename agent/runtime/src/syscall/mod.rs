//! Every privileged operation the container init performs goes through [`Syscall`], so the
//! init sequence can be checked without root through [`RecordingSyscall`]. The implementation
//! is always passed explicitly (`&dyn Syscall`); nothing switches on `cfg!(test)`.

pub(crate) mod linux;
mod recording;

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

pub use linux::LinuxSyscall;
pub use recording::RecordingSyscall;

use crate::process::channel::SyncMsg;

pub type SysResult<T> = Result<T, Errno>;

/// What [`Syscall::open_in_root`] creates when the path is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Nothing,
    Dir,
    File,
}

/// The kind of device node for [`Syscall::mknod_char`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNode {
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
}

/// Privileged and process-global operations of the container init, in youki's style.
pub trait Syscall {
    /// Write to an fd opened earlier (joining a cgroup by writing `0` to `cgroup.procs`).
    fn write_fd(&self, fd: RawFd, data: &[u8]) -> SysResult<()>;
    fn close(&self, fd: RawFd);
    fn setns(&self, fd: RawFd, nstype: CloneFlags) -> SysResult<()>;
    fn unshare(&self, flags: CloneFlags) -> SysResult<()>;
    fn sethostname(&self, name: &str) -> SysResult<()>;
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult<()>;
    fn chdir(&self, path: &Path) -> SysResult<()>;
    fn getcwd(&self) -> SysResult<PathBuf>;
    /// `open(path, O_PATH|O_DIRECTORY|O_CLOEXEC)` on a trusted host path.
    fn open_dir(&self, path: &Path) -> SysResult<RawFd>;
    /// Resolve `path` inside the directory `root` as if it were `/` (`openat2` with
    /// `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`), creating what is missing, and return an
    /// `O_PATH` fd. Symlinks and `..` can never leave `root`.
    fn open_in_root(&self, root: RawFd, path: &Path, create: Create) -> SysResult<RawFd>;
    fn mknod_char(&self, path: &Path, dev: DevNode) -> SysResult<()>;
    fn symlink(&self, target: &Path, link: &Path) -> SysResult<()>;
    fn mkdir(&self, path: &Path, mode: u32) -> SysResult<()>;
    fn set_dumpable(&self, on: bool) -> SysResult<()>;
    /// Die with SIGKILL when the parent (the supervisor) dies; fails if it already died.
    fn set_parent_death_kill(&self) -> SysResult<()>;
    /// Every signal back to `SIG_DFL` and an empty signal mask (the agent may ignore SIGPIPE or
    /// block signals in the forking thread; the container must not inherit that).
    fn reset_signals(&self) -> SysResult<()>;
    fn set_no_new_privs(&self) -> SysResult<()>;
    fn set_keep_caps(&self, on: bool) -> SysResult<()>;
    /// Drop every capability not in `keep` (a bit mask) from the bounding set.
    fn drop_bounding_caps(&self, keep: u64) -> SysResult<()>;
    fn set_caps(&self, effective: u64, permitted: u64, inheritable: u64) -> SysResult<()>;
    fn clear_ambient_caps(&self) -> SysResult<()>;
    fn setgroups(&self, gids: &[u32]) -> SysResult<()>;
    fn setresgid(&self, gid: u32) -> SysResult<()>;
    fn setresuid(&self, uid: u32) -> SysResult<()>;
    fn setrlimit(&self, resource: libc::__rlimit_resource_t, soft: u64, hard: u64)
        -> SysResult<()>;
    fn dup2(&self, old: RawFd, new: RawFd) -> SysResult<()>;
    /// Really close every fd >= 3 except `keep` (which must be `O_CLOEXEC`).
    fn close_fds_from_3(&self, keep: RawFd) -> SysResult<()>;
    /// Verify (by listing `/proc/self/fd`) that only 0, 1, 2 and `keep` are open.
    fn verify_fds(&self, keep: RawFd) -> SysResult<()>;
    fn send_sync(&self, fd: RawFd, msg: &SyncMsg) -> SysResult<()>;
    fn recv_sync(&self, fd: RawFd) -> SysResult<SyncMsg>;
    fn apply_seccomp(&self, filter: &[seccompiler::sock_filter]) -> SysResult<()>;
    /// Restrict this process with a Landlock ruleset (see [`crate::landlock`]).
    fn landlock_restrict(&self, spec: &crate::landlock::LandlockSpec) -> SysResult<()>;
    /// Find the first of `candidates` that is a regular executable file inside the (already
    /// pivoted) root, not reached through a magic link and not on procfs.
    fn resolve_exec(&self, candidates: &[PathBuf]) -> SysResult<CString>;
    /// Only returns on failure.
    fn execve(&self, path: &CString, argv: &[CString], envp: &[CString]) -> Errno;
}
