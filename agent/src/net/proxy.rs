//! The service proxy (kube-proxy's nftables mode in spirit).
//!
//! Every Service port becomes rules in ONE nftables table owned by kapsel (`ip kapsel-svc`):
//!
//! ```text
//! prerouting/output (nat, dstnat) → services:
//!     ip daddr CLUSTER_IP tcp dport PORT            goto svc-H
//!     fib daddr type local … tcp dport NODE_PORT     goto np-H   (every node address)
//! np-H:   mark for masquerade, goto svc-H                       (Local policy: local endpoints)
//! svc-H:  [ip saddr @aff-H-i goto ep-H-i]  numgen random mod N vmap { 0 : goto ep-H-0, … }
//! ep-H-i: [hairpin: ip saddr EP mark]  [update @aff-H-i { ip saddr }]  dnat to EP:TARGET
//! postrouting (nat, srcnat): marked → masquerade
//! input/forward/output (filter): Service ports without a ready endpoint → reject
//! ```
//!
//! The whole table is rewritten in one `nft -f` transaction (`table; delete table; table {…}`),
//! so a change is atomic: a packet sees the old rules or the new ones, never a mix. Only READY
//! endpoints get traffic (`addresses`, not `notReadyAddresses`); Endpoints already carry
//! resolved target ports (the controller resolves named `targetPort`s), matched to Service
//! ports by port name and protocol. `sessionAffinity: ClientIP` keeps a per-endpoint dynamic
//! set of client addresses (3 h, Kubernetes' default); the sets start empty after each change.
//!
//! [`render`] is pure (table-tested); [`run`] watches Services and Endpoints and programs the
//! table through [`Nft`]. The table stays when the agent stops (pods keep their Services
//! across an agent restart); [`teardown`] removes it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kapsel_api::client::Client;
use kapsel_api::watcher::{self, reflector, watcher, Store, WatcherConfig};
use kapsel_api::{Endpoints, Resource, Service};
use tokio::sync::{watch, Notify};

use super::nft::Nft;
use crate::error::Result;

/// The table family and name the proxy owns.
pub const FAMILY: &str = "ip";
pub const TABLE: &str = "kapsel-svc";
/// Packet mark bit for "masquerade on the way out" (kube-proxy's 0x4000).
pub const MASQ_MARK: u32 = 0x4000;
/// `sessionAffinity: ClientIP` timeout (Kubernetes' default, 10800 s).
pub const AFFINITY_TIMEOUT_SECS: u32 = 10800;

/// One ready endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub node: Option<String>,
}

/// One Service port, flattened with its ready endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcPort {
    pub namespace: String,
    pub name: String,
    pub port_name: String,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// `None` for headless Services (no virtual IP).
    pub cluster_ip: Option<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    pub affinity: bool,
    /// `externalTrafficPolicy: Local`: NodePort traffic only to this node's endpoints, source
    /// address kept.
    pub local_only: bool,
    pub backends: Vec<Backend>,
}

impl SvcPort {
    /// A short stable id for chain names (FNV-1a of namespace/name/port/protocol).
    pub fn id(&self) -> String {
        let mut h: u32 = 0x811c_9dc5;
        for b in format!(
            "{}/{}/{}/{}",
            self.namespace, self.name, self.port_name, self.proto
        )
        .bytes()
        {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    }
}

fn proto_of(p: Option<&str>) -> Option<&'static str> {
    match p.unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        _ => None, // SCTP: not proxied
    }
}

/// Flatten Services and their Endpoints into ports (sorted, deterministic).
pub fn service_ports(services: &[Arc<Service>], endpoints: &[Arc<Endpoints>]) -> Vec<SvcPort> {
    let eps: BTreeMap<(&str, &str), &Endpoints> = endpoints
        .iter()
        .map(|e| ((e.metadata.namespace(), e.metadata.name()), &**e))
        .collect();
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            continue;
        }
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|s| s.parse::<Ipv4Addr>().ok());
        let node_ports = matches!(ty, "NodePort" | "LoadBalancer");
        let ep = eps.get(&(svc.metadata.namespace(), svc.metadata.name()));
        for sp in &spec.ports {
            let Some(proto) = proto_of(sp.protocol.as_deref()) else {
                continue;
            };
            let Ok(port) = u16::try_from(sp.port) else {
                continue;
            };
            let port_name = sp.name.clone().unwrap_or_default();
            let mut backends: Vec<Backend> = ep
                .map(|e| {
                    e.subsets
                        .iter()
                        .filter_map(|ss| {
                            let p = ss.ports.iter().find(|p| {
                                p.name.as_deref().unwrap_or("") == port_name
                                    && proto_of(p.protocol.as_deref()) == Some(proto)
                            })?;
                            let target = u16::try_from(p.port).ok()?;
                            Some(ss.addresses.iter().filter_map(move |a| {
                                Some(Backend {
                                    ip: a.ip.parse().ok()?,
                                    port: target,
                                    node: a.node_name.clone(),
                                })
                            }))
                        })
                        .flatten()
                        .collect()
                })
                .unwrap_or_default();
            backends.sort();
            backends.dedup();
            out.push(SvcPort {
                namespace: svc.metadata.namespace().to_string(),
                name: svc.metadata.name().to_string(),
                port_name,
                proto,
                cluster_ip,
                port,
                node_port: sp
                    .node_port
                    .filter(|_| node_ports)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0),
                affinity: spec.session_affinity.as_deref() == Some("ClientIP"),
                local_only: spec.external_traffic_policy.as_deref() == Some("Local"),
                backends,
            });
        }
    }
    out.sort_by(|a, b| {
        (&a.namespace, &a.name, &a.port_name, a.proto).cmp(&(
            &b.namespace,
            &b.name,
            &b.port_name,
            b.proto,
        ))
    });
    out
}

/// Matches a node address (any local address but loopback, which cannot be DNATed away).
const LOCAL_DST: &str = "fib daddr type local ip daddr != 127.0.0.0/8";

fn reject(proto: &str) -> &'static str {
    if proto == "tcp" {
        "reject with tcp reset"
    } else {
        "reject"
    }
}

/// The nftables script that replaces table `table` with the rules for `ports` on node `node`.
pub fn render(table: &str, node: &str, ports: &[SvcPort]) -> String {
    let mut services = String::new();
    let mut noep = String::new();
    let mut noep_local = String::new();
    let mut chains = String::new();
    let mut sets = String::new();
    for sp in ports {
        let id = sp.id();
        let (proto, port) = (sp.proto, sp.port);
        let comment = format!("comment \"{}/{}:{}\"", sp.namespace, sp.name, sp.port_name);
        // The balancing chain over a set of backends (`svc-` all, `svl-` this node's).
        let balance = |prefix: &str, backends: &[&Backend]| {
            let mut c = format!("\tchain {prefix}-{id} {{\n");
            if sp.affinity {
                for b in backends {
                    let _ = writeln!(c, "\t\tip saddr @aff-{id}-{} goto ep-{id}-{}", b.ip, b.ip);
                }
            }
            let arms: Vec<String> = backends
                .iter()
                .enumerate()
                .map(|(i, b)| format!("{i} : goto ep-{id}-{}", b.ip))
                .collect();
            let _ = writeln!(
                c,
                "\t\tnumgen random mod {} vmap {{ {} }}",
                backends.len(),
                arms.join(", ")
            );
            c.push_str("\t}\n");
            c
        };
        let all: Vec<&Backend> = sp.backends.iter().collect();
        // Headless ports (no ClusterIP, no NodePort) are reached by pod IP: no chains.
        let reachable = sp.cluster_ip.is_some() || sp.node_port.is_some();
        if !all.is_empty() && reachable {
            chains.push_str(&balance("svc", &all));
            for b in &all {
                let _ = writeln!(chains, "\tchain ep-{id}-{} {{", b.ip);
                // Hairpin: a pod reaching itself through the Service must see another source.
                let _ = writeln!(
                    chains,
                    "\t\tip saddr {} meta mark set meta mark | {MASQ_MARK:#x}",
                    b.ip
                );
                if sp.affinity {
                    let _ = writeln!(chains, "\t\tupdate @aff-{id}-{} {{ ip saddr }}", b.ip);
                    let _ = writeln!(
                        sets,
                        "\tset aff-{id}-{} {{ type ipv4_addr; flags dynamic,timeout; timeout {AFFINITY_TIMEOUT_SECS}s; }}",
                        b.ip
                    );
                }
                let _ = writeln!(
                    chains,
                    "\t\tmeta l4proto {proto} dnat to {}:{}",
                    b.ip, b.port
                );
                chains.push_str("\t}\n");
            }
        }
        if let Some(ip) = sp.cluster_ip {
            if all.is_empty() {
                let _ = writeln!(
                    noep,
                    "\t\tip daddr {ip} {proto} dport {port} {} {comment}",
                    reject(proto)
                );
            } else {
                let _ = writeln!(
                    services,
                    "\t\tip daddr {ip} {proto} dport {port} goto svc-{id} {comment}"
                );
            }
        }
        if let Some(np) = sp.node_port {
            let local: Vec<&Backend> = if sp.local_only {
                all.iter()
                    .copied()
                    .filter(|b| b.node.as_deref() == Some(node))
                    .collect()
            } else {
                all.clone()
            };
            if local.is_empty() {
                let _ = writeln!(
                    noep_local,
                    "\t\t{LOCAL_DST} {proto} dport {np} {} {comment}",
                    reject(proto)
                );
            } else {
                let _ = writeln!(
                    services,
                    "\t\t{LOCAL_DST} {proto} dport {np} goto np-{id} {comment}"
                );
                let _ = writeln!(chains, "\tchain np-{id} {{");
                if sp.local_only {
                    // Source kept: only this node's endpoints.
                    let _ = writeln!(chains, "\t\tgoto svl-{id}\n\t}}");
                    chains.push_str(&balance("svl", &local));
                } else {
                    let _ = writeln!(
                        chains,
                        "\t\tmeta mark set meta mark | {MASQ_MARK:#x}\n\t\tgoto svc-{id}"
                    );
                    chains.push_str("\t}\n");
                }
            }
        }
    }
    let mut s = String::new();
    let _ = writeln!(s, "table {FAMILY} {table}");
    let _ = writeln!(s, "delete table {FAMILY} {table}");
    let _ = writeln!(s, "table {FAMILY} {table} {{");
    s.push_str(&sets);
    s.push_str("\tchain prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t\tjump services\n\t}\n");
    s.push_str("\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}\n");
    let _ = writeln!(
        s,
        "\tchain postrouting {{\n\t\ttype nat hook postrouting priority 100; policy accept;\n\t\tmeta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade\n\t}}"
    );
    s.push_str("\tchain filter-input {\n\t\ttype filter hook input priority -1; policy accept;\n\t\tjump no-endpoints-local\n\t}\n");
    s.push_str("\tchain filter-forward {\n\t\ttype filter hook forward priority -1; policy accept;\n\t\tjump no-endpoints\n\t}\n");
    s.push_str("\tchain filter-output {\n\t\ttype filter hook output priority -1; policy accept;\n\t\tjump no-endpoints\n\t\tjump no-endpoints-local\n\t}\n");
    let _ = write!(s, "\tchain no-endpoints {{\n{noep}\t}}\n");
    let _ = write!(s, "\tchain no-endpoints-local {{\n{noep_local}\t}}\n");
    let _ = write!(s, "\tchain services {{\n{services}\t}}\n");
    s.push_str(&chains);
    s.push_str("}\n");
    s
}

/// Remove the proxy's table (cluster teardown, `kapsel agent --cleanup`).
pub fn teardown(nft: &dyn Nft, table: &str) -> Result<()> {
    nft.delete_table(FAMILY, table)
}

/// What the proxy has programmed: the Endpoints resourceVersions it is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Programmed {
    /// namespace/name → resourceVersion of the Endpoints in the live rules.
    pub endpoints: BTreeMap<String, String>,
    /// How many times the table was written.
    pub generation: u64,
}

/// A store following `api`, waking `wake` on every event (shared with the cluster DNS).
pub(crate) fn reflect<K: Resource>(api: kapsel_api::client::Api<K>, wake: Arc<Notify>) -> Store<K> {
    let (store, writer) = watcher::store::<K>();
    tokio::spawn(async move {
        let stream = reflector(writer, watcher(api, WatcherConfig::default()));
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::debug!(kind = K::KIND, error = %e, "proxy watch error (the watcher recovers)");
            }
            wake.notify_one();
        }
    });
    store
}

/// Keep table `table` in sync with the cluster's Services and Endpoints until dropped.
/// `programmed` is updated after every successful write.
pub async fn run(
    client: Client,
    node: String,
    table: String,
    nft: Arc<dyn Nft>,
    programmed: watch::Sender<Programmed>,
) {
    let wake = Arc::new(Notify::new());
    let services = reflect(client.api::<Service>(None), wake.clone());
    let endpoints = reflect(client.api::<Endpoints>(None), wake.clone());
    services.wait_until_ready().await;
    endpoints.wait_until_ready().await;
    let mut last = String::new();
    let mut generation = 0u64;
    loop {
        let eps = endpoints.list();
        let ports = service_ports(&services.list(), &eps);
        let script = render(&table, &node, &ports);
        if script != last {
            let nft2 = nft.clone();
            let s2 = script.clone();
            let res = tokio::task::spawn_blocking(move || nft2.apply(&s2)).await;
            match res {
                Ok(Ok(())) => {
                    last = script;
                    generation += 1;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "service proxy: programming nftables failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "service proxy: nft task failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        programmed.send_replace(Programmed {
            endpoints: eps
                .iter()
                .map(|e| {
                    (
                        format!("{}/{}", e.metadata.namespace(), e.metadata.name()),
                        e.metadata.resource_version.clone().unwrap_or_default(),
                    )
                })
                .collect(),
            generation,
        });
        wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{
        EndpointAddress, EndpointPort, EndpointSubset, IntOrString, ServicePort, ServiceSpec,
    };

    fn svc(name: &str, ty: &str, ip: &str, ports: &[(&str, i32, &str, Option<i32>)]) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("default".into());
        s.spec = Some(ServiceSpec {
            type_: Some(ty.into()),
            cluster_ip: Some(ip.into()),
            ports: ports
                .iter()
                .map(|(n, p, proto, np)| ServicePort {
                    name: Some(n.to_string()).filter(|n| !n.is_empty()),
                    port: *p,
                    protocol: Some(proto.to_string()),
                    node_port: *np,
                    target_port: Some(IntOrString::String("http".into())),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        s
    }

    fn ep(
        name: &str,
        ready: &[(&str, &str)],
        not_ready: &[&str],
        ports: &[(&str, i32, &str)],
    ) -> Endpoints {
        let mut e = Endpoints::default();
        e.metadata.name = Some(name.into());
        e.metadata.namespace = Some("default".into());
        e.subsets = vec![EndpointSubset {
            addresses: ready
                .iter()
                .map(|(ip, node)| EndpointAddress {
                    ip: ip.to_string(),
                    node_name: Some(node.to_string()),
                    ..Default::default()
                })
                .collect(),
            not_ready_addresses: not_ready
                .iter()
                .map(|ip| EndpointAddress {
                    ip: ip.to_string(),
                    ..Default::default()
                })
                .collect(),
            ports: ports
                .iter()
                .map(|(n, p, proto)| EndpointPort {
                    name: Some(n.to_string()).filter(|n| !n.is_empty()),
                    port: *p,
                    protocol: Some(proto.to_string()),
                    app_protocol: None,
                })
                .collect(),
        }];
        e
    }

    #[test]
    fn ports_pick_ready_endpoints_by_port_name_and_protocol() {
        let s = Arc::new(svc(
            "web",
            "NodePort",
            "10.96.0.10",
            &[("http", 80, "TCP", Some(30080)), ("dns", 53, "UDP", None)],
        ));
        let e = Arc::new(ep(
            "web",
            &[("10.88.1.3", "n2"), ("10.88.0.2", "n1")],
            &["10.88.0.9"],
            &[("http", 8080, "TCP"), ("dns", 5353, "UDP")],
        ));
        let ports = service_ports(&[s], &[e]);
        assert_eq!(ports.len(), 2);
        let http = ports.iter().find(|p| p.port_name == "http").unwrap();
        assert_eq!(http.proto, "tcp");
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(
            http.backends
                .iter()
                .map(|b| (b.ip.to_string(), b.port))
                .collect::<Vec<_>>(),
            vec![("10.88.0.2".into(), 8080), ("10.88.1.3".into(), 8080)]
        );
        let dns = ports.iter().find(|p| p.port_name == "dns").unwrap();
        assert_eq!(
            (dns.proto, dns.backends[0].port, dns.node_port),
            ("udp", 5353, None)
        );
    }

    #[test]
    fn render_table() {
        let web = |eps: &[(&str, &str)], ty: &str| {
            let s = Arc::new(svc(
                "web",
                ty,
                "10.96.0.10",
                &[("", 80, "TCP", Some(30080))],
            ));
            let e = Arc::new(ep("web", eps, &["10.88.0.9"], &[("", 8080, "TCP")]));
            service_ports(&[s], &[e])
        };
        struct Case {
            name: &'static str,
            ports: Vec<SvcPort>,
            has: Vec<&'static str>,
            lacks: Vec<&'static str>,
        }
        let mut affinity = web(&[("10.88.0.2", "n1"), ("10.88.1.3", "n2")], "ClusterIP");
        affinity[0].affinity = true;
        let mut local = web(&[("10.88.0.2", "n1"), ("10.88.1.3", "n2")], "NodePort");
        local[0].local_only = true;
        let cases = vec![
            Case {
                name: "cluster ip over two ready endpoints, not-ready left out",
                ports: web(&[("10.88.0.2", "n1"), ("10.88.1.3", "n2")], "ClusterIP"),
                has: vec![
                    "ip daddr 10.96.0.10 tcp dport 80 goto svc-",
                    "numgen random mod 2 vmap { 0 : goto ep-",
                    "meta l4proto tcp dnat to 10.88.0.2:8080",
                    "meta l4proto tcp dnat to 10.88.1.3:8080",
                    "ip saddr 10.88.0.2 meta mark set meta mark | 0x4000",
                ],
                lacks: vec!["10.88.0.9", "30080", "reject"],
            },
            Case {
                name: "node port on every local address, masqueraded",
                ports: web(&[("10.88.0.2", "n1")], "NodePort"),
                has: vec![
                    "fib daddr type local ip daddr != 127.0.0.0/8 tcp dport 30080 goto np-",
                    "meta mark set meta mark | 0x4000\n\t\tgoto svc-",
                    "numgen random mod 1 vmap",
                ],
                lacks: vec!["reject"],
            },
            Case {
                name: "no ready endpoint: rejected, no dnat",
                ports: web(&[], "NodePort"),
                has: vec![
                    "ip daddr 10.96.0.10 tcp dport 80 reject with tcp reset",
                    "tcp dport 30080 reject with tcp reset",
                ],
                lacks: vec!["dnat", "numgen"],
            },
            Case {
                name: "client ip affinity",
                ports: affinity,
                has: vec![
                    "set aff-",
                    "flags dynamic,timeout; timeout 10800s;",
                    "ip saddr @aff-",
                    "update @aff-",
                ],
                lacks: vec![],
            },
            Case {
                name: "externalTrafficPolicy Local: node port only to this node's endpoints, unmasqueraded",
                ports: local,
                has: vec!["goto svl-", "numgen random mod 1 vmap"],
                lacks: vec!["meta mark set meta mark | 0x4000\n\t\tgoto svc-"],
            },
        ];
        for c in cases {
            let text = render("kt-t", "n1", &c.ports);
            assert!(
                text.starts_with("table ip kt-t\ndelete table ip kt-t\ntable ip kt-t {\n"),
                "{}",
                c.name
            );
            for h in &c.has {
                assert!(text.contains(h), "{}: missing {h:?} in\n{text}", c.name);
            }
            for l in &c.lacks {
                assert!(!text.contains(l), "{}: unexpected {l:?} in\n{text}", c.name);
            }
            // Deterministic.
            assert_eq!(text, render("kt-t", "n1", &c.ports), "{}", c.name);
        }
    }

    #[test]
    fn headless_and_external_name_get_no_rules() {
        let h = Arc::new(svc("h", "ClusterIP", "None", &[("", 80, "TCP", None)]));
        let mut x = svc("x", "ExternalName", "", &[]);
        x.spec.as_mut().unwrap().external_name = Some("example.org".into());
        let e = Arc::new(ep("h", &[("10.88.0.2", "n1")], &[], &[("", 80, "TCP")]));
        let ports = service_ports(&[h, Arc::new(x)], &[e]);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].cluster_ip, None);
        assert_eq!(ports[0].backends.len(), 1);
        let text = render("kt-t", "n1", &ports);
        assert!(!text.contains("daddr"), "{text}");
        assert!(
            !text.contains("dnat") && !text.contains("chain svc-"),
            "{text}"
        );
    }
}
