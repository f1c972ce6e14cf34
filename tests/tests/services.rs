//! Services and cluster DNS end to end on the multi-node harness (root; CI=true fails instead
//! of skipping): ClusterIP and DNS names from another node, headless Services, NodePort on
//! every node spreading over the ready endpoints only, a deleted pod leaving the rules, and the
//! egress lock-down (`kapsel.dev/egress: deny`).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output};
use std::time::Duration;

use kapsel_api::client::{Api, ListParams};
use kapsel_api::{Pod, Service};
use kapsel_tests::multinode::{
    leftovers, processes_in_netns, shell_quote, udp_ask, Cluster, ClusterOpts, UdpEcho,
};
use kapsel_tests::*;

const T: Duration = Duration::from_secs(120);

/// A shell prefix defining `kt_get URL`: an HTTP GET through `busybox nc` that prints the body
/// and fails unless the answer is `200` (Debian 12's busybox-static `wget` segfaults).
const KT_GET: &str = r#"kt_get() { u=${1#http://}; hp=${u%%/*}; p=/${u#*/}; r=$(printf 'GET %s HTTP/1.0\r\n\r\n' "$p" | busybox nc -w 5 "${hp%:*}" "${hp#*:}") || return 1; case "$r" in "HTTP/1."?" 200"*) printf '%s\n' "${r#*$(printf '\r\n\r')}";; *) echo "$r" >&2; return 1;; esac; }; "#;

fn web_pod(name: &str, node: usize, ready: bool, annotations: &str) -> String {
    let probe_port = if ready { 8080 } else { 9999 };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: web
  annotations: {{{annotations}}}
spec:
  nodeName: kt-node-{node}
  containers:
  - name: web
    image: busybox
    command: ["/bin/sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
    readinessProbe:
      tcpSocket:
        port: {probe_port}
      periodSeconds: 1
---
"#
    )
}

const SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
  - name: echo
    port: 53
    protocol: UDP
    targetPort: 5353
---
apiVersion: v1
kind: Service
metadata:
  name: web-headless
spec:
  clusterIP: None
  selector:
    app: web
  ports:
  - port: 8080
"#;

fn pod_ip(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

fn run(cmd: &str) -> Output {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// A process of the pod's container: in the pod's netns, in a mount namespace of its own
/// (`/proc/PID/root` of a pivoted container reads as `/`, so the mount namespace tells).
fn container_pid(c: &Cluster, pod: &Pod) -> Option<u32> {
    let ino = std::fs::metadata(c.pod_netns(pod)).ok()?.ino();
    let want = format!("net:[{ino}]");
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
        let mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
        (ns.to_str() == Some(want.as_str()) && mnt != host_mnt).then_some(pid)
    })
}

/// `sh -c cmd` inside the pod's container (its mount, root and network: its own
/// `/etc/resolv.conf` and busybox).
fn container_exec(c: &Cluster, pod: &Pod, cmd: &str) -> Output {
    let pid =
        container_pid(c, pod).unwrap_or_else(|| panic!("no process of {}", pod.metadata.name()));
    run(&format!(
        "nsenter -t {pid} -m -n -r -w /bin/sh -c {}",
        shell_quote(cmd)
    ))
}

/// The MAC address of node `i`'s `kapsel0`.
fn bridge_mac(c: &Cluster, i: usize) -> String {
    let l = c.node_sh(i, "ip -o link show kapsel0");
    l.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {l}"))
        .to_string()
}

fn ok(o: &Output) -> Option<String> {
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn pods_by_name(c: &Cluster, names: &[&str], ready: &[bool]) -> BTreeMap<String, Pod> {
    let pods: Api<Pod> = c.client().api(Some("default"));
    let want: Vec<(String, bool)> = names
        .iter()
        .zip(ready)
        .map(|(n, r)| (n.to_string(), *r))
        .collect();
    eventually(T, &format!("pods {names:?} running with IPs"), || {
        let (pods, want) = (pods.clone(), want.clone());
        async move {
            let l = pods.list(&ListParams::default()).await.ok()?;
            let mut m = BTreeMap::new();
            for (n, r) in &want {
                let p = l.items.iter().find(|p| p.metadata.name() == n)?;
                let running = pod_phase(p) == "Running" && !pod_ip(p).is_empty();
                if !running || (*r && !pod_ready(p)) {
                    return None;
                }
                m.insert(n.clone(), p.clone());
            }
            Some(m)
        }
    })
    .await
}

/// `n` GETs of `url` from the host (the LAN); hostname → count, failures under "ERR".
fn spread(url: &str, n: usize) -> BTreeMap<String, usize> {
    let o = run(&format!(
        "{KT_GET}for i in $(seq {n}); do kt_get {url} || echo ERR; done"
    ));
    let mut m = BTreeMap::new();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        *m.entry(l.trim().to_string()).or_default() += 1;
    }
    m
}

/// A pod on node 2 reaches a Service backed by pods on nodes 0 and 1 by ClusterIP and by DNS
/// name (FQDN, `NAME.NS`, `NAME` through the search path of its resolv.conf), headless names
/// give the ready pod IPs; NodePort answers on every node's IP and spreads over the ready
/// endpoints only (a not-ready pod gets nothing); deleting a pod takes it out of every node's
/// rules; a `kapsel.dev/egress: deny` pod reaches pods, Services and DNS but not the
/// "internet"; nothing is left after teardown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_by_cluster_ip_dns_and_node_port_across_nodes_and_egress_lockdown() {
    let Some(mut c) = Cluster::start(
        "services_by_cluster_ip_dns_and_node_port_across_nodes_and_egress_lockdown",
        ClusterOpts::default(),
    ) else {
        return;
    };
    c.wait_ready(T).await;
    let mut manifest = String::new();
    manifest.push_str(&web_pod("web-0", 0, true, ""));
    manifest.push_str(&web_pod("web-1", 1, true, ""));
    manifest.push_str(&web_pod("web-nr", 2, false, ""));
    // the client and the locked-down pod are not behind the Service (other labels)
    manifest.push_str(&web_pod("client", 2, true, "").replace("app: web", "app: client"));
    manifest.push_str(
        &web_pod("locked", 2, true, "kapsel.dev/egress: deny").replace("app: web", "app: locked"),
    );
    manifest.push_str(SERVICES);
    c.apply(&manifest);
    let pods = pods_by_name(
        &c,
        &["web-0", "web-1", "web-nr", "client", "locked"],
        &[true, true, false, true, true],
    )
    .await;
    let svcs: Api<Service> = c.client().api(Some("default"));
    let svc = svcs.get("web").await.expect("service web");
    let spec = svc.spec.clone().unwrap();
    let cluster_ip = spec.cluster_ip.clone().unwrap();
    let node_port = spec.ports[0].node_port.expect("nodePort allocated");
    let udp_node_port = spec.ports[1].node_port.expect("UDP nodePort allocated");
    let (w0, w1, nr) = (
        pod_ip(&pods["web-0"]),
        pod_ip(&pods["web-1"]),
        pod_ip(&pods["web-nr"]),
    );
    println!("web ClusterIP {cluster_ip}, nodePort {node_port}; web-0 {w0}, web-1 {w1}, web-nr {nr} (not ready)");
    let client = &pods["client"];

    // resolv.conf of a pod: the node's DNS (its pod bridge address), the search path
    let rc = ok(&container_exec(&c, client, "cat /etc/resolv.conf")).expect("resolv.conf");
    let dns_ip = rc
        .lines()
        .find_map(|l| l.strip_prefix("nameserver "))
        .expect("a nameserver")
        .trim()
        .to_string();
    assert!(
        dns_ip.starts_with("10.88."),
        "cluster DNS on the pod bridge: {rc}"
    );
    assert!(
        rc.contains("search default.svc.cluster.local svc.cluster.local cluster.local")
            && rc.contains("options ndots:5"),
        "{rc}"
    );

    // DNS names from node 2 (web pods on nodes 0 and 1), through the container's resolver
    for name in ["web.default.svc.cluster.local", "web"] {
        let out = eventually(T, &format!("nslookup {name}"), || {
            // busybox nslookup also asks the other search domains (NXDOMAIN) and AAAA (no
            // answer), so its exit status says little: the address must be in the output
            let o = text(&container_exec(&c, client, &format!("nslookup {name}")));
            let cip = cluster_ip.clone();
            async move { o.contains(&format!("Address: {cip}")).then_some(o) }
        })
        .await;
        assert!(out.contains(&cluster_ip), "{name}: {out}");
    }
    let headless = eventually(T, "headless lists both ready pods", || {
        let o = text(&container_exec(&c, client, "nslookup web-headless"));
        let (w0, w1) = (w0.clone(), w1.clone());
        async move {
            (o.contains(&format!("Address: {w0}")) && o.contains(&format!("Address: {w1}")))
                .then_some(o)
        }
    })
    .await;
    assert!(!headless.contains(&nr), "not-ready pod in DNS: {headless}");
    let nx = text(&container_exec(
        &c,
        client,
        "nslookup nope.default.svc.cluster.local",
    ));
    assert!(nx.contains("NXDOMAIN"), "unknown name: {nx}");
    println!("DNS from the pod: web → {cluster_ip}; headless → {w0}, {w1}");

    // the Service by ClusterIP and by name (libc resolver: search path, ndots) from node 2
    for url in [
        format!("http://{cluster_ip}:80/"),
        "http://web.default.svc.cluster.local:80/".to_string(),
        "http://web.default:80/".to_string(),
        "http://web:80/".to_string(),
    ] {
        let body = eventually(T, &format!("GET {url} from the client pod"), || {
            let o = container_exec(&c, client, &format!("{KT_GET}kt_get {url}"));
            async move { ok(&o) }
        })
        .await;
        assert!(body == "web-0" || body == "web-1", "{url}: {body}");
    }

    // NodePort on every node's IP, spread over both ready pods, never the not-ready one
    for n in &c.nodes {
        let url = format!("http://{}:{node_port}/", n.ip);
        let m = spread(&url, 40);
        println!("NodePort {url}: {m:?}");
        assert_eq!(
            m.get("web-0").copied().unwrap_or(0) + m.get("web-1").copied().unwrap_or(0),
            40,
            "{url}: {m:?}"
        );
        assert!(
            m.contains_key("web-0") && m.contains_key("web-1"),
            "{url}: {m:?}"
        );
    }

    // UDP through the Service: ClusterIP from the client pod, NodePort on every node; the
    // not-ready pod answers too if it is ever asked
    {
        let _echo: Vec<UdpEcho> = ["web-0", "web-1", "web-nr"]
            .iter()
            .map(|n| UdpEcho::start(&c.pod_netns(&pods[*n]), 5353, n))
            .collect();
        let mut targets: Vec<(Option<std::path::PathBuf>, String)> =
            vec![(Some(c.pod_netns(client)), format!("{cluster_ip}:53"))];
        for n in &c.nodes {
            targets.push((None, format!("{}:{udp_node_port}", n.ip)));
        }
        for (ns, to) in targets {
            let addr: std::net::SocketAddr = to.parse().unwrap();
            let mut m: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..20 {
                // a new socket (source port) each time: a new conntrack flow, a new pick
                let a = udp_ask(ns.as_deref(), addr, "hi", Duration::from_secs(2))
                    .unwrap_or_else(|| "ERR".into());
                *m.entry(a).or_default() += 1;
            }
            println!("UDP {to}: {m:?}");
            assert_eq!(
                m.get("web-0").copied().unwrap_or(0) + m.get("web-1").copied().unwrap_or(0),
                20,
                "UDP {to}: {m:?}"
            );
            assert!(
                m.contains_key("web-0") && m.contains_key("web-1"),
                "{to}: {m:?}"
            );
        }
    }

    // agent restart (SIGKILL) of node 2: while it is down its Services keep working (the
    // rules stay in the kernel), and the restarted agent keeps the pod IPs and the rules
    let table_before = c.node_sh(2, "nft list table ip kapsel-svc");
    let podnet_before = c.node_sh(2, "nft list table ip kapsel-podnet");
    let ipam = c.nodes[2].data_dir.join("agent/net/ipam.json");
    let ipam_before = std::fs::read_to_string(&ipam).expect("ipam.json");
    // the bridge has a fixed MAC: pods' ARP entries for their gateway stay right when veths
    // come and go (a bridge following its ports' MACs broke egress after a new pod joined)
    let mac = bridge_mac(&c, 2);
    assert!(mac.starts_with("0a:58:"), "kapsel0 MAC {mac}");
    c.kill_agent(2);
    let body = ok(&c.pod_exec(client, &format!("{KT_GET}kt_get http://{cluster_ip}:80/")))
        .expect("the Service answers while node 2's agent is down");
    assert!(body.starts_with("web-"), "{body}");
    let m = spread(&format!("http://{}:{node_port}/", c.nodes[2].ip), 10);
    assert_eq!(
        m.get("web-0").copied().unwrap_or(0) + m.get("web-1").copied().unwrap_or(0),
        10,
        "NodePort of node 2 with its agent down: {m:?}"
    );
    c.start_agent(2);
    // the new agent has synced once it runs a new pod on the node
    c.apply(&web_pod("later", 2, true, "").replace("app: web", "app: later"));
    let later = pods_by_name(&c, &["later"], &[true]).await;
    let later_ip = pod_ip(&later["later"]);
    for n in ["web-nr", "client", "locked"] {
        assert!(
            ipam_before.contains(&format!("\"ip\": \"{}\"", pod_ip(&pods[n]))),
            "{n} in ipam.json: {ipam_before}"
        );
        assert_ne!(pod_ip(&pods[n]), later_ip, "a new pod never gets a live IP");
    }
    let now = pods_by_name(&c, &["web-nr", "client", "locked"], &[false, true, true]).await;
    for (n, p) in &now {
        assert_eq!(pod_ip(p), pod_ip(&pods[n]), "{n} kept its IP");
    }
    assert_eq!(
        c.node_sh(2, "nft list table ip kapsel-svc"),
        table_before,
        "Service rules kept across the restart"
    );
    assert_eq!(
        bridge_mac(&c, 2),
        mac,
        "kapsel0 kept its MAC when a pod joined"
    );
    let podnet_after = c.node_sh(2, "nft list table ip kapsel-podnet");
    assert_eq!(podnet_after, podnet_before, "pod rules kept");
    println!("agent restart on node 2: Services answered while it was down, IPs and rules kept");

    // egress lock-down: the locked pod reaches pods, the Service and DNS, not the internet
    let locked = &pods["locked"];
    let inet = c.internet.as_ref().unwrap().ip;
    assert_eq!(
        ok(&c.pod_exec(locked, &format!("{KT_GET}kt_get http://{w0}:8080/"))).as_deref(),
        Some("web-0"),
        "locked pod → pod"
    );
    let body = ok(&c.pod_exec(locked, &format!("{KT_GET}kt_get http://{cluster_ip}:80/")))
        .expect("locked pod → Service");
    assert!(body.starts_with("web-"), "{body}");
    let dns = text(&container_exec(&c, locked, "nslookup web"));
    assert!(
        dns.contains(&format!("Address: {cluster_ip}")),
        "locked pod → DNS: {dns}"
    );
    let peers = c.internet_accepts(9000, Duration::from_secs(30));
    let o = c.pod_exec(locked, &format!("echo hi | busybox nc -w 3 {inet} 9000"));
    assert!(
        peers.try_recv().is_err(),
        "the locked pod reached the internet: {}",
        text(&o)
    );
    // ... while an unlocked pod on the same node does (masqueraded)
    let o = c.pod_exec(client, &format!("echo hi | busybox nc -w 3 {inet} 9000"));
    let peer = peers
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| {
            panic!(
                "the client pod did not reach the internet ({e}): {}\nnode 2: {}\nclient: {}\ninternet: {}\nagent 2: {}",
                text(&o),
                text(&c.node_exec(2, "ip link show kapsel0; ip neigh; nft list ruleset; grep 9000 /proc/net/nf_conntrack")),
                text(&c.pod_exec(client, "ip addr; ip route; ip neigh")),
                text(&c.internet_exec("ip addr; ip route; ip neigh; ss -tan")),
                c.agent_log(2, 40)
            )
        });
    assert_eq!(
        peer.ip().to_string(),
        c.nodes[2].ip.to_string(),
        "masqueraded"
    );
    println!("egress: locked pod blocked; client pod reaches {inet} as {peer}");

    // deleting a pod takes it out of every node's rules
    c.kapsel(&["delete", "pod", "web-1"]);
    for i in 0..c.nodes.len() {
        let w1 = w1.clone();
        eventually(T, &format!("node {i} rules without web-1"), || {
            let o = c.node_exec(i, "nft list table ip kapsel-svc");
            let w1 = w1.clone();
            async move { ok(&o).filter(|t| !t.contains(&w1) && t.contains("dnat")) }
        })
        .await;
    }
    for n in &c.nodes {
        let m = spread(&format!("http://{}:{node_port}/", n.ip), 10);
        assert_eq!(m.get("web-0"), Some(&10), "{m:?}");
    }
    println!("web-1 deleted: every node sends everything to web-0");

    // teardown: no netns, link, cgroup or mount left, and no process keeps a node's netns
    // (with its kapsel0, pod veths, routes and nftables tables) alive
    let ids = c.node_netns_ids();
    assert_eq!(ids.len(), 3);
    drop(c);
    let left = leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    let holders = processes_in_netns(&ids);
    assert!(
        holders.is_empty(),
        "processes in a node's netns: {holders:?}"
    );
}
