//! LimitRange admission for pods, exactly as Kubernetes' `LimitRanger` plugin: on create, first
//! default each container's missing limits (`default`) and requests (`defaultRequest`), then
//! check `min`, `max` and `maxLimitRequestRatio` per container (type `Container`) and for the
//! pod as a whole (type `Pod`). Failures are reported together, Kubernetes' words and order.

use std::collections::BTreeMap;

use kapsel_api::{Container, LimitRange, LimitRangeItem, Pod, Quantity, ResourceList};

/// Annotation Kubernetes sets on pods the plugin changed.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// `SetDefaults_LimitRangeItem`: for type Container, `default` defaults to `max`, and
/// `defaultRequest` to `default`, else to `min`.
pub fn default_limit_range_item(item: &mut LimitRangeItem) {
    if item.type_ != "Container" {
        return;
    }
    for (k, v) in &item.max {
        item.default.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &item.default {
        item.default_request
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    for (k, v) in &item.min {
        item.default_request
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
}

/// Apply every LimitRange of the pod's namespace to `pod` (defaults, then checks).
/// `Err` holds every violated constraint's message.
pub fn apply_limit_ranges(pod: &mut Pod, ranges: &[LimitRange]) -> Result<(), Vec<String>> {
    let items: Vec<LimitRangeItem> = ranges
        .iter()
        .filter_map(|r| r.spec.as_ref())
        .flat_map(|s| s.limits.iter().cloned())
        .map(|mut i| {
            default_limit_range_item(&mut i);
            i
        })
        .collect();
    if items.is_empty() {
        return Ok(());
    }
    set_defaults(pod, &items);
    validate(pod, &items)
}

fn set_defaults(pod: &mut Pod, items: &[LimitRangeItem]) {
    // defaultContainerResourceRequirements: later ranges overwrite earlier ones.
    let mut def_limits = ResourceList::new();
    let mut def_requests = ResourceList::new();
    for item in items.iter().filter(|i| i.type_ == "Container") {
        for (k, v) in &item.default_request {
            def_requests.insert(k.clone(), v.clone());
        }
        for (k, v) in &item.default {
            def_limits.insert(k.clone(), v.clone());
        }
    }
    if def_limits.is_empty() && def_requests.is_empty() {
        return;
    }
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let mut notes: Vec<String> = Vec::new();
    let mut merge = |c: &mut Container| {
        let res = c.resources.get_or_insert_with(Default::default);
        let mut set_req = Vec::new();
        let mut set_lim = Vec::new();
        for (k, v) in &def_limits {
            if !res.limits.contains_key(k) {
                res.limits.insert(k.clone(), v.clone());
                set_lim.push(k.clone());
            }
        }
        for (k, v) in &def_requests {
            if !res.requests.contains_key(k) {
                res.requests.insert(k.clone(), v.clone());
                set_req.push(k.clone());
            }
        }
        if !set_req.is_empty() {
            notes.push(format!(
                "{} request for container {}",
                set_req.join(", "),
                c.name
            ));
        }
        if !set_lim.is_empty() {
            notes.push(format!(
                "{} limit for container {}",
                set_lim.join(", "),
                c.name
            ));
        }
    };
    for c in spec.containers.iter_mut() {
        merge(c);
    }
    for c in spec.init_containers.iter_mut() {
        merge(c);
    }
    if !notes.is_empty() {
        pod.metadata.annotations.insert(
            ANNOTATION.to_string(),
            format!("LimitRanger plugin set: {}", notes.join("; ")),
        );
    }
}

/// `resource.MaxMilliValue`.
const MAX_MILLI_VALUE: i64 = i64::MAX / 1000;

fn value_of(q: Option<&Quantity>) -> i64 {
    q.and_then(|q| q.value().ok()).unwrap_or(0)
}
fn milli_of(q: Option<&Quantity>) -> i64 {
    q.and_then(|q| q.milli_value().ok()).unwrap_or(0)
}

/// `requestLimitEnforcedValues`: milli values when nothing overflows, else whole units.
fn enforced_values(
    req: Option<&Quantity>,
    lim: Option<&Quantity>,
    enf: &Quantity,
) -> (i64, i64, i64) {
    let (r, l, e) = (value_of(req), value_of(lim), value_of(Some(enf)));
    if r <= MAX_MILLI_VALUE && l <= MAX_MILLI_VALUE && e <= MAX_MILLI_VALUE {
        (milli_of(req), milli_of(lim), milli_of(Some(enf)))
    } else {
        (r, l, e)
    }
}

fn show(q: &Quantity) -> String {
    q.canonical().map(|c| c.0).unwrap_or_else(|_| q.0.clone())
}

fn min_constraint(
    ty: &str,
    res: &str,
    enforced: &Quantity,
    request: &ResourceList,
    limit: &ResourceList,
) -> Option<String> {
    let req = request.get(res);
    let lim = limit.get(res);
    let (r, l, e) = enforced_values(req, lim, enforced);
    let Some(req_q) = req else {
        return Some(format!(
            "minimum {res} usage per {ty} is {}.  No request is specified",
            show(enforced)
        ));
    };
    if r < e {
        return Some(format!(
            "minimum {res} usage per {ty} is {}, but request is {}",
            show(enforced),
            show(req_q)
        ));
    }
    if let Some(lim_q) = lim {
        if l < e {
            return Some(format!(
                "minimum {res} usage per {ty} is {}, but limit is {}",
                show(enforced),
                show(lim_q)
            ));
        }
    }
    None
}

fn max_constraint(
    ty: &str,
    res: &str,
    enforced: &Quantity,
    request: &ResourceList,
    limit: &ResourceList,
) -> Option<String> {
    let req = request.get(res);
    let lim = limit.get(res);
    let (r, l, e) = enforced_values(req, lim, enforced);
    let Some(lim_q) = lim else {
        return Some(format!(
            "maximum {res} usage per {ty} is {}.  No limit is specified",
            show(enforced)
        ));
    };
    if l > e {
        return Some(format!(
            "maximum {res} usage per {ty} is {}, but limit is {}",
            show(enforced),
            show(lim_q)
        ));
    }
    if let Some(req_q) = req {
        if r > e {
            return Some(format!(
                "maximum {res} usage per {ty} is {}, but request is {}",
                show(enforced),
                show(req_q)
            ));
        }
    }
    None
}

fn ratio_constraint(
    ty: &str,
    res: &str,
    enforced: &Quantity,
    request: &ResourceList,
    limit: &ResourceList,
) -> Option<String> {
    let req = request.get(res);
    let lim = limit.get(res);
    let (r, l, _) = enforced_values(req, lim, enforced);
    if req.is_none() || r == 0 {
        return Some(format!(
            "{res} max limit to request ratio per {ty} is {}, but no request is specified or request is 0",
            show(enforced)
        ));
    }
    if lim.is_none() || l == 0 {
        return Some(format!(
            "{res} max limit to request ratio per {ty} is {}, but no limit is specified or limit is 0",
            show(enforced)
        ));
    }
    let display = l as f64 / r as f64;
    let mut observed = display;
    let enf_value = value_of(Some(enforced));
    let mut max_ratio = enf_value as f64;
    if enf_value <= MAX_MILLI_VALUE {
        observed *= 1000.0;
        max_ratio = milli_of(Some(enforced)) as f64;
    }
    if observed > max_ratio {
        return Some(format!(
            "{res} max limit to request ratio per {ty} is {}, but provided ratio is {display:.6}",
            show(enforced)
        ));
    }
    None
}

fn check_all(
    ty: &str,
    item: &LimitRangeItem,
    requests: &ResourceList,
    limits: &ResourceList,
    errs: &mut Vec<String>,
) {
    for (k, v) in &item.min {
        errs.extend(min_constraint(ty, k, v, requests, limits));
    }
    for (k, v) in &item.max {
        errs.extend(max_constraint(ty, k, v, requests, limits));
    }
    for (k, v) in &item.max_limit_request_ratio {
        errs.extend(ratio_constraint(ty, k, v, requests, limits));
    }
}

fn add_into(acc: &mut ResourceList, from: &ResourceList, take_max: bool) {
    for (k, v) in from {
        let next = match acc.get(k) {
            None => v.clone(),
            Some(cur) => match (cur.parse(), v.parse()) {
                (Ok(a), Ok(b)) if take_max => {
                    if b > a {
                        v.clone()
                    } else {
                        cur.clone()
                    }
                }
                (Ok(a), Ok(b)) => (a + b).to_quantity(),
                _ => cur.clone(),
            },
        };
        acc.insert(k.clone(), next);
    }
}

/// `podRequests`/`podLimits` of the LimitRanger: sum of containers, at least each init container.
fn pod_totals(pod: &Pod) -> (ResourceList, ResourceList) {
    let mut req = BTreeMap::new();
    let mut lim = BTreeMap::new();
    if let Some(spec) = &pod.spec {
        for c in &spec.containers {
            if let Some(r) = &c.resources {
                add_into(&mut req, &r.requests, false);
                add_into(&mut lim, &r.limits, false);
            }
        }
        for c in &spec.init_containers {
            if let Some(r) = &c.resources {
                add_into(&mut req, &r.requests, true);
                add_into(&mut lim, &r.limits, true);
            }
        }
    }
    (req, lim)
}

fn validate(pod: &Pod, items: &[LimitRangeItem]) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    let empty = ResourceList::new();
    for item in items {
        match item.type_.as_str() {
            "Container" => {
                if let Some(spec) = &pod.spec {
                    for c in spec.containers.iter().chain(spec.init_containers.iter()) {
                        let (req, lim) = c
                            .resources
                            .as_ref()
                            .map(|r| (&r.requests, &r.limits))
                            .unwrap_or((&empty, &empty));
                        check_all("Container", item, req, lim, &mut errs);
                    }
                }
            }
            "Pod" => {
                let (req, lim) = pod_totals(pod);
                check_all("Pod", item, &req, &lim, &mut errs);
            }
            _ => {}
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{LimitRangeSpec, ObjectMeta, PodSpec, ResourceRequirements};

    fn rl(pairs: &[(&str, &str)]) -> ResourceList {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity::new(*v)))
            .collect()
    }

    fn item(ty: &str, f: impl FnOnce(&mut LimitRangeItem)) -> LimitRange {
        let mut i = LimitRangeItem {
            type_: ty.into(),
            ..Default::default()
        };
        f(&mut i);
        LimitRange {
            spec: Some(LimitRangeSpec { limits: vec![i] }),
            ..Default::default()
        }
    }

    fn pod(containers: &[(&str, ResourceList, ResourceList)]) -> Pod {
        Pod {
            metadata: ObjectMeta::named("p"),
            spec: Some(PodSpec {
                containers: containers
                    .iter()
                    .map(|(n, req, lim)| Container {
                        name: n.to_string(),
                        image: Some("busybox".into()),
                        resources: Some(ResourceRequirements {
                            requests: req.clone(),
                            limits: lim.clone(),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn res(p: &Pod, i: usize) -> &ResourceRequirements {
        p.spec.as_ref().unwrap().containers[i]
            .resources
            .as_ref()
            .unwrap()
    }

    #[test]
    fn defaults_fill_only_missing_values() {
        let lr = item("Container", |i| {
            i.default = rl(&[("cpu", "500m"), ("memory", "256Mi")]);
            i.default_request = rl(&[("cpu", "100m")]);
        });
        let mut p = pod(&[
            ("a", rl(&[]), rl(&[])),
            ("b", rl(&[("cpu", "200m")]), rl(&[("memory", "1Gi")])),
        ]);
        apply_limit_ranges(&mut p, &[lr]).unwrap();
        // memory's defaultRequest defaults to its default (256Mi).
        assert_eq!(
            res(&p, 0).requests,
            rl(&[("cpu", "100m"), ("memory", "256Mi")])
        );
        assert_eq!(
            res(&p, 0).limits,
            rl(&[("cpu", "500m"), ("memory", "256Mi")])
        );
        assert_eq!(
            res(&p, 1).requests,
            rl(&[("cpu", "200m"), ("memory", "256Mi")])
        );
        assert_eq!(res(&p, 1).limits, rl(&[("cpu", "500m"), ("memory", "1Gi")]));
        assert_eq!(
            p.metadata.annotations[ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for container a; memory request for container b; cpu limit for container b"
        );
    }

    #[test]
    fn max_defaults_the_limit_and_min_the_request() {
        let lr = item("Container", |i| {
            i.max = rl(&[("cpu", "1")]);
            i.min = rl(&[("memory", "64Mi")]);
        });
        let mut p = pod(&[("a", rl(&[]), rl(&[]))]);
        apply_limit_ranges(&mut p, &[lr]).unwrap();
        assert_eq!(res(&p, 0).limits, rl(&[("cpu", "1")]));
        assert_eq!(res(&p, 0).requests, rl(&[("cpu", "1"), ("memory", "64Mi")]));
    }

    #[test]
    fn min_max_ratio_violations_use_kubernetes_words() {
        let cases: Vec<(LimitRange, Pod, Vec<&str>)> = vec![
            (
                item("Container", |i| i.max = rl(&[("cpu", "1")])),
                pod(&[("a", rl(&[("cpu", "500m")]), rl(&[("cpu", "2")]))]),
                vec!["maximum cpu usage per Container is 1, but limit is 2"],
            ),
            (
                item("Container", |i| i.min = rl(&[("cpu", "100m")])),
                pod(&[("a", rl(&[("cpu", "50m")]), rl(&[]))]),
                vec!["minimum cpu usage per Container is 100m, but request is 50m"],
            ),
            (
                item("Container", |i| i.min = rl(&[("memory", "1Gi")])),
                pod(&[("a", rl(&[("memory", "2Gi")]), rl(&[("memory", "512Mi")]))]),
                vec!["minimum memory usage per Container is 1Gi, but limit is 512Mi"],
            ),
            (
                item("Container", |i| {
                    i.max_limit_request_ratio = rl(&[("cpu", "2")]);
                }),
                pod(&[("a", rl(&[("cpu", "250m")]), rl(&[("cpu", "1")]))]),
                vec!["cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"],
            ),
            (
                item("Pod", |i| i.max = rl(&[("memory", "1Gi")])),
                pod(&[
                    ("a", rl(&[]), rl(&[("memory", "600Mi")])),
                    ("b", rl(&[]), rl(&[("memory", "600Mi")])),
                ]),
                vec!["maximum memory usage per Pod is 1Gi, but limit is 1200Mi"],
            ),
            (
                item("Pod", |i| i.max = rl(&[("cpu", "2")])),
                pod(&[("a", rl(&[]), rl(&[]))]),
                vec!["maximum cpu usage per Pod is 2.  No limit is specified"],
            ),
        ];
        for (lr, mut p, want) in cases {
            let got = apply_limit_ranges(&mut p, &[lr]).unwrap_err();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn within_limits_passes_and_several_errors_are_all_reported() {
        let lr = item("Container", |i| {
            i.min = rl(&[("cpu", "100m")]);
            i.max = rl(&[("cpu", "1"), ("memory", "1Gi")]);
        });
        let mut ok = pod(&[(
            "a",
            rl(&[("cpu", "100m")]),
            rl(&[("cpu", "1"), ("memory", "1Gi")]),
        )]);
        apply_limit_ranges(&mut ok, std::slice::from_ref(&lr)).unwrap();
        let mut bad = pod(&[(
            "a",
            rl(&[("cpu", "10m")]),
            rl(&[("cpu", "3"), ("memory", "2Gi")]),
        )]);
        let errs = apply_limit_ranges(&mut bad, &[lr]).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
    }
}
