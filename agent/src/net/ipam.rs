//! Host-local IPAM: pod IPs from the node's podCIDR, one per pod uid.
//!
//! [`Ipam`] is pure (allocate/release over a map); [`IpamFile`] persists it as JSON in the
//! agent's data dir (`net/ipam.json`, written to a temp file, fsynced and renamed before the
//! IP is used), so an agent restart keeps every pod's IP and never hands out a live one twice.
//! The network address, the gateway (`.1`, the bridge) and the broadcast address are never
//! handed out. Allocation is next-fit (like CNI's host-local): after a release the same IP is
//! reused only once the range wraps, so a stale connection to a dead pod does not reach a new
//! one right away.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cidr::Ipv4Cidr;
use super::NetError;

/// One allocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub uid: String,
    pub ip: Ipv4Addr,
    /// `namespace/name`, for humans.
    #[serde(default)]
    pub pod: String,
    /// What else the pod's network holds (so an agent restart can rebuild the rules at once
    /// and remove the network of a pod that vanished while the agent was down).
    #[serde(default)]
    pub extra: PodExtra,
}

/// Per-pod network facts kept with the allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodExtra {
    /// The pod's netns file.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    #[serde(default)]
    pub host_if: String,
    #[serde(default)]
    pub host_ports: Vec<super::plan::HostPort>,
    /// (ingress, egress) bits/s applied.
    #[serde(default)]
    pub bandwidth: (Option<u64>, Option<u64>),
    /// `kapsel.dev/egress: deny`: no traffic out of the cluster network.
    #[serde(default)]
    pub egress_deny: bool,
}

/// The IPAM state of one podCIDR.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    /// The range; allocations outside it are dropped when it changes.
    pub cidr: Option<Ipv4Cidr>,
    /// By uid.
    pub allocations: BTreeMap<String, Allocation>,
    /// Offset of the last address handed out (next-fit).
    #[serde(default)]
    pub last: u64,
}

impl Ipam {
    /// Switch to `cidr`. Allocations outside it are dropped and returned (their pods need a
    /// new network: the node's podCIDR changed, e.g. the Node was deleted and re-created).
    pub fn set_cidr(&mut self, cidr: Ipv4Cidr) -> Vec<Allocation> {
        if self.cidr == Some(cidr) {
            return Vec::new();
        }
        self.cidr = Some(cidr);
        self.last = 0;
        let (keep, drop): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.allocations)
            .into_iter()
            .partition(|(_, a)| cidr.contains_ip(a.ip));
        self.allocations = keep;
        drop.into_values().collect()
    }

    /// The pod's IP, allocating one if it has none. `Err` when the range is full or unset.
    pub fn allocate(&mut self, uid: &str, pod: &str) -> Result<Ipv4Addr, NetError> {
        if let Some(a) = self.allocations.get(uid) {
            return Ok(a.ip);
        }
        let cidr = self
            .cidr
            .ok_or_else(|| NetError::NotReady("the node has no podCIDR yet".into()))?;
        let used: std::collections::HashSet<Ipv4Addr> =
            self.allocations.values().map(|a| a.ip).collect();
        let size = cidr.size();
        // usable offsets: 2 ..= size-2 (not the network, the gateway or broadcast)
        if size < 4 {
            return Err(NetError::Exhausted(cidr.to_string()));
        }
        let first = 2;
        let last = size - 2;
        let span = last - first + 1;
        let start = if (first..=last).contains(&self.last) {
            self.last + 1
        } else {
            first
        };
        for i in 0..span {
            let off = first + (start - first + i) % span;
            let ip = cidr
                .nth(off)
                .ok_or_else(|| NetError::Exhausted(cidr.to_string()))?;
            if !used.contains(&ip) {
                self.last = off;
                self.allocations.insert(
                    uid.to_string(),
                    Allocation {
                        uid: uid.to_string(),
                        ip,
                        pod: pod.to_string(),
                        extra: PodExtra::default(),
                    },
                );
                return Ok(ip);
            }
        }
        Err(NetError::Exhausted(cidr.to_string()))
    }

    /// Free the pod's IP; returns it.
    pub fn release(&mut self, uid: &str) -> Option<Ipv4Addr> {
        self.allocations.remove(uid).map(|a| a.ip)
    }

    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.allocations.get(uid).map(|a| a.ip)
    }
}

/// [`Ipam`] persisted in a JSON file.
#[derive(Debug)]
pub struct IpamFile {
    path: PathBuf,
    pub state: Ipam,
}

impl IpamFile {
    /// Load `path` (an empty state when it does not exist).
    pub fn open(path: &Path) -> Result<Self, NetError> {
        let state = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| NetError::State(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ipam::default(),
            Err(e) => return Err(NetError::State(format!("{}: {e}", path.display()))),
        };
        Ok(IpamFile {
            path: path.to_path_buf(),
            state,
        })
    }

    /// Write the state durably (temp file, fsync, rename, fsync of the directory).
    pub fn save(&self) -> Result<(), NetError> {
        use std::io::Write;
        let err = |e: std::io::Error| NetError::State(format!("{}: {e}", self.path.display()));
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = self.path.with_extension("json.tmp");
        let body =
            serde_json::to_vec_pretty(&self.state).map_err(|e| NetError::State(e.to_string()))?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        Ipv4Cidr::parse(s).unwrap()
    }

    #[test]
    fn allocate_table() {
        // (range, pre-allocated uids in order, released uids, next uid → expected ip or None)
        struct Case {
            name: &'static str,
            range: &'static str,
            pre: Vec<&'static str>,
            release: Vec<&'static str>,
            next: &'static str,
            want: Option<&'static str>,
        }
        let cases = vec![
            Case {
                name: "first pod gets .2 (.1 is the bridge)",
                range: "10.88.1.0/24",
                pre: vec![],
                release: vec![],
                next: "a",
                want: Some("10.88.1.2"),
            },
            Case {
                name: "same uid, same ip (idempotent)",
                range: "10.88.1.0/24",
                pre: vec!["a", "b"],
                release: vec![],
                next: "a",
                want: Some("10.88.1.2"),
            },
            Case {
                name: "next-fit: a released ip is not reused right away",
                range: "10.88.1.0/24",
                pre: vec!["a", "b"],
                release: vec!["a"],
                next: "c",
                want: Some("10.88.1.4"),
            },
            Case {
                name: "/30 has exactly one pod address",
                range: "10.88.1.0/30",
                pre: vec![],
                release: vec![],
                next: "a",
                want: Some("10.88.1.2"),
            },
            Case {
                name: "full",
                range: "10.88.1.0/30",
                pre: vec!["a"],
                release: vec![],
                next: "b",
                want: None,
            },
            Case {
                name: "wraps around to a freed address when the end is reached",
                range: "10.88.1.0/29",
                pre: vec!["a", "b", "c", "d", "e"],
                release: vec!["b"],
                next: "f",
                want: Some("10.88.1.3"),
            },
        ];
        for c in cases {
            let mut ipam = Ipam::default();
            ipam.set_cidr(cidr(c.range));
            for u in &c.pre {
                ipam.allocate(u, "ns/p").unwrap();
            }
            for u in &c.release {
                assert!(ipam.release(u).is_some(), "{}", c.name);
            }
            let got = ipam.allocate(c.next, "ns/p").ok();
            assert_eq!(
                got,
                c.want.map(|s| s.parse::<Ipv4Addr>().unwrap()),
                "{}",
                c.name
            );
            // never two uids on one ip, never .0/.1/broadcast
            let mut ips: Vec<Ipv4Addr> = ipam.allocations.values().map(|a| a.ip).collect();
            let n = ips.len();
            ips.sort();
            ips.dedup();
            assert_eq!(ips.len(), n, "{}: duplicate ip", c.name);
            let r = cidr(c.range);
            for ip in ips {
                let off = r.offset(ip).unwrap();
                assert!(off >= 2 && off < r.size() - 1, "{}: {ip}", c.name);
            }
        }
    }

    #[test]
    fn no_cidr_is_not_ready() {
        let mut ipam = Ipam::default();
        assert!(matches!(ipam.allocate("a", ""), Err(NetError::NotReady(_))));
    }

    #[test]
    fn cidr_change_drops_foreign_allocations() {
        let mut ipam = Ipam::default();
        ipam.set_cidr(cidr("10.88.1.0/24"));
        ipam.allocate("a", "").unwrap();
        assert!(ipam.set_cidr(cidr("10.88.1.0/24")).is_empty(), "same range");
        let dropped = ipam.set_cidr(cidr("10.88.2.0/24"));
        assert_eq!(dropped.len(), 1);
        assert_eq!(
            ipam.allocate("b", "").unwrap(),
            "10.88.2.2".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn persisted_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net/ipam.json");
        let mut f = IpamFile::open(&path).unwrap();
        f.state.set_cidr(cidr("10.88.1.0/24"));
        let a = f.state.allocate("a", "default/a").unwrap();
        let b = f.state.allocate("b", "default/b").unwrap();
        f.save().unwrap();
        let mut g = IpamFile::open(&path).unwrap();
        assert_eq!(g.state.get("a"), Some(a));
        assert_eq!(g.state.allocate("b", "").unwrap(), b);
        let c = g.state.allocate("c", "").unwrap();
        assert!(c != a && c != b);
    }
}
