//! Pod networking end to end on the multi-node harness (root; CI=true fails instead of
//! skipping): pod IPs across nodes, hostNetwork, hostPort, masqueraded egress, agent restart,
//! pod deletion freeing its IP and veth, and nothing left after teardown.

use std::collections::BTreeMap;
use std::time::Duration;

use kapsel_api::client::{Api, ListParams};
use kapsel_api::Pod;
use kapsel_tests::multinode::{leftovers, Cluster, ClusterOpts};
use kapsel_tests::*;

const T: Duration = Duration::from_secs(90);

/// `replicas` busybox httpd pods (`app=<name>`), one per node (hostname spread via
/// anti-affinity is not needed: the scheduler spreads by load), answering their pod name.
fn web_deployment(name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: web
        image: busybox
        command: ["/bin/sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
        readinessProbe:
          tcpSocket:
            port: 8080
          periodSeconds: 1
"#
    )
}

fn pod_ip(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

async fn running_pods(c: &Cluster, selector: &str, n: usize) -> Vec<Pod> {
    let pods: Api<Pod> = c.client().api(Some("default"));
    eventually(T, &format!("{n} ready pods {selector} with IPs"), || {
        let pods = pods.clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            let v: Vec<Pod> = l
                .items
                .into_iter()
                .filter(|p| pod_ready(p) && !pod_ip(p).is_empty())
                .collect();
            (v.len() == n).then_some(v)
        }
    })
    .await
}

/// The harness itself: three nodes join, pods run on them, and tearing the cluster down
/// leaves no netns, link, cgroup or mount behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_runs_three_nodes_and_cleans_up() {
    let Some(mut c) = Cluster::start(
        "harness_runs_three_nodes_and_cleans_up",
        ClusterOpts::default(),
    ) else {
        return;
    };
    c.wait_ready(T).await;
    // every node reaches the control plane over the LAN and its peers
    for i in 0..3 {
        let peer = c.nodes[(i + 1) % 3].ip;
        c.node_sh(i, &format!("busybox ping -c1 -W2 {peer}"));
    }
    c.apply(&web_deployment("web", 3));
    let pods = wait_deployment_ready(&c.client(), "default", "web", "app=web", T).await;
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pods {
        *by_node
            .entry(
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
            )
            .or_default() += 1;
        // the pod's netns is where the harness says it is
        assert!(c.pod_netns(p).exists(), "{}", c.pod_netns(p).display());
    }
    println!("pods per node: {by_node:?}");
    // A node leaving the cluster: with its agent stopped, `kapsel agent --cleanup` removes
    // kapsel's bridge, pod veths, routes and nft tables from it — and nothing else.
    c.stop_agent(0);
    assert!(c.node_sh(0, "ip -o link show").contains("kapsel0"));
    let out = c.cleanup_node(0);
    println!("{out}");
    assert!(out.contains("bridge kapsel0"), "{out}");
    let links = c.node_sh(0, "ip -o link show");
    assert!(
        !links.contains("kapsel0") && !links.contains(": kv"),
        "{links}"
    );
    assert!(
        links.contains("eth0"),
        "the node's own interface stays: {links}"
    );
    assert_eq!(c.node_sh(0, "ip route show proto 75").trim(), "");
    let tables = c.node_sh(0, "nft list tables");
    assert!(!tables.contains("kapsel"), "{tables}");
    assert!(!c.nodes[0].data_dir.join("agent/net").exists());
    c.node_sh(0, &format!("busybox ping -c1 -W2 {}", c.nodes[1].ip));
    drop(c);
    let left = leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A shell prefix defining `kt_get URL`: an HTTP GET through `busybox nc` that prints the body
/// and fails unless the answer is `200` (Debian 12's busybox-static `wget` segfaults).
const KT_GET: &str = r#"kt_get() { u=${1#http://}; hp=${u%%/*}; p=/${u#*/}; r=$(printf 'GET %s HTTP/1.0\r\n\r\n' "$p" | busybox nc -w 5 "${hp%:*}" "${hp#*:}") || return 1; case "$r" in "HTTP/1."?" 200"*) printf '%s\n' "${r#*$(printf '\r\n\r')}";; *) echo "$r" >&2; return 1;; esac; }; "#;

/// An HTTP GET of `url` from inside a pod's netns; the body.
fn wget_from_pod(c: &Cluster, from: &Pod, url: &str) -> String {
    let o = c.pod_exec(from, &format!("{KT_GET}kt_get {url}"));
    assert!(
        o.status.success(),
        "wget {url} from {}: {}",
        from.metadata.name(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn node_cidrs(nodes: &[kapsel_api::Node]) -> BTreeMap<String, String> {
    nodes
        .iter()
        .map(|n| {
            (
                n.metadata.name().to_string(),
                n.spec
                    .as_ref()
                    .and_then(|s| s.pod_cidr.clone())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    // /24 blocks: the first three octets match
    let (net, _) = cidr.split_once('/').unwrap_or((cidr, ""));
    let a: Vec<&str> = ip.split('.').collect();
    let b: Vec<&str> = net.split('.').collect();
    a.len() == 4 && b.len() == 4 && a[..3] == b[..3]
}

const EXTRAS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: hostnet
spec:
  nodeName: kt-node-1
  hostNetwork: true
  containers:
  - name: web
    image: busybox
    command: ["/bin/sh", "-c", "mkdir -p /tmp/hn && echo hostnet > /tmp/hn/index.html && exec httpd -f -p 18090 -h /tmp/hn"]
---
apiVersion: v1
kind: Pod
metadata:
  name: hostport
  annotations:
    kubernetes.io/ingress-bandwidth: 2M
    kubernetes.io/egress-bandwidth: 1M
spec:
  nodeName: kt-node-2
  containers:
  - name: web
    image: busybox
    command: ["/bin/sh", "-c", "mkdir -p /tmp/www && echo hostport > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
    ports:
    - containerPort: 8080
      hostPort: 30080
"#;

/// Pod IPs from each node's podCIDR; pods on different nodes reach each other by pod IP
/// (routes via the other node's InternalIP); hostNetwork pods have the node's IP and
/// network; hostPort answers on the node's IP; bandwidth annotations become tc rules;
/// traffic to the "internet" leaves with the node's IP (masquerade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_across_nodes_hostport_hostnetwork_and_masquerade() {
    let Some(c) = Cluster::start(
        "pods_reach_each_other_across_nodes_hostport_hostnetwork_and_masquerade",
        ClusterOpts::default(),
    ) else {
        return;
    };
    c.wait_ready(T).await;
    let nodes: Api<kapsel_api::Node> = c.client().api(None);
    let cidrs = eventually(T, "every node has a podCIDR", || {
        let nodes = nodes.clone();
        async move {
            let l = nodes.list(&ListParams::default()).await.ok()?;
            let m = node_cidrs(&l.items);
            (m.len() == 3 && m.values().all(|c| !c.is_empty())).then_some(m)
        }
    })
    .await;
    let distinct: std::collections::BTreeSet<&String> = cidrs.values().collect();
    assert_eq!(distinct.len(), 3, "distinct podCIDRs: {cidrs:?}");
    println!("podCIDRs: {cidrs:?}");

    // one web pod per node (pinned, so the cross-node check is certain)
    for i in 0..3 {
        c.apply(&format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: web-{i}
  labels:
    app: web
spec:
  nodeName: kt-node-{i}
  containers:
  - name: web
    image: busybox
    command: ["/bin/sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
    readinessProbe:
      tcpSocket:
        port: 8080
      periodSeconds: 1
"#
        ));
    }
    c.apply(EXTRAS);
    let web = running_pods(&c, "app=web", 3).await;
    for p in &web {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
        let ip = pod_ip(p);
        assert!(
            in_cidr(&ip, &cidrs[&node]),
            "{ip} in {node}'s {}",
            cidrs[&node]
        );
        assert_eq!(
            p.status
                .as_ref()
                .unwrap()
                .pod_ips
                .first()
                .map(|x| x.ip.clone()),
            Some(ip.clone()),
            "podIPs"
        );
        // eth0 in the pod has the IP, MTU of the LAN, default route via the bridge
        let addr = c.pod_sh(
            p,
            "ip -o -4 addr show dev eth0; ip route show default; cat /sys/class/net/eth0/mtu",
        );
        assert!(addr.contains(&format!("inet {ip}/24")), "{addr}");
        assert!(addr.contains("default via"), "{addr}");
    }
    // every pod reaches every other pod (different nodes) by pod IP: HTTP and ping
    for a in &web {
        for b in &web {
            if a.metadata.name() == b.metadata.name() {
                continue;
            }
            let body = wget_from_pod(&c, a, &format!("http://{}:8080/", pod_ip(b)));
            assert_eq!(
                body,
                b.metadata.name(),
                "{} → {}",
                a.metadata.name(),
                b.metadata.name()
            );
        }
        let other = web.iter().find(|b| c.node_of(b) != c.node_of(a)).unwrap();
        c.pod_sh(a, &format!("busybox ping -c 1 -W 3 {}", pod_ip(other)));
    }
    // a node reaches pods on other nodes too (host-gw routes)
    c.node_sh(
        0,
        &format!("{KT_GET}kt_get http://{}:8080/", pod_ip(&web[1])),
    );
    println!("3 pods on 3 nodes reach each other by pod IP");

    // hostNetwork: the node's IP, the node's netns
    let pods: Api<Pod> = c.client().api(Some("default"));
    let hostnet = eventually(T, "hostnet running", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("hostnet").await.ok()?;
            (pod_phase(&p) == "Running" && !pod_ip(&p).is_empty()).then_some(p)
        }
    })
    .await;
    assert_eq!(
        pod_ip(&hostnet),
        c.nodes[1].ip.to_string(),
        "hostNetwork pod IP is the node IP"
    );
    let body = eventually(T, "hostNetwork httpd on node 1's IP", || {
        let o = c.node_exec(
            0,
            &format!("{KT_GET}kt_get http://{}:18090/", c.nodes[1].ip),
        );
        async move {
            o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
    })
    .await;
    assert_eq!(body, "hostnet");

    // hostPort: node 2's IP:30080 → the pod's 8080, from another node and from the host
    let hp = eventually(T, "hostport running", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("hostport").await.ok()?;
            (pod_phase(&p) == "Running" && !pod_ip(&p).is_empty()).then_some(p)
        }
    })
    .await;
    let url = format!("http://{}:30080/", c.nodes[2].ip);
    let body = eventually(T, "hostPort answers", || {
        let o = c.node_exec(0, &format!("{KT_GET}kt_get {url}"));
        async move {
            o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
    })
    .await;
    assert_eq!(body, "hostport");
    assert_eq!(
        sh(&format!("{KT_GET}kt_get {url}")).trim(),
        "hostport",
        "from the host (LAN)"
    );
    // bandwidth annotations: tbf towards the pod on the host end, tbf from it on its eth0
    let veth = format!(
        "kv{}",
        hp.metadata
            .uid()
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(12)
            .collect::<String>()
    );
    let tc = c.node_sh(2, &format!("tc qdisc show dev {veth}"));
    assert!(tc.contains("tbf") && tc.contains("rate 2Mbit"), "{tc}");
    let tc_pod = c.pod_sh(&hp, "tc qdisc show dev eth0");
    assert!(
        tc_pod.contains("tbf") && tc_pod.contains("rate 1Mbit"),
        "{tc_pod}"
    );
    println!("hostNetwork and hostPort answer; bandwidth shaped:\n{tc}{tc_pod}");

    // egress to the "internet" is masqueraded: the far end sees the node's IP
    let inet = c.internet.as_ref().unwrap().ip;
    let peers = c.internet_accepts(9000, Duration::from_secs(60));
    for p in &web {
        let o = c.pod_exec(p, &format!("echo hello | busybox nc -w 3 {inet} 9000"));
        let node_ip = c.nodes[c.node_of(p)].ip;
        let peer = peers
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| {
                panic!(
                    "no connection from {} ({e}); nc: {}",
                    p.metadata.name(),
                    String::from_utf8_lossy(&o.stderr)
                )
            });
        assert_eq!(
            peer.ip().to_string(),
            node_ip.to_string(),
            "{} masqueraded",
            p.metadata.name()
        );
    }
    println!("egress from pods to {inet} arrives from the node IPs");
}

/// An agent restart (SIGKILL) keeps pod IPs, veths, routes and rules; deleting a pod removes
/// its veth and frees its IP; nothing of the cluster is left after teardown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_keeps_pod_ips_and_deleting_a_pod_frees_its_ip() {
    let Some(mut c) = Cluster::start(
        "agent_restart_keeps_pod_ips_and_deleting_a_pod_frees_its_ip",
        ClusterOpts {
            nodes: 2,
            internet: false,
            ..Default::default()
        },
    ) else {
        return;
    };
    c.wait_ready(T).await;
    for i in 0..2 {
        for j in 0..2 {
            c.apply(&format!(
                r#"apiVersion: v1
kind: Pod
metadata:
  name: web-{i}-{j}
  labels:
    app: web
spec:
  nodeName: kt-node-{i}
  containers:
  - name: web
    image: busybox
    command: ["/bin/sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
    ports:
    - containerPort: 8080
      hostPort: {}
"#,
                31000 + i * 10 + j
            ));
        }
    }
    let before = running_pods(&c, "app=web", 4).await;
    let ips: BTreeMap<String, String> = before
        .iter()
        .map(|p| (p.metadata.name().to_string(), pod_ip(p)))
        .collect();
    let routes0 = c.node_sh(0, "ip route show proto 75");
    let nft0 = c.node_sh(0, "nft list table ip kapsel-podnet");
    assert!(
        routes0.contains(&c.nodes[1].ip.to_string()),
        "route to node 1: {routes0}"
    );

    c.kill_agent(0);
    c.start_agent(0);
    // the restarted agent reports its pods again (the node stays Ready); the pod IPs in the
    // API never change and the pods on node 0 still answer across nodes
    let pods: Api<Pod> = c.client().api(Some("default"));
    let on0: Vec<&Pod> = before.iter().filter(|p| c.node_of(p) == 0).collect();
    let from = before.iter().find(|p| c.node_of(p) == 1).unwrap();
    for p in &on0 {
        let url = format!("http://{}:8080/", pod_ip(p));
        assert_eq!(wget_from_pod(&c, from, &url), p.metadata.name());
    }
    // the new agent has synced once it answers a fresh pod: then compare everything
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: after-restart
  labels:
    app: later
spec:
  nodeName: kt-node-0
  containers:
  - name: web
    image: busybox
    command: ["/bin/sh", "-c", "exec sleep 1000"]
"#,
    );
    let later = running_pods(&c, "app=later", 1).await;
    let l = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    for p in &l.items {
        assert_eq!(
            pod_ip(p),
            ips[p.metadata.name()],
            "{} kept its IP",
            p.metadata.name()
        );
        assert_eq!(restart_count(p), 0);
    }
    assert!(
        !ips.values().any(|ip| *ip == pod_ip(&later[0])),
        "a new pod never gets a live IP: {} vs {ips:?}",
        pod_ip(&later[0])
    );
    assert_eq!(
        c.node_sh(0, "ip route show proto 75"),
        routes0,
        "routes kept"
    );
    let nft1 = c.node_sh(0, "nft list table ip kapsel-podnet");
    assert_eq!(nft1, nft0, "rules kept");
    println!("agent restart: IPs {ips:?}, routes and rules unchanged");

    // delete a pod: its veth goes and its IP is free
    let victim = on0[0];
    let veth = format!(
        "kv{}",
        victim
            .metadata
            .uid()
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(12)
            .collect::<String>()
    );
    assert!(c
        .node_exec(0, &format!("ip link show {veth}"))
        .status
        .success());
    pods.delete(
        victim.metadata.name(),
        &kapsel_api::DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ipam = c.nodes[0].data_dir.join("agent/net/ipam.json");
    let uid = victim.metadata.uid().to_string();
    eventually(T, "the deleted pod's veth and IP are gone", || {
        let link = c
            .node_exec(0, &format!("ip link show {veth}"))
            .status
            .success();
        let held = std::fs::read_to_string(&ipam)
            .unwrap_or_default()
            .contains(&uid);
        async move { (!link && !held).then_some(()) }
    })
    .await;
    let nft2 = c.node_sh(0, "nft list table ip kapsel-podnet");
    assert!(
        !nft2.contains(&format!("dnat to {}:", pod_ip(victim))),
        "its hostPort rule is gone: {nft2}"
    );
    drop(c);
    let left = leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}
