//! Endpoints reconciler: Service + pods (caches) → [`crate::endpoints::compute_subsets`] →
//! create/replace/delete of the Service's Endpoints.
//!
//! It keeps its own Service, Endpoints and Pod caches (one more pod watch) so it plugs into the
//! manager with one line. A pod change queues the Services that select it before and after the
//! change; an Endpoints change queues its Service (so a hand edit is repaired).

use std::sync::Arc;
use std::time::Duration;

use kapsel_api::client::Client;
use kapsel_api::watcher::{self, Event, ObjectKey, Store, WatcherConfig};
use kapsel_api::{DeleteOptions, Endpoints, Pod, Service};
use tokio::task::JoinSet;

use super::queue::WorkQueue;
use super::{informer, key_of};
use crate::endpoints::{compute_subsets, manages, selects};
use crate::error::Result;

struct State {
    client: Client,
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    pods: Store<Pod>,
    queue: Arc<WorkQueue<ObjectKey>>,
}

/// Run the Endpoints controller with `workers` concurrent reconciles until dropped.
pub async fn run(client: Client, workers: usize, resync: Duration) {
    let (services, svc_w) = watcher::store::<Service>();
    let (endpoints, ep_w) = watcher::store::<Endpoints>();
    let (pods, pods_w) = watcher::store::<Pod>();
    let st = Arc::new(State {
        client: client.clone(),
        services,
        endpoints,
        pods,
        queue: WorkQueue::new(),
    });
    let mut tasks = JoinSet::new();
    {
        let s = st.clone();
        tasks.spawn(informer(
            client.api::<Service>(None),
            WatcherConfig::default(),
            svc_w,
            move |ev, _| {
                for o in ev.objects() {
                    s.queue.add(key_of(o));
                }
            },
        ));
    }
    {
        let s = st.clone();
        tasks.spawn(informer(
            client.api::<Endpoints>(None),
            WatcherConfig::default(),
            ep_w,
            move |ev, _| {
                for o in ev.objects() {
                    s.queue.add(key_of(o));
                }
            },
        ));
    }
    {
        let s = st.clone();
        tasks.spawn(informer(
            client.api::<Pod>(None),
            WatcherConfig::default(),
            pods_w,
            move |ev, old| match ev {
                Event::Restarted(_) => {
                    for svc in s.services.list() {
                        s.queue.add(key_of(&*svc));
                    }
                }
                Event::Applied(p) | Event::Deleted(p) => {
                    for svc in s.services.list_namespace(p.metadata.namespace()) {
                        if selects(&svc, p) || old.as_ref().is_some_and(|o| selects(&svc, o)) {
                            s.queue.add(key_of(&*svc));
                        }
                    }
                }
            },
        ));
    }
    st.services.wait_until_ready().await;
    st.endpoints.wait_until_ready().await;
    st.pods.wait_until_ready().await;
    for svc in st.services.list() {
        st.queue.add(key_of(&*svc));
    }
    for ep in st.endpoints.list() {
        st.queue.add(key_of(&*ep));
    }
    for _ in 0..workers.max(1) {
        let s = st.clone();
        tasks.spawn(async move {
            while let Some(key) = s.queue.get().await {
                match reconcile(&s, &key).await {
                    Ok(()) => s.queue.forget(&key),
                    Err(e) => {
                        tracing::debug!(?key, error = %e, "endpoints: requeue");
                        s.queue.add_rate_limited(key.clone());
                    }
                }
                s.queue.done(&key);
            }
        });
    }
    {
        let s = st.clone();
        tasks.spawn(async move {
            let mut t = tokio::time::interval(resync);
            t.tick().await;
            loop {
                t.tick().await;
                for svc in s.services.list() {
                    s.queue.add(key_of(&*svc));
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn reconcile(st: &State, key: &ObjectKey) -> Result<()> {
    let api = st.client.api::<Endpoints>(Some(&key.namespace));
    let Some(svc) = st.services.get_key(key) else {
        // Service gone: its Endpoints go too.
        if st.endpoints.get_key(key).is_some() {
            match api.delete(&key.name, &DeleteOptions::default()).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(());
    };
    if !manages(&svc) {
        return Ok(());
    }
    let pods = st.pods.list_namespace(&key.namespace);
    let refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
    let subsets = compute_subsets(&svc, &refs);
    match st.endpoints.get_key(key) {
        Some(cur) if cur.subsets == subsets && cur.metadata.labels == svc.metadata.labels => Ok(()),
        Some(cur) => {
            let mut ep = (*cur).clone();
            ep.subsets = subsets;
            ep.metadata.labels = svc.metadata.labels.clone();
            api.replace(&key.name, &ep).await?;
            Ok(())
        }
        None => {
            let mut ep = Endpoints::default();
            ep.metadata.name = Some(key.name.clone());
            ep.metadata.namespace = Some(key.namespace.clone());
            ep.metadata.labels = svc.metadata.labels.clone();
            ep.subsets = subsets;
            // AlreadyExists (the cache is behind) retries once the watch brings it in.
            api.create(&ep).await?;
            Ok(())
        }
    }
}
