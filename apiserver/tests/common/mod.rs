//! Shared helpers for the API server's integration tests (raw HTTP via reqwest).
#![allow(dead_code, unused_imports)]

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub use kapsel_apiserver::server::start_test_server_with;
pub use kapsel_apiserver::{start_test_server, TestServer};

pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn code(&self) -> u16 {
        self.status.as_u16()
    }
    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
    pub fn rv(&self) -> String {
        self.body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

impl Http {
    pub fn new(server: &TestServer) -> Self {
        Http::at(&server.url)
    }
    pub fn at(base: &str) -> Self {
        Http {
            base: base.to_string(),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
        }
    }
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        ct: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Resp {
        let mut rb = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(ct) = ct {
            rb = rb.header("content-type", ct);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let r = rb.send().await.expect("request");
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Resp {
            status,
            headers,
            body,
        }
    }
    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, None).await
    }
    pub async fn post(&self, path: &str, v: &Value) -> Resp {
        self.send(
            Method::POST,
            path,
            Some("application/json"),
            Some(v.to_string().into_bytes()),
        )
        .await
    }
    pub async fn put(&self, path: &str, v: &Value) -> Resp {
        self.send(
            Method::PUT,
            path,
            Some("application/json"),
            Some(v.to_string().into_bytes()),
        )
        .await
    }
    pub async fn patch(&self, path: &str, ct: &str, v: &Value) -> Resp {
        self.send(
            Method::PATCH,
            path,
            Some(ct),
            Some(v.to_string().into_bytes()),
        )
        .await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None, None).await
    }
    pub async fn delete_with(&self, path: &str, opts: &Value) -> Resp {
        self.send(
            Method::DELETE,
            path,
            Some("application/json"),
            Some(opts.to_string().into_bytes()),
        )
        .await
    }
}

pub fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    })
}

pub fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

pub fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}
            }
        }
    })
}

/// Read NDJSON watch events from a streaming response until `n` events or `timeout`.
pub async fn read_events(
    resp: &mut reqwest::Response,
    n: usize,
    timeout: std::time::Duration,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < n {
        let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            _ => break,
        };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                out.push(v);
            }
        }
    }
    out
}
