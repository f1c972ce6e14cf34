//! `kapsel server`, `kapsel agent` and `kapsel image`: the k3s-style single binary.
//!
//! `kapsel server` runs the API server (embedded sled store), the scheduler, the controller
//! manager and, unless `--no-agent`, a node agent in one process. On start it makes sure two
//! tokens exist in `DATA_DIR/server/` (`node-token`, which agents join with, and `admin-token`,
//! which the written client config carries) and writes the client config (kubeconfig format)
//! for `kapsel`. `kapsel agent --server URL --token T` joins
//! another machine. Today only the agents' gRPC API checks its token (the REST API admits
//! every request until the security issue brings TLS and real authentication). Components talk to each other only through the API, exactly as the
//! separate binaries do.
//!
//! Data directory layout (default `/var/lib/kapsel`):
//!
//! ```text
//! server/db/          the API server's sled store
//! server/node-token   join token for agents (0600)
//! server/admin-token  token of the written client config (0600)
//! server/kubeconfig   a copy of the client config
//! agent/              the node agent's logs and volumes
//! agent/images/       the node's image store (`kapsel image import` writes here)
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use kapsel_agent::certs::NodeCerts;
use kapsel_agent::{
    Agent, AgentConfig, BackoffConfig, GrpcControlPlane, HollowImages, StoreImages,
};
use kapsel_api::client::{Client, ClientConfig};
use kapsel_apiserver::ServerConfig;
use kapsel_image::{Credentials, ImageRef, ImageStore, Progress, PullEvent, RegistryConfig};
use kapsel_runtime::{HollowRuntime, LinuxRuntime, RuntimeConfig};
use tokio::sync::watch;

use crate::config::{Cluster, Context, KubeConfig, NamedCluster, NamedContext, NamedUser, User};

/// Default data directory of `kapsel server` and `kapsel agent`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/kapsel";

/// Flags of the node agent, shared by `kapsel server` and `kapsel agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentOpts {
    /// Pod network of the cluster: the server hands each node a block of it (spec.podCIDR);
    /// agents masquerade traffic leaving it.
    #[arg(long, default_value = kapsel_agent::net::DEFAULT_CLUSTER_CIDR)]
    pub cluster_cidr: String,
    /// MTU of pod interfaces (default: the MTU of the node IP's interface).
    #[arg(long)]
    pub pod_mtu: Option<u32>,
    /// No pod network: pods get an isolated network namespace with only loopback.
    #[arg(long)]
    pub no_pod_network: bool,
    /// Node name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's IP reported in status.addresses (detected when unset).
    #[arg(long)]
    pub node_ip: Option<String>,
    /// Labels to add to the Node: k=v,k2=v2.
    #[arg(long, default_value = "")]
    pub node_labels: String,
    /// Runtime state directory (overlay upper dirs, namespace handles).
    #[arg(long, default_value = "/run/kapsel/runtime")]
    pub runtime_dir: PathBuf,
    /// Parent cgroup of the pods.
    #[arg(long, default_value = "kapsel")]
    pub cgroup_parent: String,
    /// Registries reached over plain HTTP (host:port), e.g. a local registry; repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Docker Hub mirrors (pull-through caches), tried in order before Docker Hub; repeatable.
    #[arg(long = "registry-mirror")]
    pub registry_mirrors: Vec<String>,
    /// Image GC starts when the image store's disk is this full (percent).
    #[arg(long, default_value_t = 85)]
    pub image_gc_high_threshold: u64,
    /// Image GC frees space down to this usage (percent).
    #[arg(long, default_value_t = 80)]
    pub image_gc_low_threshold: u64,
    /// Rootfs directories served as images: NAME=PATH (repeatable).
    #[arg(long = "image-dir")]
    pub image_dirs: Vec<String>,
    /// Run a hollow agent: pods are reported running, nothing runs (tests, benchmarks).
    #[arg(long)]
    pub hollow: bool,
    /// Restart backoff, initial and maximum seconds (Kubernetes: 10 and 300).
    #[arg(long, default_value_t = 1.0)]
    pub backoff_initial_seconds: f64,
    #[arg(long, default_value_t = 60.0)]
    pub backoff_max_seconds: f64,
    /// Lease renewal period in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub lease_renew_seconds: f64,
    /// Evict when memory.available is below this (0: never).
    #[arg(long, default_value = "100Mi")]
    pub eviction_memory_available: String,
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Seconds a terminating pod waits, before preStop/SIGTERM, for every Ready node's service
    /// proxy to stop routing to it (capped by its grace period; 0 turns the hand-off off).
    #[arg(long, default_value_t = 10.0)]
    pub endpoint_handoff_timeout_seconds: f64,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Where the store, tokens, agent state and images live.
    #[arg(long, env = "KAPSEL_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Address of the API (REST and the agents' gRPC), HTTPS. Port 0 picks a free port (the
    /// written client config has the real one).
    #[arg(long, default_value = "0.0.0.0:6443")]
    pub listen: SocketAddr,
    /// Another name or IP address of this server for its certificate (repeatable).
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// Serve plain HTTP without authentication (everyone is the admin): development only,
    /// refused unless --listen is a loopback address.
    #[arg(long)]
    pub insecure_http: bool,
    /// Static bearer tokens, Kubernetes' CSV format: token,user,uid,"group1,group2".
    #[arg(long, value_name = "PATH")]
    pub token_auth_file: Option<PathBuf>,
    /// Lifetime of node client certificates; agents renew them at two thirds of it.
    #[arg(long, default_value = "8760h", value_name = "DURATION")]
    pub node_cert_ttl: String,
    /// URL agents and clients use to reach this server (default: from --listen).
    #[arg(long)]
    pub advertise_url: Option<String>,
    /// Run the control plane only (no local agent).
    #[arg(long)]
    pub no_agent: bool,
    /// Where to write the client config (default $KAPSELCONFIG, else ~/.kapsel/config).
    #[arg(long, value_name = "PATH")]
    pub write_kubeconfig: Option<PathBuf>,
    /// Do not write the client config (it is still written to DATA_DIR/server/kubeconfig).
    #[arg(long)]
    pub no_kubeconfig: bool,
    /// A node whose lease is older than this becomes NotReady (seconds).
    #[arg(long, default_value_t = 10.0)]
    pub node_monitor_grace_seconds: f64,
    /// Pods on an unreachable node are deleted after this (seconds).
    #[arg(long, default_value_t = 5.0)]
    pub pod_eviction_timeout_seconds: f64,
    /// Prefix length of each node's podCIDR block (of --cluster-cidr).
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// How long Events are kept after they last happened (1h, 30m, 90s).
    #[arg(long, default_value = "1h", value_parser = kapsel_apiserver::eventttl::parse_duration)]
    pub event_ttl: Duration,
    /// Audit log, Secrets at rest, abuse limits (kube-apiserver's flags, as on kapsel-apiserver).
    #[command(flatten)]
    pub guards: kapsel_apiserver::authz::GuardArgs,
    #[command(flatten)]
    pub agent: AgentOpts,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The API server URL (`http://host:6443`).
    #[arg(
        long,
        env = "KAPSEL_SERVER",
        required_unless_present = "cleanup",
        default_value = ""
    )]
    pub server: String,
    /// Remove what the pod network and the service proxy put on this node (both nft tables,
    /// kapsel's routes, pod veths, the kapsel0 bridge, the IPAM state in --data-dir) and exit.
    /// For a node leaving the cluster; run it after stopping the agent.
    #[arg(long)]
    pub cleanup: bool,
    /// The join token (the server's DATA_DIR/server/node-token).
    #[arg(long, env = "KAPSEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the join token from this file.
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    #[arg(long, env = "KAPSEL_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub agent: AgentOpts,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import images from docker-archive or OCI-layout tar files into this node's store.
    Import(ImageImportArgs),
    /// List the images of this node's store.
    #[command(alias = "ls")]
    List(ImageDirArgs),
    /// Remove images by name or digest.
    #[command(alias = "rm")]
    Remove(ImageRemoveArgs),
    /// Pull an image from its registry into this node's store.
    Pull(ImagePullArgs),
}

#[derive(Debug, Args)]
pub struct ImagePullArgs {
    /// The image (`busybox:1.36`, `registry.lan:5000/team/app@sha256:…`).
    pub image: String,
    /// Registries reached over plain HTTP (host:port); repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Docker Hub mirrors, tried before Docker Hub; repeatable.
    #[arg(long = "registry-mirror")]
    pub registry_mirrors: Vec<String>,
    /// Credentials for the image's registry, `USER:PASSWORD`.
    #[arg(long)]
    pub creds: Option<String>,
    /// A `.dockerconfigjson` / `~/.docker/config.json` file with registry credentials.
    #[arg(long, conflicts_with = "creds")]
    pub auth_file: Option<PathBuf>,
    /// Print nothing but the image ID.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub dir: ImageDirArgs,
}

#[derive(Debug, Args)]
pub struct ImageDirArgs {
    /// The node's data directory (the store is DATA_DIR/agent/images).
    #[arg(long, env = "KAPSEL_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImageImportArgs {
    /// Archives (`docker save` / `skopeo copy … docker-archive:` / OCI layout tar).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Name for an archive holding one image without a usable name.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub dir: ImageDirArgs,
}

#[derive(Debug, Args)]
pub struct ImageRemoveArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub dir: ImageDirArgs,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.max(0.05) } else { 1.0 })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

/// The node's image store under an agent data directory.
pub fn image_store_dir(agent_data_dir: &Path) -> PathBuf {
    agent_data_dir.join("images")
}

// ---------------------------------------------------------------------------------------------
// Tokens and authentication

/// 32 random bytes, hex.
fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Read the token in `path`, creating it (0600) first if missing.
pub fn ensure_token(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow!("reading {}: {e}", path.display())),
    }
    let t = new_token();
    write_private(path, format!("{t}\n").as_bytes())?;
    Ok(t)
}

/// Write a file readable by its owner only, atomically.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The client config

/// Add (or refresh) the `kapsel` cluster, user and context in the config at `path` and make
/// it the current context; other entries are kept. `ca_pem` is embedded as
/// `certificate-authority-data`; an empty token writes no credentials (`--insecure-http`).
pub fn write_client_config(
    path: &Path,
    server: &str,
    token: &str,
    ca_pem: Option<&str>,
) -> anyhow::Result<()> {
    use base64::Engine as _;
    let mut cfg = if path.exists() {
        KubeConfig::load(path)?
    } else {
        KubeConfig::empty()
    };
    cfg.clusters.retain(|c| c.name != "kapsel");
    cfg.clusters.push(NamedCluster {
        name: "kapsel".into(),
        cluster: Cluster {
            server: server.into(),
            certificate_authority_data: ca_pem
                .map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
            ..Default::default()
        },
    });
    cfg.users.retain(|u| u.name != "kapsel-admin");
    cfg.users.push(NamedUser {
        name: "kapsel-admin".into(),
        user: User {
            token: Some(token.to_string()).filter(|t| !t.is_empty()),
            ..Default::default()
        },
    });
    cfg.contexts.retain(|c| c.name != "kapsel");
    cfg.contexts.push(NamedContext {
        name: "kapsel".into(),
        context: Context {
            cluster: "kapsel".into(),
            user: "kapsel-admin".into(),
            namespace: None,
        },
    });
    cfg.current_context = Some("kapsel".into());
    let text = serde_yaml::to_string(&cfg)?;
    write_private(path, text.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Running

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// The node name of `opts` (default: the hostname).
fn node_name(opts: &AgentOpts) -> String {
    opts.node_name.clone().unwrap_or_else(hostname)
}

/// How an agent reaches the control plane: mTLS with its node certificates (renewed by a task
/// of its own), or plain HTTP to an `--insecure-http` server.
fn control_plane(
    server: &str,
    certs: Option<&Arc<NodeCerts>>,
) -> anyhow::Result<Arc<GrpcControlPlane>> {
    Ok(Arc::new(match certs {
        Some(c) => {
            tokio::spawn(Arc::clone(c).run_renewal());
            GrpcControlPlane::with_certs(Arc::clone(c))?
        }
        None => GrpcControlPlane::new(server, None)?,
    }))
}

fn build_agent(
    opts: &AgentOpts,
    server: String,
    cp: Arc<GrpcControlPlane>,
    data_dir: PathBuf,
) -> anyhow::Result<Agent> {
    use kapsel_agent::config::{parse_bytes, parse_labels};
    let mut cfg = AgentConfig::new(server, node_name(opts), data_dir.clone());
    cfg.node_labels = parse_labels(&opts.node_labels)?;
    cfg.max_pods = opts.max_pods;
    cfg.lease_renew_interval = secs(opts.lease_renew_seconds);
    cfg.backoff = BackoffConfig {
        initial: secs(opts.backoff_initial_seconds),
        max: secs(opts.backoff_max_seconds),
        ..BackoffConfig::default()
    };
    cfg.eviction_memory_available = parse_bytes(&opts.eviction_memory_available)?;
    cfg.hollow = opts.hollow;
    cfg.node_ip = opts.node_ip.clone();
    cfg.endpoint_handoff_timeout =
        Duration::from_secs_f64(opts.endpoint_handoff_timeout_seconds.max(0.0));
    if !opts.no_pod_network {
        cfg.pod_network = Some(kapsel_agent::net::PodNetworkOpts {
            cluster_cidr: opts.cluster_cidr.clone(),
            mtu: opts.pod_mtu,
        });
    }
    let mut dirs = BTreeMap::new();
    for d in &opts.image_dirs {
        let (n, p) = d
            .split_once('=')
            .ok_or_else(|| anyhow!("--image-dir wants NAME=PATH, got {d:?}"))?;
        dirs.insert(n.to_string(), PathBuf::from(p));
    }
    cfg.image_dirs = dirs.clone();
    cfg.registry = registry_config(&opts.insecure_registries, &opts.registry_mirrors);
    cfg.image_gc_high_threshold = opts.image_gc_high_threshold;
    cfg.image_gc_low_threshold = opts.image_gc_low_threshold;
    let agent = if opts.hollow {
        Agent::new(
            cfg,
            cp,
            Arc::new(HollowRuntime::new()),
            Arc::new(HollowImages),
        )?
    } else {
        let rt = LinuxRuntime::new(RuntimeConfig {
            state_dir: opts.runtime_dir.clone(),
            cgroup_parent: opts.cgroup_parent.clone(),
            ..RuntimeConfig::default()
        })
        .context("starting the container runtime")?;
        let store =
            ImageStore::open(image_store_dir(&data_dir)).context("opening the image store")?;
        let images = StoreImages::new(Arc::new(store), dirs);
        Agent::new(cfg, cp, Arc::new(rt), Arc::new(images))?
    };
    Ok(agent)
}

/// `--insecure-registry` and `--registry-mirror` as the image store wants them.
pub fn registry_config(insecure: &[String], mirrors: &[String]) -> RegistryConfig {
    let mut registry = RegistryConfig::default();
    for r in insecure {
        registry.add_insecure_registry(r);
    }
    for m in mirrors {
        registry.add_docker_hub_mirror(m);
    }
    registry
}

/// Checks of `kapsel server`'s flags before anything starts: plain HTTP only on loopback.
pub fn prepare_process(args: &ServerArgs) -> anyhow::Result<()> {
    check_insecure_listen(args.insecure_http, args.listen)
}

/// `--insecure-http` is for development on this machine: it serves without TLS and without
/// authentication (everyone is the cluster admin), so only on a loopback address.
pub fn check_insecure_listen(insecure: bool, listen: SocketAddr) -> anyhow::Result<()> {
    if insecure && !listen.ip().is_loopback() {
        bail!(
            "--insecure-http serves without TLS or authentication and only on a loopback \
             address; use --listen 127.0.0.1:{} (or drop --insecure-http)",
            listen.port()
        );
    }
    Ok(())
}

/// `kapsel server`.
pub async fn server(args: ServerArgs) -> anyhow::Result<()> {
    init_tracing();
    let server_dir = args.data_dir.join("server");
    std::fs::create_dir_all(&server_dir)
        .with_context(|| format!("creating {}", server_dir.display()))?;
    check_insecure_listen(args.insecure_http, args.listen)?;

    // TLS with the cluster CA in server/pki/, the admin token (server/admin-token), the
    // default join token (server/node-token), `--token-auth-file`: apiserver's security.rs.
    // `--insecure-http`: plain HTTP on loopback, everyone is the admin (development).
    let mut config = ServerConfig::new(server_dir.join("db"), args.listen);
    config.event_ttl = args.event_ttl;
    // The in-process components' metrics are served on the API server's /metrics too.
    kapsel_apiserver::metrics::add_component(kapsel_scheduler::metrics::prom::register);
    kapsel_apiserver::metrics::add_component(kapsel_controller::metrics::register);
    if !args.no_agent {
        kapsel_apiserver::metrics::add_component(kapsel_agent::metrics::register);
        kapsel_apiserver::metrics::add_component(kapsel_agent::metrics::register_cadvisor);
    }
    // Audit log, Secrets at rest, abuse limits: the same flags as kapsel-apiserver.
    args.guards.apply(&mut config);
    if !args.insecure_http {
        let mut sec = kapsel_apiserver::security::SecurityConfig::in_dir(&server_dir);
        sec.tls_sans = args.tls_san.clone();
        sec.token_auth_file = args.token_auth_file.clone();
        sec.node_cert_ttl = crate::commands::parse_duration(&args.node_cert_ttl)
            .with_context(|| format!("--node-cert-ttl {}", args.node_cert_ttl))?;
        config.security = Some(sec);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    config.listen = addr;
    let prepared = kapsel_apiserver::server::prepare(&config)
        .await
        .context("starting the API server")?;
    let ca_pem = prepared.pki().map(|p| p.ca.cert_pem().to_string());
    let admin_token = if ca_pem.is_some() {
        std::fs::read_to_string(server_dir.join("admin-token"))
            .context("reading the admin token")?
            .trim()
            .to_string()
    } else {
        String::new()
    };
    let scheme = if ca_pem.is_some() { "https" } else { "http" };
    let local_url = kapsel_apiserver::component::loopback_url_scheme(addr, scheme);
    let url = args
        .advertise_url
        .clone()
        .unwrap_or_else(|| local_url.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let pki = prepared.pki().cloned();
    let node_cert_ttl = config
        .security
        .as_ref()
        .map(|s| s.node_cert_ttl)
        .unwrap_or_default();
    let api_task = tokio::spawn(kapsel_apiserver::server::run(
        prepared,
        listener,
        stopped(stop_rx.clone()),
    ));

    // Client config: in the data dir always, for the user unless told not to.
    let ca = ca_pem.as_deref();
    write_client_config(&server_dir.join("kubeconfig"), &url, &admin_token, ca)?;
    if !args.no_kubeconfig {
        let path = crate::config::config_path(args.write_kubeconfig.as_deref());
        write_client_config(&path, &url, &admin_token, ca)?;
        tracing::info!(path = %path.display(), "wrote the client config");
    }

    let mut ccfg = ClientConfig::new(&local_url);
    if ca.is_some() {
        ccfg = ccfg.with_token(admin_token.clone());
        ccfg.ca_cert_pem = ca.map(|c| c.as_bytes().to_vec());
    }
    let client = Client::from_config(ccfg)?;
    let sched =
        kapsel_scheduler::Scheduler::new(client.clone(), kapsel_scheduler::Config::default())?;
    let sched_task = tokio::spawn(sched.run(stopped(stop_rx.clone())));
    let ccfg = kapsel_controller::Config {
        node_monitor_grace_period: secs(args.node_monitor_grace_seconds),
        pod_eviction_timeout: secs(args.pod_eviction_timeout_seconds),
        pod_cidr: Some(
            kapsel_controller::podcidr::CidrConfig::new(
                &args.agent.cluster_cidr,
                args.node_cidr_mask_size,
            )
            .map_err(|e| anyhow!("--cluster-cidr/--node-cidr-mask-size: {e}"))?,
        ),
        ..Default::default()
    };
    let ctrl_rx = stop_rx.clone();
    let ctrl_task = tokio::spawn(async move {
        tokio::select! {
            r = kapsel_controller::Controller::run(client, ccfg) => r.map_err(anyhow::Error::from),
            _ = stopped(ctrl_rx) => Ok(()),
        }
    });
    let agent_task = if args.no_agent {
        None
    } else {
        // The local agent's node identity comes straight from the CA (no join).
        let certs = match &pki {
            Some(p) => {
                let node = node_name(&args.agent);
                let ck =
                    p.ca.issue_client(
                        &format!("system:node:{node}"),
                        &[kapsel_apiserver::auth::GROUP_NODES.to_string()],
                        node_cert_ttl,
                    )
                    .context("issuing the local node's certificate")?;
                Some(NodeCerts::from_parts(
                    &local_url,
                    &node,
                    &args.data_dir.join("agent").join("pki"),
                    p.ca.cert_pem(),
                    &ck.cert_pem,
                    &ck.key_pem,
                )?)
            }
            None => None,
        };
        let cp = control_plane(&local_url, certs.as_ref())?;
        let agent = build_agent(
            &args.agent,
            local_url.clone(),
            cp,
            args.data_dir.join("agent"),
        )?;
        let rx = stop_rx.clone();
        Some(tokio::spawn(async move {
            tokio::select! {
                r = agent.run() => r.map_err(anyhow::Error::from),
                _ = stopped(rx) => Ok(()),
            }
        }))
    };
    tracing::info!(
        url = %url,
        data_dir = %args.data_dir.display(),
        agent = !args.no_agent,
        "kapsel server running; agents join with: kapsel agent --server {url} --token-file {} (or a `kapsel token create` token)",
        server_dir.join("node-token").display()
    );
    // Ready marker for scripts: the URL, once everything is started.
    let _ = std::fs::write(server_dir.join("url"), format!("{url}\n"));

    let mut fatal = None;
    tokio::select! {
        _ = termination() => {}
        r = api_task_wait(&api_task) => fatal = Some(anyhow!("the API server stopped: {r}")),
    }
    let _ = stop_tx.send(true);
    // The agent first (containers keep running, as after a kubelet restart), then the control
    // loops, then the API server, which flushes the store.
    if let Some(t) = agent_task {
        report("agent", t.await);
    }
    report(
        "scheduler",
        sched_task.await.map(|r| r.map_err(anyhow::Error::from)),
    );
    report("controller", ctrl_task.await);
    match api_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "API server"),
        Err(e) => tracing::error!(error = %e, "API server task"),
    }
    let _ = std::fs::remove_file(server_dir.join("url"));
    tracing::info!("kapsel server stopped");
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Waits until the API server task has finished (without consuming the handle).
async fn api_task_wait<T>(h: &tokio::task::JoinHandle<T>) -> &'static str {
    while !h.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    "exited"
}

fn report(what: &str, r: Result<anyhow::Result<()>, tokio::task::JoinError>) {
    match r {
        Ok(Ok(())) => tracing::info!("{what} stopped"),
        Ok(Err(e)) => tracing::error!(error = %e, "{what} failed"),
        Err(e) => tracing::error!(error = %e, "{what} task"),
    }
}

/// `kapsel agent`.
pub async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    init_tracing();
    if args.cleanup {
        for what in kapsel_agent::net::cleanup_node(&kapsel_agent::net::ops::IpCommands)? {
            println!("removed {what}");
        }
        let state = args.data_dir.join("agent").join("net");
        if state.exists() {
            std::fs::remove_dir_all(&state)
                .with_context(|| format!("removing {}", state.display()))?;
            println!("removed {}", state.display());
        }
        return Ok(());
    }
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the token file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let server = args.server.trim_end_matches('/').to_string();
    let certs = if server.starts_with("http://") {
        tracing::warn!("plain HTTP: no TLS, no node identity (an --insecure-http server only)");
        None
    } else {
        let dir = args.data_dir.join("agent").join("pki");
        Some(
            NodeCerts::load_or_join(&server, &node_name(&args.agent), &dir, token.as_deref())
                .await
                .context("joining the cluster")?,
        )
    };
    let cp = control_plane(&server, certs.as_ref())?;
    let agent = build_agent(&args.agent, server, cp, args.data_dir.join("agent"))?;
    tracing::info!(server = %args.server, node = %agent.config().node_name, "kapsel agent starting");
    tokio::select! {
        r = agent.run() => r?,
        _ = termination() => tracing::info!("stopping (containers keep running)"),
    }
    Ok(())
}

/// `kapsel image …`: works on the node's store directly (no server needed).
pub async fn image(cmd: ImageCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let open = |d: &ImageDirArgs| -> anyhow::Result<ImageStore> {
        let dir = image_store_dir(&d.data_dir.join("agent"));
        ImageStore::open(&dir).with_context(|| format!("opening the image store {}", dir.display()))
    };
    match cmd {
        ImageCommand::Import(a) => {
            let store = open(&a.dir)?;
            let name = match &a.name {
                Some(n) => Some(ImageRef::parse(n).with_context(|| format!("image name {n:?}"))?),
                None => None,
            };
            if name.is_some() && a.files.len() > 1 {
                bail!("--name needs exactly one archive");
            }
            for f in &a.files {
                let infos = store
                    .import_archive(f, name.as_ref())
                    .await
                    .with_context(|| format!("importing {}", f.display()))?;
                for i in infos {
                    writeln!(
                        out,
                        "imported {} ({}, {} bytes)",
                        i.reference, i.config_digest, i.size
                    )?;
                }
            }
        }
        ImageCommand::List(d) => {
            let store = open(&d)?;
            writeln!(out, "{:<50} {:<20} {:>12}", "IMAGE", "ID", "SIZE")?;
            for r in store.list()? {
                let id = r.config_digest.trim_start_matches("sha256:");
                writeln!(
                    out,
                    "{:<50} {:<20} {:>12}",
                    r.name,
                    &id[..id.len().min(12)],
                    r.size
                )?;
            }
        }
        ImageCommand::Remove(a) => {
            let store = open(&a.dir)?;
            for n in &a.names {
                for removed in store.remove(n).await? {
                    writeln!(out, "removed {removed}")?;
                }
            }
        }
        ImageCommand::Pull(a) => {
            let store = open(&a.dir)?;
            let image =
                ImageRef::parse(&a.image).with_context(|| format!("image name {:?}", a.image))?;
            let mut creds = Credentials::anonymous();
            if let Some(c) = &a.creds {
                let (u, p) = c
                    .split_once(':')
                    .ok_or_else(|| anyhow!("--creds wants USER:PASSWORD"))?;
                creds.insert(image.registry(), u, p);
            }
            if let Some(f) = &a.auth_file {
                let b = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                creds
                    .add_docker_config_json(&b)
                    .with_context(|| format!("{}", f.display()))?;
            }
            let registry = registry_config(&a.insecure_registries, &a.registry_mirrors);
            let quiet = a.quiet;
            let progress = Progress::new(move |e| {
                if quiet {
                    return;
                }
                match e {
                    PullEvent::Resolving { endpoint, .. } => eprintln!("resolving at {endpoint}"),
                    PullEvent::MirrorFailed { mirror, error } => {
                        eprintln!("mirror {mirror} failed: {error}")
                    }
                    PullEvent::Resolved {
                        digest,
                        layers,
                        bytes,
                    } => {
                        eprintln!("{digest}: {layers} layers, {bytes} bytes")
                    }
                    PullEvent::LayerPresent { digest } => eprintln!("{digest}: already present"),
                    PullEvent::Downloaded { digest, bytes } => {
                        eprintln!("{digest}: downloaded {bytes} bytes")
                    }
                    PullEvent::Unpacked { digest, size } => {
                        eprintln!("{digest}: unpacked {size} bytes")
                    }
                    PullEvent::Downloading { .. } => {}
                }
            });
            let info = store
                .pull(&image, &creds, &registry, progress)
                .await
                .with_context(|| format!("pulling {image}"))?;
            if quiet {
                writeln!(out, "{}", info.image_id)?;
            } else {
                let how = match info.pulled {
                    Some(p) => format!(
                        "downloaded {} bytes in {:.2}s",
                        p.downloaded_bytes,
                        p.elapsed.as_secs_f64()
                    ),
                    None => "up to date".to_string(),
                };
                writeln!(
                    out,
                    "pulled {} ({}, {how}, {} bytes unpacked)",
                    info.image_id, info.config_digest, info.size
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_persist_and_config_merges() {
        let d = tempfile::tempdir().unwrap();
        let t1 = ensure_token(&d.path().join("s/token")).unwrap();
        let t2 = ensure_token(&d.path().join("s/token")).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.len(), 64);
        let cfgp = d.path().join("config");
        std::fs::write(
            &cfgp,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: http://x\n",
        )
        .unwrap();
        write_client_config(&cfgp, "http://127.0.0.1:1", &t1, None).unwrap();
        write_client_config(&cfgp, "https://127.0.0.1:2", &t1, Some("PEM")).unwrap();
        let cfg = KubeConfig::load(&cfgp).unwrap();
        assert_eq!(cfg.clusters.len(), 2);
        let r = crate::config::resolve(&cfg, &Default::default()).unwrap();
        assert_eq!(r.client.ca_cert_pem.as_deref(), Some(&b"PEM"[..]));
        assert_eq!(r.client.token.as_deref(), Some(t1.as_str()));
        assert_eq!(cfg.current_context.as_deref(), Some("kapsel"));
        assert_eq!(cfg.cluster("kapsel").unwrap().server, "https://127.0.0.1:2");
    }
}
