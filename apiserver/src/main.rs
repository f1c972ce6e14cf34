//! `kapsel-apiserver --data-dir DIR --listen 127.0.0.1:6443`

/// jemalloc instead of glibc malloc: see `tikv-jemallocator` in the workspace Cargo.toml.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use kapsel_apiserver::{serve, ServerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "kapsel-apiserver",
    version,
    about = "kapsel's Kubernetes-shaped API server"
)]
struct Args {
    /// Where the store lives.
    #[arg(
        long,
        env = "KAPSEL_DATA_DIR",
        default_value = "/var/lib/kapsel/apiserver"
    )]
    data_dir: PathBuf,
    /// Address to listen on (HTTPS; the CA, serving certificate, admin and join tokens and a
    /// client config are in DATA_DIR/auth/).
    #[arg(long, env = "KAPSEL_LISTEN", default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Another name or IP address of this server for its certificate (repeatable).
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_san: Vec<String>,
    /// Plain HTTP without authentication (everyone is the admin), development only: refused
    /// unless --listen is a loopback address.
    #[arg(long)]
    insecure_http: bool,
    /// Static bearer tokens, Kubernetes' CSV format: token,user,uid,"group1,group2".
    #[arg(long, value_name = "PATH")]
    token_auth_file: Option<PathBuf>,
    /// Lifetime of node client certificates (Go duration: 8760h, 30m, 90s).
    #[arg(long, default_value = "8760h", value_parser = kapsel_apiserver::security::parse_ttl)]
    node_cert_ttl: std::time::Duration,
    /// Watch events kept in memory; older resourceVersions answer 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
    /// Store page cache in MiB.
    #[arg(long, default_value_t = 32)]
    cache_mib: u64,
    /// Group commit: microseconds the store waits before an fsync when writers are concurrent
    /// (so one fsync covers more writes). A lone writer never waits.
    #[arg(long, default_value_t = 500)]
    commit_delay_us: u64,
    /// The network Service cluster IPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: kapsel_apiserver::svcalloc::Ipv4Cidr,
    /// Audit log, Secrets at rest, abuse limits.
    #[command(flatten)]
    guards: kapsel_apiserver::authz::GuardArgs,
    /// How long Events are kept after they last happened (Go duration: 1h, 30m, 90s).
    #[arg(long, default_value = "1h", value_parser = kapsel_apiserver::eventttl::parse_duration)]
    event_ttl: std::time::Duration,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kapsel-apiserver: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut config = ServerConfig::new(args.data_dir, args.listen);
    config.watch_history = args.watch_history;
    config.cache_bytes = args.cache_mib * 1024 * 1024;
    config.commit_delay = std::time::Duration::from_micros(args.commit_delay_us);
    config.service_ranges.cidr = args.service_cidr;
    args.guards.apply(&mut config);
    config.event_ttl = args.event_ttl;
    if args.insecure_http {
        if !args.listen.ip().is_loopback() {
            eprintln!(
                "kapsel-apiserver: --insecure-http serves without TLS or authentication and only \
                 on a loopback address; use --listen 127.0.0.1:{}",
                args.listen.port()
            );
            return std::process::ExitCode::FAILURE;
        }
    } else {
        let dir = config.data_dir.join("auth");
        let mut sec = kapsel_apiserver::security::SecurityConfig::in_dir(&dir);
        sec.tls_sans = args.tls_san;
        sec.token_auth_file = args.token_auth_file;
        sec.node_cert_ttl = args.node_cert_ttl;
        sec.kubeconfig = Some(dir.join("kubeconfig"));
        config.security = Some(sec);
    }
    match rt.block_on(serve(config, shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "kapsel-apiserver failed");
            std::process::ExitCode::FAILURE
        }
    }
}
