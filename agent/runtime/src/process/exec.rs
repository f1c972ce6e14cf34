//! `exec`: start a process inside a running container (runc's `exec`, youki's tenant builder).
//!
//! ```text
//! main (agent thread) ──fork──▶ attacher ──fork──▶ exec'd process ──execve──▶ command
//! ```
//!
//! * **main** reads everything the container was confined with from `exec.json` (written by
//!   `create`: capability sets, uid/gid/groups, no_new_privs, seccomp, Landlock spec, env, cwd,
//!   rlimits), opens the container init's namespace files (`/proc/<pid>/ns/*`, pinned by a
//!   pidfd so a reused pid is detected), the container cgroup's `cgroup.procs` and the sync
//!   socket, all before forking.
//! * **attacher** ([`exec_join`]) becomes non-dumpable, joins the container's cgroup (before
//!   its cgroup namespace: a writer inside a cgroup namespace cannot move itself from outside
//!   of it), then the cgroup, ipc, uts, net, pid and mount namespaces — as host root, since they
//!   are owned by the host's user namespace — and forks: only its child is inside the pid
//!   namespace. It waits for the child and exits with its status (`128 + signal` when killed).
//! * **exec'd process** ([`exec_finish`]) dies with the attacher, lowers the rlimits, sets
//!   no_new_privs, and then runs exactly the init's [`confine`] tail: the container's user
//!   namespace (if any), the same Landlock ruleset, seccomp filter, bounding/effective/permitted
//!   capability sets, uid/gid/groups, verified cwd, stdio, no leaked fds, command lookup inside
//!   the container. Nothing is computed from the exec request except argv and stdio, so an
//!   exec'd process never has more than the container's own command.
//!
//! The sync socket is `O_CLOEXEC`: EOF at main means the command was exec'd; a setup failure
//! or a refused `execve` (`EACCES` from Landlock) arrives as a message first.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use super::channel::SyncMsg;
use super::init::{confine, Confinement, InitError, InitOutcome};
use crate::capabilities::CapPlan;
use crate::landlock::LandlockSpec;
use crate::syscall::{LinuxSyscall, Syscall};

/// What a container was confined with, persisted by `create` as `exec.json` so a later `exec`
/// (possibly by a restarted agent) applies the same confinement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecContext {
    pub caps: CapPlan,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub no_new_privs: bool,
    /// The runtime's default seccomp profile applies (else unconfined).
    pub seccomp: bool,
    pub landlock: Option<LandlockSpec>,
    /// The container's environment, `PATH` included.
    pub env: Vec<String>,
    pub cwd: PathBuf,
    /// (resource, soft, hard) as applied to init.
    pub rlimits: Vec<(u32, u64, u64)>,
    /// False: the container runs in its own user namespace, which exec joins last.
    pub host_users: bool,
}

/// Everything the attacher and the exec'd process need, computed by main before the fork.
#[derive(Debug, Clone)]
pub struct ExecPlan {
    /// `cgroup.procs` of each hierarchy of the container's cgroup.
    pub cgroup_procs_fds: Vec<RawFd>,
    /// The container init's namespaces except the user namespace, in joining order.
    pub join_ns: Vec<(RawFd, CloneFlags)>,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// Exactly the container init's confinement (from `exec.json`).
    pub confinement: Confinement,
}

/// The namespaces exec joins, in order (the user namespace comes last, separately).
pub const EXEC_NAMESPACES: [(&str, CloneFlags); 6] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

fn e(step: &'static str) -> impl Fn(Errno) -> InitError {
    move |errno| InitError { step, errno }
}

/// The attacher's part, before it forks: cgroup, then every namespace but the user one.
pub fn exec_join(sys: &dyn Syscall, plan: &ExecPlan) -> Result<(), InitError> {
    sys.set_dumpable(false).map_err(e("set_dumpable"))?;
    sys.reset_signals().map_err(e("reset signals"))?;
    for fd in &plan.cgroup_procs_fds {
        sys.write_fd(*fd, b"0").map_err(e("join cgroup"))?;
        sys.close(*fd);
    }
    for (fd, ns) in &plan.join_ns {
        sys.setns(*fd, *ns).map_err(e("setns"))?;
        sys.close(*fd);
    }
    Ok(())
}

/// The exec'd process (inside the pid namespace): only returns on failure.
pub fn exec_finish(sys: &dyn Syscall, plan: &ExecPlan) -> InitOutcome {
    let path = (|| {
        sys.set_parent_death_kill()
            .map_err(e("parent death signal"))?;
        for (res, soft, hard) in &plan.rlimits {
            sys.setrlimit(*res, *soft, *hard).map_err(e("setrlimit"))?;
        }
        if plan.confinement.no_new_privs {
            sys.set_no_new_privs().map_err(e("no_new_privs"))?;
        }
        confine(sys, &plan.confinement)
    })();
    match path {
        Err(err) => InitOutcome::Failed(err),
        Ok(path) => {
            let errno = sys.execve(&path, &plan.argv, &plan.env);
            InitOutcome::ExecFailed(format!("execve {path:?}: {errno}"))
        }
    }
}

fn report(sys: &dyn Syscall, sync_fd: RawFd, out: InitOutcome) -> i32 {
    match out {
        InitOutcome::Failed(err) => {
            let _ = sys.send_sync(
                sync_fd,
                &SyncMsg::Error {
                    step: format!("exec: {}", err.step),
                    message: err.errno.desc().to_string(),
                },
            );
            126
        }
        InitOutcome::ExecFailed(m) => {
            let _ = sys.send_sync(sync_fd, &SyncMsg::ExecFailed(m));
            // 126: found but not executable (the shell's convention, and runc's)
            126
        }
    }
}

/// Fork the attacher; returns its pid. `devnull` replaces the attacher's own stdio.
pub(crate) fn spawn_exec(plan: &ExecPlan, devnull: RawFd) -> crate::Result<i32> {
    // SAFETY: see the module docs of `process`: the child only runs the prebuilt plan with raw
    // syscalls and malloc, and always leaves through `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(crate::RuntimeError::Io {
            context: "fork exec attacher".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        let code =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| attacher(plan, devnull)))
                .unwrap_or(101);
        // SAFETY: leaving the forked child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

fn attacher(plan: &ExecPlan, devnull: RawFd) -> i32 {
    let sys = LinuxSyscall;
    let mut keep: Vec<RawFd> = vec![0, 1, 2, plan.confinement.sync_fd, devnull];
    keep.extend(&plan.cgroup_procs_fds);
    keep.extend(plan.join_ns.iter().map(|(fd, _)| *fd));
    keep.extend(plan.confinement.stdio);
    keep.extend(plan.confinement.userns_fd);
    super::close_all_except(&mut keep);
    for i in 0..3 {
        let _ = sys.dup2(devnull, i);
    }
    if let Err(err) = exec_join(&sys, plan) {
        return report(&sys, plan.confinement.sync_fd, InitOutcome::Failed(err));
    }
    // SAFETY: the attacher is single-threaded; the child runs the prebuilt plan and _exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return report(
            &sys,
            plan.confinement.sync_fd,
            InitOutcome::Failed(InitError {
                step: "fork",
                errno: Errno::last(),
            }),
        );
    }
    if child == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let out = exec_finish(&sys, plan);
            report(&sys, plan.confinement.sync_fd, out)
        }))
        .unwrap_or(101);
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(code) };
    }
    // Only the child keeps the sync socket and stdio: main must see EOF when it execs, and the
    // caller EOF on stdout when it exits.
    super::close_all_except(&mut vec![0, 1, 2]);
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our only child with a valid out pointer.
        let rc = unsafe { libc::waitpid(child, &mut status, 0) };
        if rc == child {
            break;
        }
        if rc < 0 && Errno::last() != Errno::EINTR {
            return 125;
        }
    }
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities;
    use crate::spec::CapabilitiesSpec;
    use crate::syscall::RecordingSyscall;

    fn plan() -> ExecPlan {
        ExecPlan {
            cgroup_procs_fds: vec![10],
            join_ns: EXEC_NAMESPACES
                .iter()
                .enumerate()
                .map(|(i, (_, f))| (20 + i as RawFd, *f))
                .collect(),
            rlimits: vec![(libc::RLIMIT_NOFILE, 1024, 1024)],
            argv: vec![CString::new("sh").unwrap()],
            env: vec![],
            confinement: Confinement {
                sync_fd: 3,
                userns_fd: Some(40),
                landlock: Some(LandlockSpec {
                    allowed_executables: vec!["/bin/httpd".into()],
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
                caps: capabilities::plan(&CapabilitiesSpec::default(), false, 0).unwrap(),
                uid: 0,
                gid: 0,
                groups: vec![],
                cwd: "/".into(),
                stdio: [30, 31, 32],
                exec_candidates: vec!["/bin/sh".into()],
            },
        }
    }

    fn pos(calls: &[String], prefix: &str) -> usize {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} not called: {calls:#?}"))
    }

    #[test]
    fn exec_joins_cgroup_then_namespaces_then_confines_like_init() {
        let sys = RecordingSyscall::new();
        let p = plan();
        exec_join(&sys, &p).unwrap();
        let out = exec_finish(&sys, &p);
        assert!(matches!(out, InitOutcome::ExecFailed(_)), "{out:?}");
        let calls = sys.calls();
        let names = sys.names();
        // cgroup first, then every namespace in order, the user namespace only after
        // no_new_privs and right before Landlock
        let order = [
            "set_dumpable(false)",
            "write_fd(10",
            "setns(20, CloneFlags(CLONE_NEWCGROUP",
            "setns(21, CloneFlags(CLONE_NEWIPC",
            "setns(22, CloneFlags(CLONE_NEWUTS",
            "setns(23, CloneFlags(CLONE_NEWNET",
            "setns(24, CloneFlags(CLONE_NEWPID",
            "setns(25, CloneFlags(CLONE_NEWNS",
            "set_parent_death_kill",
            "setrlimit",
            "set_no_new_privs",
            "setns(40, CloneFlags(CLONE_NEWUSER",
            "landlock_restrict",
            "drop_bounding_caps",
            "setresgid",
            "setresuid",
            "chdir",
            "set_caps",
            "clear_ambient_caps",
            "dup2(30, 0",
            "close_fds_from_3",
            "verify_fds",
            "resolve_exec",
            "apply_seccomp",
            "execve",
        ];
        let idx: Vec<usize> = order.iter().map(|o| pos(&calls, o)).collect();
        for (w, o) in idx.windows(2).zip(order.windows(2)) {
            assert!(
                w[0] < w[1],
                "{} must come before {}: {calls:#?}",
                o[0],
                o[1]
            );
        }
        // the same capability sets as the container (root: the default set)
        let caps = capabilities::plan(&CapabilitiesSpec::default(), false, 0).unwrap();
        assert!(calls.iter().any(|c| *c
            == format!(
                "set_caps({:#x}, {:#x}, {:#x})",
                caps.effective, caps.permitted, caps.inheritable
            )));
        // seccomp is the last thing before execve; nothing is unshared or mounted
        assert_eq!(names[names.len() - 2], "apply_seccomp");
        assert!(!names
            .iter()
            .any(|n| n == "unshare" || n == "mount" || n == "pivot_root"));
    }

    #[test]
    fn exec_without_user_namespace_or_no_new_privs() {
        let sys = RecordingSyscall::new();
        let mut p = plan();
        p.confinement.userns_fd = None;
        p.confinement.no_new_privs = false;
        exec_join(&sys, &p).unwrap();
        exec_finish(&sys, &p);
        let calls = sys.calls();
        assert!(!calls.iter().any(|c| c.contains("CLONE_NEWUSER")));
        assert!(!calls.iter().any(|c| c.starts_with("set_no_new_privs")));
        // without no_new_privs seccomp is loaded while CAP_SYS_ADMIN is still held
        assert!(pos(&calls, "apply_seccomp") < pos(&calls, "drop_bounding_caps"));
    }

    #[test]
    fn a_failing_setns_stops_before_the_fork() {
        let sys = RecordingSyscall::new();
        sys.fail_on("setns");
        let err = exec_join(&sys, &plan()).unwrap_err();
        assert_eq!(err.step, "setns");
        assert!(!sys.names().iter().any(|n| n == "execve"));
    }
}
