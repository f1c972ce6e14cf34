//! A single-host `kapsel server` with a real local agent, serving Debian's busybox-static as
//! the images `kt.local/ticker:v1` and `:v2` (the kubectl and client-library tests).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{sh, sh_quiet, short_id, tempdir, Server, ServerOpts};

/// The test's cgroups, processes and mounts, removed when dropped (also after a failure).
pub struct HostGuard {
    pub cgroup: String,
    pub dir: PathBuf,
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.cgroup, || {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let mut ours: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| Path::new(m).starts_with(&self.dir))
                .collect();
            ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in ours {
                sh_quiet(&format!("umount -l '{m}'"));
            }
        });
    }
}

/// Remove the test-owned cgroup `name` in every hierarchy: SIGKILL every process in it (the
/// containers a stopped server left running), run `between` (e.g. unmount what they held),
/// then remove the dirs children first, retrying for up to 5 s while a cgroup whose last process
/// is still exiting refuses rmdir (EBUSY).
pub fn remove_cgroup_tree(name: &str, between: impl FnOnce()) {
    let kill_all = || {
        for (_, d) in cgroup_tree_dirs(name) {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) of processes in the test's own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    };
    kill_all();
    std::thread::sleep(Duration::from_millis(200));
    between();
    for _ in 0..50 {
        for (_, d) in cgroup_tree_dirs(name) {
            let _ = std::fs::remove_dir(d);
        }
        if cgroup_tree_dirs(name).is_empty() {
            break;
        }
        kill_all();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every directory of the cgroup tree `name` (relative to a hierarchy root) in every
/// hierarchy under /sys/fs/cgroup, with the tree's top in that hierarchy; children come
/// before their parents (the order rmdir needs).
pub fn cgroup_tree_dirs(name: &str) -> Vec<(PathBuf, PathBuf)> {
    fn walk(top: &Path, dir: &Path, out: &mut Vec<(PathBuf, PathBuf)>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(top, &e.path(), out);
                }
            }
        }
        out.push((top.to_path_buf(), dir.to_path_buf()));
    }
    let mut tops = vec![PathBuf::from("/sys/fs/cgroup").join(name)];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        tops.extend(rd.flatten().map(|h| h.path().join(name)));
    }
    let mut out = Vec::new();
    for top in tops.iter().filter(|t| t.is_dir()) {
        walk(top, top, &mut out);
    }
    out
}

/// A busybox rootfs (Debian's busybox-static) served as images `kt.local/ticker:v1` and `:v2`.
pub fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "dev", "sys"] {
        std::fs::create_dir_all(root.join(d)).expect("rootfs dir");
    }
    let bb = sh("command -v busybox").trim().to_string();
    std::fs::copy(&bb, root.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).expect("sh link");
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
    root
}

/// A `kapsel server` with a real local agent serving the busybox rootfs as images
/// `kt.local/ticker:v1` and `:v2`; the guard removes what the pods leave on the host.
pub fn start_cluster(prefix: &str) -> (tempfile::TempDir, HostGuard, Server) {
    let dir = tempdir(prefix);
    let id = short_id();
    let guard = HostGuard {
        cgroup: format!("kt-kubectl-{id}"),
        dir: dir.path().to_path_buf(),
    };
    let root = rootfs(dir.path());
    let opts = ServerOpts {
        node_name: Some(format!("kt-kubectl-{id}")),
        extra: vec![
            "--runtime-dir".into(),
            dir.path().join("run").display().to_string(),
            "--cgroup-parent".into(),
            format!("kt-kubectl-{id}"),
            "--image-dir".into(),
            format!("kt.local/ticker:v1={}", root.display()),
            "--image-dir".into(),
            format!("kt.local/ticker:v2={}", root.display()),
        ],
        ..Default::default()
    };
    let server = Server::start(&dir.path().join("data"), &opts);
    (dir, guard, server)
}
