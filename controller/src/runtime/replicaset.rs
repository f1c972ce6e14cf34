//! ReplicaSet reconciler: cache → [`crate::replicaset::plan`] → writes.

use std::time::Duration;

use futures::future::join_all;
use kapsel_api::watcher::ObjectKey;
use kapsel_api::{DeleteOptions, Pod, Preconditions, ReplicaSet};

use super::Ctx;
use crate::error::{Error, Result};
use crate::events::{object_ref, EventSpec};
use crate::podutil;
use crate::replicaset::{plan, Expectations, RsAction};

pub async fn reconcile(ctx: &Ctx, key: &ObjectKey) -> Result<Option<Duration>> {
    let Some(rs) = ctx.rss.get_key(key) else {
        ctx.rs_expectations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        return Ok(None);
    };
    let rs: ReplicaSet = (*rs).clone();
    let uid = rs.metadata.uid().to_string();
    // Only pods this RS controls, and orphans (candidates for adoption).
    let pods: Vec<Pod> = ctx
        .pods
        .list_namespace(&key.namespace)
        .into_iter()
        .filter(|p| match podutil::controller_of(&p.metadata) {
            Some(o) => o.uid == uid,
            None => true,
        })
        .map(|p| (*p).clone())
        .collect();
    let now = ctx.now();
    let satisfied = {
        let mut m = ctx
            .rs_expectations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match m.get_mut(key) {
            Some(e) => {
                e.observe(pods.iter());
                let s = e.satisfied(now);
                if s {
                    m.remove(key);
                }
                s
            }
            None => true,
        }
    };
    let p = plan(&rs, &pods, satisfied, now);
    let api = ctx.api::<Pod>(&key.namespace);
    let rs_ref = object_ref(&rs);
    let mut first_err: Option<Error> = None;
    for a in p.actions {
        match a {
            RsAction::AdoptPod { name, .. } => {
                let Some(cur) = ctx.pods.get(&key.namespace, &name) else {
                    continue;
                };
                let mut pod = (*cur).clone();
                pod.metadata
                    .owner_references
                    .push(podutil::controller_ref(&rs));
                if let Err(e) = api.replace(&name, &pod).await {
                    first_err.get_or_insert(e.into());
                }
            }
            RsAction::ReleasePod { name, .. } => {
                let Some(cur) = ctx.pods.get(&key.namespace, &name) else {
                    continue;
                };
                let mut pod = (*cur).clone();
                pod.metadata.owner_references.retain(|o| o.uid != uid);
                if let Err(e) = api.replace(&name, &pod).await {
                    first_err.get_or_insert(e.into());
                }
            }
            RsAction::CreatePods { count, template } => {
                if let Err(e) = create_pods(ctx, key, &rs, &api, count, *template).await {
                    first_err.get_or_insert(e);
                }
            }
            RsAction::DeletePod { name, uid: puid } => {
                expect(ctx, key, |e| {
                    e.deletes.insert(puid.clone());
                });
                let dp = DeleteOptions {
                    preconditions: Some(Preconditions {
                        uid: Some(puid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(&name, &dp).await {
                    Ok(_) => ctx.recorder.record(
                        rs_ref.clone(),
                        EventSpec::normal("SuccessfulDelete", format!("Deleted pod: {name}")),
                    ),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        expect(ctx, key, |x| {
                            x.deletes.remove(&puid);
                        });
                        ctx.recorder.record(
                            rs_ref.clone(),
                            EventSpec::warning("FailedDelete", format!("Error deleting: {e}")),
                        );
                        first_err.get_or_insert(e.into());
                    }
                }
            }
            RsAction::UpdateStatus(st) => {
                let mut o = rs.clone();
                o.status = Some(*st);
                if let Err(e) = ctx
                    .api::<ReplicaSet>(&key.namespace)
                    .replace_status(&key.name, &o)
                    .await
                {
                    first_err.get_or_insert(e.into());
                }
            }
            RsAction::Event(e) => ctx.recorder.record(rs_ref.clone(), e),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(p.requeue_after),
    }
}

fn expect(ctx: &Ctx, key: &ObjectKey, f: impl FnOnce(&mut Expectations)) {
    let now = ctx.now();
    let mut m = ctx
        .rs_expectations
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let e = m
        .entry(key.clone())
        .or_insert_with(|| Expectations::new(now));
    e.set_at = now;
    f(e);
}

/// Create `count` pods in slow-start batches (1, 2, 4, …) as Kubernetes does, so a failing
/// quota or admission does not cause a storm of doomed requests.
async fn create_pods(
    ctx: &Ctx,
    key: &ObjectKey,
    rs: &ReplicaSet,
    api: &kapsel_api::client::Api<Pod>,
    count: usize,
    template: Pod,
) -> Result<()> {
    let prefix = template
        .metadata
        .generate_name
        .clone()
        .unwrap_or_else(|| format!("{}-", rs.metadata.name()));
    let names: Vec<String> = (0..count)
        .map(|_| podutil::generate_name(&prefix))
        .collect();
    expect(ctx, key, |e| e.creates.extend(names.iter().cloned()));
    let rs_ref = object_ref(rs);
    let mut batch = 1usize;
    let mut done = 0usize;
    while done < count {
        let this: Vec<String> = names[done..(done + batch).min(count)].to_vec();
        let results = join_all(this.iter().map(|n| {
            let mut p = template.clone();
            p.metadata.name = Some(n.clone());
            async move { api.create(&p).await }
        }))
        .await;
        let mut failed = None;
        for (n, r) in this.iter().zip(results) {
            match r {
                Ok(_) => ctx.recorder.record(
                    rs_ref.clone(),
                    EventSpec::normal("SuccessfulCreate", format!("Created pod: {n}")),
                ),
                Err(e) => {
                    expect(ctx, key, |x| {
                        x.creates.remove(n);
                    });
                    ctx.recorder.record(
                        rs_ref.clone(),
                        EventSpec::warning("FailedCreate", format!("Error creating: {e}")),
                    );
                    failed.get_or_insert(e);
                }
            }
        }
        done += this.len();
        if let Some(e) = failed {
            // Skip the rest of the batches; those pods are no longer expected.
            let rest: Vec<String> = names[done..].to_vec();
            expect(ctx, key, |x| {
                for n in &rest {
                    x.creates.remove(n);
                }
            });
            return Err(e.into());
        }
        batch *= 2;
    }
    Ok(())
}
