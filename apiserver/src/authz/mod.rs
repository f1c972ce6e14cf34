//! Authorization, and the other request guards of a secure server.
//!
//! - [`attributes`]: verb/group/resource/namespace/name of a request (Kubernetes'
//!   `RequestInfoFactory`).
//! - [`rbac`]: Role/ClusterRole/RoleBinding/ClusterRoleBinding evaluation and the default roles.
//! - [`node`]: node restriction (Kubernetes' Node authorizer + NodeRestriction admission).
//! - [`audit`]: one JSON line per request to a size-rotated file.
//! - [`limits`]: max in-flight requests (read-only and mutating), per-user watches, body size.
//!
//! Decisions are pure functions ([`decide`]) over an in-memory [`Snapshot`] of the RBAC objects
//! and the pod→node graph, which [`Authorizer`] keeps current from the store's watch (no store
//! read per request). Order, as kube-apiserver with `--authorization-mode=Node,RBAC`:
//! `system:masters` is always allowed; the node authorizer allows or denies node identities'
//! requests about node-restricted resources; RBAC decides the rest; nothing allowed is a 403.

pub mod attributes;
pub mod audit;
pub mod grpc;
pub mod limits;
pub mod node;
pub mod rbac;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kapsel_api::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Status, StatusDetails};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use attributes::{request_attributes, Attributes};
pub use node::{NodeDecision, NodeGraph};
pub use rbac::Policy;

use crate::auth::UserInfo;
use crate::errors::{status_response, ApiError, MAX_BODY_BYTES};
use crate::registry;
use crate::rest::{Api, WriteOpts};
use crate::store::{EventKind, SledStore, Store, StoreError, WatchCursor};

const RBAC_PREFIX: &str = "/registry/rbac.authorization.k8s.io/";
const PODS_PREFIX: &str = "/registry/core/pods/";

/// An authorization decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Forbidden; the reason (possibly empty) is appended to the message.
    Deny(String),
}

/// What the authorizer decides on, besides the request.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub policy: Policy,
    pub graph: NodeGraph,
}

/// The authorization decision for `user` doing `a` (`create_name`: the body's name of a create
/// by a node identity, for NodeRestriction).
pub fn decide(
    user: &UserInfo,
    a: &Attributes,
    snap: &Snapshot,
    create_name: Option<&str>,
) -> Decision {
    if user.groups.iter().any(|g| g == rbac::MASTERS_GROUP) {
        return Decision::Allow;
    }
    match node::authorize(user, a, &snap.graph, create_name) {
        NodeDecision::Allow => return Decision::Allow,
        NodeDecision::Deny(r) => return Decision::Deny(r),
        NodeDecision::NoOpinion => {}
    }
    if snap.policy.allows(user, a) {
        return Decision::Allow;
    }
    Decision::Deny(String::new())
}

/// Kubernetes' forbidden message: `User "x" cannot list resource "pods" in API group "" in the
/// namespace "y"` (or `at the cluster scope`, or `cannot get path "/x"`).
pub fn forbidden_message(user: &UserInfo, a: &Attributes) -> String {
    if !a.resource_request {
        return format!("User {:?} cannot {} path {:?}", user.name, a.verb, a.path);
    }
    let resource = a.full_resource();
    if a.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
            user.name, a.verb, a.api_group
        )
    } else {
        format!(
            "User {:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
            user.name, a.verb, a.api_group, a.namespace
        )
    }
}

/// The 403 Status of a denied request, as kube-apiserver writes it.
pub fn forbidden_status(user: &UserInfo, a: &Attributes, reason: &str) -> Status {
    let mut msg = forbidden_message(user, a);
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = if !a.resource_request || a.resource.is_empty() {
        format!("forbidden: {msg}")
    } else if a.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {:?} is forbidden: {msg}", a.name)
    };
    let mut st = Status::failure(403, "Forbidden", message);
    st.details = Some(StatusDetails {
        name: Some(a.name.clone()).filter(|s| !s.is_empty()),
        group: Some(a.api_group.clone()).filter(|s| !s.is_empty()),
        kind: Some(a.resource.clone()).filter(|s| !s.is_empty()),
        ..Default::default()
    });
    st
}

// ------------------------------------------------------------------------------------------
// The cache
// ------------------------------------------------------------------------------------------

/// The [`Snapshot`] kept current from the store's watch.
pub struct Authorizer {
    snap: RwLock<Snapshot>,
    /// Asks the watch task to apply everything published so far (a denial may be a binding
    /// written a moment ago), answering when done.
    sync: mpsc::Sender<oneshot::Sender<()>>,
}

fn read_all(store: &SledStore) -> Result<Snapshot, StoreError> {
    let mut snap = Snapshot::default();
    for prefix in [RBAC_PREFIX, PODS_PREFIX] {
        for (k, v) in store.list(prefix, None, 0)?.items {
            apply(&mut snap, &k, EventKind::Added, &v);
        }
    }
    Ok(snap)
}

/// Apply one stored object (or its deletion) to the snapshot.
fn apply(snap: &mut Snapshot, key: &str, kind: EventKind, value: &[u8]) {
    if let Some(rest) = key.strip_prefix(PODS_PREFIX) {
        let (ns, name) = rest.split_once('/').unwrap_or(("", rest));
        match kind {
            EventKind::Deleted => snap.graph.remove_pod(ns, name),
            _ => {
                if let Err(e) = snap.graph.put_pod_json(value) {
                    tracing::warn!(key, error = %e, "undecodable pod in the store");
                }
            }
        }
        return;
    }
    let Some(rest) = key.strip_prefix(RBAC_PREFIX) else {
        return;
    };
    let mut parts = rest.splitn(3, '/');
    let plural = parts.next().unwrap_or("");
    let (ns, name) = match (parts.next(), parts.next()) {
        (Some(ns), Some(name)) => (ns, name),
        (Some(name), None) => ("", name),
        _ => return,
    };
    if kind == EventKind::Deleted {
        snap.policy.remove(plural, ns, name);
        return;
    }
    let ok = match plural {
        "clusterroles" => serde_json::from_slice::<ClusterRole>(value)
            .map(|r| snap.policy.put_cluster_role(r))
            .is_ok(),
        "roles" => serde_json::from_slice::<Role>(value)
            .map(|r| snap.policy.put_role(r))
            .is_ok(),
        "clusterrolebindings" => serde_json::from_slice::<ClusterRoleBinding>(value)
            .map(|b| snap.policy.put_cluster_role_binding(b))
            .is_ok(),
        "rolebindings" => serde_json::from_slice::<RoleBinding>(value)
            .map(|b| snap.policy.put_role_binding(b))
            .is_ok(),
        _ => true,
    };
    if !ok {
        tracing::warn!(key, "undecodable RBAC object in the store");
    }
}

impl Authorizer {
    /// Load the RBAC objects and pods and follow the store's changes.
    pub fn start(store: SledStore) -> Result<Arc<Self>, StoreError> {
        let from = store.current_revision();
        let snap = read_all(&store)?;
        let cursor = store.watch("/registry/", from)?;
        let (tx, rx) = mpsc::channel(64);
        let me = Arc::new(Authorizer {
            snap: RwLock::new(snap),
            sync: tx,
        });
        tokio::spawn(follow(Arc::downgrade(&me), store, cursor, rx));
        Ok(me)
    }

    /// Decide on the current snapshot.
    pub fn check(&self, user: &UserInfo, a: &Attributes, create_name: Option<&str>) -> Decision {
        let snap = self.snap.read().unwrap_or_else(|p| p.into_inner());
        decide(user, a, &snap, create_name)
    }

    /// [`Authorizer::check`]; a denial is checked again once the cache has caught up with
    /// every published write (a RoleBinding or pod written just before this request).
    pub async fn check_fresh(
        &self,
        user: &UserInfo,
        a: &Attributes,
        create_name: Option<&str>,
    ) -> Decision {
        let d = self.check(user, a, create_name);
        if d == Decision::Allow {
            return d;
        }
        self.sync().await;
        self.check(user, a, create_name)
    }

    /// Wait (at most 2 s) until everything published so far is applied.
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.sync.send(tx).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }

    /// The node a pod is bound to, per the cache.
    pub fn pod_node(&self, ns: &str, name: &str) -> Option<String> {
        let snap = self.snap.read().unwrap_or_else(|p| p.into_inner());
        snap.graph.pod_node(ns, name).map(str::to_string)
    }

    fn apply_events(&self, events: &[Arc<crate::store::StoreEvent>]) {
        if events.is_empty() {
            return;
        }
        let mut snap = self.snap.write().unwrap_or_else(|p| p.into_inner());
        for e in events {
            apply(&mut snap, &e.key, e.kind, &e.value);
        }
    }

    fn replace(&self, snap: Snapshot) {
        *self.snap.write().unwrap_or_else(|p| p.into_inner()) = snap;
    }
}

fn relevant(e: &crate::store::StoreEvent) -> bool {
    e.key.starts_with(RBAC_PREFIX) || e.key.starts_with(PODS_PREFIX)
}

async fn follow(
    me: std::sync::Weak<Authorizer>,
    store: SledStore,
    mut cursor: WatchCursor,
    mut sync: mpsc::Receiver<oneshot::Sender<()>>,
) {
    loop {
        let (batch, reply) = tokio::select! {
            b = cursor.next_batch(1024) => (b, None),
            Some(reply) = sync.recv() => (cursor.poll_batch(usize::MAX), Some(reply)),
        };
        let Some(me) = me.upgrade() else { return };
        match batch {
            Ok(events) => {
                let events: Vec<_> = events.into_iter().filter(|e| relevant(e)).collect();
                me.apply_events(&events);
            }
            Err(StoreError::Gone { .. }) => {
                // Fell behind the watch ring: start over from a fresh list.
                tracing::warn!("authorization cache fell behind the store; reloading");
                let from = store.current_revision();
                match (read_all(&store), store.watch("/registry/", from)) {
                    (Ok(snap), Ok(c)) => {
                        me.replace(snap);
                        cursor = c;
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::error!(error = %e, "reloading the authorization cache");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            Err(_) => return, // the store is closed
        }
        if let Some(r) = reply {
            let _ = r.send(());
        }
    }
}

/// Create the default ClusterRoles and ClusterRoleBindings that do not exist yet (an
/// operator's edits of existing ones are kept).
pub async fn bootstrap(api: &Api) -> Result<(), ApiError> {
    let g = kapsel_api::rbac::RBAC_GROUP;
    let roles = registry::find(g, "v1", "clusterroles").expect("clusterroles are registered");
    let bindings =
        registry::find(g, "v1", "clusterrolebindings").expect("clusterrolebindings are registered");
    let mut objects: Vec<(&'static registry::ResourceDef, String, Value)> = Vec::new();
    for r in rbac::bootstrap_cluster_roles() {
        let name = r.metadata.name().to_string();
        objects.push((roles, name, serde_json::to_value(r).unwrap_or_default()));
    }
    for b in rbac::bootstrap_cluster_role_bindings() {
        let name = b.metadata.name().to_string();
        objects.push((bindings, name, serde_json::to_value(b).unwrap_or_default()));
    }
    for (def, name, body) in objects {
        if api.store.get(&def.key("", &name))?.is_some() {
            continue;
        }
        match api.create(def, "", body, &WriteOpts::default()).await {
            Ok(_) | Err(ApiError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The request guards (run in this order by gate.rs)
// ------------------------------------------------------------------------------------------

/// Settings of the request guards.
#[derive(Clone, Debug, Default)]
pub struct GuardsConfig {
    /// `--audit-log-path` (and size, backups); `None`: no audit log.
    pub audit: Option<audit::AuditConfig>,
    pub limits: limits::LimitsConfig,
    /// TLS handshake and request header timeouts, the connection cap (accept.rs).
    pub connections: crate::accept::ConnLimits,
}

/// The guards' command-line flags (kube-apiserver's names), shared by `kapsel-apiserver` and
/// `kapsel server`.
#[derive(clap::Args, Clone, Debug)]
pub struct GuardArgs {
    /// Write one JSON line per request here (rotated by size).
    #[arg(long)]
    pub audit_log_path: Option<std::path::PathBuf>,
    /// Rotate the audit log at this size, MiB.
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs kept.
    #[arg(long, default_value_t = 5)]
    pub audit_log_maxbackup: usize,
    /// The key file of Secrets at rest (created at first start; default DATA_DIR/encryption-key).
    #[arg(long)]
    pub encryption_key_file: Option<std::path::PathBuf>,
    /// Read-only requests in flight before 429.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Mutating requests in flight before 429.
    #[arg(long, default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// Open watches per user (cluster admins are exempt).
    #[arg(long, default_value_t = 500)]
    pub max_watches_per_user: usize,
    /// Open connections at most; more are closed at once (0: three quarters of the open-file
    /// limit).
    #[arg(long, default_value_t = 0)]
    pub max_connections: usize,
    /// Close a connection whose TLS handshake takes longer (90s, 1m).
    #[arg(long, default_value = "10s", value_parser = crate::security::parse_ttl)]
    pub tls_handshake_timeout: std::time::Duration,
    /// Close a connection whose first request header is not complete this long after it
    /// opened (slowloris).
    #[arg(long, default_value = "10s", value_parser = crate::security::parse_ttl)]
    pub request_header_timeout: std::time::Duration,
}

impl GuardArgs {
    /// Put the flags into a server configuration.
    pub fn apply(&self, config: &mut crate::server::ServerConfig) {
        config.guards.audit = self.audit_log_path.as_ref().map(|p| audit::AuditConfig {
            path: p.clone(),
            max_size_bytes: self.audit_log_maxsize.max(1) * 1024 * 1024,
            max_backups: self.audit_log_maxbackup,
        });
        config.guards.limits = limits::LimitsConfig {
            max_requests_inflight: self.max_requests_inflight,
            max_mutating_requests_inflight: self.max_mutating_requests_inflight,
            max_watches_per_user: self.max_watches_per_user,
        };
        config.guards.connections = crate::accept::ConnLimits {
            handshake_timeout: self.tls_handshake_timeout,
            header_read_timeout: self.request_header_timeout,
            max_connections: self.max_connections,
        };
        if self.encryption_key_file.is_some() {
            config.encryption_key_file = self.encryption_key_file.clone();
        }
    }
}

/// Everything the request guards share.
pub struct Guards {
    pub authorizer: Arc<Authorizer>,
    pub limits: limits::Limits,
    pub audit: Option<audit::AuditLog>,
    pub connections: crate::accept::ConnLimits,
}

impl Guards {
    /// Create the default roles, load the authorization cache, open the audit log.
    pub async fn start(cfg: &GuardsConfig, api: &Api) -> Result<Arc<Self>, ApiError> {
        bootstrap(api).await?;
        let authorizer = Authorizer::start(api.store.clone())?;
        let audit = match &cfg.audit {
            Some(a) => Some(audit::AuditLog::open(a.clone()).map_err(|e| {
                ApiError::Internal(format!("opening the audit log {}: {e}", a.path.display()))
            })?),
            None => None,
        };
        Ok(Arc::new(Guards {
            authorizer,
            limits: limits::Limits::new(&cfg.limits),
            audit,
            connections: cfg.connections,
        }))
    }
}

/// The caller and what it asked, in the response's extensions (for the audit log).
#[derive(Clone, Debug)]
pub struct Authorized {
    pub user: UserInfo,
}

/// The `metadata.name` of a create body by a node identity (Nodes, Leases): NodeRestriction
/// needs it. Returns the body to pass on.
async fn create_name(req: Request) -> Result<(Request, Option<String>), Response> {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return Err(ApiError::TooLarge.into_response()),
    };
    let name = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
        v.pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    Ok((Request::from_parts(parts, Body::from(bytes)), name))
}

/// Authorize the request (after authentication; `a` are its [`request_attributes`]), enforce
/// the in-flight and per-user watch limits, make the [`Authorizer`] available to handlers (the
/// component service) as an extension, and run it with `next`. The answer carries the caller
/// as [`Authorized`] for the audit log.
pub async fn authorize(sec: &Guards, req: Request, a: &Attributes, next: Next) -> Response {
    let user = req
        .extensions()
        .get::<UserInfo>()
        .cloned()
        .unwrap_or_else(UserInfo::anonymous);
    let (mut req, name) = if a.verb == "create"
        && a.resource_request
        && node::node_name(&user).is_some()
        && matches!(a.resource.as_str(), "nodes" | "leases")
    {
        match create_name(req).await {
            Ok(x) => x,
            Err(resp) => return with_user(resp, user),
        }
    } else {
        (req, None)
    };
    let resp = match sec.authorizer.check_fresh(&user, a, name.as_deref()).await {
        Decision::Allow => {
            let exempt = user.groups.iter().any(|g| g == rbac::MASTERS_GROUP);
            let mut watch_slot = None;
            let mut permit = None;
            if !exempt && a.verb == "watch" {
                match sec.limits.watch(&user.name) {
                    Ok(s) => watch_slot = Some(s),
                    Err(e) => return with_user(e.into_response(), user),
                }
            } else if !exempt && !long_running(req.method(), a) {
                match sec.limits.in_flight(req.method()) {
                    Ok(p) => permit = Some(p),
                    Err(e) => return with_user(e.into_response(), user),
                }
            }
            req.extensions_mut().insert(Arc::clone(&sec.authorizer));
            let resp = next.run(req).await;
            drop(permit);
            match watch_slot {
                Some(s) => limits::hold_until_body_ends(resp, s),
                None => resp,
            }
        }
        Decision::Deny(reason) => {
            tracing::debug!(user = %user.name, verb = %a.verb, path = %a.path, "forbidden");
            status_response(&forbidden_status(&user, a, &reason))
        }
    };
    with_user(resp, user)
}

pub(crate) fn with_user(mut resp: Response, user: UserInfo) -> Response {
    resp.extensions_mut().insert(Authorized { user });
    resp
}

/// Whether a request is long-running (watches, log follows, gRPC streams): not counted as in
/// flight.
pub fn long_running(method: &Method, a: &Attributes) -> bool {
    a.verb == "watch"
        || (a.resource_request
            && matches!(a.subresource.as_str(), "log" | "proxy" | "exec" | "attach"))
        || (*method == Method::POST
            && (a.path.ends_with("/WatchPods") || a.path.ends_with("/LogStream")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn forbidden_messages_match_kubernetes() {
        let u = user("bob", &[]);
        let st = forbidden_status(&u, &Attributes::resource("list", "", "y", "pods", ""), "");
        assert_eq!(
            st.message.as_deref(),
            Some(
                r#"pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "y""#
            )
        );
        assert_eq!(st.reason.as_deref(), Some("Forbidden"));
        assert_eq!(st.code, Some(403));
        assert_eq!(
            st.details.as_ref().and_then(|d| d.kind.as_deref()),
            Some("pods")
        );
        let st = forbidden_status(
            &u,
            &Attributes::resource("get", "apps", "y", "deployments/scale", "web"),
            "",
        );
        assert_eq!(
            st.message.as_deref(),
            Some(
                r#"deployments.apps "web" is forbidden: User "bob" cannot get resource "deployments/scale" in API group "apps" in the namespace "y""#
            )
        );
        let st = forbidden_status(&u, &Attributes::resource("list", "", "", "nodes", ""), "");
        assert_eq!(
            st.message.as_deref(),
            Some(
                r#"nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope"#
            )
        );
        let path = request_attributes("GET", "/metrics", None);
        assert_eq!(
            forbidden_status(&u, &path, "").message.as_deref(),
            Some(r#"forbidden: User "bob" cannot get path "/metrics""#)
        );
        let st = forbidden_status(
            &u,
            &Attributes::resource("get", "", "a", "secrets", "s"),
            "no relationship found between node 'n1' and this object",
        );
        assert!(st.message.unwrap().ends_with(
            r#"in the namespace "a": no relationship found between node 'n1' and this object"#
        ));
    }

    #[test]
    fn masters_node_then_rbac() {
        let mut snap = Snapshot {
            policy: rbac::bootstrap_policy(),
            graph: NodeGraph::default(),
        };
        snap.graph.put_pod(
            &serde_json::json!({"metadata": {"namespace": "a", "name": "p"},
            "spec": {"nodeName": "n1", "volumes": [{"name": "v", "secret": {"secretName": "s"}}]}}),
        );
        let admin = user("system:admin", &["system:masters"]);
        let n1 = user("system:node:n1", &["system:nodes", "system:authenticated"]);
        let n2 = user("system:node:n2", &["system:nodes", "system:authenticated"]);
        let nobody = user("eve", &["system:authenticated"]);
        let r = Attributes::resource;
        let table: Vec<(&UserInfo, Attributes, bool)> = vec![
            (&admin, r("get", "", "a", "secrets", "s"), true),
            (&admin, r("create", "", "", "nodes", ""), true),
            (&n1, r("get", "", "a", "secrets", "s"), true),
            (&n2, r("get", "", "a", "secrets", "s"), false),
            // Allowed by the node authorizer's "no opinion" plus the system:node role.
            (&n1, r("create", "", "a", "events", ""), true),
            (&n1, r("list", "", "", "services", ""), true),
            (&n1, r("get", "", "", "nodes", "n2"), true),
            (&n1, r("update", "", "", "nodes/status", "n1"), true),
            (&n1, r("update", "", "", "nodes/status", "n2"), false),
            // Neither restricted nor in the role.
            (&n1, r("list", "apps", "a", "deployments", ""), false),
            (&n1, r("delete", "", "", "namespaces", "a"), false),
            (&nobody, r("list", "", "a", "pods", ""), false),
            (&nobody, request_attributes("GET", "/apis", None), true),
            (
                &nobody,
                request_attributes("POST", "/kapsel.v1.NodeAgent/Register", None),
                false,
            ),
            (
                &n1,
                request_attributes("POST", "/kapsel.v1.NodeAgent/Register", None),
                true,
            ),
        ];
        for (u, a, want) in table {
            assert_eq!(
                decide(u, &a, &snap, None) == Decision::Allow,
                want,
                "{} {a:?}",
                u.name
            );
        }
    }
}
