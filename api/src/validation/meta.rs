//! `ObjectMeta`, type meta, labels, annotations, owner references, finalizers and label selectors.

use std::collections::BTreeMap;

use super::field::*;
use super::names::*;
use super::ErrorList;
use crate::meta::{LabelSelector, ObjectMeta, OwnerReference};

/// Kubernetes' `TotalAnnotationSizeLimitB`.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// How a kind's names are checked (Kubernetes' `ValidateNameFunc`); `prefix` is true for
/// `generateName`, whose trailing `-` is allowed.
pub type NameFn = fn(name: &str, prefix: bool) -> Vec<String>;

fn mask_trailing_dash(name: &str, prefix: bool) -> String {
    if prefix && name.len() > 1 && name.ends_with('-') {
        format!("{}a", &name[..name.len() - 1])
    } else {
        name.to_string()
    }
}

/// `NameIsDNSSubdomain`: most kinds.
pub fn name_is_dns_subdomain(name: &str, prefix: bool) -> Vec<String> {
    dns1123_subdomain_errors(&mask_trailing_dash(name, prefix))
}

/// `NameIsDNSLabel`: Namespace.
pub fn name_is_dns_label(name: &str, prefix: bool) -> Vec<String> {
    dns1123_label_errors(&mask_trailing_dash(name, prefix))
}

/// `NameIsDNS1035Label`: Service.
pub fn name_is_dns1035_label(name: &str, prefix: bool) -> Vec<String> {
    dns1035_label_errors(&mask_trailing_dash(name, prefix))
}

/// `IsValidPathSegmentName`: kinds whose names are only path segments (Event).
pub fn name_is_path_segment(name: &str, prefix: bool) -> Vec<String> {
    if !prefix && (name == "." || name == "..") {
        return vec![format!("may not be '{name}'")];
    }
    if name.contains('/') || name.contains('%') {
        return vec!["may not contain '/' or '%'".to_string()];
    }
    Vec::new()
}

/// `apiVersion` and `kind` present and equal to the type's.
pub fn validate_type_meta(
    (api_version, kind): (&str, &str),
    want_api_version: &str,
    want_kind: &str,
) -> ErrorList {
    let mut errs = Vec::new();
    if api_version.is_empty() {
        errs.push(required("apiVersion", ""));
    } else if api_version != want_api_version {
        errs.push(not_supported(
            "apiVersion",
            api_version,
            &[want_api_version],
        ));
    }
    if kind.is_empty() {
        errs.push(required("kind", ""));
    } else if kind != want_kind {
        errs.push(not_supported("kind", kind, &[want_kind]));
    }
    errs
}

/// `ValidateObjectMeta` with DNS-subdomain names.
pub fn validate_object_meta(meta: &ObjectMeta, namespaced: bool, path: &str) -> ErrorList {
    validate_object_meta_with(meta, namespaced, name_is_dns_subdomain, path)
}

/// `ValidateObjectMeta` with the kind's name rule.
pub fn validate_object_meta_with(
    meta: &ObjectMeta,
    namespaced: bool,
    name_fn: NameFn,
    path: &str,
) -> ErrorList {
    let mut errs = Vec::new();
    let generate_name = meta.generate_name.as_deref().unwrap_or("");
    if !generate_name.is_empty() {
        for msg in name_fn(generate_name, true) {
            errs.push(invalid(child(path, "generateName"), generate_name, msg));
        }
    }
    let name = meta.name();
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(required(
                child(path, "name"),
                "name or generateName is required",
            ));
        }
    } else {
        for msg in name_fn(name, false) {
            errs.push(invalid(child(path, "name"), name, msg));
        }
    }
    let ns = meta.namespace();
    if namespaced {
        if ns.is_empty() {
            errs.push(required(child(path, "namespace"), ""));
        } else {
            for msg in dns1123_label_errors(ns) {
                errs.push(invalid(child(path, "namespace"), ns, msg));
            }
        }
    } else if !ns.is_empty() {
        errs.push(forbidden(
            child(path, "namespace"),
            "not allowed on this type",
        ));
    }
    if let Some(g) = meta.generation {
        errs.extend(nonnegative(child(path, "generation"), g));
    }
    errs.extend(validate_labels(&meta.labels, &child(path, "labels")));
    errs.extend(validate_annotations(
        &meta.annotations,
        &child(path, "annotations"),
    ));
    errs.extend(validate_owner_references(
        &meta.owner_references,
        &child(path, "ownerReferences"),
    ));
    errs.extend(validate_finalizers(
        &meta.finalizers,
        &child(path, "finalizers"),
    ));
    errs
}

/// `ValidateObjectMetaUpdate`: name, namespace, uid and creationTimestamp are immutable (an
/// empty uid or creationTimestamp in the update means "unchanged": the server fills them in).
pub fn validate_object_meta_update(new: &ObjectMeta, old: &ObjectMeta, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    errs.extend(immutable(
        &new.name(),
        &old.name(),
        child(path, "name"),
        |v| quote(v),
    ));
    errs.extend(immutable(
        &new.namespace(),
        &old.namespace(),
        child(path, "namespace"),
        |v| quote(v),
    ));
    if !new.uid().is_empty() {
        errs.extend(immutable(&new.uid(), &old.uid(), child(path, "uid"), |v| {
            quote(v)
        }));
    }
    if new.creation_timestamp.is_some() {
        errs.extend(immutable(
            &new.creation_timestamp,
            &old.creation_timestamp,
            child(path, "creationTimestamp"),
            |v| {
                v.map(|t| quote(&t.to_string()))
                    .unwrap_or_else(|| "null".into())
            },
        ));
    }
    if let Some(g) = new.generation {
        errs.extend(nonnegative(child(path, "generation"), g));
    }
    errs.extend(validate_labels(&new.labels, &child(path, "labels")));
    errs.extend(validate_annotations(
        &new.annotations,
        &child(path, "annotations"),
    ));
    errs.extend(validate_owner_references(
        &new.owner_references,
        &child(path, "ownerReferences"),
    ));
    errs.extend(validate_finalizers(
        &new.finalizers,
        &child(path, "finalizers"),
    ));
    errs
}

/// `ValidateLabelName`.
pub fn validate_label_name(name: &str, path: &str) -> ErrorList {
    qualified_name_errors(name)
        .into_iter()
        .map(|m| invalid(path, name, m))
        .collect()
}

/// `ValidateLabels`: keys are qualified names, values label values.
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    for (k, v) in labels {
        errs.extend(validate_label_name(k, path));
        for m in label_value_errors(v) {
            errs.push(invalid(path, v, m));
        }
    }
    errs
}

/// `ValidateAnnotations`: keys are (case-insensitive) qualified names, total size ≤ 256 KiB.
pub fn validate_annotations(annotations: &BTreeMap<String, String>, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    let mut size = 0usize;
    for (k, v) in annotations {
        for m in qualified_name_errors(&k.to_lowercase()) {
            errs.push(invalid(path, k, m));
        }
        size += k.len() + v.len();
    }
    if size > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// `ValidateOwnerReferences`.
pub fn validate_owner_references(refs: &[OwnerReference], path: &str) -> ErrorList {
    let mut errs = Vec::new();
    let mut first_controller: Option<String> = None;
    for r in refs {
        // Kubernetes reports these without the index.
        let version = r.api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(invalid(
                child(path, "apiVersion"),
                &r.api_version,
                "version must not be empty",
            ));
        }
        if r.kind.is_empty() {
            errs.push(invalid(
                child(path, "kind"),
                &r.kind,
                "kind must not be empty",
            ));
        }
        if r.name.is_empty() {
            errs.push(invalid(
                child(path, "name"),
                &r.name,
                "name must not be empty",
            ));
        }
        if r.uid.is_empty() {
            errs.push(invalid(child(path, "uid"), &r.uid, "uid must not be empty"));
        }
        if r.controller == Some(true) {
            let cur = format!("{}/{}", r.kind, r.name);
            match &first_controller {
                Some(first) => errs.push(invalid_raw(
                    path,
                    "[...]",
                    format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {cur}"),
                )),
                None => first_controller = Some(cur),
            }
        }
    }
    errs
}

const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// `ValidateFinalizers`: qualified names; non-standard ones must have a domain prefix.
pub fn validate_finalizers(finalizers: &[String], path: &str) -> ErrorList {
    let mut errs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, f) in finalizers.iter().enumerate() {
        let msgs = qualified_name_errors(f);
        if !msgs.is_empty() {
            for m in msgs {
                errs.push(invalid(path, f, m));
            }
        } else if !STANDARD_FINALIZERS.contains(&f.as_str()) && !f.contains('/') {
            errs.push(invalid(
                path,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
        if !seen.insert(f.as_str()) {
            errs.push(duplicate(index(path, i), f));
        }
    }
    errs
}

/// `ValidateLabelSelector` (metav1 validation): operators, values, keys and matchLabels.
pub fn validate_label_selector(sel: &LabelSelector, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    for (i, e) in sel.match_expressions.iter().enumerate() {
        let p = index(&child(path, "matchExpressions"), i);
        match e.operator.as_str() {
            "In" | "NotIn" => {
                if e.values.is_empty() {
                    errs.push(required(
                        child(&p, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !e.values.is_empty() {
                    errs.push(forbidden(
                        child(&p, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(invalid(
                child(&p, "operator"),
                op,
                "not a valid selector operator",
            )),
        }
        errs.extend(validate_label_name(&e.key, &child(&p, "key")));
        for (j, v) in e.values.iter().enumerate() {
            for m in label_value_errors(v) {
                errs.push(invalid(index(&child(&p, "values"), j), v, m));
            }
        }
    }
    errs.extend(validate_labels(
        &sel.match_labels,
        &child(path, "matchLabels"),
    ));
    errs
}
