//! ClusterIP and NodePort allocation for Services (Kubernetes' `ipallocator` and
//! `portallocator`, without their bitmaps).
//!
//! The allocation state is not stored on its own: it is the set of addresses and ports the stored
//! Services hold. [`crate::rest`] computes it from the Services *inside* the write transaction of the
//! Service being created or updated (the store serialises write transactions), so two concurrent
//! creates can never get the same address, a delete releases its address and ports in the same
//! commit that removes the Service, and a restart has nothing to rebuild.
//!
//! Everything here is pure: [`allocate`] fills in a Service's `clusterIP`/`clusterIPs` and
//! `nodePort`s from the addresses and ports in use, or says why it cannot, as Kubernetes words it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use kapsel_api::validation::{invalid, invalid_raw};
use kapsel_api::{ErrorList, Service};

/// An IPv4 network in CIDR notation (`10.96.0.0/16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    net: u32,
    prefix: u8,
}

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if prefix > 30 {
            return Err(format!("prefix /{prefix} leaves no room for addresses"));
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Ipv4Cidr {
            net: u32::from(addr) & mask,
            prefix,
        })
    }

    /// Number of addresses in the network, network and broadcast address included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let x = u32::from(ip);
        x >= self.net && u64::from(x - self.net) < self.size()
    }

    /// The address at `offset` from the network address.
    fn at(&self, offset: u64) -> Ipv4Addr {
        // offset < size <= 2^32: fits.
        Ipv4Addr::from(
            self.net
                .wrapping_add(u32::try_from(offset).unwrap_or(u32::MAX)),
        )
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.net), self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (ADDRESS/PREFIX)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{p:?} is not a prefix length (0-32)"))?;
        Ipv4Cidr::new(addr, prefix)
    }
}

/// The ranges Services are allocated from (`--service-cidr`, `--service-node-port-range`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranges {
    pub cidr: Ipv4Cidr,
    pub node_ports: RangeInclusive<i32>,
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges {
            cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 96, 0, 0), 16).expect("a /16 is valid"),
            node_ports: 30000..=32767,
        }
    }
}

/// Addresses and node ports held by the other Services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InUse {
    pub ips: BTreeSet<Ipv4Addr>,
    pub node_ports: BTreeSet<i32>,
}

impl InUse {
    /// What `svc` holds, added to the set.
    pub fn add(&mut self, svc: &Service) {
        let Some(spec) = &svc.spec else { return };
        for ip in spec.cluster_ip.iter().chain(spec.cluster_ips.iter()) {
            if let Ok(a) = ip.parse() {
                self.ips.insert(a);
            }
        }
        for p in &spec.ports {
            if let Some(np) = p.node_port.filter(|n| *n != 0) {
                self.node_ports.insert(np);
            }
        }
    }
}

/// Random starting points for the searches (the caller draws them; tests fix them).
#[derive(Clone, Copy, Debug, Default)]
pub struct Seeds {
    pub ip: u64,
    pub port: u64,
}

fn needs_node_ports(ty: &str) -> bool {
    matches!(ty, "NodePort" | "LoadBalancer")
}

/// Fill in `svc`'s cluster IP and node ports (create: `old == None`; update: `old` is the stored
/// Service). A user-given address or port is checked against `ranges` and `used`; an unset one is
/// kept from `old` where it had one, else allocated. `used` must not contain `svc`'s own holdings.
pub fn allocate(
    ranges: &Ranges,
    svc: &mut Service,
    old: Option<&Service>,
    used: &InUse,
    seeds: Seeds,
) -> Result<(), ErrorList> {
    let mut errs = ErrorList::new();
    let spec = svc.spec.get_or_insert_with(Default::default);
    let ty = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    let old_spec = old.and_then(|o| o.spec.as_ref());

    // ---- cluster IP
    if ty == "ExternalName" {
        spec.cluster_ip = None;
        spec.cluster_ips.clear();
    } else {
        let given = spec
            .cluster_ip
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| spec.cluster_ips.first().cloned().filter(|s| !s.is_empty()));
        let kept = old_spec
            .and_then(|o| o.cluster_ip.clone())
            .filter(|s| !s.is_empty());
        let ip = match (given, kept) {
            (Some(g), _) if g == "None" => Some("None".to_string()),
            (Some(g), Some(k)) if g == k => Some(k),
            (Some(g), _) => match g.parse::<Ipv4Addr>() {
                Err(_) => None, // validation reported it
                Ok(a) if !ranges.cidr.contains(a) => {
                    errs.push(invalid_raw(
                        "spec.clusterIPs",
                        format!("[]string{{{g:?}}}"),
                        format!(
                            "failed to allocate IP {g}: the provided IP ({g}) is not in the valid range. The range of valid IPs is {}",
                            ranges.cidr
                        ),
                    ));
                    None
                }
                Ok(a) if used.ips.contains(&a) => {
                    errs.push(invalid_raw(
                        "spec.clusterIPs",
                        format!("[]string{{{g:?}}}"),
                        format!("failed to allocate IP {g}: provided IP is already allocated"),
                    ));
                    None
                }
                Ok(_) => Some(g),
            },
            (None, Some(k)) => Some(k),
            (None, None) => match free_ip(&ranges.cidr, &used.ips, seeds.ip) {
                Some(a) => Some(a.to_string()),
                None => {
                    errs.push(invalid(
                        "spec.clusterIPs",
                        "",
                        format!(
                            "failed to allocate a serviceIP: range is full ({})",
                            ranges.cidr
                        ),
                    ));
                    None
                }
            },
        };
        if let Some(ip) = ip {
            spec.cluster_ips = vec![ip.clone()];
            spec.cluster_ip = Some(ip);
        }
    }

    // ---- node ports
    if needs_node_ports(&ty) {
        let old_ports = old_spec
            .filter(|o| needs_node_ports(o.type_.as_deref().unwrap_or("")))
            .map(|o| o.ports.clone())
            .unwrap_or_default();
        let mut mine: BTreeSet<i32> = BTreeSet::new();
        // User-given ports first, so automatic ones avoid them.
        for (i, p) in spec.ports.iter().enumerate() {
            let Some(np) = p.node_port.filter(|n| *n != 0) else {
                continue;
            };
            let was_mine = old_ports.iter().any(|o| o.node_port == Some(np));
            if !ranges.node_ports.contains(&np) {
                errs.push(invalid_raw(
                    format!("spec.ports[{i}].nodePort"),
                    np,
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        ranges.node_ports.start(),
                        ranges.node_ports.end()
                    ),
                ));
            } else if used.node_ports.contains(&np) && !was_mine {
                errs.push(invalid_raw(
                    format!("spec.ports[{i}].nodePort"),
                    np,
                    "provided port is already allocated",
                ));
            }
            mine.insert(np);
        }
        for p in spec.ports.iter_mut() {
            if p.node_port.is_some_and(|n| n != 0) {
                continue;
            }
            // An update that leaves nodePort out keeps the port the same service port had.
            let keep = old_ports
                .iter()
                .find(|o| {
                    o.port == p.port
                        && o.protocol.as_deref().unwrap_or("TCP")
                            == p.protocol.as_deref().unwrap_or("TCP")
                })
                .and_then(|o| o.node_port)
                .filter(|n| *n != 0 && !mine.contains(n));
            let np = match keep {
                Some(n) => Some(n),
                None => free_port(&ranges.node_ports, &used.node_ports, &mine, seeds.port),
            };
            match np {
                Some(n) => {
                    mine.insert(n);
                    p.node_port = Some(n);
                }
                None => {
                    errs.push(invalid_raw(
                        "spec.ports.nodePort",
                        p.port,
                        "failed to allocate a nodePort: range is full",
                    ));
                    break;
                }
            }
        }
    } else {
        for p in spec.ports.iter_mut() {
            p.node_port = None;
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// A free address of `cidr` (never the network or broadcast address), searching upwards from
/// `seed` (mod the usable size) and wrapping around.
pub fn free_ip(cidr: &Ipv4Cidr, used: &BTreeSet<Ipv4Addr>, seed: u64) -> Option<Ipv4Addr> {
    let usable = cidr.size().saturating_sub(2);
    if usable == 0 {
        return None;
    }
    let start = seed % usable;
    (0..usable)
        .map(|i| cidr.at(1 + (start + i) % usable))
        .find(|a| !used.contains(a))
}

/// A free port of `range`, not in `used` or `taken`, searching upwards from `seed`.
pub fn free_port(
    range: &RangeInclusive<i32>,
    used: &BTreeSet<i32>,
    taken: &BTreeSet<i32>,
    seed: u64,
) -> Option<i32> {
    let lo = i64::from(*range.start());
    let n = i64::from(*range.end()) - lo + 1;
    if n <= 0 {
        return None;
    }
    let start = i64::try_from(seed % n.unsigned_abs()).unwrap_or(0);
    (0..n)
        .filter_map(|i| i32::try_from(lo + (start + i) % n).ok())
        .find(|p| !used.contains(p) && !taken.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{ServicePort, ServiceSpec};

    fn svc(ty: &str, ip: Option<&str>, node_ports: &[Option<i32>]) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("s".into());
        s.spec = Some(ServiceSpec {
            type_: Some(ty.into()),
            cluster_ip: ip.map(String::from),
            ports: node_ports
                .iter()
                .enumerate()
                .map(|(i, np)| ServicePort {
                    name: Some(format!("p{i}")),
                    port: 80 + i32::try_from(i).unwrap(),
                    protocol: Some("TCP".into()),
                    node_port: *np,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        s
    }

    fn small() -> Ranges {
        Ranges {
            cidr: "10.0.0.0/29".parse().unwrap(), // .1 - .6 usable
            node_ports: 30000..=30002,
        }
    }

    fn used(ips: &[&str], ports: &[i32]) -> InUse {
        InUse {
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            node_ports: ports.iter().copied().collect(),
        }
    }

    fn ip_of(s: &Service) -> (Option<String>, Vec<String>) {
        let sp = s.spec.as_ref().unwrap();
        (sp.cluster_ip.clone(), sp.cluster_ips.clone())
    }

    fn ports_of(s: &Service) -> Vec<Option<i32>> {
        s.spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .map(|p| p.node_port)
            .collect()
    }

    #[test]
    fn cidr_parsing() {
        let c: Ipv4Cidr = "10.96.3.7/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/16");
        assert_eq!(c.size(), 65536);
        assert!(c.contains("10.96.255.255".parse().unwrap()));
        assert!(!c.contains("10.97.0.0".parse().unwrap()));
        assert!(!c.contains("10.95.255.255".parse().unwrap()));
        for bad in ["10.96.0.0", "10.96.0.0/33", "x/16", "10.0.0.0/31"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn free_ip_table() {
        let c: Ipv4Cidr = "10.0.0.0/29".parse().unwrap();
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| s.parse().unwrap())
                .collect::<BTreeSet<_>>()
        };
        let cases: &[(&[&str], u64, Option<&str>)] = &[
            (&[], 0, Some("10.0.0.1")),
            (&[], 5, Some("10.0.0.6")),
            (&[], 6, Some("10.0.0.1")), // wraps, never .7 (broadcast) or .0
            (&["10.0.0.1", "10.0.0.2"], 0, Some("10.0.0.3")),
            (&["10.0.0.6"], 5, Some("10.0.0.1")),
            (
                &[
                    "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6",
                ],
                3,
                None,
            ),
        ];
        for (u, seed, want) in cases {
            let got = free_ip(&c, &set(u), *seed);
            assert_eq!(
                got,
                want.map(|w| w.parse().unwrap()),
                "used {u:?} seed {seed}"
            );
        }
    }

    #[test]
    fn free_port_table() {
        let r = 30000..=30002;
        let s = |v: &[i32]| v.iter().copied().collect::<BTreeSet<_>>();
        type Case<'a> = (&'a [i32], &'a [i32], u64, Option<i32>);
        let cases: &[Case<'_>] = &[
            (&[], &[], 0, Some(30000)),
            (&[], &[], 4, Some(30001)),
            (&[30000], &[30001], 0, Some(30002)),
            (&[30002], &[], 2, Some(30000)),
            (&[30000, 30001], &[30002], 1, None),
        ];
        for (u, t, seed, want) in cases {
            assert_eq!(
                free_port(&r, &s(u), &s(t), *seed),
                *want,
                "{u:?} {t:?} {seed}"
            );
        }
    }

    #[test]
    fn allocate_table() {
        let r = small();
        struct Case {
            name: &'static str,
            svc: Service,
            old: Option<Service>,
            used: InUse,
            want_ip: Option<&'static str>,
            want_ports: Vec<Option<i32>>,
            err: Option<&'static str>,
        }
        let cases = vec![
            Case {
                name: "auto ip, clusterIP type has no node ports",
                svc: svc("ClusterIP", None, &[None]),
                old: None,
                used: used(&["10.0.0.1"], &[]),
                want_ip: Some("10.0.0.2"),
                want_ports: vec![None],
                err: None,
            },
            Case {
                name: "user ip free",
                svc: svc("ClusterIP", Some("10.0.0.5"), &[None]),
                old: None,
                used: used(&["10.0.0.1"], &[]),
                want_ip: Some("10.0.0.5"),
                want_ports: vec![None],
                err: None,
            },
            Case {
                name: "user ip taken",
                svc: svc("ClusterIP", Some("10.0.0.1"), &[None]),
                old: None,
                used: used(&["10.0.0.1"], &[]),
                want_ip: None,
                want_ports: vec![None],
                err: Some("failed to allocate IP 10.0.0.1: provided IP is already allocated"),
            },
            Case {
                name: "user ip out of range",
                svc: svc("ClusterIP", Some("10.1.0.1"), &[None]),
                old: None,
                used: InUse::default(),
                want_ip: None,
                want_ports: vec![None],
                err: Some("is not in the valid range. The range of valid IPs is 10.0.0.0/29"),
            },
            Case {
                name: "headless",
                svc: svc("ClusterIP", Some("None"), &[None]),
                old: None,
                used: InUse::default(),
                want_ip: Some("None"),
                want_ports: vec![None],
                err: None,
            },
            Case {
                name: "range full",
                svc: svc("ClusterIP", None, &[None]),
                old: None,
                used: used(
                    &[
                        "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6",
                    ],
                    &[],
                ),
                want_ip: None,
                want_ports: vec![None],
                err: Some("range is full"),
            },
            Case {
                name: "update keeps the ip and its own node port",
                svc: svc("NodePort", None, &[None]),
                old: Some(svc("NodePort", Some("10.0.0.3"), &[Some(30002)])),
                used: used(&["10.0.0.1"], &[30000]),
                want_ip: Some("10.0.0.3"),
                want_ports: vec![Some(30002)],
                err: None,
            },
            Case {
                name: "node ports: user-given and automatic avoid each other and others",
                svc: svc("NodePort", None, &[None, Some(30000)]),
                old: None,
                used: used(&[], &[30001]),
                want_ip: Some("10.0.0.1"),
                want_ports: vec![Some(30002), Some(30000)],
                err: None,
            },
            Case {
                name: "node port taken",
                svc: svc("NodePort", None, &[Some(30001)]),
                old: None,
                used: used(&[], &[30001]),
                want_ip: Some("10.0.0.1"),
                want_ports: vec![Some(30001)],
                err: Some("provided port is already allocated"),
            },
            Case {
                name: "node ports full",
                svc: svc("NodePort", None, &[None]),
                old: None,
                used: used(&[], &[30000, 30001, 30002]),
                want_ip: Some("10.0.0.1"),
                want_ports: vec![None],
                err: Some("failed to allocate a nodePort: range is full"),
            },
            Case {
                name: "NodePort to ClusterIP drops node ports",
                svc: svc("ClusterIP", None, &[None]),
                old: Some(svc("NodePort", Some("10.0.0.3"), &[Some(30002)])),
                used: InUse::default(),
                want_ip: Some("10.0.0.3"),
                want_ports: vec![None],
                err: None,
            },
            Case {
                name: "ExternalName holds nothing",
                svc: svc("ExternalName", None, &[]),
                old: Some(svc("ClusterIP", Some("10.0.0.3"), &[])),
                used: InUse::default(),
                want_ip: None,
                want_ports: vec![],
                err: None,
            },
        ];
        for mut c in cases {
            let res = allocate(&r, &mut c.svc, c.old.as_ref(), &c.used, Seeds::default());
            match (c.err, res) {
                (None, Ok(())) => {}
                (Some(want), Err(errs)) => {
                    let text = errs
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ");
                    assert!(text.contains(want), "{}: {text}", c.name);
                    continue;
                }
                (want, got) => panic!("{}: want error {want:?}, got {got:?}", c.name),
            }
            let (ip, ips) = ip_of(&c.svc);
            assert_eq!(ip.as_deref(), c.want_ip, "{}", c.name);
            assert_eq!(
                ips,
                c.want_ip.map(|s| vec![s.to_string()]).unwrap_or_default(),
                "{}",
                c.name
            );
            assert_eq!(ports_of(&c.svc), c.want_ports, "{}", c.name);
        }
    }

    #[test]
    fn in_use_collects() {
        let mut u = InUse::default();
        u.add(&svc("NodePort", Some("10.0.0.3"), &[Some(30002), None]));
        u.add(&svc("ClusterIP", Some("None"), &[None]));
        assert_eq!(u, used(&["10.0.0.3"], &[30002]));
    }
}
