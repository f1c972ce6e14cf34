//! `kapsel delete`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use kapsel_api::client::{DynamicApi, ListParams};
use kapsel_api::DeleteOptions;
use serde_json::Value;

use super::{parse_duration, Ctx};
use crate::apply;
use crate::errors::{format_error, Reported};
use crate::resources::{self, ResourceInfo};

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// TYPE NAME…, TYPE/NAME…, or TYPE with --all / -l.
    #[arg(value_name = "TYPE[.GROUP] [NAME]")]
    pub args: Vec<String>,
    /// Files, directories or URLs with the objects to delete.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filenames: Vec<String>,
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Delete every object of the type in the namespace.
    #[arg(long)]
    pub all: bool,
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[arg(long)]
    pub field_selector: Option<String>,
    /// background, foreground or orphan.
    #[arg(long, default_value = "background", num_args = 0..=1, default_missing_value = "background")]
    pub cascade: String,
    /// Wait until the objects are gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub wait: bool,
    /// Seconds given to the object to terminate gracefully (-1: the object's default).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Immediate deletion (grace period 0).
    #[arg(long)]
    pub force: bool,
    /// Grace period 1.
    #[arg(long)]
    pub now: bool,
    #[arg(long)]
    pub ignore_not_found: bool,
    /// How long to wait for deletion (0: forever).
    #[arg(long, default_value = "0s")]
    pub timeout: String,
}

fn propagation(cascade: &str) -> anyhow::Result<&'static str> {
    Ok(match cascade {
        "background" | "true" => "Background",
        "foreground" => "Foreground",
        "orphan" | "false" => "Orphan",
        other => bail!(
            "invalid cascade value ({other}). Must be \"background\", \"foreground\", or \"orphan\""
        ),
    })
}

pub async fn run(ctx: &Ctx, a: DeleteArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut opts = DeleteOptions {
        propagation_policy: Some(propagation(&a.cascade)?.to_string()),
        ..Default::default()
    };
    if a.force {
        opts.grace_period_seconds = Some(0);
    } else if a.now {
        opts.grace_period_seconds = Some(1);
    } else if a.grace_period >= 0 {
        opts.grace_period_seconds = Some(a.grace_period);
    }
    let timeout = parse_duration(&a.timeout)?;
    // (type, namespace, name) to delete.
    let mut targets: Vec<(ResourceInfo, Option<String>, String)> = Vec::new();
    let mut errors = 0;
    if !a.filenames.is_empty() {
        if !a.args.is_empty() {
            bail!("resource(s) were provided, but no name was specified");
        }
        for src in apply::expand_sources(&a.filenames, a.recursive)? {
            let text = apply::read_source(&src).await?;
            let manifests =
                apply::parse_source(&src, &text, false).map_err(|e| anyhow::anyhow!("{e}"))?;
            for m in manifests {
                let ns = m
                    .info
                    .namespaced
                    .then(|| m.namespace().unwrap_or(&ctx.namespace).to_string());
                targets.push((m.info.clone(), ns, m.name().to_string()));
            }
        }
    } else {
        if a.args.is_empty() {
            bail!("You must provide one or more resources by argument or filename.\nExample resource specifications include:\n   '-f rsrc.yaml'\n   '--filename=rsrc.json'\n   '<resource> <name>'\n   '<resource>'");
        }
        let sel = resources::parse_selection(&a.args)?;
        for (info, names) in sel.groups {
            if names.is_empty() {
                if !a.all && a.selector.is_none() && a.field_selector.is_none() {
                    bail!("resource(s) were provided, but no name was specified");
                }
                let all_ns = a.all_namespaces && info.namespaced;
                let api = ctx.api(&info, all_ns);
                let list = api
                    .list(&ListParams {
                        label_selector: a.selector.clone(),
                        field_selector: a.field_selector.clone(),
                        ..Default::default()
                    })
                    .await?;
                if list.items.is_empty() {
                    eprintln!("No resources found");
                }
                for o in list.items {
                    let ns = o
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let name = o
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    targets.push((info.clone(), ns, name));
                }
            } else {
                if a.all || a.selector.is_some() {
                    bail!("name cannot be provided when a selector is specified");
                }
                for n in names {
                    let ns = info.namespaced.then(|| ctx.namespace.clone());
                    targets.push((info.clone(), ns, n));
                }
            }
        }
    }
    let mut pending: Vec<(DynamicApi, ResourceInfo, String)> = Vec::new();
    for (info, ns, name) in targets {
        let api = ctx.api_in(&info, ns.as_deref());
        match api.delete(&name, &opts).await {
            Ok(_) => {
                writeln!(out, "{} \"{name}\" deleted", info.type_name())?;
                out.flush()?;
                pending.push((api, info, name));
            }
            Err(e) if e.is_not_found() && a.ignore_not_found => {}
            Err(e) => {
                eprintln!("{}", format_error(&e.into()));
                errors += 1;
            }
        }
    }
    if a.wait {
        let start = Instant::now();
        for (api, info, name) in pending {
            loop {
                match api.get_opt(&name).await {
                    Ok(None) => break,
                    Ok(Some(_)) => {}
                    Err(e) => {
                        eprintln!("{}", format_error(&e.into()));
                        errors += 1;
                        break;
                    }
                }
                if !timeout.is_zero() && start.elapsed() > timeout {
                    eprintln!(
                        "error: timed out waiting for the condition on {}/{name}",
                        info.plural
                    );
                    errors += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    if errors > 0 {
        return Err(Reported(errors).into());
    }
    Ok(())
}
