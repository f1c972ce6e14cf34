//! Root test of the service proxy's nftables rules on real network namespaces:
//!
//! ```text
//!   kt-svc-cli (client 10.251.0.2) ── veth ── kt-svc-node (10.251.0.1; the proxy's table)
//!                                               ├─ veth ── kt-svc-p1 (10.250.1.2, httpd "p1")
//!                                               ├─ veth ── kt-svc-p2 (10.250.2.2, httpd "p2")
//!                                               └─ veth ── kt-svc-p3 (10.250.3.2, httpd "p3", not ready)
//! ```
//!
//! Requests by ClusterIP and NodePort spread over the ready endpoints only; removing an
//! endpoint removes it from the rules; ClientIP affinity pins a client; teardown leaves no
//! table and never touched another table in the same namespace. Not root or no busybox/nft/ip:
//! skipped with a message, failed under CI=true.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use kapsel_agent::net::nft::{Nft, NftCli};
use kapsel_agent::net::proxy::{render, service_ports, teardown, FAMILY};
use kapsel_api::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, IntOrString, Service, ServicePort,
    ServiceSpec,
};

const NODE: &str = "kt-svc-node";
const CLI: &str = "kt-svc-cli";
const TABLE: &str = "kt-svc";

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["ip", "nft", "busybox"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if root && tools {
        return true;
    }
    let why = format!("root={root}, ip/nft/busybox present={tools}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("cannot run the service proxy root test under CI=true: {why}");
    }
    eprintln!("skipping the service proxy root test: {why}");
    false
}

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh_out(cmd: &str) -> Option<String> {
    let out = Command::new("sh").args(["-c", cmd]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Owns the namespaces and server processes; removes everything on drop (also on failure).
struct Lab {
    servers: Vec<Child>,
    dirs: Vec<tempfile::TempDir>,
}

const PODS: [(&str, u8); 3] = [("p1", 1), ("p2", 2), ("p3", 3)];

impl Lab {
    fn new() -> Lab {
        Lab::cleanup();
        let mut lab = Lab {
            servers: Vec::new(),
            dirs: Vec::new(),
        };
        sh(&format!("ip netns add {NODE} && ip netns add {CLI}"));
        sh(&format!(
            "ip netns exec {NODE} sysctl -qw net.ipv4.ip_forward=1 && \
             ip netns exec {NODE} ip link set lo up && ip netns exec {CLI} ip link set lo up && \
             ip link add kt-svc-c0 netns {NODE} type veth peer name eth0 netns {CLI} && \
             ip netns exec {NODE} ip addr add 10.251.0.1/24 dev kt-svc-c0 && \
             ip netns exec {NODE} ip link set kt-svc-c0 up && \
             ip netns exec {CLI} ip addr add 10.251.0.2/24 dev eth0 && \
             ip netns exec {CLI} ip link set eth0 up && \
             ip netns exec {CLI} ip route add default via 10.251.0.1"
        ));
        for (name, n) in PODS {
            let ns = format!("kt-svc-{name}");
            sh(&format!(
                "ip netns add {ns} && ip netns exec {ns} ip link set lo up && \
                 ip link add kt-svc-v{n} netns {NODE} type veth peer name eth0 netns {ns} && \
                 ip netns exec {NODE} ip addr add 10.250.{n}.1/24 dev kt-svc-v{n} && \
                 ip netns exec {NODE} ip link set kt-svc-v{n} up && \
                 ip netns exec {ns} ip addr add 10.250.{n}.2/24 dev eth0 && \
                 ip netns exec {ns} ip link set eth0 up && \
                 ip netns exec {ns} ip route add default via 10.250.{n}.1"
            ));
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("index.html"), name).unwrap();
            let child = Command::new("ip")
                .args([
                    "netns", "exec", &ns, "busybox", "httpd", "-f", "-p", "8080", "-h",
                ])
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            lab.servers.push(child);
            lab.dirs.push(dir);
        }
        // Wait until every server answers directly.
        for (name, n) in PODS {
            let url = format!("http://10.250.{n}.2:8080/");
            let ok = (0..100).any(|_| {
                let got = get(&url);
                if got.as_deref() != Some(name) {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                got.as_deref() == Some(name)
            });
            assert!(ok, "pod {name} never answered at {url}");
        }
        lab
    }

    fn cleanup() {
        for ns in [
            "kt-svc-node",
            "kt-svc-cli",
            "kt-svc-p1",
            "kt-svc-p2",
            "kt-svc-p3",
        ] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        Lab::cleanup();
    }
}

/// One HTTP GET from the client namespace (a thread that joins its netns); the body, or None.
fn get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr: std::net::SocketAddr = if hostport.contains(':') {
        hostport.parse().ok()?
    } else {
        format!("{hostport}:80").parse().ok()?
    };
    let req = format!("GET /{path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n");
    std::thread::spawn(move || -> Option<String> {
        use std::io::{Read, Write};
        let f = std::fs::File::open(format!("/var/run/netns/{CLI}")).ok()?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        let t = std::time::Duration::from_secs(2);
        let mut c = std::net::TcpStream::connect_timeout(&addr, t).ok()?;
        c.set_read_timeout(Some(t)).ok()?;
        c.write_all(req.as_bytes()).ok()?;
        let mut buf = String::new();
        c.read_to_string(&mut buf).ok()?;
        let (head, body) = buf.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.").then_some(())?;
        head.contains(" 200 ").then(|| body.trim().to_string())
    })
    .join()
    .ok()
    .flatten()
}

fn count(url: &str, n: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let k = get(url).unwrap_or_else(|| "FAILED".into());
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

fn service(affinity: bool) -> Service {
    let mut s = Service::default();
    s.metadata.name = Some("web".into());
    s.metadata.namespace = Some("default".into());
    s.spec = Some(ServiceSpec {
        type_: Some("NodePort".into()),
        cluster_ip: Some("10.96.0.10".into()),
        session_affinity: Some(if affinity { "ClientIP" } else { "None" }.into()),
        ports: vec![ServicePort {
            name: Some("http".into()),
            port: 80,
            protocol: Some("TCP".into()),
            target_port: Some(IntOrString::String("http".into())),
            node_port: Some(30080),
            ..Default::default()
        }],
        ..Default::default()
    });
    s
}

fn endpoints(ready: &[u8], not_ready: &[u8]) -> Endpoints {
    let addr = |n: &u8| EndpointAddress {
        ip: format!("10.250.{n}.2"),
        node_name: Some("node".into()),
        ..Default::default()
    };
    let mut e = Endpoints::default();
    e.metadata.name = Some("web".into());
    e.metadata.namespace = Some("default".into());
    e.subsets = vec![EndpointSubset {
        addresses: ready.iter().map(addr).collect(),
        not_ready_addresses: not_ready.iter().map(addr).collect(),
        ports: vec![EndpointPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Some("TCP".into()),
            app_protocol: None,
        }],
    }];
    e
}

fn program(nft: &NftCli, affinity: bool, ready: &[u8], not_ready: &[u8]) {
    let ports = service_ports(
        &[Arc::new(service(affinity))],
        &[Arc::new(endpoints(ready, not_ready))],
    );
    nft.apply(&render(TABLE, "node", &ports)).unwrap();
}

#[test]
fn cluster_ip_and_node_port_balance_over_ready_endpoints_only() {
    if !can_run() {
        return;
    }
    let _lab = Lab::new();
    let nft = NftCli {
        netns: Some(NODE.into()),
    };
    // Someone else's table in the same namespace: must survive everything below.
    nft.apply("table ip kt-other {\n\tchain c {\n\t\ttype filter hook input priority 0; policy accept;\n\t}\n}\n")
        .unwrap();

    program(&nft, false, &[1, 2], &[3]);
    for url in ["http://10.96.0.10/", "http://10.251.0.1:30080/"] {
        let m = count(url, 40);
        eprintln!("{url}: {m:?}");
        assert_eq!(m.get("FAILED"), None, "{url}: {m:?}");
        assert!(m.get("p1").copied().unwrap_or(0) > 0, "{url}: {m:?}");
        assert!(m.get("p2").copied().unwrap_or(0) > 0, "{url}: {m:?}");
        assert_eq!(m.get("p3"), None, "not-ready pod got traffic: {m:?}");
    }

    // p2 goes away (killed): the next write drops it, atomically.
    program(&nft, false, &[1], &[]);
    let m = count("http://10.96.0.10/", 20);
    assert_eq!(m, BTreeMap::from([("p1".to_string(), 20)]));

    // p3 becomes ready and sessionAffinity ClientIP pins this client to one endpoint.
    program(&nft, true, &[1, 2, 3], &[]);
    let m = count("http://10.251.0.1:30080/", 20);
    assert_eq!(m.len(), 1, "affinity: one endpoint for one client: {m:?}");
    assert_eq!(m.get("FAILED"), None);

    // No ready endpoint: refused at once (not a timeout).
    program(&nft, false, &[], &[1]);
    let t = std::time::Instant::now();
    assert_eq!(get("http://10.96.0.10/"), None);
    assert!(t.elapsed() < std::time::Duration::from_millis(1500));

    teardown(&nft, TABLE).unwrap();
    let tables = sh_out(&format!("ip netns exec {NODE} nft list tables")).unwrap();
    assert!(!tables.contains(&format!("{FAMILY} {TABLE}")), "{tables}");
    assert!(tables.contains("ip kt-other"), "{tables}");
    // Teardown twice is fine.
    teardown(&nft, TABLE).unwrap();
}
