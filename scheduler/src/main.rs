//! `kapsel-scheduler --server URL [--token T] [--config FILE] [--strategy …]`

/// jemalloc instead of glibc malloc: see `tikv-jemallocator` in the workspace Cargo.toml.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;

use clap::Parser;
use kapsel_api::client::{Client, ClientConfig};
use kapsel_scheduler::{Config, Scheduler, ScoringStrategy};

#[derive(Parser, Debug)]
#[command(name = "kapsel-scheduler", version, about = "kapsel's pod scheduler")]
struct Args {
    /// API server URL.
    #[arg(long, env = "KAPSEL_SERVER", default_value = "http://127.0.0.1:6443")]
    server: String,
    /// Bearer token.
    #[arg(long, env = "KAPSEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics ("" to disable). Loopback by default.
    #[arg(long, default_value = "127.0.0.1:10259")]
    metrics_addr: String,
    /// Require `Authorization: Bearer TOKEN` on the metrics endpoint.
    #[arg(long, env = "KAPSEL_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Configuration file (YAML or JSON): scoringStrategy, weights, percentageOfNodesToScore, …
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides the file's scoring strategy: LeastAllocated (spread) or MostAllocated (pack).
    #[arg(long)]
    strategy: Option<ScoringStrategy>,
    /// Overrides the file's percentageOfNodesToScore (0 = adaptive, 100 = all nodes).
    #[arg(long)]
    percentage_of_nodes_to_score: Option<u32>,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(s) = args.strategy {
        config.scoring_strategy = s;
    }
    if let Some(p) = args.percentage_of_nodes_to_score {
        config.percentage_of_nodes_to_score = p;
    }
    let mut cc = ClientConfig::new(args.server);
    if let Some(t) = args.token {
        cc = cc.with_token(t);
    }
    let client = Client::from_config(cc)?;
    if !args.metrics_addr.is_empty() {
        let addr: std::net::SocketAddr = args
            .metrics_addr
            .parse()
            .map_err(|e| anyhow::anyhow!("--metrics-addr {}: {e}", args.metrics_addr))?;
        let token = args.metrics_token.clone();
        tokio::spawn(async move {
            if let Err(e) = kapsel_api::metrics_endpoint::serve(
                addr,
                token,
                kapsel_scheduler::metrics::prom::render,
            )
            .await
            {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    let scheduler = Scheduler::new(client, config)?;
    // A task on the runtime's workers, not the main thread's block_on (see `Scheduler::run`).
    tokio::spawn(scheduler.run(shutdown_signal())).await??;
    Ok(())
}
