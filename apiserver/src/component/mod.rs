//! The server half of the gRPC component API (`proto/kapsel/v1/component.proto`): what node
//! agents call. Agents only dial out; the log relay (`pods/{name}/log`) runs over a stream the
//! agent opens ([`AgentRegistry`]).
//!
//! STOPGAP: the service talks to the API server's own REST endpoint through a loopback
//! `kapsel_api::client::Client` (the internal write functions were being finished when this was
//! written). Every call therefore goes through admission and validation exactly like a REST
//! client's. Moving to the in-process write path changes only [`Backend`]'s body.
//!
//! Also served from the agents' reports: `metrics.k8s.io/v1beta1` node and pod metrics
//! (`kapsel top`), kept in memory.
//!
//! Mount with [`component_service`]: a `tonic::service::Routes` that turns into an axum router
//! (`.into_axum_router()`) and serves on the same listener as REST (requests with
//! `content-type: application/grpc` under `/kapsel.v1.NodeAgent/`). The listener must speak
//! HTTP/2 (h2c, prior knowledge): axum's `http2` feature.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use kapsel_api::client::{
    ApiResource, Client, ClientConfig, ClientError, DynamicApi, ListParams, PostParams,
};
use kapsel_api::{
    ConfigMap, DeleteOptions, Event, Lease, Node, Pod, Preconditions, Resource, Secret,
    WatchEventType,
};
use kapsel_proto::v1::{
    self, log_chunk, pod_event, CreateEventRequest, CreateEventResponse,
    FinalizePodDeletionRequest, FinalizePodDeletionResponse, LogChunk, LogRequest, ObjectRef,
    PodEvent, RegisterRequest, RegisterResponse, RenewLeaseRequest, RenewLeaseResponse,
    UpdateNodeStatusRequest, UpdateNodeStatusResponse, UpdatePodStatusRequest,
    UpdatePodStatusResponse, WatchPodsRequest,
};
use kapsel_proto::{NodeAgent, NodeAgentServer};

mod events;
mod exec;

pub use exec::EXEC_LABEL;

/// The namespace of node leases (as Kubernetes).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
const CAS_ATTEMPTS: usize = 16;

/// How the component service reaches the API (and checks its callers).
#[derive(Clone, Debug)]
pub struct ComponentConfig {
    /// The API server's own REST URL (`http://127.0.0.1:6443`), for the loopback client.
    pub api_url: String,
    /// Credentials of the loopback client.
    pub api_token: Option<String>,
    /// The CA of the API server's certificate (PEM), when it serves TLS.
    pub api_ca_pem: Option<String>,
}

/// How the component service's loopback client reaches a secured server.
#[derive(Clone, Debug, Default)]
pub struct Loopback {
    /// The cluster CA (PEM): set when the listener serves TLS.
    pub tls_ca_pem: Option<String>,
    /// The server's own token.
    pub token: Option<String>,
}

/// Errors of the log relay, as the REST `pods/{name}/log` handler sees them.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("no agent of node {0:?} is connected")]
    NotConnected(String),
    #[error("the agent of node {0:?} went away")]
    AgentGone(String),
    /// The agent refused the request; `code` is HTTP-like (400, 404, 500).
    #[error("{message}")]
    Agent { code: u16, message: String },
}

/// One piece of a relayed log.
#[derive(Debug)]
enum LogPiece {
    Data(Bytes),
    Error {
        code: u16,
        message: String,
    },
    /// Exec output (stream 1 stdout, 2 stderr).
    Out {
        stream: u8,
        data: Bytes,
    },
    /// The exec'd process ended; `message` is set when it could not be started.
    Exit {
        code: i32,
        message: String,
    },
}

struct AgentConn {
    conn_id: u64,
    tx: mpsc::Sender<Result<LogRequest, Status>>,
    pending: Arc<Mutex<HashMap<u64, mpsc::Sender<LogPiece>>>>,
}

/// The agents connected right now (by node name), for the log relay.
#[derive(Clone, Default)]
pub struct AgentRegistry {
    agents: Arc<Mutex<HashMap<String, AgentConn>>>,
    next_id: Arc<AtomicU64>,
    /// The latest usage report of each node (for metrics.k8s.io / `kapsel top`).
    stats: Arc<Mutex<HashMap<String, v1::NodeStats>>>,
}

/// What `kapsel logs` asks for.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub follow: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub timestamps: bool,
    pub previous: bool,
    pub limit_bytes: Option<i64>,
    /// Set: not a log but the node proxy (`metrics`, `metrics/cadvisor`).
    pub proxy_path: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AgentRegistry {
    /// The latest usage reports, by node.
    pub fn stats(&self) -> Vec<v1::NodeStats> {
        let mut v: Vec<v1::NodeStats> = lock(&self.stats).values().cloned().collect();
        v.sort_by(|a, b| a.node_name.cmp(&b.node_name));
        v
    }

    /// Names of the nodes whose agents hold a log relay stream.
    pub fn connected(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.agents).keys().cloned().collect();
        v.sort();
        v
    }

    /// Ask the agent of `node` for a container log. Resolves once the agent accepted (or
    /// refused) the request; the stream then yields the log bytes and ends at EOF (or, with
    /// `follow`, when the container's log ends or the caller drops the stream).
    pub async fn logs(&self, node: &str, q: &LogQuery) -> Result<RelayedLog, RelayError> {
        let (first, rx, cancel) = self
            .start(node, |request_id| LogRequest {
                request_id,
                namespace: q.namespace.clone(),
                pod: q.pod.clone(),
                container: q.container.clone(),
                follow: q.follow,
                tail_lines: q.tail_lines.unwrap_or(-1),
                since_seconds: q.since_seconds.unwrap_or(-1),
                timestamps: q.timestamps,
                previous: q.previous,
                limit_bytes: q.limit_bytes.unwrap_or(-1),
                cancel: false,
                proxy_path: q.proxy_path.clone(),
                ..Default::default()
            })
            .await?;
        let first = match first {
            LogPiece::Data(b) | LogPiece::Out { data: b, .. } => b,
            _ => Bytes::new(),
        };
        Ok(RelayedLog {
            first: (!first.is_empty()).then_some(first),
            rx,
            _cancel: cancel,
            node: node.to_string(),
        })
    }
}

/// What `kapsel exec` / `kubectl exec` asks for.
#[derive(Clone, Debug, Default)]
pub struct ExecQuery {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    pub stdin: bool,
}

/// What a relayed exec yields.
#[derive(Debug)]
pub enum ExecEvent {
    /// Output of stream 1 (stdout) or 2 (stderr).
    Output { stream: u8, data: Bytes },
    /// The process ended (`message`: why it could not be started, if so).
    Exit { code: i32, message: String },
}

/// An exec running on an agent. Dropping it kills the process (cancels the request).
pub struct RelayedExec {
    rx: mpsc::Receiver<LogPiece>,
    req: CancelHandle,
}

impl RelayedExec {
    /// The next output or the exit; `None` when the agent went away.
    pub async fn next(&mut self) -> Option<ExecEvent> {
        loop {
            return match self.rx.recv().await? {
                LogPiece::Out { stream, data } => Some(ExecEvent::Output { stream, data }),
                LogPiece::Data(b) if b.is_empty() => continue,
                LogPiece::Data(data) => Some(ExecEvent::Output { stream: 1, data }),
                LogPiece::Exit { code, message } => Some(ExecEvent::Exit { code, message }),
                LogPiece::Error { message, .. } => Some(ExecEvent::Exit { code: 1, message }),
            };
        }
    }

    /// Send stdin to the process (`eof`: close its stdin).
    pub async fn stdin(&self, data: Vec<u8>, eof: bool) {
        let _ = self
            .req
            .tx
            .send(Ok(LogRequest {
                request_id: self.req.id,
                stdin: data,
                stdin_eof: eof,
                ..Default::default()
            }))
            .await;
    }
}

impl AgentRegistry {
    /// Start `q.command` in a container on `node`'s agent. Resolves once the agent accepted
    /// (or refused) it.
    pub async fn exec(&self, node: &str, q: &ExecQuery) -> Result<RelayedExec, RelayError> {
        let (_, rx, cancel) = self
            .start(node, |request_id| LogRequest {
                request_id,
                namespace: q.namespace.clone(),
                pod: q.pod.clone(),
                container: q.container.clone(),
                exec_command: q.command.clone(),
                exec_stdin: q.stdin,
                ..Default::default()
            })
            .await?;
        Ok(RelayedExec { rx, req: cancel })
    }

    /// Send the request `make(id)` to `node`'s agent and wait for its first answer: the
    /// agent answers every accepted request with a first (possibly empty) piece, a refused one
    /// with an error.
    async fn start(
        &self,
        node: &str,
        make: impl FnOnce(u64) -> LogRequest,
    ) -> Result<(LogPiece, mpsc::Receiver<LogPiece>, CancelHandle), RelayError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (ptx, mut prx) = mpsc::channel(64);
        let (tx, pending) = {
            let agents = lock(&self.agents);
            let a = agents
                .get(node)
                .ok_or_else(|| RelayError::NotConnected(node.to_string()))?;
            lock(&a.pending).insert(id, ptx);
            (a.tx.clone(), a.pending.clone())
        };
        if tx.send(Ok(make(id))).await.is_err() {
            lock(&pending).remove(&id);
            return Err(RelayError::AgentGone(node.to_string()));
        }
        match prx.recv().await {
            None => Err(RelayError::AgentGone(node.to_string())),
            Some(LogPiece::Error { code, message }) => Err(RelayError::Agent { code, message }),
            Some(first) => Ok((first, prx, CancelHandle { tx, pending, id })),
        }
    }
}

/// A relayed request on an agent's stream: dropping it cancels the request there (killing an
/// exec's process, ending a followed log) unless the agent already finished it.
struct CancelHandle {
    tx: mpsc::Sender<Result<LogRequest, Status>>,
    pending: Arc<Mutex<HashMap<u64, mpsc::Sender<LogPiece>>>>,
    id: u64,
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        if lock(&self.pending).remove(&self.id).is_some() {
            let _ = self.tx.try_send(Ok(LogRequest {
                request_id: self.id,
                cancel: true,
                ..Default::default()
            }));
        }
    }
}

/// A log stream relayed from an agent. Dropping it cancels the request on the agent.
pub struct RelayedLog {
    first: Option<Bytes>,
    rx: mpsc::Receiver<LogPiece>,
    _cancel: CancelHandle,
    node: String,
}

impl Stream for RelayedLog {
    type Item = Result<Bytes, RelayError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(b)));
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(LogPiece::Data(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(LogPiece::Out { data, .. })) => Poll::Ready(Some(Ok(data))),
            Poll::Ready(Some(LogPiece::Exit { .. })) => Poll::Ready(None),
            Poll::Ready(Some(LogPiece::Error { code, message })) => {
                let _ = &self.node;
                Poll::Ready(Some(Err(RelayError::Agent { code, message })))
            }
        }
    }
}

/// The gRPC service.
#[derive(Clone)]
pub struct ComponentService {
    backend: Backend,
    registry: AgentRegistry,
}

/// Build the component service and the agent registry the REST log handler relays through.
pub fn component_service(
    cfg: ComponentConfig,
) -> Result<(tonic::service::Routes, AgentRegistry), ClientError> {
    let svc = ComponentService::new(cfg)?;
    let registry = svc.registry.clone();
    Ok((
        tonic::service::Routes::new(NodeAgentServer::new(svc)),
        registry,
    ))
}

impl ComponentService {
    pub fn new(cfg: ComponentConfig) -> Result<Self, ClientError> {
        let mut cc = ClientConfig::new(cfg.api_url.clone());
        cc.token = cfg.api_token.clone();
        cc.ca_cert_pem = cfg.api_ca_pem.as_ref().map(|p| p.clone().into_bytes());
        cc.user_agent = Some("kapsel-apiserver/component".into());
        Ok(ComponentService {
            backend: Backend {
                client: Client::from_config(cc)?,
            },
            registry: AgentRegistry::default(),
        })
    }

    pub fn registry(&self) -> &AgentRegistry {
        &self.registry
    }

    /// Only nodes (client certificates in `system:nodes`) and cluster admins call the agent
    /// API. The authentication middleware has put the caller in the request (a request
    /// without credentials never gets here).
    fn check_auth<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match req.extensions().get::<crate::auth::UserInfo>() {
            Some(u)
                if u.in_group(crate::auth::GROUP_NODES)
                    || u.in_group(crate::auth::GROUP_MASTERS) =>
            {
                Ok(())
            }
            Some(u) => Err(Status::permission_denied(format!(
                "user {:?} is not a node",
                u.name
            ))),
            None => Err(Status::unauthenticated("no credentials")),
        }
    }
}

/// Map a REST answer to a gRPC status.
fn to_status(e: ClientError) -> Status {
    let msg = e.to_string();
    match e.code() {
        Some(404) => Status::not_found(msg),
        Some(409) => Status::aborted(msg),
        Some(410) => Status::out_of_range(msg),
        Some(400 | 422) => Status::invalid_argument(msg),
        Some(401) => Status::unauthenticated(msg),
        Some(403) => Status::permission_denied(msg),
        Some(_) => Status::internal(msg),
        None => Status::unavailable(msg),
    }
}

fn decode_json(what: &str, b: &[u8]) -> Result<Value, Status> {
    serde_json::from_slice(b).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

fn encode(kind: &str, v: &Value) -> Result<v1::Object, Status> {
    serde_json::to_vec(v)
        .map(|json| v1::Object::new(kind, json))
        .map_err(|e| Status::internal(format!("encoding {kind}: {e}")))
}

fn now_micro() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// The API operations the service needs.
#[derive(Clone)]
struct Backend {
    client: Client,
}

impl Backend {
    fn api<K: Resource>(&self, ns: Option<&str>) -> DynamicApi {
        self.client.dynamic(ApiResource::of::<K>(), ns)
    }

    fn api_for_kind(&self, kind: &str, ns: &str) -> Result<DynamicApi, Status> {
        let ns = Some(ns).filter(|n| !n.is_empty());
        Ok(match kind {
            "ConfigMap" => self.api::<ConfigMap>(ns),
            "Secret" => self.api::<Secret>(ns),
            "Pod" => self.api::<Pod>(ns),
            "Node" => self.api::<Node>(None),
            other => {
                return Err(Status::permission_denied(format!(
                    "agents may not read {other} objects"
                )))
            }
        })
    }

    /// Read-modify-write with compare-and-swap: `f` edits the current object (returning `false`
    /// to skip the write); conflicts reread and retry.
    async fn update<F>(
        &self,
        api: &DynamicApi,
        name: &str,
        status: bool,
        mut f: F,
    ) -> Result<Value, Status>
    where
        F: FnMut(&mut Value) -> Result<bool, Status>,
    {
        for _ in 0..CAS_ATTEMPTS {
            let mut cur = api.get(name).await.map_err(to_status)?;
            if !f(&mut cur)? {
                return Ok(cur);
            }
            let res = if status {
                api.replace_status(name, &cur).await
            } else {
                api.replace(name, &cur, &PostParams::default()).await
            };
            match res {
                Ok(v) => return Ok(v),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(to_status(e)),
            }
        }
        Err(Status::aborted(format!(
            "{name}: too many conflicting updates"
        )))
    }
}

type PodEventStream = ReceiverStream<Result<PodEvent, Status>>;
type LogRequestStream = ReceiverStream<Result<LogRequest, Status>>;

fn rv_of(v: &Value) -> String {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

async fn pump_pods(api: DynamicApi, node: String, tx: mpsc::Sender<Result<PodEvent, Status>>) {
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let list = match api.list(&lp).await {
        Ok(l) => l,
        Err(e) => {
            let _ = tx.send(Err(to_status(e))).await;
            return;
        }
    };
    let mut rv = list.metadata.resource_version.clone().unwrap_or_default();
    for p in &list.items {
        let ev = match encode("Pod", p) {
            Ok(o) => PodEvent {
                r#type: pod_event::Type::Added as i32,
                object: Some(o),
                resource_version: rv_of(p),
            },
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if tx.send(Ok(ev)).await.is_err() {
            return;
        }
    }
    let synced = PodEvent {
        r#type: pod_event::Type::Synced as i32,
        object: None,
        resource_version: rv.clone(),
    };
    if tx.send(Ok(synced)).await.is_err() {
        return;
    }
    let lp = lp.timeout(300);
    loop {
        let mut w = match api.watch(&lp, &rv).await {
            Ok(w) => w,
            Err(e) => {
                let _ = tx.send(Err(to_status(e))).await;
                return;
            }
        };
        loop {
            let ev = tokio::select! {
                ev = w.next() => ev,
                _ = tx.closed() => return,
            };
            let Some(ev) = ev else { break };
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    // 410 Gone and broken streams: the agent relists.
                    let _ = tx.send(Err(to_status(e))).await;
                    return;
                }
            };
            let new_rv = rv_of(&ev.object);
            if !new_rv.is_empty() {
                rv = new_rv.clone();
            }
            let (t, obj) = match ev.type_ {
                WatchEventType::Added => (pod_event::Type::Added, Some(&ev.object)),
                WatchEventType::Modified => (pod_event::Type::Modified, Some(&ev.object)),
                WatchEventType::Deleted => (pod_event::Type::Deleted, Some(&ev.object)),
                WatchEventType::Bookmark => (pod_event::Type::Bookmark, None),
                WatchEventType::Error => continue,
            };
            let object = match obj.map(|o| encode("Pod", o)).transpose() {
                Ok(o) => o,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let msg = PodEvent {
                r#type: t as i32,
                object,
                resource_version: new_rv,
            };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl NodeAgent for ComponentService {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        self.check_auth(&req)?;
        let node_name = req
            .get_ref()
            .node
            .as_ref()
            .and_then(|o| serde_json::from_slice::<Value>(&o.json).ok())
            .and_then(|v| {
                v.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .unwrap_or_default();
        crate::authz::grpc::restrict(&req, Some(&node_name), None).await?;
        let obj = req
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("node missing"))?;
        let node = decode_json("node", &obj.json)?;
        let name = node
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Status::invalid_argument("node has no name"))?
            .to_string();
        let api = self.backend.api::<Node>(None);
        let mut created_body = node.clone();
        if let Some(m) = created_body.as_object_mut() {
            m.remove("status");
        }
        let stored = match api.create(&created_body, &PostParams::default()).await {
            Ok(v) => v,
            Err(e) if e.is_already_exists() => {
                // Re-registration (agent restart): the agent's labels win, other labels stay.
                let labels = node.pointer("/metadata/labels").cloned();
                self.backend
                    .update(&api, &name, false, |cur| {
                        let before = cur.clone();
                        if let Some(Value::Object(l)) = &labels {
                            let m = cur
                                .pointer_mut("/metadata")
                                .and_then(Value::as_object_mut)
                                .ok_or_else(|| Status::internal("stored node has no metadata"))?;
                            let e = m
                                .entry("labels")
                                .or_insert_with(|| Value::Object(Default::default()));
                            if let Some(cl) = e.as_object_mut() {
                                for (k, v) in l {
                                    cl.insert(k.clone(), v.clone());
                                }
                            }
                        }
                        Ok(*cur != before)
                    })
                    .await?
            }
            Err(e) => return Err(to_status(e)),
        };
        let _ = stored;
        // The status goes through /status.
        let status = node.get("status").cloned().unwrap_or(Value::Null);
        let out = self
            .backend
            .update(&api, &name, true, |cur| {
                if let Some(m) = cur.as_object_mut() {
                    m.insert("status".into(), status.clone());
                }
                Ok(true)
            })
            .await?;
        Ok(Response::new(RegisterResponse {
            node: Some(encode("Node", &out)?),
        }))
    }

    async fn renew_lease(
        &self,
        req: Request<RenewLeaseRequest>,
    ) -> Result<Response<RenewLeaseResponse>, Status> {
        self.check_auth(&req)?;
        crate::authz::grpc::restrict(&req, Some(&req.get_ref().node_name), None).await?;
        let r = req.into_inner();
        if r.node_name.is_empty() {
            return Err(Status::invalid_argument("node_name missing"));
        }
        let api = self.backend.api::<Lease>(Some(NODE_LEASE_NAMESPACE));
        let duration = if r.lease_duration_seconds > 0 {
            r.lease_duration_seconds
        } else {
            40
        };
        for _ in 0..CAS_ATTEMPTS {
            let now = now_micro();
            match api.get_opt(&r.node_name).await.map_err(to_status)? {
                None => {
                    let lease = serde_json::json!({
                        "apiVersion": Lease::API_VERSION, "kind": "Lease",
                        "metadata": {"name": r.node_name, "namespace": NODE_LEASE_NAMESPACE},
                        "spec": {"holderIdentity": r.node_name, "leaseDurationSeconds": duration,
                                 "acquireTime": now, "renewTime": now},
                    });
                    match api.create(&lease, &PostParams::default()).await {
                        Ok(v) => {
                            return Ok(Response::new(RenewLeaseResponse {
                                resource_version: rv_of(&v),
                            }))
                        }
                        Err(e) if e.is_already_exists() => continue,
                        Err(e) => return Err(to_status(e)),
                    }
                }
                Some(mut cur) => {
                    if let Some(spec) = cur.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("renewTime".into(), now.into());
                        spec.insert("holderIdentity".into(), r.node_name.clone().into());
                        spec.insert("leaseDurationSeconds".into(), duration.into());
                    } else if let Some(m) = cur.as_object_mut() {
                        m.insert(
                            "spec".into(),
                            serde_json::json!({"holderIdentity": r.node_name,
                                "leaseDurationSeconds": duration, "acquireTime": now, "renewTime": now}),
                        );
                    }
                    match api
                        .replace(&r.node_name, &cur, &PostParams::default())
                        .await
                    {
                        Ok(v) => {
                            return Ok(Response::new(RenewLeaseResponse {
                                resource_version: rv_of(&v),
                            }))
                        }
                        Err(e) if e.is_conflict() || e.is_not_found() => continue,
                        Err(e) => return Err(to_status(e)),
                    }
                }
            }
        }
        Err(Status::aborted("lease: too many conflicting updates"))
    }

    async fn update_node_status(
        &self,
        req: Request<UpdateNodeStatusRequest>,
    ) -> Result<Response<UpdateNodeStatusResponse>, Status> {
        self.check_auth(&req)?;
        crate::authz::grpc::restrict(&req, Some(&req.get_ref().node_name), None).await?;
        let r = req.into_inner();
        let status = decode_json("node status", &r.status_json)?;
        let api = self.backend.api::<Node>(None);
        let out = self
            .backend
            .update(&api, &r.node_name, true, |cur| {
                if let Some(m) = cur.as_object_mut() {
                    m.insert("status".into(), status.clone());
                }
                Ok(true)
            })
            .await?;
        Ok(Response::new(UpdateNodeStatusResponse {
            node: Some(encode("Node", &out)?),
        }))
    }

    type WatchPodsStream = PodEventStream;

    async fn watch_pods(
        &self,
        req: Request<WatchPodsRequest>,
    ) -> Result<Response<Self::WatchPodsStream>, Status> {
        self.check_auth(&req)?;
        crate::authz::grpc::restrict(&req, Some(&req.get_ref().node_name), None).await?;
        let r = req.into_inner();
        if r.node_name.is_empty() {
            return Err(Status::invalid_argument("node_name missing"));
        }
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(pump_pods(self.backend.api::<Pod>(None), r.node_name, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_object(&self, req: Request<ObjectRef>) -> Result<Response<v1::Object>, Status> {
        self.check_auth(&req)?;
        let r = req.get_ref();
        let a = crate::authz::grpc::object_attributes("get", &r.kind, &r.namespace, &r.name);
        crate::authz::grpc::restrict(&req, None, Some(a)).await?;
        let r = req.into_inner();
        let api = self.backend.api_for_kind(&r.kind, &r.namespace)?;
        let v = api.get(&r.name).await.map_err(to_status)?;
        Ok(Response::new(encode(&r.kind, &v)?))
    }

    async fn update_pod_status(
        &self,
        req: Request<UpdatePodStatusRequest>,
    ) -> Result<Response<UpdatePodStatusResponse>, Status> {
        self.check_auth(&req)?;
        let r = req.get_ref();
        let a = crate::authz::grpc::object_attributes("update", "PodStatus", &r.namespace, &r.name);
        crate::authz::grpc::restrict(&req, None, Some(a)).await?;
        let r = req.into_inner();
        let status = decode_json("pod status", &r.status_json)?;
        let api = self.backend.api::<Pod>(Some(&r.namespace));
        // Fast path: write against the agent's copy (its resourceVersion is the precondition).
        if !r.pod_json.is_empty() {
            let mut pod = decode_json("pod", &r.pod_json)?;
            let uid_ok =
                pod.pointer("/metadata/uid").and_then(Value::as_str) == Some(r.uid.as_str());
            let has_rv = !rv_of(&pod).is_empty();
            if uid_ok && has_rv {
                if let Some(m) = pod.as_object_mut() {
                    m.insert("status".into(), status.clone());
                }
                match api.replace_status(&r.name, &pod).await {
                    Ok(v) => {
                        return Ok(Response::new(UpdatePodStatusResponse {
                            resource_version: rv_of(&v),
                        }))
                    }
                    Err(e) if e.is_conflict() => {} // stale copy: read and retry below
                    Err(e) => return Err(to_status(e)),
                }
            }
        }
        let out = self
            .backend
            .update(&api, &r.name, true, |cur| {
                let uid = cur
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !r.uid.is_empty() && uid != r.uid {
                    return Err(Status::failed_precondition(format!(
                        "pod {}/{} has uid {uid}, not {}",
                        r.namespace, r.name, r.uid
                    )));
                }
                if cur.get("status") == Some(&status) {
                    return Ok(false);
                }
                if let Some(m) = cur.as_object_mut() {
                    m.insert("status".into(), status.clone());
                }
                Ok(true)
            })
            .await?;
        Ok(Response::new(UpdatePodStatusResponse {
            resource_version: rv_of(&out),
        }))
    }

    async fn finalize_pod_deletion(
        &self,
        req: Request<FinalizePodDeletionRequest>,
    ) -> Result<Response<FinalizePodDeletionResponse>, Status> {
        self.check_auth(&req)?;
        let r = req.get_ref();
        let a = crate::authz::grpc::object_attributes("delete", "Pod", &r.namespace, &r.name);
        crate::authz::grpc::restrict(&req, None, Some(a)).await?;
        let r = req.into_inner();
        let api = self.backend.api::<Pod>(Some(&r.namespace));
        let opts = DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(r.uid).filter(|u| !u.is_empty()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&r.name, &opts).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_conflict() => {} // a different pod of the same name: not ours
            Err(e) => return Err(to_status(e)),
        }
        Ok(Response::new(FinalizePodDeletionResponse {}))
    }

    async fn create_event(
        &self,
        req: Request<CreateEventRequest>,
    ) -> Result<Response<CreateEventResponse>, Status> {
        self.check_auth(&req)?;
        let obj = req
            .into_inner()
            .event
            .ok_or_else(|| Status::invalid_argument("event missing"))?;
        let mut ev = decode_json("event", &obj.json)?;
        let ns = ev
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let api = self.backend.api::<Event>(Some(&ns));
        // Repeats fold into one Event (count, lastTimestamp): see events.rs.
        let name = events::dedup_name(&ev);
        if let Some(m) = ev.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("generateName");
            m.insert("name".into(), name.clone().into());
        }
        for _ in 0..CAS_ATTEMPTS {
            match api.create(&ev, &PostParams::default()).await {
                Ok(_) => return Ok(Response::new(CreateEventResponse {})),
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(to_status(e)),
            }
            let mut cur = match api.get_opt(&name).await.map_err(to_status)? {
                Some(c) => c,
                None => continue, // expired meanwhile: create it again
            };
            events::merge_repeat(&mut cur, &ev);
            match api.replace(&name, &cur, &PostParams::default()).await {
                Ok(_) => return Ok(Response::new(CreateEventResponse {})),
                Err(e) if e.is_conflict() || e.is_not_found() => continue,
                Err(e) => return Err(to_status(e)),
            }
        }
        Err(Status::aborted("event: too many conflicting updates"))
    }

    async fn report_stats(
        &self,
        req: Request<v1::NodeStats>,
    ) -> Result<Response<v1::ReportStatsResponse>, Status> {
        self.check_auth(&req)?;
        crate::authz::grpc::restrict(&req, Some(&req.get_ref().node_name), None).await?;
        let s = req.into_inner();
        if s.node_name.is_empty() {
            return Err(Status::invalid_argument("node_name missing"));
        }
        lock(&self.registry.stats).insert(s.node_name.clone(), s);
        Ok(Response::new(v1::ReportStatsResponse {}))
    }

    type LogStreamStream = LogRequestStream;

    async fn log_stream(
        &self,
        req: Request<Streaming<LogChunk>>,
    ) -> Result<Response<Self::LogStreamStream>, Status> {
        self.check_auth(&req)?;
        let caller = crate::authz::grpc::caller_node(&req);
        let mut inbound = req.into_inner();
        let node = match tokio::time::timeout(Duration::from_secs(30), inbound.message()).await {
            Ok(Ok(Some(LogChunk {
                msg: Some(log_chunk::Msg::Hello(h)),
            }))) if !h.node_name.is_empty() => h.node_name,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ))
            }
        };
        crate::authz::grpc::check_node(caller.as_deref(), &node)?;
        let (tx, rx) = mpsc::channel(64);
        let pending: Arc<Mutex<HashMap<u64, mpsc::Sender<LogPiece>>>> = Default::default();
        let conn_id = self.registry.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.registry.agents).insert(
            node.clone(),
            AgentConn {
                conn_id,
                tx,
                pending: pending.clone(),
            },
        );
        tracing::info!(node = %node, "agent log relay connected");
        let agents = self.registry.agents.clone();
        tokio::spawn(async move {
            while let Ok(Some(chunk)) = inbound.message().await {
                let Some(log_chunk::Msg::Data(d)) = chunk.msg else {
                    continue;
                };
                let sender = lock(&pending).get(&d.request_id).cloned();
                let Some(sender) = sender else { continue };
                let piece = if d.exited {
                    LogPiece::Exit {
                        code: d.exit_code,
                        message: d.error,
                    }
                } else if d.stream != 0 {
                    LogPiece::Out {
                        stream: u8::try_from(d.stream).unwrap_or(2),
                        data: Bytes::from(d.data),
                    }
                } else if d.error.is_empty() {
                    LogPiece::Data(Bytes::from(d.data))
                } else {
                    LogPiece::Error {
                        code: u16::try_from(d.code)
                            .ok()
                            .filter(|c| *c >= 400)
                            .unwrap_or(500),
                        message: d.error,
                    }
                };
                let empty_eof = matches!(&piece, LogPiece::Data(b) if b.is_empty()) && d.eof;
                if !empty_eof && sender.send(piece).await.is_err() {
                    lock(&pending).remove(&d.request_id);
                    continue;
                }
                if d.eof {
                    lock(&pending).remove(&d.request_id);
                }
            }
            let mut a = lock(&agents);
            if a.get(&node).is_some_and(|c| c.conn_id == conn_id) {
                a.remove(&node);
            }
            drop(a);
            lock(&pending).clear();
            tracing::info!(node = %node, "agent log relay disconnected");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

// ------------------------------------------------------------------------------------------
// Mounting, and the REST half of the log relay
// ------------------------------------------------------------------------------------------

/// The loopback URL of a listener (`0.0.0.0:6443` → `http://127.0.0.1:6443`).
pub fn loopback_url(addr: std::net::SocketAddr) -> String {
    loopback_url_scheme(addr, "http")
}

/// [`loopback_url`] with `scheme` (`https` for a TLS listener).
pub fn loopback_url_scheme(addr: std::net::SocketAddr, scheme: &str) -> String {
    match addr {
        std::net::SocketAddr::V4(a) if a.ip().is_unspecified() => {
            format!("{scheme}://127.0.0.1:{}", a.port())
        }
        std::net::SocketAddr::V6(a) if a.ip().is_unspecified() => {
            format!("{scheme}://[::1]:{}", a.port())
        }
        a => format!("{scheme}://{a}"),
    }
}

#[derive(Clone)]
struct LogState {
    registry: AgentRegistry,
    pods: Client,
}

/// Add the component API (gRPC, `/kapsel.v1.NodeAgent/*`) and the log relay route
/// (`GET /api/v1/namespaces/{ns}/pods/{name}/log`) to the REST router served on `listener`.
/// The [`AgentRegistry`] is also available to handlers as an `Extension`.
pub fn mount(
    app: axum::Router,
    listener: &tokio::net::TcpListener,
    loopback: &Loopback,
) -> axum::Router {
    let scheme = if loopback.tls_ca_pem.is_some() {
        "https"
    } else {
        "http"
    };
    let url = match listener.local_addr() {
        Ok(a) => loopback_url_scheme(a, scheme),
        Err(e) => {
            tracing::error!(error = %e, "component API not mounted: no local address");
            return app;
        }
    };
    let cfg = ComponentConfig {
        api_url: url,
        api_token: loopback.token.clone(),
        api_ca_pem: loopback.tls_ca_pem.clone(),
    };
    let svc = match ComponentService::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "component API not mounted");
            return app;
        }
    };
    let registry = svc.registry.clone();
    let state = LogState {
        registry: registry.clone(),
        pods: svc.backend.client.clone(),
    };
    let logs = axum::Router::new()
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/log",
            axum::routing::get(pod_log),
        )
        .route(
            "/api/v1/nodes/{name}/proxy/{*path}",
            axum::routing::get(node_proxy),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            axum::routing::get(exec::pod_exec).post(exec::pod_exec),
        )
        .with_state(state);
    let m = "/apis/metrics.k8s.io/v1beta1";
    let metrics = axum::Router::new()
        .route(&format!("{m}/nodes"), axum::routing::get(node_metrics))
        .route(
            &format!("{m}/nodes/{{name}}"),
            axum::routing::get(node_metric),
        )
        .route(&format!("{m}/pods"), axum::routing::get(all_pod_metrics))
        .route(
            &format!("{m}/namespaces/{{ns}}/pods"),
            axum::routing::get(ns_pod_metrics),
        )
        .route(
            &format!("{m}/namespaces/{{ns}}/pods/{{name}}"),
            axum::routing::get(pod_metric),
        )
        .with_state(registry.clone());
    app.merge(tonic::service::Routes::new(NodeAgentServer::new(svc)).into_axum_router())
        .merge(logs)
        .merge(metrics)
        .layer(axum::Extension(registry))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogParamsQuery {
    container: Option<String>,
    follow: Option<bool>,
    tail_lines: Option<i64>,
    since_seconds: Option<i64>,
    timestamps: Option<bool>,
    previous: Option<bool>,
    limit_bytes: Option<i64>,
}

fn status_body(code: u16, reason: &str, message: &str) -> axum::response::Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    let mut r = axum::response::IntoResponse::into_response(axum::Json(body));
    *r.status_mut() = axum::http::StatusCode::from_u16(code)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

async fn pod_log(
    axum::extract::State(st): axum::extract::State<LogState>,
    axum::extract::Path((ns, name)): axum::extract::Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<LogParamsQuery>,
) -> axum::response::Response {
    let pod = match st
        .pods
        .dynamic(ApiResource::of::<Pod>(), Some(&ns))
        .get(&name)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            let code = e.code().unwrap_or(500);
            let reason = if code == 404 {
                "NotFound"
            } else {
                "InternalError"
            };
            return status_body(code, reason, &e.to_string());
        }
    };
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        return status_body(
            400,
            "BadRequest",
            &format!("pod {name} is not scheduled yet: no logs"),
        );
    }
    let query = LogQuery {
        namespace: ns,
        pod: name,
        container: q.container.unwrap_or_default(),
        follow: q.follow.unwrap_or(false),
        tail_lines: q.tail_lines,
        since_seconds: q.since_seconds,
        timestamps: q.timestamps.unwrap_or(false),
        previous: q.previous.unwrap_or(false),
        limit_bytes: q.limit_bytes,
        proxy_path: String::new(),
    };
    match st.registry.logs(node, &query).await {
        Ok(stream) => {
            let body =
                axum::body::Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)));
            let mut resp = axum::response::Response::new(body);
            resp.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("text/plain"),
            );
            resp
        }
        Err(RelayError::Agent { code, message }) => {
            let reason = match code {
                404 => "NotFound",
                400 => "BadRequest",
                _ => "InternalError",
            };
            status_body(code, reason, &message)
        }
        Err(e) => status_body(503, "ServiceUnavailable", &e.to_string()),
    }
}

/// `GET /api/v1/nodes/{name}/proxy/{path}`: the agent's own endpoints (`metrics`,
/// `metrics/cadvisor`), relayed over the agent's outbound stream; agents listen on no port.
async fn node_proxy(
    axum::extract::State(st): axum::extract::State<LogState>,
    axum::extract::Path((node, path)): axum::extract::Path<(String, String)>,
) -> axum::response::Response {
    let path = path.trim_matches('/').to_string();
    if !matches!(path.as_str(), "metrics" | "metrics/cadvisor") {
        return status_body(
            404,
            "NotFound",
            &format!("the node proxy serves only metrics and metrics/cadvisor, not {path:?}"),
        );
    }
    if let Err(e) = st
        .pods
        .dynamic(ApiResource::of::<Node>(), None)
        .get(&node)
        .await
    {
        let code = e.code().unwrap_or(500);
        let reason = if code == 404 {
            "NotFound"
        } else {
            "InternalError"
        };
        return status_body(code, reason, &e.to_string());
    }
    let q = LogQuery {
        proxy_path: path,
        ..Default::default()
    };
    match st.registry.logs(&node, &q).await {
        Ok(stream) => {
            let body =
                axum::body::Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)));
            let mut resp = axum::response::Response::new(body);
            resp.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        Err(RelayError::Agent { code, message }) => {
            let reason = if code == 404 {
                "NotFound"
            } else {
                "InternalError"
            };
            status_body(code, reason, &message)
        }
        Err(e) => status_body(503, "ServiceUnavailable", &e.to_string()),
    }
}

// ------------------------------------------------------------------------------------------
// metrics.k8s.io (what `kapsel top` / `kubectl top` read), from the agents' reports
// ------------------------------------------------------------------------------------------

fn usage_json(u: Option<&v1::Usage>) -> Value {
    let u = u.cloned().unwrap_or_default();
    serde_json::json!({
        "cpu": format!("{}n", u.cpu_nano_cores),
        "memory": format!("{}Ki", u.memory_working_set_bytes / 1024),
    })
}

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn window(ms: i64) -> String {
    format!("{}s", (ms.max(1000) + 500) / 1000)
}

fn node_metrics_json(s: &v1::NodeStats) -> Value {
    serde_json::json!({
        "kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": s.node_name, "creationTimestamp": ts(s.timestamp_unix_ms)},
        "timestamp": ts(s.timestamp_unix_ms), "window": window(s.window_ms),
        "usage": usage_json(s.node.as_ref()),
    })
}

fn pod_metrics_json(s: &v1::NodeStats, p: &v1::PodUsage) -> Value {
    let containers: Vec<Value> = p
        .containers
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "usage": usage_json(c.usage.as_ref())}))
        .collect();
    serde_json::json!({
        "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": p.name, "namespace": p.namespace, "creationTimestamp": ts(s.timestamp_unix_ms)},
        "timestamp": ts(s.timestamp_unix_ms), "window": window(s.window_ms),
        "containers": containers,
    })
}

fn list_json(kind: &str, items: Vec<Value>) -> axum::response::Response {
    axum::response::IntoResponse::into_response(axum::Json(serde_json::json!({
        "kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items,
    })))
}

fn pods_matching(reg: &AgentRegistry, ns: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for s in reg.stats() {
        for p in &s.pods {
            if ns.is_none_or(|n| n == p.namespace) {
                out.push(pod_metrics_json(&s, p));
            }
        }
    }
    out
}

async fn node_metrics(
    axum::extract::State(reg): axum::extract::State<AgentRegistry>,
) -> axum::response::Response {
    list_json(
        "NodeMetricsList",
        reg.stats().iter().map(node_metrics_json).collect(),
    )
}

async fn node_metric(
    axum::extract::State(reg): axum::extract::State<AgentRegistry>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    match reg.stats().iter().find(|s| s.node_name == name) {
        Some(s) => axum::response::IntoResponse::into_response(axum::Json(node_metrics_json(s))),
        None => status_body(
            404,
            "NotFound",
            &format!("nodemetrics.metrics.k8s.io \"{name}\" not found"),
        ),
    }
}

async fn all_pod_metrics(
    axum::extract::State(reg): axum::extract::State<AgentRegistry>,
) -> axum::response::Response {
    list_json("PodMetricsList", pods_matching(&reg, None))
}

async fn ns_pod_metrics(
    axum::extract::State(reg): axum::extract::State<AgentRegistry>,
    axum::extract::Path(ns): axum::extract::Path<String>,
) -> axum::response::Response {
    list_json("PodMetricsList", pods_matching(&reg, Some(&ns)))
}

async fn pod_metric(
    axum::extract::State(reg): axum::extract::State<AgentRegistry>,
    axum::extract::Path((ns, name)): axum::extract::Path<(String, String)>,
) -> axum::response::Response {
    match pods_matching(&reg, Some(&ns))
        .into_iter()
        .find(|p| p.pointer("/metadata/name").and_then(Value::as_str) == Some(name.as_str()))
    {
        Some(p) => axum::response::IntoResponse::into_response(axum::Json(p)),
        None => status_body(
            404,
            "NotFound",
            &format!("podmetrics.metrics.k8s.io \"{ns}/{name}\" not found"),
        ),
    }
}

/// The listener with `TCP_NODELAY` on every accepted connection. Streams (gRPC pod watches,
/// REST watches, log relays) write small frames; with Nagle's algorithm each one after the
/// first waits for the peer's delayed ACK (~40 ms on Linux).
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set(tcp: &mut tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    }
    listener.tap_io(set as fn(&mut tokio::net::TcpStream))
}
