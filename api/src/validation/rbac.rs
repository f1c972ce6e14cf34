//! RBAC rules (Kubernetes' `pkg/apis/rbac/validation`).

use super::field::*;
use super::meta::*;
use super::ErrorList;
use crate::meta::ObjectMeta;
use crate::rbac::*;

const RBAC_V1: &str = "rbac.authorization.k8s.io/v1";

fn validate_rules(rules: &[PolicyRule], namespaced: bool) -> ErrorList {
    let mut errs = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let path = index("rules", i);
        if r.verbs.is_empty() {
            errs.push(required(
                child(&path, "verbs"),
                "verbs must contain at least one value",
            ));
        }
        if !r.non_resource_urls.is_empty() {
            if namespaced {
                errs.push(invalid_raw(
                    child(&path, "nonResourceURLs"),
                    format!("{:?}", r.non_resource_urls),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !r.api_groups.is_empty() || !r.resources.is_empty() || !r.resource_names.is_empty() {
                errs.push(invalid_raw(
                    child(&path, "nonResourceURLs"),
                    format!("{:?}", r.non_resource_urls),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if r.api_groups.is_empty() {
            errs.push(required(
                child(&path, "apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if r.resources.is_empty() {
            errs.push(required(
                child(&path, "resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    errs
}

fn validate_meta(meta: &ObjectMeta, namespaced: bool) -> ErrorList {
    validate_object_meta_with(meta, namespaced, name_is_path_segment, "metadata")
}

pub fn validate_role(r: &Role) -> ErrorList {
    let mut errs = validate_type_meta((&r.api_version, &r.kind), RBAC_V1, "Role");
    errs.extend(validate_meta(&r.metadata, true));
    errs.extend(validate_rules(&r.rules, true));
    errs
}

pub fn validate_cluster_role(r: &ClusterRole) -> ErrorList {
    let mut errs = validate_type_meta((&r.api_version, &r.kind), RBAC_V1, "ClusterRole");
    errs.extend(validate_meta(&r.metadata, false));
    errs.extend(validate_rules(&r.rules, false));
    errs
}

fn validate_role_ref(rr: &RoleRef, kinds: &[&str]) -> ErrorList {
    let mut errs = Vec::new();
    if rr.api_group != RBAC_GROUP {
        errs.push(not_supported(
            "roleRef.apiGroup",
            &rr.api_group,
            &[RBAC_GROUP],
        ));
    }
    if rr.kind.is_empty() {
        errs.push(required("roleRef.kind", ""));
    } else if !kinds.contains(&rr.kind.as_str()) {
        errs.push(not_supported("roleRef.kind", &rr.kind, kinds));
    }
    if rr.name.is_empty() {
        errs.push(required("roleRef.name", ""));
    } else {
        for msg in name_is_path_segment(&rr.name, false) {
            errs.push(invalid("roleRef.name", &rr.name, msg));
        }
    }
    errs
}

fn validate_subjects(subjects: &[Subject], cluster: bool) -> ErrorList {
    let mut errs = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        let path = index("subjects", i);
        if s.name.is_empty() {
            errs.push(required(child(&path, "name"), ""));
        }
        let group = s.api_group.as_deref().unwrap_or("");
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !group.is_empty() {
                    errs.push(not_supported(child(&path, "apiGroup"), group, &[""]));
                }
                if cluster && s.namespace.as_deref().unwrap_or("").is_empty() {
                    errs.push(required(child(&path, "namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    errs.push(not_supported(
                        child(&path, "apiGroup"),
                        group,
                        &[RBAC_GROUP],
                    ));
                }
            }
            other => errs.push(not_supported(
                child(&path, "kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errs
}

pub fn validate_role_binding(b: &RoleBinding) -> ErrorList {
    let mut errs = validate_type_meta((&b.api_version, &b.kind), RBAC_V1, "RoleBinding");
    errs.extend(validate_meta(&b.metadata, true));
    errs.extend(validate_role_ref(&b.role_ref, &["Role", "ClusterRole"]));
    errs.extend(validate_subjects(&b.subjects, false));
    errs
}

pub fn validate_cluster_role_binding(b: &ClusterRoleBinding) -> ErrorList {
    let mut errs = validate_type_meta((&b.api_version, &b.kind), RBAC_V1, "ClusterRoleBinding");
    errs.extend(validate_meta(&b.metadata, false));
    errs.extend(validate_role_ref(&b.role_ref, &["ClusterRole"]));
    errs.extend(validate_subjects(&b.subjects, true));
    errs
}

fn role_ref_immutable(new: &RoleRef, old: &RoleRef) -> Option<super::FieldError> {
    (new != old).then(|| {
        invalid_raw(
            "roleRef",
            format!(
                "{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
                new.api_group, new.kind, new.name
            ),
            "cannot change roleRef",
        )
    })
}

pub fn validate_role_binding_update(new: &RoleBinding, old: &RoleBinding) -> ErrorList {
    let mut errs = validate_role_binding(new);
    errs.extend(validate_object_meta_update(
        &new.metadata,
        &old.metadata,
        "metadata",
    ));
    errs.extend(role_ref_immutable(&new.role_ref, &old.role_ref));
    errs
}

pub fn validate_cluster_role_binding_update(
    new: &ClusterRoleBinding,
    old: &ClusterRoleBinding,
) -> ErrorList {
    let mut errs = validate_cluster_role_binding(new);
    errs.extend(validate_object_meta_update(
        &new.metadata,
        &old.metadata,
        "metadata",
    ));
    errs.extend(role_ref_immutable(&new.role_ref, &old.role_ref));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resource;

    fn meta(name: &str, ns: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn roles() {
        let mut r = Role::with_meta(meta("pod-reader", Some("a")));
        r.rules = vec![PolicyRule::resources(&[""], &["pods"], &["get"])];
        assert!(validate_role(&r).is_empty());
        r.rules.push(PolicyRule::urls(&["/healthz"], &["get"]));
        r.rules.push(PolicyRule::resources(&[], &[], &[]));
        let fields: Vec<String> = validate_role(&r).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "rules[1].nonResourceURLs",
                "rules[2].verbs",
                "rules[2].apiGroups",
                "rules[2].resources"
            ]
        );
        let mut c = ClusterRole::with_meta(meta("system:node", None));
        c.rules = vec![PolicyRule::urls(&["/healthz"], &["get"])];
        assert!(
            validate_cluster_role(&c).is_empty(),
            "{:?}",
            validate_cluster_role(&c)
        );
        assert_eq!(ClusterRole::PLURAL, "clusterroles");
    }

    #[test]
    fn bindings() {
        let mut b = RoleBinding::with_meta(meta("b", Some("a")));
        b.role_ref = RoleRef {
            api_group: RBAC_GROUP.into(),
            kind: "ClusterRole".into(),
            name: "view".into(),
        };
        b.subjects = vec![Subject {
            kind: "User".into(),
            api_group: Some(RBAC_GROUP.into()),
            name: "alice".into(),
            namespace: None,
        }];
        assert!(validate_role_binding(&b).is_empty());
        let mut c = ClusterRoleBinding::with_meta(meta("c", None));
        c.role_ref = b.role_ref.clone();
        c.role_ref.kind = "Role".into();
        c.subjects = vec![Subject {
            kind: "ServiceAccount".into(),
            name: "default".into(),
            ..Default::default()
        }];
        let fields: Vec<String> = validate_cluster_role_binding(&c)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["roleRef.kind", "subjects[0].namespace"]);
        let mut b2 = b.clone();
        b2.role_ref.name = "edit".into();
        let errs = validate_role_binding_update(&b2, &b);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].detail, "cannot change roleRef");
    }
}
