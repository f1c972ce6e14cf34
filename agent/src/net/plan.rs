//! Pure decisions of the pod network: host-gw routes from the Node list, the nftables
//! ruleset (masquerade, hostPort DNAT), bandwidth annotations, interface names.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use kapsel_api::{Node, Pod};

use super::cidr::Ipv4Cidr;
use super::NetError;

/// The nftables table the pod network owns (family `ip`). Nothing else is touched.
pub const NFT_TABLE: &str = "kapsel-podnet";

/// `ip route … proto 75`: marks the routes the agent owns (so it never touches others).
pub const ROUTE_PROTO: u8 = 75;

/// Annotations of the bandwidth limits (bits per second, Kubernetes quantities: `10M`).
pub const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

/// Pod annotation: `deny` locks the pod's egress to the cluster network (pods, Services, the
/// node's DNS); nothing outside it can be reached, so nothing can be downloaded at run time.
pub const EGRESS_ANNOTATION: &str = "kapsel.dev/egress";

/// Whether the pod asks for the egress lock-down (`kapsel.dev/egress: deny`).
pub fn egress_denied(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .get(EGRESS_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("deny"))
}

/// The host end of a pod's veth: `kv` + the first 12 hex digits of the uid.
pub fn host_veth_name(uid: &str) -> String {
    let hex: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    format!("kv{hex}")
}

/// The fixed MAC address of the pod bridge: `0a:58` + the gateway's IPv4 octets (what the CNI
/// bridge plugin does). A Linux bridge without an address of its own takes the lowest MAC of
/// its ports and changes it when a pod's veth with a lower one joins; pods then keep sending
/// to the gateway's old MAC (their ARP cache), and the node drops those frames instead of
/// forwarding them until the entry is re-probed.
pub fn bridge_mac(gateway: Ipv4Addr) -> String {
    let o = gateway.octets();
    format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// A Node as routing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRoute {
    pub name: String,
    pub internal_ip: Option<Ipv4Addr>,
    pub pod_cidr: Option<Ipv4Cidr>,
}

impl NodeRoute {
    pub fn of(n: &Node) -> NodeRoute {
        let internal_ip = n.status.as_ref().and_then(|s| {
            s.addresses
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .and_then(|a| a.address.parse().ok())
        });
        let pod_cidr = n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| Ipv4Cidr::parse(c).ok());
        NodeRoute {
            name: n.metadata.name().to_string(),
            internal_ip,
            pod_cidr,
        }
    }
}

/// The routes this node wants: every other node's podCIDR via its InternalIP (host-gw: all
/// nodes on one L2 segment). Nodes without either, and CIDRs that overlap our own, are skipped.
pub fn desired_routes(
    me: &str,
    my_cidr: Option<Ipv4Cidr>,
    nodes: &[NodeRoute],
) -> BTreeMap<Ipv4Cidr, Ipv4Addr> {
    nodes
        .iter()
        .filter(|n| n.name != me)
        .filter_map(|n| Some((n.pod_cidr?, n.internal_ip?)))
        .filter(|(c, _)| my_cidr.is_none_or(|m| !m.contains(c) && !c.contains(&m)))
        .collect()
}

/// What to change: (routes to add or replace, destinations to delete).
pub fn route_diff(
    current: &BTreeMap<Ipv4Cidr, Ipv4Addr>,
    desired: &BTreeMap<Ipv4Cidr, Ipv4Addr>,
) -> (Vec<(Ipv4Cidr, Ipv4Addr)>, Vec<Ipv4Cidr>) {
    let add = desired
        .iter()
        .filter(|(c, via)| current.get(c) != Some(via))
        .map(|(c, v)| (*c, *v))
        .collect();
    let del = current
        .keys()
        .filter(|c| !desired.contains_key(c))
        .copied()
        .collect();
    (add, del)
}

/// A hostPort mapping: `protocol hostPort` on the node → `podIP:containerPort`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct HostPort {
    /// `tcp` or `udp`.
    pub protocol: String,
    pub host_port: u16,
    pub pod_ip: Ipv4Addr,
    pub container_port: u16,
    /// `hostIP` when set (only packets to that address).
    pub host_ip: Option<Ipv4Addr>,
}

/// The hostPorts a pod asks for (containers' `ports[].hostPort`), for a pod with `ip`.
pub fn host_ports(pod: &Pod, ip: Ipv4Addr) -> Vec<HostPort> {
    let mut v = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return v;
    };
    for c in &spec.containers {
        for p in &c.ports {
            let Some(hp) = p
                .host_port
                .and_then(|h| u16::try_from(h).ok())
                .filter(|h| *h > 0)
            else {
                continue;
            };
            let Ok(cp) = u16::try_from(p.container_port) else {
                continue;
            };
            v.push(HostPort {
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                host_port: hp,
                pod_ip: ip,
                container_port: cp,
                host_ip: p
                    .host_ip
                    .as_deref()
                    .and_then(|h| h.parse().ok())
                    .filter(|h: &Ipv4Addr| !h.is_unspecified()),
            });
        }
    }
    v.retain(|h| h.protocol == "tcp" || h.protocol == "udp");
    v
}

/// The whole `ip kapsel-podnet` table as one `nft -f` script that replaces the previous one
/// atomically (one transaction: create-if-missing, delete, add).
///
/// - masquerade: packets from the cluster network to anywhere outside it, leaving through
///   any interface but the pod bridge (pod→pod traffic keeps its source IP);
/// - hostPort: DNAT of local-destined packets (from outside: prerouting; from the node
///   itself: output) to the pod, and masquerade of that traffic when it hairpins from the
///   bridge back into it.
///
/// - egress lock-down: packets from the pods in `deny` to anything outside the cluster network
///   are dropped, forwarded or to the node itself (filter hooks, after the Services' DNAT, so a
///   Service's ClusterIP or NodePort reaches its pod endpoints); replies of connections made
///   to the pod still pass. Cluster DNS (on the bridge address) is inside the cluster network.
pub fn nft_ruleset(
    cluster: Ipv4Cidr,
    bridge: &str,
    ports: &[HostPort],
    deny: &[Ipv4Addr],
) -> String {
    let mut hp = String::new();
    let mut sorted = ports.to_vec();
    sorted.sort();
    for p in &sorted {
        let dst = p
            .host_ip
            .map(|h| format!("ip daddr {h} "))
            .unwrap_or_default();
        hp.push_str(&format!(
            "    {dst}{proto} dport {hport} dnat to {ip}:{cport}\n",
            proto = p.protocol,
            hport = p.host_port,
            ip = p.pod_ip,
            cport = p.container_port
        ));
    }
    let mut deny = deny.to_vec();
    deny.sort();
    deny.dedup();
    let lock = if deny.is_empty() {
        String::new()
    } else {
        let set: Vec<String> = deny.iter().map(ToString::to_string).collect();
        let rule = format!(
            "    ct state established,related accept\n    ip saddr {{ {} }} ip daddr != {cluster} drop\n",
            set.join(", ")
        );
        format!(
            "  chain egress-forward {{\n    type filter hook forward priority 0; policy accept;\n{rule}  }}\n\
             \x20 chain egress-input {{\n    type filter hook input priority 0; policy accept;\n{rule}  }}\n"
        )
    };
    format!(
        "table ip {t}\n\
         delete table ip {t}\n\
         table ip {t} {{\n{lock}\
         \x20 chain hostports {{\n{hp}  }}\n\
         \x20 chain prerouting {{\n\
         \x20   type nat hook prerouting priority dstnat; policy accept;\n\
         \x20   fib daddr type local jump hostports\n\
         \x20 }}\n\
         \x20 chain output {{\n\
         \x20   type nat hook output priority -100; policy accept;\n\
         \x20   fib daddr type local jump hostports\n\
         \x20 }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   ip saddr {c} ip daddr != {c} oifname != \"{b}\" masquerade\n\
         \x20   ct status dnat ip saddr {c} oifname \"{b}\" masquerade\n\
         \x20 }}\n\
         }}\n",
        t = NFT_TABLE,
        c = cluster,
        b = bridge,
    )
}

/// A bandwidth quantity (`10M`, `1Gi`, `500k`) in bits per second; at least 1 kbit/s.
pub fn parse_bandwidth(s: &str) -> Result<u64, NetError> {
    let bad = |why: &str| NetError::Invalid(format!("bandwidth {s:?}: {why}"));
    let v = kapsel_api::Quantity::new(s)
        .value()
        .map_err(|e| bad(&e.to_string()))?;
    let v = u64::try_from(v).map_err(|_| bad("negative"))?;
    if v < 1000 {
        return Err(bad("below 1k"));
    }
    if v > 32_000_000_000_000 {
        return Err(bad("above 32T"));
    }
    Ok(v)
}

/// (ingress, egress) limits of a pod from its annotations, bits per second.
pub fn bandwidth(pod: &Pod) -> Result<(Option<u64>, Option<u64>), NetError> {
    let a = &pod.metadata.annotations;
    let get = |k: &str| a.get(k).map(|v| parse_bandwidth(v)).transpose();
    Ok((get(INGRESS_BANDWIDTH)?, get(EGRESS_BANDWIDTH)?))
}

/// Burst for a rate (bytes): what passes at line rate before shaping, ~ rate/250 (4 ms)
/// but at least 32 KiB (enough for TSO segments).
pub fn burst_bytes(bits_per_sec: u64) -> u64 {
    (bits_per_sec / 8 / 250).max(32 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        Ipv4Cidr::parse(s).unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn node(name: &str, ipa: Option<&str>, cidr: Option<&str>) -> NodeRoute {
        NodeRoute {
            name: name.into(),
            internal_ip: ipa.map(ip),
            pod_cidr: cidr.map(c),
        }
    }

    #[test]
    fn bridge_mac_is_fixed_and_local() {
        assert_eq!(bridge_mac(Ipv4Addr::new(10, 88, 2, 1)), "0a:58:0a:58:02:01");
        // locally administered, unicast
        assert_eq!(
            u8::from_str_radix(&bridge_mac(Ipv4Addr::new(10, 88, 0, 1))[..2], 16).unwrap() & 0b11,
            0b10
        );
    }

    #[test]
    fn routes_table() {
        let nodes = vec![
            node("me", Some("192.168.1.1"), Some("10.88.0.0/24")),
            node("b", Some("192.168.1.2"), Some("10.88.1.0/24")),
            node("c", None, Some("10.88.2.0/24")),
            node("d", Some("192.168.1.4"), None),
            node("e", Some("192.168.1.5"), Some("10.88.0.0/16")),
        ];
        let want: BTreeMap<_, _> = [(c("10.88.1.0/24"), ip("192.168.1.2"))]
            .into_iter()
            .collect();
        assert_eq!(
            desired_routes("me", Some(c("10.88.0.0/24")), &nodes),
            want,
            "self, incomplete nodes and overlaps skipped"
        );
        let mut current: BTreeMap<_, _> = [
            (c("10.88.1.0/24"), ip("192.168.1.9")), // moved node: replace
            (c("10.88.7.0/24"), ip("192.168.1.7")), // gone node: delete
        ]
        .into_iter()
        .collect();
        let (add, del) = route_diff(&current, &want);
        assert_eq!(add, vec![(c("10.88.1.0/24"), ip("192.168.1.2"))]);
        assert_eq!(del, vec![c("10.88.7.0/24")]);
        current = want.clone();
        assert_eq!(route_diff(&current, &want), (vec![], vec![]), "converged");
    }

    #[test]
    fn bandwidth_table() {
        let cases: &[(&str, Option<u64>)] = &[
            ("10M", Some(10_000_000)),
            ("1Gi", Some(1 << 30)),
            ("500k", Some(500_000)),
            ("100", None),
            ("-5M", None),
            ("fast", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_bandwidth(s).ok(), *want, "{s}");
        }
        assert_eq!(burst_bytes(1_000_000), 32 * 1024);
        assert_eq!(burst_bytes(1_000_000_000), 500_000);
    }

    #[test]
    fn veth_names_fit() {
        let n = host_veth_name("0f8e3c1a-5b2d-4c3e-9f00-112233445566");
        assert_eq!(n, "kv0f8e3c1a5b2d");
        assert!(n.len() <= 15);
    }

    #[test]
    fn ruleset_has_masquerade_and_hostports() {
        let r = nft_ruleset(
            c("10.88.0.0/16"),
            "kapsel0",
            &[],
            &[ip("10.88.1.9"), ip("10.88.1.3"), ip("10.88.1.9")],
        );
        assert!(
            r.contains("ip saddr { 10.88.1.3, 10.88.1.9 } ip daddr != 10.88.0.0/16 drop"),
            "{r}"
        );
        assert!(r.contains("type filter hook forward priority 0"), "{r}");
        assert!(r.contains("type filter hook input priority 0"), "{r}");
        assert!(r.contains("ct state established,related accept"), "{r}");
        assert!(
            !nft_ruleset(c("10.88.0.0/16"), "kapsel0", &[], &[]).contains("drop"),
            "no lock-down without denied pods"
        );
        let r = nft_ruleset(
            c("10.88.0.0/16"),
            "kapsel0",
            &[HostPort {
                protocol: "tcp".into(),
                host_port: 8081,
                pod_ip: ip("10.88.1.5"),
                container_port: 8080,
                host_ip: None,
            }],
            &[],
        );
        assert!(r.starts_with("table ip kapsel-podnet\ndelete table ip kapsel-podnet\n"));
        assert!(r.contains("tcp dport 8081 dnat to 10.88.1.5:8080"));
        assert!(r.contains(
            "ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 oifname != \"kapsel0\" masquerade"
        ));
    }
}
