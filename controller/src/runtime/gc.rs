//! Garbage collector reconciler: the graph of Deployments, ReplicaSets and Pods from the caches,
//! [`crate::gc::plan`], and live checks before anything is deleted or rewritten.

use std::time::Duration;

use kapsel_api::client::{ApiResource, DynamicApi};
use kapsel_api::{
    DeleteOptions, Deployment, OwnerReference, Pod, Preconditions, ReplicaSet, Resource,
};
use serde_json::Value;

use super::Ctx;
use crate::error::{Error, Result};
use crate::gc::{plan, GcAction, GcObject, ObjId};

const KINDS: &[&str] = &[Deployment::KIND, ReplicaSet::KIND, Pod::KIND];

fn resource(kind: &str) -> Option<ApiResource> {
    match kind {
        "Deployment" => Some(ApiResource::of::<Deployment>()),
        "ReplicaSet" => Some(ApiResource::of::<ReplicaSet>()),
        "Pod" => Some(ApiResource::of::<Pod>()),
        _ => None,
    }
}

fn dynamic(ctx: &Ctx, kind: &str, ns: &str) -> Option<DynamicApi> {
    Some(ctx.client.dynamic(resource(kind)?, Some(ns)))
}

/// Is the owner really gone? (a live GET, as `isDangling` does)
async fn dangling(ctx: &Ctx, ns: &str, r: &OwnerReference) -> Result<bool> {
    let Some(api) = dynamic(ctx, &r.kind, ns) else {
        return Ok(false);
    };
    match api.get_opt(&r.name).await? {
        None => Ok(true),
        Some(v) => Ok(v["metadata"]["uid"].as_str() != Some(r.uid.as_str())),
    }
}

async fn all_dangling(ctx: &Ctx, ns: &str, refs: &[OwnerReference]) -> Result<bool> {
    for r in refs {
        if !dangling(ctx, ns, r).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn live(ctx: &Ctx, id: &ObjId) -> Result<Option<(DynamicApi, Value)>> {
    let Some(api) = dynamic(ctx, &id.kind, &id.namespace) else {
        return Ok(None);
    };
    match api.get_opt(&id.name).await? {
        Some(v) if v["metadata"]["uid"].as_str() == Some(id.uid.as_str()) => Ok(Some((api, v))),
        _ => Ok(None),
    }
}

pub async fn reconcile(ctx: &Ctx) -> Result<Option<Duration>> {
    let mut objs: Vec<GcObject> = Vec::new();
    objs.extend(ctx.deployments.list().iter().map(|o| GcObject::of(&**o)));
    objs.extend(ctx.rss.list().iter().map(|o| GcObject::of(&**o)));
    objs.extend(ctx.pods.list().iter().map(|o| GcObject::of(&**o)));
    let actions = plan(&objs, KINDS);
    let mut first_err: Option<Error> = None;
    for a in actions {
        if let Err(e) = apply(ctx, a).await {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

async fn apply(ctx: &Ctx, a: GcAction) -> Result<()> {
    match a {
        GcAction::Delete {
            obj,
            propagation,
            dangling,
        } => {
            if !dangling.is_empty() && !all_dangling(ctx, &obj.namespace, &dangling).await? {
                return Ok(());
            }
            let Some(api) = dynamic(ctx, &obj.kind, &obj.namespace) else {
                return Ok(());
            };
            let dp = DeleteOptions {
                propagation_policy: Some(propagation.as_str().into()),
                preconditions: Some(Preconditions {
                    uid: Some(obj.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&obj.name, &dp).await {
                Ok(_) => {
                    tracing::debug!(kind = %obj.kind, name = %obj.name, ?propagation, "garbage collected");
                    Ok(())
                }
                Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        GcAction::RemoveOwnerRefs {
            obj,
            owner_uids,
            dangling,
        } => {
            if !dangling.is_empty() && !all_dangling(ctx, &obj.namespace, &dangling).await? {
                return Ok(());
            }
            let Some((api, mut v)) = live(ctx, &obj).await? else {
                return Ok(());
            };
            if let Some(refs) = v["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| !owner_uids.iter().any(|u| r["uid"].as_str() == Some(u)));
            }
            api.replace(&obj.name, &v, &Default::default()).await?;
            Ok(())
        }
        GcAction::RemoveFinalizer { obj, finalizer } => {
            let Some((api, mut v)) = live(ctx, &obj).await? else {
                return Ok(());
            };
            if let Some(f) = v["metadata"]["finalizers"].as_array_mut() {
                f.retain(|x| x.as_str() != Some(finalizer));
            }
            api.replace(&obj.name, &v, &Default::default()).await?;
            Ok(())
        }
    }
}
