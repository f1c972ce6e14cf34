//! The pod network of a node (host-gw, flannel's `host-gw` backend in spirit).
//!
//! ```text
//!   node netns                                          pod netns (the sandbox's `net`)
//!   kapsel0 (bridge, first IP of the node's podCIDR) ── kv<uid12> ══ veth ══ eth0 (podIP/24)
//!   routes: other node's podCIDR via its InternalIP (proto 75, ours only)  default via kapsel0
//!   nft table `ip kapsel-podnet`: masquerade cluster → outside, hostPort DNAT
//! ```
//!
//! - The controller gives every Node a `spec.podCIDR` (default /24 blocks of 10.88.0.0/16).
//!   The agent learns its own from the Node watch ([`PodNetwork::run`]), creates the bridge,
//!   and programs a route to every other node's podCIDR via that node's InternalIP.
//! - [`PodNetwork::setup_pod`] runs after the runtime has created the sandbox: an IP from
//!   the host-local IPAM ([`ipam`], persisted in `<data_dir>/net/ipam.json` before it is
//!   used), a veth pair with `eth0` moved into the sandbox's netns, MTU, default route,
//!   bandwidth limits (`kubernetes.io/ingress-bandwidth`/`egress-bandwidth`, tc tbf on both
//!   ends of the veth) and
//!   hostPorts (DNAT), the egress lock-down of `kapsel.dev/egress: deny` pods (nft drop of
//!   everything leaving the cluster network). `hostNetwork: true` pods get the node IP and nothing else.
//!   [`PodNetwork::teardown_pod`] undoes it after the sandbox is gone and frees the IP.
//! - Restart: IPs, hostPorts and limits are in the IPAM file, so the rules are rebuilt at
//!   once and every adopted pod keeps its IP; pods whose sandbox vanished meanwhile are
//!   released.
//! - Privileged work goes through [`ops::NetOps`]; decisions are pure ([`plan`], [`ipam`]).
//!   Hollow agents have no `PodNetwork` at all.
//!
//! # For the service proxy and DNS (hooks)
//!
//! [`PodNetwork::subscribe`] gives a `tokio::sync::watch::Receiver<Arc<NetState>>`: the
//! node's podCIDR, the cluster CIDR, the bridge name and node IP, and every pod whose network
//! is up (uid → namespace/name/IP). It changes only after the kernel state is in place: when
//! a pod appears there, its `eth0` has the IP and a default route. The service proxy should
//! keep its rules in its own nftables table; this module only ever touches the table
//! [`plan::NFT_TABLE`] (`ip kapsel-podnet`), its own routes (`proto 75`), `kapsel0` and
//! `kv*` links.

pub mod cidr;
pub mod dns;
pub mod ipam;
pub mod nft;
pub mod ops;
pub mod plan;
pub mod proxy;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kapsel_api::client::Client;
use kapsel_api::watcher::{self, reflector, watcher, WatcherConfig};
use kapsel_api::{Node, Pod};
use tokio::sync::watch;

pub use cidr::Ipv4Cidr;
use ipam::IpamFile;
use ops::{NetOps, PodLink};
use plan::NodeRoute;

/// The bridge of every node.
pub const BRIDGE: &str = "kapsel0";
/// Host ends of pod veths start with this.
pub const VETH_PREFIX: &str = "kv";

/// Errors of the pod network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// Not possible yet (no podCIDR): retry later.
    #[error("pod network not ready: {0}")]
    NotReady(String),
    #[error("no free pod IP left in {0}")]
    Exhausted(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("network command failed: {0}")]
    Command(String),
    #[error("IPAM state: {0}")]
    State(String),
}

/// Settings of the pod network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub node_name: String,
    /// The node's InternalIP (hostNetwork pods get it as their IP).
    pub node_ip: Ipv4Addr,
    /// The whole pod network (traffic leaving it is masqueraded).
    pub cluster_cidr: Ipv4Cidr,
    /// Pod MTU; `None`: the MTU of the interface holding the node IP (host-gw adds no header).
    pub mtu: Option<u32>,
    /// Where `ipam.json` lives.
    pub state_dir: PathBuf,
}

/// The agent's pod network flags (`--cluster-cidr`, `--pod-mtu`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetworkOpts {
    /// The cluster's pod network (the controller's `--cluster-cidr`).
    pub cluster_cidr: String,
    pub mtu: Option<u32>,
}

impl Default for PodNetworkOpts {
    fn default() -> Self {
        PodNetworkOpts {
            cluster_cidr: DEFAULT_CLUSTER_CIDR.into(),
            mtu: None,
        }
    }
}

/// The default cluster CIDR (the controller's default too).
pub const DEFAULT_CLUSTER_CIDR: &str = "10.88.0.0/16";

/// The REST client the agent's watches (Nodes here; Services and Endpoints for the proxy)
/// use: the node's identity from the control plane client (mTLS), else the configured server
/// URL and token.
pub fn api_client(cfg: &crate::AgentConfig, cp: &dyn crate::ControlPlane) -> crate::Result<Client> {
    let cc = match cp.rest_config() {
        Some(cc) => cc,
        None => {
            let mut cc = kapsel_api::client::ClientConfig::new(&cfg.server);
            if let Some(t) = &cfg.token {
                cc = cc.with_token(t.clone());
            }
            cc
        }
    };
    Client::from_config(cc)
        .map_err(|e| crate::AgentError::InvalidConfig(format!("API client: {e}")))
}

/// One pod whose network is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetInfo {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub host_network: bool,
}

/// What the pod network looks like right now (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetState {
    pub node_ip: Ipv4Addr,
    pub cluster_cidr: Ipv4Cidr,
    /// The node's podCIDR, once the controller has assigned it and the bridge is up.
    pub pod_cidr: Option<Ipv4Cidr>,
    pub bridge: String,
    /// By pod uid.
    pub pods: BTreeMap<String, PodNetInfo>,
}

struct Inner {
    ipam: IpamFile,
    pod_cidr: Option<Ipv4Cidr>,
    nodes: Vec<NodeRoute>,
    mtu: u32,
    host_network: BTreeMap<String, PodNetInfo>,
    /// The last ruleset applied (skip identical re-applies).
    nft: Option<String>,
    /// Released allocations of vanished pods once, after the first node list.
    gc_done: bool,
}

/// The node's pod network manager. All methods block (commands); call them from
/// `spawn_blocking`.
pub struct PodNetwork {
    cfg: NetConfig,
    ops: Arc<dyn NetOps>,
    inner: Mutex<Inner>,
    state: watch::Sender<Arc<NetState>>,
}

impl std::fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetwork")
            .field("cfg", &self.cfg)
            .finish()
    }
}

fn pod_name(p: &Pod) -> String {
    format!("{}/{}", p.metadata.namespace(), p.metadata.name())
}

/// Whether the pod uses the node's network namespace.
pub fn host_network(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// Remove everything the pod network and the service proxy put into this node's kernel: both
/// nft tables, kapsel's routes (protocol [`plan::ROUTE_PROTO`]), the pods' host-side veths and
/// the bridge — for a node leaving the cluster (`kapsel-agent --cleanup`, like
/// `kube-proxy --cleanup`), run after the agent has stopped. Nothing else is touched. Pods still
/// running lose their network. Returns what was removed.
pub fn cleanup_node(ops: &dyn NetOps) -> Result<Vec<String>, NetError> {
    let mut removed = Vec::new();
    for table in [proxy::TABLE, plan::NFT_TABLE] {
        ops.nft_delete_table(table)?;
        removed.push(format!("nft table ip {table} (if it existed)"));
    }
    for dst in ops.list_routes()?.into_keys() {
        ops.delete_route(dst)?;
        removed.push(format!("route {dst}"));
    }
    for link in ops.list_links(VETH_PREFIX)? {
        ops.delete_link(&link)?;
        removed.push(format!("link {link}"));
    }
    if ops.link_exists(BRIDGE) {
        ops.delete_bridge(BRIDGE)?;
        removed.push(format!("bridge {BRIDGE}"));
    }
    Ok(removed)
}

impl PodNetwork {
    /// The real pod network of an agent (iproute2/nft, state in `<data_dir>/net`).
    pub fn from_agent(
        o: &PodNetworkOpts,
        cfg: &crate::AgentConfig,
        host_ip: &str,
    ) -> Result<Arc<Self>, NetError> {
        let node_ip: Ipv4Addr = host_ip.parse().map_err(|_| {
            NetError::Invalid(format!(
                "the pod network needs an IPv4 node IP, got {host_ip:?}"
            ))
        })?;
        let cluster_cidr = Ipv4Cidr::parse(&o.cluster_cidr)
            .map_err(|e| NetError::Invalid(format!("--cluster-cidr: {e}")))?;
        Self::new(
            NetConfig {
                node_name: cfg.node_name.clone(),
                node_ip,
                cluster_cidr,
                mtu: o.mtu,
                state_dir: cfg.data_dir.join("net"),
            },
            Arc::new(ops::IpCommands),
        )
    }

    /// Load the persisted IPAM state. Touches nothing in the kernel yet.
    pub fn new(cfg: NetConfig, ops: Arc<dyn NetOps>) -> Result<Arc<Self>, NetError> {
        let ipam = IpamFile::open(&cfg.state_dir.join("ipam.json"))?;
        let mtu = cfg
            .mtu
            .or_else(|| ops.mtu_of_address(cfg.node_ip))
            .unwrap_or(1500);
        let (state, _) = watch::channel(Arc::new(NetState {
            node_ip: cfg.node_ip,
            cluster_cidr: cfg.cluster_cidr,
            pod_cidr: None,
            bridge: BRIDGE.into(),
            pods: BTreeMap::new(),
        }));
        Ok(Arc::new(PodNetwork {
            cfg,
            ops,
            inner: Mutex::new(Inner {
                ipam,
                pod_cidr: None,
                nodes: Vec::new(),
                mtu,
                host_network: BTreeMap::new(),
                nft: None,
                gc_done: false,
            }),
            state,
        }))
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Follow the pod network's state (see the module docs).
    pub fn subscribe(&self) -> watch::Receiver<Arc<NetState>> {
        self.state.subscribe()
    }

    /// The node's podCIDR, once known.
    pub fn pod_cidr(&self) -> Option<Ipv4Cidr> {
        crate::lock(&self.inner).pod_cidr
    }

    /// The pod's IP if its network is up (or it uses the host network).
    pub fn pod_ip(&self, uid: &str) -> Option<Ipv4Addr> {
        let g = crate::lock(&self.inner);
        g.host_network
            .get(uid)
            .map(|p| p.ip)
            .or_else(|| g.ipam.state.get(uid))
    }

    fn publish(&self, g: &Inner) {
        let mut pods: BTreeMap<String, PodNetInfo> = g
            .ipam
            .state
            .allocations
            .values()
            .filter(|a| !a.extra.host_if.is_empty())
            .map(|a| {
                let (ns, name) = a.pod.split_once('/').unwrap_or(("", &a.pod));
                (
                    a.uid.clone(),
                    PodNetInfo {
                        namespace: ns.into(),
                        name: name.into(),
                        ip: a.ip,
                        host_network: false,
                    },
                )
            })
            .collect();
        pods.extend(g.host_network.clone());
        let st = NetState {
            node_ip: self.cfg.node_ip,
            cluster_cidr: self.cfg.cluster_cidr,
            pod_cidr: g.pod_cidr,
            bridge: BRIDGE.into(),
            pods,
        };
        self.state.send_if_modified(|cur| {
            if **cur == st {
                false
            } else {
                *cur = Arc::new(st);
                true
            }
        });
    }

    /// Apply the nftables table if it changed.
    fn sync_nft(&self, g: &mut Inner) -> Result<(), NetError> {
        let ports: Vec<plan::HostPort> = g
            .ipam
            .state
            .allocations
            .values()
            .flat_map(|a| a.extra.host_ports.clone())
            .collect();
        let deny: Vec<Ipv4Addr> = g
            .ipam
            .state
            .allocations
            .values()
            .filter(|a| a.extra.egress_deny)
            .map(|a| a.ip)
            .collect();
        let script = plan::nft_ruleset(self.cfg.cluster_cidr, BRIDGE, &ports, &deny);
        if g.nft.as_deref() == Some(script.as_str()) {
            return Ok(());
        }
        self.ops.nft_apply(&script)?;
        g.nft = Some(script);
        Ok(())
    }

    /// The Node list changed: learn our podCIDR (bridge, IPAM range), program routes to
    /// the other nodes, keep the nftables table in place.
    pub fn set_nodes(&self, nodes: Vec<NodeRoute>) -> Result<(), NetError> {
        let mut g = crate::lock(&self.inner);
        let mine = nodes
            .iter()
            .find(|n| n.name == self.cfg.node_name)
            .and_then(|n| n.pod_cidr);
        if let Some(cidr) = mine {
            let gw = cidr.gateway().ok_or_else(|| {
                NetError::Invalid(format!("podCIDR {cidr} has no host addresses"))
            })?;
            self.ops.ensure_bridge(BRIDGE, gw, cidr.prefix, g.mtu)?;
            if g.pod_cidr != Some(cidr) {
                let dropped = g.ipam.state.set_cidr(cidr);
                for a in &dropped {
                    tracing::warn!(pod = %a.pod, ip = %a.ip, %cidr, "podCIDR changed; pod IP dropped");
                    if !a.extra.host_if.is_empty() {
                        let _ = self.ops.delete_link(&a.extra.host_if);
                    }
                }
                g.ipam.save()?;
                g.pod_cidr = Some(cidr);
                tracing::info!(%cidr, bridge = BRIDGE, mtu = g.mtu, "pod network ready");
            }
            if !g.gc_done {
                self.gc_vanished(&mut g)?;
                g.gc_done = true;
            }
            self.sync_nft(&mut g)?;
        }
        g.nodes = nodes;
        let desired = plan::desired_routes(&self.cfg.node_name, g.pod_cidr, &g.nodes);
        let current = self.ops.list_routes()?;
        let (add, del) = plan::route_diff(&current, &desired);
        let mut first_err = None;
        for (dst, via) in add {
            if let Err(e) = self.ops.replace_route(dst, via) {
                tracing::warn!(%dst, %via, error = %e, "route not programmed");
                first_err.get_or_insert(e);
            }
        }
        for dst in del {
            if let Err(e) = self.ops.delete_route(dst) {
                first_err.get_or_insert(e);
            }
        }
        self.publish(&g);
        first_err.map_or(Ok(()), Err)
    }

    /// Release allocations whose sandbox netns is gone (pod removed while the agent was down).
    fn gc_vanished(&self, g: &mut Inner) -> Result<(), NetError> {
        let gone: Vec<(String, String)> = g
            .ipam
            .state
            .allocations
            .values()
            .filter(|a| a.extra.netns.as_ref().is_some_and(|p| !p.exists()))
            .map(|a| (a.uid.clone(), a.extra.host_if.clone()))
            .collect();
        for (uid, host_if) in &gone {
            if !host_if.is_empty() {
                let _ = self.ops.delete_link(host_if);
            }
            g.ipam.state.release(uid);
        }
        if !gone.is_empty() {
            tracing::info!(count = gone.len(), "released the IPs of pods that vanished");
            g.ipam.save()?;
        }
        Ok(())
    }

    /// Bring up the network of a pod whose sandbox exists (`netns`: its net namespace file);
    /// idempotent (an adopted pod keeps its IP and interface). Returns the pod IP.
    pub fn setup_pod(&self, pod: &Pod, netns: &Path) -> Result<Ipv4Addr, NetError> {
        let uid = pod.metadata.uid().to_string();
        let mut g = crate::lock(&self.inner);
        if host_network(pod) {
            g.host_network.insert(
                uid,
                PodNetInfo {
                    namespace: pod.metadata.namespace().into(),
                    name: pod.metadata.name().into(),
                    ip: self.cfg.node_ip,
                    host_network: true,
                },
            );
            self.publish(&g);
            return Ok(self.cfg.node_ip);
        }
        let cidr = g
            .pod_cidr
            .ok_or_else(|| NetError::NotReady("the node has no podCIDR yet".into()))?;
        let bandwidth = plan::bandwidth(pod)?;
        let ip = g.ipam.state.allocate(&uid, &pod_name(pod))?;
        let host_if = plan::host_veth_name(&uid);
        let host_ports = plan::host_ports(pod, ip);
        let had = g.ipam.state.allocations.get(&uid).map(|a| a.extra.clone());
        if let Some(a) = g.ipam.state.allocations.get_mut(&uid) {
            a.extra.netns = Some(netns.to_path_buf());
            a.extra.host_if = host_if.clone();
            a.extra.host_ports = host_ports;
            a.extra.egress_deny = plan::egress_denied(pod);
        }
        // durable before the IP is used
        g.ipam.save()?;
        let result = (|| {
            if !self.ops.link_exists(&host_if) {
                self.ops.add_pod_link(
                    BRIDGE,
                    &PodLink {
                        netns: netns.to_path_buf(),
                        host_if: host_if.clone(),
                        ip,
                        prefix: cidr.prefix,
                        gateway: cidr.gateway().unwrap_or(cidr.addr),
                        mtu: g.mtu,
                    },
                )?;
                if bandwidth != (None, None) {
                    self.ops
                        .set_bandwidth(&host_if, netns, bandwidth.0, bandwidth.1)?;
                }
            } else if had.as_ref().map(|h| h.bandwidth) != Some(bandwidth) {
                self.ops
                    .set_bandwidth(&host_if, netns, bandwidth.0, bandwidth.1)?;
            }
            Ok(())
        })();
        // On failure keep the allocation (the sandbox still exists; the next attempt reuses the IP).
        result?;
        if let Some(a) = g.ipam.state.allocations.get_mut(&uid) {
            a.extra.bandwidth = bandwidth;
        }
        g.ipam.save()?;
        self.sync_nft(&mut g)?;
        self.publish(&g);
        Ok(ip)
    }

    /// The pod's sandbox is gone: remove what is left of its network and free its IP.
    pub fn teardown_pod(&self, uid: &str) -> Result<(), NetError> {
        let mut g = crate::lock(&self.inner);
        if g.host_network.remove(uid).is_some() {
            self.publish(&g);
            return Ok(());
        }
        let Some(a) = g.ipam.state.allocations.get(uid).cloned() else {
            return Ok(());
        };
        let host_if = if a.extra.host_if.is_empty() {
            plan::host_veth_name(uid)
        } else {
            a.extra.host_if.clone()
        };
        self.ops.delete_link(&host_if)?;
        g.ipam.state.release(uid);
        g.ipam.save()?;
        self.sync_nft(&mut g)?;
        self.publish(&g);
        tracing::debug!(pod = %a.pod, ip = %a.ip, "pod network removed");
        Ok(())
    }

    /// Follow the Nodes (list+watch through `client`) and keep routes and the bridge in
    /// line; re-checks every 30 s (a route someone deleted comes back). Never returns.
    pub async fn run(self: Arc<Self>, client: Client) {
        let (store, writer) = watcher::store::<Node>();
        let (tx, mut rx) = watch::channel(());
        let events = reflector(
            writer,
            watcher(client.api::<Node>(None), WatcherConfig::default()),
        );
        tokio::spawn(events.for_each(move |e| {
            if let Err(err) = &e {
                tracing::debug!(error = %err, "node watch (recovers)");
            }
            let _ = tx.send(());
            async {}
        }));
        store.wait_until_ready().await;
        // Node writes that routing does not see (heartbeats, the proxy's programmed-revision
        // annotation) change nothing here: sync when the routes differ from the last
        // successful sync, and every 30 s regardless (repairs drift).
        let mut synced: Option<Vec<NodeRoute>> = None;
        let mut periodic = true;
        loop {
            let mut nodes: Vec<NodeRoute> = store.list().iter().map(|n| NodeRoute::of(n)).collect();
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            if periodic || synced.as_ref() != Some(&nodes) {
                let me = self.clone();
                let want = nodes.clone();
                synced = match tokio::task::spawn_blocking(move || me.set_nodes(want)).await {
                    Ok(Ok(())) => Some(nodes),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "pod network sync failed; retrying");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pod network sync task");
                        None
                    }
                };
            }
            periodic = false;
            tokio::select! {
                r = rx.changed() => if r.is_err() { tokio::time::sleep(Duration::from_secs(1)).await },
                _ = tokio::time::sleep(Duration::from_secs(30)) => periodic = true,
            }
        }
    }

    /// Wait until the node's podCIDR is known (pods need it), up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Ipv4Cidr, NetError> {
        let mut rx = self.subscribe();
        let r = tokio::time::timeout(timeout, rx.wait_for(|s| s.pod_cidr.is_some())).await;
        match r {
            Ok(Ok(s)) => s
                .pod_cidr
                .ok_or_else(|| NetError::NotReady("no podCIDR".into())),
            _ => Err(NetError::NotReady(format!(
                "node {} has no podCIDR after {timeout:?} (is the controller allocating node CIDRs?)",
                self.cfg.node_name
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ops::RecordingOps;
    use super::*;
    use kapsel_api::{Container, ContainerPort, ObjectMeta, PodSpec};

    fn cfg(dir: &Path) -> NetConfig {
        NetConfig {
            node_name: "n1".into(),
            node_ip: "192.168.5.1".parse().unwrap(),
            cluster_cidr: Ipv4Cidr::parse("10.88.0.0/16").unwrap(),
            mtu: None,
            state_dir: dir.to_path_buf(),
        }
    }

    fn nodes() -> Vec<NodeRoute> {
        vec![
            NodeRoute {
                name: "n1".into(),
                internal_ip: Some("192.168.5.1".parse().unwrap()),
                pod_cidr: Some(Ipv4Cidr::parse("10.88.1.0/24").unwrap()),
            },
            NodeRoute {
                name: "n2".into(),
                internal_ip: Some("192.168.5.2".parse().unwrap()),
                pod_cidr: Some(Ipv4Cidr::parse("10.88.2.0/24").unwrap()),
            },
        ]
    }

    fn pod(uid: &str, annotations: &[(&str, &str)], host_port: Option<i32>) -> Pod {
        let mut p = Pod::with_meta(ObjectMeta {
            name: Some(format!("p-{uid}")),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        });
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                ports: vec![ContainerPort {
                    container_port: 8080,
                    host_port,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn cleanup_removes_tables_routes_veths_and_bridge_and_nothing_else() {
        let ops = ops::RecordingOps::default();
        for l in [BRIDGE, "kv1234", "kv5678", "eth0", "docker0"] {
            crate::lock(&ops.links).insert(l.into());
        }
        let dst = Ipv4Cidr::parse("10.88.2.0/24").unwrap();
        crate::lock(&ops.routes).insert(dst, "192.168.1.12".parse().unwrap());
        let removed = cleanup_node(&ops).unwrap();
        assert_eq!(removed.len(), 6, "{removed:?}");
        assert_eq!(
            ops.calls(),
            [
                "nft_delete_table kapsel-svc",
                "nft_delete_table kapsel-podnet",
                "delete_route 10.88.2.0/24",
                "delete_link kv1234",
                "delete_link kv5678",
                "delete_bridge kapsel0",
            ]
        );
        let left: Vec<String> = crate::lock(&ops.links).iter().cloned().collect();
        assert_eq!(left, ["docker0", "eth0"]);
        assert!(crate::lock(&ops.routes).is_empty());
        // a second run finds nothing more to remove
        assert_eq!(cleanup_node(&ops).unwrap().len(), 2);
    }
    #[test]
    fn pods_wait_for_the_pod_cidr_then_get_ips_routes_and_rules() {
        let dir = tempfile::tempdir().unwrap();
        let ops = Arc::new(RecordingOps::default());
        let net = PodNetwork::new(cfg(dir.path()), ops.clone()).unwrap();
        let netns = dir.path().join("ns");
        std::fs::write(&netns, "").unwrap();
        let p = pod("aaaaaaaa-1111", &[], Some(30080));
        assert!(matches!(
            net.setup_pod(&p, &netns),
            Err(NetError::NotReady(_))
        ));
        net.set_nodes(nodes()).unwrap();
        assert_eq!(
            net.pod_cidr(),
            Some(Ipv4Cidr::parse("10.88.1.0/24").unwrap())
        );
        let ip = net.setup_pod(&p, &netns).unwrap();
        assert_eq!(ip, "10.88.1.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(net.setup_pod(&p, &netns).unwrap(), ip, "idempotent");
        let calls = ops.calls();
        assert!(
            calls.contains(&"ensure_bridge kapsel0 10.88.1.1/24 mtu 1500".to_string()),
            "{calls:?}"
        );
        assert!(calls.contains(&"replace_route 10.88.2.0/24 via 192.168.5.2".to_string()));
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.starts_with("add_pod_link"))
                .count(),
            1,
            "one veth: {calls:?}"
        );
        let nft = crate::lock(&ops.nft).clone().unwrap();
        assert!(
            nft.contains("tcp dport 30080 dnat to 10.88.1.2:8080"),
            "{nft}"
        );
        let st = net.subscribe().borrow().clone();
        assert_eq!(st.pods["aaaaaaaa-1111"].ip, ip);

        // a node goes away: its route goes too
        net.set_nodes(nodes()[..1].to_vec()).unwrap();
        assert!(crate::lock(&ops.routes).is_empty());

        // teardown frees the ip and the rule
        net.teardown_pod("aaaaaaaa-1111").unwrap();
        assert!(ops
            .calls()
            .contains(&"delete_link kvaaaaaaaa1111".to_string()));
        assert!(!crate::lock(&ops.nft)
            .clone()
            .unwrap()
            .contains("dport 30080"));
        assert!(net.subscribe().borrow().pods.is_empty());
    }

    #[test]
    fn restart_keeps_ips_and_releases_vanished_pods() {
        let dir = tempfile::tempdir().unwrap();
        let ops = Arc::new(RecordingOps::default());
        let ns_a = dir.path().join("ns-a");
        let ns_b = dir.path().join("ns-b");
        std::fs::write(&ns_a, "").unwrap();
        std::fs::write(&ns_b, "").unwrap();
        let (a, b) = (pod("aaaa", &[], None), pod("bbbb", &[], None));
        let (ip_a, ip_b) = {
            let net = PodNetwork::new(cfg(dir.path()), ops.clone()).unwrap();
            net.set_nodes(nodes()).unwrap();
            (
                net.setup_pod(&a, &ns_a).unwrap(),
                net.setup_pod(&b, &ns_b).unwrap(),
            )
        };
        std::fs::remove_file(&ns_b).unwrap(); // pod b vanished while the agent was down
        let before = ops.calls().len();
        let net = PodNetwork::new(cfg(dir.path()), ops.clone()).unwrap();
        net.set_nodes(nodes()).unwrap();
        assert_eq!(net.pod_ip("aaaa"), Some(ip_a));
        assert_eq!(net.pod_ip("bbbb"), None, "released");
        assert_eq!(
            net.setup_pod(&a, &ns_a).unwrap(),
            ip_a,
            "adopted pod keeps its IP"
        );
        let c = net.setup_pod(&pod("cccc", &[], None), &ns_a).unwrap();
        assert_ne!(c, ip_a);
        let new_calls = &ops.calls()[before..];
        assert!(
            !new_calls
                .iter()
                .any(|c| c.starts_with("add_pod_link kvaaaa")),
            "the adopted pod's veth is kept: {new_calls:?}"
        );
        let _ = ip_b;
    }

    #[test]
    fn host_network_and_bandwidth() {
        let dir = tempfile::tempdir().unwrap();
        let ops = Arc::new(RecordingOps::default());
        let net = PodNetwork::new(cfg(dir.path()), ops.clone()).unwrap();
        net.set_nodes(nodes()).unwrap();
        let mut h = pod("hhhh", &[], None);
        h.spec.as_mut().unwrap().host_network = Some(true);
        assert_eq!(
            net.setup_pod(&h, Path::new("/nonexistent")).unwrap(),
            "192.168.5.1".parse::<Ipv4Addr>().unwrap()
        );
        assert!(!ops.calls().iter().any(|c| c.starts_with("add_pod_link")));
        let bw = pod(
            "bbbb",
            &[
                (plan::INGRESS_BANDWIDTH, "10M"),
                (plan::EGRESS_BANDWIDTH, "1M"),
            ],
            None,
        );
        net.setup_pod(&bw, Path::new("/x")).unwrap();
        assert_eq!(
            crate::lock(&ops.bandwidth).get("kvbbbb"),
            Some(&(Some(10_000_000), Some(1_000_000)))
        );
        let bad = pod("cccc", &[(plan::INGRESS_BANDWIDTH, "fast")], None);
        assert!(matches!(
            net.setup_pod(&bad, Path::new("/x")),
            Err(NetError::Invalid(_))
        ));
        // a failed veth keeps the allocation for the retry and reports the error
        crate::lock(&ops.fail).insert("add_pod_link".into());
        let d = pod("dddd", &[], None);
        assert!(net.setup_pod(&d, Path::new("/x")).is_err());
        crate::lock(&ops.fail).clear();
        let ip1 = net.pod_ip("dddd").unwrap();
        assert_eq!(net.setup_pod(&d, Path::new("/x")).unwrap(), ip1);
    }
}
