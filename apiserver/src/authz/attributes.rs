//! Request attributes as Kubernetes' `RequestInfoFactory` derives them from method and path:
//! verb, API group, namespace, resource, subresource and name of resource requests; path and
//! lower-case method of the others (`/healthz`, `/kapsel.v1.NodeAgent/...`).

/// What authorization decides on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`; for
    /// non-resource requests the lower-case HTTP method.
    pub verb: String,
    pub resource_request: bool,
    pub path: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// The raw `fieldSelector` of list/watch requests (node restriction looks at it).
    pub field_selector: Option<String>,
}

impl Attributes {
    /// `pods` or `pods/status`.
    pub fn full_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// A resource request (table tests, internal checks).
    pub fn resource(verb: &str, group: &str, ns: &str, resource: &str, name: &str) -> Self {
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            api_version: "v1".into(),
            namespace: ns.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        }
    }
}

/// Namespace subresources: `/namespaces/x/status` is the namespace `x`, not a collection.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of query parameter `key`.
fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

/// Derive the attributes of `method path?query`.
pub fn request_attributes(method: &str, path: &str, query: Option<&str>) -> Attributes {
    let query = query.unwrap_or("");
    let non_resource = || Attributes {
        verb: method.to_ascii_lowercase(),
        resource_request: false,
        path: path.to_string(),
        ..Default::default()
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest): (&str, &str, &[&str]) = match parts.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (g, v, rest),
        _ => return non_resource(),
    };
    let mut a = Attributes {
        resource_request: true,
        path: path.to_string(),
        api_group: group.to_string(),
        api_version: version.to_string(),
        ..Default::default()
    };
    // Legacy `/watch/` prefix.
    let mut watch_prefix = false;
    if rest.first() == Some(&"watch") {
        watch_prefix = true;
        rest = &rest[1..];
    }
    a.verb = match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
    .to_string();
    if watch_prefix && a.verb == "get" {
        a.verb = "watch".into();
    }
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        a.namespace = rest[1].to_string();
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    match rest {
        [r] => a.resource = r.to_string(),
        [r, n] => {
            a.resource = r.to_string();
            a.name = n.to_string();
        }
        [r, n, s, ..] => {
            a.resource = r.to_string();
            a.name = n.to_string();
            a.subresource = s.to_string();
        }
        [] => {}
    }
    // Connect subresources: `create` whatever the method, as a websocket upgrade is a GET
    // (Kubernetes 1.31+ asks for `create` on pods/exec for both).
    if matches!(a.subresource.as_str(), "exec" | "attach" | "portforward") && a.verb == "get" {
        a.verb = "create".into();
    }
    let watch = query_param(query, "watch").is_some_and(|v| v == "true" || v == "1");
    if a.name.is_empty() && a.verb == "get" {
        a.verb = if watch { "watch" } else { "list" }.into();
    } else if a.verb == "get" && watch {
        // `?watch=true&fieldSelector=metadata.name=x` style watches of one object.
        a.verb = "watch".into();
    }
    if a.name.is_empty() && a.verb == "delete" {
        a.verb = "deletecollection".into();
    }
    if matches!(a.verb.as_str(), "list" | "watch" | "deletecollection") {
        a.field_selector = query_param(query, "fieldSelector");
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: &str, uri: &str) -> Attributes {
        let (p, q) = uri
            .split_once('?')
            .map_or((uri, None), |(p, q)| (p, Some(q)));
        request_attributes(method, p, q)
    }

    #[test]
    fn resource_requests() {
        // (method, uri, verb, group, namespace, resource, subresource, name)
        let table = [
            ("GET", "/api/v1/pods", "list", "", "", "pods", "", ""),
            (
                "GET",
                "/api/v1/namespaces/a/pods/web/exec?command=sh",
                "create",
                "",
                "a",
                "pods",
                "exec",
                "web",
            ),
            (
                "POST",
                "/api/v1/namespaces/a/pods/web/exec?command=sh",
                "create",
                "",
                "a",
                "pods",
                "exec",
                "web",
            ),
            (
                "GET",
                "/api/v1/pods?watch=true",
                "watch",
                "",
                "",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods",
                "list",
                "",
                "a",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods/web",
                "get",
                "",
                "a",
                "pods",
                "",
                "web",
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods/web/log",
                "get",
                "",
                "a",
                "pods",
                "log",
                "web",
            ),
            (
                "PUT",
                "/api/v1/namespaces/a/pods/web/status",
                "update",
                "",
                "a",
                "pods",
                "status",
                "web",
            ),
            (
                "POST",
                "/api/v1/namespaces/a/pods",
                "create",
                "",
                "a",
                "pods",
                "",
                "",
            ),
            (
                "POST",
                "/api/v1/namespaces/a/pods/web/binding",
                "create",
                "",
                "a",
                "pods",
                "binding",
                "web",
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/a/deployments/d/scale",
                "patch",
                "apps",
                "a",
                "deployments",
                "scale",
                "d",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/a/pods/web",
                "delete",
                "",
                "a",
                "pods",
                "",
                "web",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/a/pods",
                "deletecollection",
                "",
                "a",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces",
                "list",
                "",
                "",
                "namespaces",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/a",
                "get",
                "",
                "a",
                "namespaces",
                "",
                "a",
            ),
            (
                "PUT",
                "/api/v1/namespaces/a/status",
                "update",
                "",
                "a",
                "namespaces",
                "status",
                "a",
            ),
            (
                "PUT",
                "/api/v1/namespaces/a/finalize",
                "update",
                "",
                "a",
                "namespaces",
                "finalize",
                "a",
            ),
            ("GET", "/api/v1/nodes/n1", "get", "", "", "nodes", "", "n1"),
            (
                "PATCH",
                "/api/v1/nodes/n1/status",
                "patch",
                "",
                "",
                "nodes",
                "status",
                "n1",
            ),
            (
                "GET",
                "/api/v1/watch/namespaces/a/pods",
                "watch",
                "",
                "a",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                "list",
                "rbac.authorization.k8s.io",
                "",
                "clusterroles",
                "",
                "",
            ),
            (
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
                "get",
                "coordination.k8s.io",
                "kube-node-lease",
                "leases",
                "",
                "n1",
            ),
        ];
        for (m, uri, verb, group, ns, res, sub, name) in table {
            let a = attrs(m, uri);
            assert!(a.resource_request, "{m} {uri}");
            assert_eq!(
                (
                    a.verb.as_str(),
                    a.api_group.as_str(),
                    a.namespace.as_str(),
                    a.resource.as_str(),
                    a.subresource.as_str(),
                    a.name.as_str()
                ),
                (verb, group, ns, res, sub, name),
                "{m} {uri}"
            );
        }
    }

    #[test]
    fn non_resource_requests() {
        for (m, uri, verb) in [
            ("GET", "/healthz", "get"),
            ("GET", "/version", "get"),
            ("GET", "/api", "get"),
            ("GET", "/api/v1", "get"),
            ("GET", "/apis", "get"),
            ("GET", "/apis/apps", "get"),
            ("GET", "/apis/apps/v1", "get"),
            ("POST", "/kapsel.v1.NodeAgent/Register", "post"),
        ] {
            let a = attrs(m, uri);
            assert!(!a.resource_request, "{uri}");
            assert_eq!(a.verb, verb);
            assert_eq!(a.path, uri);
        }
    }

    #[test]
    fn field_selectors_of_lists() {
        let a = attrs(
            "GET",
            "/api/v1/pods?watch=1&fieldSelector=spec.nodeName%3Dn1",
        );
        assert_eq!(a.verb, "watch");
        assert_eq!(a.field_selector.as_deref(), Some("spec.nodeName=n1"));
        let a = attrs(
            "GET",
            "/api/v1/namespaces/a/pods/x?fieldSelector=spec.nodeName%3Dn1",
        );
        assert_eq!(a.field_selector, None);
    }
}
