//! ResourceQuota: what an object uses, and whether a change in usage fits a quota.
//!
//! The write path computes `usage(new) - usage(old)` for every quota of the namespace inside the
//! store transaction, rejects increases beyond `spec.hard`, and writes the quota's new
//! `status.used` in the same transaction — so concurrent creates can never both squeeze past a
//! limit, and `status.used` is exact.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use kapsel_api::quantity::QuantityValue;
use kapsel_api::{Pod, ResourceList};

use crate::registry::ResourceDef;

/// Usage by resource name (`pods`, `requests.cpu`, `count/deployments.apps`).
pub type Usage = BTreeMap<String, QuantityValue>;

fn one() -> QuantityValue {
    QuantityValue::from_units(1, Default::default())
}

fn add(u: &mut Usage, k: &str, v: QuantityValue) {
    match u.get_mut(k) {
        Some(cur) => *cur += v,
        None => {
            u.insert(k.to_string(), v);
        }
    }
}

fn parse_list(l: &ResourceList) -> Usage {
    l.iter()
        .filter_map(|(k, q)| q.parse().ok().map(|v| (k.clone(), v)))
        .collect()
}

fn sum_into(acc: &mut Usage, l: &ResourceList) {
    for (k, v) in parse_list(l) {
        add(acc, &k, v);
    }
}

fn max_into(acc: &mut Usage, l: &ResourceList) {
    for (k, v) in parse_list(l) {
        match acc.get(&k) {
            Some(cur) if *cur >= v => {}
            _ => {
                acc.insert(k, v);
            }
        }
    }
}

/// Whether a pod counts against compute quota (not Succeeded/Failed).
pub fn pod_is_active(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The effective requests and limits of a pod: sum of containers, at least each init container.
pub fn pod_requests_limits(pod: &Pod) -> (Usage, Usage) {
    let mut req = Usage::new();
    let mut lim = Usage::new();
    if let Some(spec) = &pod.spec {
        for c in &spec.containers {
            if let Some(r) = &c.resources {
                sum_into(&mut req, &r.requests);
                sum_into(&mut lim, &r.limits);
            }
        }
        for c in &spec.init_containers {
            if let Some(r) = &c.resources {
                max_into(&mut req, &r.requests);
                max_into(&mut lim, &r.limits);
            }
        }
    }
    (req, lim)
}

/// `podComputeUsageHelper`: the compute resource names a set of requests/limits charges.
fn compute_usage(req: &Usage, lim: &Usage, out: &mut Usage) {
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(v) = req.get(r) {
            add(out, r, *v);
            add(out, &format!("requests.{r}"), *v);
        }
        if let Some(v) = lim.get(r) {
            add(out, &format!("limits.{r}"), *v);
        }
    }
}

/// What a pod uses.
pub fn pod_usage(pod: &Pod) -> Usage {
    let mut u = Usage::new();
    u.insert("count/pods".into(), one());
    if pod_is_active(pod) {
        u.insert("pods".into(), one());
        let (req, lim) = pod_requests_limits(pod);
        compute_usage(&req, &lim, &mut u);
    }
    u
}

/// What an object of kind `def` uses: `count/<resource>` for every kind, the legacy object
/// counts (`services`, `configmaps`, `secrets`, `resourcequotas`), and compute for pods.
pub fn quota_usage(def: &ResourceDef, obj: &Value) -> Usage {
    if def.plural == "pods" {
        if let Ok(pod) = <Pod as serde::Deserialize>::deserialize(obj) {
            return pod_usage(&pod);
        }
    }
    let mut u = Usage::new();
    u.insert(format!("count/{}", def.group_resource()), one());
    if matches!(
        def.plural,
        "services" | "configmaps" | "secrets" | "resourcequotas"
    ) {
        u.insert(def.plural.to_string(), one());
    }
    if def.plural == "services" {
        match obj.pointer("/spec/type").and_then(Value::as_str) {
            Some("LoadBalancer") => {
                u.insert("services.loadbalancers".into(), one());
                u.insert("services.nodeports".into(), one());
            }
            Some("NodePort") => {
                u.insert("services.nodeports".into(), one());
            }
            _ => {}
        }
    }
    u
}

/// `new - old`, per resource, keeping only non-zero entries.
pub fn usage_delta(old: &Usage, new: &Usage) -> Usage {
    let mut d = Usage::new();
    for (k, v) in new {
        let before = old.get(k).copied().unwrap_or_default();
        let diff = *v - before;
        if !diff.is_zero() {
            d.insert(k.clone(), diff);
        }
    }
    for (k, v) in old {
        if !new.contains_key(k) && !v.is_zero() {
            d.insert(k.clone(), v.neg());
        }
    }
    d
}

fn pretty(u: &Usage) -> String {
    u.iter()
        .map(|(k, v)| format!("{k}={}", v.to_quantity()))
        .collect::<Vec<_>>()
        .join(",")
}

/// A used value as written to `status.used`: in the hard value's format family when it was
/// zero before (`1Gi`, not `1073741824`).
fn shown(v: QuantityValue, hard: &QuantityValue) -> kapsel_api::Quantity {
    if v.is_zero() {
        return QuantityValue::from_nanos(0, hard.format()).to_quantity();
    }
    v.to_quantity()
}

/// `status.used` for a quota with `hard`, given the total usage of its namespace.
pub fn used_list(hard: &ResourceList, total: &Usage) -> ResourceList {
    let hard_v = parse_list(hard);
    hard_v
        .iter()
        .map(|(k, h)| {
            (
                k.clone(),
                shown(total.get(k).copied().unwrap_or_default(), h),
            )
        })
        .collect()
}

/// Add `u` into `acc`.
pub fn accumulate(acc: &mut Usage, u: &Usage) {
    for (k, v) in u {
        add(acc, k, *v);
    }
}

/// Check `delta` against one quota (`hard`, `used`) named `name`. Only resources the quota
/// limits and that grow are checked. `Ok` holds the quota's new `used` (every hard resource).
/// The error is Kubernetes' `exceeded quota: NAME, requested: …, used: …, limited: …`.
pub fn check_quota(
    name: &str,
    hard: &ResourceList,
    used: &ResourceList,
    delta: &Usage,
) -> Result<ResourceList, String> {
    let hard_v = parse_list(hard);
    let used_v = parse_list(used);
    let mut exceeded = BTreeSet::new();
    let mut new_used = ResourceList::new();
    for (k, h) in &hard_v {
        let cur = used_v.get(k).copied().unwrap_or_default();
        let d = delta.get(k).copied().unwrap_or_default();
        let mut next = cur + d;
        if next.is_negative() {
            next = QuantityValue::zero();
        }
        if !d.is_negative() && !d.is_zero() && next > *h {
            exceeded.insert(k.clone());
        }
        new_used.insert(k.clone(), shown(next, h));
    }
    if exceeded.is_empty() {
        return Ok(new_used);
    }
    let mask = |u: &Usage| -> Usage {
        exceeded
            .iter()
            .map(|k| (k.clone(), u.get(k).copied().unwrap_or_default()))
            .collect()
    };
    Err(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        pretty(&mask(delta)),
        pretty(&mask(&used_v)),
        pretty(&mask(&hard_v))
    ))
}

/// Kubernetes requires every container to state the compute resources a quota limits:
/// `must specify limits.cpu for: a,b; requests.memory for: a`.
pub fn missing_compute(pod: &Pod, hard: &ResourceList) -> Option<String> {
    const VALIDATED: [&str; 6] = [
        "cpu",
        "memory",
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
    ];
    let required: BTreeSet<&str> = VALIDATED
        .iter()
        .copied()
        .filter(|r| hard.contains_key(*r))
        .collect();
    if required.is_empty() {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for c in spec.containers.iter().chain(spec.init_containers.iter()) {
        let (req, lim) = match &c.resources {
            Some(r) => (parse_list(&r.requests), parse_list(&r.limits)),
            None => (Usage::new(), Usage::new()),
        };
        let mut have = Usage::new();
        compute_usage(&req, &lim, &mut have);
        for r in &required {
            if !have.contains_key(*r) {
                missing.entry(r).or_default().insert(c.name.clone());
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "must specify {}",
        missing
            .iter()
            .map(|(r, names)| format!(
                "{r} for: {}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;
    use kapsel_api::Quantity;

    fn rl(pairs: &[(&str, &str)]) -> ResourceList {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity::new(*v)))
            .collect()
    }

    fn pod_json(req_cpu: &str, lim_mem: &str, phase: &str) -> Value {
        serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": req_cpu}, "limits": {"memory": lim_mem}}},
                    {"name": "b", "resources": {"requests": {"cpu": req_cpu}, "limits": {"memory": lim_mem}}}
                ]
            },
            "status": {"phase": phase}
        })
    }

    #[test]
    fn pod_usage_sums_containers_and_takes_init_max() {
        let pods = find("", "v1", "pods").unwrap();
        let u = quota_usage(pods, &pod_json("500m", "128Mi", "Running"));
        let s: BTreeMap<_, _> = u
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_quantity().0))
            .collect();
        assert_eq!(s["pods"], "1");
        assert_eq!(s["count/pods"], "1");
        assert_eq!(s["requests.cpu"], "2"); // max(1, init 2)
        assert_eq!(s["cpu"], "2");
        assert_eq!(s["limits.memory"], "256Mi");
        let u = quota_usage(pods, &pod_json("1500m", "128Mi", "Running"));
        assert_eq!(u["requests.cpu"].to_quantity().0, "3");
        // Terminal pods only count as objects.
        let done = quota_usage(pods, &pod_json("500m", "128Mi", "Succeeded"));
        assert_eq!(done.keys().collect::<Vec<_>>(), vec!["count/pods"]);
    }

    #[test]
    fn object_counts() {
        let d = find("apps", "v1", "deployments").unwrap();
        let u = quota_usage(d, &serde_json::json!({}));
        assert!(u.contains_key("count/deployments.apps"));
        let cm = find("", "v1", "configmaps").unwrap();
        let u = quota_usage(cm, &serde_json::json!({}));
        assert!(u.contains_key("configmaps") && u.contains_key("count/configmaps"));
    }

    #[test]
    fn check_quota_rejects_growth_beyond_hard_only() {
        let hard = rl(&[("pods", "2"), ("requests.memory", "1Gi")]);
        let used = rl(&[("pods", "2"), ("requests.memory", "512Mi")]);
        let pods = find("", "v1", "pods").unwrap();
        let mut p = pod_json("100m", "1Mi", "Pending");
        p["spec"]["containers"][0]["resources"]["requests"]["memory"] = "256Mi".into();
        p["spec"]["containers"][1]["resources"]["requests"]["memory"] = "256Mi".into();
        let delta = usage_delta(&Usage::new(), &quota_usage(pods, &p));
        let err = check_quota("q", &hard, &used, &delta).unwrap_err();
        assert_eq!(
            err,
            "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
        // Removing a pod always passes and lowers usage.
        let minus = usage_delta(&quota_usage(pods, &p), &Usage::new());
        let new_used = check_quota("q", &hard, &used, &minus).unwrap();
        assert_eq!(new_used, rl(&[("pods", "1"), ("requests.memory", "0")]));
        // Room for it.
        let used = rl(&[("pods", "1")]);
        let new_used = check_quota("q", &hard, &used, &delta).unwrap();
        assert_eq!(new_used, rl(&[("pods", "2"), ("requests.memory", "512Mi")]));
    }

    #[test]
    fn missing_compute_names_containers() {
        let pod: Pod = serde_json::from_value(pod_json("1", "1Mi", "Pending")).unwrap();
        let hard = rl(&[("requests.cpu", "4"), ("limits.cpu", "4"), ("pods", "3")]);
        assert_eq!(
            missing_compute(&pod, &hard).unwrap(),
            "must specify limits.cpu for: a,b,i"
        );
        assert!(missing_compute(&pod, &rl(&[("pods", "3")])).is_none());
    }
}
