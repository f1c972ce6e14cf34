//! Node podCIDR allocation (kube-controller-manager's `--allocate-node-cidrs` with the
//! range allocator): every Node gets one `/node_mask` block of `--cluster-cidr`
//! (default `10.88.0.0/16`, `/24` per node) in `spec.podCIDR` and `spec.podCIDRs`. A block is
//! taken while a Node holds it, so deleting the Node releases it: the free set is always
//! recomputed from the Nodes that exist (level-triggered, nothing to persist but the Nodes).
//!
//! [`plan`] is pure: (cluster CIDR, mask, nodes) → which node gets which block.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// `--cluster-cidr` default (k3s uses 10.42.0.0/16; kapsel 10.88.0.0/16).
pub const DEFAULT_CLUSTER_CIDR: &str = "10.88.0.0/16";

/// An IPv4 network (`addr/prefix`, host bits zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parse `a.b.c.d/n`; host bits must be zero.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: not a CIDR (a.b.c.d/n)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: prefix must be 0..=32"))?;
        let c = Ipv4Cidr { addr, prefix };
        if u32::from(addr) & !c.mask() != 0 {
            return Err(format!(
                "{s:?}: host bits are set (network is {})",
                c.network()
            ));
        }
        Ok(c)
    }

    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    fn network(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            prefix: self.prefix,
        }
    }

    /// Whether `other` lies entirely inside this network.
    pub fn contains(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && (u32::from(other.addr) & self.mask()) == u32::from(self.addr)
    }

    /// The `index`-th `/sub` block of this network.
    fn block(&self, sub: u8, index: u32) -> Ipv4Cidr {
        let size = 1u64 << (32 - u32::from(sub));
        let a = u64::from(u32::from(self.addr)) + u64::from(index) * size;
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::try_from(a).unwrap_or(u32::MAX)),
            prefix: sub,
        }
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The allocator's settings, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CidrConfig {
    pub cluster: Ipv4Cidr,
    pub node_mask: u8,
}

impl CidrConfig {
    pub fn new(cluster_cidr: &str, node_mask: u8) -> Result<Self, String> {
        let cluster = Ipv4Cidr::parse(cluster_cidr)?;
        if node_mask < cluster.prefix || node_mask > 30 {
            return Err(format!(
                "--node-cidr-mask-size {node_mask} must be between the cluster prefix /{} and /30",
                cluster.prefix
            ));
        }
        if node_mask - cluster.prefix > 16 {
            return Err(format!(
                "--node-cidr-mask-size {node_mask}: more than 65536 node blocks in {cluster}"
            ));
        }
        Ok(CidrConfig { cluster, node_mask })
    }

    /// Number of node blocks.
    pub fn blocks(&self) -> u32 {
        1 << (self.node_mask - self.cluster.prefix)
    }
}

/// A node as the allocator sees it: name and current `spec.podCIDR` (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCidr {
    pub name: String,
    pub pod_cidr: Option<String>,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrAction {
    /// Set `spec.podCIDR`/`podCIDRs` of the node.
    Assign { node: String, cidr: Ipv4Cidr },
    /// No free block is left for the node (event `CIDRNotAvailable`).
    Exhausted { node: String },
}

/// Assign a free block to every node without a podCIDR, lowest free block first, nodes in
/// name order (deterministic). Blocks held by existing nodes (any valid CIDR inside the
/// cluster range, whatever its size) are never handed out again; a node whose podCIDR is set
/// is left alone even if it lies outside the range (the API forbids changing it).
pub fn plan(cfg: &CidrConfig, nodes: &[NodeCidr]) -> Vec<CidrAction> {
    let mut taken: Vec<Ipv4Cidr> = nodes
        .iter()
        .filter_map(|n| n.pod_cidr.as_deref())
        .filter_map(|c| Ipv4Cidr::parse(c).ok())
        .filter(|c| cfg.cluster.contains(c) || c.contains(&cfg.cluster))
        .collect();
    let mut want: Vec<&NodeCidr> = nodes
        .iter()
        .filter(|n| n.pod_cidr.as_deref().is_none_or(str::is_empty))
        .collect();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::new();
    let mut next = 0u32;
    for n in want {
        let mut found = None;
        while next < cfg.blocks() {
            let b = cfg.cluster.block(cfg.node_mask, next);
            next += 1;
            if !taken.iter().any(|t| t.contains(&b) || b.contains(t)) {
                found = Some(b);
                break;
            }
        }
        match found {
            Some(cidr) => {
                taken.push(cidr);
                out.push(CidrAction::Assign {
                    node: n.name.clone(),
                    cidr,
                });
            }
            None => out.push(CidrAction::Exhausted {
                node: n.name.clone(),
            }),
        }
    }
    out
}

/// The nodes as the allocator must see them: its cache, plus the podCIDRs it has written that
/// the cache does not show yet (`written`: node name → CIDR). Without this, a pass over a
/// stale cache hands a block out twice: node b got block 1, its update is not in the cache yet,
/// node a registers and the plan gives a block 1 too (a's fresh copy has none, so the write
/// succeeds).
pub fn overlay(mut nodes: Vec<NodeCidr>, written: &BTreeMap<String, String>) -> Vec<NodeCidr> {
    for n in &mut nodes {
        if n.pod_cidr.as_deref().is_none_or(str::is_empty) {
            if let Some(c) = written.get(&n.name) {
                n.pod_cidr = Some(c.clone());
            }
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, c: Option<&str>) -> NodeCidr {
        NodeCidr {
            name: name.into(),
            pod_cidr: c.map(String::from),
        }
    }

    fn assign(node: &str, c: &str) -> CidrAction {
        CidrAction::Assign {
            node: node.into(),
            cidr: Ipv4Cidr::parse(c).unwrap(),
        }
    }

    #[test]
    fn parse_and_validate() {
        assert!(Ipv4Cidr::parse("10.88.0.0/16").is_ok());
        assert!(Ipv4Cidr::parse("10.88.0.1/16").is_err(), "host bits");
        assert!(Ipv4Cidr::parse("10.88.0.0").is_err());
        assert!(Ipv4Cidr::parse("10.88.0.0/33").is_err());
        assert!(Ipv4Cidr::parse("300.0.0.0/8").is_err());
        assert!(CidrConfig::new("10.88.0.0/16", 24).is_ok());
        assert!(
            CidrConfig::new("10.88.0.0/16", 8).is_err(),
            "mask shorter than cluster"
        );
        assert!(CidrConfig::new("10.88.0.0/16", 31).is_err());
        assert!(
            CidrConfig::new("10.0.0.0/8", 30).is_err(),
            "too many blocks"
        );
        assert_eq!(CidrConfig::new("10.88.0.0/16", 24).unwrap().blocks(), 256);
    }

    #[test]
    fn plan_table() {
        let cfg = CidrConfig::new("10.88.0.0/16", 24).unwrap();
        let small = CidrConfig::new("10.88.0.0/23", 24).unwrap();
        struct Case {
            name: &'static str,
            cfg: CidrConfig,
            nodes: Vec<NodeCidr>,
            want: Vec<CidrAction>,
        }
        let cases = vec![
            Case {
                name: "no nodes",
                cfg,
                nodes: vec![],
                want: vec![],
            },
            Case {
                name: "fresh nodes get the lowest blocks in name order",
                cfg,
                nodes: vec![n("b", None), n("a", None)],
                want: vec![assign("a", "10.88.0.0/24"), assign("b", "10.88.1.0/24")],
            },
            Case {
                name: "assigned nodes keep theirs; holes are reused",
                cfg,
                nodes: vec![
                    n("a", Some("10.88.1.0/24")),
                    n("c", None),
                    n("b", Some("10.88.0.0/24")),
                    n("d", Some("10.88.3.0/24")),
                    n("e", None),
                ],
                want: vec![assign("c", "10.88.2.0/24"), assign("e", "10.88.4.0/24")],
            },
            Case {
                name: "a deleted node's block is free again (it is simply not in the list)",
                cfg,
                nodes: vec![n("a", Some("10.88.1.0/24")), n("new", None)],
                want: vec![assign("new", "10.88.0.0/24")],
            },
            Case {
                name: "empty string counts as unset",
                cfg,
                nodes: vec![n("a", Some(""))],
                want: vec![assign("a", "10.88.0.0/24")],
            },
            Case {
                name: "a bigger block held by a node covers several of ours",
                cfg,
                nodes: vec![n("big", Some("10.88.0.0/23")), n("x", None)],
                want: vec![assign("x", "10.88.2.0/24")],
            },
            Case {
                name: "CIDRs outside the range and garbage are ignored",
                cfg,
                nodes: vec![
                    n("out", Some("192.168.0.0/24")),
                    n("bad", Some("nonsense")),
                    n("x", None),
                ],
                want: vec![assign("x", "10.88.0.0/24")],
            },
            Case {
                name: "exhausted",
                cfg: small,
                nodes: vec![n("a", None), n("b", None), n("c", None)],
                want: vec![
                    assign("a", "10.88.0.0/24"),
                    assign("b", "10.88.1.0/24"),
                    CidrAction::Exhausted { node: "c".into() },
                ],
            },
        ];
        for c in cases {
            assert_eq!(plan(&c.cfg, &c.nodes), c.want, "{}", c.name);
        }
    }

    #[test]
    fn a_stale_cache_does_not_hand_a_block_out_twice() {
        let cfg = CidrConfig::new("10.88.0.0/16", 24).unwrap();
        // n2 was given 10.88.1.0/24; the cache still shows it without one when n1 registers
        let stale = vec![n("n0", Some("10.88.0.0/24")), n("n1", None), n("n2", None)];
        let written: BTreeMap<String, String> =
            [("n2".to_string(), "10.88.1.0/24".to_string())].into();
        assert_eq!(
            plan(&cfg, &overlay(stale.clone(), &written)),
            vec![assign("n1", "10.88.2.0/24")]
        );
        // (what the plan alone did)
        assert_eq!(plan(&cfg, &stale)[0], assign("n1", "10.88.1.0/24"));
        // the cache wins once it shows a CIDR
        let fresh = vec![n("n2", Some("10.88.1.0/24"))];
        assert_eq!(overlay(fresh.clone(), &written), fresh);
    }
}
