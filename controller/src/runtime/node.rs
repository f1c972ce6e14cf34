//! Node lifecycle reconciler: one pass over all nodes, leases and pods.

use std::collections::HashMap;
use std::time::Duration;

use kapsel_api::{DeleteOptions, Lease, Node, Pod, Preconditions};

use super::Ctx;
use crate::error::{Error, Result};
use crate::nodelifecycle::{plan, Config, NodeAction};

pub async fn reconcile(ctx: &Ctx) -> Result<Option<Duration>> {
    let nodes: Vec<Node> = ctx.nodes.list().iter().map(|n| (**n).clone()).collect();
    let leases: Vec<Lease> = ctx.leases.list().iter().map(|l| (**l).clone()).collect();
    let pods: Vec<Pod> = ctx
        .pods
        .find(|p| crate::podutil::node_name(p).is_some())
        .iter()
        .map(|p| (**p).clone())
        .collect();
    let cfg = Config {
        grace: chrono::Duration::from_std(ctx.cfg.node_monitor_grace_period)
            .unwrap_or(chrono::Duration::seconds(10)),
        toleration: chrono::Duration::from_std(ctx.cfg.pod_eviction_timeout)
            .unwrap_or(chrono::Duration::seconds(5)),
    };
    let p = plan(&nodes, &leases, &pods, ctx.now(), cfg);
    let node_api = ctx.client.api::<Node>(None);
    let mut latest: HashMap<String, Node> = HashMap::new();
    let mut first_err: Option<Error> = None;
    for a in p.actions {
        let r: Result<()> = async {
            match a {
                NodeAction::SetReady { node, condition } => {
                    let mut n = match latest.get(&node) {
                        Some(n) => n.clone(),
                        None => match ctx.nodes.get("", &node) {
                            Some(n) => (*n).clone(),
                            None => return Ok(()),
                        },
                    };
                    let st = n.status.get_or_insert_with(Default::default);
                    st.conditions.retain(|c| c.type_ != "Ready");
                    st.conditions.push(condition);
                    let w = node_api.replace_status(&node, &n).await?;
                    latest.insert(node, w);
                }
                NodeAction::SetTaints { node, taints } => {
                    let mut n = match latest.get(&node) {
                        Some(n) => n.clone(),
                        None => match ctx.nodes.get("", &node) {
                            Some(n) => (*n).clone(),
                            None => return Ok(()),
                        },
                    };
                    n.spec.get_or_insert_with(Default::default).taints = taints;
                    let w = node_api.replace(&node, &n).await?;
                    latest.insert(node, w);
                }
                NodeAction::MarkPodNotReady { namespace, name } => {
                    let Some(p) = ctx.pods.get(&namespace, &name) else {
                        return Ok(());
                    };
                    let mut p = (*p).clone();
                    if let Some(st) = p.status.as_mut() {
                        for c in st.conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                            c.status = "False".into();
                            c.last_transition_time = Some(kapsel_api::Time(
                                chrono::SubsecRound::trunc_subsecs(ctx.now(), 0),
                            ));
                        }
                    }
                    ctx.client
                        .api::<Pod>(Some(&namespace))
                        .replace_status(&name, &p)
                        .await?;
                }
                NodeAction::EvictPod {
                    namespace,
                    name,
                    uid,
                } => {
                    let dp = DeleteOptions {
                        preconditions: Some(Preconditions {
                            uid: Some(uid),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    match ctx
                        .client
                        .api::<Pod>(Some(&namespace))
                        .delete(&name, &dp)
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                NodeAction::Event { involved, event } => ctx.recorder.record(involved, event),
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(p.requeue_after),
    }
}
