//! cgroup v1: one hierarchy per controller (or co-mounted ones), found in mountinfo.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    check_rel, flat_keyed, millis_to_quota, millis_to_shares, read_file, write_file, CgResult,
    CgroupError, CgroupManager, CFS_PERIOD_US,
};
use crate::spec::{ContainerStats, Resources};

/// runc's default device allow-list (after `a` is denied): mknod of anything, and rwm on the
/// usual character devices and ptys.
pub const DEFAULT_DEVICE_RULES: [&str; 10] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

#[derive(Debug, Clone)]
pub struct V1Manager {
    /// (controller, mount point); co-mounted controllers share a mount point.
    controllers: Vec<(String, PathBuf)>,
}

impl V1Manager {
    pub fn new(controllers: Vec<(String, PathBuf)>) -> Self {
        Self { controllers }
    }

    fn mount_of(&self, controller: &str) -> Option<&Path> {
        self.controllers
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, p)| p.as_path())
    }

    fn dir(&self, controller: &str, rel: &str) -> Option<PathBuf> {
        self.mount_of(controller).map(|m| m.join(rel))
    }

    fn unique_mounts(&self) -> BTreeSet<&Path> {
        self.controllers.iter().map(|(_, p)| p.as_path()).collect()
    }

    /// Apply the resource files of one cgroup directory (pure file writes; unit-tested).
    pub fn apply(&self, rel: &str, res: &Resources) -> CgResult<()> {
        if let (Some(dir), Some(limit)) = (self.dir("memory", rel), res.memory_limit) {
            write_file(&dir.join("memory.limit_in_bytes"), &limit.to_string())?;
            // No swap beyond the limit where swap accounting exists.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write_file(&memsw, &limit.to_string())?;
            }
        }
        if let Some(dir) = self.dir("cpu", rel) {
            if let Some(req) = res.cpu_request_millis {
                write_file(&dir.join("cpu.shares"), &millis_to_shares(req).to_string())?;
            }
            if let Some(lim) = res.cpu_limit_millis {
                write_file(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                write_file(
                    &dir.join("cpu.cfs_quota_us"),
                    &millis_to_quota(lim).to_string(),
                )?;
            }
        }
        if let (Some(dir), Some(max)) = (self.dir("pids", rel), res.pids_limit) {
            write_file(&dir.join("pids.max"), &max.to_string())?;
        }
        if let Some(dir) = self.dir("devices", rel) {
            write_file(&dir.join("devices.deny"), "a")?;
            for rule in DEFAULT_DEVICE_RULES {
                write_file(&dir.join("devices.allow"), rule)?;
            }
        }
        Ok(())
    }

    fn procs_recursive(dir: &Path, out: &mut Vec<i32>) -> CgResult<()> {
        let text = match std::fs::read_to_string(dir.join("cgroup.procs")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(CgroupError::Io {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    Self::procs_recursive(&e.path(), out)?;
                }
            }
        }
        Ok(())
    }

    fn freeze(&self, rel: &str, state: &str) -> bool {
        let Some(dir) = self.dir("freezer", rel) else {
            return false;
        };
        if write_file(&dir.join("freezer.state"), state).is_err() {
            return false;
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match std::fs::read_to_string(dir.join("freezer.state")) {
                Ok(s) if s.trim() == state => return true,
                Ok(_) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => return false,
            }
        }
        false
    }
}

impl CgroupManager for V1Manager {
    fn version(&self) -> &'static str {
        "v1"
    }

    fn create(&self, rel: &str, res: &Resources) -> CgResult<()> {
        check_rel(rel)?;
        for m in self.unique_mounts() {
            let dir = m.join(rel);
            std::fs::create_dir_all(&dir)
                .map_err(|source| CgroupError::Io { path: dir, source })?;
        }
        self.apply(rel, res)
    }

    fn procs_files(&self, rel: &str) -> Vec<PathBuf> {
        self.unique_mounts()
            .into_iter()
            .map(|m| m.join(rel).join("cgroup.procs"))
            .collect()
    }

    fn pids(&self, rel: &str) -> CgResult<Vec<i32>> {
        check_rel(rel)?;
        let mut out = Vec::new();
        for m in self.unique_mounts() {
            Self::procs_recursive(&m.join(rel), &mut out)?;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn stats(&self, rel: &str) -> CgResult<ContainerStats> {
        let mut s = ContainerStats::default();
        if let Some(dir) = self.dir("cpuacct", rel) {
            s.cpu_usage_ns = read_file(&dir.join("cpuacct.usage"))?
                .trim()
                .parse()
                .unwrap_or(0);
        }
        if let Some(dir) = self.dir("memory", rel) {
            s.memory_usage_bytes = read_file(&dir.join("memory.usage_in_bytes"))?
                .trim()
                .parse()
                .unwrap_or(0);
            let stat = read_file(&dir.join("memory.stat"))?;
            let inactive = flat_keyed(&stat, "total_inactive_file").unwrap_or(0);
            s.memory_working_set_bytes = s.memory_usage_bytes.saturating_sub(inactive);
        }
        if let Some(dir) = self.dir("pids", rel) {
            s.pids = read_file(&dir.join("pids.current"))?
                .trim()
                .parse()
                .unwrap_or(0);
        }
        Ok(s)
    }

    fn oom_kills(&self, rel: &str) -> CgResult<u64> {
        match self.dir("memory", rel) {
            Some(dir) => Ok(
                flat_keyed(&read_file(&dir.join("memory.oom_control"))?, "oom_kill").unwrap_or(0),
            ),
            None => Ok(0),
        }
    }

    fn remove_dir(&self, rel: &str) -> CgResult<()> {
        check_rel(rel)?;
        for m in self.unique_mounts() {
            let dir = m.join(rel);
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(CgroupError::Io { path: dir, source }),
            }
        }
        Ok(())
    }

    fn exists(&self, rel: &str) -> bool {
        check_rel(rel).is_ok() && self.unique_mounts().iter().any(|m| m.join(rel).exists())
    }

    fn kill_all(&self, rel: &str, timeout: Duration) -> CgResult<()> {
        if self.pids(rel)?.is_empty() {
            return Ok(());
        }
        // Freeze first so a fork bomb cannot outrun the killing, then kill and thaw.
        let frozen = self.freeze(rel, "FROZEN");
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.pids(rel)?;
            if pids.is_empty() {
                break;
            }
            for p in &pids {
                // SAFETY: kill(2) with integer arguments.
                unsafe { libc::kill(*p, libc::SIGKILL) };
            }
            if frozen {
                self.freeze(rel, "THAWED");
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Busy {
                    path: PathBuf::from(rel),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if frozen {
            self.freeze(rel, "THAWED");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, V1Manager) {
        let tmp = tempfile::tempdir().unwrap();
        let mut ctrls = Vec::new();
        for c in ["memory", "cpu", "cpuacct", "pids", "devices"] {
            std::fs::create_dir(tmp.path().join(c)).unwrap();
            ctrls.push((c.to_string(), tmp.path().join(c)));
        }
        (tmp, V1Manager::new(ctrls))
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn v1_writes_limits() {
        let (tmp, m) = fixture();
        let res = Resources {
            memory_limit: Some(32 << 20),
            cpu_limit_millis: Some(200),
            cpu_request_millis: Some(500),
            pids_limit: Some(64),
        };
        m.create("kapsel/pod-a/c1", &res).unwrap();
        let d = |c: &str| tmp.path().join(c).join("kapsel/pod-a/c1");
        assert_eq!(read(d("memory").join("memory.limit_in_bytes")), "33554432");
        assert_eq!(read(d("cpu").join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(d("cpu").join("cpu.cfs_quota_us")), "20000");
        assert_eq!(read(d("cpu").join("cpu.shares")), "512");
        assert_eq!(read(d("pids").join("pids.max")), "64");
        // plain files keep the last write: the last allow rule
        assert_eq!(read(d("devices").join("devices.deny")), "a");
        assert_eq!(read(d("devices").join("devices.allow")), "c 136:* rwm");
        assert!(d("cpuacct").is_dir());
        assert!(!d("memory").join("memory.memsw.limit_in_bytes").exists());
    }

    #[test]
    fn v1_unset_limits_write_nothing() {
        let (tmp, m) = fixture();
        m.create("kapsel/c2", &Resources::default()).unwrap();
        let d = tmp.path().join("memory/kapsel/c2");
        assert!(d.is_dir());
        assert!(!d.join("memory.limit_in_bytes").exists());
        assert!(!tmp.path().join("cpu/kapsel/c2/cpu.cfs_quota_us").exists());
    }

    #[test]
    fn v1_memsw_follows_limit_when_present() {
        let (tmp, m) = fixture();
        m.create("kapsel/c3", &Resources::default()).unwrap();
        let d = tmp.path().join("memory/kapsel/c3");
        std::fs::write(d.join("memory.memsw.limit_in_bytes"), "").unwrap();
        m.apply(
            "kapsel/c3",
            &Resources {
                memory_limit: Some(1000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read(d.join("memory.memsw.limit_in_bytes")), "1000");
    }

    #[test]
    fn v1_stats_oom_procs_and_remove() {
        let (tmp, m) = fixture();
        m.create("kapsel/c4", &Resources::default()).unwrap();
        let d = |c: &str| tmp.path().join(c).join("kapsel/c4");
        std::fs::write(d("cpuacct").join("cpuacct.usage"), "12345\n").unwrap();
        std::fs::write(d("memory").join("memory.usage_in_bytes"), "1000\n").unwrap();
        std::fs::write(
            d("memory").join("memory.stat"),
            "cache 5\ninactive_file 1\ntotal_inactive_file 300\n",
        )
        .unwrap();
        std::fs::write(d("pids").join("pids.current"), "3\n").unwrap();
        std::fs::write(
            d("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        let s = m.stats("kapsel/c4").unwrap();
        assert_eq!(s.cpu_usage_ns, 12345);
        assert_eq!(s.memory_usage_bytes, 1000);
        assert_eq!(s.memory_working_set_bytes, 700);
        assert_eq!(s.pids, 3);
        assert_eq!(m.oom_kills("kapsel/c4").unwrap(), 2);
        assert_eq!(
            m.procs_files("kapsel/c4").len(),
            5,
            "one cgroup.procs per hierarchy"
        );
        std::fs::write(d("pids").join("cgroup.procs"), "7\n9\n").unwrap();
        assert_eq!(m.pids("kapsel/c4").unwrap(), vec![7, 9]);
        assert!(m.exists("kapsel/c4"));
    }
}
