//! Cluster DNS: the DNS server every node runs for its pods (CoreDNS's `kubernetes` plugin in
//! spirit), built on `hickory-server`.
//!
//! - It listens on the node's pod bridge address (the gateway of the podCIDR, `kapsel0`'s IP),
//!   UDP and TCP port 53, so every pod of the node reaches it without any rule.
//! - Names come from a Service/Endpoints watch ([`build_zone`], pure):
//!   `NAME.NS.svc.cluster.local` → the ClusterIP; for headless Services (`clusterIP: None`)
//!   the ready endpoint addresses, plus `HOSTNAME.NAME.NS.svc.cluster.local` for endpoints
//!   with a hostname. Reverse (PTR) names of ClusterIPs answer with the Service name.
//! - [`answer`] (pure, table-tested) decides: records, NODATA, NXDOMAIN (authoritative for the
//!   cluster domain), or forward. Everything outside the cluster domain goes to the node's
//!   upstream resolvers (the `nameserver` lines of the host's `/etc/resolv.conf`), over UDP.
//! - Pods get `/etc/resolv.conf` from [`pod_resolv_conf`] (pure): `nameserver <node DNS>`,
//!   `search NS.svc.cluster.local svc.cluster.local cluster.local`, `options ndots:5`, per
//!   `dnsPolicy` (`ClusterFirst` default; `hostNetwork` pods and `Default` get the host's file
//!   unless `ClusterFirstWithHostNet`; `None`: no nameserver).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use kapsel_api::{Endpoints, Pod, Service};
use tokio::sync::watch;

/// The cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// TTL of cluster answers (short: Services change).
pub const TTL: u32 = 5;

/// The cluster's names: lower-case, no trailing dot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    /// name → A records (empty: the name exists but has no address, e.g. a headless Service
    /// without ready endpoints).
    pub a: BTreeMap<String, Vec<Ipv4Addr>>,
    /// reverse name (`4.3.2.1.in-addr.arpa`) → name.
    pub ptr: BTreeMap<String, String>,
    /// Every name that exists, including the empty non-terminals (`NS.svc.cluster.local`).
    pub names: BTreeSet<String>,
}

fn reverse_name(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

impl Zone {
    fn insert(&mut self, domain: &str, name: String, ips: Vec<Ipv4Addr>) {
        // the name and every ancestor inside the domain exist
        let mut n = name.as_str();
        loop {
            self.names.insert(n.to_string());
            if n == domain {
                break;
            }
            match n.split_once('.') {
                Some((_, rest)) => n = rest,
                None => break,
            }
        }
        let e = self.a.entry(name).or_default();
        e.extend(ips);
        e.sort();
        e.dedup();
    }
}

/// The zone of the cluster domain `domain` from the Services and their Endpoints.
pub fn build_zone(domain: &str, services: &[Arc<Service>], endpoints: &[Arc<Endpoints>]) -> Zone {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let eps: BTreeMap<(&str, &str), &Endpoints> = endpoints
        .iter()
        .map(|e| ((e.metadata.namespace(), e.metadata.name()), &**e))
        .collect();
    let mut z = Zone::default();
    z.names.insert(domain.clone());
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let (ns, name) = (svc.metadata.namespace(), svc.metadata.name());
        let fqdn = format!("{name}.{ns}.svc.{domain}").to_ascii_lowercase();
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cip = spec.cluster_ip.as_deref().unwrap_or("");
        if let Ok(ip) = cip.parse::<Ipv4Addr>() {
            z.ptr.insert(reverse_name(ip), fqdn.clone());
            z.insert(&domain, fqdn, vec![ip]);
        } else if cip == "None" {
            // headless: the ready endpoints
            let mut ips = Vec::new();
            if let Some(e) = eps.get(&(ns, name)) {
                for ss in &e.subsets {
                    for a in &ss.addresses {
                        let Ok(ip) = a.ip.parse::<Ipv4Addr>() else {
                            continue;
                        };
                        ips.push(ip);
                        if let Some(h) = a.hostname.as_deref().filter(|h| !h.is_empty()) {
                            z.insert(
                                &domain,
                                format!("{}.{fqdn}", h.to_ascii_lowercase()),
                                vec![ip],
                            );
                        }
                    }
                }
            }
            z.insert(&domain, fqdn, ips);
        }
    }
    z
}

/// What to answer for one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    A(Vec<Ipv4Addr>),
    Ptr(String),
    /// The name exists, but has no record of the type asked.
    NoData,
    NxDomain,
    /// Not ours: ask the upstream resolvers.
    Forward,
}

/// The answer for `qname` (any case, with or without the trailing dot) of type `qtype`.
pub fn answer(zone: &Zone, domain: &str, qname: &str, qtype: RecordType) -> Answer {
    let q = qname.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if q.ends_with(".in-addr.arpa") {
        return match zone.ptr.get(&q) {
            Some(n) if matches!(qtype, RecordType::PTR | RecordType::ANY) => Answer::Ptr(n.clone()),
            Some(_) => Answer::NoData,
            None => Answer::Forward,
        };
    }
    if q != domain && !q.ends_with(&format!(".{domain}")) {
        return Answer::Forward;
    }
    match zone.a.get(&q) {
        Some(ips) if matches!(qtype, RecordType::A | RecordType::ANY) && !ips.is_empty() => {
            Answer::A(ips.clone())
        }
        Some(_) => Answer::NoData,
        None if zone.names.contains(&q) => Answer::NoData,
        None => Answer::NxDomain,
    }
}

/// The `nameserver` addresses of a resolv.conf, except `skip` (our own address: no loops).
pub fn upstreams(resolv_conf: &str, skip: Option<IpAddr>) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then(|| w.next())?
        })
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|a| Some(*a) != skip)
        .map(|a| SocketAddr::new(a, 53))
        .collect()
}

/// The `/etc/resolv.conf` of a pod: `None` keeps the host's file.
///
/// `dns_ip`: the node's cluster DNS address (`None`: no pod network, hence no cluster DNS).
pub fn pod_resolv_conf(pod: &Pod, dns_ip: Option<Ipv4Addr>, domain: &str) -> Option<String> {
    let spec = pod.spec.as_ref();
    let host_net = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_net,
        "None" => return Some(String::new()),
        _ => false, // Default
    };
    let ip = dns_ip.filter(|_| cluster)?;
    let ns = pod.metadata.namespace();
    let ns = if ns.is_empty() { "default" } else { ns };
    Some(format!(
        "nameserver {ip}\nsearch {ns}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n"
    ))
}

fn record_name(s: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", s.trim_end_matches('.'))).ok()
}

/// The DNS request handler: the zone (replaced on every Service/Endpoints change) and the
/// upstream resolvers.
pub struct Handler {
    pub domain: String,
    pub zone: watch::Receiver<Arc<Zone>>,
    pub upstreams: Vec<SocketAddr>,
    pub forward_timeout: Duration,
}

impl Handler {
    fn soa(&self) -> Option<Record> {
        let origin = record_name(&self.domain)?;
        let soa = SOA::new(
            origin.clone(),
            record_name(&format!("hostmaster.{}", self.domain))?,
            1,
            7200,
            1800,
            86400,
            TTL,
        );
        Some(Record::from_rdata(origin, TTL, RData::SOA(soa)))
    }

    /// Ask the upstream resolvers (UDP, first answer wins); `None`: none answered.
    async fn forward(&self, name: &Name, qtype: RecordType) -> Option<Message> {
        let mut msg = Message::new();
        msg.set_id(rand_id());
        msg.set_message_type(MessageType::Query);
        msg.set_op_code(OpCode::Query);
        msg.set_recursion_desired(true);
        let mut q = Query::query(name.clone(), qtype);
        q.set_query_class(DNSClass::IN);
        msg.add_query(q);
        let bytes = msg.to_vec().ok()?;
        for up in &self.upstreams {
            let bind: SocketAddr = if up.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.send_to(&bytes, up).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            let r = tokio::time::timeout(self.forward_timeout, async {
                loop {
                    let (n, from) = sock.recv_from(&mut buf).await?;
                    if from == *up {
                        if let Ok(m) = Message::from_vec(&buf[..n]) {
                            if m.id() == msg.id() {
                                return Ok::<_, std::io::Error>(m);
                            }
                        }
                    }
                }
            })
            .await;
            if let Ok(Ok(m)) = r {
                return Some(m);
            }
        }
        None
    }
}

fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    // truncation intended: 16 random bits
    (h.finish() & 0xffff) as u16
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(true);
        let info = match request.request_info() {
            Ok(i) => i,
            Err(_) => {
                let m = builder.error_msg(request.header(), ResponseCode::FormErr);
                return send(&mut response, m, header).await;
            }
        };
        if request.op_code() != OpCode::Query || request.message_type() != MessageType::Query {
            let m = builder.error_msg(request.header(), ResponseCode::NotImp);
            return send(&mut response, m, header).await;
        }
        let qname: Name = info.query.name().into();
        let qtype = info.query.query_type();
        let zone = self.zone.borrow().clone();
        let ans = answer(&zone, &self.domain, &qname.to_ascii(), qtype);
        let soa: Vec<Record> = self.soa().into_iter().collect();
        match ans {
            Answer::A(ips) => {
                header.set_authoritative(true);
                let recs: Vec<Record> = ips
                    .iter()
                    .map(|ip| Record::from_rdata(qname.clone(), TTL, RData::A(A(*ip))))
                    .collect();
                let m = builder.build(header, recs.iter(), [], [], []);
                send_built(&mut response, m, header).await
            }
            Answer::Ptr(n) => {
                header.set_authoritative(true);
                let recs: Vec<Record> = record_name(&n)
                    .map(|n| Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(n))))
                    .into_iter()
                    .collect();
                let m = builder.build(header, recs.iter(), [], [], []);
                send_built(&mut response, m, header).await
            }
            Answer::NoData | Answer::NxDomain => {
                header.set_authoritative(true);
                if ans == Answer::NxDomain {
                    header.set_response_code(ResponseCode::NXDomain);
                }
                let m = builder.build(header, [], soa.iter(), [], []);
                send_built(&mut response, m, header).await
            }
            Answer::Forward => match self.forward(&qname, qtype).await {
                Some(up) => {
                    header.set_response_code(up.response_code());
                    let m = builder.build(
                        header,
                        up.answers().iter(),
                        up.name_servers().iter(),
                        [],
                        up.additionals().iter(),
                    );
                    send_built(&mut response, m, header).await
                }
                None => {
                    let m = builder.error_msg(request.header(), ResponseCode::ServFail);
                    send(&mut response, m, header).await
                }
            },
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    m: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    header: Header,
) -> ResponseInfo {
    send_built(response, m, header).await
}

async fn send_built<'a, R: ResponseHandler>(
    response: &mut R,
    m: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    header: Header,
) -> ResponseInfo {
    match response.send_response(m).await {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(error = %e, "dns: response not sent");
            let mut h = header;
            h.set_response_code(ResponseCode::ServFail);
            h.into()
        }
    }
}

/// Serve cluster DNS on `addr` (UDP and TCP) from a zone kept in line with the Services and
/// Endpoints the given stores follow. Returns when the server fails.
pub async fn serve(
    addr: SocketAddr,
    zone: watch::Receiver<Arc<Zone>>,
    upstreams: Vec<SocketAddr>,
) -> std::io::Result<()> {
    let handler = Handler {
        domain: CLUSTER_DOMAIN.into(),
        zone,
        upstreams,
        forward_timeout: Duration::from_secs(2),
    };
    let mut server = hickory_server::ServerFuture::new(handler);
    server.register_socket(tokio::net::UdpSocket::bind(addr).await?);
    server.register_listener(
        tokio::net::TcpListener::bind(addr).await?,
        Duration::from_secs(5),
    );
    tracing::info!(%addr, "cluster DNS listening");
    server
        .block_until_done()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// The node's cluster DNS: waits for the pod bridge, then serves on its address (port 53)
/// from a Service/Endpoints watch through `client`; forwards to the upstreams of the host's
/// `/etc/resolv.conf`. Restarts the server if it fails. Never returns.
pub async fn run(client: kapsel_api::client::Client, net: Arc<super::PodNetwork>) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let services = super::proxy::reflect(client.api::<Service>(None), wake.clone());
    let endpoints = super::proxy::reflect(client.api::<Endpoints>(None), wake.clone());
    let (ztx, zrx) = watch::channel(Arc::new(Zone::default()));
    tokio::spawn(async move {
        services.wait_until_ready().await;
        endpoints.wait_until_ready().await;
        loop {
            let z = build_zone(CLUSTER_DOMAIN, &services.list(), &endpoints.list());
            ztx.send_if_modified(|cur| {
                if **cur == z {
                    false
                } else {
                    *cur = Arc::new(z);
                    true
                }
            });
            wake.notified().await;
        }
    });
    let mut st = net.subscribe();
    loop {
        let gw = match st.wait_for(|s| s.pod_cidr.is_some()).await {
            Ok(s) => s.pod_cidr.and_then(|c| c.gateway()),
            Err(_) => return,
        };
        let Some(gw) = gw else { return };
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let ups = upstreams(&host, Some(IpAddr::V4(gw)));
        if let Err(e) = serve(SocketAddr::new(IpAddr::V4(gw), 53), zrx.clone(), ups).await {
            tracing::warn!(error = %e, "cluster DNS failed; restarting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The node's cluster DNS address for its pods (the pod bridge's address), once known.
pub fn node_dns_ip(net: &super::PodNetwork) -> Option<Ipv4Addr> {
    net.pod_cidr().and_then(|c| c.gateway())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{EndpointAddress, EndpointSubset, ObjectMeta, PodSpec, ServiceSpec};

    fn svc(ns: &str, name: &str, cip: &str, ty: &str) -> Arc<Service> {
        let mut s = Service::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some(ns.into());
        s.spec = Some(ServiceSpec {
            type_: Some(ty.into()),
            cluster_ip: Some(cip.into()),
            ..Default::default()
        });
        Arc::new(s)
    }

    fn eps(
        ns: &str,
        name: &str,
        ready: &[(&str, Option<&str>)],
        not_ready: &[&str],
    ) -> Arc<Endpoints> {
        let mut e = Endpoints::default();
        e.metadata.name = Some(name.into());
        e.metadata.namespace = Some(ns.into());
        e.subsets = vec![EndpointSubset {
            addresses: ready
                .iter()
                .map(|(ip, h)| EndpointAddress {
                    ip: ip.to_string(),
                    hostname: h.map(str::to_string),
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
            ports: vec![],
        }];
        Arc::new(e)
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_table() {
        let zone = build_zone(
            "cluster.local",
            &[
                svc("default", "web", "10.96.0.10", "ClusterIP"),
                svc("prod", "Db", "None", "ClusterIP"),
                svc("prod", "empty", "None", "ClusterIP"),
                svc("prod", "ext", "", "ExternalName"),
            ],
            &[
                eps(
                    "prod",
                    "Db",
                    &[("10.88.1.5", Some("db-0")), ("10.88.2.7", None)],
                    &["10.88.3.3"],
                ),
                eps("default", "web", &[("10.88.1.2", None)], &[]),
            ],
        );
        use Answer::*;
        use RecordType::{A as TA, AAAA, PTR as TPTR};
        let cases: Vec<(&str, RecordType, Answer)> = vec![
            (
                "web.default.svc.cluster.local.",
                TA,
                A(vec![ip("10.96.0.10")]),
            ),
            (
                "WEB.Default.svc.cluster.local",
                TA,
                A(vec![ip("10.96.0.10")]),
            ),
            ("web.default.svc.cluster.local.", AAAA, NoData),
            // headless: ready pod addresses only, per-pod hostnames
            (
                "db.prod.svc.cluster.local.",
                TA,
                A(vec![ip("10.88.1.5"), ip("10.88.2.7")]),
            ),
            (
                "db-0.db.prod.svc.cluster.local.",
                TA,
                A(vec![ip("10.88.1.5")]),
            ),
            ("empty.prod.svc.cluster.local.", TA, NoData),
            // search-path misses (web.default tried as web.default.default.svc.cluster.local)
            ("web.default.default.svc.cluster.local.", TA, NxDomain),
            ("web.svc.cluster.local.", TA, NxDomain),
            ("ext.prod.svc.cluster.local.", TA, NxDomain),
            // empty non-terminals exist
            ("prod.svc.cluster.local.", TA, NoData),
            ("svc.cluster.local.", TA, NoData),
            ("cluster.local.", TA, NoData),
            // reverse of a ClusterIP; other reverse names and outside names go upstream
            (
                "10.0.96.10.in-addr.arpa.",
                TPTR,
                Ptr("web.default.svc.cluster.local".into()),
            ),
            ("1.1.168.192.in-addr.arpa.", TPTR, Forward),
            ("example.org.", TA, Forward),
            ("notcluster.local.", TA, Forward),
        ];
        for (q, t, want) in cases {
            assert_eq!(answer(&zone, "cluster.local", q, t), want, "{q} {t}");
        }
    }

    #[test]
    fn upstreams_skip_ourselves_and_junk() {
        let rc = "# x\nnameserver 192.168.1.1\nnameserver 10.88.1.1\nsearch lan\nnameserver bogus\nnameserver ::1\n";
        assert_eq!(
            upstreams(rc, Some("10.88.1.1".parse().unwrap())),
            vec![
                "192.168.1.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn resolv_conf_by_dns_policy() {
        let pod = |policy: Option<&str>, host_net: bool| {
            let mut p = Pod::with_meta(ObjectMeta {
                name: Some("p".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            });
            p.spec = Some(PodSpec {
                dns_policy: policy.map(str::to_string),
                host_network: Some(host_net),
                ..Default::default()
            });
            p
        };
        let dns = Some(ip("10.88.1.1"));
        let cluster = "nameserver 10.88.1.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n";
        // (dnsPolicy, hostNetwork, node DNS address, expected resolv.conf)
        type Case<'a> = (Option<&'a str>, bool, Option<Ipv4Addr>, Option<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            (None, false, dns, Some(cluster)),
            (Some("ClusterFirst"), false, dns, Some(cluster)),
            (Some("ClusterFirst"), true, dns, None),
            (Some("ClusterFirstWithHostNet"), true, dns, Some(cluster)),
            (Some("Default"), false, dns, None),
            (Some("None"), false, dns, Some("")),
            (None, false, None, None),
        ];
        for (policy, hn, d, want) in cases {
            assert_eq!(
                pod_resolv_conf(&pod(policy, hn), d, CLUSTER_DOMAIN).as_deref(),
                want,
                "{policy:?} hostNetwork={hn}"
            );
        }
    }
}
