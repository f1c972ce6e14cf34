//! `kapsel rollout status|history|undo|restart|pause|resume`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use kapsel_api::client::{ListParams, Patch, PatchParams, PostParams};
use kapsel_api::labels::{POD_TEMPLATE_HASH, RESTARTED_AT, REVISION};
use kapsel_api::watcher::{watcher, Event, WatcherConfig};
use kapsel_api::Deployment;
use serde_json::{json, Value};

use super::{parse_duration, Ctx};
use crate::resources::{self, ResourceInfo};

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Watch the rollout of a deployment until it completes.
    Status(StatusArgs),
    /// Show the revisions of a deployment.
    History(HistoryArgs),
    /// Roll back to a previous revision.
    Undo(UndoArgs),
    /// Restart every pod of a deployment (a new rollout).
    Restart(TargetArgs),
    /// Pause a deployment: template changes do not roll out until resumed.
    Pause(TargetArgs),
    /// Resume a paused deployment.
    Resume(TargetArgs),
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// deployment/NAME, or `deployment NAME`.
    #[arg(required = true, num_args = 1..=2, value_name = "TYPE/NAME")]
    pub target: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Give up after this long (e.g. 5m); 0 waits forever.
    #[arg(long, default_value = "0s")]
    pub timeout: String,
    /// Keep watching until the rollout finishes.
    #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Show the pod template of one revision.
    #[arg(long, default_value_t = 0)]
    pub revision: i64,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The revision to roll back to (0: the previous one).
    #[arg(long, default_value_t = 0)]
    pub to_revision: i64,
}

fn target(t: &TargetArgs) -> anyhow::Result<(ResourceInfo, String)> {
    let (info, name) = match t.target.as_slice() {
        [one] => resources::split_type_name(one).ok_or_else(|| {
            if one.contains('/') {
                resources::unknown_type_error(one.split('/').next().unwrap_or(""))
            } else {
                anyhow!("you must specify a resource name as TYPE/NAME, e.g. deployment/{one}")
            }
        })?,
        [ty, name] => (
            resources::lookup(ty).ok_or_else(|| resources::unknown_type_error(ty))?,
            name.clone(),
        ),
        _ => bail!("required resource not specified"),
    };
    if info.plural != "deployments" {
        bail!(
            "no rollout support for {} \"{name}\"",
            info.group_resource()
        );
    }
    Ok((info, name))
}

/// Where a rollout stands, from kubectl's rules (evaluated in this order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutState {
    Waiting(String),
    Done(String),
    Failed(String),
}

pub fn rollout_state(d: &Value) -> RolloutState {
    let name = d
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let g = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let generation = g("/metadata/generation");
    let observed = g("/status/observedGeneration");
    if generation > observed {
        return RolloutState::Waiting(
            "Waiting for deployment spec update to be observed...".into(),
        );
    }
    let deadline = d
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Progressing")
                && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
        });
    if deadline {
        return RolloutState::Failed(format!(
            "deployment \"{name}\" exceeded its progress deadline"
        ));
    }
    let desired = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let updated = g("/status/updatedReplicas");
    let replicas = g("/status/replicas");
    let available = g("/status/availableReplicas");
    if updated < desired {
        return RolloutState::Waiting(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {updated} out of {desired} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return RolloutState::Waiting(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return RolloutState::Waiting(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    RolloutState::Done(format!("deployment \"{name}\" successfully rolled out"))
}

pub async fn run(ctx: &Ctx, cmd: RolloutCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        RolloutCommand::Status(a) => status(ctx, a, out).await,
        RolloutCommand::History(a) => history(ctx, a, out).await,
        RolloutCommand::Undo(a) => undo(ctx, a, out).await,
        RolloutCommand::Restart(a) => {
            let (info, name) = target(&a)?;
            let api = ctx.api(&info, false);
            let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
            let patch =
                json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
            api.patch(&name, &Patch::Merge(patch), &PatchParams::default())
                .await?;
            writeln!(out, "{}/{name} restarted", info.type_name())?;
            Ok(())
        }
        RolloutCommand::Pause(a) => pause(ctx, a, true, out).await,
        RolloutCommand::Resume(a) => pause(ctx, a, false, out).await,
    }
}

/// `rollout pause` (`pause = true`) and `rollout resume`.
pub async fn pause(
    ctx: &Ctx,
    a: TargetArgs,
    pause: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (info, name) = target(&a)?;
    let api = ctx.api(&info, false);
    let live = api.get(&name).await?;
    let paused = live.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let word = if pause { "paused" } else { "resumed" };
    if paused == pause {
        if pause {
            bail!("{}/{name} is already paused", info.type_name());
        }
        bail!("{}/{name} is not paused", info.type_name());
    }
    let patch = json!({"spec": {"paused": if pause { Value::Bool(true) } else { Value::Null }}});
    api.patch(&name, &Patch::Merge(patch), &PatchParams::default())
        .await?;
    writeln!(out, "{}/{name} {word}", info.type_name())?;
    Ok(())
}

async fn status(ctx: &Ctx, a: StatusArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (info, name) = target(&a.target)?;
    let timeout = parse_duration(&a.timeout)?;
    let dynamic = ctx.api(&info, false);
    // A clear NotFound before watching.
    let first = dynamic.get(&name).await?;
    if !a.watch {
        match rollout_state(&first) {
            RolloutState::Waiting(m) | RolloutState::Done(m) => writeln!(out, "{m}")?,
            RolloutState::Failed(m) => bail!(m),
        }
        return Ok(());
    }
    let api = ctx.client.api::<Deployment>(Some(&ctx.namespace));
    let cfg = WatcherConfig::default().fields(&format!("metadata.name={name}"));
    let mut events = Box::pin(watcher(api, cfg));
    let tty = std::io::stdout().is_terminal();
    let bar = tty.then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    });
    let mut progress = Progress {
        bar,
        last: String::new(),
    };
    if let Some(r) = progress.report(rollout_state(&first), out)? {
        return r;
    }
    let follow = async {
        while let Some(ev) = events.next().await {
            let d = match ev {
                Ok(Event::Restarted(v)) => {
                    match v.into_iter().find(|d| d.metadata.name() == name) {
                        Some(d) => d,
                        None => bail!("deployments.apps \"{name}\" not found"),
                    }
                }
                Ok(Event::Applied(d)) => d,
                Ok(Event::Deleted(_)) => bail!("object has been deleted"),
                Err(e) => {
                    let code = e.code().unwrap_or(0);
                    if (400..500).contains(&code) && code != 410 && code != 429 {
                        return Err(e.into());
                    }
                    continue;
                }
            };
            let v = serde_json::to_value(&d)?;
            if let Some(r) = progress.report(rollout_state(&v), out)? {
                return r;
            }
        }
        bail!("watch ended unexpectedly")
    };
    let result = if timeout.is_zero() {
        follow.await
    } else {
        match tokio::time::timeout(timeout, follow).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("timed out waiting for the condition")),
        }
    };
    progress.clear();
    result
}

/// Shows the latest rollout message: a spinner on a terminal, one line per change otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last: String,
}

impl Progress {
    /// `Some(result)` once the rollout finished or failed.
    fn report(
        &mut self,
        state: RolloutState,
        out: &mut dyn Write,
    ) -> anyhow::Result<Option<anyhow::Result<()>>> {
        match state {
            RolloutState::Waiting(m) => {
                if m != self.last {
                    match &self.bar {
                        Some(pb) => pb.set_message(m.clone()),
                        None => {
                            writeln!(out, "{m}")?;
                            out.flush()?;
                        }
                    }
                    self.last = m;
                }
                Ok(None)
            }
            RolloutState::Done(m) => {
                self.clear();
                writeln!(out, "{m}")?;
                Ok(Some(Ok(())))
            }
            RolloutState::Failed(m) => {
                self.clear();
                Ok(Some(Err(anyhow!(m))))
            }
        }
    }

    fn clear(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

/// The ReplicaSets of a deployment with their revision numbers, oldest first.
async fn revisions(ctx: &Ctx, deploy: &Value) -> anyhow::Result<Vec<(i64, Value)>> {
    let rs_info = resources::lookup("replicasets").expect("known type");
    let api = ctx.api(&rs_info, false);
    let uid = deploy
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let list = api.list(&ListParams::default()).await?;
    let mut out: Vec<(i64, Value)> = list
        .items
        .into_iter()
        .filter(|rs| {
            rs.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|o| o.get("uid").and_then(Value::as_str) == Some(uid) && !uid.is_empty())
        })
        .filter_map(|rs| {
            let rev = rs
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(REVISION))
                .and_then(Value::as_str)
                .and_then(|r| r.parse::<i64>().ok())?;
            Some((rev, rs))
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    Ok(out)
}

async fn history(ctx: &Ctx, a: HistoryArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (info, name) = target(&a.target)?;
    let d = ctx.api(&info, false).get(&name).await?;
    let revs = revisions(ctx, &d).await?;
    if a.revision > 0 {
        let Some((_, rs)) = revs.iter().find(|(r, _)| *r == a.revision) else {
            bail!("unable to find the specified revision");
        };
        writeln!(
            out,
            "{}/{name} with revision #{}",
            info.type_name(),
            a.revision
        )?;
        writeln!(out, "Pod Template:")?;
        let mut t = rs.pointer("/spec/template").cloned().unwrap_or(Value::Null);
        strip_hash(&mut t);
        for line in crate::printers::to_yaml(&t).lines() {
            writeln!(out, "  {line}")?;
        }
        return Ok(());
    }
    writeln!(out, "{}/{name} ", info.type_name())?;
    if revs.is_empty() {
        writeln!(out, "No rollout history found.")?;
        return Ok(());
    }
    let mut lines = vec![("REVISION".to_string(), "CHANGE-CAUSE".to_string())];
    for (r, rs) in &revs {
        let cause = rs
            .pointer("/metadata/annotations")
            .and_then(|a| a.get("kubernetes.io/change-cause"))
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        lines.push((r.to_string(), cause.to_string()));
    }
    let w = lines.iter().map(|(a, _)| a.len()).max().unwrap_or(0);
    for (a, b) in lines {
        writeln!(out, "{a:<w$}  {b}")?;
    }
    writeln!(out)?;
    Ok(())
}

fn strip_hash(template: &mut Value) {
    if let Some(l) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(POD_TEMPLATE_HASH);
    }
}

async fn undo(ctx: &Ctx, a: UndoArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (info, name) = target(&a.target)?;
    let api = ctx.api(&info, false);
    let mut d = api.get(&name).await?;
    let revs = revisions(ctx, &d).await?;
    if revs.is_empty() {
        bail!("no rollout history found for deployment \"{name}\"");
    }
    let current = d
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse::<i64>().ok())
        .unwrap_or_else(|| revs.last().map(|(r, _)| *r).unwrap_or(0));
    let chosen = if a.to_revision > 0 {
        revs.iter()
            .find(|(r, _)| *r == a.to_revision)
            .ok_or_else(|| {
                anyhow!(
                    "unable to find specified revision {} in history",
                    a.to_revision
                )
            })?
    } else {
        revs.iter()
            .rev()
            .find(|(r, _)| *r < current)
            .ok_or_else(|| anyhow!("no revision found for deployment \"{name}\""))?
    };
    let mut template = chosen
        .1
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    strip_hash(&mut template);
    let mut live_template = d.pointer("/spec/template").cloned().unwrap_or(Value::Null);
    strip_hash(&mut live_template);
    if crate::apply::contains(&live_template, &template)
        && crate::apply::contains(&template, &live_template)
    {
        writeln!(
            out,
            "{}/{name} skipped rollback (current template already matches revision {})",
            info.type_name(),
            chosen.0
        )?;
        return Ok(());
    }
    // Replace the whole template (a merge patch would merge maps into the current one).
    if let Some(spec) = d.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("template".into(), template);
    }
    api.replace(&name, &d, &PostParams::default()).await?;
    writeln!(out, "{}/{name} rolled back", info.type_name())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_rules_in_kubectl_order() {
        let d = |v: Value| rollout_state(&v);
        assert_eq!(
            d(
                json!({"metadata": {"name": "w", "generation": 2}, "status": {"observedGeneration": 1}})
            ),
            RolloutState::Waiting("Waiting for deployment spec update to be observed...".into())
        );
        assert_eq!(
            d(
                json!({"metadata": {"name": "w", "generation": 1}, "spec": {"replicas": 2},
                "status": {"observedGeneration": 1, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}})
            ),
            RolloutState::Failed("deployment \"w\" exceeded its progress deadline".into())
        );
        assert_eq!(
            d(json!({"metadata": {"name": "w", "generation": 1}, "spec": {"replicas": 2},
                "status": {"observedGeneration": 1, "updatedReplicas": 0}})),
            RolloutState::Waiting("Waiting for deployment \"w\" rollout to finish: 0 out of 2 new replicas have been updated...".into())
        );
        assert_eq!(
            d(json!({"metadata": {"name": "w", "generation": 1}, "spec": {"replicas": 2},
                "status": {"observedGeneration": 1, "updatedReplicas": 2, "replicas": 3}})),
            RolloutState::Waiting("Waiting for deployment \"w\" rollout to finish: 1 old replicas are pending termination...".into())
        );
        assert_eq!(
            d(json!({"metadata": {"name": "w", "generation": 1}, "spec": {"replicas": 2},
                "status": {"observedGeneration": 1, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 1}})),
            RolloutState::Waiting("Waiting for deployment \"w\" rollout to finish: 1 of 2 updated replicas are available...".into())
        );
        assert_eq!(
            d(
                json!({"metadata": {"name": "w", "generation": 1}, "spec": {"replicas": 2},
                "status": {"observedGeneration": 1, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2}})
            ),
            RolloutState::Done("deployment \"w\" successfully rolled out".into())
        );
    }
}
