//! Endpoints controller decision core (`pkg/controller/endpoint/endpoints_controller.go`): the
//! subsets of a Service's Endpoints from the pods its selector picks.
//!
//! A pod counts once it has an IP and is neither finished nor being deleted (a terminating pod
//! leaves the endpoints at once, so proxies stop sending it new connections before its
//! containers are told to stop). Ready pods (condition `Ready=True`, or any pod when the Service
//! sets `publishNotReadyAddresses`) go to `addresses`, the others to `notReadyAddresses`. Each
//! Service port's `targetPort` is resolved per pod: a number as is, a name through the pod's
//! `containerPort`s (a pod without that port is left out of that port's subset). Subsets group
//! the addresses that share the same resolved ports, sorted, so equal inputs give equal output.

use std::collections::BTreeMap;

use kapsel_api::{
    EndpointAddress, EndpointPort, EndpointSubset, IntOrString, ObjectReference, Pod, Service,
    ServicePort,
};

use crate::podutil;

/// Whether the Service's Endpoints are this controller's to manage (it has a selector).
pub fn manages(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .is_some_and(|s| !s.selector.is_empty() && s.type_.as_deref() != Some("ExternalName"))
}

/// Whether `pod` is selected by the Service's (map) selector.
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(spec) = &svc.spec else { return false };
    !spec.selector.is_empty()
        && pod.metadata.namespace() == svc.metadata.namespace()
        && spec
            .selector
            .iter()
            .all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
}

/// The pod's IP, if it has one.
pub fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty())
}

/// The container port a Service port targets on `pod` (`podutil.FindPort`).
pub fn resolve_target_port(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    let proto = sp.protocol.as_deref().unwrap_or("TCP");
    match sp.target_port.as_ref() {
        None | Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) if name.is_empty() => Some(sp.port),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP") == proto
            })
            .map(|p| p.container_port),
    }
}

fn address(svc: &Service, pod: &Pod, ip: &str) -> EndpointAddress {
    let spec = pod.spec.as_ref();
    // A pod with hostname and subdomain == service name gets a DNS name under the service.
    let hostname = spec
        .and_then(|s| {
            (s.subdomain.as_deref() == Some(svc.metadata.name())).then_some(s.hostname.clone())
        })
        .flatten()
        .filter(|h| !h.is_empty());
    EndpointAddress {
        ip: ip.to_string(),
        hostname,
        node_name: podutil::node_name(pod).map(String::from),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(pod.metadata.namespace().to_string()),
            name: Some(pod.metadata.name().to_string()),
            uid: Some(pod.metadata.uid().to_string()),
            ..Default::default()
        }),
    }
}

/// The subsets of `svc`'s Endpoints given the pods of its namespace (unselected ones are
/// ignored).
pub fn compute_subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    // resolved ports -> (ready, not ready)
    type Addrs = (Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Addrs> = BTreeMap::new();
    for pod in pods.iter().filter(|p| selects(svc, p)) {
        let Some(ip) = pod_ip(pod) else { continue };
        if !podutil::is_active(pod) {
            continue;
        }
        let ready = publish_not_ready || podutil::is_ready(pod);
        let ports: Vec<(String, i32, String)> = if spec.ports.is_empty() {
            Vec::new() // headless without ports: addresses only
        } else {
            let ps: Vec<_> = spec
                .ports
                .iter()
                .filter_map(|sp| {
                    resolve_target_port(sp, pod).map(|n| {
                        (
                            sp.name.clone().unwrap_or_default(),
                            n,
                            sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        )
                    })
                })
                .collect();
            if ps.is_empty() {
                continue; // none of the ports exists on this pod
            }
            ps
        };
        let g = groups.entry(ports).or_default();
        let a = address(svc, pod, ip);
        if ready {
            g.0.push(a);
        } else {
            g.1.push(a);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: ready,
                not_ready_addresses: not_ready,
                ports: ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: Some(name).filter(|n| !n.is_empty()),
                        port,
                        protocol: Some(protocol),
                        app_protocol: None,
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{Condition, Container, ContainerPort, PodSpec, PodStatus, ServiceSpec, Time};

    fn svc(selector: &[(&str, &str)], ports: Vec<ServicePort>) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("web".into());
        s.metadata.namespace = Some("default".into());
        s.spec = Some(ServiceSpec {
            selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports,
            ..Default::default()
        });
        s
    }

    fn sport(name: &str, port: i32, target: IntOrString, proto: &str) -> ServicePort {
        ServicePort {
            name: Some(name.into()).filter(|n: &String| !n.is_empty()),
            port,
            target_port: Some(target),
            protocol: Some(proto.into()),
            ..Default::default()
        }
    }

    struct P {
        name: &'static str,
        app: &'static str,
        ip: Option<&'static str>,
        ready: bool,
        deleting: bool,
        phase: &'static str,
        http_port: Option<i32>,
    }

    fn pod(p: &P) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(p.name.into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some(format!("uid-{}", p.name));
        pod.metadata.labels.insert("app".into(), p.app.into());
        if p.deleting {
            pod.metadata.deletion_timestamp = Some(Time(chrono::Utc::now()));
        }
        pod.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            containers: vec![Container {
                name: "c".into(),
                ports: p
                    .http_port
                    .map(|n| ContainerPort {
                        name: Some("http".into()),
                        container_port: n,
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        });
        pod.status = Some(PodStatus {
            phase: Some(p.phase.into()),
            pod_ip: p.ip.map(String::from),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if p.ready { "True" } else { "False" }.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        pod
    }

    const BASE: P = P {
        name: "a",
        app: "web",
        ip: Some("10.88.0.2"),
        ready: true,
        deleting: false,
        phase: "Running",
        http_port: Some(8080),
    };

    fn summary(ss: &[EndpointSubset]) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
        ss.iter()
            .map(|s| {
                (
                    s.addresses.iter().map(|a| a.ip.clone()).collect(),
                    s.not_ready_addresses.iter().map(|a| a.ip.clone()).collect(),
                    s.ports
                        .iter()
                        .map(|p| {
                            format!(
                                "{}:{}/{}",
                                p.name.clone().unwrap_or_default(),
                                p.port,
                                p.protocol.clone().unwrap_or_default()
                            )
                        })
                        .collect(),
                )
            })
            .collect()
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subsets_table() {
        let by_name = || vec![sport("", 80, IntOrString::String("http".into()), "TCP")];
        let by_num = || vec![sport("", 80, IntOrString::Int(9000), "UDP")];
        type Want = Vec<(Vec<String>, Vec<String>, Vec<String>)>;
        let cases: Vec<(&str, Service, Vec<P>, Want)> = vec![
            (
                "ready and not ready split; named port resolved",
                svc(&[("app", "web")], by_name()),
                vec![
                    P { name: "b", ip: Some("10.88.0.9"), ..BASE },
                    P { name: "c", ip: Some("10.88.0.3"), ready: false, ..BASE },
                    BASE,
                ],
                vec![(
                    strs(&["10.88.0.2", "10.88.0.9"]),
                    strs(&["10.88.0.3"]),
                    strs(&[":8080/TCP"]),
                )],
            ),
            (
                "unselected, ipless, terminating and finished pods are left out",
                svc(&[("app", "web")], by_num()),
                vec![
                    P { name: "other", app: "db", ..BASE },
                    P { name: "noip", ip: None, ..BASE },
                    P { name: "del", ip: Some("10.88.0.4"), deleting: true, ..BASE },
                    P { name: "done", ip: Some("10.88.0.5"), phase: "Succeeded", ..BASE },
                    P { name: "ok", ip: Some("10.88.0.6"), ..BASE },
                ],
                vec![(strs(&["10.88.0.6"]), vec![], strs(&[":9000/UDP"]))],
            ),
            (
                "pods with different container ports form separate subsets; pods without the named port are left out",
                svc(&[("app", "web")], by_name()),
                vec![
                    P { name: "x", ip: Some("10.88.0.2"), http_port: Some(8080), ..BASE },
                    P { name: "y", ip: Some("10.88.0.3"), http_port: Some(8081), ..BASE },
                    P { name: "z", ip: Some("10.88.0.4"), http_port: None, ..BASE },
                ],
                vec![
                    (strs(&["10.88.0.2"]), vec![], strs(&[":8080/TCP"])),
                    (strs(&["10.88.0.3"]), vec![], strs(&[":8081/TCP"])),
                ],
            ),
            (
                "two named service ports",
                svc(
                    &[("app", "web")],
                    vec![
                        sport("http", 80, IntOrString::String("http".into()), "TCP"),
                        sport("dns", 53, IntOrString::Int(5353), "UDP"),
                    ],
                ),
                vec![BASE],
                vec![(
                    strs(&["10.88.0.2"]),
                    vec![],
                    strs(&["http:8080/TCP", "dns:5353/UDP"]),
                )],
            ),
            (
                "headless without ports lists addresses",
                svc(&[("app", "web")], vec![]),
                vec![BASE],
                vec![(strs(&["10.88.0.2"]), vec![], vec![])],
            ),
            ("no pods, no subsets", svc(&[("app", "web")], by_num()), vec![], vec![]),
        ];
        for (name, s, ps, want) in cases {
            let pods: Vec<Pod> = ps.iter().map(pod).collect();
            let refs: Vec<&Pod> = pods.iter().collect();
            assert_eq!(summary(&compute_subsets(&s, &refs)), want, "{name}");
        }
    }

    #[test]
    fn publish_not_ready_and_refs() {
        let mut s = svc(
            &[("app", "web")],
            vec![sport("", 80, IntOrString::Int(80), "TCP")],
        );
        s.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let p = pod(&P {
            ready: false,
            ..BASE
        });
        let ss = compute_subsets(&s, &[&p]);
        assert_eq!(ss[0].addresses.len(), 1);
        let a = &ss[0].addresses[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        let r = a.target_ref.as_ref().unwrap();
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("Pod"), Some("a"), Some("uid-a"))
        );
    }

    #[test]
    fn manages_only_selector_services() {
        assert!(manages(&svc(&[("app", "web")], vec![])));
        assert!(!manages(&svc(&[], vec![])));
    }
}
