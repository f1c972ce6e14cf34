//! A multi-node cluster on one machine, for end-to-end networking and chaos tests (root only).
//!
//! ```text
//!   host netns                                    node netns kt-mn-<pid>-<k>-n<i>
//!   ┌──────────────────────────────┐             ┌───────────────────────────────┐
//!   │ kapsel server --no-agent     │  veth       │ eth0 10.254.N.(10+i)/24        │
//!   │ listening on 10.254.N.1      ├─ktv…──┐     │ kapsel agent (own data dir,    │
//!   │ bridge ktb<pidhex>-<k>       │       ├─────┤  runtime dir, cgroup parent)   │
//!   │   ("the LAN", 10.254.N.1/24) ├───────┘     │ kapsel0 bridge, pods (veths)   │
//!   └──────────────────────────────┘             └───────────────────────────────┘
//!                 │ veth                           (× `nodes`)
//!   "internet" netns kt-mn-<pid>-<k>-inet: 10.254.N.200/24, outside the cluster CIDR
//! ```
//!
//! Use:
//!
//! ```no_run
//! # async fn demo() {
//! use kapsel_tests::multinode::{Cluster, ClusterOpts};
//! let Some(c) = Cluster::start("my_test", ClusterOpts::default()) else { return }; // None: skipped
//! c.wait_ready(std::time::Duration::from_secs(60)).await;   // every node Ready
//! c.apply("apiVersion: v1\nkind: Pod\n…");                  // kapsel apply -f
//! let out = c.node_sh(0, "ip route");                       // a command in node 0's netns
//! # let pod: kapsel_api::Pod = todo!();
//! let ok = c.pod_exec(&pod, "busybox wget -qO- http://10.88.1.2:8080/"); // in a pod's netns
//! # }
//! ```
//!
//! - [`Cluster::start`] sweeps what dead harness processes left behind (every name carries the
//!   owner's pid), then builds the LAN, the nodes, the "internet", starts the control plane
//!   (`kapsel server --no-agent`, plus `opts.server_args`) and one `kapsel agent` per node
//!   (`opts.agent_args` appended). Images: `busybox` (a rootfs directory from Debian's
//!   busybox-static, served with `--image-dir busybox=…`).
//! - Commands: [`Cluster::node_exec`]/[`Cluster::node_sh`] (node netns, host binaries),
//!   [`Cluster::pod_exec`]/[`Cluster::pod_sh`] (a pod's netns, host binaries: use `busybox
//!   wget`, `busybox ping`, …), [`Cluster::internet_sh`], [`Cluster::kapsel`] (the CLI).
//! - Chaos: [`Cluster::kill_agent`] (SIGKILL), [`Cluster::stop_agent`] (SIGTERM),
//!   [`Cluster::start_agent`], [`Cluster::link_down`]/[`Cluster::link_up`] (cut a node off
//!   the LAN).
//! - Drop tears everything down: agents, every container and sandbox of every node (through
//!   the runtime's own state), cgroups, mounts, netns, links, the server, the data dir.
//!   [`leftovers`] lists anything of this process's that survived (tests assert it is empty
//!   after dropping the cluster).
//!
//! Node netns are entered with `nsenter --net` only (not `ip netns exec`, which would give the
//! agent a private mount namespace and hide its sandbox bind mounts from the host and from a
//! restarted agent).

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kapsel_api::client::Client;
use kapsel_api::Pod;

use crate::{binary, out_ok, require_root, require_tools, sh, sh_quiet, Proc, Server, ServerOpts};

/// Tools the harness needs on the host.
pub const TOOLS: &[&str] = &["ip", "nsenter", "nft", "tc", "busybox"];

/// The subnet of every harness LAN is 10.254.N.0/24 (N picked free under a host-wide lock).
const LAN_PREFIX: [u8; 2] = [10, 254];

/// Options of [`Cluster::start`].
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// Number of nodes (1..=9).
    pub nodes: usize,
    /// Extra flags of `kapsel server` (e.g. `--cluster-cidr`).
    pub server_args: Vec<String>,
    /// Extra flags of every `kapsel agent`.
    pub agent_args: Vec<String>,
    /// Create the "internet" netns on the LAN (an address outside the cluster network).
    pub internet: bool,
    /// `RUST_LOG` of the components.
    pub log: String,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            nodes: 3,
            server_args: Vec::new(),
            agent_args: Vec::new(),
            internet: true,
            log: "info".into(),
        }
    }
}

/// One node: a netns on the LAN with an agent inside.
pub struct NodeHandle {
    /// Node (and Kubernetes Node object) name: `kt-node-<i>`.
    pub name: String,
    /// The node's network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// Its address on the LAN (the Node's InternalIP).
    pub ip: Ipv4Addr,
    /// The host end of its LAN cable (on the LAN bridge).
    pub host_veth: String,
    /// `kapsel agent --data-dir` (the agent uses `<data_dir>/agent`).
    pub data_dir: PathBuf,
    /// `--runtime-dir`: sandboxes live in `<runtime_dir>/sandboxes/p-<pod uid>/`.
    pub runtime_dir: PathBuf,
    /// `--cgroup-parent`.
    pub cgroup_parent: String,
    pub agent: Option<Proc>,
}

/// The "internet": a netns on the LAN outside the cluster network.
pub struct Internet {
    pub netns: String,
    pub ip: Ipv4Addr,
    pub host_veth: String,
}

/// A running multi-node cluster; dropping it removes everything.
pub struct Cluster {
    /// `<pid>-<k>`: in every name the cluster owns.
    pub id: String,
    pub dir: PathBuf,
    pub bridge: String,
    /// The host's address on the LAN (the control plane listens here).
    pub host_ip: Ipv4Addr,
    /// The LAN, `10.254.N.0/24`.
    pub lan_cidr: String,
    pub server: Option<Server>,
    pub nodes: Vec<NodeHandle>,
    pub internet: Option<Internet>,
    /// The busybox rootfs served as image `busybox`.
    pub rootfs: PathBuf,
    opts: ClusterOpts,
}

fn pid_hex() -> String {
    format!("{:x}", std::process::id())
}

fn next_k() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static K: AtomicU32 = AtomicU32::new(0);
    K.fetch_add(1, Ordering::Relaxed)
}

/// Run a command and return its output (never panics on exit status).
fn run(cmd: &str) -> Output {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// Single-quote for sh.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A host-wide lock (flock on /run/kapsel-tests.lock) held while picking and claiming a LAN
/// subnet, so concurrent test processes never pick the same one.
struct HostLock(std::fs::File);

impl HostLock {
    fn take() -> HostLock {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/kapsel-tests.lock")
            .expect("open /run/kapsel-tests.lock");
        // SAFETY: flock on an fd we own; blocks until the lock is ours.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock: {}", std::io::Error::last_os_error());
        HostLock(f)
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own fd.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The owner pid in a harness name: netns `kt-mn-<pid>-…`, links `ktb<pidhex>-…`/`ktv<pidhex>-…`.
fn owner_of(name: &str) -> Option<u32> {
    if let Some(rest) = name.strip_prefix("kt-mn-") {
        return rest.split('-').next()?.parse().ok();
    }
    let rest = name
        .strip_prefix("ktb")
        .or_else(|| name.strip_prefix("ktv"))?;
    u32::from_str_radix(rest.split('-').next()?, 16).ok()
}

fn list_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn list_links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Mount points (host mount namespace) whose path contains `needle`, deepest first.
fn mounts_containing(needle: &str) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.contains(needle))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v.dedup();
    v
}

/// Every cgroup directory (all hierarchies) named `parent` at the top level, with its
/// descendants, deepest first.
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return dirs;
    };
    for root in roots.flatten() {
        let mut stack = vec![root.path().join(parent)];
        while let Some(d) = stack.pop() {
            if !d.is_dir() {
                continue;
            }
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
            dirs.push(d);
        }
    }
    dirs.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    dirs
}

/// SIGKILL every process in the cgroup trees named `parent` and remove the cgroups.
fn kill_cgroups(parent: &str) {
    for _ in 0..50 {
        let dirs = cgroup_dirs(parent);
        if dirs.is_empty() {
            return;
        }
        for d in &dirs {
            for f in ["cgroup.procs", "tasks"] {
                if let Ok(s) = std::fs::read_to_string(d.join(f)) {
                    for pid in s.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: kill(2); the pids are in a cgroup this harness owns.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            // v1 frozen cgroups would keep the processes: thaw.
            let _ = std::fs::write(d.join("freezer.state"), "THAWED");
            let _ = std::fs::write(d.join("cgroup.freeze"), "0");
        }
        for d in &dirs {
            let _ = std::fs::remove_dir(d);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Top-level cgroup names starting with `prefix` (any hierarchy).
fn cgroup_parents(prefix: &str) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") {
        for root in roots.flatten() {
            if let Ok(rd) = std::fs::read_dir(root.path()) {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.starts_with(prefix) && e.path().is_dir() {
                        v.push(n);
                    }
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

fn umount_all(needle: &str) {
    for m in mounts_containing(needle) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Remove every harness object (netns, link, cgroup, mount) whose name `tag` selects.
fn sweep(tag: impl Fn(&str) -> bool) {
    // processes first (they pin namespaces), then mounts, then namespaces and links
    for cg in cgroup_parents("kt-mn-") {
        if tag(&cg) {
            kill_cgroups(&cg);
        }
    }
    for ns in list_netns() {
        if tag(&ns) {
            // agents or servers of a dead harness still running in the netns
            let pids = run(&format!("ip netns pids {ns}"));
            for pid in String::from_utf8_lossy(&pids.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                // SAFETY: kill(2) of a process inside a netns this harness created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let mut needles: Vec<String> = Vec::new();
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        if let Some(p) = line.split(' ').nth(4) {
            if let Some(i) = p.find("kt-mn-") {
                let n = &p[i..];
                let n = n.split('/').next().unwrap_or(n);
                if tag(n) {
                    needles.push(n.to_string());
                }
            }
        }
    }
    needles.sort();
    needles.dedup();
    for n in needles {
        umount_all(&n);
    }
    for ns in list_netns() {
        if tag(&ns) {
            sh_quiet(&format!("ip netns del {ns}"));
        }
    }
    for l in list_links() {
        if tag(&l) {
            sh_quiet(&format!("ip link del {l}"));
        }
    }
}

/// Remove leftovers of dead harness processes (called by [`Cluster::start`]).
pub fn sweep_dead() {
    sweep(|n| owner_of(n).is_some_and(|pid| !pid_alive(pid)));
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if owner_of(&n).is_some_and(|pid| !pid_alive(pid)) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Everything this process's harness owns that still exists: netns, links, cgroups, mounts.
/// Empty after every [`Cluster`] of this process has been dropped.
pub fn leftovers() -> Vec<String> {
    let me = std::process::id();
    let mine = |n: &str| owner_of(n) == Some(me);
    let mut v: Vec<String> = Vec::new();
    v.extend(
        list_netns()
            .into_iter()
            .filter(|n| mine(n))
            .map(|n| format!("netns {n}")),
    );
    v.extend(
        list_links()
            .into_iter()
            .filter(|n| mine(n))
            .map(|n| format!("link {n}")),
    );
    v.extend(
        cgroup_parents("kt-mn-")
            .into_iter()
            .filter(|n| mine(n))
            .map(|n| format!("cgroup {n}")),
    );
    v.extend(
        mounts_containing(&format!("kt-mn-{me}-"))
            .into_iter()
            .map(|m| format!("mount {}", m.display())),
    );
    v
}

/// Processes whose network namespace is one of `ids` (see [`Cluster::node_netns_ids`]).
pub fn processes_in_netns(ids: &[u64]) -> Vec<u32> {
    let want: Vec<String> = ids.iter().map(|i| format!("net:[{i}]")).collect();
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
                    want.iter()
                        .any(|w| ns.to_str() == Some(w.as_str()))
                        .then_some(pid)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A UDP server in the network namespace `netns` (a file such as [`Cluster::pod_netns`])
/// on `port`, answering every datagram with `reply`, until the returned guard is dropped.
pub struct UdpEcho {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    pub fn start(netns: &Path, port: u16, reply: &str) -> UdpEcho {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (path, reply, flag) = (netns.to_path_buf(), reply.to_string(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let s = std::net::UdpSocket::bind(("0.0.0.0", port)).expect("bind udp in the netns");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("read timeout");
            let _ = tx.send(());
            let mut buf = [0u8; 1500];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((_, peer)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(reply.as_bytes(), peer);
                }
            }
        });
        rx.recv().expect("udp echo started");
        UdpEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Send `msg` to `to` over UDP from inside the network namespace `netns` (`None`: the
/// host's) and return the first answer within `timeout`.
pub fn udp_ask(
    netns: Option<&Path>,
    to: std::net::SocketAddr,
    msg: &str,
    timeout: Duration,
) -> Option<String> {
    let (path, msg) = (netns.map(Path::to_path_buf), msg.to_string());
    std::thread::spawn(move || {
        if let Some(p) = path {
            let f = std::fs::File::open(&p).ok()?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        }
        let s = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        s.send_to(msg.as_bytes(), to).ok()?;
        let mut buf = [0u8; 1500];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .join()
    .ok()
    .flatten()
}

/// Build a busybox rootfs (Debian's busybox-static) in `dir/rootfs`.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.join("rootfs");
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "var",
        "www",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("rootfs dir");
    }
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod");
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox (apt-get install busybox-static)");
    std::fs::copy(bb, root.join("bin/busybox")).expect("copy busybox");
    let list = Command::new(bb)
        .arg("--list-full")
        .output()
        .expect("busybox --list-full");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let p = root.join(applet.trim_start_matches('/'));
        if p.exists() {
            continue;
        }
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("applet dir");
        }
        std::fs::hard_link(root.join("bin/busybox"), &p).expect("applet link");
    }
    if !root.join("bin/httpd").exists() {
        std::fs::hard_link(root.join("bin/busybox"), root.join("bin/httpd")).expect("httpd");
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
    root
}

impl Cluster {
    /// Build and start the cluster. `None` when the test is skipped (not root or a tool
    /// missing, outside CI); under `CI=true` that panics instead.
    pub fn start(test: &str, opts: ClusterOpts) -> Option<Cluster> {
        if !require_root(test) || !require_tools(test, TOOLS) {
            return None;
        }
        assert!((1..=9).contains(&opts.nodes), "1 to 9 nodes");
        sweep_dead();
        let pid = std::process::id();
        let k = next_k();
        let id = format!("{pid}-{k}");
        let dir = std::env::temp_dir().join(format!("kt-mn-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let bridge = format!("ktb{}-{k}", pid_hex());
        let mut c = Cluster {
            id: id.clone(),
            dir: dir.clone(),
            bridge: bridge.clone(),
            host_ip: Ipv4Addr::UNSPECIFIED,
            lan_cidr: String::new(),
            server: None,
            nodes: Vec::new(),
            internet: None,
            rootfs: PathBuf::new(),
            opts: opts.clone(),
        };
        // From here on, a panic drops `c`, which removes whatever exists.
        {
            let _lock = HostLock::take();
            let addrs = sh("ip -o -4 addr show");
            let n = (1..=250u8)
                .find(|n| {
                    !addrs.contains(&format!("inet {}.{}.{n}.", LAN_PREFIX[0], LAN_PREFIX[1]))
                })
                .expect("a free 10.254.N.0/24 for the LAN");
            c.host_ip = Ipv4Addr::new(LAN_PREFIX[0], LAN_PREFIX[1], n, 1);
            c.lan_cidr = format!("{}.{}.{n}.0/24", LAN_PREFIX[0], LAN_PREFIX[1]);
            sh(&format!("ip link add {bridge} type bridge"));
            sh(&format!(
                "ip addr add {}/24 dev {bridge} && ip link set {bridge} up",
                c.host_ip
            ));
        }
        let lan = |host: u8| {
            let o = c.host_ip.octets();
            Ipv4Addr::new(o[0], o[1], o[2], host)
        };
        for i in 0..opts.nodes {
            let netns = format!("kt-mn-{id}-n{i}");
            let host_veth = format!("ktv{}-{k}-{i}", pid_hex());
            let ip = lan(u8::try_from(11 + i).expect("small"));
            let node_dir = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            c.nodes.push(NodeHandle {
                name: format!("kt-node-{i}"),
                netns: netns.clone(),
                ip,
                host_veth: host_veth.clone(),
                data_dir: node_dir.join("data"),
                runtime_dir: node_dir.join("run"),
                cgroup_parent: format!("kt-mn-{id}-n{i}"),
                agent: None,
            });
            c.plug(&netns, &host_veth, ip);
        }
        if opts.internet {
            let netns = format!("kt-mn-{id}-inet");
            let host_veth = format!("ktv{}-{k}-i", pid_hex());
            let ip = lan(200);
            c.internet = Some(Internet {
                netns: netns.clone(),
                ip,
                host_veth: host_veth.clone(),
            });
            c.plug(&netns, &host_veth, ip);
        }
        c.rootfs = busybox_rootfs(&dir);
        // 20 s of node-monitor grace unless the test sets its own
        let mut extra = opts.server_args.clone();
        if !extra.iter().any(|a| a == "--node-monitor-grace-seconds") {
            extra.extend(["--node-monitor-grace-seconds".to_string(), "20".into()]);
        }
        let server = Server::start_listen(
            &dir.join("server"),
            &ServerOpts {
                no_agent: true,
                extra,
                ..Default::default()
            },
            &format!("{}:0", c.host_ip),
        );
        // The network tests run hostNetwork/hostPort pods in `default`: allow them there (Pod
        // Security admission enforces `baseline` by default).
        let ns = dir.join("default-ns.yaml");
        std::fs::write(
            &ns,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels:\n    \
             pod-security.kubernetes.io/enforce: privileged\n",
        )
        .expect("write namespace manifest");
        server.kapsel(&["apply", "-f", &ns.display().to_string()]);
        c.server = Some(server);
        for i in 0..opts.nodes {
            c.start_agent(i);
        }
        Some(c)
    }

    /// A netns on the LAN: veth `host_veth` on the bridge, `eth0` with `ip` inside.
    fn plug(&self, netns: &str, host_veth: &str, ip: Ipv4Addr) {
        sh(&format!("ip netns add {netns}"));
        sh(&format!(
            "ip link add {host_veth} type veth peer name eth0 netns {netns}"
        ));
        sh(&format!(
            "ip link set {host_veth} master {} up",
            self.bridge
        ));
        sh(&format!(
            "ip -n {netns} link set lo up && ip -n {netns} addr add {ip}/24 dev eth0 && \
             ip -n {netns} link set eth0 up && ip -n {netns} route add default via {}",
            self.host_ip
        ));
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// The control plane's URL (reachable from the host and from every node).
    pub fn url(&self) -> &str {
        &self.server().url
    }

    pub fn client(&self) -> Client {
        self.server().client()
    }

    /// Wait until every node is Ready.
    pub async fn wait_ready(&self, timeout: Duration) {
        crate::wait_nodes_ready(&self.client(), self.nodes.len(), timeout).await;
    }

    /// `kapsel apply -f` of a manifest (one or more YAML documents).
    pub fn apply(&self, yaml: &str) -> String {
        let f = self.dir.join(format!("apply-{}.yaml", next_k()));
        std::fs::write(&f, yaml).expect("write manifest");
        self.kapsel(&["apply", "-f", &f.to_string_lossy()])
    }

    /// The `kapsel` CLI against the cluster (panics on failure). Blocks the calling thread:
    /// async tests use [`Cluster::kapsel_async`].
    pub fn kapsel(&self, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.cli_result(&args, crate::kapsel_cli(&self.server().kubeconfig(), &args))
    }

    /// [`Cluster::kapsel`] on tokio's blocking pool, so the test's runtime keeps running (its
    /// watches, timers and time bounds) while the CLI does.
    pub async fn kapsel_async(&self, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (kubeconfig, a) = (self.server().kubeconfig(), args.clone());
        let r = tokio::task::spawn_blocking(move || crate::kapsel_cli(&kubeconfig, &a))
            .await
            .expect("the kapsel CLI thread");
        self.cli_result(&args, r)
    }

    /// [`Cluster::apply`] without blocking the test's runtime.
    pub async fn apply_async(&self, yaml: &str) -> String {
        let f = self.dir.join(format!("apply-{}.yaml", next_k()));
        std::fs::write(&f, yaml).expect("write manifest");
        self.kapsel_async(&["apply", "-f", &f.to_string_lossy()])
            .await
    }

    /// stdout of a CLI call that succeeded; else a panic with its output, and on expiry of its
    /// deadline also where it was stuck and the server's and agents' last log lines.
    fn cli_result(&self, args: &[String], r: Result<Output, crate::TimedOut>) -> String {
        let out = match r {
            Ok(o) => o,
            Err(t) => {
                let mut logs: Vec<(&str, &Proc)> = vec![("kapsel server", &self.server().proc)];
                logs.extend(
                    self.nodes
                        .iter()
                        .filter_map(|n| Some((n.name.as_str(), n.agent.as_ref()?))),
                );
                panic!("{}", t.report(&logs));
            }
        };
        out_ok(&format!("kapsel {args:?}"), &out)
    }

    /// `sh -c cmd` in node `i`'s network namespace (host binaries and mounts).
    pub fn node_exec(&self, i: usize, cmd: &str) -> Output {
        let ns = format!("/run/netns/{}", self.nodes[i].netns);
        run(&format!("nsenter --net={ns} sh -c {}", shell_quote(cmd)))
    }

    /// [`Cluster::node_exec`], panicking on failure; returns stdout.
    pub fn node_sh(&self, i: usize, cmd: &str) -> String {
        out_ok(cmd, &self.node_exec(i, cmd))
    }

    /// The node (index) a pod is bound to.
    pub fn node_of(&self, pod: &Pod) -> usize {
        let n = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .expect("pod is bound");
        self.nodes
            .iter()
            .position(|x| x.name == n)
            .unwrap_or_else(|| panic!("pod on unknown node {n}"))
    }

    /// The bind-mounted network namespace file of a pod's sandbox.
    pub fn pod_netns(&self, pod: &Pod) -> PathBuf {
        let node = &self.nodes[self.node_of(pod)];
        node.runtime_dir
            .join("sandboxes")
            .join(format!("p-{}", pod.metadata.uid()))
            .join("net")
    }

    /// `sh -c cmd` in a pod's network namespace (host binaries: `busybox wget`, …).
    pub fn pod_exec(&self, pod: &Pod, cmd: &str) -> Output {
        let ns = self.pod_netns(pod);
        run(&format!(
            "nsenter --net={} sh -c {}",
            ns.display(),
            shell_quote(cmd)
        ))
    }

    pub fn pod_sh(&self, pod: &Pod, cmd: &str) -> String {
        out_ok(cmd, &self.pod_exec(pod, cmd))
    }

    /// `sh -c cmd` in the "internet" netns.
    pub fn internet_exec(&self, cmd: &str) -> Output {
        let inet = self.internet.as_ref().expect("opts.internet");
        run(&format!(
            "nsenter --net=/run/netns/{} sh -c {}",
            inet.netns,
            shell_quote(cmd)
        ))
    }

    pub fn internet_sh(&self, cmd: &str) -> String {
        out_ok(cmd, &self.internet_exec(cmd))
    }

    /// A TCP listener inside the "internet" netns (the socket stays in that netns).
    pub fn internet_listener(&self, port: u16) -> std::net::TcpListener {
        let inet = self.internet.as_ref().expect("opts.internet");
        let path = format!("/run/netns/{}", inet.netns);
        let ip = inet.ip;
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            std::net::TcpListener::bind((ip, port)).expect("bind in the internet netns")
        })
        .join()
        .expect("listener thread")
    }

    /// The namespace ids (inode numbers) of the nodes' network namespaces, where the agents
    /// keep `kapsel0`, pod veths, routes and nftables tables: after teardown
    /// [`processes_in_netns`] of them must be empty (nothing keeps that state alive).
    pub fn node_netns_ids(&self) -> Vec<u64> {
        use std::os::unix::fs::MetadataExt;
        self.nodes
            .iter()
            .filter_map(|n| std::fs::metadata(format!("/run/netns/{}", n.netns)).ok())
            .map(|m| m.ino())
            .collect()
    }

    /// Accept TCP connections on `port` in the "internet" netns for `window`, in a thread,
    /// closing each at once; the peers' addresses arrive on the returned channel. Busybox
    /// `nc -w` is a connect timeout only: after its stdin ends a client waits for the far end
    /// to close, so the accepts must run while the client does.
    pub fn internet_accepts(
        &self,
        port: u16,
        window: Duration,
    ) -> std::sync::mpsc::Receiver<std::net::SocketAddr> {
        let listener = self.internet_listener(port);
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + window;
            while std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((s, peer)) => {
                        drop(s);
                        if tx.send(peer).is_err() {
                            return;
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        rx
    }

    /// Start (or restart) node `i`'s agent.
    pub fn start_agent(&mut self, i: usize) {
        let url = self.url().to_string();
        let token = self.server().node_token.clone();
        let n = &self.nodes[i];
        assert!(n.agent.is_none(), "agent {i} is running");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", n.netns))
            .arg(binary("kapsel"))
            .args(["agent", "--server", &url, "--token", &token])
            .args(["--node-name", &n.name])
            .args(["--node-ip", &n.ip.to_string()])
            .arg("--data-dir")
            .arg(&n.data_dir)
            .arg("--runtime-dir")
            .arg(&n.runtime_dir)
            .args(["--cgroup-parent", &n.cgroup_parent])
            .args(["--eviction-memory-available", "0"])
            .arg("--image-dir")
            .arg(format!("busybox={}", self.rootfs.display()))
            .args(&self.opts.agent_args)
            .env("RUST_LOG", &self.opts.log)
            .stdin(Stdio::null());
        let log = self.dir.join(format!(
            "agent-{i}-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ));
        let p = Proc::spawn(&n.name, cmd, log);
        self.nodes[i].agent = Some(p);
    }

    /// `kapsel agent --cleanup` in node `i`'s network namespace (after its agent stopped):
    /// what a node leaving the cluster runs; its output.
    pub fn cleanup_node(&self, i: usize) -> String {
        let n = &self.nodes[i];
        assert!(n.agent.is_none(), "stop agent {i} first");
        let o = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", n.netns))
            .arg(binary("kapsel"))
            .args(["agent", "--cleanup", "--data-dir"])
            .arg(&n.data_dir)
            .output()
            .expect("run kapsel agent --cleanup");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "kapsel agent --cleanup: {}\n{out}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }

    /// SIGKILL node `i`'s agent (its containers keep running).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].agent.take() {
            p.kill9();
        }
    }

    /// SIGTERM node `i`'s agent and wait for it (containers keep running).
    pub fn stop_agent(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].agent.take() {
            p.terminate(Duration::from_secs(15));
        }
    }

    /// The last lines of node `i`'s current agent log.
    pub fn agent_log(&self, i: usize, lines: usize) -> String {
        self.nodes[i]
            .agent
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }

    /// Cut node `i` off the LAN (host end of its cable down).
    pub fn link_down(&self, i: usize) {
        sh(&format!("ip link set {} down", self.nodes[i].host_veth));
    }

    pub fn link_up(&self, i: usize) {
        sh(&format!("ip link set {} up", self.nodes[i].host_veth));
    }

    fn teardown(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut p) = n.agent.take() {
                p.kill9();
            }
        }
        // Every container and sandbox through the runtime's own state (unmounts rootfs and
        // namespace files), then whatever is left in the cgroups.
        for n in &self.nodes {
            if let Ok(rt) = kapsel_runtime::LinuxRuntime::new(kapsel_runtime::RuntimeConfig {
                state_dir: n.runtime_dir.clone(),
                cgroup_parent: n.cgroup_parent.clone(),
                ..Default::default()
            }) {
                use kapsel_runtime::Runtime;
                if let Ok(rd) = std::fs::read_dir(n.runtime_dir.join("sandboxes")) {
                    for e in rd.flatten() {
                        if let Ok(id) =
                            kapsel_runtime::SandboxId::new(e.file_name().to_string_lossy())
                        {
                            let _ = rt.remove_sandbox(&id);
                        }
                    }
                }
                if let Ok(l) = rt.list() {
                    for c in l {
                        let _ = rt.delete(&c.id);
                    }
                }
            }
            kill_cgroups(&n.cgroup_parent);
        }
        if let Some(mut s) = self.server.take() {
            s.proc.terminate(Duration::from_secs(10));
        }
        let (id, bridge) = (self.id.clone(), self.bridge.clone());
        let veths = format!("ktv{}-", &bridge[3..]);
        sweep(|n| {
            n == format!("kt-mn-{id}")
                || n.starts_with(&format!("kt-mn-{id}-"))
                || n == bridge
                || n.starts_with(&veths)
        });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var("KT_KEEP").is_ok_and(|v| v == "1") {
            eprintln!("KT_KEEP=1: leaving cluster {} in place", self.id);
            return;
        }
        self.teardown();
    }
}
