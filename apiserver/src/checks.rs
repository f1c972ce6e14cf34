//! Checks the API server makes itself on every object, whatever the per-kind validation says:
//! object names and quantity syntax. (The api crate's `Validate` holds the per-kind rules; these
//! are merged with its errors, without duplicates.)

use serde_json::Value;

use kapsel_api::quantity::parse_quantity;
use kapsel_api::{ErrorList, FieldError, FieldErrorKind};

use crate::registry::ResourceDef;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_label(s: &str) -> bool {
    is_label(s)
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

pub fn is_dns1035_label(s: &str) -> bool {
    is_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

fn invalid(field: &str, value: &str, detail: impl Into<String>) -> FieldError {
    FieldError {
        kind: FieldErrorKind::Invalid,
        field: field.to_string(),
        value: Some(format!("{value:?}")),
        detail: detail.into(),
    }
}

/// Errors of `metadata.name` for this kind (`name` already resolved from generateName).
pub fn name_errors(def: &ResourceDef, name: &str) -> ErrorList {
    let field = "metadata.name";
    if name.is_empty() {
        return vec![FieldError {
            kind: FieldErrorKind::Required,
            field: field.into(),
            value: None,
            detail: "name or generateName is required".into(),
        }];
    }
    if name == "." || name == ".." {
        return vec![invalid(field, name, format!("may not be '{name}'"))];
    }
    if name.contains('/') || name.contains('%') {
        return vec![invalid(field, name, "may not contain '/' or '%'")];
    }
    let (ok, msg, max) = match def.plural {
        "namespaces" => (is_dns1123_label(name), DNS1123_LABEL_MSG, 63),
        "services" => (is_dns1035_label(name), DNS1035_LABEL_MSG, 63),
        // Kubernetes validates event names only as path segments.
        "events" => (true, "", 253),
        // RBAC names are path segments too (`system:node`).
        "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings" => (true, "", 253),
        _ => (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN_MSG, 253),
    };
    let mut errs = Vec::new();
    if name.len() > max {
        errs.push(invalid(
            field,
            name,
            format!("must be no more than {max} characters"),
        ));
    }
    if !ok && name.len() <= max {
        errs.push(invalid(field, name, msg));
    }
    errs
}

/// Errors of a namespace name given in a path.
pub fn namespace_name_ok(ns: &str) -> bool {
    is_dns1123_label(ns)
}

/// Keys whose object values are resource lists (`{cpu: "100m"}`) in the kinds that carry them.
const QUANTITY_MAPS: &[&str] = &[
    "limits",
    "requests",
    "hard",
    "used",
    "capacity",
    "allocatable",
    "max",
    "min",
    "default",
    "defaultRequest",
    "maxLimitRequestRatio",
    "overhead",
];
/// Keys whose string values are quantities.
const QUANTITY_FIELDS: &[&str] = &["sizeLimit", "divisor"];

/// Every quantity in the object that does not parse, with its path.
pub fn quantity_errors(def: &ResourceDef, obj: &Value) -> ErrorList {
    let mut errs = Vec::new();
    if matches!(
        def.plural,
        "pods" | "deployments" | "replicasets" | "limitranges" | "resourcequotas" | "nodes"
    ) {
        walk(obj, &mut Vec::new(), &mut errs);
    }
    errs
}

/// One step of a field path; the path is only spelled out for an error.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn path_string(path: &[Seg<'_>]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn check_quantity(path: &[Seg<'_>], v: &Value, errs: &mut ErrorList) {
    let n;
    let s = match v {
        Value::String(s) => s.as_str(),
        Value::Number(x) => {
            n = x.to_string();
            n.as_str()
        }
        _ => return,
    };
    if let Err(e) = parse_quantity(s) {
        errs.push(invalid(&path_string(path), s, e.to_string()));
    }
}

fn walk<'a>(v: &'a Value, path: &mut Vec<Seg<'a>>, errs: &mut ErrorList) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                path.push(Seg::Key(k));
                if QUANTITY_MAPS.contains(&k.as_str()) {
                    if let Value::Object(list) = child {
                        for (res, q) in list {
                            path.push(Seg::Key(res));
                            check_quantity(path, q, errs);
                            path.pop();
                        }
                        path.pop();
                        continue;
                    }
                }
                if QUANTITY_FIELDS.contains(&k.as_str()) {
                    check_quantity(path, child, errs);
                } else if !matches!(
                    // Labels, annotations and data maps hold user strings, never quantities.
                    k.as_str(),
                    "labels" | "annotations" | "data" | "nodeSelector" | "selector"
                ) {
                    walk(child, path, errs);
                }
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                walk(child, path, errs);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Append `more` to `errs`, skipping errors on a field `errs` already reports.
pub fn merge_errors(errs: &mut ErrorList, more: ErrorList) {
    for e in more {
        if !errs.iter().any(|x| x.field == e.field) {
            errs.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    #[test]
    fn names() {
        let pods = find("", "v1", "pods").unwrap();
        assert!(name_errors(pods, "web-1.a").is_empty());
        assert_eq!(name_errors(pods, "")[0].kind, FieldErrorKind::Required);
        let e = &name_errors(pods, "Web_1")[0];
        assert!(e.to_string().starts_with(
            "metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain"
        ));
        assert!(!name_errors(pods, &"a".repeat(254)).is_empty());
        let svc = find("", "v1", "services").unwrap();
        assert!(!name_errors(svc, "1abc").is_empty());
        let ns = find("", "v1", "namespaces").unwrap();
        assert!(!name_errors(ns, "a.b").is_empty());
        assert!(name_errors(ns, "kube-system").is_empty());
    }

    #[test]
    fn quantities_are_checked_with_paths() {
        let pods = find("", "v1", "pods").unwrap();
        let v = serde_json::json!({"metadata": {"labels": {"max": "x"}}, "spec": {"containers": [
            {"name": "c", "resources": {"limits": {"cpu": "abc", "memory": "1Gi"}, "requests": {"cpu": 1}}}
        ]}});
        let errs = quantity_errors(pods, &v);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.containers[0].resources.limits.cpu");
    }
}
