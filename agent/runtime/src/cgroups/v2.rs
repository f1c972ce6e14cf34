//! cgroup v2: one unified hierarchy; controllers are enabled top-down via
//! `cgroup.subtree_control`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    check_rel, flat_keyed, millis_to_quota, millis_to_shares, read_file, shares_to_weight,
    write_file, CgResult, CgroupError, CgroupManager, CFS_PERIOD_US,
};
use crate::spec::{ContainerStats, Resources};

const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Debug, Clone)]
pub struct V2Manager {
    root: PathBuf,
}

impl V2Manager {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Enable our controllers in `dir`'s subtree (only those it has and has not enabled yet).
    fn enable_subtree(dir: &Path) -> CgResult<()> {
        let available = std::fs::read_to_string(dir.join("cgroup.controllers"))
            .unwrap_or_else(|_| CONTROLLERS.join(" "));
        let enabled =
            std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        let want: Vec<String> = CONTROLLERS
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .filter(|c| !enabled.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if want.is_empty() {
            return Ok(());
        }
        write_file(&dir.join("cgroup.subtree_control"), &want.join(" "))
    }

    /// Apply the resource files of one cgroup directory (pure file writes; unit-tested).
    pub fn apply(&self, rel: &str, res: &Resources) -> CgResult<()> {
        let dir = self.root.join(rel);
        if let Some(limit) = res.memory_limit {
            write_file(&dir.join("memory.max"), &limit.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write_file(&swap, "0")?;
            }
        }
        if let Some(req) = res.cpu_request_millis {
            write_file(
                &dir.join("cpu.weight"),
                &shares_to_weight(millis_to_shares(req)).to_string(),
            )?;
        }
        if let Some(lim) = res.cpu_limit_millis {
            write_file(
                &dir.join("cpu.max"),
                &format!("{} {}", millis_to_quota(lim), CFS_PERIOD_US),
            )?;
        }
        if let Some(max) = res.pids_limit {
            write_file(&dir.join("pids.max"), &max.to_string())?;
        }
        Ok(())
    }
}

impl CgroupManager for V2Manager {
    fn version(&self) -> &'static str {
        "v2"
    }

    fn create(&self, rel: &str, res: &Resources) -> CgResult<()> {
        check_rel(rel)?;
        let mut dir = self.root.clone();
        for comp in rel.split('/') {
            Self::enable_subtree(&dir)?;
            dir.push(comp);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(CgroupError::Io { path: dir, source }),
            }
        }
        self.apply(rel, res)
    }

    fn procs_files(&self, rel: &str) -> Vec<PathBuf> {
        vec![self.root.join(rel).join("cgroup.procs")]
    }

    fn pids(&self, rel: &str) -> CgResult<Vec<i32>> {
        check_rel(rel)?;
        let mut out = Vec::new();
        let mut stack = vec![self.root.join(rel)];
        while let Some(dir) = stack.pop() {
            match std::fs::read_to_string(dir.join("cgroup.procs")) {
                Ok(t) => out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(CgroupError::Io { path: dir, source }),
            }
            if let Ok(rd) = std::fs::read_dir(&dir) {
                stack.extend(
                    rd.flatten()
                        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                        .map(|e| e.path()),
                );
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn stats(&self, rel: &str) -> CgResult<ContainerStats> {
        let dir = self.root.join(rel);
        let cpu = read_file(&dir.join("cpu.stat"))?;
        let usage: u64 = read_file(&dir.join("memory.current"))?
            .trim()
            .parse()
            .unwrap_or(0);
        let stat = read_file(&dir.join("memory.stat"))?;
        let inactive = flat_keyed(&stat, "inactive_file").unwrap_or(0);
        Ok(ContainerStats {
            cpu_usage_ns: flat_keyed(&cpu, "usage_usec").unwrap_or(0) * 1000,
            memory_usage_bytes: usage,
            memory_working_set_bytes: usage.saturating_sub(inactive),
            pids: read_file(&dir.join("pids.current"))?
                .trim()
                .parse()
                .unwrap_or(0),
        })
    }

    fn oom_kills(&self, rel: &str) -> CgResult<u64> {
        Ok(flat_keyed(
            &read_file(&self.root.join(rel).join("memory.events"))?,
            "oom_kill",
        )
        .unwrap_or(0))
    }

    fn remove_dir(&self, rel: &str) -> CgResult<()> {
        check_rel(rel)?;
        let dir = self.root.join(rel);
        match std::fs::remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CgroupError::Io { path: dir, source }),
        }
    }

    fn exists(&self, rel: &str) -> bool {
        check_rel(rel).is_ok() && self.root.join(rel).exists()
    }

    fn kill_all(&self, rel: &str, timeout: Duration) -> CgResult<()> {
        let kill = self.root.join(rel).join("cgroup.kill");
        if kill.exists() {
            write_file(&kill, "1")?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.pids(rel)?;
            if pids.is_empty() {
                return Ok(());
            }
            for p in pids {
                // SAFETY: kill(2) with integer arguments.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn v2_enables_controllers_and_writes_limits() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        std::fs::write(tmp.path().join("cgroup.subtree_control"), "memory\n").unwrap();
        let m = V2Manager::new(tmp.path().to_path_buf());
        let res = Resources {
            memory_limit: Some(32 << 20),
            cpu_limit_millis: Some(200),
            cpu_request_millis: Some(1000),
            pids_limit: Some(100),
        };
        m.create("kapsel/pod-b/c1", &res).unwrap();
        // root already had memory: only cpu and pids are added
        assert_eq!(
            read(tmp.path().join("cgroup.subtree_control")),
            "+cpu +pids"
        );
        // intermediate dirs (no cgroup.controllers fixture) get all three
        assert_eq!(
            read(tmp.path().join("kapsel/cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        assert_eq!(
            read(tmp.path().join("kapsel/pod-b/cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        let d = tmp.path().join("kapsel/pod-b/c1");
        assert_eq!(read(d.join("memory.max")), "33554432");
        assert_eq!(read(d.join("cpu.max")), "20000 100000");
        assert_eq!(read(d.join("cpu.weight")), "39");
        assert_eq!(read(d.join("pids.max")), "100");
        assert!(
            !d.join("cgroup.subtree_control").exists(),
            "leaf keeps no controllers"
        );
    }

    #[test]
    fn v2_stats_and_oom() {
        let tmp = tempfile::tempdir().unwrap();
        let m = V2Manager::new(tmp.path().to_path_buf());
        m.create("kapsel/c2", &Resources::default()).unwrap();
        let d = tmp.path().join("kapsel/c2");
        std::fs::write(d.join("cpu.stat"), "usage_usec 250\nuser_usec 200\n").unwrap();
        std::fs::write(d.join("memory.current"), "4096\n").unwrap();
        std::fs::write(d.join("memory.stat"), "anon 10\ninactive_file 1024\n").unwrap();
        std::fs::write(d.join("pids.current"), "2\n").unwrap();
        std::fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        let s = m.stats("kapsel/c2").unwrap();
        assert_eq!(s.cpu_usage_ns, 250_000);
        assert_eq!(s.memory_working_set_bytes, 3072);
        assert_eq!(s.pids, 2);
        assert_eq!(m.oom_kills("kapsel/c2").unwrap(), 1);
        std::fs::write(d.join("memory.events"), "oom_kill 0\n").unwrap();
        assert_eq!(m.oom_kills("kapsel/c2").unwrap(), 0);
    }

    #[test]
    fn v2_swap_is_disabled_when_limited() {
        let tmp = tempfile::tempdir().unwrap();
        let m = V2Manager::new(tmp.path().to_path_buf());
        let d = tmp.path().join("kapsel/c3");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("memory.swap.max"), "max").unwrap();
        m.apply(
            "kapsel/c3",
            &Resources {
                memory_limit: Some(1 << 20),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read(d.join("memory.swap.max")), "0");
    }
}
