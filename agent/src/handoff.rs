//! Zero-downtime endpoint hand-off: a terminating pod leaves every node's Service rules before
//! its containers are told to stop.
//!
//! Kubernetes sends SIGTERM while kube-proxies may still route new connections to the pod
//! (hence the usual preStop `sleep`). kapsel closes that window:
//!
//! 1. **Publication.** After each successful nftables write, the node's service proxy
//!    ([`crate::net::proxy`]) records the Endpoints resourceVersions its rules are built from;
//!    [`publish`] writes their maximum (the *watermark*) to the node's own Node object as the
//!    annotation [`PROGRAMMED_ANNOTATION`]. resourceVersion is one cluster-wide revision and a
//!    watch delivers events in revision order, so a proxy whose Endpoints view contains an
//!    object at revision `W` has seen every Endpoints change up to `W`: "watermark ≥ X" means
//!    "the change at revision X is in the live rules".
//! 2. **Wait.** Before preStop/SIGTERM of a pod being deleted, [`wait`] reads (fresh, from the
//!    API server) the Endpoints of every Service selecting the pod until none lists the pod as
//!    ready (the endpoints controller drops terminating pods), then waits until every Ready
//!    node that runs a proxy (has published) reports a watermark at or beyond those Endpoints'
//!    revisions. Bounded by `min(--endpoint-handoff-timeout, grace period)`; hitting the bound
//!    is logged and recorded as a Warning Event (`EndpointHandoffTimeout`). Pods no Service
//!    selects do not wait; nodes not Ready are not waited for.
//!
//! The decision ([`decide`]) is a pure function of the pod, the Endpoints and the Nodes,
//! table-tested below; [`wait`] only fetches and polls.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kapsel_api::client::{Client, ListParams, Patch};
use kapsel_api::{Endpoints, Node, Pod, Service};
use serde_json::json;
use tokio::sync::watch;

use crate::net::proxy::Programmed;

/// Node annotation: the Endpoints revision the node's service proxy has programmed up to.
pub const PROGRAMMED_ANNOTATION: &str = "kapsel.dev/proxy-programmed";

/// How often [`wait`] re-reads Endpoints and Nodes.
pub const POLL: Duration = Duration::from_millis(50);

/// The revision a programmed snapshot reflects every Endpoints change up to (pure).
pub fn watermark(p: &Programmed) -> u64 {
    p.endpoints
        .values()
        .filter_map(|rv| rv.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Publish the node proxy's watermark on the Node (annotation [`PROGRAMMED_ANNOTATION`])
/// whenever it moves on. Runs until `rx`'s sender is dropped.
pub async fn publish(client: Client, node: String, mut rx: watch::Receiver<Programmed>) {
    let nodes = client.api::<Node>(None);
    let mut published = 0u64;
    let mut high = 0u64;
    loop {
        // Monotonic: a deleted Endpoints object must not move the published mark back.
        high = high.max(watermark(&rx.borrow_and_update()));
        if high > published {
            let patch = Patch::Merge(json!({
                "metadata": {"annotations": {PROGRAMMED_ANNOTATION: high.to_string()}}
            }));
            match nodes.patch(&node, &patch).await {
                Ok(_) => published = high,
                Err(e) => {
                    // Not registered yet, or the API server is away: try again soon.
                    tracing::debug!(error = %e, "publishing the programmed endpoints revision");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Services of the pod's namespace whose (map) selector picks the pod (pure).
pub fn selecting<'a>(pod: &Pod, services: &'a [Service]) -> Vec<&'a Service> {
    services
        .iter()
        .filter(|s| {
            s.metadata.namespace() == pod.metadata.namespace()
                && s.spec.as_ref().is_some_and(|spec| {
                    spec.type_.as_deref() != Some("ExternalName")
                        && !spec.selector.is_empty()
                        && spec
                            .selector
                            .iter()
                            .all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
                })
        })
        .collect()
}

/// Whether the Endpoints list the pod among the ready addresses (the ones proxies route to),
/// by target reference, else by IP (pure).
pub fn lists_pod(ep: &Endpoints, uid: &str, ip: Option<&str>) -> bool {
    ep.subsets.iter().flat_map(|s| &s.addresses).any(|a| {
        match a.target_ref.as_ref().and_then(|r| r.uid.as_deref()) {
            Some(u) if !u.is_empty() => u == uid,
            _ => ip.is_some_and(|ip| a.ip == ip),
        }
    })
}

fn node_ready(n: &Node) -> bool {
    n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// The watermark a node has published (`None`: it runs no service proxy, or not yet).
pub fn published(n: &Node) -> Option<u64> {
    n.metadata
        .annotations
        .get(PROGRAMMED_ANNOTATION)
        .and_then(|v| v.parse().ok())
}

/// Where a hand-off stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// Every proxy has dropped the pod: stop it.
    Done,
    /// These Endpoints (names) still list the pod as ready.
    Endpoints(Vec<String>),
    /// These Ready nodes have not programmed revision `revision` yet (name, published).
    Nodes {
        revision: u64,
        pending: Vec<(String, u64)>,
    },
}

/// The hand-off decision (pure). `endpoints`: the current Endpoints of the Services that
/// select the pod (a Service without Endpoints has none to wait for).
pub fn decide(uid: &str, ip: Option<&str>, endpoints: &[Endpoints], nodes: &[Node]) -> Handoff {
    let listing: Vec<String> = endpoints
        .iter()
        .filter(|e| lists_pod(e, uid, ip))
        .map(|e| e.metadata.name().to_string())
        .collect();
    if !listing.is_empty() {
        return Handoff::Endpoints(listing);
    }
    let revision = endpoints
        .iter()
        .filter_map(|e| e.metadata.resource_version().parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let pending: Vec<(String, u64)> = nodes
        .iter()
        .filter(|n| node_ready(n))
        .filter_map(|n| {
            let w = published(n)?;
            (w < revision).then(|| (n.metadata.name().to_string(), w))
        })
        .collect();
    if pending.is_empty() {
        Handoff::Done
    } else {
        Handoff::Nodes { revision, pending }
    }
}

/// The hand-off bound for a pod with grace period `grace` (pure): no wait without grace.
pub fn bound(configured: Duration, grace: Duration) -> Duration {
    configured.min(grace)
}

/// Wait (up to `limit`) until no node's proxy routes to `pod` any more. Returns the last state:
/// [`Handoff::Done`], or what was still pending when the bound was hit.
pub async fn wait(client: &Client, pod: &Pod, ip: Option<&str>, limit: Duration) -> Handoff {
    let deadline = Instant::now() + limit;
    let ns = pod.metadata.namespace();
    let uid = pod.metadata.uid();
    let mut state = Handoff::Endpoints(vec!["(not read yet)".into()]);
    let mut names: Option<Vec<String>> = None;
    loop {
        if names.is_none() {
            match client
                .api::<Service>(Some(ns))
                .list(&ListParams::default())
                .await
            {
                Ok(l) => {
                    names = Some(
                        selecting(pod, &l.items)
                            .iter()
                            .map(|s| s.metadata.name().to_string())
                            .collect(),
                    )
                }
                Err(e) => tracing::debug!(error = %e, "hand-off: listing services"),
            }
        }
        if let Some(names) = &names {
            if names.is_empty() {
                return Handoff::Done; // in no Service: nothing routes to it
            }
            if let Some(s) = poll(client, ns, uid, ip, names).await {
                state = s;
                if state == Handoff::Done {
                    return state;
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return state;
        }
        tokio::time::sleep(POLL.min(left)).await;
    }
}

/// One fresh read of the Endpoints and Nodes, decided (`None`: a read failed).
async fn poll(
    client: &Client,
    ns: &str,
    uid: &str,
    ip: Option<&str>,
    names: &[String],
) -> Option<Handoff> {
    let eps = client.api::<Endpoints>(Some(ns));
    let mut current = Vec::new();
    for n in names {
        match eps.get(n).await {
            Ok(e) => current.push(e),
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::debug!(error = %e, "hand-off: reading endpoints");
                return None;
            }
        }
    }
    // The Endpoints first, then the Nodes: the nodes' marks are at least as fresh.
    let nodes = match client.api::<Node>(None).list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            tracing::debug!(error = %e, "hand-off: listing nodes");
            return None;
        }
    };
    Some(decide(uid, ip, &current, &nodes))
}

/// A readable account of a pending hand-off (events, logs).
pub fn describe(h: &Handoff) -> String {
    match h {
        Handoff::Done => "done".into(),
        Handoff::Endpoints(names) => {
            format!("Endpoints {} still list the pod", names.join(", "))
        }
        Handoff::Nodes { revision, pending } => {
            let nodes: BTreeMap<&str, u64> =
                pending.iter().map(|(n, w)| (n.as_str(), *w)).collect();
            format!("nodes have not programmed endpoints revision {revision}: {nodes:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{Condition, EndpointAddress, EndpointSubset, ObjectMeta, ObjectReference};
    use kapsel_api::{NodeStatus, ServiceSpec};

    fn pod(labels: &[(&str, &str)]) -> Pod {
        Pod::with_meta(ObjectMeta {
            name: Some("p".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
    }

    fn svc(name: &str, ns: &str, ty: &str, selector: &[(&str, &str)]) -> Service {
        let mut s = Service::with_meta(ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        });
        s.spec = Some(ServiceSpec {
            type_: Some(ty.into()),
            selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        });
        s
    }

    /// Endpoints at revision `rv` with ready addresses (ip, target uid) and not-ready ones.
    fn ep(name: &str, rv: u64, ready: &[(&str, Option<&str>)], not_ready: &[&str]) -> Endpoints {
        let mut e = Endpoints::with_meta(ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            resource_version: Some(rv.to_string()),
            ..Default::default()
        });
        let addr = |ip: &str, uid: Option<&str>| EndpointAddress {
            ip: ip.into(),
            target_ref: uid.map(|u| ObjectReference {
                kind: Some("Pod".into()),
                uid: Some(u.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        e.subsets = vec![EndpointSubset {
            addresses: ready.iter().map(|(ip, uid)| addr(ip, *uid)).collect(),
            not_ready_addresses: not_ready.iter().map(|ip| addr(ip, Some("u1"))).collect(),
            ports: vec![],
        }];
        e
    }

    fn node(name: &str, ready: &str, mark: Option<u64>) -> Node {
        let mut n = Node::with_meta(ObjectMeta {
            name: Some(name.into()),
            annotations: mark
                .map(|m| (PROGRAMMED_ANNOTATION.to_string(), m.to_string()))
                .into_iter()
                .collect(),
            ..Default::default()
        });
        n.status = Some(NodeStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ready.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        n
    }

    #[test]
    fn watermark_is_the_highest_programmed_revision() {
        let mut p = Programmed::default();
        assert_eq!(watermark(&p), 0);
        p.endpoints.insert("default/a".into(), "17".into());
        p.endpoints.insert("default/b".into(), "9".into());
        p.endpoints.insert("default/c".into(), String::new());
        assert_eq!(watermark(&p), 17);
    }

    #[test]
    fn services_selecting_the_pod() {
        let p = pod(&[("app", "web"), ("tier", "fe")]);
        let services = vec![
            svc("web", "default", "NodePort", &[("app", "web")]),
            svc(
                "both",
                "default",
                "ClusterIP",
                &[("app", "web"), ("tier", "fe")],
            ),
            svc("other", "default", "ClusterIP", &[("app", "db")]),
            svc("no-selector", "default", "ClusterIP", &[]),
            svc("elsewhere", "prod", "ClusterIP", &[("app", "web")]),
            svc("ext", "default", "ExternalName", &[("app", "web")]),
        ];
        let got: Vec<&str> = selecting(&p, &services)
            .iter()
            .map(|s| s.metadata.name())
            .collect();
        assert_eq!(got, vec!["web", "both"]);
    }

    #[test]
    fn decisions() {
        let ip = Some("10.88.0.5");
        struct Case {
            name: &'static str,
            endpoints: Vec<Endpoints>,
            nodes: Vec<Node>,
            want: Handoff,
        }
        let cases = vec![
            Case {
                name: "no Endpoints (in no Service, or not created): nothing to wait for",
                endpoints: vec![],
                nodes: vec![node("n1", "True", Some(5))],
                want: Handoff::Done,
            },
            Case {
                name: "still listed as ready (by uid): wait for the endpoints controller",
                endpoints: vec![
                    ep(
                        "web",
                        10,
                        &[("10.88.0.5", Some("u1")), ("10.88.1.2", Some("u2"))],
                        &[],
                    ),
                    ep("api", 11, &[], &[]),
                ],
                nodes: vec![node("n1", "True", Some(20))],
                want: Handoff::Endpoints(vec!["web".into()]),
            },
            Case {
                name: "listed by IP when the address has no target reference",
                endpoints: vec![ep("web", 10, &[("10.88.0.5", None)], &[])],
                nodes: vec![],
                want: Handoff::Endpoints(vec!["web".into()]),
            },
            Case {
                name: "a reused IP with another pod's uid is not this pod",
                endpoints: vec![ep("web", 10, &[("10.88.0.5", Some("u9"))], &[])],
                nodes: vec![node("n1", "True", Some(10))],
                want: Handoff::Done,
            },
            Case {
                name: "not-ready addresses are not routed to: no wait for them",
                endpoints: vec![ep("web", 12, &[("10.88.1.2", Some("u2"))], &["10.88.0.5"])],
                nodes: vec![node("n1", "True", Some(12))],
                want: Handoff::Done,
            },
            Case {
                name: "removed at 12; one Ready node still at 11",
                endpoints: vec![
                    ep("web", 12, &[("10.88.1.2", Some("u2"))], &[]),
                    ep("api", 7, &[], &[]),
                ],
                nodes: vec![
                    node("n1", "True", Some(12)),
                    node("n2", "True", Some(11)),
                    node("n3", "True", Some(30)),
                ],
                want: Handoff::Nodes {
                    revision: 12,
                    pending: vec![("n2".into(), 11)],
                },
            },
            Case {
                name: "the highest revision among the Services counts",
                endpoints: vec![ep("web", 12, &[], &[]), ep("api", 15, &[], &[])],
                nodes: vec![node("n1", "True", Some(13))],
                want: Handoff::Nodes {
                    revision: 15,
                    pending: vec![("n1".into(), 13)],
                },
            },
            Case {
                name: "not-Ready and proxy-less nodes are not waited for",
                endpoints: vec![ep("web", 12, &[], &[])],
                nodes: vec![
                    node("n1", "True", Some(12)),
                    node("down", "False", Some(3)),
                    node("unknown", "Unknown", Some(3)),
                    node("hollow", "True", None),
                ],
                want: Handoff::Done,
            },
        ];
        for c in cases {
            assert_eq!(
                decide("u1", ip, &c.endpoints, &c.nodes),
                c.want,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn bound_is_the_smaller_of_flag_and_grace() {
        let s = Duration::from_secs;
        assert_eq!(bound(s(10), s(30)), s(10));
        assert_eq!(bound(s(10), s(2)), s(2));
        assert_eq!(bound(s(10), s(0)), s(0));
        assert_eq!(bound(s(0), s(30)), s(0)); // turned off
    }
}
