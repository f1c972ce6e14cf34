//! The escape suite: every breakout class we know of from runc, crun and youki advisories and
//! from container-security practice, attempted from inside a busybox container, must fail. The
//! suite prints a table `attempt → result → blocked by`. Root only (skipped with a message, or
//! failed under CI=true, when it cannot run).
//!
//! Classes that need syscalls busybox has no applet for (`keyctl`, `bpf`, `perf_event_open`,
//! `ptrace` of the agent) are not attempted here yet; the agent is not even visible from the
//! container (its pid namespace), and the default seccomp profile refuses those syscalls.

#[path = "../common/mod.rs"]
mod common;

use std::path::PathBuf;

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

fn attempts(host_marker: &str, host_ifaces: &str) -> Vec<Attempt> {
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
    let list = attempts(&marker.display().to_string(), &host_ifaces.join(" "));
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
}
