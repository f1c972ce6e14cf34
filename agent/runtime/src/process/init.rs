//! The container init: one linear function in the canonical (runc/crun/youki) order, written
//! against [`Syscall`] so the order is unit-tested with [`crate::syscall::RecordingSyscall`].

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Component, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;

use super::channel::SyncMsg;
use crate::capabilities::CapPlan;
use crate::rootfs::{self, BindMount};
use crate::syscall::Syscall;

/// Everything init needs, computed by main before the fork (no lookups happen in the child).
#[derive(Debug, Clone)]
pub struct InitPlan {
    /// `cgroup.procs` of each hierarchy, opened write-only by main.
    pub cgroup_procs_fds: Vec<RawFd>,
    /// Namespaces to join (the pod sandbox's net/ipc/uts).
    pub join_ns: Vec<(RawFd, CloneFlags)>,
    /// Namespaces to create (mount and cgroup always; net/ipc/uts when not joined).
    pub unshare: CloneFlags,
    pub hostname: Option<String>,
    /// The (empty) directory the overlay is mounted on and pivoted into.
    pub rootfs: PathBuf,
    pub overlay_data: String,
    pub mounts: Vec<BindMount>,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub readonly_root: bool,
    /// (resource, soft, hard), already clamped to the agent's own hard limits.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// How the command is confined: shared with `exec` (an exec'd process gets exactly this).
    pub confinement: Confinement,
}

/// Which step failed, with the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitError {
    pub step: &'static str,
    pub errno: Errno,
}

/// How [`container_init`] ended when it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// A setup step failed; report `Error` and exit 1.
    Failed(InitError),
    /// execve failed; report `ExecFailed` and exit 127.
    ExecFailed(String),
}

fn e(step: &'static str) -> impl Fn(Errno) -> InitError {
    move |errno| InitError { step, errno }
}

/// The init sequence. Only returns on failure (with a real [`Syscall`], a successful execve
/// never comes back).
pub fn container_init(sys: &dyn Syscall, plan: &InitPlan) -> InitOutcome {
    match setup(sys, plan) {
        Err(err) => InitOutcome::Failed(err),
        Ok(path) => {
            let errno = sys.execve(&path, &plan.argv, &plan.env);
            InitOutcome::ExecFailed(format!("execve {path:?}: {errno}"))
        }
    }
}

fn setup(sys: &dyn Syscall, plan: &InitPlan) -> Result<CString, InitError> {
    // 1. Not dumpable while we still are the agent's image (CVE-2019-5736 class): nothing in a
    //    namespace we join can open /proc/<us>/exe or ptrace us. execve resets it.
    sys.set_dumpable(false).map_err(e("set_dumpable"))?;
    sys.set_parent_death_kill()
        .map_err(e("parent death signal"))?;
    sys.reset_signals().map_err(e("reset signals"))?;
    // 2. Join the cgroups before anything else so every later child is captured.
    for fd in &plan.cgroup_procs_fds {
        sys.write_fd(*fd, b"0").map_err(e("join cgroup"))?;
        sys.close(*fd);
    }
    // 3. Join the pod's namespaces, then create ours (mount, cgroup, and the rest when not
    //    joined). The pid namespace was created by the supervisor: we are its pid 1.
    for (fd, ns) in &plan.join_ns {
        sys.setns(*fd, *ns).map_err(e("setns"))?;
        sys.close(*fd);
    }
    sys.unshare(plan.unshare).map_err(e("unshare"))?;
    if let Some(h) = &plan.hostname {
        sys.sethostname(h).map_err(e("sethostname"))?;
    }
    // 4. Root filesystem: overlay, special filesystems and volumes resolved inside the rootfs,
    //    pivot_root with the old root detached, then /dev, read-only and masked paths.
    rootfs::prepare_rootfs(sys, plan)?;
    rootfs::pivot_root(sys, &plan.rootfs)?;
    rootfs::finish_rootfs(sys, plan)?;
    // 5. rlimits (lowering only; clamped by main) and no_new_privs.
    for (res, soft, hard) in &plan.rlimits {
        sys.setrlimit(*res, *soft, *hard).map_err(e("setrlimit"))?;
    }
    if plan.confinement.no_new_privs {
        sys.set_no_new_privs().map_err(e("no_new_privs"))?;
    }
    // 6. Tell main we are ready (before seccomp: this needs socket calls) and wait for start.
    sys.send_sync(plan.confinement.sync_fd, &SyncMsg::InitReady)
        .map_err(e("send ready"))?;
    match sys.recv_sync(plan.confinement.sync_fd) {
        Ok(SyncMsg::Start) => {}
        Ok(_) => {
            return Err(InitError {
                step: "wait start",
                errno: Errno::EBADMSG,
            })
        }
        Err(err) => {
            return Err(InitError {
                step: "wait start",
                errno: err,
            })
        }
    }
    confine(sys, &plan.confinement)
}

/// The process-confinement tail shared by the container init and `exec`
/// ([`super::exec`]): user namespace, Landlock, seccomp, capabilities, ids, cwd, stdio, fds,
/// command lookup. Everything a process inside the container ends up with is decided here, so
/// an exec'd process can never get more than the container's init.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// Child end of the sync socketpair (`O_CLOEXEC`: EOF at main means exec succeeded).
    pub sync_fd: RawFd,
    /// A user namespace (created and mapped by main) to enter after the filesystem is done.
    pub userns_fd: Option<RawFd>,
    /// Executable allow-list / writable paths (Landlock).
    pub landlock: Option<crate::landlock::LandlockSpec>,
    pub no_new_privs: bool,
    /// Seccomp filters to install (empty: unconfined).
    pub seccomp: Vec<seccompiler::BpfProgram>,
    pub caps: CapPlan,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub cwd: PathBuf,
    /// stdin, stdout, stderr for the command.
    pub stdio: [RawFd; 3],
    /// Where to look for `argv[0]` inside the container, in order.
    pub exec_candidates: Vec<PathBuf>,
}

/// Steps 7-11 of the init sequence (see [`Confinement`]); returns the command's path.
pub(crate) fn confine(sys: &dyn Syscall, c: &Confinement) -> Result<CString, InitError> {
    // 7. hostUsers: false: enter the user namespace now. Every namespace and mount was made by
    //    host root and stays owned by the host user namespace; the container's root has
    //    capabilities only inside its own (empty) user namespace.
    if let Some(fd) = c.userns_fd {
        sys.setns(fd, CloneFlags::CLONE_NEWUSER)
            .map_err(e("enter user namespace"))?;
        sys.close(fd);
    }
    // 7a. Landlock: the paths are the container's now; before seccomp (whose profile does not
    //    allow the landlock syscalls) and, without no_new_privs, while we still have
    //    CAP_SYS_ADMIN. The command itself must be on the allow-list.
    if let Some(ll) = &c.landlock {
        sys.landlock_restrict(ll).map_err(e("landlock"))?;
    }
    // 7b. Without no_new_privs, seccomp needs CAP_SYS_ADMIN: load it before dropping caps.
    if !c.no_new_privs {
        for f in &c.seccomp {
            sys.apply_seccomp(f).map_err(e("seccomp (early)"))?;
        }
    }
    // 8. finalizeNamespace: bounding set, keep caps over the uid change, groups, gid, uid,
    //    cwd (verified, CVE-2024-21626), then the final capability sets.
    sys.drop_bounding_caps(c.caps.bounding)
        .map_err(e("drop bounding caps"))?;
    sys.set_keep_caps(true).map_err(e("keepcaps"))?;
    sys.setgroups(&c.groups).map_err(e("setgroups"))?;
    sys.setresgid(c.gid).map_err(e("setresgid"))?;
    sys.setresuid(c.uid).map_err(e("setresuid"))?;
    sys.chdir(&c.cwd).map_err(e("chdir cwd"))?;
    verify_cwd(sys)?;
    sys.set_keep_caps(false).map_err(e("keepcaps"))?;
    sys.set_caps(c.caps.effective, c.caps.permitted, c.caps.inheritable)
        .map_err(e("set caps"))?;
    sys.clear_ambient_caps().map_err(e("clear ambient caps"))?;
    // 9. stdio, then really close every other fd (the sync socket stays, O_CLOEXEC, so an exec
    //    failure can still be reported) and verify it.
    for (i, fd) in c.stdio.iter().enumerate() {
        sys.dup2(*fd, i as RawFd).map_err(e("dup2 stdio"))?;
    }
    sys.close_fds_from_3(c.sync_fd).map_err(e("close fds"))?;
    sys.verify_fds(c.sync_fd).map_err(e("verify fds"))?;
    // 10. Find the command inside the container (never through a magic link or procfs).
    let path = sys
        .resolve_exec(&c.exec_candidates)
        .map_err(e("resolve command"))?;
    // 11. With no_new_privs, seccomp as late as possible, right before execve.
    if c.no_new_privs {
        for f in &c.seccomp {
            sys.apply_seccomp(f).map_err(e("seccomp"))?;
        }
    }
    Ok(path)
}

/// The cwd must be an absolute path inside our root: a leaked fd as cwd shows up as a path
/// outside it, `(unreachable)/...` (crun's `libcrun_safe_chdir`, runc's `verifyCwd`).
fn verify_cwd(sys: &dyn Syscall) -> Result<(), InitError> {
    let cwd = sys.getcwd().map_err(e("getcwd"))?;
    let ok = cwd.is_absolute()
        && !cwd.to_string_lossy().starts_with("(unreachable)")
        && !cwd.components().any(|c| c == Component::ParentDir);
    if ok {
        Ok(())
    } else {
        Err(InitError {
            step: "verify cwd: possible container breakout",
            errno: Errno::EPERM,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities;
    use crate::spec::CapabilitiesSpec;
    use crate::syscall::RecordingSyscall;

    fn plan() -> InitPlan {
        InitPlan {
            cgroup_procs_fds: vec![10, 11],
            join_ns: vec![(20, CloneFlags::CLONE_NEWNET)],
            unshare: CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP,
            hostname: None,
            rootfs: PathBuf::from("/state/c1/rootfs"),
            overlay_data: "lowerdir=/img,upperdir=/u,workdir=/w".into(),
            mounts: vec![BindMount {
                source: "/host/vol".into(),
                destination: "/data".into(),
                read_only: true,
                is_file: false,
            }],
            masked_paths: vec!["/proc/kcore".into()],
            readonly_paths: vec!["/proc/sys".into()],
            readonly_root: true,
            rlimits: vec![(libc::RLIMIT_NOFILE, 1024, 1024)],
            argv: vec![CString::new("/bin/true").unwrap()],
            env: vec![],
            confinement: Confinement {
                sync_fd: 3,
                userns_fd: Some(40),
                landlock: Some(crate::landlock::LandlockSpec {
                    allowed_executables: vec!["/bin/true".into()],
                    writable_paths: None,
                    best_effort: false,
                }),
                no_new_privs: true,
                seccomp: vec![vec![seccompiler::sock_filter {
                    code: 6,
                    jt: 0,
                    jf: 0,
                    k: 0x7fff_0000,
                }]],
                caps: capabilities::plan(&CapabilitiesSpec::default(), false, 1000).unwrap(),
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 5],
                cwd: "/work".into(),
                stdio: [30, 31, 32],
                exec_candidates: vec!["/bin/true".into()],
            },
        }
    }

    fn index_of(names: &[String], name: &str) -> usize {
        names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name} not called: {names:?}"))
    }

    #[test]
    fn init_runs_steps_in_the_canonical_order() {
        let sys = RecordingSyscall::new();
        let out = container_init(&sys, &plan());
        // The recording execve "fails", so we get here.
        assert!(matches!(out, InitOutcome::ExecFailed(_)), "{out:?}");
        let names = sys.names();
        let calls = sys.calls();
        let order = [
            "set_dumpable",
            "write_fd",
            "setns",
            "unshare",
            "pivot_root",
            "umount2",
            "mknod_char",
            "setrlimit",
            "set_no_new_privs",
            "send_sync",
            "recv_sync",
            "landlock_restrict",
            "drop_bounding_caps",
            "set_keep_caps",
            "setgroups",
            "setresgid",
            "setresuid",
            "getcwd",
            "set_caps",
            "clear_ambient_caps",
            "dup2",
            "close_fds_from_3",
            "verify_fds",
            "resolve_exec",
            "apply_seccomp",
            "execve",
        ];
        let idx: Vec<usize> = order.iter().map(|n| index_of(&names, n)).collect();
        for w in idx.windows(2).zip(order.windows(2)) {
            assert!(
                w.0[0] < w.0[1],
                "{} must come before {}: {calls:#?}",
                w.1[0],
                w.1[1]
            );
        }
        // the user namespace is entered after the handshake, before the privileges are dropped
        let userns = calls
            .iter()
            .position(|c| c.starts_with("setns(40,") && c.contains("CLONE_NEWUSER"))
            .unwrap();
        assert!(userns > index_of(&names, "recv_sync"));
        assert!(userns < index_of(&names, "drop_bounding_caps"));
        // seccomp is the very last thing before execve
        assert_eq!(names[names.len() - 2], "apply_seccomp");
        // the overlay is mounted before pivot_root, read-only root after the masks
        let overlay = calls
            .iter()
            .position(|c| c.contains("\"overlay\""))
            .unwrap();
        assert!(overlay < index_of(&names, "pivot_root"));
        let ro_root = calls
            .iter()
            .rposition(|c| c.starts_with("mount(None, /,") && c.contains("MS_RDONLY"))
            .expect("read-only root remount");
        let mask = calls
            .iter()
            .position(|c| c.contains("/proc/kcore"))
            .expect("masked path");
        assert!(mask > index_of(&names, "pivot_root") && mask < ro_root);
        // the volume is bind-mounted through an fd resolved inside the root
        let vol = calls.iter().position(|c| c.contains("/data, Dir")).unwrap();
        assert!(calls[vol + 1].contains("/host/vol") && calls[vol + 1].contains("/proc/self/fd/"));
        // cwd is verified after the uid change, with keepcaps cleared only after that
        let keep_off = calls
            .iter()
            .rposition(|c| c == "set_keep_caps(false)")
            .unwrap();
        assert!(keep_off > index_of(&names, "getcwd"));
        // a non-root user ends with empty effective/permitted/inheritable sets
        assert!(calls.iter().any(|c| c == "set_caps(0x0, 0x0, 0x0)"));
    }

    #[test]
    fn seccomp_goes_early_without_no_new_privs() {
        let sys = RecordingSyscall::new();
        let mut p = plan();
        p.confinement.no_new_privs = false;
        container_init(&sys, &p);
        let names = sys.names();
        assert!(!names.contains(&"set_no_new_privs".to_string()));
        assert!(index_of(&names, "apply_seccomp") < index_of(&names, "drop_bounding_caps"));
    }

    #[test]
    fn a_failing_step_stops_the_sequence() {
        let sys = RecordingSyscall::new();
        sys.fail_on("pivot_root");
        let out = container_init(&sys, &plan());
        assert_eq!(
            out,
            InitOutcome::Failed(InitError {
                step: "pivot_root",
                errno: Errno::EPERM
            })
        );
        let names = sys.names();
        assert!(!names.contains(&"execve".to_string()));
        assert!(!names.contains(&"set_caps".to_string()));
        assert_eq!(names.last().unwrap(), "pivot_root");
    }

    #[test]
    fn unreachable_cwd_is_refused() {
        let sys = RecordingSyscall::new();
        sys.pretend_cwd("(unreachable)/sys/fs/cgroup");
        let out = container_init(&sys, &plan());
        assert!(
            matches!(out, InitOutcome::Failed(InitError { step, .. }) if step.contains("breakout")),
            "{out:?}"
        );
        assert!(!sys.names().contains(&"execve".to_string()));
    }
}
