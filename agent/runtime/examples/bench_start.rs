//! Start-to-exit latency of `/bin/true` in a busybox container: kapsel's built-in runtime vs
//! `runc run`, `crun run` (same rootfs) and a bare `unshare ... chroot` floor.
//!
//! `sudo cargo run --release -p kapsel-runtime --example bench_start [RUNS]` (default 50).
//! crun 1.8 refuses a hybrid cgroup layout unless hugetlb is its own v1 hierarchy: the bench
//! mounts it (and unmounts it again) when missing. `KT_BENCH_UNCONFINED=1` runs kapsel without
//! seccomp to show what the filter costs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kapsel_runtime::{ContainerId, ContainerSpec, LinuxRuntime, Runtime, RuntimeConfig};

fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let out = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let p = root.join(applet.trim_start_matches('/'));
        if !p.exists() {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::hard_link(root.join("bin/busybox"), &p).unwrap();
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    root
}

fn summary(name: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = v[((v.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
    format!(
        "| {name:<34} | {:>7.2} | {:>7.2} | {:>7.2} | {:>4} |",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(p99),
        v.len()
    )
}

fn run_cmd(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let st = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let d = t.elapsed();
    assert!(
        st.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    d
}

fn oci_bundle(dir: &Path, rootfs: &Path) -> PathBuf {
    let b = dir.join("bundle");
    std::fs::create_dir_all(&b).unwrap();
    run_cmd(Command::new("runc").arg("spec").current_dir(&b));
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    cfg["root"]["path"] = rootfs.display().to_string().into();
    cfg["root"]["readonly"] = false.into();
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!(["/bin/true"]);
    std::fs::write(
        b.join("config.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    b
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "run as root");
    let tmp = tempfile::Builder::new()
        .prefix("kt-bench-")
        .tempdir()
        .unwrap();
    let root = rootfs(tmp.path());
    let mut rows = Vec::new();

    // kapsel
    let config = RuntimeConfig {
        state_dir: tmp.path().join("state"),
        cgroup_parent: format!("kt-bench-{}", std::process::id()),
        ..RuntimeConfig::default()
    };
    let rt = LinuxRuntime::new(config.clone()).unwrap();
    let (mut to_exit, mut total) = (Vec::new(), Vec::new());
    let mut phases: [Vec<Duration>; 4] = Default::default();
    for i in 0..runs + 3 {
        let mut spec = ContainerSpec::new(
            ContainerId::new(format!("b{i}")).unwrap(),
            vec![root.clone()],
            vec!["/bin/true".into()],
        );
        if std::env::var_os("KT_BENCH_UNCONFINED").is_some() {
            spec.seccomp = kapsel_runtime::SeccompProfile::Unconfined;
        }
        let t = Instant::now();
        let id = rt.create(&spec).unwrap();
        let t1 = t.elapsed();
        rt.start(&id).unwrap();
        let t2 = t.elapsed();
        let st = rt.wait(&id, Some(Duration::from_secs(10))).unwrap();
        let exited = t.elapsed();
        rt.delete(&id).unwrap();
        assert_eq!(st.code, 0);
        if i >= 3 {
            phases[0].push(t1);
            phases[1].push(t2 - t1);
            phases[2].push(exited - t2);
            phases[3].push(t.elapsed() - exited);
            to_exit.push(exited);
            total.push(t.elapsed());
        }
    }
    let _ = rt.cgroup_manager().destroy(&config.cgroup_parent);
    rows.push(summary("kapsel create+start+wait", to_exit));
    for (name, v) in ["  create", "  start", "  wait", "  delete"]
        .iter()
        .zip(phases)
    {
        rows.push(summary(name, v));
    }
    rows.push(summary("kapsel create+start+wait+delete", total));

    let bundle = oci_bundle(tmp.path(), &root);
    for rt_bin in ["runc", "crun"] {
        if Command::new(rt_bin).arg("--version").output().is_err() {
            rows.push(format!("| {rt_bin:<34} | not installed |"));
            continue;
        }
        let mut hugetlb_mounted = false;
        if rt_bin == "crun" && !Path::new("/sys/fs/cgroup/hugetlb/cgroup.procs").exists() {
            std::fs::create_dir_all("/sys/fs/cgroup/hugetlb").unwrap();
            hugetlb_mounted = Command::new("mount")
                .args([
                    "-t",
                    "cgroup",
                    "-o",
                    "hugetlb",
                    "cgroup",
                    "/sys/fs/cgroup/hugetlb",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        }
        let mut v = Vec::new();
        for i in 0..runs + 3 {
            let d = run_cmd(
                Command::new(rt_bin)
                    .args(["run", "--bundle"])
                    .arg(&bundle)
                    .arg(format!("kt-bench-{rt_bin}-{}-{i}", std::process::id())),
            );
            if i >= 3 {
                v.push(d);
            }
        }
        if hugetlb_mounted {
            let _ = Command::new("umount")
                .arg("/sys/fs/cgroup/hugetlb")
                .status();
            let _ = std::fs::remove_dir("/sys/fs/cgroup/hugetlb");
        }
        rows.push(summary(&format!("{rt_bin} run"), v));
    }

    let mut v = Vec::new();
    for i in 0..runs + 3 {
        let d = run_cmd(
            Command::new("unshare")
                .args([
                    "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "chroot",
                ])
                .arg(&root)
                .arg("/bin/true"),
        );
        if i >= 3 {
            v.push(d);
        }
    }
    rows.push(summary("floor: unshare ... chroot /bin/true", v));

    println!("| {:<34} | min ms  | med ms  | p99 ms  | runs |", "runtime");
    println!("|{}|---------|---------|---------|------|", "-".repeat(36));
    for r in rows {
        println!("{r}");
    }
}
