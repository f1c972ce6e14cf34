//! Node restriction on the agents' gRPC component API (component/): the REST authorizer lets
//! nodes call `/kapsel.v1.NodeAgent/*`, and every call is then checked against the calling
//! node — a node acts only for itself (register, lease, node status, pod watch, stats, log
//! relay) and only on the pods and objects the node authorizer gives it. Callers that are not
//! nodes got here through RBAC (cluster admins) and are not restricted further.

use std::sync::Arc;

use tonic::{Request, Status};

use super::{forbidden_status, node, Attributes, Authorizer, Decision};
use crate::auth::UserInfo;

/// The calling node's name, when the caller is a node identity.
pub fn caller_node<T>(req: &Request<T>) -> Option<String> {
    req.extensions()
        .get::<UserInfo>()
        .and_then(|u| node::node_name(u).map(str::to_string))
}

/// Refuse a node acting for another node.
pub fn check_node(caller: Option<&str>, node: &str) -> Result<(), Status> {
    match caller {
        Some(n) if n != node => Err(Status::permission_denied(format!(
            "node {n:?} may not act for node {node:?}"
        ))),
        _ => Ok(()),
    }
}

/// The REST attributes of what a component call does to an object (`kind` as the proto names
/// it: `Pod`, `Secret`, `ConfigMap`, `Node`).
pub fn object_attributes(verb: &str, kind: &str, ns: &str, name: &str) -> Attributes {
    let resource = match kind {
        "Pod" => "pods",
        "Secret" => "secrets",
        "ConfigMap" => "configmaps",
        "Node" => "nodes",
        "PodStatus" => "pods/status",
        other => other,
    };
    Attributes::resource(verb, "", ns, resource, name)
}

/// Node restriction for one call: `node` is the node the call acts for, `object` what it
/// reads or writes. Non-node callers pass.
pub async fn restrict<T>(
    req: &Request<T>,
    node: Option<&str>,
    object: Option<Attributes>,
) -> Result<(), Status> {
    let Some(user) = req.extensions().get::<UserInfo>() else {
        return Ok(());
    };
    let Some(me) = node::node_name(user) else {
        return Ok(());
    };
    if let Some(n) = node {
        check_node(Some(me), n)?;
    }
    let Some(a) = object else {
        return Ok(());
    };
    let Some(authz) = req.extensions().get::<Arc<Authorizer>>() else {
        return Err(Status::internal("no authorizer in the request"));
    };
    match authz.check_fresh(user, &a, None).await {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => {
            let st = forbidden_status(user, &a, &reason);
            Err(Status::permission_denied(st.message.unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_act_only_for_themselves() {
        assert!(check_node(Some("n1"), "n1").is_ok());
        let e = check_node(Some("n1"), "n2").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(check_node(None, "n2").is_ok());
        let mut req = Request::new(());
        req.extensions_mut().insert(UserInfo {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        });
        assert_eq!(caller_node(&req).as_deref(), Some("n1"));
        let a = object_attributes("update", "PodStatus", "d", "p");
        assert_eq!(
            (a.resource.as_str(), a.subresource.as_str()),
            ("pods", "status")
        );
    }
}
