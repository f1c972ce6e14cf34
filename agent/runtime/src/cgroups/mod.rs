//! cgroups v1 and v2 behind one trait. Controllers are plain "spec → (file, value)" writes under
//! an injectable root, so the file writes are unit-tested on temp dirs without root.
//!
//! Layout: `<parent>/<pod-cgroup>/<container>` (or `<parent>/<container>` for a standalone
//! container) where `<parent>` (default `kapsel`) is owned by the agent. The cgroups the machine
//! put the agent in are never touched.

pub mod v1;
pub mod v2;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use v1::V1Manager;
pub use v2::V2Manager;

use crate::spec::{ContainerStats, Resources};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy found in /proc/self/mountinfo")]
    NoHierarchy,
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {path} still has tasks after killing them")]
    Busy { path: PathBuf },
    #[error("bad cgroup path {0:?}")]
    BadPath(String),
}

pub type CgResult<T> = Result<T, CgroupError>;

pub(crate) fn write_file(path: &Path, value: &str) -> CgResult<()> {
    std::fs::write(path, value).map_err(|source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_file(path: &Path) -> CgResult<String> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control).
pub(crate) fn flat_keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

pub(crate) fn check_rel(rel: &str) -> CgResult<()> {
    if rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(CgroupError::BadPath(rel.to_string()));
    }
    Ok(())
}

/// CFS period used for cpu limits.
pub const CFS_PERIOD_US: u64 = 100_000;

/// millicores → cpu.shares (Kubernetes' `MilliCPUToShares`).
pub fn millis_to_shares(millis: u64) -> u64 {
    (millis * 1024 / 1000).max(2)
}

/// millicores → CFS quota in µs for [`CFS_PERIOD_US`] (minimum 1 ms, as the kernel demands).
pub fn millis_to_quota(millis: u64) -> u64 {
    (millis * CFS_PERIOD_US / 1000).max(1000)
}

/// cpu.shares → cpu.weight (the OCI/runc conversion).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// The cgroup operations the runtime needs. `rel` is a path relative to the hierarchy root(s),
/// like `kapsel/pod-x/c1`.
pub trait CgroupManager: Send + Sync + Debug {
    /// "v1" or "v2".
    fn version(&self) -> &'static str;
    /// Create `rel` (and missing ancestors) and apply `res` to it.
    fn create(&self, rel: &str, res: &Resources) -> CgResult<()>;
    /// The `cgroup.procs` files a process writes `0` into to join `rel`.
    fn procs_files(&self, rel: &str) -> Vec<PathBuf>;
    /// Pids in `rel` (recursively for v1 where children exist).
    fn pids(&self, rel: &str) -> CgResult<Vec<i32>>;
    fn stats(&self, rel: &str) -> CgResult<ContainerStats>;
    /// How many OOM kills the memory controller recorded for `rel`.
    fn oom_kills(&self, rel: &str) -> CgResult<u64>;
    /// Remove `rel` (must be empty of tasks and child cgroups). Missing is fine.
    fn remove_dir(&self, rel: &str) -> CgResult<()>;
    /// Does `rel` exist in any hierarchy?
    fn exists(&self, rel: &str) -> bool;
    /// SIGKILL every task of `rel` and wait until it is empty (freezing first where possible).
    fn kill_all(&self, rel: &str, timeout: Duration) -> CgResult<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.pids(rel)?;
            if pids.is_empty() {
                return Ok(());
            }
            for p in pids {
                // SAFETY: kill(2) with a pid from the cgroup and SIGKILL; no memory involved.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Busy {
                    path: PathBuf::from(rel),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    /// Kill all tasks and remove `rel`, retrying while the kernel still reports it busy.
    fn destroy(&self, rel: &str) -> CgResult<()> {
        if !self.exists(rel) {
            return Ok(());
        }
        self.kill_all(rel, Duration::from_secs(10))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.remove_dir(rel) {
                Ok(()) => return Ok(()),
                Err(CgroupError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                {
                    let _ = self.kill_all(rel, Duration::from_secs(1));
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One parsed cgroup mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// `true` for cgroup2.
    pub unified: bool,
    /// v1 controllers (from the super options), e.g. `["cpu", "cpuacct"]`.
    pub controllers: Vec<String>,
}

/// Parse the cgroup mounts out of a mountinfo text.
///
/// Mounts of a hierarchy's root (`/` in the root field) are used. Inside a container that
/// shares the host's cgroup namespace (Docker on cgroup v1: `--privileged` node containers in
/// docker-compose.yml), each hierarchy is mounted only from the container's own cgroup
/// (`/docker/ID`): then those mounts are used, and everything the runtime creates stays under
/// the container's cgroup.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let rooted = parse_mounts(text, true);
    if rooted.is_empty() {
        parse_mounts(text, false)
    } else {
        rooted
    }
}

fn parse_mounts(text: &str, only_root: bool) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split_whitespace().collect();
        let r: Vec<&str> = right.split_whitespace().collect();
        if l.len() < 5 || r.len() < 3 || (only_root && l[3] != "/") {
            continue;
        }
        let mount_point = PathBuf::from(l[4].replace("\\040", " "));
        match r[0] {
            "cgroup2" => out.push(CgroupMount {
                mount_point,
                unified: true,
                controllers: vec![],
            }),
            "cgroup" => {
                let controllers = r[2]
                    .split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro" | "noprefix" | "xattr" | "clone_children")
                            && !o.starts_with("name=")
                            && !o.starts_with("release_agent=")
                            && !o.contains('=')
                    })
                    .map(str::to_string)
                    .collect::<Vec<_>>();
                if !controllers.is_empty() {
                    out.push(CgroupMount {
                        mount_point,
                        unified: false,
                        controllers,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Choose the manager from the mount table: v1 when any v1 controller we use is mounted
/// (legacy and hybrid layouts), else v2 on the cgroup2 mount that has controllers.
/// `v2_has_controllers` says whether a cgroup2 mount point lists controllers.
pub fn manager_from_mounts(
    mounts: &[CgroupMount],
    v2_has_controllers: impl Fn(&Path) -> bool,
) -> CgResult<Box<dyn CgroupManager>> {
    let wanted = ["memory", "cpu", "cpuacct", "pids", "devices", "freezer"];
    let v1: Vec<(String, PathBuf)> = mounts
        .iter()
        .filter(|m| !m.unified)
        .flat_map(|m| {
            m.controllers
                .iter()
                .filter(|c| wanted.contains(&c.as_str()))
                .map(move |c| (c.clone(), m.mount_point.clone()))
        })
        .collect();
    if v1
        .iter()
        .any(|(c, _)| c == "memory" || c == "pids" || c == "cpu")
    {
        return Ok(Box::new(V1Manager::new(v1)));
    }
    if let Some(m) = mounts
        .iter()
        .find(|m| m.unified && v2_has_controllers(&m.mount_point))
    {
        return Ok(Box::new(V2Manager::new(m.mount_point.clone())));
    }
    Err(CgroupError::NoHierarchy)
}

/// Detect the host's layout from /proc/self/mountinfo.
pub fn detect() -> CgResult<Box<dyn CgroupManager>> {
    let text = read_file(Path::new("/proc/self/mountinfo"))?;
    manager_from_mounts(&parse_mountinfo(&text), |p| {
        std::fs::read_to_string(p.join("cgroup.controllers"))
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const UNIFIED: &str = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    const COMOUNTED: &str =
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";

    #[test]
    fn detects_hybrid_as_v1() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 5, "{mounts:?}");
        assert!(mounts.iter().all(|m| m.controllers != ["name=systemd"]));
        let m = manager_from_mounts(&mounts, |_| false).unwrap();
        assert_eq!(m.version(), "v1");
    }

    #[test]
    fn detects_unified_as_v2() {
        let m = manager_from_mounts(&parse_mountinfo(UNIFIED), |_| true).unwrap();
        assert_eq!(m.version(), "v2");
        assert!(manager_from_mounts(&parse_mountinfo(UNIFIED), |_| false).is_err());
    }

    /// A privileged Docker container on cgroup v1 (host cgroup namespace): every hierarchy is
    /// mounted from the container's cgroup.
    const DOCKER_V1: &str = "\
102 101 0:48 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
103 102 0:29 /docker/c74f /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
106 102 0:32 /docker/c74f /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
110 102 0:36 /docker/c74f /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
111 102 0:37 /docker/c74f /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,name=systemd
";

    #[test]
    fn uses_container_rooted_mounts_only_without_root_mounts() {
        let m = parse_mountinfo(DOCKER_V1);
        let points: Vec<_> = m.iter().map(|m| m.mount_point.clone()).collect();
        assert_eq!(
            points,
            [
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/pids"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(manager_from_mounts(&m, |_| false).unwrap().version(), "v1");
        // a host with root mounts plus a bind mount of a subtree: only the root mounts count
        let both = format!(
            "{HYBRID}200 31 0:32 /docker/x /mnt/memory rw,relatime - cgroup cgroup rw,memory\n"
        );
        assert!(parse_mountinfo(&both)
            .iter()
            .all(|m| m.mount_point != Path::new("/mnt/memory")));
    }

    #[test]
    fn parses_comounted_controllers() {
        let m = parse_mountinfo(COMOUNTED);
        assert_eq!(m[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(m[0].mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
    }

    #[test]
    fn cpu_conversions_match_kubernetes() {
        assert_eq!(millis_to_shares(1000), 1024);
        assert_eq!(millis_to_shares(1), 2);
        assert_eq!(millis_to_quota(200), 20_000);
        assert_eq!(millis_to_quota(5), 1000);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn rejects_escaping_paths() {
        for bad in ["", "/abs", "a/../b", "a//b", "./a"] {
            assert!(check_rel(bad).is_err(), "{bad}");
        }
        assert!(check_rel("kapsel/pod-1/c1").is_ok());
    }
}
