//! Shared helpers for kapsel-image's integration tests.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kapsel_image::{effective_command, ImageInfo};
use kapsel_runtime::{ContainerId, ContainerSpec, LinuxRuntime, Runtime, RuntimeConfig};

/// Every file below `dir` (relative paths), to prove nothing appeared outside a store.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap_or(&p).to_path_buf());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A temp dir that world can traverse (the runtime's container processes need to reach the
/// lower dirs).
pub fn tempdir() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("kimg-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    t
}

/// A kapsel runtime on a temp state dir and its own cgroup parent; removes what it made on drop.
pub struct Runner {
    pub tmp: tempfile::TempDir,
    pub rt: LinuxRuntime,
    parent: String,
}

impl Runner {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let tmp = tempdir();
        let parent = format!(
            "kimg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let config = RuntimeConfig {
            state_dir: tmp.path().join("state"),
            cgroup_parent: parent.clone(),
            ..RuntimeConfig::default()
        };
        let rt = LinuxRuntime::new(config).expect("runtime");
        Runner { tmp, rt, parent }
    }

    /// Run the image with the pod's command/args (Kubernetes' rules); returns exit code and stdout.
    pub fn run(
        &self,
        id: &str,
        info: &ImageInfo,
        command: &[&str],
        args: &[&str],
    ) -> (i32, String) {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let argv = effective_command(&info.config, &s(command), &s(args)).expect("command");
        let mut spec = ContainerSpec::new(
            ContainerId::new(id).expect("id"),
            info.lower_dirs.clone(),
            argv,
        );
        spec.env = info.config.env.clone();
        let out = self.tmp.path().join(format!("{id}.out"));
        let err = self.tmp.path().join(format!("{id}.err"));
        spec.stdout_path = Some(out.clone());
        spec.stderr_path = Some(err.clone());
        let cid = self.rt.create(&spec).expect("create");
        self.rt.start(&cid).expect("start");
        let st = self
            .rt
            .wait(&cid, Some(Duration::from_secs(60)))
            .expect("wait");
        self.rt.delete(&cid).expect("delete");
        if st.code != 0 {
            eprintln!(
                "stderr: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        (st.code, std::fs::read_to_string(&out).unwrap_or_default())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Ok(list) = self.rt.list() {
            for c in list {
                let _ = self.rt.delete(&c.id);
            }
        }
        // remove our cgroup parent in every hierarchy, deepest first
        let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let mut dirs = Vec::new();
        for r in roots.flatten() {
            let mut stack = vec![r.path().join(&self.parent)];
            while let Some(d) = stack.pop() {
                if !d.is_dir() {
                    continue;
                }
                dirs.push(d.clone());
                if let Ok(rd) = std::fs::read_dir(&d) {
                    for e in rd.flatten() {
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            stack.push(e.path());
                        }
                    }
                }
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// An overlayfs mount of `lowers` (bottom first), read-only; unmounted on drop.
pub struct Overlay {
    pub target: PathBuf,
}

impl Overlay {
    pub fn mount(lowers_bottom_first: &[PathBuf], target: &Path) -> Self {
        std::fs::create_dir_all(target).expect("mkdir");
        let lower: Vec<String> = lowers_bottom_first
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        // a single lower dir is not a valid overlay: add an empty one underneath
        let mut lower = lower.join(":");
        if lowers_bottom_first.len() == 1 {
            let empty = target.with_extension("empty");
            std::fs::create_dir_all(&empty).expect("mkdir");
            lower = format!("{lower}:{}", empty.display());
        }
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(format!("lowerdir={lower}").as_str()),
        )
        .expect("mount overlay");
        Overlay {
            target: target.to_path_buf(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}
