//! Probes and lifecycle hooks: exec through the runtime (the container's whole confinement, as
//! `kapsel exec`), httpGet and tcpSocket from inside the pod's network namespace. Results feed [`ProbeState`]: liveness and startup
//! failures ask the worker to kill (and restart) the container, readiness drives `ready`.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kapsel_api::{Container, ExecAction, HttpGetAction, IntOrString, Probe, TcpSocketAction};
use kapsel_runtime::ContainerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::model::{KillCause, ProbeState};

/// Probe outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// Where probes run: the container's init pid (0 for the hollow runtime, where probes
/// "succeed" unless told otherwise).
#[derive(Clone)]
pub struct Target {
    pub pid: i32,
    pub env: Vec<String>,
    /// Hollow: readiness never succeeds.
    pub hollow_never_ready: bool,
    /// Exec handlers run through the runtime's `exec` in this container: its namespaces,
    /// cgroup, user, capabilities, seccomp filter and Landlock domain, like `kapsel exec`
    /// (`None`: exec handlers fail — a probe must never run with the agent's privileges).
    pub exec: Option<(Arc<dyn kapsel_runtime::Runtime>, ContainerId)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("pid", &self.pid)
            .field("hollow_never_ready", &self.hollow_never_ready)
            .field("exec", &self.exec.as_ref().map(|(_, id)| id))
            .finish_non_exhaustive()
    }
}

fn open_ns(pid: i32, ns: &str) -> std::io::Result<OwnedFd> {
    std::fs::File::open(format!("/proc/{pid}/ns/{ns}")).map(OwnedFd::from)
}

/// Connect to `port` on loopback inside the network namespace of `pid` (the pod's), or to
/// `host` from the node when one is given.
pub async fn connect(
    pid: i32,
    host: Option<&str>,
    port: u16,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, String> {
    if let Some(h) = host.filter(|h| !h.is_empty()) {
        let fut = tokio::net::TcpStream::connect((h.to_string(), port));
        return tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| format!("dial tcp {h}:{port}: i/o timeout"))?
            .map_err(|e| format!("dial tcp {h}:{port}: {e}"));
    }
    let ns = open_ns(pid, "net").map_err(|e| format!("open network namespace: {e}"))?;
    // A fresh thread joins the netns (only that thread), connects, and hands the socket back.
    let std_stream = tokio::task::spawn_blocking(move || -> Result<std::net::TcpStream, String> {
        std::thread::spawn(move || {
            // SAFETY: setns on this short-lived thread only changes the thread's own network
            // namespace; the fd is valid for the call.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns: {}", std::io::Error::last_os_error()));
            }
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            std::net::TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("dial tcp 127.0.0.1:{port}: {e}"))
        })
        .join()
        .map_err(|_| "probe thread panicked".to_string())?
    })
    .await
    .map_err(|e| e.to_string())??;
    std_stream
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    tokio::net::TcpStream::from_std(std_stream).map_err(|e| e.to_string())
}

/// A named or numbered port of `c`.
pub fn resolve_port(c: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(s) => {
            if let Ok(n) = s.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(s.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .ok_or_else(|| format!("port {s:?} not found in the container's ports"))
        }
    }
}

/// The request a httpGet probe sends (pure).
pub fn http_request(h: &HttpGetAction, host: &str, port: u16) -> String {
    let path = h.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let mut has_host = false;
    let mut has_ua = false;
    let mut has_accept = false;
    for hd in &h.http_headers {
        let n = hd.name.to_ascii_lowercase();
        has_host |= n == "host";
        has_ua |= n == "user-agent";
        has_accept |= n == "accept";
        req.push_str(&format!("{}: {}\r\n", hd.name, hd.value));
    }
    if !has_host {
        req.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !has_ua {
        req.push_str("User-Agent: kube-probe/kapsel\r\n");
    }
    if !has_accept {
        req.push_str("Accept: */*\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    req
}

/// `HTTP/1.1 200 OK` → 200.
pub fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let s = std::str::from_utf8(line).ok()?;
    let mut it = s.split_whitespace();
    let v = it.next()?;
    if !v.starts_with("HTTP/") {
        return None;
    }
    it.next()?.parse().ok()
}

async fn http_get(c: &Container, t: &Target, h: &HttpGetAction, timeout: Duration) -> Outcome {
    if h.scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
    {
        return Outcome::Failure("httpGet: HTTPS probes are not supported yet".into());
    }
    let port = match resolve_port(c, &h.port) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(e),
    };
    let fut = async {
        let mut s = connect(t.pid, h.host.as_deref(), port, timeout).await?;
        let host = h.host.clone().unwrap_or_else(|| "127.0.0.1".into());
        s.write_all(http_request(h, &host, port).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1024];
        let mut n = 0;
        while n < buf.len() {
            let r = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
            if r == 0 || buf[..n + r].contains(&b'\n') {
                n += r;
                break;
            }
            n += r;
        }
        status_code(&buf[..n]).ok_or_else(|| "malformed HTTP response".to_string())
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}\": context deadline exceeded"
        )),
        Ok(Err(e)) => Outcome::Failure(e),
        Ok(Ok(code)) if (200..400).contains(&code) => Outcome::Success,
        Ok(Ok(code)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
    }
}

async fn tcp(c: &Container, t: &Target, a: &TcpSocketAction, timeout: Duration) -> Outcome {
    let port = match resolve_port(c, &a.port) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(e),
    };
    match connect(t.pid, a.host.as_deref(), port, timeout).await {
        Ok(_) => Outcome::Success,
        Err(e) => Outcome::Failure(e),
    }
}

async fn exec(t: &Target, e: &ExecAction, timeout: Duration) -> Outcome {
    let Some((rt, id)) = t.exec.clone() else {
        return Outcome::Failure("exec: no runtime to run the command in the container".into());
    };
    match exec_confined(rt, id, e.command.clone(), timeout).await {
        Ok(0) => Outcome::Success,
        Ok(code) => Outcome::Failure(format!("command exited with {code}")),
        Err(e) => Outcome::Failure(e),
    }
}

/// Run `cmd` with [`kapsel_runtime::Runtime::exec`] in container `id` (never more than the
/// container has; its own environment), output discarded; killed after `timeout`.
pub async fn exec_confined(
    rt: Arc<dyn kapsel_runtime::Runtime>,
    id: ContainerId,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<i32, String> {
    let prog = cmd.first().cloned().ok_or("exec: empty command")?;
    let started = tokio::task::spawn_blocking(move || {
        let null = |_| {
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| format!("exec {prog}: /dev/null: {e}"))
        };
        let spec = kapsel_runtime::ExecSpec {
            command: cmd,
            stdin: None,
            stdout: null(())?,
            stderr: null(())?,
        };
        rt.exec(&id, spec).map_err(|e| format!("exec {prog}: {e}"))
    })
    .await
    .map_err(|e| e.to_string())??;
    let kill = started.killer();
    let mut process = started;
    let wait = tokio::task::spawn_blocking(move || process.wait());
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(Ok(code))) => Ok(code),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            kill.kill();
            Err(format!("command timed out after {timeout:?}"))
        }
    }
}

/// Run a probe or hook handler once.
pub async fn run_handler(
    c: &Container,
    t: &Target,
    exec_a: Option<&ExecAction>,
    http: Option<&HttpGetAction>,
    tcp_a: Option<&TcpSocketAction>,
    timeout: Duration,
) -> Outcome {
    if t.pid <= 0 {
        return Outcome::Success; // hollow
    }
    if let Some(e) = exec_a {
        exec(t, e, timeout).await
    } else if let Some(h) = http {
        http_get(c, t, h, timeout).await
    } else if let Some(a) = tcp_a {
        tcp(c, t, a, timeout).await
    } else {
        Outcome::Failure("probe has no handler".into())
    }
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0))
}

/// Called with the message of every failed probe attempt (`Liveness probe failed: …`), for the
/// `Unhealthy` event.
pub type FailureReporter = Arc<dyn Fn(String) + Send + Sync>;

/// Shared probe results of a pod's instances; the worker is woken on every change.
#[derive(Clone, Default)]
pub struct ProbeResults {
    pub map: Arc<Mutex<HashMap<ContainerId, ProbeState>>>,
    pub changed: Arc<Notify>,
}

impl ProbeResults {
    fn update(&self, id: &ContainerId, f: impl FnOnce(&mut ProbeState)) {
        let mut m = crate::lock(&self.map);
        let e = m.entry(id.clone()).or_default();
        let before = *e;
        f(e);
        let changed = *e != before;
        drop(m);
        if changed {
            self.changed.notify_one();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// Run probe `p` until it decides. Startup: returns when it passed (true) or failed (false).
/// Liveness: returns false when it failed. Readiness never returns.
async fn probe_loop(
    kind: Kind,
    c: &Container,
    t: &Target,
    p: &Probe,
    id: &ContainerId,
    res: &ProbeResults,
    report: &FailureReporter,
) -> bool {
    tokio::time::sleep(secs(p.initial_delay_seconds, 0)).await;
    let period = secs(p.period_seconds, 10).max(Duration::from_millis(100));
    let timeout = secs(p.timeout_seconds, 1).max(Duration::from_millis(100));
    let need_ok = p.success_threshold.unwrap_or(1).max(1);
    let need_fail = p.failure_threshold.unwrap_or(3).max(1);
    let (mut oks, mut fails) = (0, 0);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let out = if t.pid <= 0 && kind == Kind::Readiness && t.hollow_never_ready {
            Outcome::Failure("hollow: never ready".into())
        } else {
            run_handler(
                c,
                t,
                p.exec.as_ref(),
                p.http_get.as_ref(),
                p.tcp_socket.as_ref(),
                timeout,
            )
            .await
        };
        match out {
            Outcome::Success => {
                oks += 1;
                fails = 0;
            }
            Outcome::Failure(msg) => {
                fails += 1;
                oks = 0;
                tracing::debug!(container = %id, probe = ?kind, %msg, "probe failed");
                report(failure_message(kind, &msg));
            }
        }
        match kind {
            Kind::Startup if oks >= 1 => return true,
            Kind::Startup if fails >= need_fail => return false,
            Kind::Liveness if fails >= need_fail => return false,
            Kind::Readiness if oks >= need_ok => res.update(id, |s| s.ready = true),
            Kind::Readiness if fails >= need_fail => res.update(id, |s| s.ready = false),
            _ => {}
        }
    }
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Startup => "startup",
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        })
    }
}

/// The kubelet's `Unhealthy` message: `Liveness probe failed: HTTP probe failed with statuscode: 500`.
fn failure_message(kind: Kind, msg: &str) -> String {
    let k = match kind {
        Kind::Startup => "Startup",
        Kind::Liveness => "Liveness",
        Kind::Readiness => "Readiness",
    };
    format!("{k} probe failed: {msg}")
}

/// All probes of one running instance. Runs until aborted (the instance exits).
pub async fn run_probes(
    c: Container,
    t: Target,
    id: ContainerId,
    res: ProbeResults,
    report: FailureReporter,
) {
    res.update(&id, |s| {
        s.ready = c.readiness_probe.is_none();
        s.started = c.startup_probe.is_none();
        s.kill = None;
    });
    if let Some(p) = &c.startup_probe {
        if !probe_loop(Kind::Startup, &c, &t, p, &id, &res, &report).await {
            res.update(&id, |s| s.kill = Some(KillCause::Startup));
            return;
        }
        res.update(&id, |s| s.started = true);
    }
    let live = async {
        if let Some(p) = &c.liveness_probe {
            if !probe_loop(Kind::Liveness, &c, &t, p, &id, &res, &report).await {
                res.update(&id, |s| s.kill = Some(KillCause::Liveness));
            }
        } else {
            std::future::pending::<()>().await;
        }
    };
    let ready = async {
        if let Some(p) = &c.readiness_probe {
            probe_loop(Kind::Readiness, &c, &t, p, &id, &res, &report).await;
        } else {
            std::future::pending::<bool>().await;
        }
    };
    tokio::select! {
        _ = live => {}
        _ = ready => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{ContainerPort, HttpHeader};

    #[test]
    fn ports_by_number_and_name() {
        let c = Container {
            name: "c".into(),
            ports: vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(resolve_port(&c, &IntOrString::Int(80)), Ok(80));
        assert_eq!(
            resolve_port(&c, &IntOrString::String("http".into())),
            Ok(8080)
        );
        assert!(resolve_port(&c, &IntOrString::String("nope".into())).is_err());
    }

    #[test]
    fn unhealthy_messages_name_the_probe() {
        assert_eq!(
            failure_message(Kind::Liveness, "HTTP probe failed with statuscode: 500"),
            "Liveness probe failed: HTTP probe failed with statuscode: 500"
        );
        assert!(failure_message(Kind::Readiness, "x").starts_with("Readiness probe failed"));
        assert!(failure_message(Kind::Startup, "x").starts_with("Startup probe failed"));
    }

    #[test]
    fn http_request_and_status() {
        let h = HttpGetAction {
            path: Some("healthz".into()),
            port: IntOrString::Int(80),
            http_headers: vec![HttpHeader {
                name: "X-Probe".into(),
                value: "1".into(),
            }],
            ..Default::default()
        };
        let r = http_request(&h, "127.0.0.1", 80);
        assert!(r.starts_with("GET /healthz HTTP/1.1\r\n"));
        assert!(r.contains("X-Probe: 1\r\n"));
        assert!(r.contains("Host: 127.0.0.1:80\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"garbage"), None);
    }

    #[tokio::test]
    async fn tcp_and_http_against_host_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut b = [0u8; 512];
                let n = s.read(&mut b).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&b[..n]).starts_with("GET /ok");
                let resp: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\n\r\n"
                } else {
                    b"HTTP/1.1 500 Oops\r\n\r\n"
                };
                let _ = s.write_all(resp).await;
            }
        });
        let c = Container::default();
        let t = Target {
            pid: std::process::id() as i32,
            env: vec![],
            hollow_never_ready: false,
            exec: None,
        };
        let host = Some("127.0.0.1".to_string());
        let mk = |path: &str| HttpGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(port)),
            host: host.clone(),
            ..Default::default()
        };
        let to = Duration::from_secs(2);
        assert_eq!(
            run_handler(&c, &t, None, Some(&mk("/ok")), None, to).await,
            Outcome::Success
        );
        assert!(
            matches!(run_handler(&c, &t, None, Some(&mk("/bad")), None, to).await, Outcome::Failure(m) if m.contains("500"))
        );
        let tcp_ok = TcpSocketAction {
            port: IntOrString::Int(i32::from(port)),
            host: host.clone(),
        };
        assert_eq!(
            run_handler(&c, &t, None, None, Some(&tcp_ok), to).await,
            Outcome::Success
        );
        let tcp_bad = TcpSocketAction {
            port: IntOrString::Int(1),
            host,
        };
        assert!(matches!(
            run_handler(&c, &t, None, None, Some(&tcp_bad), to).await,
            Outcome::Failure(_)
        ));
    }
}
