//! Deployment reconciler: claim ReplicaSets, run [`crate::deployment::plan`], perform its actions
//! in order with resourceVersion CAS (the first failure requeues the deployment).

use std::collections::HashMap;
use std::time::Duration;

use kapsel_api::client::Patch;
use kapsel_api::watcher::ObjectKey;
use kapsel_api::{DeleteOptions, Deployment, Pod, Preconditions, ReplicaSet};
use serde_json::{json, Map, Value};

use super::Ctx;
use crate::deployment::{plan, util, Action};
use crate::error::{Error, Result};
use crate::events::object_ref;
use crate::labels;
use crate::podutil;

pub async fn reconcile(ctx: &Ctx, key: &ObjectKey) -> Result<Option<Duration>> {
    let Some(d) = ctx.deployments.get_key(key) else {
        return Ok(None);
    };
    let d: Deployment = (*d).clone();
    let rs_api = ctx.api::<ReplicaSet>(&key.namespace);
    let sel = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let uid = d.metadata.uid().to_string();
    // Claim ReplicaSets (ControllerRefManager): adopt matching orphans, release non-matching.
    let mut owned: Vec<ReplicaSet> = Vec::new();
    for rs in ctx.rss.list_namespace(&key.namespace) {
        let matches = !labels::is_everything(&sel) && labels::selects(&sel, &rs.metadata.labels);
        match podutil::controller_of(&rs.metadata) {
            Some(o) if o.uid == uid => {
                if matches {
                    owned.push((*rs).clone());
                } else {
                    let mut r = (*rs).clone();
                    r.metadata.owner_references.retain(|o| o.uid != uid);
                    rs_api.replace(r.metadata.name(), &r).await?;
                }
            }
            Some(_) => {}
            None => {
                if matches
                    && d.metadata.deletion_timestamp.is_none()
                    && rs.metadata.deletion_timestamp.is_none()
                {
                    let mut r = (*rs).clone();
                    r.metadata
                        .owner_references
                        .push(podutil::controller_ref(&d));
                    owned.push(rs_api.replace(r.metadata.name(), &r).await?);
                }
            }
        }
    }
    let rs_uids: Vec<&str> = owned.iter().map(|r| r.metadata.uid()).collect();
    let pods: Vec<Pod> = if util::strategy_type(&d) == util::RECREATE {
        ctx.pods
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|p| {
                podutil::controller_of(&p.metadata)
                    .is_some_and(|o| rs_uids.contains(&o.uid.as_str()))
            })
            .map(|p| (*p).clone())
            .collect()
    } else {
        Vec::new()
    };
    let now = ctx.now();
    let p = plan(&d, &owned, &pods, now);
    let dep_api = ctx.api::<Deployment>(&key.namespace);
    let d_ref = object_ref(&d);
    // Latest resourceVersion per ReplicaSet, advanced by our own writes.
    let mut rv: HashMap<String, String> = owned
        .iter()
        .map(|r| {
            (
                r.metadata.name().to_string(),
                r.metadata.resource_version().to_string(),
            )
        })
        .collect();
    let mut cur = d.clone();
    for a in p.actions {
        match a {
            Action::CreateReplicaSet(rs) => {
                match rs_api.create(&rs).await {
                    Ok(c) => {
                        rv.insert(
                            c.metadata.name().to_string(),
                            c.metadata.resource_version().to_string(),
                        );
                    }
                    Err(e) if e.is_already_exists() => {
                        // Slow cache, or a hash collision (`getNewReplicaSet`).
                        let existing = rs_api.get(rs.metadata.name()).await?;
                        let ours = podutil::is_controlled_by(&existing.metadata, &uid)
                            && util::equal_ignore_hash(
                                &util::template(&d),
                                &util::rs_template(&existing),
                            );
                        if !ours {
                            let mut st = cur.status.clone().unwrap_or_default();
                            st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
                            let mut o = cur.clone();
                            o.status = Some(st);
                            dep_api.replace_status(&key.name, &o).await?;
                            ctx.recorder.record(
                            d_ref.clone(),
                            crate::events::EventSpec::warning(
                                "HashCollision",
                                format!("replica set {} exists and is not ours; bumping collisionCount", rs.metadata.name()),
                            ),
                        );
                        }
                        return Err(Error::AlreadyExists(rs.metadata.name().to_string()));
                    }
                    Err(e) => {
                        ctx.recorder.record(
                            d_ref.clone(),
                            crate::events::EventSpec::warning(
                                util::REASON_FAILED_RS_CREATE,
                                format!(
                                    "Failed to create new replica set {:?}: {e}",
                                    rs.metadata.name()
                                ),
                            ),
                        );
                        return Err(e.into());
                    }
                }
            }
            Action::ScaleReplicaSet { name, object, .. }
            | Action::UpdateReplicaSetAnnotations { name, object } => {
                let mut o = *object;
                if let Some(v) = rv.get(&name) {
                    o.metadata.resource_version = Some(v.clone());
                }
                let w = rs_api.replace(&name, &o).await?;
                rv.insert(name, w.metadata.resource_version().to_string());
            }
            Action::DeleteReplicaSet { name, uid } => {
                let dp = DeleteOptions {
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match rs_api.delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Action::UpdateDeploymentAnnotations(ann) => {
                let mut m = Map::new();
                for (k, v) in &ann {
                    m.insert(k.clone(), Value::String(v.clone()));
                }
                for k in cur.metadata.annotations.keys() {
                    if !ann.contains_key(k) {
                        m.insert(k.clone(), Value::Null);
                    }
                }
                let patch = json!({"metadata": {"annotations": m, "resourceVersion": cur.metadata.resource_version}});
                cur = dep_api.patch(&key.name, &Patch::Merge(patch)).await?;
            }
            Action::UpdateDeploymentStatus(st) => {
                let mut o = cur.clone();
                o.status = Some(*st);
                cur = dep_api.replace_status(&key.name, &o).await?;
            }
            Action::UpdateDeploymentSpec(nd) => {
                let mut o = *nd;
                o.metadata.resource_version = cur.metadata.resource_version.clone();
                cur = dep_api.replace(&key.name, &o).await?;
            }
            Action::Event(e) => ctx.recorder.record(d_ref.clone(), e),
        }
    }
    Ok(p.requeue_after)
}
