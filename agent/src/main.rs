//! `kapsel-agent`: flags → [`kapsel_agent::AgentConfig`] → run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use kapsel_agent::config::{parse_bytes, parse_labels, parse_taints};
use kapsel_agent::{Agent, AgentConfig, BackoffConfig, HollowImages, StoreImages};
use kapsel_runtime::{HollowRuntime, LinuxRuntime, RuntimeConfig};

#[derive(Parser, Debug)]
#[command(name = "kapsel-agent", version, about = "kapsel node agent")]
struct Args {
    /// The API server URL (the agent only dials out).
    #[arg(
        long,
        env = "KAPSEL_SERVER",
        required_unless_present = "cleanup",
        default_value = ""
    )]
    server: String,
    /// Remove what the pod network and the service proxy put on this node (both nft tables,
    /// kapsel's routes, pod veths, the kapsel0 bridge, the IPAM state in --data-dir) and exit.
    /// For a node leaving the cluster; run it after stopping the agent.
    #[arg(long)]
    cleanup: bool,
    #[arg(long, env = "KAPSEL_TOKEN")]
    token: Option<String>,
    /// Node name (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    #[arg(long, default_value = "/var/lib/kapsel/agent")]
    data_dir: PathBuf,
    /// Runtime state directory (real runtime).
    #[arg(long, default_value = "/run/kapsel/runtime")]
    runtime_dir: PathBuf,
    /// Parent cgroup of the pods (real runtime).
    #[arg(long, default_value = "kapsel")]
    cgroup_parent: String,
    /// Labels to add to the Node: k=v,k2=v2.
    #[arg(long, default_value = "")]
    node_labels: String,
    /// Taints to register with: key=value:Effect,...
    #[arg(long, default_value = "")]
    register_with_taints: String,
    /// Memory kept back from allocatable (e.g. 256Mi).
    #[arg(long, default_value = "0")]
    reserved: String,
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Lease renewal period in seconds.
    #[arg(long, default_value_t = 2.0)]
    lease_renew_seconds: f64,
    #[arg(long, default_value_t = 10.0)]
    status_update_seconds: f64,
    /// Restart backoff: initial and maximum seconds (Kubernetes: 10 and 300).
    #[arg(long, default_value_t = 1.0)]
    backoff_initial_seconds: f64,
    #[arg(long, default_value_t = 60.0)]
    backoff_max_seconds: f64,
    #[arg(long, default_value = "10Mi")]
    container_log_max_size: String,
    #[arg(long, default_value_t = 3)]
    container_log_max_files: u32,
    /// Evict when memory.available is below this (0: never).
    #[arg(long, default_value = "100Mi")]
    eviction_memory_available: String,
    /// Rootfs directories served as images: NAME=PATH (repeatable).
    #[arg(long = "image-dir")]
    image_dirs: Vec<String>,
    /// Registries reached over plain HTTP (host:port); repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Docker Hub mirrors (pull-through caches), tried in order before Docker Hub; repeatable.
    #[arg(long = "registry-mirror")]
    registry_mirrors: Vec<String>,
    /// Image GC starts when the image store's disk is this full (percent).
    #[arg(long, default_value_t = 85)]
    image_gc_high_threshold: u64,
    /// Image GC frees space down to this usage (percent).
    #[arg(long, default_value_t = 80)]
    image_gc_low_threshold: u64,
    /// The node's IP (detected when unset).
    #[arg(long)]
    node_ip: Option<String>,
    /// Pod network of the cluster (the controller's --cluster-cidr); traffic leaving it is
    /// masqueraded.
    #[arg(long, default_value = kapsel_agent::net::DEFAULT_CLUSTER_CIDR)]
    cluster_cidr: String,
    /// MTU of pod interfaces (default: the MTU of the node IP's interface).
    #[arg(long)]
    pod_mtu: Option<u32>,
    /// No pod network: pods get an isolated network namespace with only loopback.
    #[arg(long)]
    no_pod_network: bool,
    /// Run with the fake (hollow) runtime: containers are reported running, nothing runs.
    #[arg(long)]
    hollow: bool,
    /// Seconds a terminating pod waits, before preStop/SIGTERM, for every Ready node's service
    /// proxy to stop routing to it (capped by its grace period; 0 turns the hand-off off).
    #[arg(long, default_value_t = 10.0)]
    endpoint_handoff_timeout_seconds: f64,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.05))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let a = Args::parse();
    if a.cleanup {
        for what in kapsel_agent::net::cleanup_node(&kapsel_agent::net::ops::IpCommands)? {
            println!("removed {what}");
        }
        let state = a.data_dir.join("net");
        if state.exists() {
            std::fs::remove_dir_all(&state)
                .with_context(|| format!("removing {}", state.display()))?;
            println!("removed {}", state.display());
        }
        return Ok(());
    }
    let mut cfg = AgentConfig::new(
        a.server.clone(),
        a.node_name.clone().unwrap_or_else(hostname),
        a.data_dir.clone(),
    );
    cfg.token = a.token.clone();
    cfg.node_labels = parse_labels(&a.node_labels)?;
    cfg.register_with_taints = parse_taints(&a.register_with_taints)?;
    cfg.reserved_memory = parse_bytes(&a.reserved)?;
    cfg.max_pods = a.max_pods;
    cfg.lease_renew_interval = secs(a.lease_renew_seconds);
    cfg.status_update_interval = secs(a.status_update_seconds);
    cfg.backoff = BackoffConfig {
        initial: secs(a.backoff_initial_seconds),
        max: secs(a.backoff_max_seconds),
        ..BackoffConfig::default()
    };
    cfg.log_max_bytes = parse_bytes(&a.container_log_max_size)?;
    cfg.log_max_files = a.container_log_max_files;
    cfg.eviction_memory_available = parse_bytes(&a.eviction_memory_available)?;
    cfg.hollow = a.hollow;
    cfg.node_ip = a.node_ip.clone();
    cfg.endpoint_handoff_timeout =
        Duration::from_secs_f64(a.endpoint_handoff_timeout_seconds.max(0.0));
    if !a.no_pod_network {
        cfg.pod_network = Some(kapsel_agent::net::PodNetworkOpts {
            cluster_cidr: a.cluster_cidr.clone(),
            mtu: a.pod_mtu,
        });
    }
    let mut dirs = BTreeMap::new();
    for d in &a.image_dirs {
        let (n, p) = d.split_once('=').context("--image-dir wants NAME=PATH")?;
        dirs.insert(n.to_string(), PathBuf::from(p));
    }
    cfg.image_dirs = dirs.clone();
    for r in &a.insecure_registries {
        cfg.registry.add_insecure_registry(r);
    }
    for m in &a.registry_mirrors {
        cfg.registry.add_docker_hub_mirror(m);
    }
    cfg.image_gc_high_threshold = a.image_gc_high_threshold;
    cfg.image_gc_low_threshold = a.image_gc_low_threshold;
    // https: join with the token (K10<CA hash>::ID.SECRET) or reuse DATA_DIR/pki, then mTLS
    // with renewal (certs.rs); http: an --insecure-http server.
    let cp = if a.server.starts_with("http://") {
        Arc::new(kapsel_agent::GrpcControlPlane::new(
            &a.server,
            a.token.as_deref(),
        )?)
    } else {
        let certs = kapsel_agent::certs::NodeCerts::load_or_join(
            &a.server,
            &cfg.node_name,
            &a.data_dir.join("pki"),
            a.token.as_deref(),
        )
        .await
        .context("joining the cluster")?;
        tokio::spawn(Arc::clone(&certs).run_renewal());
        Arc::new(kapsel_agent::GrpcControlPlane::with_certs(certs)?)
    };
    let agent = if a.hollow {
        Agent::new(
            cfg,
            cp,
            Arc::new(HollowRuntime::new()),
            Arc::new(HollowImages),
        )?
    } else {
        let rt = LinuxRuntime::new(RuntimeConfig {
            state_dir: a.runtime_dir.clone(),
            cgroup_parent: a.cgroup_parent.clone(),
            ..RuntimeConfig::default()
        })
        .context("starting the container runtime")?;
        let store = kapsel_image::ImageStore::open(a.data_dir.join("images"))
            .context("opening the image store")?;
        let images = StoreImages::new(Arc::new(store), dirs);
        Agent::new(cfg, cp, Arc::new(rt), Arc::new(images))?
    };
    tokio::select! {
        r = agent.run() => r?,
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping (containers keep running)"),
    }
    Ok(())
}
