//! The privileged operations of the pod network behind one trait ([`NetOps`]), so the
//! agent's logic ([`super::PodNetwork`]) is tested without root against [`RecordingOps`].
//!
//! [`IpCommands`] is the real implementation: iproute2 (`ip`, `tc`) and `nft`, run in the
//! agent's network namespace (the node's), and with `nsenter --net=<file>` inside a pod's.
//! It shells out rather than speaking rtnetlink itself: moving a veth end into a namespace
//! given by a bind-mounted file, configuring it in there and installing tc policers are one
//! well-tested command each, and the agent issues a handful per pod start (the nftables table
//! is one atomic `nft -f` transaction). Every command's failure is reported with its stderr.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::cidr::Ipv4Cidr;
use super::NetError;

/// One pod's interface, as [`NetOps::add_pod_link`] creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodLink {
    /// The pod's network namespace (a bind-mounted ns file).
    pub netns: PathBuf,
    /// Host end, enslaved to the bridge.
    pub host_if: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

pub trait NetOps: Send + Sync + 'static {
    /// Create (or fix up) the bridge with `gateway/prefix`, MTU, up; enable forwarding.
    fn ensure_bridge(
        &self,
        name: &str,
        gateway: Ipv4Addr,
        prefix: u8,
        mtu: u32,
    ) -> Result<(), NetError>;
    /// Remove the bridge (last pod gone and the node is going away).
    fn delete_bridge(&self, name: &str) -> Result<(), NetError>;
    /// veth pair: `eth0` in the pod with ip/prefix, default route via the gateway; host end
    /// on `bridge`, up. Replaces a half-made previous attempt.
    fn add_pod_link(&self, bridge: &str, link: &PodLink) -> Result<(), NetError>;
    /// Delete the host end (the pair goes with it). Missing is fine.
    fn delete_link(&self, name: &str) -> Result<(), NetError>;
    fn link_exists(&self, name: &str) -> bool;
    /// Host-side veth names starting with `prefix`.
    fn list_links(&self, prefix: &str) -> Result<Vec<String>, NetError>;
    /// The routes of protocol [`super::plan::ROUTE_PROTO`] (ours): destination → gateway.
    fn list_routes(&self) -> Result<BTreeMap<Ipv4Cidr, Ipv4Addr>, NetError>;
    fn replace_route(&self, dst: Ipv4Cidr, via: Ipv4Addr) -> Result<(), NetError>;
    fn delete_route(&self, dst: Ipv4Cidr) -> Result<(), NetError>;
    /// Apply an nftables script (`nft -f -`), atomically.
    fn nft_apply(&self, script: &str) -> Result<(), NetError>;
    /// Delete an `ip` table; missing is fine.
    fn nft_delete_table(&self, table: &str) -> Result<(), NetError>;
    /// Shape a pod's veth, bits/s: `ingress` (towards the pod: tbf on the host end) and
    /// `egress` (from the pod: tbf on the pod's `eth0`, inside `netns`; shaping where the
    /// packets are sent needs no policing action, which not every kernel has).
    fn set_bandwidth(
        &self,
        host_if: &str,
        netns: &std::path::Path,
        ingress: Option<u64>,
        egress: Option<u64>,
    ) -> Result<(), NetError>;
    /// MTU of the interface holding `ip` (the node's address), if any.
    fn mtu_of_address(&self, ip: Ipv4Addr) -> Option<u32>;
}

// ---------------------------------------------------------------------------------------------

/// iproute2 and nft.
#[derive(Debug, Default)]
pub struct IpCommands;

fn run(args: &[&str], stdin: Option<&str>) -> Result<String, NetError> {
    use std::io::Write;
    let mut c = Command::new(args[0]);
    c.args(&args[1..])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
    let mut child = c
        .spawn()
        .map_err(|e| NetError::Command(format!("{}: {e}", args.join(" "))))?;
    if let (Some(input), Some(mut si)) = (stdin, child.stdin.take()) {
        si.write_all(input.as_bytes())
            .map_err(|e| NetError::Command(format!("{}: stdin: {e}", args.join(" "))))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::Command(format!("{}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(NetError::Command(format!(
            "{}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_missing(e: &NetError) -> bool {
    matches!(e, NetError::Command(m) if m.contains("Cannot find device")
        || m.contains("No such file")
        || m.contains("No such process")
        || m.contains("does not exist"))
}

impl NetOps for IpCommands {
    fn ensure_bridge(
        &self,
        name: &str,
        gateway: Ipv4Addr,
        prefix: u8,
        mtu: u32,
    ) -> Result<(), NetError> {
        if !self.link_exists(name) {
            if let Err(e) = run(&["ip", "link", "add", name, "type", "bridge"], None) {
                if !self.link_exists(name) {
                    return Err(e);
                }
            }
        }
        let mtu = mtu.to_string();
        // A fixed MAC, or the bridge would follow its ports' (see plan::bridge_mac).
        let mac = super::plan::bridge_mac(gateway);
        run(
            &[
                "ip", "link", "set", name, "address", &mac, "mtu", &mtu, "up",
            ],
            None,
        )?;
        let addr = format!("{gateway}/{prefix}");
        // exactly our address on the bridge
        let cur = run(&["ip", "-4", "-o", "addr", "show", "dev", name], None)?;
        for l in cur.lines() {
            if let Some(a) = l.split_whitespace().skip_while(|w| *w != "inet").nth(1) {
                if a != addr {
                    let _ = run(&["ip", "addr", "del", a, "dev", name], None);
                }
            }
        }
        run(&["ip", "addr", "replace", &addr, "dev", name], None)?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| NetError::Command(format!("enable ip_forward: {e}")))?;
        Ok(())
    }

    fn delete_bridge(&self, name: &str) -> Result<(), NetError> {
        self.delete_link(name)
    }

    fn add_pod_link(&self, bridge: &str, l: &PodLink) -> Result<(), NetError> {
        let ns = format!("--net={}", l.netns.display());
        let netns = l.netns.to_string_lossy().into_owned();
        let mtu = l.mtu.to_string();
        // leftovers of an interrupted attempt
        let _ = self.delete_link(&l.host_if);
        let _ = run(&["nsenter", &ns, "ip", "link", "del", "eth0"], None);
        run(
            &[
                "ip", "link", "add", &l.host_if, "mtu", &mtu, "type", "veth", "peer", "name",
                "eth0", "mtu", &mtu, "netns", &netns,
            ],
            None,
        )?;
        let addr = format!("{}/{}", l.ip, l.prefix);
        let gw = l.gateway.to_string();
        run(
            &[
                "nsenter",
                &ns,
                "sh",
                "-c",
                &format!(
                    "ip link set lo up && ip addr add {addr} dev eth0 && ip link set eth0 up && \
                     ip route replace default via {gw} dev eth0"
                ),
            ],
            None,
        )?;
        run(
            &["ip", "link", "set", &l.host_if, "master", bridge, "up"],
            None,
        )?;
        Ok(())
    }

    fn delete_link(&self, name: &str) -> Result<(), NetError> {
        match run(&["ip", "link", "del", name], None) {
            Ok(_) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn link_exists(&self, name: &str) -> bool {
        Path::new("/sys/class/net").join(name).exists()
            || run(&["ip", "link", "show", name], None).is_ok()
    }

    fn list_links(&self, prefix: &str) -> Result<Vec<String>, NetError> {
        let out = run(&["ip", "-o", "link", "show"], None)?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .filter(|n| n.starts_with(prefix))
            .collect())
    }

    fn list_routes(&self) -> Result<BTreeMap<Ipv4Cidr, Ipv4Addr>, NetError> {
        let proto = super::plan::ROUTE_PROTO.to_string();
        let out = run(&["ip", "-4", "-o", "route", "show", "proto", &proto], None)?;
        let mut m = BTreeMap::new();
        for l in out.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            let Some(dst) = w.first().and_then(|d| Ipv4Cidr::parse(d).ok()) else {
                continue;
            };
            if let Some(via) = w
                .iter()
                .position(|x| *x == "via")
                .and_then(|i| w.get(i + 1))
                .and_then(|v| v.parse().ok())
            {
                m.insert(dst, via);
            }
        }
        Ok(m)
    }

    fn replace_route(&self, dst: Ipv4Cidr, via: Ipv4Addr) -> Result<(), NetError> {
        let proto = super::plan::ROUTE_PROTO.to_string();
        run(
            &[
                "ip",
                "route",
                "replace",
                &dst.to_string(),
                "via",
                &via.to_string(),
                "proto",
                &proto,
            ],
            None,
        )
        .map(|_| ())
    }

    fn delete_route(&self, dst: Ipv4Cidr) -> Result<(), NetError> {
        let proto = super::plan::ROUTE_PROTO.to_string();
        match run(
            &["ip", "route", "del", &dst.to_string(), "proto", &proto],
            None,
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn nft_apply(&self, script: &str) -> Result<(), NetError> {
        run(&["nft", "-f", "-"], Some(script)).map(|_| ())
    }

    fn nft_delete_table(&self, table: &str) -> Result<(), NetError> {
        match run(&["nft", "delete", "table", "ip", table], None) {
            Ok(_) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn set_bandwidth(
        &self,
        dev: &str,
        netns: &std::path::Path,
        ingress: Option<u64>,
        egress: Option<u64>,
    ) -> Result<(), NetError> {
        let ns = format!("--net={}", netns.display());
        let tbf = |pre: &[&str], dev: &str, rate: Option<u64>| -> Result<(), NetError> {
            // Start from a clean slate (idempotent as a whole).
            let mut del: Vec<&str> = pre.to_vec();
            del.extend(["tc", "qdisc", "del", "dev", dev, "root"]);
            let _ = run(&del, None);
            let Some(rate) = rate else { return Ok(()) };
            let (rate, burst) = (
                format!("{rate}bit"),
                super::plan::burst_bytes(rate).to_string(),
            );
            let mut add: Vec<&str> = pre.to_vec();
            add.extend([
                "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst,
                "latency", "50ms",
            ]);
            run(&add, None).map(|_| ())
        };
        tbf(&[], dev, ingress)?;
        tbf(&["nsenter", &ns], "eth0", egress)?;
        Ok(())
    }

    fn mtu_of_address(&self, ip: Ipv4Addr) -> Option<u32> {
        let out = run(&["ip", "-o", "-4", "addr", "show"], None).ok()?;
        let dev = out.lines().find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let a = w
                .iter()
                .position(|x| *x == "inet")
                .and_then(|i| w.get(i + 1))?;
            (a.split('/').next() == Some(&ip.to_string()))
                .then(|| w.get(1).map(|d| d.to_string()))?
        })?;
        std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .or_else(|| {
                let o = run(&["ip", "-o", "link", "show", &dev], None).ok()?;
                let w: Vec<&str> = o.split_whitespace().collect();
                w.iter()
                    .position(|x| *x == "mtu")
                    .and_then(|i| w.get(i + 1))?
                    .parse()
                    .ok()
            })
    }
}

// ---------------------------------------------------------------------------------------------

/// A fake that records every call (in order) and keeps the resulting state; errors can be
/// injected by call name. For the agent's unit tests.
/// (ingress, egress) rates in bits per second; `None` is unlimited.
pub type Bandwidth = (Option<u64>, Option<u64>);

#[derive(Debug, Default)]
pub struct RecordingOps {
    pub calls: Mutex<Vec<String>>,
    pub links: Mutex<std::collections::BTreeSet<String>>,
    pub routes: Mutex<BTreeMap<Ipv4Cidr, Ipv4Addr>>,
    pub nft: Mutex<Option<String>>,
    /// Host interface → (ingress, egress) bits per second.
    pub bandwidth: Mutex<BTreeMap<String, Bandwidth>>,
    /// Call names (`add_pod_link`, …) that fail.
    pub fail: Mutex<std::collections::BTreeSet<String>>,
}

impl RecordingOps {
    fn rec(&self, name: &str, detail: String) -> Result<(), NetError> {
        crate::lock(&self.calls).push(format!("{name} {detail}"));
        if crate::lock(&self.fail).contains(name) {
            return Err(NetError::Command(format!("injected failure of {name}")));
        }
        Ok(())
    }
    pub fn calls(&self) -> Vec<String> {
        crate::lock(&self.calls).clone()
    }
}

impl NetOps for RecordingOps {
    fn ensure_bridge(
        &self,
        name: &str,
        gateway: Ipv4Addr,
        prefix: u8,
        mtu: u32,
    ) -> Result<(), NetError> {
        self.rec(
            "ensure_bridge",
            format!("{name} {gateway}/{prefix} mtu {mtu}"),
        )?;
        crate::lock(&self.links).insert(name.into());
        Ok(())
    }
    fn delete_bridge(&self, name: &str) -> Result<(), NetError> {
        self.rec("delete_bridge", name.into())?;
        crate::lock(&self.links).remove(name);
        Ok(())
    }
    fn add_pod_link(&self, bridge: &str, l: &PodLink) -> Result<(), NetError> {
        self.rec(
            "add_pod_link",
            format!(
                "{} {}/{} gw {} mtu {} on {bridge}",
                l.host_if, l.ip, l.prefix, l.gateway, l.mtu
            ),
        )?;
        crate::lock(&self.links).insert(l.host_if.clone());
        Ok(())
    }
    fn delete_link(&self, name: &str) -> Result<(), NetError> {
        self.rec("delete_link", name.into())?;
        crate::lock(&self.links).remove(name);
        Ok(())
    }
    fn link_exists(&self, name: &str) -> bool {
        crate::lock(&self.links).contains(name)
    }
    fn list_links(&self, prefix: &str) -> Result<Vec<String>, NetError> {
        Ok(crate::lock(&self.links)
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect())
    }
    fn list_routes(&self) -> Result<BTreeMap<Ipv4Cidr, Ipv4Addr>, NetError> {
        Ok(crate::lock(&self.routes).clone())
    }
    fn replace_route(&self, dst: Ipv4Cidr, via: Ipv4Addr) -> Result<(), NetError> {
        self.rec("replace_route", format!("{dst} via {via}"))?;
        crate::lock(&self.routes).insert(dst, via);
        Ok(())
    }
    fn delete_route(&self, dst: Ipv4Cidr) -> Result<(), NetError> {
        self.rec("delete_route", dst.to_string())?;
        crate::lock(&self.routes).remove(&dst);
        Ok(())
    }
    fn nft_apply(&self, script: &str) -> Result<(), NetError> {
        self.rec("nft_apply", String::new())?;
        *crate::lock(&self.nft) = Some(script.to_string());
        Ok(())
    }
    fn nft_delete_table(&self, table: &str) -> Result<(), NetError> {
        self.rec("nft_delete_table", table.into())?;
        *crate::lock(&self.nft) = None;
        Ok(())
    }
    fn set_bandwidth(
        &self,
        host_if: &str,
        _netns: &std::path::Path,
        ingress: Option<u64>,
        egress: Option<u64>,
    ) -> Result<(), NetError> {
        self.rec("set_bandwidth", format!("{host_if} {ingress:?} {egress:?}"))?;
        crate::lock(&self.bandwidth).insert(host_if.into(), (ingress, egress));
        Ok(())
    }
    fn mtu_of_address(&self, _ip: Ipv4Addr) -> Option<u32> {
        Some(1500)
    }
}
