//! Process model.
//!
//! ```text
//! main (agent thread) ──fork──▶ supervisor ──unshare(NEWPID); fork──▶ init (pid 1) ──execve──▶ command
//! ```
//!
//! * **main** prepares everything that needs lookups or may fail on a bad spec (cgroups with
//!   their limits, directories, fds for `cgroup.procs`, namespaces, logs, the compiled seccomp
//!   filter) *before* forking, so the children only run a precomputed [`init::InitPlan`].
//! * **supervisor** (youki's "intermediate", but it stays): closes every fd it does not need,
//!   `setsid`, becomes non-dumpable, creates the pid namespace and forks init into it, reports
//!   init's host pid, then waits for it and records the exit status in
//!   `<state>/containers/<id>/exit.json`. It lives in the host's namespaces and outside the
//!   container's cgroup (so the OOM killer and the pids limit never hit it) and survives an
//!   agent restart; a new `LinuxRuntime` re-adopts the container by waiting on the supervisor
//!   with a pidfd and reading the exit file. Init has `PDEATHSIG=SIGKILL`, so a container never
//!   outlives its supervisor.
//! * **init** runs [`init::container_init`], the linear sequence, and execs the command: the
//!   command is pid 1 of its pid namespace.
//!
//! **Why no re-exec of our own binary (CVE-2019-5736).** The binary embedding the runtime varies
//! (agent, CLI, test binaries), so the init step runs in-process after `fork()`, not from a
//! re-executed (and sealed) copy of `/proc/self/exe`. The host binary is never reachable from
//! the container: init is non-dumpable from its first instruction (so `/proc/<init>/exe` and
//! ptrace are refused to anyone in the container's namespaces; only the host's pid namespace
//! sees the supervisor at all), the container's root is pivoted with the old root detached, every
//! fd is closed before exec, and after `execve` `/proc/1/exe` is the container's own command.
//! Commands reached through `/proc` (magic links such as `/proc/self/exe`) are refused.
//!
//! **Why fork is safe here.** The forking process is multi-threaded (the agent). The children
//! only use the precomputed plan, raw syscalls and the allocator (glibc's malloc is made
//! fork-safe by its atfork handlers); they never log, take std locks or return into Rust code
//! that could unwind into the caller: they leave with `_exit`.

pub mod channel;
pub mod exec;
pub mod init;

use std::os::fd::RawFd;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use channel::SyncMsg;
use init::{container_init, InitOutcome, InitPlan};

use crate::error::{Result, RuntimeError};
use crate::syscall::{LinuxSyscall, Syscall};

/// What the supervisor writes when init exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub code: i32,
    pub signal: Option<i32>,
}

pub(crate) struct SpawnRequest<'a> {
    pub plan: &'a InitPlan,
    /// Join this pid namespace instead of creating one.
    pub join_pidns: Option<RawFd>,
    pub devnull: RawFd,
    pub exit_file: PathBuf,
}

/// Fork the supervisor; returns its pid.
pub(crate) fn spawn_supervisor(req: &SpawnRequest<'_>) -> Result<i32> {
    // SAFETY: see the module docs: the child only runs `supervisor`, which uses the prebuilt
    // plan, raw syscalls and malloc, and always leaves through `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(RuntimeError::Io {
            context: "fork supervisor".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| supervisor(req)))
            .unwrap_or(101);
        // SAFETY: leaving the forked child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Close every fd except those in `keep`.
fn close_all_except(keep: &mut Vec<RawFd>) {
    keep.sort_unstable();
    keep.dedup();
    let mut next: u32 = 0;
    for &k in keep.iter() {
        if k < 0 {
            continue;
        }
        let k = k as u32;
        if k > next {
            // SAFETY: close_range on our own fd table.
            unsafe { libc::syscall(libc::SYS_close_range, next, k - 1, 0) };
        }
        next = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0) };
}

fn supervisor(req: &SpawnRequest<'_>) -> i32 {
    let sys = LinuxSyscall;
    let plan = req.plan;
    let mut keep: Vec<RawFd> = vec![0, 1, 2, plan.confinement.sync_fd, req.devnull];
    keep.extend(&plan.cgroup_procs_fds);
    keep.extend(plan.join_ns.iter().map(|(fd, _)| *fd));
    keep.extend(plan.confinement.stdio);
    keep.extend(req.join_pidns);
    keep.extend(plan.confinement.userns_fd);
    close_all_except(&mut keep);
    for i in 0..3 {
        let _ = sys.dup2(req.devnull, i);
    }
    let fail = |step: &str, errno: Errno| {
        let _ = sys.send_sync(
            plan.confinement.sync_fd,
            &SyncMsg::Error {
                step: format!("supervisor: {step}"),
                message: errno.desc().to_string(),
            },
        );
        1
    };
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe { libc::setsid() };
    if let Err(err) = sys.set_dumpable(false) {
        return fail("set_dumpable", err);
    }
    // SAFETY: restoring the default SIGCHLD disposition so waitpid works.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let pidns = match req.join_pidns {
        Some(fd) => sys.setns(fd, CloneFlags::CLONE_NEWPID),
        None => sys.unshare(CloneFlags::CLONE_NEWPID),
    };
    if let Err(err) = pidns {
        return fail("pid namespace", err);
    }
    // SAFETY: the supervisor is single-threaded; the child runs the init sequence and _exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return fail("fork init", Errno::last());
    }
    if child == 0 {
        let code =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                match container_init(&sys, plan) {
                    InitOutcome::Failed(err) => {
                        let _ = sys.send_sync(
                            plan.confinement.sync_fd,
                            &SyncMsg::Error {
                                step: err.step.to_string(),
                                message: err.errno.desc().to_string(),
                            },
                        );
                        1
                    }
                    InitOutcome::ExecFailed(m) => {
                        let _ = sys.send_sync(plan.confinement.sync_fd, &SyncMsg::ExecFailed(m));
                        127
                    }
                }
            }))
            .unwrap_or(101);
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(code) };
    }
    let _ = sys.send_sync(
        plan.confinement.sync_fd,
        &SyncMsg::SupervisorReady { init_pid: child },
    );
    // Everything but stdio goes: main must see EOF on the sync socket when init execs.
    close_all_except(&mut vec![0, 1, 2]);
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our only child with a valid out pointer.
        let rc = unsafe { libc::waitpid(child, &mut status, 0) };
        if rc == child {
            break;
        }
        if rc < 0 && Errno::last() != Errno::EINTR {
            return 2;
        }
    }
    let record = if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        ExitRecord {
            code: 128 + sig,
            signal: Some(sig),
        }
    } else {
        ExitRecord {
            code: libc::WEXITSTATUS(status),
            signal: None,
        }
    };
    let tmp = req.exit_file.with_extension("tmp");
    match serde_json::to_vec(&record) {
        Ok(buf)
            if std::fs::write(&tmp, &buf).is_ok()
                && std::fs::rename(&tmp, &req.exit_file).is_ok() =>
        {
            0
        }
        _ => 3,
    }
}
