//! ReplicaSet, Deployment, Lease and Scale rules and defaults.

use super::field::*;
use super::meta::*;
use super::names::regex_error;
use super::pod::*;
use super::ErrorList;
use crate::apps::*;
use crate::core::PodTemplateSpec;
use crate::meta::{IntOrString, LabelSelector};
use crate::selector::Selector;

/// The gogo-protobuf `String()` of a `*LabelSelector`, as Kubernetes renders it in messages.
pub fn go_label_selector_string(s: Option<&LabelSelector>) -> String {
    let Some(s) = s else {
        return "null".to_string();
    };
    let labels: String = s
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}: {v},"))
        .collect();
    let exprs: String = s
        .match_expressions
        .iter()
        .map(|e| {
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                e.key,
                e.operator,
                e.values.join(" ")
            )
        })
        .collect();
    format!(
        "&LabelSelector{{MatchLabels:map[string]string{{{labels}}},MatchExpressions:[]LabelSelectorRequirement{{{exprs}}},}}"
    )
}

/// Selector + template rules shared by ReplicaSet and Deployment (`ValidatePodTemplateSpecForReplicaSet`).
fn validate_selector_and_template(
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
    path: &str,
) -> ErrorList {
    let mut errs = Vec::new();
    let sp = child(path, "selector");
    let mut parsed = None;
    match selector {
        None => errs.push(required(&sp, "")),
        Some(sel) => {
            errs.extend(validate_label_selector(sel, &sp));
            if sel.match_labels.is_empty() && sel.match_expressions.is_empty() {
                errs.push(invalid_raw(
                    &sp,
                    go_label_selector_string(Some(sel)),
                    "empty selector is invalid for deployment",
                ));
            }
            match Selector::from_label_selector(sel) {
                Ok(s) => parsed = Some(s),
                Err(_) => errs.push(invalid_raw(
                    &sp,
                    go_label_selector_string(Some(sel)),
                    "invalid label selector",
                )),
            }
        }
    }
    let tp = child(path, "template");
    match template {
        None => errs.push(required(&tp, "")),
        Some(t) => {
            if let Some(sel) = parsed.as_ref().filter(|s| !s.is_empty()) {
                if !sel.matches(&t.metadata.labels) {
                    errs.push(invalid_raw(
                        child(&child(&tp, "metadata"), "labels"),
                        go_map_string(&t.metadata.labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            errs.extend(validate_pod_template(t, &tp));
            if let Some(spec) = &t.spec {
                let rp = spec.restart_policy.as_deref().unwrap_or("Always");
                if rp != "Always" {
                    errs.push(not_supported(
                        child(&child(&tp, "spec"), "restartPolicy"),
                        rp,
                        &["Always"],
                    ));
                }
                if spec.active_deadline_seconds.is_some() {
                    errs.push(forbidden(
                        child(&child(&tp, "spec"), "activeDeadlineSeconds"),
                        "activeDeadlineSeconds in ReplicaSet is not Supported",
                    ));
                }
            }
        }
    }
    errs
}

pub fn validate_replica_set(rs: &ReplicaSet) -> ErrorList {
    let mut errs = validate_type_meta((&rs.api_version, &rs.kind), "apps/v1", "ReplicaSet");
    errs.extend(validate_object_meta(&rs.metadata, true, "metadata"));
    let Some(spec) = &rs.spec else {
        errs.push(required("spec.selector", ""));
        errs.push(required("spec.template", ""));
        return errs;
    };
    if let Some(r) = spec.replicas {
        errs.extend(nonnegative("spec.replicas", r as i64));
    }
    if let Some(m) = spec.min_ready_seconds {
        errs.extend(nonnegative("spec.minReadySeconds", m as i64));
    }
    errs.extend(validate_selector_and_template(
        spec.selector.as_ref(),
        spec.template.as_ref(),
        "spec",
    ));
    errs
}

fn selector_immutable(
    new: Option<&LabelSelector>,
    old: Option<&LabelSelector>,
) -> Option<super::FieldError> {
    immutable(&new, &old, "spec.selector", |v| {
        go_label_selector_string(v.as_deref())
    })
}

pub fn validate_replica_set_update(new: &ReplicaSet, old: &ReplicaSet) -> ErrorList {
    let mut errs = validate_replica_set(new);
    errs.extend(validate_object_meta_update(
        &new.metadata,
        &old.metadata,
        "metadata",
    ));
    errs.extend(selector_immutable(
        new.spec.as_ref().and_then(|s| s.selector.as_ref()),
        old.spec.as_ref().and_then(|s| s.selector.as_ref()),
    ));
    errs
}

fn int_or_percent_value(v: &IntOrString) -> i64 {
    match v {
        IntOrString::Int(i) => *i as i64,
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    }
}

fn render_int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => quote(s),
    }
}

/// `ValidatePositiveIntOrPercent`.
pub fn validate_positive_int_or_percent(v: &IntOrString, path: &str) -> ErrorList {
    match v {
        IntOrString::String(s) => {
            let ok = s
                .strip_suffix('%')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()));
            if ok {
                Vec::new()
            } else {
                vec![invalid(
                    path,
                    s,
                    regex_error(
                        "a valid percent string must be a numeric string followed by an ending '%'",
                        "[0-9]+%",
                        &["1%", "93%"],
                    ),
                )]
            }
        }
        IntOrString::Int(i) => nonnegative(path, *i as i64).into_iter().collect(),
    }
}

fn validate_strategy(s: Option<&DeploymentStrategy>, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    let Some(s) = s else {
        return errs;
    };
    let ty = s.type_.as_deref().unwrap_or("RollingUpdate");
    match ty {
        "Recreate" => {
            if s.rolling_update.is_some() {
                errs.push(forbidden(
                    child(path, "rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = &s.rolling_update {
                let rp = child(path, "rollingUpdate");
                let mu = ru
                    .max_unavailable
                    .clone()
                    .unwrap_or(IntOrString::String("25%".into()));
                let ms = ru
                    .max_surge
                    .clone()
                    .unwrap_or(IntOrString::String("25%".into()));
                errs.extend(validate_positive_int_or_percent(
                    &mu,
                    &child(&rp, "maxUnavailable"),
                ));
                errs.extend(validate_positive_int_or_percent(
                    &ms,
                    &child(&rp, "maxSurge"),
                ));
                if int_or_percent_value(&mu) == 0 && int_or_percent_value(&ms) == 0 {
                    errs.push(invalid_raw(
                        child(&rp, "maxUnavailable"),
                        render_int_or_string(&mu),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                if let IntOrString::String(_) = mu {
                    if int_or_percent_value(&mu) > 100 {
                        errs.push(invalid_raw(
                            child(&rp, "maxUnavailable"),
                            render_int_or_string(&mu),
                            "must not be greater than 100%",
                        ));
                    }
                }
            }
        }
        other => errs.push(not_supported(
            child(path, "type"),
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
    errs
}

pub fn validate_deployment(d: &Deployment) -> ErrorList {
    let mut errs = validate_type_meta((&d.api_version, &d.kind), "apps/v1", "Deployment");
    errs.extend(validate_object_meta(&d.metadata, true, "metadata"));
    let Some(spec) = &d.spec else {
        errs.push(required("spec.selector", ""));
        errs.push(required("spec.template", ""));
        return errs;
    };
    if let Some(r) = spec.replicas {
        errs.extend(nonnegative("spec.replicas", r as i64));
    }
    errs.extend(validate_selector_and_template(
        spec.selector.as_ref(),
        spec.template.as_ref(),
        "spec",
    ));
    errs.extend(validate_strategy(spec.strategy.as_ref(), "spec.strategy"));
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    errs.extend(nonnegative("spec.minReadySeconds", min_ready as i64));
    if let Some(r) = spec.revision_history_limit {
        errs.extend(nonnegative("spec.revisionHistoryLimit", r as i64));
    }
    if let Some(p) = spec.progress_deadline_seconds {
        errs.extend(nonnegative("spec.progressDeadlineSeconds", p as i64));
        if p <= min_ready {
            errs.push(invalid_raw(
                "spec.progressDeadlineSeconds",
                p,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

pub fn validate_deployment_update(new: &Deployment, old: &Deployment) -> ErrorList {
    let mut errs = validate_deployment(new);
    errs.extend(validate_object_meta_update(
        &new.metadata,
        &old.metadata,
        "metadata",
    ));
    errs.extend(selector_immutable(
        new.spec.as_ref().and_then(|s| s.selector.as_ref()),
        old.spec.as_ref().and_then(|s| s.selector.as_ref()),
    ));
    errs
}

pub fn validate_lease(l: &Lease) -> ErrorList {
    let mut errs = validate_type_meta((&l.api_version, &l.kind), "coordination.k8s.io/v1", "Lease");
    errs.extend(validate_object_meta(&l.metadata, true, "metadata"));
    if let Some(spec) = &l.spec {
        if let Some(d) = spec.lease_duration_seconds {
            errs.extend(positive("spec.leaseDurationSeconds", d as i64));
        }
        if let Some(t) = spec.lease_transitions {
            errs.extend(nonnegative("spec.leaseTransitions", t as i64));
        }
    }
    errs
}

pub fn validate_scale(s: &Scale) -> ErrorList {
    let mut errs = Vec::new();
    if !s.api_version.is_empty() || !s.kind.is_empty() {
        errs.extend(validate_type_meta(
            (&s.api_version, &s.kind),
            "autoscaling/v1",
            "Scale",
        ));
    }
    if let Some(r) = s.spec.replicas {
        errs.extend(nonnegative("spec.replicas", r as i64));
    }
    errs
}

// ------------------------------------------------------------------ defaults

fn default_template(t: &mut Option<PodTemplateSpec>) {
    if let Some(spec) = t.as_mut().and_then(|t| t.spec.as_mut()) {
        default_pod_spec(spec);
    }
}

/// `SetDefaults_ReplicaSet`.
pub fn default_replica_set(rs: &mut ReplicaSet) {
    let spec = rs.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    default_template(&mut spec.template);
}

/// `SetDefaults_Deployment`.
pub fn default_deployment(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    let strategy = spec.strategy.get_or_insert_with(Default::default);
    if strategy.type_.as_deref().unwrap_or("").is_empty() {
        strategy.type_ = Some("RollingUpdate".into());
    }
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy.rolling_update.get_or_insert_with(Default::default);
        ru.max_unavailable
            .get_or_insert_with(|| IntOrString::String("25%".into()));
        ru.max_surge
            .get_or_insert_with(|| IntOrString::String("25%".into()));
    }
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    default_template(&mut spec.template);
}
