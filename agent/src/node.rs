//! The Node object: capacity and allocatable from /proc and cgroups, labels, taints, node
//! info, addresses, conditions; and the heartbeat loops (lease renewal, status updates).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kapsel_api::{
    Condition, Node, NodeAddress, NodeSpec, NodeStatus, NodeSystemInfo, ObjectMeta, Quantity,
    ResourceList, Time,
};

use crate::config::AgentConfig;
use crate::control::ControlPlane;

/// Machine facts that feed the Node object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MachineInfo {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub memory_available_bytes: u64,
    pub disk_bytes: u64,
    pub disk_available_bytes: u64,
    pub pids_max: u64,
    pub pids_used: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub cgroup_mode: &'static str,
    pub arch: &'static str,
}

/// `/proc/meminfo` field in bytes.
pub fn meminfo_field(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The cgroup memory limit of the agent's own cgroup (a node inside a container), if any.
fn cgroup_memory_limit() -> Option<u64> {
    let v2 = read("/sys/fs/cgroup/memory.max");
    if let Ok(n) = v2.trim().parse::<u64>() {
        return Some(n);
    }
    let v1 = read("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    v1.trim().parse::<u64>().ok().filter(|n| *n < (1 << 60))
}

pub fn cgroup_mode() -> &'static str {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else {
        "v1"
    }
}

fn os_image() -> String {
    read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

fn disk(path: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let f = s.fragment_size();
            (s.blocks() * f, s.blocks_available() * f)
        }
        Err(_) => (0, 0),
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

impl MachineInfo {
    pub fn probe(data_dir: &Path) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let mi = read("/proc/meminfo");
        let mut mem = meminfo_field(&mi, "MemTotal").unwrap_or(0);
        if let Some(l) = cgroup_memory_limit() {
            mem = mem.min(l);
        }
        let avail = meminfo_field(&mi, "MemAvailable").unwrap_or(mem);
        let (disk_bytes, disk_avail) = disk(data_dir);
        let pids_max = read("/proc/sys/kernel/pid_max")
            .trim()
            .parse()
            .unwrap_or(32768);
        let pids_used = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                    })
                    .count() as u64
            })
            .unwrap_or(0);
        MachineInfo {
            cpu_millis: cpus * 1000,
            memory_bytes: mem,
            memory_available_bytes: avail,
            disk_bytes,
            disk_available_bytes: disk_avail,
            pids_max,
            pids_used,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            os_image: os_image(),
            machine_id: read("/etc/machine-id").trim().to_string(),
            boot_id: read("/proc/sys/kernel/random/boot_id").trim().to_string(),
            cgroup_mode: cgroup_mode(),
            arch: go_arch(),
        }
    }
}

/// The node's primary IPv4 address: the source address of the default route (no packet is
/// sent), or loopback.
pub fn detect_node_ip() -> String {
    let s = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("10.255.255.255:1").map(|_| s))
        .and_then(|s| s.local_addr());
    match s {
        Ok(a) if !a.ip().is_unspecified() => a.ip().to_string(),
        _ => "127.0.0.1".into(),
    }
}

fn bytes_q(b: u64) -> Quantity {
    Quantity::from_bytes(i64::try_from(b).unwrap_or(i64::MAX))
}

fn cond(type_: &str, status: bool, reason: &str, message: &str, now: &Time) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        last_heartbeat_time: Some(*now),
        last_transition_time: Some(*now),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..Default::default()
    }
}

/// Keep `lastTransitionTime` of conditions whose status did not change.
pub fn carry_transitions(new: &mut [Condition], old: &[Condition]) {
    for c in new.iter_mut() {
        if let Some(o) = old
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = o.last_transition_time;
        }
    }
}

/// The NodeStatus for `m` (pure).
pub fn node_status(cfg: &AgentConfig, m: &MachineInfo, node_ip: &str, now: &Time) -> NodeStatus {
    let mut capacity = ResourceList::new();
    capacity.insert("cpu".into(), Quantity::from_milli(m.cpu_millis as i64));
    capacity.insert("memory".into(), bytes_q(m.memory_bytes));
    capacity.insert("pods".into(), Quantity::from_value(i64::from(cfg.max_pods)));
    if m.disk_bytes > 0 {
        capacity.insert("ephemeral-storage".into(), bytes_q(m.disk_bytes));
    }
    let mut allocatable = capacity.clone();
    allocatable.insert(
        "cpu".into(),
        Quantity::from_milli(m.cpu_millis.saturating_sub(cfg.reserved_cpu_millis) as i64),
    );
    allocatable.insert(
        "memory".into(),
        bytes_q(m.memory_bytes.saturating_sub(cfg.reserved_memory)),
    );
    let mem_pressure = cfg.eviction_memory_available > 0
        && m.memory_available_bytes < cfg.eviction_memory_available;
    let disk_pressure = m.disk_bytes > 0 && m.disk_available_bytes * 10 < m.disk_bytes;
    let pid_pressure = m.pids_max > 0 && m.pids_used * 10 > m.pids_max * 9;
    let conditions = vec![
        cond(
            "MemoryPressure",
            mem_pressure,
            if mem_pressure {
                "KubeletHasInsufficientMemory"
            } else {
                "KubeletHasSufficientMemory"
            },
            if mem_pressure {
                "agent has insufficient memory available"
            } else {
                "agent has sufficient memory available"
            },
            now,
        ),
        cond(
            "DiskPressure",
            disk_pressure,
            if disk_pressure {
                "KubeletHasDiskPressure"
            } else {
                "KubeletHasNoDiskPressure"
            },
            if disk_pressure {
                "agent has disk pressure"
            } else {
                "agent has no disk pressure"
            },
            now,
        ),
        cond(
            "PIDPressure",
            pid_pressure,
            if pid_pressure {
                "KubeletHasInsufficientPID"
            } else {
                "KubeletHasSufficientPID"
            },
            if pid_pressure {
                "agent has insufficient PID available"
            } else {
                "agent has sufficient PID available"
            },
            now,
        ),
        cond(
            "Ready",
            true,
            "KubeletReady",
            "agent is posting ready status",
            now,
        ),
    ];
    NodeStatus {
        capacity,
        allocatable,
        conditions,
        addresses: vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: node_ip.into(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: cfg.node_name.clone(),
            },
        ],
        node_info: Some(NodeSystemInfo {
            machine_id: m.machine_id.clone(),
            system_uuid: m.machine_id.clone(),
            boot_id: m.boot_id.clone(),
            kernel_version: m.kernel.clone(),
            os_image: m.os_image.clone(),
            container_runtime_version: format!(
                "kapsel://{} (cgroup {})",
                env!("CARGO_PKG_VERSION"),
                m.cgroup_mode
            ),
            kubelet_version: format!("v{}-kapsel", env!("CARGO_PKG_VERSION")),
            kube_proxy_version: String::new(),
            operating_system: "linux".into(),
            architecture: m.arch.into(),
        }),
        phase: None,
        images: Vec::new(),
    }
}

/// The Node object to register (pure).
pub fn node_object(cfg: &AgentConfig, m: &MachineInfo, node_ip: &str, now: &Time) -> Node {
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), cfg.node_name.clone());
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert("kubernetes.io/arch".to_string(), m.arch.to_string());
    labels.insert("beta.kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert("beta.kubernetes.io/arch".to_string(), m.arch.to_string());
    for (k, v) in &cfg.node_labels {
        labels.insert(k.clone(), v.clone());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "kapsel.io/cgroup-mode".to_string(),
        m.cgroup_mode.to_string(),
    );
    if cfg.hollow {
        annotations.insert("kapsel.io/hollow".to_string(), "true".to_string());
    }
    let mut node = Node::with_meta(ObjectMeta {
        name: Some(cfg.node_name.clone()),
        labels,
        annotations,
        ..Default::default()
    });
    node.spec = Some(NodeSpec {
        taints: cfg.register_with_taints.clone(),
        ..Default::default()
    });
    node.status = Some(node_status(cfg, m, node_ip, now));
    node
}

pub fn now() -> Time {
    Time(chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0))
}

/// Shared view of the node's health for the sync loop (eviction) and `kapsel top`.
#[derive(Debug, Default)]
pub struct NodeHealth {
    pub machine: std::sync::Mutex<MachineInfo>,
}

/// Register (retrying until it works), then renew the lease every `lease_renew_interval` and
/// post status every `status_update_interval`, until the task is dropped.
pub async fn run_heartbeat(
    cfg: Arc<AgentConfig>,
    cp: Arc<dyn ControlPlane>,
    health: Arc<NodeHealth>,
) {
    let node_ip = cfg.node_ip.clone().unwrap_or_else(detect_node_ip);
    let probe = |cfg: &AgentConfig| {
        let d = cfg.data_dir.clone();
        async move {
            tokio::task::spawn_blocking(move || MachineInfo::probe(&d))
                .await
                .unwrap_or_default()
        }
    };
    let mut delay = Duration::from_millis(200);
    let mut last_conditions = loop {
        let m = probe(&cfg).await;
        *crate::lock(&health.machine) = m.clone();
        let node = node_object(&cfg, &m, &node_ip, &now());
        match cp.register(&node).await {
            Ok(n) => {
                tracing::info!(node = %cfg.node_name, "node registered");
                break n.status.map(|s| s.conditions).unwrap_or_default();
            }
            Err(e) => {
                tracing::warn!(error = %e, "node registration failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    };
    let mut lease = tokio::time::interval(cfg.lease_renew_interval);
    let mut status = tokio::time::interval(cfg.status_update_interval);
    lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status.tick().await; // the first tick is immediate: registration just posted status
    loop {
        tokio::select! {
            _ = lease.tick() => {
                if let Err(e) = cp.renew_lease(&cfg.node_name, cfg.lease_duration).await {
                    tracing::warn!(error = %e, "lease renewal failed");
                }
            }
            _ = status.tick() => {
                let m = probe(&cfg).await;
                *crate::lock(&health.machine) = m.clone();
                let mut st = node_status(&cfg, &m, &node_ip, &now());
                carry_transitions(&mut st.conditions, &last_conditions);
                match cp.update_node_status(&cfg.node_name, &st).await {
                    Ok(()) => last_conditions = st.conditions,
                    Err(AgentError::NotFound(_)) => {
                        // The Node object was deleted: register again.
                        let node = node_object(&cfg, &m, &node_ip, &now());
                        if let Err(e) = cp.register(&node).await {
                            tracing::warn!(error = %e, "re-registration failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "node status update failed"),
                }
            }
        }
    }
}

use crate::error::AgentError;

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> MachineInfo {
        MachineInfo {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            memory_available_bytes: 6 << 30,
            disk_bytes: 100 << 30,
            disk_available_bytes: 50 << 30,
            pids_max: 32768,
            pids_used: 300,
            kernel: "6.1.0".into(),
            os_image: "Debian GNU/Linux 13".into(),
            machine_id: "abc".into(),
            boot_id: "b".into(),
            cgroup_mode: "v1",
            arch: "amd64",
        }
    }

    #[test]
    fn meminfo_parses_kb() {
        let mi = "MemTotal:       16310000 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(meminfo_field(mi, "MemTotal"), Some(16_310_000 * 1024));
        assert_eq!(meminfo_field(mi, "MemAvailable"), Some(8_000_000 * 1024));
        assert_eq!(meminfo_field(mi, "Nope"), None);
    }

    #[test]
    fn node_object_has_labels_taints_capacity_and_conditions() {
        let mut cfg = AgentConfig::new("http://x", "n1", "/tmp");
        cfg.reserved_memory = 1 << 30;
        cfg.node_labels.insert("zone".into(), "a".into());
        cfg.register_with_taints = crate::config::parse_taints("gpu=yes:NoSchedule").unwrap();
        let n = node_object(&cfg, &machine(), "10.0.0.5", &now());
        assert_eq!(n.metadata.labels["kubernetes.io/hostname"], "n1");
        assert_eq!(n.metadata.labels["kubernetes.io/arch"], "amd64");
        assert_eq!(n.metadata.labels["zone"], "a");
        assert_eq!(n.spec.as_ref().unwrap().taints[0].key, "gpu");
        let st = n.status.unwrap();
        assert_eq!(st.capacity["cpu"].as_str(), "4");
        assert_eq!(st.capacity["memory"].as_str(), "8Gi");
        assert_eq!(st.allocatable["memory"].as_str(), "7Gi");
        assert_eq!(st.capacity["pods"].as_str(), "110");
        let types: Vec<_> = st
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("MemoryPressure", "False"),
                ("DiskPressure", "False"),
                ("PIDPressure", "False"),
                ("Ready", "True")
            ]
        );
        let info = st.node_info.unwrap();
        assert!(info.container_runtime_version.contains("cgroup v1"));
        assert_eq!(st.addresses[0].address, "10.0.0.5");
    }

    #[test]
    fn pressure_conditions_flip() {
        let cfg = AgentConfig::new("http://x", "n1", "/tmp");
        let mut m = machine();
        m.memory_available_bytes = 10 << 20;
        m.disk_available_bytes = 1 << 30;
        let st = node_status(&cfg, &m, "1.2.3.4", &now());
        assert_eq!(st.conditions[0].status, "True");
        assert_eq!(st.conditions[1].status, "True");
    }
}
