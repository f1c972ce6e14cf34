//! The real [`Syscall`]: thin wrappers over libc/nix.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::{Create, DevNode, SysResult, Syscall};
use crate::process::channel::{self, SyncMsg};

/// The real implementation, used by [`crate::LinuxRuntime`].
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

fn cstr(p: &Path) -> SysResult<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn check(rc: libc::c_long) -> SysResult<libc::c_long> {
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

const PROC_SUPER_MAGIC: libc::c_long = 0x9fa0;

/// `openat2(dirfd, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
pub(crate) fn openat2_in_root(dirfd: RawFd, path: &CStr, flags: i32) -> SysResult<RawFd> {
    // SAFETY: open_how is plain old data; all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: `how` and `path` are valid for the duration of the call; the kernel copies them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        match check(rc) {
            Ok(fd) => return Ok(fd as RawFd),
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn rel_cstr(components: &[&std::ffi::OsStr]) -> SysResult<CString> {
    if components.is_empty() {
        return Ok(CString::from(c"."));
    }
    let mut v = Vec::new();
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(c.as_bytes());
    }
    CString::new(v).map_err(|_| Errno::EINVAL)
}

impl Syscall for LinuxSyscall {
    fn write_fd(&self, fd: RawFd, data: &[u8]) -> SysResult<()> {
        // SAFETY: writing a valid buffer to an fd we own.
        let rc = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        check(rc as libc::c_long).map(drop)
    }

    fn close(&self, fd: RawFd) {
        // SAFETY: closing an fd this process owns; errors are irrelevant.
        unsafe { libc::close(fd) };
    }

    fn setns(&self, fd: RawFd, nstype: CloneFlags) -> SysResult<()> {
        // SAFETY: plain syscall on an fd we own.
        check(unsafe { libc::setns(fd, nstype.bits()) } as libc::c_long).map(drop)
    }

    fn unshare(&self, flags: CloneFlags) -> SysResult<()> {
        nix::sched::unshare(flags)
    }

    fn sethostname(&self, name: &str) -> SysResult<()> {
        nix::unistd::sethostname(name)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult<()> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&self, path: &Path) -> SysResult<()> {
        nix::unistd::chdir(path)
    }

    fn getcwd(&self) -> SysResult<PathBuf> {
        nix::unistd::getcwd()
    }

    fn open_dir(&self, path: &Path) -> SysResult<RawFd> {
        let p = cstr(path)?;
        // SAFETY: valid C string; the fd is returned to the caller who closes it.
        let fd = unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        check(fd as libc::c_long).map(|fd| fd as RawFd)
    }

    fn open_in_root(&self, root: RawFd, path: &Path, create: Create) -> SysResult<RawFd> {
        let comps: Vec<&std::ffi::OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(Ok(s)),
                Component::RootDir | Component::CurDir => None,
                Component::ParentDir | Component::Prefix(_) => Some(Err(Errno::EINVAL)),
            })
            .collect::<SysResult<_>>()?;
        let full = rel_cstr(&comps)?;
        match openat2_in_root(root, &full, libc::O_PATH) {
            Err(Errno::ENOENT) if create != Create::Nothing => {}
            other => return other,
        }
        // Create the missing components one by one; each parent is resolved from `root` again so
        // a symlink planted anywhere on the way still resolves inside `root`.
        for i in 0..comps.len() {
            let prefix = rel_cstr(&comps[..=i])?;
            match openat2_in_root(root, &prefix, libc::O_PATH) {
                Ok(fd) => {
                    self.close(fd);
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
            let parent = openat2_in_root(root, &rel_cstr(&comps[..i])?, libc::O_PATH)?;
            let name = CString::new(comps[i].as_bytes()).map_err(|_| Errno::EINVAL)?;
            let last = i + 1 == comps.len();
            let rc = if last && create == Create::File {
                // SAFETY: valid C string and dir fd; O_EXCL|O_NOFOLLOW never follows a link.
                let fd = unsafe {
                    libc::openat(
                        parent,
                        name.as_ptr(),
                        libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_WRONLY
                            | libc::O_CLOEXEC,
                        0o644,
                    )
                };
                if fd >= 0 {
                    self.close(fd);
                }
                fd
            } else {
                // SAFETY: valid C string and dir fd.
                unsafe { libc::mkdirat(parent, name.as_ptr(), 0o755) }
            };
            let err = Errno::last();
            self.close(parent);
            if rc < 0 && err != Errno::EEXIST {
                return Err(err);
            }
        }
        openat2_in_root(root, &full, libc::O_PATH)
    }

    fn mknod_char(&self, path: &Path, dev: DevNode) -> SysResult<()> {
        let p = cstr(path)?;
        // SAFETY: valid C string.
        let rc = unsafe {
            libc::mknod(
                p.as_ptr(),
                libc::S_IFCHR | dev.mode,
                libc::makedev(dev.major as u32, dev.minor as u32),
            )
        };
        check(rc as libc::c_long)?;
        // mknod honours the umask; set the mode exactly.
        // SAFETY: valid C string.
        check(unsafe { libc::chmod(p.as_ptr(), dev.mode) } as libc::c_long).map(drop)
    }

    fn symlink(&self, target: &Path, link: &Path) -> SysResult<()> {
        nix::unistd::symlinkat(target, None, link)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> SysResult<()> {
        match nix::unistd::mkdir(path, nix::sys::stat::Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn set_dumpable(&self, on: bool) -> SysResult<()> {
        nix::sys::prctl::set_dumpable(on)
    }

    fn set_parent_death_kill(&self) -> SysResult<()> {
        // SAFETY: getppid has no preconditions.
        let before = unsafe { libc::getppid() };
        // SAFETY: prctl with integer arguments.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        check(rc as libc::c_long)?;
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != before {
            return Err(Errno::ESRCH);
        }
        Ok(())
    }

    fn reset_signals(&self) -> SysResult<()> {
        for sig in 1..libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            // SAFETY: restoring the default disposition; no handler pointer involved.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
        // SAFETY: an empty, initialised sigset for SIG_SETMASK.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            check(libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) as libc::c_long)
                .map(drop)
        }
    }

    fn set_no_new_privs(&self) -> SysResult<()> {
        nix::sys::prctl::set_no_new_privs()
    }

    fn set_keep_caps(&self, on: bool) -> SysResult<()> {
        nix::sys::prctl::set_keepcaps(on)
    }

    fn drop_bounding_caps(&self, keep: u64) -> SysResult<()> {
        for cap in 0..=crate::capabilities::last_cap() {
            if keep & (1u64 << cap) == 0 {
                // SAFETY: prctl with integer arguments.
                let rc =
                    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
                if rc < 0 && Errno::last() != Errno::EINVAL {
                    return Err(Errno::last());
                }
            }
        }
        Ok(())
    }

    fn set_caps(&self, effective: u64, permitted: u64, inheritable: u64) -> SysResult<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let split = |v: u64| (v as u32, (v >> 32) as u32);
        let (e0, e1) = split(effective);
        let (p0, p1) = split(permitted);
        let (i0, i1) = split(inheritable);
        let data = [
            Data {
                effective: e0,
                permitted: p0,
                inheritable: i0,
            },
            Data {
                effective: e1,
                permitted: p1,
                inheritable: i1,
            },
        ];
        // SAFETY: header and data have the kernel's capget/capset v3 layout and outlive the call.
        let rc =
            unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
        check(rc).map(drop)
    }

    fn clear_ambient_caps(&self) -> SysResult<()> {
        // SAFETY: prctl with integer arguments.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        check(rc as libc::c_long).map(drop)
    }

    fn setgroups(&self, gids: &[u32]) -> SysResult<()> {
        // SAFETY: the slice is valid for its length.
        let rc = unsafe { libc::setgroups(gids.len(), gids.as_ptr()) };
        check(rc as libc::c_long).map(drop)
    }

    fn setresgid(&self, gid: u32) -> SysResult<()> {
        // Raw syscall: glibc's wrapper would broadcast to all threads (there is only one here,
        // but the raw call keeps this async-signal-safe after fork).
        // SAFETY: integer arguments.
        check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
    }

    fn setresuid(&self, uid: u32) -> SysResult<()> {
        // SAFETY: integer arguments.
        check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
    }

    fn setrlimit(
        &self,
        resource: libc::__rlimit_resource_t,
        soft: u64,
        hard: u64,
    ) -> SysResult<()> {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: valid pointer to a local struct.
        check(unsafe { libc::setrlimit(resource, &lim) } as libc::c_long).map(drop)
    }

    fn dup2(&self, old: RawFd, new: RawFd) -> SysResult<()> {
        // SAFETY: plain syscall on fds we own.
        check(unsafe { libc::dup2(old, new) } as libc::c_long).map(drop)
    }

    fn close_fds_from_3(&self, keep: RawFd) -> SysResult<()> {
        let close_range = |first: u32, last: u32| -> SysResult<()> {
            if first > last {
                return Ok(());
            }
            // SAFETY: close_range on our own fd table.
            check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) }).map(drop)
        };
        if keep >= 3 {
            close_range(3, keep as u32 - 1)?;
            close_range(keep as u32 + 1, u32::MAX)
        } else {
            close_range(3, u32::MAX)
        }
    }

    fn verify_fds(&self, keep: RawFd) -> SysResult<()> {
        let dir = nix::dir::Dir::open(
            "/proc/self/fd",
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let own = std::os::fd::AsRawFd::as_raw_fd(&dir);
        let mut dir = dir;
        for entry in dir.iter() {
            let entry = entry?;
            let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
                continue;
            };
            if fd <= 2 || fd == own {
                continue;
            }
            if fd == keep {
                // SAFETY: F_GETFD on an fd number.
                let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
                if flags >= 0 && flags & libc::FD_CLOEXEC != 0 {
                    continue;
                }
            }
            return Err(Errno::EBADFD);
        }
        Ok(())
    }

    fn send_sync(&self, fd: RawFd, msg: &SyncMsg) -> SysResult<()> {
        channel::send_raw(fd, msg)
    }

    fn recv_sync(&self, fd: RawFd) -> SysResult<SyncMsg> {
        channel::recv_raw(fd)
    }

    fn apply_seccomp(&self, filter: &[seccompiler::sock_filter]) -> SysResult<()> {
        // Not seccompiler::apply_filter: it always sets no_new_privs, which must stay the
        // spec's choice (allowPrivilegeEscalation).
        #[repr(C)]
        struct SockFprog {
            len: u16,
            filter: *const seccompiler::sock_filter,
        }
        if filter.is_empty() || filter.len() > u16::MAX as usize {
            return Err(Errno::EINVAL);
        }
        let prog = SockFprog {
            len: filter.len() as u16,
            filter: filter.as_ptr(),
        };
        // SAFETY: `prog` points at `filter`, both alive for the call; the kernel copies them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const SockFprog,
            )
        };
        check(rc).map(drop)
    }

    fn landlock_restrict(&self, spec: &crate::landlock::LandlockSpec) -> SysResult<()> {
        crate::landlock::restrict_self(spec).map(|_| ())
    }
    fn resolve_exec(&self, candidates: &[PathBuf]) -> SysResult<CString> {
        let root = self.open_dir(Path::new("/"))?;
        let mut last = Errno::ENOENT;
        for cand in candidates {
            let Ok(c) = cstr(cand) else { continue };
            let rel = CString::new(
                c.as_bytes()
                    .trim_ascii_start()
                    .strip_prefix(b"/")
                    .unwrap_or(c.as_bytes()),
            )
            .map_err(|_| Errno::EINVAL)?;
            match openat2_in_root(root, &rel, libc::O_PATH) {
                Ok(fd) => {
                    // SAFETY: zeroed statfs/stat are valid out-params for fstatfs/fstat.
                    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
                    // SAFETY: see above.
                    let mut st: libc::stat = unsafe { std::mem::zeroed() };
                    // SAFETY: valid fd and out-pointers.
                    let ok = unsafe { libc::fstatfs(fd, &mut sfs) } == 0
                        // SAFETY: valid fd and out-pointer.
                        && unsafe { libc::fstat(fd, &mut st) } == 0;
                    self.close(fd);
                    if !ok {
                        last = Errno::last();
                        continue;
                    }
                    if sfs.f_type as libc::c_long == PROC_SUPER_MAGIC {
                        self.close(root);
                        return Err(Errno::EPERM);
                    }
                    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                        last = Errno::EACCES;
                        continue;
                    }
                    if st.st_mode & 0o111 == 0 {
                        last = Errno::EACCES;
                        continue;
                    }
                    self.close(root);
                    return Ok(c);
                }
                Err(Errno::ELOOP) => {
                    // a magic link (/proc/self/exe and friends) on the way
                    self.close(root);
                    return Err(Errno::EPERM);
                }
                Err(e) => last = e,
            }
        }
        self.close(root);
        Err(last)
    }

    fn execve(&self, path: &CString, argv: &[CString], envp: &[CString]) -> Errno {
        match nix::unistd::execve(path, argv, envp) {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }
}
