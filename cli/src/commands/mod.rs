//! The `kapsel` command line: clap definitions and dispatch.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args, Parser, Subcommand};
use kapsel_api::client::{Client, DynamicApi};

use crate::config::{self, KubeConfig, Overrides};
use crate::resources::ResourceInfo;

mod apply;
mod config_cmd;
mod delete;
mod describe;
pub mod exec;
mod get;
mod misc;
mod rollout;
mod token;

/// kapsel controls a kapsel cluster, the way kubectl controls Kubernetes.
#[derive(Debug, Parser)]
#[command(
    name = "kapsel",
    version,
    about = "kapsel controls the kapsel cluster manager (a kubectl-compatible command line)",
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Path to the config file (default $KAPSELCONFIG, else ~/.kapsel/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The config context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The address of the API server.
    #[arg(long, short = 's', global = true)]
    pub server: Option<String>,
    /// Bearer token for authentication to the API server.
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// The namespace scope for this request.
    #[arg(long, short = 'n', global = true)]
    pub namespace: Option<String>,
    /// Do not verify the server's certificate (insecure).
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,
    /// Time to wait for one server request (e.g. 10s, 1m); 0 waits forever.
    #[arg(long, global = true, value_name = "DURATION")]
    pub request_timeout: Option<String>,
}

// Parsed once per process; boxing the server's flags would only add noise at the call sites.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply a configuration to resources from files, directories, URLs or stdin.
    Apply(apply::ApplyArgs),
    /// Display one or many resources.
    Get(get::GetArgs),
    /// Show details of a resource or group of resources.
    Describe(describe::DescribeArgs),
    /// Delete resources by file, type and name, or selector.
    Delete(delete::DeleteArgs),
    /// Manage the rollout of a deployment.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Set a new size for a deployment or replica set.
    Scale(misc::ScaleArgs),
    /// Print the logs of a container in a pod.
    Logs(misc::LogsArgs),
    /// Run a command in a container (`kapsel exec POD [-c C] [-i] -- CMD...`).
    Exec(exec::ExecArgs),
    /// Create a resource from a file or from arguments.
    Create(misc::CreateArgs),
    /// Mark a node as unschedulable.
    Cordon(misc::NodeArgs),
    /// Mark a node as schedulable.
    Uncordon(misc::NodeArgs),
    /// Drain a node in preparation for maintenance.
    Drain(misc::DrainArgs),
    /// Display resource (CPU/memory) usage.
    #[command(subcommand)]
    Top(misc::TopCommand),
    /// Display addresses of the control plane.
    ClusterInfo,
    /// Print the client and server version information.
    Version(misc::VersionArgs),
    /// Print the supported API resources.
    ApiResources(misc::ApiResourcesArgs),
    /// Output shell completion code for bash, zsh or fish.
    Completion(misc::CompletionArgs),
    /// Modify config files.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Run a cluster: API server, scheduler, controller and a local agent in one process.
    Server(crate::cluster::ServerArgs),
    /// Join this machine to a cluster as a node.
    Agent(crate::cluster::AgentArgs),
    /// Manage this node's images (pull, import archives, list, remove).
    #[command(subcommand)]
    Image(crate::cluster::ImageCommand),
    /// Manage join tokens (create with a TTL, list, revoke).
    #[command(subcommand)]
    Token(token::TokenCommand),
}

impl Command {
    /// Long-running commands that want a full-size runtime.
    pub fn is_daemon(&self) -> bool {
        matches!(self, Command::Server(_) | Command::Agent(_))
    }
}

/// Everything a command needs: the resolved client, the namespace, stdout.
pub struct Ctx {
    pub global: GlobalOpts,
    pub client: Client,
    pub namespace: String,
    pub namespace_explicit: bool,
}

impl Ctx {
    pub fn new(global: &GlobalOpts) -> anyhow::Result<Self> {
        let path = config::config_path(global.kubeconfig.as_deref());
        let cfg = KubeConfig::load(&path)?;
        let request_timeout = match &global.request_timeout {
            Some(t) => Some(parse_duration(t)?),
            None => None,
        };
        let o = Overrides {
            kubeconfig: global.kubeconfig.clone(),
            context: global.context.clone(),
            server: global.server.clone(),
            token: global.token.clone(),
            namespace: global.namespace.clone(),
            insecure_skip_tls_verify: global.insecure_skip_tls_verify,
            request_timeout: request_timeout.filter(|d| !d.is_zero()),
        };
        let r = config::resolve(&cfg, &o)?;
        let mut client_cfg = r.client;
        if request_timeout.is_some_and(|d| d.is_zero()) {
            client_cfg.request_timeout = None;
        }
        let client = Client::from_config(client_cfg)?;
        Ok(Ctx {
            global: global.clone(),
            client,
            namespace: r.namespace,
            namespace_explicit: r.namespace_explicit,
        })
    }

    /// The API of a type in the current namespace (`all_namespaces`: every namespace).
    pub fn api(&self, info: &ResourceInfo, all_namespaces: bool) -> DynamicApi {
        let ns = if all_namespaces {
            None
        } else {
            Some(self.namespace.as_str())
        };
        self.client.dynamic(info.api_resource(), ns)
    }

    pub fn api_in(&self, info: &ResourceInfo, namespace: Option<&str>) -> DynamicApi {
        self.client.dynamic(info.api_resource(), namespace)
    }
}

/// Parse `30s`, `5m`, `1h30m`, `250ms`, `2` (seconds).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    if s.is_empty() {
        bail!("invalid duration \"\"");
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let n: f64 = num
            .parse()
            .map_err(|_| anyhow!("invalid duration \"{s}\""))?;
        num.clear();
        let secs = match unit.as_str() {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => bail!("invalid duration \"{s}\": unknown unit \"{unit}\""),
        };
        total += Duration::from_secs_f64(secs);
    }
    if !num.is_empty() {
        bail!("invalid duration \"{s}\": missing unit");
    }
    Ok(total)
}

/// Run a parsed command line.
pub async fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    match cli.command {
        Command::Config(c) => config_cmd::run(&cli.global, c, out),
        Command::Completion(a) => misc::completion(a, out),
        Command::Version(a) if a.client => misc::version(None, out).await,
        Command::ApiResources(a) => misc::api_resources(a, out),
        Command::Server(a) => crate::cluster::server(a).await,
        Command::Agent(a) => crate::cluster::agent(a).await,
        Command::Image(c) => crate::cluster::image(c, out).await,
        other => {
            let ctx = Ctx::new(&cli.global)?;
            match other {
                Command::Apply(a) => apply::run(&ctx, a, out).await,
                Command::Get(a) => get::run(&ctx, a, out).await,
                Command::Describe(a) => describe::run(&ctx, a, out).await,
                Command::Delete(a) => delete::run(&ctx, a, out).await,
                Command::Rollout(r) => rollout::run(&ctx, r, out).await,
                Command::Scale(a) => misc::scale(&ctx, a, out).await,
                Command::Logs(a) => misc::logs(&ctx, a, out).await,
                Command::Exec(a) => exec::run(&ctx, a, out).await,
                Command::Create(a) => misc::create(&ctx, a, out).await,
                Command::Cordon(a) => misc::cordon(&ctx, a, true, out).await,
                Command::Uncordon(a) => misc::cordon(&ctx, a, false, out).await,
                Command::Drain(a) => misc::drain(&ctx, a, out).await,
                Command::Top(t) => misc::top(&ctx, t, out).await,
                Command::Token(t) => token::run(&ctx, t, out).await,
                Command::ClusterInfo => misc::cluster_info(&ctx, out).await,
                Command::Version(_) => misc::version(Some(&ctx), out).await,
                Command::Config(_)
                | Command::Completion(_)
                | Command::ApiResources(_)
                | Command::Server(_)
                | Command::Agent(_)
                | Command::Image(_) => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("5m3").is_err());
    }
}
