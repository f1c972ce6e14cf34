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
    /// For `pods/{name}/exec` (`None`: exec is refused).
    rt: Option<Arc<dyn kapsel_runtime::Runtime>>,
    execs: Arc<Mutex<HashMap<u64, ExecSession>>>,
}

/// An exec in progress: where its stdin goes, how to kill it.
struct ExecSession {
    stdin: Option<std::sync::mpsc::Sender<Option<Vec<u8>>>>,
    kill: kapsel_runtime::ExecKill,
}

impl LogService {
    pub fn new(root: std::path::PathBuf, index: PodIndex, max_files: u32) -> Self {
        LogService {
            root,
            index,
            max_files,
            tasks: Arc::default(),
            rt: None,
            execs: Arc::default(),
        }
    }

    /// Serve `pods/{name}/exec` with this runtime.
    pub fn with_runtime(mut self, rt: Arc<dyn kapsel_runtime::Runtime>) -> Self {
        self.rt = Some(rt);
        self
    }

    /// An exec request (`exec_command` set), or stdin for a running one.
    fn serve_exec(&self, req: LogRequest, out: mpsc::Sender<LogData>) {
        let id = req.request_id;
        if req.exec_command.is_empty() {
            let mut execs = crate::lock(&self.execs);
            if let Some(s) = execs.get_mut(&id) {
                if let Some(tx) = &s.stdin {
                    if !req.stdin.is_empty() {
                        let _ = tx.send(Some(req.stdin));
                    }
                    if req.stdin_eof {
                        let _ = tx.send(None);
                        s.stdin = None;
                    }
                }
            }
            return;
        }
        let Some(rt) = self.rt.clone() else {
            tokio::spawn(async move {
                let _ = out
                    .send(err(id, 400, "exec is not supported on this node".into()))
                    .await;
            });
            return;
        };
        let target = locate(&self.index, &self.root, &req).and_then(|(_, attempt, running, c)| {
            if !running {
                return Err((
                    400,
                    format!("container {c} is not running in pod {}", req.pod),
                ));
            }
            let uid = crate::lock(&self.index)
                .get(&(req.namespace.clone(), req.pod.clone()))
                .map(|i| i.uid.clone())
                .unwrap_or_default();
            crate::model::container_id(&uid, &c, attempt)
                .ok_or_else(|| (400, format!("bad container id for {c}")))
        });
        let cid = match target {
            Ok(c) => c,
            Err((code, msg)) => {
                tokio::spawn(async move {
                    let _ = out.send(err(id, code, msg)).await;
                });
                return;
            }
        };
        let (stdin_tx, stdin_rx) = std::sync::mpsc::channel::<Option<Vec<u8>>>();
        crate::lock(&self.execs).insert(
            id,
            ExecSession {
                stdin: req.exec_stdin.then_some(stdin_tx),
                kill: kapsel_runtime::ExecKill::default(),
            },
        );
        let execs = self.execs.clone();
        tokio::spawn(async move {
            let command = req.exec_command.clone();
            let want_stdin = req.exec_stdin;
            let res = tokio::task::spawn_blocking(move || {
                run_exec(rt, cid, command, want_stdin, stdin_rx)
            })
            .await;
            let started = match res {
                Ok(Ok(s)) => s,
                Ok(Err(e)) if e.is_refusal() => {
                    // Accepted, the reason on stderr, exit 126/127 (what a shell reports).
                    let _ = out.send(data(id, Vec::new())).await;
                    let msg = e.to_string();
                    let _ = out
                        .send(LogData {
                            request_id: id,
                            data: format!("{msg}\n").into_bytes(),
                            stream: 2,
                            ..Default::default()
                        })
                        .await;
                    let _ = out
                        .send(LogData {
                            request_id: id,
                            eof: true,
                            exited: true,
                            exit_code: e.exit_code(),
                            error: msg,
                            ..Default::default()
                        })
                        .await;
                    crate::lock(&execs).remove(&id);
                    return;
                }
                Ok(Err(e)) => {
                    let _ = out.send(err(id, e.http_code(), e.to_string())).await;
                    crate::lock(&execs).remove(&id);
                    return;
                }
                Err(e) => {
                    let _ = out.send(err(id, 500, e.to_string())).await;
                    crate::lock(&execs).remove(&id);
                    return;
                }
            };
            let cancelled = match crate::lock(&execs).get_mut(&id) {
                Some(s) => {
                    s.kill = started.process.killer();
                    false
                }
                // Cancelled while starting: nobody reads its output.
                None => true,
            };
            if cancelled || out.send(data(id, Vec::new())).await.is_err() {
                started.process.killer().kill();
            }
            let pumps: Vec<_> = [(1u32, started.stdout), (2u32, started.stderr)]
                .into_iter()
                .map(|(stream, fd)| {
                    let out = out.clone();
                    tokio::task::spawn_blocking(move || pump(id, stream, fd, out))
                })
                .collect();
            let mut process = started.process;
            let code = tokio::task::spawn_blocking(move || process.wait())
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or(-1);
            for p in pumps {
                let _ = p.await;
            }
            let _ = out
                .send(LogData {
                    request_id: id,
                    eof: true,
                    exited: true,
                    exit_code: code,
                    ..Default::default()
                })
                .await;
            crate::lock(&execs).remove(&id);
        });
    }
}

/// A started exec and the read ends of its output pipes.
struct StartedExec {
    process: kapsel_runtime::ExecProcess,
    stdout: std::os::fd::OwnedFd,
    stderr: std::os::fd::OwnedFd,
}

#[derive(Debug, thiserror::Error)]
enum ExecStartError {
    #[error(transparent)]
    Runtime(#[from] kapsel_runtime::RuntimeError),
    #[error("pipe: {0}")]
    Pipe(#[from] std::io::Error),
}

impl ExecStartError {
    /// The command could not be exec'd (not found, not allowed): the process "ran" and failed.
    fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Runtime(kapsel_runtime::RuntimeError::ExecFailed(_))
                | Self::Runtime(kapsel_runtime::RuntimeError::InitFailed { .. })
        )
    }
    fn exit_code(&self) -> i32 {
        let s = self.to_string();
        if s.contains("ENOENT") || s.contains("No such file") {
            127
        } else {
            126
        }
    }
    fn http_code(&self) -> u32 {
        match self {
            Self::Runtime(e) if e.is_spec_error() => 400,
            Self::Runtime(kapsel_runtime::RuntimeError::NotFound(_))
            | Self::Runtime(kapsel_runtime::RuntimeError::InvalidState { .. }) => 400,
            _ => 500,
        }
    }
}

fn run_exec(
    rt: Arc<dyn kapsel_runtime::Runtime>,
    cid: kapsel_runtime::ContainerId,
    command: Vec<String>,
    want_stdin: bool,
    stdin_rx: std::sync::mpsc::Receiver<Option<Vec<u8>>>,
) -> Result<StartedExec, ExecStartError> {
    let (out_r, out_w) = std::io::pipe()?;
    let (err_r, err_w) = std::io::pipe()?;
    let stdin = if want_stdin {
        let (in_r, in_w) = std::io::pipe()?;
        std::thread::spawn(move || {
            let mut w = in_w;
            while let Ok(Some(b)) = stdin_rx.recv() {
                if std::io::Write::write_all(&mut w, &b).is_err() {
                    break;
                }
            }
        });
        Some(in_r.into())
    } else {
        None
    };
    let process = rt.exec(
        &cid,
        kapsel_runtime::ExecSpec {
            command,
            stdin,
            stdout: out_w.into(),
            stderr: err_w.into(),
        },
    )?;
    Ok(StartedExec {
        process,
        stdout: out_r.into(),
        stderr: err_r.into(),
    })
}

/// Relay one output pipe until EOF.
fn pump(id: u64, stream: u32, fd: std::os::fd::OwnedFd, out: mpsc::Sender<LogData>) {
    let mut f = std::fs::File::from(fd);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let d = LogData {
                    request_id: id,
                    data: buf[..n].to_vec(),
                    stream,
                    ..Default::default()
                };
                if out.blocking_send(d).is_err() {
                    return;
                }
            }
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
        ..Default::default()
    }
}

fn data(id: u64, b: Vec<u8>) -> LogData {
    LogData {
        request_id: id,
        data: b,
        eof: false,
        ..Default::default()
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
        if !req.exec_command.is_empty() || crate::lock(&self.execs).contains_key(&id) {
            return self.serve_exec(req, out);
        }
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
        if let Some(s) = crate::lock(&self.execs).remove(&id) {
            s.kill.kill();
        }
        if let Some(h) = crate::lock(&self.tasks).remove(&id) {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_runtime::RuntimeError;

    #[test]
    fn refused_execs_exit_like_a_shell() {
        let table = [
            (
                RuntimeError::ExecFailed("execve \"/bin/sh\": EACCES: Permission denied".into()),
                true,
                126,
            ),
            (
                RuntimeError::ExecFailed(
                    "execve \"nope\": ENOENT: No such file or directory".into(),
                ),
                true,
                127,
            ),
            (
                RuntimeError::InitFailed {
                    step: "landlock".into(),
                    message: "restrict_self: EPERM".into(),
                },
                true,
                126,
            ),
            (RuntimeError::NotFound("c".into()), false, 126),
        ];
        for (e, refusal, code) in table {
            let e = ExecStartError::from(e);
            assert_eq!(e.is_refusal(), refusal, "{e}");
            if refusal {
                assert_eq!(e.exit_code(), code, "{e}");
            } else {
                assert_eq!(e.http_code(), 400, "{e}");
            }
        }
    }
}
