//! ResourceQuota status reconciliation: recompute `status.used` from a consistent snapshot of the
//! namespace, to heal any drift of the API server's incremental accounting.

use std::collections::BTreeMap;

use kapsel_api::quantity::QuantityValue;
use kapsel_api::{Pod, ResourceList, ResourceQuota};

use crate::podutil;

pub type Usage = BTreeMap<String, QuantityValue>;

fn add(u: &mut Usage, k: &str, v: QuantityValue) {
    let cur = u.get(k).copied().unwrap_or_default();
    u.insert(k.to_string(), cur + v);
}

fn one() -> QuantityValue {
    QuantityValue::from_units(1, Default::default())
}

/// What the pods of a namespace use: `pods`, `count/pods`, and requests/limits of cpu, memory and
/// ephemeral-storage (sum of containers, at least each init container) of the non-terminal ones.
pub fn pod_usage(pods: &[Pod]) -> Usage {
    let mut u = Usage::new();
    for p in pods {
        add(&mut u, "count/pods", one());
        let ph = podutil::phase(p);
        if ph == podutil::PHASE_SUCCEEDED || ph == podutil::PHASE_FAILED {
            continue;
        }
        add(&mut u, "pods", one());
        let Some(spec) = &p.spec else { continue };
        let mut req: Usage = Usage::new();
        let mut lim: Usage = Usage::new();
        for c in &spec.containers {
            if let Some(r) = &c.resources {
                for (k, q) in &r.requests {
                    if let Ok(v) = q.parse() {
                        add(&mut req, k, v);
                    }
                }
                for (k, q) in &r.limits {
                    if let Ok(v) = q.parse() {
                        add(&mut lim, k, v);
                    }
                }
            }
        }
        for c in &spec.init_containers {
            if let Some(r) = &c.resources {
                for (src, dst) in [(&r.requests, &mut req), (&r.limits, &mut lim)] {
                    for (k, q) in src {
                        if let Ok(v) = q.parse() {
                            if dst.get(k).is_none_or(|cur| *cur < v) {
                                dst.insert(k.clone(), v);
                            }
                        }
                    }
                }
            }
        }
        for r in ["cpu", "memory", "ephemeral-storage"] {
            if let Some(v) = req.get(r) {
                add(&mut u, r, *v);
                add(&mut u, &format!("requests.{r}"), *v);
            }
            if let Some(v) = lim.get(r) {
                add(&mut u, &format!("limits.{r}"), *v);
            }
        }
    }
    u
}

/// `status.used` for `quota` given the namespace's usage (every resource of `spec.hard`; zero
/// when unused). `None` when the current status already says exactly that (compared by value).
pub fn desired_used(quota: &ResourceQuota, usage: &Usage) -> Option<ResourceList> {
    let hard = quota
        .spec
        .as_ref()
        .map(|s| s.hard.clone())
        .unwrap_or_default();
    let used: ResourceList = hard
        .iter()
        .map(|(k, h)| {
            let v = usage.get(k).copied().unwrap_or_default();
            let q = if v.is_zero() {
                h.parse()
                    .map(|hv| QuantityValue::from_nanos(0, hv.format()).to_quantity())
                    .unwrap_or_else(|_| v.to_quantity())
            } else {
                v.to_quantity()
            };
            (k.clone(), q)
        })
        .collect();
    let st = quota.status.clone().unwrap_or_default();
    let same_hard = st.hard == hard;
    let same_used = st.used.len() == used.len()
        && used.iter().all(|(k, q)| {
            st.used
                .get(k)
                .is_some_and(|cur| cur.parse().ok() == q.parse().ok())
        });
    if same_hard && same_used {
        None
    } else {
        Some(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{
        Container, ObjectMeta, PodSpec, PodStatus, Quantity, ResourceQuotaSpec,
        ResourceQuotaStatus, ResourceRequirements,
    };

    fn pod(cpu: &str, mem: &str, phase: &str) -> Pod {
        let mut p = Pod::with_meta(ObjectMeta::namespaced("ns", "p"));
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests: [
                        ("cpu".to_string(), Quantity::from(cpu)),
                        ("memory".to_string(), Quantity::from(mem)),
                    ]
                    .into(),
                    limits: [("memory".to_string(), Quantity::from(mem))].into(),
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        p
    }

    #[test]
    fn usage_sums_active_pods_and_detects_drift() {
        let pods = [
            pod("250m", "64Mi", "Running"),
            pod("500m", "64Mi", "Pending"),
            pod("1", "1Gi", "Failed"),
        ];
        let u = pod_usage(&pods);
        assert_eq!(u["pods"].value().unwrap(), 2);
        assert_eq!(u["count/pods"].value().unwrap(), 3);
        assert_eq!(u["requests.cpu"].milli_value().unwrap(), 750);
        assert_eq!(u["limits.memory"].value().unwrap(), 128 * 1024 * 1024);
        let mut q = ResourceQuota::with_meta(ObjectMeta::namespaced("ns", "q"));
        let hard: ResourceList = [
            ("pods".to_string(), Quantity::from("10")),
            ("requests.cpu".to_string(), Quantity::from("2")),
            ("requests.memory".to_string(), Quantity::from("1Gi")),
            ("services".to_string(), Quantity::from("5")),
        ]
        .into();
        q.spec = Some(ResourceQuotaSpec {
            hard: hard.clone(),
            scopes: vec![],
        });
        // Drifted status: pods=5.
        q.status = Some(ResourceQuotaStatus {
            hard: hard.clone(),
            used: [("pods".to_string(), Quantity::from("5"))].into(),
        });
        let used = desired_used(&q, &u).unwrap();
        assert_eq!(used["pods"].parse().unwrap().value().unwrap(), 2);
        assert_eq!(
            used["requests.cpu"].parse().unwrap().milli_value().unwrap(),
            750
        );
        assert_eq!(used["services"].parse().unwrap().value().unwrap(), 0);
        // Healed: nothing to do.
        q.status.as_mut().unwrap().used = used;
        assert_eq!(desired_used(&q, &u), None);
    }
}
