//! The podCIDR allocator loop: watches Nodes, and whenever one has no `spec.podCIDR`, runs the
//! pure [`crate::podcidr::plan`] over all Nodes and writes the assignment (resourceVersion
//! CAS; a conflict just means another pass). Self-contained (its own Node cache), so it can be
//! switched off (`Config::pod_cidr = None`) without touching the other controllers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kapsel_api::client::{Api, Client};
use kapsel_api::watcher::{self, reflector, watcher, WatcherConfig};
use kapsel_api::{Node, Resource};
use tokio::sync::Notify;

use crate::podcidr::{overlay, plan, CidrAction, CidrConfig, NodeCidr};

/// Run forever: allocate podCIDRs from `cfg` to Nodes that have none.
pub async fn run(client: Client, cfg: CidrConfig) {
    let (store, writer) = watcher::store::<Node>();
    let wake = Arc::new(Notify::new());
    let w = wake.clone();
    let events = reflector(
        writer,
        watcher(client.api::<Node>(None), WatcherConfig::default()),
    );
    tokio::spawn(events.for_each(move |_| {
        w.notify_one();
        async {}
    }));
    store.wait_until_ready().await;
    tracing::info!(cluster_cidr = %cfg.cluster, node_mask = cfg.node_mask, "podCIDR allocator starting");
    let api: Api<Node> = client.api(None);
    let mut exhausted_logged = std::collections::HashSet::new();
    // podCIDRs written (or found set) that the cache may not show yet: name → (uid, CIDR).
    let mut written: BTreeMap<String, (String, String)> = BTreeMap::new();
    loop {
        let list = store.list();
        let unset = |n: &Node| {
            n.spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_deref())
                .is_none_or(str::is_empty)
        };
        // Forget what the cache shows now (or whose node is gone or was re-created).
        written.retain(|name, (uid, _)| {
            list.iter()
                .any(|n| n.name() == name.as_str() && n.uid() == uid.as_str() && unset(n))
        });
        let nodes: Vec<NodeCidr> = list
            .iter()
            .map(|n| NodeCidr {
                name: n.name().to_string(),
                pod_cidr: n.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
            })
            .collect();
        let known: BTreeMap<String, String> = written
            .iter()
            .map(|(n, (_, c))| (n.clone(), c.clone()))
            .collect();
        let nodes = overlay(nodes, &known);
        let mut retry = false;
        for a in plan(&cfg, &nodes) {
            match a {
                CidrAction::Assign { node, cidr } => {
                    match assign(&api, &node, &cidr.to_string()).await {
                        Err(e) => {
                            tracing::debug!(node, error = %e, "podCIDR not written; retrying");
                            retry = true;
                        }
                        Ok((uid, have)) => {
                            if have == cidr.to_string() {
                                tracing::info!(node, %cidr, "podCIDR assigned");
                            }
                            written.insert(node, (uid, have));
                        }
                    }
                }
                CidrAction::Exhausted { node } => {
                    if exhausted_logged.insert(node.clone()) {
                        tracing::warn!(node, cluster_cidr = %cfg.cluster, "CIDRNotAvailable: no free podCIDR left");
                    }
                }
            }
        }
        if retry {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        } else {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }
}

/// Set the podCIDR on the freshest copy of the node, unless it got one meanwhile. Returns the
/// node's uid and the podCIDR it has now.
async fn assign(api: &Api<Node>, node: &str, cidr: &str) -> Result<(String, String), crate::Error> {
    let mut n = api.get(node).await?;
    let uid = n.uid().to_string();
    let spec = n.spec.get_or_insert_with(Default::default);
    if let Some(have) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
        return Ok((uid, have.to_string()));
    }
    spec.pod_cidr = Some(cidr.to_string());
    spec.pod_cidrs = vec![cidr.to_string()];
    api.replace(node, &n).await?;
    Ok((uid, cidr.to_string()))
}
