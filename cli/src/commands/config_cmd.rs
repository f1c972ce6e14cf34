//! `kapsel config …`: view and edit the config file.

use std::io::Write;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::GlobalOpts;
use crate::config::{
    self, Cluster, Context, KubeConfig, NamedCluster, NamedContext, NamedUser, User,
};
use crate::printers::Table;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the config file.
    View,
    /// Show the current context.
    CurrentContext,
    /// Set the current context.
    UseContext { name: String },
    /// List the contexts.
    GetContexts,
    /// Create or change a context.
    SetContext(SetContextArgs),
    /// Create or change a cluster entry.
    SetCluster(SetClusterArgs),
    /// Create or change a user entry.
    SetCredentials(SetCredentialsArgs),
    /// Delete a context.
    DeleteContext { name: String },
}

#[derive(Debug, Args)]
pub struct SetContextArgs {
    /// The context to change (or use --current).
    pub name: Option<String>,
    /// Change the current context.
    #[arg(long)]
    pub current: bool,
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    // The context's default namespace comes from the global `--namespace` / `-n`.
}

#[derive(Debug, Args)]
pub struct SetClusterArgs {
    pub name: String,
    // The server comes from the global `--server`, TLS skipping from `--insecure-skip-tls-verify`.
    #[arg(long)]
    pub certificate_authority: Option<String>,
}

#[derive(Debug, Args)]
pub struct SetCredentialsArgs {
    pub name: String,
    // The token comes from the global `--token`.
    #[arg(long)]
    pub client_certificate: Option<String>,
    #[arg(long)]
    pub client_key: Option<String>,
}

pub fn run(global: &GlobalOpts, cmd: ConfigCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = config::config_path(global.kubeconfig.as_deref());
    let mut cfg = KubeConfig::load(&path)?;
    match cmd {
        ConfigCommand::View => {
            let mut shown = cfg.clone();
            for u in &mut shown.users {
                if u.user.token.is_some() {
                    u.user.token = Some("REDACTED".into());
                }
                if u.user.client_key_data.is_some() {
                    u.user.client_key_data = Some("DATA+OMITTED".into());
                }
            }
            out.write_all(serde_yaml::to_string(&shown)?.as_bytes())?;
        }
        ConfigCommand::CurrentContext => match &cfg.current_context {
            Some(c) if !c.is_empty() => writeln!(out, "{c}")?,
            _ => bail!("current-context is not set"),
        },
        ConfigCommand::UseContext { name } => {
            if cfg.context(&name).is_none() {
                bail!("no context exists with the name: \"{name}\"");
            }
            cfg.current_context = Some(name.clone());
            cfg.save(&path)?;
            writeln!(out, "Switched to context \"{name}\".")?;
        }
        ConfigCommand::GetContexts => {
            let mut t = Table {
                headers: ["CURRENT", "NAME", "CLUSTER", "AUTHINFO", "NAMESPACE"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                rows: Vec::new(),
            };
            for c in &cfg.contexts {
                let current = cfg.current_context.as_deref() == Some(c.name.as_str());
                t.rows.push(vec![
                    if current { "*".into() } else { String::new() },
                    c.name.clone(),
                    c.context.cluster.clone(),
                    c.context.user.clone(),
                    c.context.namespace.clone().unwrap_or_default(),
                ]);
            }
            out.write_all(t.render(false).as_bytes())?;
        }
        ConfigCommand::SetContext(a) => {
            let name = match (a.name, a.current) {
                (Some(n), false) => n,
                (None, true) => match cfg.current_context.clone() {
                    Some(c) if !c.is_empty() => c,
                    _ => bail!("no current context is set"),
                },
                (Some(_), true) => bail!("you cannot specify both a context name and --current"),
                (None, false) => bail!("you must specify a context name or --current"),
            };
            let existed = cfg.context(&name).is_some();
            if !existed {
                cfg.contexts.push(NamedContext {
                    name: name.clone(),
                    context: Context::default(),
                });
            }
            let ctx = &mut cfg
                .contexts
                .iter_mut()
                .find(|c| c.name == name)
                .expect("just ensured")
                .context;
            if let Some(c) = a.cluster {
                ctx.cluster = c;
            }
            if let Some(u) = a.user {
                ctx.user = u;
            }
            // `kapsel config set-context --current -n x` also works: the global -n.
            if let Some(n) = global.namespace.clone() {
                ctx.namespace = Some(n).filter(|n| !n.is_empty());
            }
            cfg.save(&path)?;
            writeln!(
                out,
                "Context \"{name}\" {}.",
                if existed { "modified" } else { "created" }
            )?;
        }
        ConfigCommand::SetCluster(a) => {
            let existed = cfg.cluster(&a.name).is_some();
            if !existed {
                cfg.clusters.push(NamedCluster {
                    name: a.name.clone(),
                    cluster: Cluster::default(),
                });
            }
            let c = &mut cfg
                .clusters
                .iter_mut()
                .find(|c| c.name == a.name)
                .expect("just ensured")
                .cluster;
            if let Some(s) = global.server.clone() {
                c.server = s;
            }
            if let Some(ca) = a.certificate_authority {
                c.certificate_authority = Some(ca);
            }
            if global.insecure_skip_tls_verify {
                c.insecure_skip_tls_verify = true;
            }
            cfg.save(&path)?;
            let _ = existed;
            writeln!(out, "Cluster \"{}\" set.", a.name)?;
        }
        ConfigCommand::SetCredentials(a) => {
            if cfg.user(&a.name).is_none() {
                cfg.users.push(NamedUser {
                    name: a.name.clone(),
                    user: User::default(),
                });
            }
            let u = &mut cfg
                .users
                .iter_mut()
                .find(|c| c.name == a.name)
                .expect("just ensured")
                .user;
            if let Some(t) = global.token.clone() {
                u.token = Some(t);
            }
            if let Some(c) = a.client_certificate {
                u.client_certificate = Some(c);
            }
            if let Some(k) = a.client_key {
                u.client_key = Some(k);
            }
            cfg.save(&path)?;
            writeln!(out, "User \"{}\" set.", a.name)?;
        }
        ConfigCommand::DeleteContext { name } => {
            let before = cfg.contexts.len();
            cfg.contexts.retain(|c| c.name != name);
            if cfg.contexts.len() == before {
                bail!("cannot delete context {name}, not in {}", path.display());
            }
            if cfg.current_context.as_deref() == Some(name.as_str()) {
                eprintln!("warning: this removed your active context, use \"kapsel config use-context\" to select a different one");
            }
            cfg.save(&path)?;
            writeln!(out, "deleted context {name} from {}", path.display())?;
        }
    }
    Ok(())
}
