//! The audit log (`--audit-log-path`): one JSON line per request — time, user, groups, verb,
//! resource, subresource, namespace, name, request URI, response code, latency, source IP and
//! user agent — to a file rotated by size (`--audit-log-maxsize` MiB, `--audit-log-maxbackup`
//! old files kept as `PATH.1` … `PATH.N`). Request and response bodies are never logged, so
//! neither are Secret values or credentials. The file is created with mode 0600.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::header;
use axum::response::Response;
use serde::Serialize;

use super::{Attributes, Authorized};

/// Where and how much.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    pub max_size_bytes: u64,
    /// Rotated files kept.
    pub max_backups: usize,
}

impl AuditConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            path: path.into(),
            max_size_bytes: 100 * 1024 * 1024,
            max_backups: 5,
        }
    }
}

/// The client's address, when the accept loop knows it (also read: axum's `ConnectInfo`).
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub SocketAddr);

/// One audit line.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub timestamp: String,
    pub user: String,
    pub groups: Vec<String>,
    pub verb: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub code: u16,
    pub latency_ms: f64,
    #[serde(rename = "sourceIP", default, skip_serializing_if = "String::is_empty")]
    pub source_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
}

struct Writer {
    cfg: AuditConfig,
    file: File,
    size: u64,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn backup(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Writer {
    fn rotate(&mut self) -> std::io::Result<()> {
        let p = &self.cfg.path;
        if self.cfg.max_backups == 0 {
            std::fs::remove_file(p)?;
        } else {
            let _ = std::fs::remove_file(backup(p, self.cfg.max_backups));
            for i in (1..self.cfg.max_backups).rev() {
                let from = backup(p, i);
                if from.exists() {
                    std::fs::rename(&from, backup(p, i + 1))?;
                }
            }
            std::fs::rename(p, backup(p, 1))?;
        }
        self.file = open_append(p)?;
        self.size = 0;
        Ok(())
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.cfg.max_size_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// The open audit log. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    w: Arc<Mutex<Writer>>,
}

impl AuditLog {
    pub fn open(cfg: AuditConfig) -> std::io::Result<Self> {
        let file = open_append(&cfg.path)?;
        let size = file.metadata()?.len();
        Ok(AuditLog {
            w: Arc::new(Mutex::new(Writer { cfg, file, size })),
        })
    }

    pub fn write(&self, e: &Entry) {
        let mut line = match serde_json::to_vec(e) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        let mut w = self.w.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = w.write_line(&line) {
            tracing::error!(error = %err, path = %w.cfg.path.display(), "writing the audit log");
        }
    }
}

/// One request's audit line in the making: begun before authentication, written with the user
/// the authorizer saw (none for requests refused before authentication finished: 401, 413).
pub struct Pending {
    log: AuditLog,
    started: Instant,
    timestamp: String,
    attributes: Attributes,
    request_uri: String,
    source_ip: String,
    user_agent: String,
}

impl Pending {
    /// Note what the request asked before it runs (`attributes` as authorization sees them).
    pub fn begin(log: &AuditLog, req: &Request, attributes: &Attributes) -> Pending {
        let started = Instant::now();
        let timestamp = chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let source_ip = req
            .extensions()
            .get::<RemoteAddr>()
            .map(|r| r.0)
            .or_else(|| {
                req.extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0)
            })
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Pending {
            log: log.clone(),
            started,
            timestamp,
            attributes: attributes.clone(),
            request_uri: req.uri().to_string(),
            source_ip,
            user_agent,
        }
    }

    /// Write the line, with the caller authorization found (none for a 401) and the code.
    pub fn end(self, resp: &Response) {
        let (user, groups) = match resp.extensions().get::<Authorized>() {
            Some(a) => (a.user.name.clone(), a.user.groups.clone()),
            None => (String::new(), Vec::new()),
        };
        let a = self.attributes;
        self.log.write(&Entry {
            timestamp: self.timestamp,
            user,
            groups,
            verb: a.verb,
            api_group: a.api_group,
            resource: a.resource,
            subresource: a.subresource,
            namespace: a.namespace,
            name: a.name,
            request_uri: self.request_uri,
            code: resp.status().as_u16(),
            latency_ms: (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            source_ip: self.source_ip,
            user_agent: self.user_agent,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> Entry {
        Entry {
            timestamp: "2026-01-01T00:00:00.000000Z".into(),
            user: format!("u{i}"),
            groups: vec![],
            verb: "get".into(),
            api_group: String::new(),
            resource: "pods".into(),
            subresource: String::new(),
            namespace: "default".into(),
            name: "p".into(),
            request_uri: "/api/v1/namespaces/default/pods/p".into(),
            code: 200,
            latency_ms: 1.5,
            source_ip: "127.0.0.1".into(),
            user_agent: String::new(),
        }
    }

    #[test]
    fn rotates_by_size_and_keeps_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.max_size_bytes = 1000;
        cfg.max_backups = 2;
        let log = AuditLog::open(cfg).unwrap();
        for i in 0..40 {
            log.write(&entry(i));
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let current = read(&path);
        assert!(current.len() <= 1000, "{}", current.len());
        assert!(!read(&backup(&path, 1)).is_empty());
        assert!(!read(&backup(&path, 2)).is_empty());
        assert!(!backup(&path, 3).exists());
        // The newest line is in the current file, and every line parses.
        let last: Entry = serde_json::from_str(current.lines().last().unwrap()).unwrap();
        assert_eq!(last, entry(39));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
