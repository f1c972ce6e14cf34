//! The escape suite: every breakout class we know of from runc, crun and youki advisories and
//! from container-security practice, attempted from inside a busybox container, must fail. The
//! suite prints a table `attempt → result → blocked by`. Root only (skipped with a message, or
//! failed under CI=true, when it cannot run).
//!
//! Syscalls busybox has no applet for (`keyctl`/`add_key`, `bpf`, `perf_event_open`, `ptrace`
//! of the agent) are attempted by `kt-syscall.c`, compiled static with Debian's gcc into the
//! test rootfs as `/bin/kt-syscall`. A control run with seccomp `Unconfined` shows that the
//! seccomp profile is what refuses `keyctl` and `perf_event_open` (they succeed without it).

use crate::common;

use std::path::{Path, PathBuf};

use common::Env;
use kapsel_runtime::{ContainerSpec, LandlockSpec};

struct Attempt {
    name: &'static str,
    /// Run by `/bin/sh -c`; must print what it saw. stderr is appended to the output.
    script: String,
    /// Adjust the spec (limits, allow-lists).
    tweak: fn(&mut ContainerSpec),
    /// Given (exit code, oom killed, stdout + stderr): was the attempt blocked?
    blocked: fn(i32, bool, &str) -> bool,
    by: &'static str,
}

fn none(_: &mut ContainerSpec) {}

/// Every `NAME rc=R errno=E` line of kt-syscall: the attempt failed with errno `want`, and
/// there were `n` lines.
fn all_failed_with(out: &str, n: usize, want: i32) -> bool {
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(" rc=")).collect();
    lines.len() == n
        && lines
            .iter()
            .all(|l| l.contains(" rc=-1 ") && l.contains(&format!(" errno={want} ")))
}

/// Build `kt-syscall.c` static into `rootfs/bin/kt-syscall`.
fn build_kt_syscall(rootfs: &Path, scratch: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/escape/kt-syscall.c");
    let bin = scratch.join("kt-syscall");
    let out = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc (apt-get install gcc libc6-dev; scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "gcc -static {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(&bin, rootfs.join("bin/kt-syscall")).unwrap();
}

fn attempts(host_marker: &str, host_ifaces: &str, host_pids: &str) -> Vec<Attempt> {
    let a = |name, script: &str, by, blocked| Attempt {
        name,
        script: script.to_string(),
        tweak: none,
        blocked,
        by,
    };
    vec![
        a(
            "host processes visible",
            "ls /proc | grep -cE '^[0-9]+$'",
            "pid namespace",
            |_, _, out| out.trim().parse::<u32>().is_ok_and(|n| n <= 3),
        ),
        Attempt {
            name: "host files (path and /proc/1/root)",
            script: format!("cat {host_marker}; cat /proc/1/root{host_marker}; echo rc=$?"),
            tweak: none,
            blocked: |_, _, out| !out.contains("HOST-SECRET") && out.contains("rc=1"),
            by: "mount namespace, pivot_root (old root detached)",
        },
        Attempt {
            name: "host network interfaces",
            script: "ls /sys/class/net".into(),
            tweak: none,
            blocked: |_, _, out| out.split_whitespace().all(|i| i == "lo"),
            by: "network namespace",
        },
        a(
            "overwrite /proc/self/exe (CVE-2019-5736)",
            "echo x > /proc/self/exe; echo rc=$?; echo y > /proc/1/exe; echo rc=$?",
            "process model: the runtime binary is never in the container; ETXTBSY",
            |_, _, out| out.matches("rc=1").count() == 2,
        ),
        a(
            "leaked fds (CVE-2024-21626)",
            "ls /proc/self/fd | tr '\\n' ' '",
            "all fds closed before exec",
            |_, _, out| out.split_whitespace().all(|f| ["0", "1", "2", "3"].contains(&f)),
        ),
        a(
            "leaked cwd (CVE-2024-21626)",
            "readlink /proc/self/cwd; ls ../../../ | head -3",
            "cwd verified inside the root",
            |_, _, out| out.starts_with("/\n"),
        ),
        a(
            "mount tmpfs",
            "mkdir -p /tmp/m; mount -t tmpfs x /tmp/m; echo rc=$?",
            "capability (no CAP_SYS_ADMIN)",
            |_, _, out| out.contains("rc=255") || out.contains("rc=1"),
        ),
        a(
            "umount /proc",
            "umount /proc; echo rc=$?; umount -l /dev; echo rc=$?",
            "capability (no CAP_SYS_ADMIN)",
            |_, _, out| !out.contains("rc=0"),
        ),
        a(
            "pivot_root",
            "mkdir -p /tmp/old; pivot_root / /tmp/old; echo rc=$?",
            "capability (no CAP_SYS_ADMIN)",
            |_, _, out| !out.contains("rc=0"),
        ),
        a(
            "unshare a user namespace to regain caps",
            "unshare -U -r sh -c 'id; mount -t tmpfs x /tmp'; echo rc=$?",
            "seccomp (unshare/clone namespace flags)",
            |_, _, out| out.contains("Operation not permitted") && !out.contains("rc=0"),
        ),
        a(
            "load a kernel module",
            "echo notamodule > /tmp/x.ko; insmod /tmp/x.ko; echo rc=$?",
            "capability (no CAP_SYS_MODULE) and seccomp (init_module)",
            |_, _, out| out.contains("Operation not permitted") && !out.contains("rc=0"),
        ),
        a(
            "raw packet socket",
            "arping -c 1 -w 1 -I lo 127.0.0.1; echo rc=$?",
            "capability (no CAP_NET_RAW)",
            |_, _, out| out.contains("Operation not permitted") && !out.contains("rc=0"),
        ),
        a(
            "write /proc/sysrq-trigger",
            "echo h > /proc/sysrq-trigger; echo rc=$?",
            "mount flags (read-only /proc paths)",
            |_, _, out| out.contains("rc=1"),
        ),
        a(
            "read /dev/mem, /dev/kmem",
            "cat /dev/mem; cat /dev/kmem; ls /dev | tr '\\n' ' '",
            "minimal /dev (tmpfs with the usual char devices only)",
            |_, _, out| out.matches("No such file").count() == 2,
        ),
        a(
            "mknod a block device (host disk)",
            "mknod /tmp/sda b 8 0; echo rc=$?; head -c 1 /tmp/sda; echo rc=$?",
            "devices cgroup (v1) / no device access",
            |_, _, out| !out.contains("rc=0\nrc=0"),
        ),
        a(
            "write /sys",
            "echo 1 > /sys/kernel/mm/ksm/run; echo rc=$?; echo x > /sys/fs/cgroup/x; echo rc=$?",
            "mount flags (read-only /sys)",
            |_, _, out| out.contains("Read-only file system") && !out.contains("rc=0"),
        ),
        a(
            "cgroup release_agent",
            "mkdir -p /tmp/cg; mount -t cgroup -o memory cgroup /tmp/cg; echo rc=$?; \
             ls /sys/fs/cgroup/*/release_agent 2>&1; echo /evil > /sys/fs/cgroup/memory/release_agent; echo rc=$?",
            "capability (mount) and mount flags (read-only /sys/fs/cgroup)",
            |_, _, out| !out.contains("rc=0"),
        ),
        Attempt {
            name: "fork bomb",
            script: "i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done 2>&1 | head -1; echo forked".into(),
            tweak: |s| s.resources.pids_limit = Some(32),
            blocked: |_, _, out| out.contains("can't fork") || out.contains("Resource temporarily unavailable"),
            by: "cgroup pids limit",
        },
        Attempt {
            name: "memory bomb",
            script: "head -c 400000000 /dev/zero | tail -c 300000000 > /dev/null; echo survived".into(),
            tweak: |s| s.resources.memory_limit = Some(32 << 20),
            blocked: |_, _, out| out.contains("Killed"),
            by: "cgroup memory limit (OOM kill of the container only)",
        },
        Attempt {
            name: "exec programs the allow-list leaves out",
            script: "/bin/ls /; echo rc=$?; /usr/bin/wget --help; echo rc=$?".into(),
            tweak: |s| {
                s.landlock = Some(LandlockSpec {
                    allowed_executables: vec![PathBuf::from("/bin/sh")],
                    writable_paths: None,
                    best_effort: false,
                })
            },
            blocked: |_, _, out| out.matches("rc=126").count() == 2,
            by: "Landlock",
        },
        a(
            "keyctl: session keyring, add_key",
            "/bin/kt-syscall keyctl",
            "seccomp (keyctl, add_key: EPERM)",
            |_, _, out| all_failed_with(out, 2, libc::EPERM),
        ),
        a(
            "bpf: load a program, create a map",
            "/bin/kt-syscall bpf",
            "seccomp (bpf: EPERM); also no CAP_BPF/CAP_SYS_ADMIN",
            |_, _, out| all_failed_with(out, 2, libc::EPERM),
        ),
        a(
            "perf_event_open: CPU 0 and itself",
            "/bin/kt-syscall perf",
            "seccomp (perf_event_open: EPERM)",
            |_, _, out| all_failed_with(out, 2, libc::EPERM),
        ),
        Attempt {
            name: "ptrace the agent (host pids)",
            script: format!("/bin/kt-syscall ptrace {host_pids}"),
            tweak: none,
            // Two attempts (attach, seize) per pid; the pids do not exist in the container.
            blocked: |_, _, out| {
                let n = out.lines().filter(|l| l.contains(" rc=")).count();
                n >= 4 && all_failed_with(out, n, libc::ESRCH)
            },
            by: "pid namespace (the host pids do not exist inside: ESRCH)",
        },
        a(
            "host interfaces by name",
            &format!("for i in {host_ifaces}; do cat /sys/class/net/$i/address 2>/dev/null && echo HOST-IF; done; echo done"),
            "network namespace",
            |_, _, out| !out.contains("HOST-IF"),
        ),
    ]
}

#[test]
fn every_escape_attempt_is_blocked() {
    let Some(env) = Env::new() else { return };
    let marker = env.tmp.path().join("kt-host-secret");
    std::fs::write(&marker, "HOST-SECRET").unwrap();
    let host_ifaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    build_kt_syscall(&env.rootfs, env.tmp.path());
    // The agent here is this test process (the runtime runs in it); pid 1 is the host's init.
    // Pids the container's own pid namespace has (1..a few) are left out.
    let host_pids: Vec<String> = [std::process::id(), std::os::unix::process::parent_id()]
        .iter()
        .filter(|p| **p > 50)
        .map(u32::to_string)
        .collect();
    assert!(!host_pids.is_empty(), "host pids to attempt");
    let list = attempts(
        &marker.display().to_string(),
        &host_ifaces.join(" "),
        &host_pids.join(" "),
    );
    let mut rows = Vec::new();
    for (i, at) in list.iter().enumerate() {
        let id = format!("esc{i}");
        let mut spec = env.sh(&id, &format!("exec 2>&1; {}", at.script));
        (at.tweak)(&mut spec);
        let (st, out) = env.run(&spec);
        let blocked = (at.blocked)(st.code, st.oom_killed, &out);
        rows.push((at.name, blocked, at.by, out));
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    println!("\n{:<w$}  {:<8}  blocked by", "attempt", "result");
    for (name, blocked, by, _) in &rows {
        let res = if *blocked { "BLOCKED" } else { "ESCAPED" };
        println!("{name:<w$}  {res:<8}  {by}");
    }
    let escaped: Vec<_> = rows
        .iter()
        .filter(|r| !r.1)
        .map(|r| format!("{}: {}", r.0, r.3))
        .collect();
    assert!(
        escaped.is_empty(),
        "attempts not blocked:\n{}",
        escaped.join("\n---\n")
    );

    // Control: without the seccomp profile the same container may use keyctl and
    // perf_event_open on itself, so the table's "seccomp" is what blocked them.
    let mut spec = env.sh(
        "esc-control",
        "exec 2>&1; /bin/kt-syscall keyctl; /bin/kt-syscall perf",
    );
    spec.seccomp = kapsel_runtime::SeccompProfile::Unconfined;
    let (_, out) = env.run(&spec);
    for attempt in ["keyctl-join", "add_key", "perf-self"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{attempt} ")) && l.contains(" errno=0 ")),
            "{attempt} without seccomp should succeed (else seccomp is not what blocks it):\n{out}"
        );
    }
}
