//! `rbac.authorization.k8s.io/v1`: Role, ClusterRole, RoleBinding, ClusterRoleBinding.

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::kind;

/// The API group of the RBAC kinds.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

kind! {
    Role { group: "rbac.authorization.k8s.io", version: "v1", api_version: "rbac.authorization.k8s.io/v1", plural: "roles", singular: "role", namespaced: true, short: [] }
    {
        #[serde(default)]
        pub rules: Vec<PolicyRule>,
    }
}

kind! {
    ClusterRole { group: "rbac.authorization.k8s.io", version: "v1", api_version: "rbac.authorization.k8s.io/v1", plural: "clusterroles", singular: "clusterrole", namespaced: false, short: [] }
    {
        #[serde(default)]
        pub rules: Vec<PolicyRule>,
    }
}

kind! {
    RoleBinding { group: "rbac.authorization.k8s.io", version: "v1", api_version: "rbac.authorization.k8s.io/v1", plural: "rolebindings", singular: "rolebinding", namespaced: true, short: [] }
    {
        #[serde(default)]
        pub subjects: Vec<Subject>,
        #[serde(default)]
        pub role_ref: RoleRef,
    }
}

kind! {
    ClusterRoleBinding { group: "rbac.authorization.k8s.io", version: "v1", api_version: "rbac.authorization.k8s.io/v1", plural: "clusterrolebindings", singular: "clusterrolebinding", namespaced: false, short: [] }
    {
        #[serde(default)]
        pub subjects: Vec<Subject>,
        #[serde(default)]
        pub role_ref: RoleRef,
    }
}

/// What a role allows: verbs on resources of API groups (optionally only some names), or verbs
/// on non-resource URLs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

impl PolicyRule {
    /// A resource rule (test and bootstrap helper).
    pub fn resources(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        PolicyRule {
            verbs: s(verbs),
            api_groups: s(groups),
            resources: s(resources),
            ..Default::default()
        }
    }

    /// A non-resource URL rule.
    pub fn urls(urls: &[&str], verbs: &[&str]) -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        PolicyRule {
            verbs: s(verbs),
            non_resource_urls: s(urls),
            ..Default::default()
        }
    }
}

/// Who a binding grants its role to: `User`, `Group` or `ServiceAccount`.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    #[serde(default)]
    pub kind: String,
    pub api_group: Option<String>,
    #[serde(default)]
    pub name: String,
    pub namespace: Option<String>,
}

/// The role a binding grants (`Role` in the binding's namespace, or `ClusterRole`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    #[serde(default)]
    pub api_group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}
