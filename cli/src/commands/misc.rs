//! scale, logs, create, cordon/uncordon/drain, top, cluster-info, version, api-resources,
//! completion.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use clap::{Args, CommandFactory, Subcommand};
use futures::StreamExt;
use kapsel_api::client::{ListParams, LogParams, Patch, PatchParams, PostParams};
use kapsel_api::{DeleteOptions, Pod};
use serde_json::{json, Map, Value};

use super::{parse_duration, Cli, Ctx};
use crate::errors::{format_error, OpError, Reported};
use crate::printers::{self, OutputFormat};
use crate::resources::{self, ResourceInfo};

// ---------------------------------------------------------------------------------------------
// scale
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// deployment/NAME, replicaset/NAME, or `deployment NAME`.
    #[arg(required = true, num_args = 1..=2, value_name = "TYPE/NAME")]
    pub target: Vec<String>,
    /// The new number of replicas.
    #[arg(long, required = true)]
    pub replicas: i32,
    /// Only scale if the current number of replicas is this.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub current_replicas: i32,
}

fn type_and_name(args: &[String]) -> anyhow::Result<(ResourceInfo, String)> {
    match args {
        [one] => resources::split_type_name(one).ok_or_else(|| match one.split_once('/') {
            Some((t, _)) => resources::unknown_type_error(t),
            None => anyhow!("you must specify the resource as TYPE/NAME (e.g. deployment/{one})"),
        }),
        [ty, name] => Ok((
            resources::lookup(ty).ok_or_else(|| resources::unknown_type_error(ty))?,
            name.clone(),
        )),
        _ => bail!("required resource not specified"),
    }
}

pub async fn scale(ctx: &Ctx, a: ScaleArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (info, name) = type_and_name(&a.target)?;
    if !matches!(info.plural, "deployments" | "replicasets") {
        bail!(
            "cannot scale {}: only deployments and replicasets have a scale",
            info.group_resource()
        );
    }
    if a.replicas < 0 {
        bail!(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
        );
    }
    let api = ctx.api(&info, false);
    if a.current_replicas >= 0 {
        let mut s = api.get_subresource(&name, "scale").await?;
        let cur = s
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if cur != i64::from(a.current_replicas) {
            bail!("Expected replicas to be {}, was {cur}", a.current_replicas);
        }
        s["spec"]["replicas"] = json!(a.replicas);
        api.replace_subresource(&name, "scale", &s).await?;
    } else {
        let patch = Patch::Merge(json!({"spec": {"replicas": a.replicas}}));
        match api
            .patch_subresource(&name, "scale", &patch, &PatchParams::default())
            .await
        {
            Ok(_) => {}
            // A server without the scale subresource: patch the object itself.
            Err(e) if matches!(e.code(), Some(405) | Some(415)) => {
                api.patch(&name, &patch, &PatchParams::default()).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    writeln!(out, "{}/{name} scaled", info.type_name())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// logs
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// POD, pod/NAME or deployment/NAME (or replicaset/NAME).
    #[arg(required = true, value_name = "POD | TYPE/NAME")]
    pub target: String,
    /// The container (default: the annotated default container, else the first one).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The previous instance of the container.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Lines from the end to show (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    #[arg(long)]
    pub timestamps: bool,
    /// Only logs newer than a duration like 5s, 2m or 3h.
    #[arg(long)]
    pub since: Option<String>,
}

pub async fn logs(ctx: &Ctx, a: LogsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let pods = ctx.client.api::<Pod>(Some(&ctx.namespace));
    let pod_name = match a.target.split_once('/') {
        None => a.target.clone(),
        Some(_) => {
            let (info, name) = resources::split_type_name(&a.target).ok_or_else(|| {
                resources::unknown_type_error(a.target.split('/').next().unwrap_or(""))
            })?;
            if info.plural == "pods" {
                name
            } else if matches!(info.plural, "deployments" | "replicasets") {
                let owner = ctx.api(&info, false).get(&name).await?;
                let selector = printers::format_label_selector(owner.pointer("/spec/selector"));
                if selector == "<none>" {
                    bail!("{}/{name} has no selector", info.type_name());
                }
                let mut list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await?
                    .items;
                list.sort_by(|a, b| a.metadata.name().cmp(b.metadata.name()));
                let first = list.first().ok_or_else(|| {
                    anyhow!(
                        "timed out waiting for the condition: no pods found for {}/{name}",
                        info.type_name()
                    )
                })?;
                if list.len() > 1 {
                    eprintln!(
                        "Found {} pods, using pod/{}",
                        list.len(),
                        first.metadata.name()
                    );
                }
                first.metadata.name().to_string()
            } else {
                bail!(
                    "cannot get logs from {}: only pods, deployments and replicasets have logs",
                    info.group_resource()
                );
            }
        }
    };
    let pod = pods.get(&pod_name).await?;
    let containers: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let container = match &a.container {
        Some(c) => {
            if !containers.is_empty() && !containers.contains(c) {
                bail!("container {c} is not valid for pod {pod_name}");
            }
            c.clone()
        }
        None => {
            let default = pod
                .metadata
                .annotations
                .get("kubectl.kubernetes.io/default-container")
                .cloned()
                .filter(|d| containers.contains(d))
                .or_else(|| containers.first().cloned())
                .ok_or_else(|| anyhow!("pod {pod_name} has no containers"))?;
            if containers.len() > 1 {
                eprintln!(
                    "Defaulted container \"{default}\" out of: {}",
                    containers.join(", ")
                );
            }
            default
        }
    };
    let since_seconds = match &a.since {
        Some(s) => Some(parse_duration(s)?.as_secs().max(1) as i64),
        None => None,
    };
    let lp = LogParams {
        container: Some(container),
        follow: a.follow,
        tail_lines: (a.tail >= 0).then_some(a.tail),
        previous: a.previous,
        since_seconds,
        timestamps: a.timestamps,
        limit_bytes: None,
    };
    let mut stream = Box::pin(pods.logs(&pod_name, &lp).await?);
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?)?;
        out.flush()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// create
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CreateArgs {
    #[command(subcommand)]
    pub what: Option<CreateCommand>,
    /// Create the objects of these files.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filenames: Vec<String>,
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    #[arg(long, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: String,
}

#[derive(Debug, Args)]
pub struct CreateCommon {
    /// Print the object instead of (or after) creating it: yaml, json, name.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// none, client or server.
    #[arg(long, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: String,
}

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// Create a namespace.
    #[command(alias = "ns")]
    Namespace {
        name: String,
        #[command(flatten)]
        common: CreateCommon,
    },
    /// Create a config map from literals and files.
    #[command(alias = "cm")]
    Configmap {
        name: String,
        /// KEY=VALUE.
        #[arg(long)]
        from_literal: Vec<String>,
        /// [KEY=]PATH (a directory adds each file).
        #[arg(long)]
        from_file: Vec<String>,
        /// A file of KEY=VALUE lines.
        #[arg(long)]
        from_env_file: Vec<String>,
        #[command(flatten)]
        common: CreateCommon,
    },
    /// Create a secret.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Create a bearer token for USER and print it.
    Token {
        user: String,
        /// A group of the user (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// How long the token is valid (e.g. 1h, 30m); 0: never expires.
        #[arg(long, default_value = "0")]
        ttl: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// A secret from literals and files.
    Generic {
        name: String,
        #[arg(long)]
        from_literal: Vec<String>,
        #[arg(long)]
        from_file: Vec<String>,
        #[arg(long)]
        from_env_file: Vec<String>,
        /// The secret's type.
        #[arg(long = "type")]
        type_: Option<String>,
        #[command(flatten)]
        common: CreateCommon,
    },
}

fn collect_data(
    literals: &[String],
    files: &[String],
    env_files: &[String],
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut data: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |k: String, v: Vec<u8>| -> anyhow::Result<()> {
        if k.is_empty() {
            bail!("key must not be empty");
        }
        if data.iter().any(|(e, _)| *e == k) {
            bail!("cannot add key {k}, another key by that name already exists");
        }
        data.push((k, v));
        Ok(())
    };
    for l in literals {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid literal source {l}, expected key=value"))?;
        add(k.to_string(), v.as_bytes().to_vec())?;
    }
    for f in files {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) => (Some(k.to_string()), p.to_string()),
            None => (None, f.clone()),
        };
        let p = std::path::Path::new(&path);
        if p.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .with_context(|| format!("unable to read directory {path}"))?
                .filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let bytes = std::fs::read(e.path())?;
                add(e.file_name().to_string_lossy().into_owned(), bytes)?;
            }
        } else {
            let bytes = std::fs::read(p).map_err(|e| anyhow!("error reading {path}: {e}"))?;
            let k = key.unwrap_or_else(|| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            add(k, bytes)?;
        }
    }
    for f in env_files {
        let text = std::fs::read_to_string(f).map_err(|e| anyhow!("error reading {f}: {e}"))?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid line in env file {f}: {line}"))?;
            add(k.trim().to_string(), v.as_bytes().to_vec())?;
        }
    }
    Ok(data)
}

pub async fn create(ctx: &Ctx, a: CreateArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let Some(what) = a.what else {
        if a.filenames.is_empty() {
            bail!("must specify one of -f or a resource to create (namespace, configmap, secret generic)");
        }
        return create_from_files(ctx, &a, out).await;
    };
    let (info, mut obj, common) = match what {
        CreateCommand::Token { user, groups, ttl } => {
            return super::token::create_user_token(ctx, &user, &groups, &ttl, out).await;
        }
        CreateCommand::Namespace { name, common } => (
            resources::lookup("namespaces").expect("known"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            common,
        ),
        CreateCommand::Configmap {
            name,
            from_literal,
            from_file,
            from_env_file,
            common,
        } => {
            let mut data = Map::new();
            let mut binary = Map::new();
            for (k, v) in collect_data(&from_literal, &from_file, &from_env_file)? {
                match String::from_utf8(v) {
                    Ok(s) => {
                        data.insert(k, Value::String(s));
                    }
                    Err(e) => {
                        binary.insert(
                            k,
                            Value::String(
                                base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                            ),
                        );
                    }
                }
            }
            let mut o =
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
            if !data.is_empty() {
                o["data"] = Value::Object(data);
            }
            if !binary.is_empty() {
                o["binaryData"] = Value::Object(binary);
            }
            (resources::lookup("configmaps").expect("known"), o, common)
        }
        CreateCommand::Secret(SecretCommand::Generic {
            name,
            from_literal,
            from_file,
            from_env_file,
            type_,
            common,
        }) => {
            let data: Map<String, Value> = collect_data(&from_literal, &from_file, &from_env_file)?
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
                    )
                })
                .collect();
            let mut o = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "type": type_.unwrap_or_else(|| "Opaque".into())});
            if !data.is_empty() {
                o["data"] = Value::Object(data);
            }
            (resources::lookup("secrets").expect("known"), o, common)
        }
    };
    let dry = super::apply::parse_dry_run(&common.dry_run)?;
    if info.namespaced {
        obj["metadata"]["namespace"] = Value::String(ctx.namespace.clone());
    }
    let result = if dry == super::apply::DryRun::Client {
        obj
    } else {
        let pp = PostParams {
            dry_run: dry == super::apply::DryRun::Server,
            field_manager: Some("kubectl-create".into()),
            ..Default::default()
        };
        ctx.api(&info, false).create(&obj, &pp).await?
    };
    print_created(out, &info, result, common.output.as_deref(), dry)
}

fn print_created(
    out: &mut dyn Write,
    info: &ResourceInfo,
    obj: Value,
    output: Option<&str>,
    dry: super::apply::DryRun,
) -> anyhow::Result<()> {
    match output {
        None | Some("") => {
            let suffix = match dry {
                super::apply::DryRun::None => "",
                super::apply::DryRun::Client => " (dry run)",
                super::apply::DryRun::Server => " (server dry run)",
            };
            writeln!(out, "{} created{suffix}", printers::name_of(info, &obj))?;
        }
        Some(o) => {
            let fmt = OutputFormat::parse(o)?;
            let fmt = if fmt.is_table() {
                OutputFormat::Yaml
            } else {
                fmt
            };
            printers::print_structured(out, &fmt, &[(info.clone(), obj)], true)?;
        }
    }
    Ok(())
}

async fn create_from_files(ctx: &Ctx, a: &CreateArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let dry = super::apply::parse_dry_run(&a.dry_run)?;
    let mut errors = 0;
    for src in crate::apply::expand_sources(&a.filenames, a.recursive)? {
        let text = crate::apply::read_source(&src).await?;
        let manifests = match crate::apply::parse_source(&src, &text, true) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: {e}");
                errors += 1;
                continue;
            }
        };
        for m in manifests {
            let mut obj = m.value.clone();
            let ns = if m.info.namespaced {
                let ns = m.namespace().unwrap_or(&ctx.namespace).to_string();
                obj["metadata"]["namespace"] = Value::String(ns.clone());
                Some(ns)
            } else {
                None
            };
            let result = if dry == super::apply::DryRun::Client {
                Ok(obj)
            } else {
                let pp = PostParams {
                    dry_run: dry == super::apply::DryRun::Server,
                    field_manager: Some("kubectl-create".into()),
                    ..Default::default()
                };
                ctx.api_in(&m.info, ns.as_deref()).create(&obj, &pp).await
            };
            match result {
                Ok(o) => print_created(out, &m.info, o, a.output.as_deref(), dry)?,
                Err(e) => {
                    let err = OpError {
                        verb: "creating",
                        source_name: m.source.clone(),
                        err: e,
                    };
                    eprintln!("{}", format_error(&err.into()));
                    errors += 1;
                }
            }
        }
    }
    if errors > 0 {
        return Err(Reported(errors).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// nodes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct NodeArgs {
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

pub async fn cordon(ctx: &Ctx, a: NodeArgs, on: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let info = resources::lookup("nodes").expect("known");
    let api = ctx.api(&info, false);
    for n in &a.nodes {
        set_unschedulable(&api, n, on, out).await?;
    }
    Ok(())
}

async fn set_unschedulable(
    api: &kapsel_api::client::DynamicApi,
    node: &str,
    on: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let live = api.get(node).await?;
    let is = live.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true);
    let word = if on { "cordoned" } else { "uncordoned" };
    if is == on {
        writeln!(out, "node/{node} already {word}")?;
        return Ok(());
    }
    let patch =
        json!({"spec": {"unschedulable": if on { Value::Bool(true) } else { Value::Null }}});
    api.patch(node, &Patch::Merge(patch), &PatchParams::default())
        .await?;
    writeln!(out, "node/{node} {word}")?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    #[arg(required = true)]
    pub node: String,
    /// Accepted for kubectl compatibility (kapsel has no DaemonSets).
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Also delete pods no controller manages (they are lost).
    #[arg(long)]
    pub force: bool,
    /// Continue even if pods use emptyDir volumes (their data is lost).
    #[arg(long)]
    pub delete_emptydir_data: bool,
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Give up after this long (0: forever).
    #[arg(long, default_value = "0s")]
    pub timeout: String,
}

pub async fn drain(ctx: &Ctx, a: DrainArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let timeout = parse_duration(&a.timeout)?;
    let nodes = ctx.api(&resources::lookup("nodes").expect("known"), false);
    set_unschedulable(&nodes, &a.node, true, out).await?;
    let pods = ctx.client.api::<Pod>(None);
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={}", a.node)))
        .await?;
    let victims: Vec<Pod> = list
        .items
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(a.node.as_str()))
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            )
        })
        .collect();
    let unmanaged: Vec<String> = victims
        .iter()
        .filter(|p| p.metadata.controller_ref().is_none())
        .map(|p| format!("{}/{}", p.metadata.namespace(), p.metadata.name()))
        .collect();
    if !unmanaged.is_empty() && !a.force {
        bail!(
            "unable to drain node \"{}\" due to error: cannot delete Pods that declare no controller (use --force to override): {}",
            a.node,
            unmanaged.join(", ")
        );
    }
    let with_empty_dir: Vec<String> = victims
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .is_some_and(|s| s.volumes.iter().any(|v| v.empty_dir.is_some()))
        })
        .map(|p| format!("{}/{}", p.metadata.namespace(), p.metadata.name()))
        .collect();
    if !with_empty_dir.is_empty() && !a.delete_emptydir_data {
        bail!(
            "unable to drain node \"{}\" due to error: cannot delete Pods with local storage (use --delete-emptydir-data to override): {}",
            a.node,
            with_empty_dir.join(", ")
        );
    }
    let opts = DeleteOptions {
        grace_period_seconds: (a.grace_period >= 0).then_some(a.grace_period),
        ..Default::default()
    };
    let mut errors = 0;
    for p in &victims {
        let api = ctx.client.api::<Pod>(Some(p.metadata.namespace()));
        writeln!(
            out,
            "evicting pod {}/{}",
            p.metadata.namespace(),
            p.metadata.name()
        )?;
        out.flush()?;
        if let Err(e) = api.delete(p.metadata.name(), &opts).await {
            if !e.is_not_found() {
                eprintln!("{}", format_error(&e.into()));
                errors += 1;
            }
        }
    }
    let start = Instant::now();
    for p in &victims {
        let api = ctx.client.api::<Pod>(Some(p.metadata.namespace()));
        loop {
            match api.get_opt(p.metadata.name()).await? {
                None => break,
                Some(cur) if cur.metadata.uid() != p.metadata.uid() => break,
                Some(_) => {}
            }
            if !timeout.is_zero() && start.elapsed() > timeout {
                bail!("drain did not complete within {}", a.timeout);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        writeln!(out, "pod/{} evicted", p.metadata.name())?;
    }
    if errors > 0 {
        return Err(Reported(errors).into());
    }
    writeln!(out, "node/{} drained", a.node)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// top
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// CPU and memory of nodes.
    #[command(alias = "node", alias = "no")]
    Nodes { name: Option<String> },
    /// CPU and memory of pods.
    #[command(alias = "pod", alias = "po")]
    Pods {
        name: Option<String>,
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// One line per container (POD and NAME columns).
        #[arg(long)]
        containers: bool,
    },
}

/// CPU in millicores from a quantity (`250m`, `1`, `1500000n`).
pub fn cpu_millis(q: &str) -> Option<f64> {
    let q = q.trim();
    let (num, mult) = if let Some(n) = q.strip_suffix('n') {
        (n, 1e-6)
    } else if let Some(n) = q.strip_suffix('u') {
        (n, 1e-3)
    } else if let Some(n) = q.strip_suffix('m') {
        (n, 1.0)
    } else {
        (q, 1000.0)
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// Bytes from a quantity (`128Mi`, `1G`, `1024`).
pub fn bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let units: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (u, m) in units {
        if let Some(n) = q.strip_suffix(u) {
            return n.parse::<f64>().ok().map(|v| v * m);
        }
    }
    q.parse::<f64>().ok()
}

/// `kubectl top pod`'s rows of one pod: the sum of its containers, or with `--containers` one
/// row per container (`POD NAME …`); NAMESPACE first with `-A`. Usage is `(container, cpu
/// millicores, memory bytes)`.
pub fn top_pod_rows(
    ns: &str,
    pod: &str,
    usage: &[(&str, f64, f64)],
    all_namespaces: bool,
    containers: bool,
) -> Vec<Vec<String>> {
    let cells = |cpu: f64, mem: f64| {
        vec![
            format!("{}m", cpu.round()),
            format!("{}Mi", (mem / 1024.0 / 1024.0).round()),
        ]
    };
    let mut rows: Vec<Vec<String>> = if containers {
        usage
            .iter()
            .map(|(c, cpu, mem)| {
                let mut r = vec![pod.to_string(), c.to_string()];
                r.extend(cells(*cpu, *mem));
                r
            })
            .collect()
    } else {
        let cpu: f64 = usage.iter().map(|u| u.1).sum();
        let mem: f64 = usage.iter().map(|u| u.2).sum();
        let mut r = vec![pod.to_string()];
        r.extend(cells(cpu, mem));
        vec![r]
    };
    if all_namespaces {
        for r in &mut rows {
            r.insert(0, ns.to_string());
        }
    }
    rows
}

pub async fn top(ctx: &Ctx, t: TopCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let metrics_unavailable = || anyhow!("Metrics API not available");
    match t {
        TopCommand::Nodes { name } => {
            let v: Value = ctx
                .client
                .get_json("/apis/metrics.k8s.io/v1beta1/nodes")
                .await
                .map_err(|e| {
                    if e.is_not_found() {
                        metrics_unavailable()
                    } else {
                        e.into()
                    }
                })?;
            let nodes = ctx
                .api(&resources::lookup("nodes").expect("known"), false)
                .list(&ListParams::default())
                .await?;
            let mut t = printers::Table {
                headers: ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                rows: Vec::new(),
            };
            for m in v
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let n = m
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if name.as_deref().is_some_and(|want| want != n) {
                    continue;
                }
                let cpu = m
                    .pointer("/usage/cpu")
                    .and_then(Value::as_str)
                    .and_then(cpu_millis);
                let mem = m
                    .pointer("/usage/memory")
                    .and_then(Value::as_str)
                    .and_then(bytes);
                let node = nodes
                    .items
                    .iter()
                    .find(|x| x.pointer("/metadata/name").and_then(Value::as_str) == Some(n));
                let alloc = |k: &str| {
                    node.and_then(|x| x.pointer(&format!("/status/allocatable/{k}")))
                        .and_then(Value::as_str)
                };
                let pct = |used: Option<f64>, total: Option<f64>| match (used, total) {
                    (Some(u), Some(t)) if t > 0.0 => format!("{}%", (u / t * 100.0).round()),
                    _ => "<unknown>".into(),
                };
                t.rows.push(vec![
                    n.to_string(),
                    cpu.map(|c| format!("{}m", c.round())).unwrap_or_default(),
                    pct(cpu, alloc("cpu").and_then(cpu_millis)),
                    mem.map(|b| format!("{}Mi", (b / 1024.0 / 1024.0).round()))
                        .unwrap_or_default(),
                    pct(mem, alloc("memory").and_then(bytes)),
                ]);
            }
            out.write_all(t.render(false).as_bytes())?;
        }
        TopCommand::Pods {
            name,
            all_namespaces,
            containers,
        } => {
            let path = if all_namespaces {
                "/apis/metrics.k8s.io/v1beta1/pods".to_string()
            } else {
                format!(
                    "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods",
                    ctx.namespace
                )
            };
            let v: Value = ctx.client.get_json(&path).await.map_err(|e| {
                if e.is_not_found() {
                    metrics_unavailable()
                } else {
                    e.into()
                }
            })?;
            let mut headers = vec!["NAME", "CPU(cores)", "MEMORY(bytes)"];
            if containers {
                headers.insert(0, "POD");
            }
            if all_namespaces {
                headers.insert(0, "NAMESPACE");
            }
            let mut t = printers::Table {
                headers: headers.iter().map(|s| s.to_string()).collect(),
                rows: Vec::new(),
            };
            for m in v
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let n = m
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if name.as_deref().is_some_and(|want| want != n) {
                    continue;
                }
                let ns = m
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let usage: Vec<(&str, f64, f64)> = m
                    .get("containers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let cpu = c
                            .pointer("/usage/cpu")
                            .and_then(Value::as_str)
                            .and_then(cpu_millis)
                            .unwrap_or(0.0);
                        let mem = c
                            .pointer("/usage/memory")
                            .and_then(Value::as_str)
                            .and_then(bytes)
                            .unwrap_or(0.0);
                        (
                            c.get("name").and_then(Value::as_str).unwrap_or(""),
                            cpu,
                            mem,
                        )
                    })
                    .collect();
                t.rows
                    .extend(top_pod_rows(ns, n, &usage, all_namespaces, containers));
            }
            out.write_all(t.render(false).as_bytes())?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// cluster-info, version, api-resources, completion
// ---------------------------------------------------------------------------------------------

pub async fn cluster_info(ctx: &Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    // Reach the server first, so an unreachable one is an error.
    let _: Value = ctx.client.get_json("/version").await.or_else(|e| {
        if e.is_not_found() {
            Ok(Value::Null)
        } else {
            Err(e)
        }
    })?;
    writeln!(
        out,
        "kapsel control plane is running at {}",
        ctx.client.base_url()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "To further debug and diagnose cluster problems, use 'kapsel get nodes' and 'kapsel describe node NAME'."
    )?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only the client version.
    #[arg(long)]
    pub client: bool,
    /// yaml or json.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

pub async fn version(ctx: Option<&Ctx>, out: &mut dyn Write) -> anyhow::Result<()> {
    let client_version = format!("v{}", env!("CARGO_PKG_VERSION"));
    writeln!(out, "Client Version: {client_version}")?;
    if let Some(ctx) = ctx {
        let v: Value = ctx.client.get_json("/version").await?;
        let sv = v
            .get("gitVersion")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        writeln!(out, "Server Version: {sv}")?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ApiResourcesArgs {
    /// Only namespaced (true) or cluster-scoped (false) resources.
    #[arg(long)]
    pub namespaced: Option<bool>,
    /// Print names only.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

pub fn api_resources(a: ApiResourcesArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut all = resources::all();
    all.retain(|r| a.namespaced.is_none_or(|n| n == r.namespaced));
    if a.output.as_deref() == Some("name") {
        for r in all {
            writeln!(out, "{}", r.group_resource())?;
        }
        return Ok(());
    }
    let mut t = printers::Table {
        headers: ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        rows: Vec::new(),
    };
    for r in all {
        t.rows.push(vec![
            r.plural.to_string(),
            r.short_names.join(","),
            r.api_version(),
            r.namespaced.to_string(),
            r.kind.to_string(),
        ]);
    }
    out.write_all(t.render(false).as_bytes())?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

pub fn completion(a: CompletionArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "kapsel", out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_for_top() {
        assert_eq!(cpu_millis("250m"), Some(250.0));
        assert_eq!(cpu_millis("2"), Some(2000.0));
        assert_eq!(cpu_millis("1500000n"), Some(1.5));
        assert_eq!(bytes("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(bytes("1G"), Some(1e9));
        assert_eq!(bytes("x"), None);
    }

    #[test]
    fn top_pod_rows_sum_or_split_containers() {
        let mi = 1024.0 * 1024.0;
        let u = [("a", 300.4, 10.0 * mi), ("b", 100.0, 2.0 * mi)];
        let s = |r: &[&str]| r.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let table: [(bool, bool, Vec<Vec<String>>); 3] = [
            (false, false, vec![s(&["p", "400m", "12Mi"])]),
            (true, false, vec![s(&["ns", "p", "400m", "12Mi"])]),
            (
                true,
                true,
                vec![
                    s(&["ns", "p", "a", "300m", "10Mi"]),
                    s(&["ns", "p", "b", "100m", "2Mi"]),
                ],
            ),
        ];
        for (all, containers, want) in table {
            assert_eq!(top_pod_rows("ns", "p", &u, all, containers), want);
        }
    }

    #[test]
    fn literal_and_file_data() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.conf");
        std::fs::write(&f, "x=1").unwrap();
        let d = collect_data(
            &["a=b".into()],
            &[format!("conf={}", f.display()), f.display().to_string()],
            &[],
        )
        .unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[1].0, "conf");
        assert_eq!(d[2].0, "app.conf");
        assert!(collect_data(&["a=b".into(), "a=c".into()], &[], &[]).is_err());
        assert!(collect_data(&["novalue".into()], &[], &[]).is_err());
    }
}
