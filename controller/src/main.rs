//! `kapsel-controller`: the controller manager as its own process.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kapsel_api::client::{Client, ClientConfig};
use kapsel_controller::{Config, Controller};

/// Parse `10s`, `500ms`, `2m`, `1h` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Parser, Debug)]
#[command(
    name = "kapsel-controller",
    version,
    about = "kapsel controller manager"
)]
struct Args {
    /// API server URL.
    #[arg(long, env = "KAPSEL_SERVER", default_value = "http://127.0.0.1:6443")]
    server: String,
    /// Bearer token.
    #[arg(long, env = "KAPSEL_TOKEN")]
    token: Option<String>,
    /// A node whose lease is older than this becomes Ready=Unknown and unreachable.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// Pods on an unreachable node are deleted after this (unless they tolerate longer).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pod_eviction_timeout: Duration,
    /// Concurrent reconciles per controller.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics ("" to disable). Loopback by default.
    #[arg(long, default_value = "127.0.0.1:10257")]
    metrics_addr: String,
    /// Require `Authorization: Bearer TOKEN` on the metrics endpoint.
    #[arg(long, env = "KAPSEL_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Pod network of the cluster; every node gets a block of it in spec.podCIDR.
    #[arg(long, default_value = kapsel_controller::podcidr::DEFAULT_CLUSTER_CIDR)]
    cluster_cidr: String,
    /// Prefix length of each node's block.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Do not allocate node podCIDRs (another tool manages the pod network).
    #[arg(long)]
    no_allocate_node_cidrs: bool,
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
    let mut cc = ClientConfig::new(&args.server);
    if let Some(t) = &args.token {
        cc = cc.with_token(t.clone());
    }
    let client = Client::from_config(cc).context("building the API client")?;
    let cfg = Config {
        node_monitor_grace_period: args.node_monitor_grace_period,
        pod_eviction_timeout: args.pod_eviction_timeout,
        workers: args.workers,
        pod_cidr: if args.no_allocate_node_cidrs {
            None
        } else {
            Some(
                kapsel_controller::podcidr::CidrConfig::new(
                    &args.cluster_cidr,
                    args.node_cidr_mask_size,
                )
                .map_err(anyhow::Error::msg)?,
            )
        },
        ..Default::default()
    };
    if !args.metrics_addr.is_empty() {
        let addr: std::net::SocketAddr = args
            .metrics_addr
            .parse()
            .map_err(|e| anyhow::anyhow!("--metrics-addr {}: {e}", args.metrics_addr))?;
        let token = args.metrics_token.clone();
        tokio::spawn(async move {
            if let Err(e) =
                kapsel_api::metrics_endpoint::serve(addr, token, kapsel_controller::metrics::render)
                    .await
            {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    tracing::info!(server = %args.server, ?cfg, "kapsel-controller starting");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = Controller::run(client, cfg) => r?,
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("3d").is_err());
    }
}
