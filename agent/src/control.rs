//! The agent's view of the control plane ([`ControlPlane`]) and its gRPC implementation
//! ([`GrpcControlPlane`]). The agent only dials out: the pod watch and the log relay are
//! streams the agent opens.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use kapsel_api::{ConfigMap, Event, Node, NodeStatus, Pod, PodStatus, Secret};
use kapsel_proto::v1::{self, log_chunk, pod_event};
use kapsel_proto::NodeAgentClient;

use crate::error::{AgentError, Result};

/// A change of the pods bound to this node.
#[derive(Debug, Clone)]
pub enum PodUpdate {
    /// The pod exists as given.
    Upsert(Box<Pod>),
    /// The pod object is gone.
    Deleted(Box<Pod>),
    /// Every pod that exists has been sent since the stream (re)started.
    Synced,
}

/// A log request relayed by the API server.
pub type LogRequest = v1::LogRequest;

/// Answers log requests (implemented by the agent's log module).
pub trait LogServer: Send + Sync + 'static {
    /// Start serving `req`; send chunks to `out` (first an empty chunk to accept the request,
    /// or an error). Returns immediately; the work runs on a task.
    fn serve(&self, req: LogRequest, out: mpsc::Sender<v1::LogData>);
    /// Stop the request `id`.
    fn cancel(&self, id: u64);
}

#[tonic::async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Create or update the Node.
    async fn register(&self, node: &Node) -> Result<Node>;
    async fn renew_lease(&self, node: &str, duration: Duration) -> Result<()>;
    async fn update_node_status(&self, node: &str, status: &NodeStatus) -> Result<()>;
    /// A full list of the node's pods, `Synced`, then changes. Ends on error; callers reopen.
    async fn watch_pods(&self, node: &str) -> Result<BoxStream<'static, Result<PodUpdate>>>;
    async fn get_config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>>;
    async fn get_secret(&self, ns: &str, name: &str) -> Result<Option<Secret>>;
    async fn update_pod_status(&self, pod: &Pod, status: &PodStatus) -> Result<()>;
    /// Remove the pod object: its containers are gone.
    async fn finalize_pod_deletion(&self, pod: &Pod) -> Result<()>;
    async fn create_event(&self, event: &Event) -> Result<()>;
    /// Latest node and pod usage (for `kapsel top`).
    async fn report_stats(&self, stats: &v1::NodeStats) -> Result<()>;
    /// Hold the log relay stream open, serving requests, until it breaks.
    async fn serve_logs(&self, node: &str, server: Arc<dyn LogServer>) -> Result<()>;
    /// How the agent's REST watches (Nodes for the pod network, Services and Endpoints for
    /// the proxy) reach the API server with this node's identity; `None`: the agent config's
    /// server URL and token.
    fn rest_config(&self) -> Option<kapsel_api::client::ClientConfig> {
        None
    }
}

/// The gRPC client of the component API.
#[derive(Clone)]
pub struct GrpcControlPlane {
    channel: Arc<std::sync::Mutex<(u64, Channel)>>,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    /// mTLS: the node's certificates; a renewal (new generation) reconnects.
    certs: Option<Arc<crate::certs::NodeCerts>>,
    server: String,
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

fn from_json<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    Ok(serde_json::from_slice(b)?)
}

impl GrpcControlPlane {
    /// A lazily connecting client for `server` (`http://host:port`); reconnects on its own.
    pub fn new(server: &str, token: Option<&str>) -> Result<Self> {
        let ep = Self::endpoint(server, None)?;
        let token = match token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| AgentError::InvalidConfig("token is not ASCII".into()))?,
            ),
            None => None,
        };
        Ok(GrpcControlPlane {
            channel: Arc::new(std::sync::Mutex::new((0, ep.connect_lazy()))),
            token,
            certs: None,
            server: server.to_string(),
        })
    }

    /// A client authenticating with the node's certificate over TLS verified against the
    /// cluster CA (`https://host:port`).
    pub fn with_certs(certs: Arc<crate::certs::NodeCerts>) -> Result<Self> {
        let server = certs.server().to_string();
        let ep = Self::endpoint(&server, Some(&certs))?;
        Ok(GrpcControlPlane {
            channel: Arc::new(std::sync::Mutex::new((
                certs.generation(),
                ep.connect_lazy(),
            ))),
            token: None,
            certs: Some(certs),
            server,
        })
    }

    fn endpoint(server: &str, certs: Option<&crate::certs::NodeCerts>) -> Result<Endpoint> {
        let mut ep = Endpoint::from_shared(server.to_string())
            .map_err(|e| AgentError::InvalidConfig(format!("server URL {server:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if let Some(c) = certs {
            use tonic::transport::{Certificate, ClientTlsConfig, Identity};
            let (cert, key) = c.identity();
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(c.ca_pem()))
                .identity(Identity::from_pem(cert, key));
            ep = ep
                .tls_config(tls)
                .map_err(|e| AgentError::InvalidConfig(format!("TLS: {e}")))?;
        }
        Ok(ep)
    }

    fn client(&self) -> NodeAgentClient<Channel> {
        let mut cur = self
            .channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = &self.certs {
            let gen = c.generation();
            if gen != cur.0 {
                // A renewed certificate: new connections (the old ones keep serving the
                // streams opened on them until they end).
                match Self::endpoint(&self.server, Some(c)) {
                    Ok(ep) => *cur = (gen, ep.connect_lazy()),
                    Err(e) => {
                        tracing::error!(error = %e, "reconnecting with the renewed certificate")
                    }
                }
            }
        }
        NodeAgentClient::new(cur.1.clone())
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert("authorization", t.clone());
        }
        r
    }

    async fn get_object<T: DeserializeOwned>(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Result<Option<T>> {
        let r = self
            .client()
            .get_object(self.req(v1::ObjectRef {
                kind: kind.into(),
                namespace: ns.into(),
                name: name.into(),
            }))
            .await;
        match r {
            Ok(o) => Ok(Some(from_json(&o.into_inner().json)?)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }
}

#[tonic::async_trait]
impl ControlPlane for GrpcControlPlane {
    fn rest_config(&self) -> Option<kapsel_api::client::ClientConfig> {
        let c = self.certs.as_ref()?;
        let mut cc = kapsel_api::client::ClientConfig::new(c.server());
        cc.ca_cert_pem = Some(c.ca_pem().as_bytes().to_vec());
        // The current certificate, and the renewed ones after it (certs.rs renews at 2/3).
        cc.identity_source = Some(Arc::clone(c) as Arc<dyn kapsel_api::client::IdentitySource>);
        Some(cc)
    }

    async fn register(&self, node: &Node) -> Result<Node> {
        let r = self
            .client()
            .register(self.req(v1::RegisterRequest {
                node: Some(v1::Object::new("Node", to_json(node)?)),
            }))
            .await?
            .into_inner();
        let o = r
            .node
            .ok_or_else(|| AgentError::Control("register answered no node".into()))?;
        from_json(&o.json)
    }

    async fn renew_lease(&self, node: &str, duration: Duration) -> Result<()> {
        self.client()
            .renew_lease(self.req(v1::RenewLeaseRequest {
                node_name: node.into(),
                lease_duration_seconds: i32::try_from(duration.as_secs()).unwrap_or(40),
            }))
            .await?;
        Ok(())
    }

    async fn update_node_status(&self, node: &str, status: &NodeStatus) -> Result<()> {
        self.client()
            .update_node_status(self.req(v1::UpdateNodeStatusRequest {
                node_name: node.into(),
                status_json: to_json(status)?,
            }))
            .await?;
        Ok(())
    }

    async fn watch_pods(&self, node: &str) -> Result<BoxStream<'static, Result<PodUpdate>>> {
        let s = self
            .client()
            .watch_pods(self.req(v1::WatchPodsRequest {
                node_name: node.into(),
                resource_version: String::new(),
            }))
            .await?
            .into_inner();
        Ok(s.filter_map(|ev| async move {
            let ev = match ev {
                Ok(ev) => ev,
                Err(s) => return Some(Err(AgentError::from(s))),
            };
            let pod = || -> Result<Box<Pod>> {
                let o = ev
                    .object
                    .as_ref()
                    .ok_or_else(|| AgentError::Control("pod event without a pod".into()))?;
                Ok(Box::new(from_json(&o.json)?))
            };
            match pod_event::Type::try_from(ev.r#type) {
                Ok(pod_event::Type::Added | pod_event::Type::Modified) => {
                    Some(pod().map(PodUpdate::Upsert))
                }
                Ok(pod_event::Type::Deleted) => Some(pod().map(PodUpdate::Deleted)),
                Ok(pod_event::Type::Synced) => Some(Ok(PodUpdate::Synced)),
                Ok(pod_event::Type::Bookmark) | Err(_) => None,
            }
        })
        .boxed())
    }

    async fn get_config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>> {
        self.get_object("ConfigMap", ns, name).await
    }

    async fn get_secret(&self, ns: &str, name: &str) -> Result<Option<Secret>> {
        self.get_object("Secret", ns, name).await
    }

    async fn update_pod_status(&self, pod: &Pod, status: &PodStatus) -> Result<()> {
        self.client()
            .update_pod_status(self.req(v1::UpdatePodStatusRequest {
                namespace: pod.metadata.namespace().into(),
                name: pod.metadata.name().into(),
                uid: pod.metadata.uid().into(),
                status_json: to_json(status)?,
                pod_json: to_json(pod)?,
            }))
            .await?;
        Ok(())
    }

    async fn finalize_pod_deletion(&self, pod: &Pod) -> Result<()> {
        self.client()
            .finalize_pod_deletion(self.req(v1::FinalizePodDeletionRequest {
                namespace: pod.metadata.namespace().into(),
                name: pod.metadata.name().into(),
                uid: pod.metadata.uid().into(),
            }))
            .await?;
        Ok(())
    }

    async fn create_event(&self, event: &Event) -> Result<()> {
        self.client()
            .create_event(self.req(v1::CreateEventRequest {
                event: Some(v1::Object::new("Event", to_json(event)?)),
            }))
            .await?;
        Ok(())
    }

    async fn report_stats(&self, stats: &v1::NodeStats) -> Result<()> {
        self.client().report_stats(self.req(stats.clone())).await?;
        Ok(())
    }

    async fn serve_logs(&self, node: &str, server: Arc<dyn LogServer>) -> Result<()> {
        let (out_tx, out_rx) = mpsc::channel::<v1::LogChunk>(64);
        out_tx
            .send(v1::LogChunk {
                msg: Some(log_chunk::Msg::Hello(v1::Hello {
                    node_name: node.into(),
                })),
            })
            .await
            .map_err(|_| AgentError::Control("log relay closed".into()))?;
        let mut inbound = self
            .client()
            .log_stream(self.req(ReceiverStream::new(out_rx)))
            .await?
            .into_inner();
        // Data from the request tasks, funneled into the one outbound stream.
        let (data_tx, mut data_rx) = mpsc::channel::<v1::LogData>(64);
        let fwd = tokio::spawn(async move {
            while let Some(d) = data_rx.recv().await {
                if out_tx
                    .send(v1::LogChunk {
                        msg: Some(log_chunk::Msg::Data(d)),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let res = loop {
            match inbound.message().await {
                Ok(Some(req)) if req.cancel => server.cancel(req.request_id),
                Ok(Some(req)) => server.serve(req, data_tx.clone()),
                Ok(None) => break Ok(()),
                Err(s) => break Err(AgentError::from(s)),
            }
        };
        fwd.abort();
        res
    }
}
