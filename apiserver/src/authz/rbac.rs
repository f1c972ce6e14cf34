//! RBAC evaluation (Kubernetes' `RBACAuthorizer`) as a pure function over the bound roles, and
//! the bootstrap policy: `cluster-admin`, `admin`, `edit`, `view`, `system:node`, discovery.

use std::collections::HashMap;

use kapsel_api::rbac::RBAC_GROUP;
use kapsel_api::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};

use super::attributes::Attributes;
use crate::auth::UserInfo;

/// The group whose members may do anything (`system:masters`).
pub const MASTERS_GROUP: &str = "system:masters";
pub const NODES_GROUP: &str = "system:nodes";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// Join tokens.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// Where joining nodes get their client certificate (security.rs).
const NODE_CSR_PATH: &str = "/kapsel/v1/nodecsr";

/// The RBAC objects, indexed for evaluation.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// (namespace, name) → rules.
    pub roles: HashMap<(String, String), Vec<PolicyRule>>,
    pub cluster_role_bindings: HashMap<String, ClusterRoleBinding>,
    /// namespace → name → binding.
    pub role_bindings: HashMap<String, HashMap<String, RoleBinding>>,
}

impl Policy {
    pub fn put_cluster_role(&mut self, r: ClusterRole) {
        self.cluster_roles
            .insert(r.metadata.name().to_string(), r.rules);
    }
    pub fn put_role(&mut self, r: Role) {
        let key = (
            r.metadata.namespace().to_string(),
            r.metadata.name().to_string(),
        );
        self.roles.insert(key, r.rules);
    }
    pub fn put_cluster_role_binding(&mut self, b: ClusterRoleBinding) {
        self.cluster_role_bindings
            .insert(b.metadata.name().to_string(), b);
    }
    pub fn put_role_binding(&mut self, b: RoleBinding) {
        self.role_bindings
            .entry(b.metadata.namespace().to_string())
            .or_default()
            .insert(b.metadata.name().to_string(), b);
    }
    /// Forget the object of `resource` (`roles`, …) at `namespace`/`name`.
    pub fn remove(&mut self, resource: &str, namespace: &str, name: &str) {
        match resource {
            "clusterroles" => {
                self.cluster_roles.remove(name);
            }
            "roles" => {
                self.roles
                    .remove(&(namespace.to_string(), name.to_string()));
            }
            "clusterrolebindings" => {
                self.cluster_role_bindings.remove(name);
            }
            "rolebindings" => {
                if let Some(m) = self.role_bindings.get_mut(namespace) {
                    m.remove(name);
                }
            }
            _ => {}
        }
    }

    fn role_ref_rules(&self, kind: &str, ns: &str, name: &str) -> Option<&Vec<PolicyRule>> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name),
            "Role" => self.roles.get(&(ns.to_string(), name.to_string())),
            _ => None,
        }
    }

    /// Whether a role bound to `user` allows `a`.
    pub fn allows(&self, user: &UserInfo, a: &Attributes) -> bool {
        for b in self.cluster_role_bindings.values() {
            if b.role_ref.api_group != RBAC_GROUP && !b.role_ref.api_group.is_empty() {
                continue;
            }
            if !b.subjects.iter().any(|s| subject_matches(s, user, "")) {
                continue;
            }
            if let Some(rules) = self.role_ref_rules(&b.role_ref.kind, "", &b.role_ref.name) {
                if rules.iter().any(|r| rule_allows(r, a)) {
                    return true;
                }
            }
        }
        if a.namespace.is_empty() {
            return false;
        }
        let Some(bindings) = self.role_bindings.get(&a.namespace) else {
            return false;
        };
        bindings.values().any(|b| {
            b.subjects
                .iter()
                .any(|s| subject_matches(s, user, &a.namespace))
                && self
                    .role_ref_rules(&b.role_ref.kind, &a.namespace, &b.role_ref.name)
                    .is_some_and(|rules| rules.iter().any(|r| rule_allows(r, a)))
        })
    }
}

/// Whether binding subject `s` names `user` (`binding_ns`: the namespace of a RoleBinding, the
/// default namespace of its ServiceAccount subjects).
pub fn subject_matches(s: &Subject, user: &UserInfo, binding_ns: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == user.name,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Whether one rule allows `a` (Kubernetes' `RuleAllows`).
pub fn rule_allows(r: &PolicyRule, a: &Attributes) -> bool {
    if !has(&r.verbs, &a.verb) {
        return false;
    }
    if !a.resource_request {
        return r.non_resource_urls.iter().any(|u| {
            u == "*" || *u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
        });
    }
    if !has(&r.api_groups, &a.api_group) {
        return false;
    }
    let combined = a.full_resource();
    let resource_ok = r.resources.iter().any(|res| {
        res == "*"
            || *res == combined
            || (!a.subresource.is_empty() && *res == format!("*/{}", a.subresource))
    });
    if !resource_ok {
        return false;
    }
    r.resource_names.is_empty() || (!a.name.is_empty() && r.resource_names.contains(&a.name))
}

// ------------------------------------------------------------------------------------------
// Bootstrap policy
// ------------------------------------------------------------------------------------------

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule::resources(groups, resources, verbs)
}

fn view_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
            READ,
        ),
        rule(&[""], &["namespaces"], READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
            READ,
        ),
        rule(
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
            READ,
        ),
        rule(
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
            READ,
        ),
        rule(
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
            READ,
        ),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
            READ,
        ),
        // system:aggregated-metrics-reader is aggregated into view in Kubernetes.
        rule(&["metrics.k8s.io"], &["pods", "nodes"], READ),
    ]
}

fn edit_rules() -> Vec<PolicyRule> {
    let mut r = vec![
        rule(
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
            ],
            WRITE,
        ),
        rule(
            &[""],
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
            READ,
        ),
        rule(&[""], &["pods/eviction"], &["create"]),
        rule(
            &[""],
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
            WRITE,
        ),
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(&[""], &["serviceaccounts"], &["impersonate"]),
        rule(
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
            WRITE,
        ),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
        rule(&["batch"], &["cronjobs", "jobs"], WRITE),
        rule(&["policy"], &["poddisruptionbudgets"], WRITE),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
            WRITE,
        ),
        rule(&["coordination.k8s.io"], &["leases"], READ),
        rule(&["coordination.k8s.io"], &["leases"], WRITE),
    ];
    r.extend(view_rules());
    r
}

fn admin_rules() -> Vec<PolicyRule> {
    let mut r = vec![
        rule(
            &[RBAC_GROUP],
            &["rolebindings", "roles"],
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        ),
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
            &["create"],
        ),
    ];
    r.extend(edit_rules());
    r
}

/// What a node's identity may do beyond what the node authorizer decides itself (the node
/// authorizer runs first and denies everything of other nodes).
fn node_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[""],
            &["nodes"],
            &[
                "create", "get", "list", "watch", "update", "patch", "delete",
            ],
        ),
        rule(&[""], &["nodes/status"], &["get", "patch", "update"]),
        rule(
            &["", "events.k8s.io"],
            &["events"],
            &["create", "patch", "update"],
        ),
        rule(&[""], &["pods"], &["get", "list", "watch", "delete"]),
        rule(&[""], &["pods/status"], &["get", "patch", "update"]),
        rule(&[""], &["services", "endpoints"], READ),
        rule(&[""], &["secrets", "configmaps"], &["get"]),
        // The agent applies the ImageProfile matching each container's image.
        rule(&["kapsel.dev"], &["imageprofiles"], READ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "create", "update", "patch", "delete"],
        ),
        // The agents' gRPC component API (kapsel-specific; the component service checks every
        // call against the calling node, see component/).
        PolicyRule::urls(&["/kapsel.v1.NodeAgent/*"], &["post"]),
        // Certificate renewal (security.rs checks that a node renews only its own).
        PolicyRule::urls(&[NODE_CSR_PATH], &["post"]),
    ]
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    let mut r = ClusterRole::with_meta(meta(name));
    r.rules = rules;
    r
}

fn meta(name: &str) -> kapsel_api::ObjectMeta {
    kapsel_api::ObjectMeta {
        name: Some(name.into()),
        labels: [(
            "kubernetes.io/bootstrapping".to_string(),
            "rbac-defaults".to_string(),
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

fn binding(name: &str, role: &str, groups: &[&str]) -> ClusterRoleBinding {
    let mut b = ClusterRoleBinding::with_meta(meta(name));
    b.role_ref = kapsel_api::RoleRef {
        api_group: RBAC_GROUP.into(),
        kind: "ClusterRole".into(),
        name: role.into(),
    };
    b.subjects = groups
        .iter()
        .map(|g| Subject {
            kind: "Group".into(),
            api_group: Some(RBAC_GROUP.into()),
            name: (*g).into(),
            namespace: None,
        })
        .collect();
    b
}

/// The default ClusterRoles (created at first start; an operator may edit them afterwards).
pub fn bootstrap_cluster_roles() -> Vec<ClusterRole> {
    let everything = vec![
        rule(&["*"], &["*"], &["*"]),
        PolicyRule::urls(&["*"], &["*"]),
    ];
    let health = &[
        "/healthz",
        "/livez",
        "/readyz",
        "/version",
        "/version/",
        "/cacerts",
    ];
    let mut discovery: Vec<&str> = vec![
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/openapi",
        "/openapi/*",
    ];
    discovery.extend_from_slice(health);
    vec![
        cluster_role("cluster-admin", everything),
        cluster_role("admin", admin_rules()),
        cluster_role("edit", edit_rules()),
        cluster_role("view", view_rules()),
        cluster_role("system:node", node_rules()),
        cluster_role(
            "system:discovery",
            vec![PolicyRule::urls(&discovery, &["get"])],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![PolicyRule::urls(health, &["get"])],
        ),
        cluster_role(
            "system:node-bootstrapper",
            vec![PolicyRule::urls(&[NODE_CSR_PATH], &["post"])],
        ),
    ]
}

/// The default ClusterRoleBindings: `system:masters` → `cluster-admin`, `system:nodes` →
/// `system:node`, discovery for authenticated users, health and version for everyone.
pub fn bootstrap_cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    vec![
        binding("cluster-admin", "cluster-admin", &[MASTERS_GROUP]),
        binding("system:node", "system:node", &[NODES_GROUP]),
        binding(
            "system:discovery",
            "system:discovery",
            &[AUTHENTICATED_GROUP],
        ),
        binding(
            "system:node-bootstrapper",
            "system:node-bootstrapper",
            &[BOOTSTRAPPERS_GROUP],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[AUTHENTICATED_GROUP, UNAUTHENTICATED_GROUP],
        ),
    ]
}

/// The bootstrap policy alone (for tests and as the cache's starting point).
pub fn bootstrap_policy() -> Policy {
    let mut p = Policy::default();
    for r in bootstrap_cluster_roles() {
        p.put_cluster_role(r);
    }
    for b in bootstrap_cluster_role_bindings() {
        p.put_cluster_role_binding(b);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::RoleRef;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn role_binding(ns: &str, name: &str, kind: &str, role: &str, subject: Subject) -> RoleBinding {
        let mut b = RoleBinding::with_meta(kapsel_api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        });
        b.role_ref = RoleRef {
            api_group: RBAC_GROUP.into(),
            kind: kind.into(),
            name: role.into(),
        };
        b.subjects = vec![subject];
        b
    }

    fn user_subject(name: &str) -> Subject {
        Subject {
            kind: "User".into(),
            api_group: Some(RBAC_GROUP.into()),
            name: name.into(),
            namespace: None,
        }
    }

    fn policy() -> Policy {
        let mut p = bootstrap_policy();
        p.put_role_binding(role_binding(
            "a",
            "v",
            "ClusterRole",
            "view",
            user_subject("viewer"),
        ));
        p.put_role_binding(role_binding(
            "a",
            "e",
            "ClusterRole",
            "edit",
            user_subject("editor"),
        ));
        p.put_role_binding(role_binding(
            "a",
            "ad",
            "ClusterRole",
            "admin",
            user_subject("boss"),
        ));
        let mut r = Role::with_meta(kapsel_api::ObjectMeta {
            name: Some("one-cm".into()),
            namespace: Some("b".into()),
            ..Default::default()
        });
        r.rules = vec![PolicyRule {
            resource_names: vec!["settings".into()],
            ..rule(&[""], &["configmaps"], &["get", "update"])
        }];
        p.put_role(r);
        p.put_role_binding(role_binding(
            "b",
            "cm",
            "Role",
            "one-cm",
            user_subject("cm-user"),
        ));
        p.put_role_binding(role_binding(
            "b",
            "sa",
            "ClusterRole",
            "view",
            Subject {
                kind: "ServiceAccount".into(),
                name: "robot".into(),
                ..Default::default()
            },
        ));
        let mut logs = ClusterRole::with_meta(meta("log-reader"));
        logs.rules = vec![
            rule(&[""], &["*/log"], &["get"]),
            PolicyRule::urls(&["/metrics"], &["get"]),
        ];
        p.put_cluster_role(logs);
        let mut b = binding("logs", "log-reader", &["ops"]);
        b.subjects.push(user_subject("carol"));
        p.put_cluster_role_binding(b);
        p
    }

    #[test]
    fn rbac_table() {
        let p = policy();
        let admin = user("system:admin", &[MASTERS_GROUP, AUTHENTICATED_GROUP]);
        let viewer = user("viewer", &[AUTHENTICATED_GROUP]);
        let editor = user("editor", &[AUTHENTICATED_GROUP]);
        let boss = user("boss", &[AUTHENTICATED_GROUP]);
        let cm = user("cm-user", &[]);
        let robot = user("system:serviceaccount:b:robot", &[]);
        let op = user("dave", &["ops"]);
        let carol = user("carol", &[]);
        let anon = user("system:anonymous", &[UNAUTHENTICATED_GROUP]);
        let boot = user("system:bootstrap:abcdef", &[BOOTSTRAPPERS_GROUP]);
        let r = Attributes::resource;
        let url = |verb: &str, path: &str| Attributes {
            verb: verb.into(),
            path: path.into(),
            ..Default::default()
        };
        let table: Vec<(&UserInfo, Attributes, bool)> = vec![
            (&admin, r("delete", "", "x", "pods", "p"), true),
            (
                &admin,
                r(
                    "escalate",
                    "rbac.authorization.k8s.io",
                    "",
                    "clusterroles",
                    "x",
                ),
                true,
            ),
            (&admin, url("get", "/anything"), true),
            (&viewer, r("list", "", "a", "pods", ""), true),
            (&viewer, r("watch", "", "a", "pods", ""), true),
            (&viewer, r("get", "", "a", "pods/log", "p"), true),
            (&viewer, r("create", "", "a", "pods", ""), false),
            (&viewer, r("get", "", "a", "secrets", "s"), false),
            (&viewer, r("list", "", "b", "pods", ""), false),
            (&viewer, r("list", "", "", "pods", ""), false),
            (
                &viewer,
                r("get", "apps", "a", "deployments/scale", "d"),
                true,
            ),
            (
                &viewer,
                r("update", "apps", "a", "deployments/scale", "d"),
                false,
            ),
            (&viewer, url("get", "/api/v1"), true),
            (&viewer, url("get", "/healthz"), true),
            (&viewer, url("post", "/kapsel.v1.NodeAgent/Register"), false),
            (&editor, r("create", "", "a", "pods", ""), true),
            (&editor, r("deletecollection", "", "a", "pods", ""), true),
            (&editor, r("get", "", "a", "secrets", "s"), true),
            (
                &editor,
                r("patch", "apps", "a", "deployments/scale", "d"),
                true,
            ),
            (&editor, r("update", "", "a", "pods/status", "p"), false),
            (&editor, r("create", "", "b", "pods", ""), false),
            (
                &editor,
                r("create", RBAC_GROUP, "a", "rolebindings", ""),
                false,
            ),
            (&editor, r("update", "", "a", "resourcequotas", "q"), false),
            (
                &boss,
                r("create", RBAC_GROUP, "a", "rolebindings", ""),
                true,
            ),
            (
                &boss,
                r("create", RBAC_GROUP, "", "clusterrolebindings", ""),
                false,
            ),
            (&cm, r("get", "", "b", "configmaps", "settings"), true),
            (&cm, r("update", "", "b", "configmaps", "settings"), true),
            (&cm, r("get", "", "b", "configmaps", "other"), false),
            (&cm, r("list", "", "b", "configmaps", ""), false),
            (&cm, r("delete", "", "b", "configmaps", "settings"), false),
            (&robot, r("list", "", "b", "pods", ""), true),
            (&robot, r("list", "", "a", "pods", ""), false),
            (&op, r("get", "", "z", "pods/log", "p"), true),
            (&op, r("get", "", "z", "pods", "p"), false),
            (&carol, url("get", "/metrics"), true),
            (&carol, url("get", "/metrics/x"), false),
            (&carol, url("get", "/api"), false),
            (&anon, url("get", "/version"), true),
            (&anon, url("get", "/api"), false),
            (&anon, url("get", "/cacerts"), true),
            (&anon, url("post", "/kapsel/v1/nodecsr"), false),
            (&boot, url("post", "/kapsel/v1/nodecsr"), true),
            (&boot, r("list", "", "", "secrets", ""), false),
            (&anon, r("list", "", "a", "pods", ""), false),
        ];
        for (u, a, want) in table {
            assert_eq!(p.allows(u, &a), want, "{} {a:?}", u.name);
        }
    }

    #[test]
    fn removal_revokes() {
        let mut p = policy();
        let viewer = user("viewer", &[]);
        let a = Attributes::resource("list", "", "a", "pods", "");
        assert!(p.allows(&viewer, &a));
        p.remove("rolebindings", "a", "v");
        assert!(!p.allows(&viewer, &a));
        let editor = user("editor", &[]);
        p.remove("clusterroles", "", "edit");
        assert!(!p.allows(&editor, &a));
    }

    #[test]
    fn bootstrap_objects_are_valid() {
        use kapsel_api::Validate;
        for r in bootstrap_cluster_roles() {
            assert!(
                r.validate().is_empty(),
                "{}: {:?}",
                r.metadata.name(),
                r.validate()
            );
        }
        for b in bootstrap_cluster_role_bindings() {
            assert!(
                b.validate().is_empty(),
                "{}: {:?}",
                b.metadata.name(),
                b.validate()
            );
        }
    }
}
