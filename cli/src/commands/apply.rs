//! `kapsel apply`.

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::bail;
use clap::Args;
use kapsel_api::client::{ListParams, Patch, PatchParams, PostParams};
use kapsel_api::labels::LAST_APPLIED;
use kapsel_api::DeleteOptions;
use serde_json::Value;

use super::Ctx;
use crate::apply::{self, Manifest};
use crate::errors::{format_error, OpError, Reported};
use crate::printers::{self, OutputFormat};
use crate::resources;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Files, directories or URLs with manifests; `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub filenames: Vec<String>,
    /// Process directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// `none`, `client` (send nothing) or `server` (the server checks but does not persist).
    #[arg(long, value_name = "MODE", default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: String,
    /// Delete objects that carry the selector's labels and were applied before but are no
    /// longer in the manifests.
    #[arg(long)]
    pub prune: bool,
    /// Label selector (for --prune).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Validate documents before sending them (strict decoding and the kind's rules).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub validate: bool,
    /// Output format: name, yaml or json (default: one line per object).
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DryRun {
    None,
    Client,
    Server,
}

pub fn parse_dry_run(s: &str) -> anyhow::Result<DryRun> {
    Ok(match s {
        "none" | "false" | "" => DryRun::None,
        "client" | "true" => DryRun::Client,
        "server" => DryRun::Server,
        other => {
            bail!("Invalid dry-run value ({other}). Must be \"none\", \"server\", or \"client\".")
        }
    })
}

fn suffix(d: DryRun) -> &'static str {
    match d {
        DryRun::None => "",
        DryRun::Client => " (dry run)",
        DryRun::Server => " (server dry run)",
    }
}

pub async fn run(ctx: &Ctx, a: ApplyArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let dry = parse_dry_run(&a.dry_run)?;
    if a.prune && a.selector.is_none() {
        bail!("all resources selected for prune without explicitly passing --all. To prune all resources, pass the --all flag. If you did not mean to prune all resources, specify a label selector");
    }
    let output = match &a.output {
        Some(o) => Some(OutputFormat::parse(o)?),
        None => None,
    };
    let sources = apply::expand_sources(&a.filenames, a.recursive)?;
    if sources.is_empty() {
        bail!("no objects passed to apply");
    }
    // Read and validate everything first: a source with any bad document is skipped whole.
    let mut errors = 0;
    let mut batches: Vec<Vec<Manifest>> = Vec::new();
    for src in &sources {
        let text = match apply::read_source(src).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}", format_error(&e));
                errors += 1;
                continue;
            }
        };
        match apply::parse_source(src, &text, a.validate) {
            Ok(m) => batches.push(m),
            Err(e) => {
                eprintln!("error: {e}");
                errors += 1;
            }
        }
    }
    let mut applied: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut namespaces: BTreeSet<String> = BTreeSet::new();
    let mut kinds: Vec<resources::ResourceInfo> = Vec::new();
    let mut structured = Vec::new();
    for batch in batches {
        for m in batch {
            match apply_one(ctx, &m, dry).await {
                Ok((verb, obj)) => {
                    let ns = obj
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    applied.insert((m.info.plural.to_string(), ns.clone(), m.name().to_string()));
                    if m.info.namespaced {
                        namespaces.insert(ns);
                    }
                    if !kinds.iter().any(|k| k.plural == m.info.plural) {
                        kinds.push(m.info.clone());
                    }
                    match &output {
                        None => writeln!(
                            out,
                            "{}/{} {verb}{}",
                            m.info.type_name(),
                            m.name(),
                            suffix(dry)
                        )?,
                        Some(OutputFormat::Name) => {
                            writeln!(out, "{}", printers::name_of(&m.info, &obj))?
                        }
                        Some(_) => structured.push((m.info.clone(), obj)),
                    }
                }
                Err(e) => {
                    eprintln!("{}", format_error(&e));
                    errors += 1;
                }
            }
        }
    }
    if let Some(fmt) = &output {
        if !structured.is_empty() && !matches!(fmt, OutputFormat::Name) {
            let fmt = if fmt.is_table() {
                &OutputFormat::Yaml
            } else {
                fmt
            };
            let single = structured.len() == 1;
            printers::print_structured(out, fmt, &structured, single)?;
        }
    }
    if a.prune {
        if let Some(sel) = &a.selector {
            if namespaces.is_empty() {
                namespaces.insert(ctx.namespace.clone());
            }
            errors += prune(ctx, sel, &namespaces, &applied, dry, out).await?;
        }
    }
    if errors > 0 {
        return Err(Reported(errors).into());
    }
    Ok(())
}

/// Kinds `--prune` considers (kubectl's default allow-list, for the kinds kapsel has).
const PRUNE_KINDS: &[&str] = &[
    "configmaps",
    "endpoints",
    "pods",
    "secrets",
    "services",
    "deployments",
    "replicasets",
];

async fn prune(
    ctx: &Ctx,
    selector: &str,
    namespaces: &BTreeSet<String>,
    applied: &BTreeSet<(String, String, String)>,
    dry: DryRun,
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let mut errors = 0;
    for plural in PRUNE_KINDS {
        let Some(info) = resources::lookup(plural) else {
            continue;
        };
        for ns in namespaces {
            let api = ctx.api_in(&info, Some(ns));
            let list = api.list(&ListParams::default().labels(selector)).await?;
            for o in list.items {
                let name = o
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let has_last_applied = o
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(LAST_APPLIED))
                    .is_some();
                if !has_last_applied
                    || applied.contains(&(info.plural.to_string(), ns.clone(), name.clone()))
                {
                    continue;
                }
                if dry == DryRun::None || dry == DryRun::Server {
                    let opts = DeleteOptions {
                        propagation_policy: Some("Background".into()),
                        dry_run: if dry == DryRun::Server {
                            vec!["All".into()]
                        } else {
                            vec![]
                        },
                        ..Default::default()
                    };
                    if let Err(e) = api.delete(&name, &opts).await {
                        if !e.is_not_found() {
                            eprintln!("{}", format_error(&e.into()));
                            errors += 1;
                            continue;
                        }
                    }
                }
                writeln!(out, "{}/{name} pruned{}", info.type_name(), suffix(dry))?;
            }
        }
    }
    Ok(errors)
}

/// Create or patch one object; returns the verb printed and the resulting object.
async fn apply_one(ctx: &Ctx, m: &Manifest, dry: DryRun) -> anyhow::Result<(&'static str, Value)> {
    let mut manifest = m.value.clone();
    let ns = if m.info.namespaced {
        let ns = match m.namespace() {
            Some(obj_ns) if ctx.namespace_explicit && obj_ns != ctx.namespace => {
                bail!(
                    "the namespace from the provided object \"{obj_ns}\" does not match the namespace \"{}\". You must pass '--namespace={obj_ns}' to perform this operation.",
                    ctx.namespace
                )
            }
            Some(obj_ns) => obj_ns.to_string(),
            None => ctx.namespace.clone(),
        };
        if let Some(meta) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), Value::String(ns.clone()));
        }
        Some(ns)
    } else {
        None
    };
    let api = ctx.api_in(&m.info, ns.as_deref());
    let name = m.name().to_string();
    let modified = apply::with_last_applied(&manifest);
    let live = api.get_opt(&name).await.map_err(|e| OpError {
        verb: "retrieving current configuration of",
        source_name: m.source.clone(),
        err: e,
    })?;
    match live {
        None => {
            if dry == DryRun::Client {
                return Ok(("created", modified));
            }
            let pp = PostParams {
                dry_run: dry == DryRun::Server,
                field_manager: Some("kubectl-client-side-apply".into()),
                ..Default::default()
            };
            let created = api.create(&modified, &pp).await.map_err(|e| OpError {
                verb: "creating",
                source_name: m.source.clone(),
                err: e,
            })?;
            Ok(("created", created))
        }
        Some(live) => {
            let original = apply::last_applied(&live);
            if original.is_none() {
                eprintln!(
                    "Warning: resource {} \"{}\" is missing the {LAST_APPLIED} annotation which is required by kapsel apply. The missing annotation will be patched automatically.",
                    m.info.plural, name
                );
            }
            let patch = apply::three_way_merge_patch(original.as_ref(), &modified, &live);
            if apply::is_empty_patch(&patch) {
                return Ok(("unchanged", live));
            }
            if dry == DryRun::Client {
                return Ok(("configured", live));
            }
            let pp = PatchParams {
                dry_run: dry == DryRun::Server,
                field_manager: Some("kubectl-client-side-apply".into()),
                ..Default::default()
            };
            let patched = api
                .patch(&name, &Patch::Merge(patch), &pp)
                .await
                .map_err(|e| OpError {
                    verb: "applying patch to",
                    source_name: m.source.clone(),
                    err: e,
                })?;
            Ok(("configured", patched))
        }
    }
}
