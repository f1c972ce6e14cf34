//! Root-only tests of the real runtime on a busybox rootfs. Not root / no busybox: skipped with a
//! message, or failed under CI=true.

use crate::common;

use std::time::Duration;

use common::Env;
use kapsel_runtime::Runtime;

#[test]
fn pid1_is_the_command_and_no_host_process_is_visible() {
    let Some(env) = Env::new() else { return };
    let (st, out) = env.run(&env.sh(
        "c",
        "echo pid=$$; echo cmd=$(tr '\\0' ' ' < /proc/1/cmdline); ls -d /proc/[0-9]* | wc -l",
    ));
    assert_eq!(st.code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert!(
        lines[1].starts_with("cmd=/bin/sh -c echo pid=$$;"),
        "{}",
        lines[1]
    );
    // sh, the subshell pipeline: a handful at most, never the host's hundreds
    let n: usize = lines[2].trim().parse().unwrap();
    assert!(n <= 4, "{n} processes visible");
}

#[test]
fn hostname_and_etc_files_are_the_containers() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.sh(
        "h",
        "hostname; cat /etc/hostname; cat /etc/hosts; cat /etc/resolv.conf",
    );
    spec.hostname = Some("kt-box".into());
    spec.etc_hosts = Some("127.0.0.1 localhost kt-box\n".into());
    spec.resolv_conf = Some("nameserver 10.0.0.10\n".into());
    let (st, out) = env.run(&spec);
    assert_eq!(st.code, 0);
    assert_eq!(
        out,
        "kt-box\nkt-box\n127.0.0.1 localhost kt-box\nnameserver 10.0.0.10\n"
    );
    assert_ne!(nix::unistd::gethostname().unwrap(), "kt-box");
}

#[test]
fn host_files_are_unreachable() {
    let Some(env) = Env::new() else { return };
    // a host secret next to (outside) the rootfs
    let secret = env.tmp.path().join("secret");
    std::fs::write(&secret, "host-secret").unwrap();
    let outside = env.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // the image plants a symlink to a host path: a volume mounted through it must stay inside
    std::os::unix::fs::symlink(&outside, env.rootfs.join("evil")).unwrap();
    // the same path exists inside the image, so the link resolves (inside) and the mount works
    std::fs::create_dir_all(env.rootfs.join(outside.strip_prefix("/").unwrap())).unwrap();
    // a volume containing a symlink that climbs out
    let vol = env.tmp.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", vol.join("up")).unwrap();
    let s = secret.display();
    let mut spec = env.sh(
        "u",
        &format!(
            "cat {s} /proc/1/root{s} /../../..{s} /vol/up{s} /evil/v/up{s} 2>/dev/null; \
             ls /evil/v/ ; echo done"
        ),
    );
    spec.mounts = vec![
        kapsel_runtime::VolumeMount {
            source: vol.clone(),
            destination: "/vol".into(),
            read_only: true,
        },
        kapsel_runtime::VolumeMount {
            source: vol.clone(),
            destination: "/evil/v".into(),
            read_only: true,
        },
    ];
    let (_, out) = env.run(&spec);
    assert!(!out.contains("host-secret"), "{out}");
    assert!(
        out.contains("up\ndone"),
        "volume through the symlink is mounted inside: {out}"
    );
    // the mount through the planted symlink landed inside the rootfs, not on the host
    assert!(!outside.join("v").exists());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // a link to a host path that does not exist inside the image: an error, never an escape
    let outside2 = env.tmp.path().join("outside2");
    std::fs::create_dir(&outside2).unwrap();
    std::os::unix::fs::symlink(&outside2, env.rootfs.join("evil2")).unwrap();
    let mut spec = env.spec("u2", &["/bin/true"]);
    spec.mounts = vec![kapsel_runtime::VolumeMount {
        source: vol,
        destination: "/evil2/v".into(),
        read_only: false,
    }];
    assert!(env.rt.create(&spec).is_err());
    assert_eq!(std::fs::read_dir(&outside2).unwrap().count(), 0);
}

#[test]
fn mount_is_refused_without_cap_sys_admin() {
    let Some(env) = Env::new() else { return };
    let (st, _) = env.run(&env.sh("m", "mount -t tmpfs none /tmp"));
    assert_ne!(st.code, 0);
    assert!(
        env.stderr("m").to_lowercase().contains("permission denied") || !env.stderr("m").is_empty()
    );
}

fn status_field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{key} missing in {out}"))
}

#[test]
fn caps_no_new_privs_and_seccomp_are_applied() {
    let Some(env) = Env::new() else { return };
    let (st, out) = env.run(&env.spec("s", &["/bin/cat", "/proc/self/status"]));
    assert_eq!(st.code, 0);
    assert_eq!(status_field(&out, "CapEff:"), "00000000a80405fb");
    assert_eq!(status_field(&out, "CapPrm:"), "00000000a80405fb");
    assert_eq!(status_field(&out, "CapBnd:"), "00000000a80405fb");
    assert_eq!(status_field(&out, "CapInh:"), "0000000000000000");
    assert_eq!(status_field(&out, "CapAmb:"), "0000000000000000");
    assert_eq!(status_field(&out, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&out, "Seccomp:"), "2");

    // add/drop, no_new_privs off (seccomp takes the early path), unconfined
    let mut spec = env.spec("s2", &["/bin/cat", "/proc/self/status"]);
    spec.capabilities.add = vec!["NET_ADMIN".into()];
    spec.capabilities.drop = vec!["ALL".into()];
    spec.no_new_privs = false;
    let (_, out) = env.run(&spec);
    assert_eq!(status_field(&out, "CapBnd:"), "0000000000001000");
    assert_eq!(status_field(&out, "NoNewPrivs:"), "0");
    assert_eq!(status_field(&out, "Seccomp:"), "2");
    let mut spec = env.spec("s3", &["/bin/cat", "/proc/self/status"]);
    spec.seccomp = kapsel_runtime::SeccompProfile::Unconfined;
    let (_, out) = env.run(&spec);
    assert_eq!(status_field(&out, "Seccomp:"), "0");
}

#[test]
fn seccomp_blocks_unshare_even_with_caps() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.sh("sc", "unshare -n true && echo escaped || echo blocked");
    spec.capabilities.add = vec!["SYS_ADMIN".into()];
    let (_, out) = env.run(&spec);
    assert_eq!(out.trim(), "blocked");
}

#[test]
fn masked_and_readonly_paths() {
    let Some(env) = Env::new() else { return };
    let (_, out) = env.run(&env.sh(
        "mp",
        "for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do \
           [ -e $f ] && echo $f=$(wc -c < $f); done; \
         echo firmware=$(ls -A /sys/firmware | wc -l); \
         echo 1 > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable; \
         echo x > /proc/sys/kernel/hostname 2>/dev/null && echo procsys-writable; \
         touch /sys/x 2>/dev/null && echo sys-writable; echo end",
    ));
    // (this kernel may lack some of them; those that exist must read empty)
    assert!(out.contains("/proc/keys=0"), "{out}");
    assert!(out.contains("/proc/timer_list=0"), "{out}");
    for l in out.lines().filter(|l| l.starts_with("/proc/")) {
        assert!(l.ends_with("=0"), "{l}");
    }
    assert!(out.contains("firmware=0"), "{out}");
    assert!(!out.contains("writable"), "{out}");
    assert!(out.ends_with("end\n"));
}

#[test]
fn only_stdio_fds_reach_the_command() {
    let Some(env) = Env::new() else { return };
    // Leak an fd without CLOEXEC in the "agent" on purpose.
    let leak = std::fs::File::open("/etc/hostname").unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&leak);
    // SAFETY: clearing FD_CLOEXEC on our own fd.
    unsafe { libc::fcntl(raw, libc::F_SETFD, 0) };
    let spec = env.spec("fd", &["/bin/sleep", "10"]);
    let id = env.rt.create(&spec).unwrap();
    env.rt.start(&id).unwrap();
    let pid = env.rt.state(&id).unwrap().pid;
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"]);
    // and the cwd is inside the container
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd"))
            .unwrap()
            .to_str(),
        Some("/")
    );
    env.rt.delete(&id).unwrap();
    drop(leak);
}

#[test]
fn agent_binary_is_unreachable_and_unwritable() {
    let Some(env) = Env::new() else { return };
    let me = std::env::current_exe().unwrap();
    let (_, out) = env.run(&env.sh(
        "exe",
        &format!(
            "for f in /proc/[0-9]*/exe; do readlink $f; (echo x >> $f) 2>/dev/null && echo WRITABLE $f; done; \
             ls {} 2>/dev/null && echo VISIBLE; echo end",
            me.display()
        ),
    ));
    assert!(!out.contains("WRITABLE"), "{out}");
    assert!(!out.contains("VISIBLE"), "{out}");
    assert!(!out.contains(&me.display().to_string()), "{out}");
    assert!(
        out.starts_with("/bin/"),
        "pid 1's exe is the container's own command: {out}"
    );
    // The command cannot be a magic link back to the runtime binary either.
    let err = env
        .rt
        .create(&env.spec("exe2", &["/proc/self/exe"]))
        .unwrap_err();
    assert!(err.is_spec_error(), "{err}");
    std::os::unix::fs::symlink("/proc/self/exe", env.rootfs.join("bin/selfexe")).unwrap();
    let id = env.rt.create(&env.spec("exe3", &["/bin/selfexe"])).unwrap();
    let err = env.rt.start(&id).unwrap_err();
    assert!(err.to_string().contains("resolve command"), "{err}");
    env.rt.delete(&id).unwrap();
}

#[test]
fn memory_limit_oom_kills_and_reports() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.spec(
        "oom",
        &[
            "/bin/dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ],
    );
    spec.resources.memory_limit = Some(32 << 20);
    let (st, _) = env.run(&spec);
    assert!(st.oom_killed, "{st:?}");
    assert_eq!(st.signal, Some(libc::SIGKILL));
    assert_eq!(st.code, 137);
    // within the limit nothing is reported
    let mut spec = env.spec(
        "ok",
        &[
            "/bin/dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=1M",
            "count=1",
        ],
    );
    spec.resources.memory_limit = Some(32 << 20);
    let (st, _) = env.run(&spec);
    assert_eq!(
        st,
        kapsel_runtime::ExitStatus {
            code: 0,
            signal: None,
            oom_killed: false
        }
    );
}

#[test]
fn fork_bomb_hits_the_pids_limit() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.sh("bomb", "b() { b | b & }; b; sleep 30");
    spec.resources.pids_limit = Some(64);
    let id = env.rt.create(&spec).unwrap();
    env.rt.start(&id).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let pids = env.rt.stats(&id).unwrap().pids;
    assert!(pids <= 64, "{pids}");
    // the host stays responsive
    let t = std::time::Instant::now();
    let ok = std::process::Command::new("/bin/true").status().unwrap();
    assert!(ok.success());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    env.rt.delete(&id).unwrap();
    assert!(env.cgroup_dirs_named("bomb").is_empty());
}

#[test]
fn cpu_limit_200m_is_enforced() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.sh("cpu", "while :; do :; done");
    spec.resources.cpu_limit_millis = Some(200);
    spec.resources.cpu_request_millis = Some(200);
    let id = env.rt.create(&spec).unwrap();
    env.rt.start(&id).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let a = env.rt.stats(&id).unwrap().cpu_usage_ns;
    let t = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let b = env.rt.stats(&id).unwrap().cpu_usage_ns;
    let share = (b - a) as f64 / t.elapsed().as_nanos() as f64;
    env.rt.delete(&id).unwrap();
    assert!(
        (0.15..=0.25).contains(&share),
        "used {:.1}% of a core",
        share * 100.0
    );
}

#[test]
fn delete_leaves_nothing_behind() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.spec("gone", &["/bin/sleep", "30"]);
    spec.resources.memory_limit = Some(64 << 20);
    let id = env.rt.create(&spec).unwrap();
    env.rt.start(&id).unwrap();
    let st = env.rt.state(&id).unwrap();
    assert_eq!(st.status, kapsel_runtime::ContainerStatus::Running);
    let stats = env.rt.stats(&id).unwrap();
    assert!(stats.memory_usage_bytes > 0 && stats.pids == 1, "{stats:?}");
    assert!(!env.cgroup_dirs_named("gone").is_empty());
    env.rt.delete(&id).unwrap();
    assert!(env.cgroup_dirs_named("gone").is_empty());
    // SAFETY: kill with signal 0 only probes.
    assert_eq!(unsafe { libc::kill(st.pid, 0) }, -1);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&env.config.state_dir.display().to_string()));
    assert!(!env.config.state_dir.join("containers/gone").exists());
    assert!(env.rt.list().unwrap().is_empty());
    assert!(matches!(
        env.rt.state(&id),
        Err(kapsel_runtime::RuntimeError::NotFound(_))
    ));
}

#[test]
fn bad_specs_are_typed_errors_and_leave_nothing() {
    use kapsel_runtime::RuntimeError as E;
    let Some(env) = Env::new() else { return };
    let check = |spec: kapsel_runtime::ContainerSpec, want: fn(&E) -> bool| {
        let err = env.rt.create(&spec).unwrap_err();
        assert!(want(&err), "{err:?}");
        assert!(!env
            .config
            .state_dir
            .join("containers")
            .join(spec.id.as_str())
            .exists());
        assert!(env.cgroup_dirs_named(spec.id.as_str()).is_empty());
    };
    check(env.spec("e1", &[]), |e| matches!(e, E::InvalidSpec(_)));
    let mut s = env.spec("e2", &["/bin/true"]);
    s.image_user = Some("nosuchuser".into());
    check(s, |e| matches!(e, E::UnknownUser { .. }));
    let mut s = env.spec("e3", &["/bin/true"]);
    s.capabilities.add = vec!["CAP_WARP_DRIVE".into()];
    check(s, |e| matches!(e, E::UnknownCapability(_)));
    let mut s = env.spec("e4", &["/bin/true"]);
    s.mounts = vec![kapsel_runtime::VolumeMount {
        source: "/nonexistent/kt-volume".into(),
        destination: "/data".into(),
        read_only: false,
    }];
    check(s, |e| matches!(e, E::VolumeSourceMissing(_)));
    let mut s = env.spec("e5", &["/bin/true"]);
    s.run_as_non_root = true;
    check(s, |e| matches!(e, E::RunAsNonRoot));
    let mut s = env.spec("e6", &["/bin/true"]);
    s.cwd = Some("/tmp/../etc".into());
    check(s, |e| matches!(e, E::InvalidSpec(_)));
    // fails inside init (the volume target's parent is a file): typed, and cleaned up
    let mut s = env.spec("e7", &["/bin/true"]);
    s.mounts = vec![kapsel_runtime::VolumeMount {
        source: env.tmp.path().join("logs"),
        destination: "/etc/passwd/x".into(),
        read_only: false,
    }];
    check(s, |e| matches!(e, E::InitFailed { .. }));
    // exec failure is reported by start
    let id = env
        .rt
        .create(&env.spec("e8", &["/bin/nonexistent"]))
        .unwrap();
    assert!(env.rt.start(&id).is_err());
    env.rt.delete(&id).unwrap();
    assert!(env.cgroup_dirs_named("e8").is_empty());
}

#[test]
fn user_groups_and_run_as_non_root() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.sh("usr", "id -u; id -g; id -G; grep CapEff /proc/self/status; touch /etc/x 2>/dev/null || echo ro-etc");
    spec.image_user = Some("user".into());
    spec.run_as_non_root = true;
    spec.supplemental_groups = vec![3000];
    let (st, out) = env.run(&spec);
    assert_eq!(st.code, 0);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "1000");
    assert_eq!(l[1], "1000");
    assert_eq!(l[2], "1000 2000 3000");
    assert!(l[3].ends_with("0000000000000000"), "{}", l[3]);
    assert_eq!(l[4], "ro-etc");
    let mut spec = env.spec("usr2", &["id", "-u"]);
    spec.run_as_user = Some(4242);
    spec.run_as_group = Some(4243);
    let (_, out) = env.run(&spec);
    assert_eq!(out, "4242\n");
}

#[test]
fn read_only_rootfs_and_cwd() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.sh(
        "ro",
        "pwd; touch /x 2>/dev/null && echo writable; echo ok > /dev/shm/y && cat /dev/shm/y",
    );
    spec.read_only_rootfs = true;
    spec.cwd = Some("/home/user".into());
    let (st, out) = env.run(&spec);
    assert_eq!(st.code, 0);
    assert_eq!(out, "/home/user\nok\n");
    // the upper dir got nothing
    // and a writable rootfs keeps its writes per container, not in the image
    let (_, out) = env.run(&env.sh("rw", "echo hi > /x && cat /x"));
    assert_eq!(out, "hi\n");
    assert!(!env.rootfs.join("x").exists());
}

#[test]
fn signals_terminate_pid1_like_outside() {
    let Some(env) = Env::new() else { return };
    // no handler: SIGTERM still terminates the command (emulated) and is reported as SIGTERM
    let id = env
        .rt
        .create(&env.spec("sig", &["/bin/sleep", "100"]))
        .unwrap();
    env.rt.start(&id).unwrap();
    env.rt.signal(&id, libc::SIGTERM).unwrap();
    let st = env.rt.wait(&id, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(st.signal, Some(libc::SIGTERM));
    assert_eq!(st.code, 128 + libc::SIGTERM);
    env.rt.delete(&id).unwrap();
    // with a handler, the command gets the signal itself
    let id = env
        .rt
        .create(&env.sh(
            "sig2",
            "trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        ))
        .unwrap();
    env.rt.start(&id).unwrap();
    assert!(common::wait_for(
        || env.stdout("sig2").contains("ready"),
        Duration::from_secs(5)
    ));
    env.rt.signal(&id, libc::SIGTERM).unwrap();
    let st = env.rt.wait(&id, Some(Duration::from_secs(10))).unwrap();
    assert_eq!((st.code, st.signal), (3, None));
    assert_eq!(env.rt.try_wait(&id).unwrap(), Some(st));
    env.rt.delete(&id).unwrap();
}

#[test]
fn sandbox_shares_net_ipc_uts_between_containers() {
    let Some(env) = Env::new() else { return };
    let sid = kapsel_runtime::SandboxId::new("kt-pod").unwrap();
    env.rt
        .create_sandbox(&kapsel_runtime::SandboxSpec {
            id: sid.clone(),
            hostname: "kt-pod".into(),
            resources: Default::default(),
            share_pid: false,
            host_network: false,
        })
        .unwrap();
    // The sandbox is listed, also by a fresh runtime on the same state (a restarted agent).
    assert_eq!(env.rt.list_sandboxes().unwrap(), vec![sid.clone()]);
    let rt2 = kapsel_runtime::LinuxRuntime::new(env.config.clone()).unwrap();
    assert!(rt2.sandbox_exists(&sid).unwrap());
    let script = "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; readlink /proc/self/ns/mnt; ip link show lo | head -1";
    // a runs while b runs, so namespace ids cannot be recycled in between
    let mut a = env.sh("pa", &format!("{script}; sleep 2"));
    a.sandbox = Some(sid.clone());
    let mut b = env.sh("pb", script);
    b.sandbox = Some(sid.clone());
    let ida = env.rt.create(&a).unwrap();
    env.rt.start(&ida).unwrap();
    assert!(common::wait_for(
        || env.stdout("pa").lines().count() >= 5,
        Duration::from_secs(5)
    ));
    let (_, ob) = env.run(&b);
    env.rt.wait(&ida, Some(Duration::from_secs(10))).unwrap();
    env.rt.delete(&ida).unwrap();
    let oa = env.stdout("pa");
    let la: Vec<&str> = oa.lines().collect();
    let lb: Vec<&str> = ob.lines().collect();
    assert_eq!(la[0], "kt-pod");
    assert_eq!(la[..3], lb[..3], "net/ipc/uts shared");
    assert_ne!(la[3], lb[3], "mount namespaces are per container");
    assert!(la[4].contains("UP"), "lo is up: {}", la[4]);
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(la[1], host_net.to_str().unwrap());
    // a running container is removed with its sandbox; nothing stays mounted
    let mut c = env.spec("pc", &["/bin/sleep", "30"]);
    c.sandbox = Some(sid.clone());
    let id = env.rt.create(&c).unwrap();
    env.rt.start(&id).unwrap();
    env.rt.remove_sandbox(&sid).unwrap();
    assert!(env.rt.list().unwrap().is_empty());
    assert!(rt2.list_sandboxes().unwrap().is_empty());
    assert!(!env.rt.sandbox_exists(&sid).unwrap());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&env.config.state_dir.display().to_string()));
    assert!(env.cgroup_dirs_named("pod-kt-pod").is_empty());
}

/// An agent killed inside `create_sandbox` leaves the sandbox dir (namespace bind mounts, pod
/// cgroup) without `sandbox.json`: it is not listed, a new create for the same pod replaces it,
/// and removing it cleans up mounts and cgroup instead of failing with "not found".
#[test]
fn a_sandbox_half_made_by_an_interrupted_create_is_discarded() {
    let Some(env) = Env::new() else { return };
    let sid = kapsel_runtime::SandboxId::new("kt-half").unwrap();
    let spec = kapsel_runtime::SandboxSpec {
        id: sid.clone(),
        hostname: "kt-half".into(),
        resources: Default::default(),
        share_pid: true,
        host_network: false,
    };
    let sandbox_json = env.config.state_dir.join("sandboxes/kt-half/sandbox.json");
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&env.config.state_dir.display().to_string())
    };
    for round in ["create again", "remove"] {
        env.rt.create_sandbox(&spec).unwrap();
        // What a crash just before the last step leaves: everything but sandbox.json.
        std::fs::remove_file(&sandbox_json).unwrap();
        assert!(
            mounted(),
            "{round}: the namespace bind mounts are still there"
        );
        assert!(!env.cgroup_dirs_named("pod-kt-half").is_empty());
        let rt2 = kapsel_runtime::LinuxRuntime::new(env.config.clone()).unwrap();
        assert!(
            rt2.list_sandboxes().unwrap().is_empty(),
            "{round}: not listed"
        );
        assert!(!rt2.sandbox_exists(&sid).unwrap());
        if round == "create again" {
            rt2.create_sandbox(&spec).unwrap();
            assert!(rt2.sandbox_exists(&sid).unwrap());
        }
        rt2.remove_sandbox(&sid).unwrap();
        assert!(!mounted(), "{round}: nothing stays mounted");
        assert!(
            env.cgroup_dirs_named("pod-kt-half").is_empty(),
            "{round}: cgroup gone"
        );
        assert!(
            !sandbox_json.parent().unwrap().exists(),
            "{round}: dir gone"
        );
    }
}

#[test]
fn a_restarted_runtime_readopts_its_containers() {
    let Some(env) = Env::new() else { return };
    let id = env.rt.create(&env.sh("adopt", "sleep 1; exit 7")).unwrap();
    env.rt.start(&id).unwrap();
    // "restart the agent": a fresh instance on the same state dir
    let rt2 = kapsel_runtime::LinuxRuntime::new(env.config.clone()).unwrap();
    let list = rt2.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].status, kapsel_runtime::ContainerStatus::Running);
    let st = rt2.wait(&id, Some(Duration::from_secs(10))).unwrap();
    assert_eq!((st.code, st.signal, st.oom_killed), (7, None, false));
    assert!(matches!(
        rt2.state(&id).unwrap().status,
        kapsel_runtime::ContainerStatus::Exited(_)
    ));
    // a created-but-not-started container cannot be started by another instance, only deleted
    let id2 = env.rt.create(&env.spec("adopt2", &["/bin/true"])).unwrap();
    assert!(rt2.start(&id2).is_err());
    rt2.delete(&id2).unwrap();
    rt2.delete(&id).unwrap();
    assert!(rt2.list().unwrap().is_empty());
}

#[test]
fn rlimits_are_clamped_to_the_agents_own() {
    let Some(env) = Env::new() else { return };
    let mut agent = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut agent) };
    let mut spec = env.sh("rl", "ulimit -n; ulimit -Hn; ulimit -Hu");
    spec.rlimits = vec![
        kapsel_runtime::Rlimit {
            resource: kapsel_runtime::RlimitResource::Nofile,
            soft: 100,
            hard: u64::MAX,
        },
        kapsel_runtime::Rlimit {
            resource: kapsel_runtime::RlimitResource::Nproc,
            soft: 50,
            hard: 60,
        },
    ];
    let (st, out) = env.run(&spec);
    assert_eq!(st.code, 0);
    let hard = if agent.rlim_max == libc::RLIM_INFINITY {
        "unlimited".to_string()
    } else {
        agent.rlim_max.to_string()
    };
    assert_eq!(out, format!("100\n{hard}\n60\n"));
}

#[test]
fn host_users_false_runs_in_a_mapped_user_namespace() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.sh(
        "un",
        "id -u; cat /proc/self/uid_map | tr -s ' '; grep CapEff /proc/self/status; \
         echo hi > /tmp/f && cat /tmp/f; touch /etc/x 2>/dev/null && echo etc-writable; \
         mount -t tmpfs none /mnt 2>/dev/null && echo mounted; sleep 2",
    );
    spec.host_users = false;
    spec.userns_host_id = Some(200_000);
    let id = env.rt.create(&spec).unwrap();
    env.rt.start(&id).unwrap();
    let pid = env.rt.state(&id).unwrap().pid;
    assert!(common::wait_for(
        || env.stdout("un").lines().count() >= 4,
        Duration::from_secs(5)
    ));
    // seen from the host, container root is an unprivileged uid
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    let st = env.rt.wait(&id, Some(Duration::from_secs(10))).unwrap();
    env.rt.delete(&id).unwrap();
    assert_eq!(st.code, 0, "{}", env.stderr("un"));
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "200000"),
        "{uid_line}"
    );
    let out = env.stdout("un");
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "0");
    assert_eq!(l[1].trim(), "0 200000 65536");
    assert_eq!(l[2], "CapEff:\t00000000a80405fb");
    assert_eq!(l[3], "hi");
    assert!(
        !out.contains("etc-writable") && !out.contains("mounted"),
        "{out}"
    );
}

#[test]
fn shared_pid_namespace_sees_the_pods_processes() {
    let Some(env) = Env::new() else { return };
    let sid = kapsel_runtime::SandboxId::new("kt-spid").unwrap();
    env.rt
        .create_sandbox(&kapsel_runtime::SandboxSpec {
            id: sid.clone(),
            hostname: "kt-spid".into(),
            resources: Default::default(),
            share_pid: true,
            host_network: false,
        })
        .unwrap();
    let mut a = env.spec("sa", &["/bin/sleep", "30"]);
    a.sandbox = Some(sid.clone());
    a.share_process_namespace = true;
    let ida = env.rt.create(&a).unwrap();
    env.rt.start(&ida).unwrap();
    let mut b = env.sh(
        "sb",
        "echo me=$$; ps -o pid,comm | grep -c sleep; cat /proc/1/status | grep -c NoNewPrivs",
    );
    b.sandbox = Some(sid.clone());
    b.share_process_namespace = true;
    let (st, out) = env.run(&b);
    assert_eq!(st.code, 0, "{}", env.stderr("sb"));
    let l: Vec<&str> = out.lines().collect();
    assert_ne!(l[0], "me=1", "the pod's reaper is pid 1, not the command");
    assert_eq!(l[1], "1", "container a's sleep is visible: {out}");
    // the reaper's /proc/1 is not readable in depth (non-dumpable)... but exists
    // SIGTERM to a non-pid-1 command is delivered normally
    env.rt.signal(&ida, libc::SIGTERM).unwrap();
    let st = env.rt.wait(&ida, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(st.signal, Some(libc::SIGTERM));
    // without a share_pid sandbox the option is refused
    let mut c = env.spec("sc", &["/bin/true"]);
    c.share_process_namespace = true;
    assert!(env.rt.create(&c).unwrap_err().is_spec_error());
    env.rt.remove_sandbox(&sid).unwrap();
    assert!(env.cgroup_dirs_named("pod-kt-spid").is_empty());
    assert!(env.rt.list().unwrap().is_empty());
}
