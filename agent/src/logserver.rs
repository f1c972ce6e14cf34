//! Serves `kapsel logs` requests relayed by the API server over the agent's own connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kapsel_proto::v1::LogData;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::control::{LogRequest, LogServer};
use crate::logs::{self, ReadOptions};
use crate::sync::PodIndex;

pub struct LogService {
    pub root: std::path::PathBuf,
    pub index: PodIndex,
    pub max_files: u32,
    tasks: Arc<Mutex<HashMap<u64, AbortHandle>>>,
}

impl LogService {
    pub fn new(root: std::path::PathBuf, index: PodIndex, max_files: u32) -> Self {
        LogService {
            root,
            index,
            max_files,
            tasks: Arc::default(),
        }
    }
}

fn err(id: u64, code: u32, msg: String) -> LogData {
    LogData {
        request_id: id,
        data: Vec::new(),
        eof: true,
        error: msg,
        code,
    }
}

fn data(id: u64, b: Vec<u8>) -> LogData {
    LogData {
        request_id: id,
        data: b,
        eof: false,
        error: String::new(),
        code: 0,
    }
}

/// Which instance to read: (log dir, attempt, follow-able).
fn locate(
    index: &PodIndex,
    root: &std::path::Path,
    req: &LogRequest,
) -> Result<(std::path::PathBuf, u32, bool, String), (u32, String)> {
    let idx = crate::lock(index);
    let info = idx
        .get(&(req.namespace.clone(), req.pod.clone()))
        .ok_or_else(|| (404, format!("pod {:?} has no logs on this node", req.pod)))?;
    let container = if req.container.is_empty() {
        if info.app_containers == 1 {
            info.containers[0].clone()
        } else {
            return Err((
                400,
                format!(
                    "a container name must be specified for pod {}, choose one of: [{}]",
                    req.pod,
                    info.containers[..info.app_containers].join(" ")
                ),
            ));
        }
    } else if info.containers.contains(&req.container) {
        req.container.clone()
    } else {
        return Err((
            400,
            format!(
                "container {} is not valid for pod {}",
                req.container, req.pod
            ),
        ));
    };
    let (attempt, running) = *info.latest.get(&container).ok_or_else(|| {
        (
            400,
            format!(
                "container \"{container}\" in pod \"{}\" is waiting to start",
                req.pod
            ),
        )
    })?;
    let dir = logs::container_log_dir(root, &req.namespace, &req.pod, &info.uid, &container);
    if req.previous {
        if attempt == 0 {
            return Err((
                400,
                format!(
                    "previous terminated container \"{container}\" in pod \"{}\" not found",
                    req.pod
                ),
            ));
        }
        return Ok((dir, attempt - 1, false, container));
    }
    Ok((dir, attempt, running, container))
}

fn still_running(index: &PodIndex, req: &LogRequest, container: &str, attempt: u32) -> bool {
    let idx = crate::lock(index);
    idx.get(&(req.namespace.clone(), req.pod.clone()))
        .and_then(|info| info.latest.get(container).copied())
        == Some((attempt, true))
}

impl LogServer for LogService {
    fn serve(&self, req: LogRequest, out: mpsc::Sender<LogData>) {
        let id = req.request_id;
        if !req.proxy_path.is_empty() {
            // The node proxy: the agent's metrics endpoints, relayed (the agent has no port).
            let path = req.proxy_path.clone();
            tokio::spawn(async move {
                match crate::metrics::endpoint(&path) {
                    None => {
                        let _ = out
                            .send(err(id, 404, format!("no endpoint {path:?} on this node")))
                            .await;
                    }
                    Some(body) => {
                        // Accept, the body, the end.
                        let _ = out.send(data(id, Vec::new())).await;
                        for chunk in body.into_bytes().chunks(64 * 1024) {
                            if out.send(data(id, chunk.to_vec())).await.is_err() {
                                return;
                            }
                        }
                        let _ = out
                            .send(LogData {
                                request_id: id,
                                eof: true,
                                ..Default::default()
                            })
                            .await;
                    }
                }
            });
            return;
        }
        let index = self.index.clone();
        let root = self.root.clone();
        let max_files = self.max_files;
        let tasks = self.tasks.clone();
        let h = tokio::spawn(async move {
            let (dir, attempt, running, container) = match locate(&index, &root, &req) {
                Ok(x) => x,
                Err((code, msg)) => {
                    let _ = out.send(err(id, code, msg)).await;
                    return;
                }
            };
            let o = ReadOptions {
                tail_lines: req.tail(),
                since: req.since().map(|s| {
                    chrono::Utc::now() - chrono::Duration::seconds(i64::try_from(s).unwrap_or(0))
                }),
                timestamps: req.timestamps,
                limit_bytes: req.limit(),
            };
            // Accept.
            if out.send(data(id, Vec::new())).await.is_err() {
                return;
            }
            let d2 = dir.clone();
            let o2 = o.clone();
            let (first, mut offset) =
                tokio::task::spawn_blocking(move || logs::read_all(&d2, attempt, max_files, &o2))
                    .await
                    .unwrap_or_default();
            let mut sent = first.len() as u64;
            for chunk in first.chunks(64 * 1024) {
                if out.send(data(id, chunk.to_vec())).await.is_err() {
                    return;
                }
            }
            if req.follow && running {
                let mut was_running = true;
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let more = logs::read_from(
                        &dir,
                        attempt,
                        &mut offset,
                        &ReadOptions {
                            tail_lines: None,
                            ..o.clone()
                        },
                    );
                    if !more.is_empty() {
                        sent += more.len() as u64;
                        if out.send(data(id, more)).await.is_err() {
                            break;
                        }
                        if o.limit_bytes.is_some_and(|l| sent >= l) {
                            break;
                        }
                    }
                    if !was_running {
                        break; // one last read after the container stopped
                    }
                    was_running = still_running(&index, &req, &container, attempt);
                }
            }
            let _ = out
                .send(LogData {
                    request_id: id,
                    eof: true,
                    ..Default::default()
                })
                .await;
            crate::lock(&tasks).remove(&id);
        });
        crate::lock(&self.tasks).insert(id, h.abort_handle());
    }

    fn cancel(&self, id: u64) {
        if let Some(h) = crate::lock(&self.tasks).remove(&id) {
            h.abort();
        }
    }
}
