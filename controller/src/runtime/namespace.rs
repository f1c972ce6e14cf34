//! Namespace controller (finish deleting a Terminating namespace: delete what is left in it, then
//! drop the `kubernetes` finalizer through `/finalize`) and the periodic ResourceQuota status
//! reconciliation.

use std::time::Duration;

use kapsel_api::client::{ApiResource, ListParams};
use kapsel_api::{
    ConfigMap, DeleteOptions, Deployment, Endpoints, Lease, LimitRange, Namespace, Pod, ReplicaSet,
    Resource, ResourceQuota, Secret, Service,
};
use serde_json::Value;

use super::Ctx;
use crate::error::Result;
use crate::quota;

fn namespaced_kinds() -> Vec<ApiResource> {
    vec![
        ApiResource::of::<Deployment>(),
        ApiResource::of::<ReplicaSet>(),
        ApiResource::of::<Pod>(),
        ApiResource::of::<Service>(),
        ApiResource::of::<Endpoints>(),
        ApiResource::of::<ConfigMap>(),
        ApiResource::of::<Secret>(),
        ApiResource::of::<LimitRange>(),
        ApiResource::of::<ResourceQuota>(),
        ApiResource::of::<Lease>(),
    ]
}

pub async fn reconcile(ctx: &Ctx, name: &str) -> Result<Option<Duration>> {
    let Some(ns) = ctx.namespaces.get("", name) else {
        return Ok(None);
    };
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(None);
    }
    let mut remaining = 0usize;
    for r in namespaced_kinds() {
        let api = ctx.client.dynamic(r, Some(name));
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        for o in list.items {
            remaining += 1;
            let n = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if o["metadata"]["deletionTimestamp"].is_null() {
                let dp = DeleteOptions {
                    propagation_policy: Some("Background".into()),
                    ..Default::default()
                };
                match api.delete(&n, &dp).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    if remaining > 0 {
        return Ok(Some(Duration::from_secs(2)));
    }
    let has = ns
        .spec
        .as_ref()
        .is_some_and(|s| s.finalizers.iter().any(|f| f == "kubernetes"));
    if has {
        let mut v = serde_json::to_value(&*ns)?;
        if let Some(f) = v
            .pointer_mut("/spec/finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|x| x.as_str() != Some("kubernetes"));
        }
        ctx.client
            .dynamic(ApiResource::of::<Namespace>(), None)
            .replace_subresource(name, "finalize", &v)
            .await?;
    }
    Ok(None)
}

/// Every `quota_resync`, recompute `status.used` of each ResourceQuota from a consistent list of
/// its namespace's pods and write it (CAS) when it drifted.
pub async fn quota_loop(ctx: std::sync::Arc<Ctx>) {
    let mut t = tokio::time::interval(ctx.cfg.quota_resync);
    loop {
        t.tick().await;
        let mut namespaces: Vec<String> = ctx
            .quotas
            .list()
            .iter()
            .map(|q| q.namespace().to_string())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        for ns in namespaces {
            if let Err(e) = reconcile_quotas(&ctx, &ns).await {
                tracing::debug!(namespace = %ns, error = %e, "quota status not reconciled");
            }
        }
    }
}

async fn count(ctx: &Ctx, r: ApiResource, ns: &str) -> Result<(i64, u64)> {
    let l = ctx
        .client
        .dynamic(r, Some(ns))
        .list(&ListParams::default())
        .await?;
    let rv = l
        .metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((l.items.len() as i64, rv))
}

pub async fn reconcile_quotas(ctx: &Ctx, ns: &str) -> Result<()> {
    // A consistent snapshot: every list answers at some revision; only quotas not written after
    // the oldest of them are healed (a newer quota already includes changes we may not see).
    let pods = ctx.api::<Pod>(ns).list(&ListParams::default()).await?;
    let mut min_rv: u64 = pods
        .metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut usage = quota::pod_usage(&pods.items);
    let counted: [(ApiResource, Option<&str>); 6] = [
        (ApiResource::of::<Deployment>(), None),
        (ApiResource::of::<ReplicaSet>(), None),
        (ApiResource::of::<Service>(), Some("services")),
        (ApiResource::of::<ConfigMap>(), Some("configmaps")),
        (ApiResource::of::<Secret>(), Some("secrets")),
        (ApiResource::of::<ResourceQuota>(), Some("resourcequotas")),
    ];
    for (r, legacy) in counted {
        let gr = r.group_resource();
        let (n, rv) = count(ctx, r, ns).await?;
        min_rv = min_rv.min(rv);
        let v = kapsel_api::quantity::QuantityValue::from_units(n, Default::default());
        usage.insert(format!("count/{gr}"), v);
        if let Some(l) = legacy {
            usage.insert(l.to_string(), v);
        }
    }
    let quotas = ctx
        .api::<ResourceQuota>(ns)
        .list(&ListParams::default())
        .await?;
    for q in quotas.items {
        let qrv: u64 = q.metadata.resource_version().parse().unwrap_or(u64::MAX);
        if qrv > min_rv {
            continue;
        }
        if let Some(used) = quota::desired_used(&q, &usage) {
            let mut o = q.clone();
            let st = o.status.get_or_insert_with(Default::default);
            st.hard = q.spec.as_ref().map(|s| s.hard.clone()).unwrap_or_default();
            st.used = used;
            tracing::info!(namespace = %ns, quota = %q.name(), "healing drifted ResourceQuota status");
            ctx.api::<ResourceQuota>(ns)
                .replace_status(q.name(), &o)
                .await?;
        }
    }
    Ok(())
}
