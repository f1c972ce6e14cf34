//! The agent's configuration (flags of `kapsel-agent` and `kapsel agent`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kapsel_api::Taint;

use crate::error::{AgentError, Result};

/// Exponential restart backoff (kubelet: 10 s doubling to 300 s, reset after 10 min running).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
    /// A container that ran at least this long restarts without backoff.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(600),
        }
    }
}

impl BackoffConfig {
    /// Kubernetes' kubelet values.
    pub fn kubernetes() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The API server (`http://host:port`); the agent dials it, never the other way round.
    pub server: String,
    pub token: Option<String>,
    pub node_name: String,
    /// Logs, volumes and (for the real runtime) runtime state live here.
    pub data_dir: PathBuf,
    pub node_labels: BTreeMap<String, String>,
    pub register_with_taints: Vec<Taint>,
    /// Memory kept back from allocatable (system reserved), bytes.
    pub reserved_memory: u64,
    /// Millicores kept back from allocatable.
    pub reserved_cpu_millis: u64,
    pub max_pods: u32,
    pub lease_duration: Duration,
    pub lease_renew_interval: Duration,
    pub status_update_interval: Duration,
    /// How often each pod worker looks at its containers without being told to.
    pub sync_period: Duration,
    /// How often node and pod usage is reported (`kapsel top`).
    pub stats_interval: Duration,
    /// How often configMap/secret volumes are refreshed.
    pub volume_resync: Duration,
    pub backoff: BackoffConfig,
    pub log_max_bytes: u64,
    pub log_max_files: u32,
    /// Evict pods when memory.available falls below this many bytes (0: never).
    pub eviction_memory_available: u64,
    /// Run with the fake runtime.
    pub hollow: bool,
    /// Rootfs directories served as images (`NAME=PATH`, `--image-dir`), before the store.
    pub image_dirs: BTreeMap<String, PathBuf>,
    /// `--insecure-registry` and `--registry-mirror`.
    pub registry: kapsel_image::RegistryConfig,
    /// Image GC starts at this disk usage (percent, `--image-gc-high-threshold`, default 85)…
    pub image_gc_high_threshold: u64,
    /// …and removes unused images until usage is below this (`--image-gc-low-threshold`, 80).
    pub image_gc_low_threshold: u64,
    /// How often image GC looks at the disk (kubelet: 5 minutes).
    pub image_gc_period: Duration,
    /// The node's address reported in `status.addresses` and `hostIP` (detected when unset).
    pub node_ip: Option<String>,
    /// The pod network (bridge, veth per pod, host-gw routes); `None`: every pod keeps an
    /// isolated network namespace with only `lo` (and no pod IP).
    pub pod_network: Option<crate::net::PodNetworkOpts>,
    /// How long a terminating pod waits, before preStop/SIGTERM, for every Ready node's service
    /// proxy to stop routing to it (capped by its grace period; zero: no wait). See
    /// [`crate::handoff`].
    pub endpoint_handoff_timeout: Duration,
}

impl AgentConfig {
    pub fn new(
        server: impl Into<String>,
        node_name: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        AgentConfig {
            server: server.into(),
            token: None,
            node_name: node_name.into(),
            data_dir: data_dir.into(),
            node_labels: BTreeMap::new(),
            register_with_taints: Vec::new(),
            reserved_memory: 0,
            reserved_cpu_millis: 0,
            max_pods: 110,
            lease_duration: Duration::from_secs(40),
            lease_renew_interval: Duration::from_secs(2),
            status_update_interval: Duration::from_secs(10),
            sync_period: Duration::from_secs(1),
            volume_resync: Duration::from_secs(10),
            stats_interval: Duration::from_secs(10),
            backoff: BackoffConfig::default(),
            log_max_bytes: 10 * 1024 * 1024,
            log_max_files: 3,
            eviction_memory_available: 100 * 1024 * 1024,
            hollow: false,
            image_dirs: BTreeMap::new(),
            registry: kapsel_image::RegistryConfig::default(),
            image_gc_high_threshold: 85,
            image_gc_low_threshold: 80,
            image_gc_period: Duration::from_secs(300),
            node_ip: None,
            pod_network: None,
            endpoint_handoff_timeout: Duration::from_secs(10),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.node_name.is_empty() {
            return Err(AgentError::InvalidConfig("node name is empty".into()));
        }
        if self.server.is_empty() {
            return Err(AgentError::InvalidConfig("server URL is empty".into()));
        }
        if self.log_max_files == 0 || self.log_max_bytes < 1024 {
            return Err(AgentError::InvalidConfig(
                "log rotation needs at least 1 file of at least 1 KiB".into(),
            ));
        }
        if self.image_gc_high_threshold > 100
            || self.image_gc_low_threshold > self.image_gc_high_threshold
        {
            return Err(AgentError::InvalidConfig(format!(
                "image GC thresholds: want low ({}) <= high ({}) <= 100",
                self.image_gc_low_threshold, self.image_gc_high_threshold
            )));
        }
        Ok(())
    }
}

/// `key=value,key2=value2` → map.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| AgentError::InvalidConfig(format!("label {part:?} is not key=value")))?;
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

/// `key=value:Effect` or `key:Effect`, comma separated (kubelet's `--register-with-taints`).
pub fn parse_taints(s: &str) -> Result<Vec<Taint>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kv, effect) = part
            .rsplit_once(':')
            .ok_or_else(|| AgentError::InvalidConfig(format!("taint {part:?} has no :Effect")))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(AgentError::InvalidConfig(format!(
                "taint {part:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
            )));
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (kv.to_string(), None),
        };
        if key.is_empty() {
            return Err(AgentError::InvalidConfig(format!(
                "taint {part:?} has no key"
            )));
        }
        out.push(Taint {
            key,
            value,
            effect: effect.to_string(),
            time_added: None,
        });
    }
    Ok(out)
}

/// `1Gi`, `512Mi`, `100M`, plain bytes.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let v = kapsel_api::Quantity::new(s)
        .value()
        .map_err(|e| AgentError::InvalidConfig(format!("{s:?}: {e}")))?;
    u64::try_from(v).map_err(|_| AgentError::InvalidConfig(format!("{s:?} is negative")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_taints_parse() {
        let l = parse_labels("a=1, b=two").unwrap();
        assert_eq!(l.get("b").map(String::as_str), Some("two"));
        assert!(parse_labels("nope").is_err());
        let t = parse_taints("dedicated=gpu:NoSchedule,maint:NoExecute").unwrap();
        assert_eq!(t[0].key, "dedicated");
        assert_eq!(t[0].value.as_deref(), Some("gpu"));
        assert_eq!(t[1].value, None);
        assert_eq!(t[1].effect, "NoExecute");
        assert!(parse_taints("x=y:Sometimes").is_err());
    }

    #[test]
    fn bytes_parse() {
        assert_eq!(parse_bytes("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("100M").unwrap(), 100_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
    }
}
