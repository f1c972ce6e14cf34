//! Shared setup for the root-only integration tests: a busybox rootfs built from Debian's
//! `busybox-static`, a runtime with its own `kt-` cgroup parent and state dir, cleaned up on drop.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kapsel_runtime::{
    ContainerId, ContainerSpec, ExitStatus, LinuxRuntime, Runtime, RuntimeConfig,
};

/// Root and busybox available? Under `CI=true` a missing prerequisite is a failure, not a skip.
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let busybox = Path::new("/bin/busybox").exists();
    if root && busybox {
        return true;
    }
    let why = if root {
        "/bin/busybox missing (apt-get install busybox-static)"
    } else {
        "not root"
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("cannot run root container tests under CI=true: {why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// Build a busybox rootfs in `dir`.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "home/user",
        "var",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let p = root.join(applet.trim_start_matches('/'));
        if p.exists() {
            continue;
        }
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::hard_link(root.join("bin/busybox"), &p).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\ntty:x:5:\nuser:x:1000:\nextra:x:2000:user\nnogroup:x:65534:\n",
    )
    .unwrap();
    std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
    root
}

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub rt: LinuxRuntime,
    pub config: RuntimeConfig,
}

impl Env {
    pub fn new() -> Option<Self> {
        if !can_run() {
            return None;
        }
        let tmp = tempfile::Builder::new().prefix("kt-").tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let rootfs = busybox_rootfs(tmp.path());
        std::fs::create_dir(tmp.path().join("logs")).unwrap();
        let config = RuntimeConfig {
            state_dir: tmp.path().join("state"),
            cgroup_parent: format!(
                "kt-{}-{}",
                std::process::id(),
                tmp.path()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .replace('.', "")
            ),
            ..RuntimeConfig::default()
        };
        let rt = LinuxRuntime::new(config.clone()).unwrap();
        Some(Self {
            tmp,
            rootfs,
            rt,
            config,
        })
    }

    pub fn spec(&self, id: &str, cmd: &[&str]) -> ContainerSpec {
        let mut s = ContainerSpec::new(
            ContainerId::new(id).unwrap(),
            vec![self.rootfs.clone()],
            cmd.iter().map(|s| s.to_string()).collect(),
        );
        s.stdout_path = Some(self.log(id, "out"));
        s.stderr_path = Some(self.log(id, "err"));
        s
    }

    pub fn sh(&self, id: &str, script: &str) -> ContainerSpec {
        self.spec(id, &["/bin/sh", "-c", script])
    }

    pub fn log(&self, id: &str, which: &str) -> PathBuf {
        self.tmp.path().join("logs").join(format!("{id}.{which}"))
    }

    pub fn stdout(&self, id: &str) -> String {
        std::fs::read_to_string(self.log(id, "out")).unwrap_or_default()
    }

    pub fn stderr(&self, id: &str) -> String {
        std::fs::read_to_string(self.log(id, "err")).unwrap_or_default()
    }

    /// create + start + wait + delete; returns the exit status and stdout.
    pub fn run(&self, spec: &ContainerSpec) -> (ExitStatus, String) {
        let id = self.rt.create(spec).unwrap();
        self.rt.start(&id).unwrap();
        let st = self.rt.wait(&id, Some(Duration::from_secs(60))).unwrap();
        self.rt.delete(&id).unwrap();
        let out = self.stdout(id.as_str());
        if st.code != 0 {
            eprintln!("{id} exited {st:?}; stderr: {}", self.stderr(id.as_str()));
        }
        (st, out)
    }

    /// Every cgroup directory a container `id` could have, in every v1 hierarchy or v2.
    pub fn cgroup_dirs_named(&self, name: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path().join(&self.config.cgroup_parent))
            .collect();
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    if e.file_name().to_string_lossy() == name {
                        found.push(e.path());
                    }
                    stack.push(e.path());
                }
            }
        }
        found
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let sandboxes = self.config.state_dir.join("sandboxes");
        if let Ok(rd) = std::fs::read_dir(&sandboxes) {
            for e in rd.flatten() {
                if let Ok(id) = kapsel_runtime::SandboxId::new(e.file_name().to_string_lossy()) {
                    let _ = self.rt.remove_sandbox(&id);
                }
                for ns in ["net", "ipc", "uts"] {
                    let _ =
                        nix::mount::umount2(&e.path().join(ns), nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        if let Ok(list) = self.rt.list() {
            for c in list {
                let _ = self.rt.delete(&c.id);
            }
        }
        let cg = self.rt.cgroup_manager();
        // children first: whatever a failed test left under our parent
        let mut dirs = Vec::new();
        for root in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let base = root.path();
            let mut stack = vec![base.join(&self.config.cgroup_parent)];
            while let Some(d) = stack.pop() {
                if let Ok(rel) = d.strip_prefix(&base) {
                    if d.is_dir() {
                        dirs.push(rel.to_string_lossy().into_owned());
                    }
                }
                if let Ok(rd) = std::fs::read_dir(&d) {
                    for e in rd.flatten() {
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            stack.push(e.path());
                        }
                    }
                }
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        dirs.dedup();
        for d in dirs {
            let _ = cg.destroy(&d);
        }
    }
}

pub fn wait_for(mut f: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
