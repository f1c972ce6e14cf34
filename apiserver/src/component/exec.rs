//! `GET|POST /api/v1/namespaces/{ns}/pods/{name}/exec?command=..&container=..&stdin=..`:
//! Kubernetes' websocket channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`), relayed
//! to the pod's agent over the stream the agent opened ([`AgentRegistry::exec`]); the agent runs
//! the command with `Runtime::exec` (the container's namespaces, cgroup, Landlock domain,
//! seccomp filter and capabilities, never more).
//!
//! Each binary message starts with its channel: 0 stdin (client → server), 1 stdout, 2 stderr,
//! 3 the final `metav1.Status` (`Success`, or `Failure` with reason `NonZeroExitCode` and an
//! `ExitCode` cause), and in v5 255 = close the stream named by the next byte (stdin EOF).
//!
//! Authorized as `create` on `pods/exec` (authz/attributes.rs), recorded by the audit log like
//! every request (user, verb, and the request URI naming pod, container and command), and
//! refused with 403 in a namespace labelled `kapsel.dev/exec: deny`.

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde_json::Value;

use kapsel_api::client::{ApiResource, ClientError};
use kapsel_api::{Namespace, Pod};

use super::{status_body, AgentRegistry, ExecEvent, ExecQuery, LogState, RelayError};
use crate::authz::attributes::percent_decode;

/// The namespace label that controls `pods/exec`: `deny` refuses it. Any value other than
/// `allow` refuses too (a misspelt lock must not open the namespace).
pub const EXEC_LABEL: &str = "kapsel.dev/exec";

/// The subprotocols served, most preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Channel numbers of the websocket channel protocol.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
/// v5 only: "close stream N" (`[255, N]`).
pub const CLOSE: u8 = 255;

/// The query parameters of `pods/{name}/exec` (`command` repeats).
#[derive(Debug, PartialEq, Eq)]
pub struct ExecParams {
    pub command: Vec<String>,
    pub container: String,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Default for ExecParams {
    fn default() -> Self {
        // PodExecOptions' defaults: stdout and stderr unless set to false.
        ExecParams {
            command: Vec::new(),
            container: String::new(),
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
        }
    }
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE")
}

pub fn exec_params(query: &str) -> ExecParams {
    let mut p = ExecParams::default();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = percent_decode(v);
        match k {
            "command" => p.command.push(v),
            "container" => p.container = v,
            "stdin" => p.stdin = truthy(&v),
            "stdout" => p.stdout = truthy(&v),
            "stderr" => p.stderr = truthy(&v),
            "tty" => p.tty = truthy(&v),
            _ => {}
        }
    }
    p
}

/// A request kapsel refuses before looking at the pod: (HTTP code, reason, message).
pub fn validate(p: &ExecParams) -> Result<(), (u16, &'static str, String)> {
    if p.command.is_empty() || p.command[0].is_empty() {
        return Err((
            400,
            "BadRequest",
            "you must specify at least 1 command".into(),
        ));
    }
    if !(p.stdin || p.stdout || p.stderr) {
        return Err((
            400,
            "BadRequest",
            "you must specify at least one of stdin, stdout, stderr".into(),
        ));
    }
    if p.tty {
        return Err((
            400,
            "BadRequest",
            "kapsel exec does not allocate a terminal (tty=true); run it without -t".into(),
        ));
    }
    Ok(())
}

/// Why exec is refused in namespace `ns` with these labels, if it is: the message of the 403.
pub fn exec_refusal(
    ns: &str,
    pod: &str,
    labels: Option<&serde_json::Map<String, Value>>,
) -> Option<String> {
    let value = labels?.get(EXEC_LABEL)?;
    match value.as_str() {
        Some("allow") => None,
        Some(v) => Some(format!(
            "pods \"{pod}\" is forbidden: exec is refused in namespace \"{ns}\" (label {EXEC_LABEL}={v})"
        )),
        None => Some(format!(
            "pods \"{pod}\" is forbidden: exec is refused in namespace \"{ns}\" (label {EXEC_LABEL} is not a string)"
        )),
    }
}

/// `cannot exec into a container in a completed pod` (Kubernetes' message).
fn refuse_by_phase(pod: &Value) -> Option<String> {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str)?;
    matches!(phase, "Succeeded" | "Failed").then(|| {
        format!("cannot exec into a container in a completed pod; current phase is {phase}")
    })
}

/// One message on channel `ch`.
pub fn frame(ch: u8, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(data.len() + 1);
    b.push(ch);
    b.extend_from_slice(data);
    b
}

/// What a client's binary message means.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    Stdin(&'a [u8]),
    /// v5 `[255, 0]`: no more stdin.
    StdinEof,
    /// Terminal resizes, closes of other streams, unknown channels.
    Ignored,
}

pub fn client_frame(b: &[u8], v5: bool) -> ClientFrame<'_> {
    match b.split_first() {
        Some((&STDIN, rest)) => ClientFrame::Stdin(rest),
        Some((&CLOSE, [STDIN])) if v5 => ClientFrame::StdinEof,
        _ => ClientFrame::Ignored,
    }
}

/// The `metav1.Status` on the error channel when the process ended with `code`.
pub fn exit_status_json(code: i32, message: &str) -> Value {
    if code == 0 {
        return serde_json::json!({"metadata": {}, "status": "Success"});
    }
    let msg = if message.is_empty() {
        format!("command terminated with non-zero exit code: exit status {code}")
    } else {
        format!("command terminated with non-zero exit code: {message}: exit status {code}")
    };
    serde_json::json!({
        "metadata": {}, "status": "Failure", "message": msg, "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The status of an exec the agent refused or could not run.
pub fn relay_error_status(e: &RelayError) -> Value {
    let (code, reason) = match e {
        RelayError::Agent { code: 404, .. } => (404, "NotFound"),
        RelayError::Agent { code: 400, .. } => (400, "BadRequest"),
        RelayError::NotConnected(_) | RelayError::AgentGone(_) => (503, "ServiceUnavailable"),
        _ => (500, "InternalError"),
    };
    let message = match e {
        RelayError::Agent { message, .. } => message.clone(),
        other => other.to_string(),
    };
    serde_json::json!({
        "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn client_error_response(e: ClientError) -> Response {
    let code = e.code().unwrap_or(500);
    let reason = match code {
        404 => "NotFound",
        403 => "Forbidden",
        _ => "InternalError",
    };
    let message = match &e {
        ClientError::Api(s) => s.message().to_string(),
        other => other.to_string(),
    };
    status_body(code, reason, &message)
}

pub(super) async fn pod_exec(
    State(st): State<LogState>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let p = exec_params(query.as_deref().unwrap_or(""));
    if let Err((code, reason, msg)) = validate(&p) {
        return status_body(code, reason, &msg);
    }
    let namespace = match st
        .pods
        .dynamic(ApiResource::of::<Namespace>(), None)
        .get(&ns)
        .await
    {
        Ok(n) => n,
        Err(e) => return client_error_response(e),
    };
    let labels = namespace
        .pointer("/metadata/labels")
        .and_then(Value::as_object);
    if let Some(msg) = exec_refusal(&ns, &name, labels) {
        tracing::info!(namespace = %ns, pod = %name, command = ?p.command, "exec refused by the namespace label");
        return status_body(403, "Forbidden", &msg);
    }
    let pod = match st
        .pods
        .dynamic(ApiResource::of::<Pod>(), Some(&ns))
        .get(&name)
        .await
    {
        Ok(p) => p,
        Err(e) => return client_error_response(e),
    };
    if let Some(msg) = refuse_by_phase(&pod) {
        return status_body(400, "BadRequest", &msg);
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return status_body(
            400,
            "BadRequest",
            &format!("pod {name} does not have a host assigned"),
        );
    }
    let ws = match ws {
        Ok(ws) => ws.protocols(PROTOCOLS),
        Err(_) => {
            return status_body(
                400,
                "BadRequest",
                "Upgrade request required (websocket, v5.channel.k8s.io or v4.channel.k8s.io)",
            )
        }
    };
    if ws.selected_protocol().is_none() {
        return status_body(
            400,
            "BadRequest",
            "none of the requested websocket subprotocols is served: use v5.channel.k8s.io or v4.channel.k8s.io",
        );
    }
    tracing::info!(namespace = %ns, pod = %name, container = %p.container, command = ?p.command, node = %node, "exec");
    let q = ExecQuery {
        namespace: ns,
        pod: name,
        container: p.container,
        command: p.command,
        stdin: p.stdin,
    };
    let (stdout, stderr) = (p.stdout, p.stderr);
    let registry = st.registry.clone();
    ws.on_upgrade(move |socket| relay_exec(socket, registry, node, q, stdout, stderr))
}

async fn relay_exec(
    socket: WebSocket,
    registry: AgentRegistry,
    node: String,
    q: ExecQuery,
    want_stdout: bool,
    want_stderr: bool,
) {
    let v5 = socket
        .protocol()
        .is_some_and(|p| p.as_bytes() == PROTOCOLS[0].as_bytes());
    let (mut sink, mut inbound) = socket.split();
    let status = |v: Value| {
        Message::Binary(frame(ERROR, &serde_json::to_vec(&v).unwrap_or_default()).into())
    };
    // A normal closure (1000): clients read it as the end of every stream (kubectl reports a
    // close without a code, 1005, as an error on the error stream).
    let closing = || {
        Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: "".into(),
        }))
    };
    let mut exec = match registry.exec(&node, &q).await {
        Ok(e) => e,
        Err(e) => {
            let _ = sink.send(status(relay_error_status(&e))).await;
            let _ = sink.send(closing()).await;
            return;
        }
    };
    let mut stdin_open = q.stdin;
    loop {
        tokio::select! {
            ev = exec.next() => match ev {
                Some(ExecEvent::Output { stream, data }) => {
                    let wanted = match stream {
                        STDOUT => want_stdout,
                        STDERR => want_stderr,
                        _ => false,
                    };
                    if wanted && sink.send(Message::Binary(frame(stream, &data).into())).await.is_err() {
                        return;
                    }
                }
                Some(ExecEvent::Exit { code, message }) => {
                    let _ = sink.send(status(exit_status_json(code, &message))).await;
                    let _ = sink.send(closing()).await;
                    return;
                }
                None => {
                    let e = RelayError::AgentGone(node.clone());
                    let _ = sink.send(status(relay_error_status(&e))).await;
                    let _ = sink.send(closing()).await;
                    return;
                }
            },
            msg = inbound.next() => match msg {
                Some(Ok(Message::Binary(b))) => match client_frame(&b, v5) {
                    ClientFrame::Stdin(data) if stdin_open => exec.stdin(data.to_vec(), false).await,
                    ClientFrame::StdinEof if stdin_open => {
                        stdin_open = false;
                        exec.stdin(Vec::new(), true).await;
                    }
                    _ => {}
                },
                // The client is gone: dropping `exec` cancels the request, the agent kills it.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_query_parameters() {
        let table = [
            ("", ExecParams::default()),
            (
                "command=sh&command=-c&command=echo%20a%26b&container=web&stdin=true&stdout=true",
                ExecParams {
                    command: vec!["sh".into(), "-c".into(), "echo a&b".into()],
                    container: "web".into(),
                    stdin: true,
                    ..Default::default()
                },
            ),
            (
                // Go's url.Values encodes spaces as '+' (kubectl)
                "command=echo&command=hello+world&stderr=false&tty=false",
                ExecParams {
                    command: vec!["echo".into(), "hello world".into()],
                    stderr: false,
                    ..Default::default()
                },
            ),
            (
                "command=cat&stdin=1&stdout=0&tty=true",
                ExecParams {
                    command: vec!["cat".into()],
                    stdin: true,
                    stdout: false,
                    tty: true,
                    ..Default::default()
                },
            ),
        ];
        for (q, want) in table {
            assert_eq!(exec_params(q), want, "{q}");
        }
    }

    #[test]
    fn requests_refused_before_the_pod() {
        let ok = |q: &str| validate(&exec_params(q)).map_err(|(code, _, m)| (code, m));
        assert_eq!(ok("command=ls"), Ok(()));
        assert_eq!(
            ok("command=cat&stdin=true&stdout=false&stderr=false"),
            Ok(())
        );
        let table = [
            ("", "at least 1 command"),
            ("command=", "at least 1 command"),
            (
                "command=ls&stdout=false&stderr=false",
                "at least one of stdin, stdout, stderr",
            ),
            ("command=sh&stdin=true&tty=true", "without -t"),
        ];
        for (q, want) in table {
            let (code, msg) = ok(q).unwrap_err();
            assert_eq!(code, 400, "{q}");
            assert!(msg.contains(want), "{q}: {msg}");
        }
    }

    #[test]
    fn the_namespace_label_decides() {
        let labels = |v: Value| v.as_object().cloned();
        let table = [
            (None, None),
            (labels(serde_json::json!({})), None),
            (labels(serde_json::json!({"team": "a"})), None),
            (labels(serde_json::json!({EXEC_LABEL: "allow"})), None),
            (
                labels(serde_json::json!({EXEC_LABEL: "deny"})),
                Some("pods \"web\" is forbidden: exec is refused in namespace \"prod\" (label kapsel.dev/exec=deny)"),
            ),
            // a misspelt value keeps the namespace locked
            (
                labels(serde_json::json!({EXEC_LABEL: "Deny "})),
                Some("pods \"web\" is forbidden: exec is refused in namespace \"prod\" (label kapsel.dev/exec=Deny )"),
            ),
            (
                labels(serde_json::json!({EXEC_LABEL: true})),
                Some("pods \"web\" is forbidden: exec is refused in namespace \"prod\" (label kapsel.dev/exec is not a string)"),
            ),
        ];
        for (l, want) in table {
            assert_eq!(
                exec_refusal("prod", "web", l.as_ref()).as_deref(),
                want,
                "{l:?}"
            );
        }
    }

    #[test]
    fn completed_pods_refuse_exec() {
        let pod = |phase: &str| serde_json::json!({"status": {"phase": phase}});
        assert_eq!(refuse_by_phase(&pod("Running")), None);
        assert_eq!(refuse_by_phase(&pod("Pending")), None);
        assert_eq!(refuse_by_phase(&serde_json::json!({})), None);
        assert_eq!(
            refuse_by_phase(&pod("Succeeded")).as_deref(),
            Some("cannot exec into a container in a completed pod; current phase is Succeeded")
        );
        assert!(refuse_by_phase(&pod("Failed")).is_some());
    }

    #[test]
    fn channel_frames() {
        assert_eq!(frame(STDOUT, b"hi\n"), b"\x01hi\n");
        assert_eq!(frame(ERROR, b""), vec![3u8]);
        let table: [(&[u8], bool, ClientFrame<'_>); 8] = [
            (b"\x00abc", true, ClientFrame::Stdin(b"abc")),
            (b"\x00", false, ClientFrame::Stdin(b"")),
            (&[255, 0], true, ClientFrame::StdinEof),
            // v4 has no close message
            (&[255, 0], false, ClientFrame::Ignored),
            // closing stdout or a malformed close is not stdin EOF
            (&[255, 1], true, ClientFrame::Ignored),
            (&[255, 0, 0], true, ClientFrame::Ignored),
            // 4: terminal resize (no tty here)
            (
                b"\x04{\"Width\":80,\"Height\":24}",
                true,
                ClientFrame::Ignored,
            ),
            (b"", true, ClientFrame::Ignored),
        ];
        for (b, v5, want) in table {
            assert_eq!(client_frame(b, v5), want, "{b:?} v5={v5}");
        }
    }

    #[test]
    fn exit_statuses_are_kubernetes_shaped() {
        assert_eq!(
            exit_status_json(0, ""),
            serde_json::json!({"metadata": {}, "status": "Success"})
        );
        let v = exit_status_json(3, "");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(
            v["message"],
            "command terminated with non-zero exit code: exit status 3"
        );
        assert_eq!(
            v["details"]["causes"],
            serde_json::json!([{"reason": "ExitCode", "message": "3"}])
        );
        let v = exit_status_json(126, "execve \"/bin/sh\": EACCES: Permission denied");
        assert_eq!(
            v["message"],
            "command terminated with non-zero exit code: execve \"/bin/sh\": EACCES: Permission denied: exit status 126"
        );
        // every status decodes as metav1.Status
        for v in [exit_status_json(0, ""), exit_status_json(2, "x")] {
            let s: kapsel_api::Status = serde_json::from_value(v).unwrap();
            assert!(s.status.is_some());
        }
    }

    #[test]
    fn relay_errors_become_statuses() {
        let table = [
            (
                RelayError::Agent {
                    code: 400,
                    message: "container x is not valid for pod p".into(),
                },
                400,
                "BadRequest",
                "container x is not valid for pod p",
            ),
            (
                RelayError::Agent {
                    code: 404,
                    message: "gone".into(),
                },
                404,
                "NotFound",
                "gone",
            ),
            (
                RelayError::NotConnected("n1".into()),
                503,
                "ServiceUnavailable",
                "no agent of node \"n1\" is connected",
            ),
        ];
        for (e, code, reason, msg) in table {
            let v = relay_error_status(&e);
            assert_eq!(
                (
                    v["code"].as_u64(),
                    v["reason"].as_str(),
                    v["message"].as_str()
                ),
                (Some(code), Some(reason), Some(msg)),
                "{e:?}"
            );
        }
    }
}
