//! `kapsel exec POD [-c C] [-i] -- CMD...`: Kubernetes' websocket channel protocol
//! (`v5.channel.k8s.io`, falling back to `v4.channel.k8s.io`) over an HTTP/1.1 upgrade made
//! with the kubeconfig's TLS settings and credentials. The remote exit code becomes ours; a
//! refused request prints the server's Status the way kubectl does.

use std::io::Write;

use anyhow::{anyhow, bail};
use clap::Args;
use futures::{SinkExt, StreamExt};
use kapsel_api::client::ClientError;
use kapsel_api::Status;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

use super::Ctx;
use crate::config::{self, KubeConfig, Overrides};

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// The pod (or pod/NAME).
    #[arg(value_name = "POD")]
    pub pod: String,
    /// The container (default: the only one).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The remote command exited with this (non-zero) code; already reported on stderr.
#[derive(Debug, thiserror::Error)]
#[error("command terminated with exit code {0}")]
pub struct RemoteExit(pub i32);

fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// The exec URL's path and query.
pub fn exec_path(ns: &str, pod: &str, a: &ExecArgs) -> String {
    let mut q = String::new();
    for c in &a.command {
        q.push_str(&format!("command={}&", enc(c)));
    }
    if let Some(c) = &a.container {
        q.push_str(&format!("container={}&", enc(c)));
    }
    q.push_str(&format!("stdin={}&stdout=true&stderr=true", a.stdin));
    format!("/api/v1/namespaces/{}/pods/{}/exec?{q}", enc(ns), enc(pod))
}

/// How an exec ended, from the Status on channel 3 (`None`: the stream ended without one).
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Exit(i32),
    Failed(Box<Status>),
}

pub fn outcome(status: Option<&[u8]>) -> Outcome {
    let Some(raw) = status else {
        return Outcome::Failed(Box::new(Status {
            status: Some("Failure".into()),
            message: Some("the exec stream ended without a status".into()),
            reason: Some("InternalError".into()),
            ..Default::default()
        }));
    };
    let s: Status = match serde_json::from_slice(raw) {
        Ok(s) => s,
        // v1-v3 put a plain message there; not spoken here, but keep the text.
        Err(_) => {
            return Outcome::Failed(Box::new(Status {
                status: Some("Failure".into()),
                message: Some(String::from_utf8_lossy(raw).into_owned()),
                ..Default::default()
            }))
        }
    };
    if s.status.as_deref() == Some("Success") {
        return Outcome::Exit(0);
    }
    if s.reason.as_deref() == Some("NonZeroExitCode") {
        let code = s
            .details
            .as_ref()
            .and_then(|d| {
                d.causes
                    .iter()
                    .find(|c| c.reason.as_deref() == Some("ExitCode"))
            })
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.parse::<i32>().ok());
        if let Some(code) = code {
            return Outcome::Exit(code);
        }
    }
    Outcome::Failed(Box::new(s))
}

/// The server's answer to a refused upgrade, as a client error (`Error from server (Forbidden): …`).
pub fn refusal(code: u16, body: &[u8]) -> ClientError {
    let mut s: Status = serde_json::from_slice(body).unwrap_or_default();
    if s.message.as_deref().unwrap_or("").is_empty() {
        s.message = Some(format!(
            "the server answered {code} to the exec upgrade: {}",
            String::from_utf8_lossy(body).trim()
        ));
    }
    if s.code.is_none() {
        s.code = Some(code);
    }
    if s.reason.as_deref().unwrap_or("").is_empty() {
        s.reason = Some(
            match code {
                400 => "BadRequest",
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "NotFound",
                _ => "InternalError",
            }
            .into(),
        );
    }
    ClientError::Api(Box::new(s))
}

fn http1_client(cfg: &kapsel_api::client::ClientConfig) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().http1_only();
    if let Some(pem) = &cfg.ca_cert_pem {
        for c in reqwest::Certificate::from_pem_bundle(pem)? {
            b = b.add_root_certificate(c);
        }
    }
    if let Some(pem) = &cfg.client_identity_pem {
        b = b.identity(reqwest::Identity::from_pem(pem)?);
    }
    if cfg.insecure_skip_tls_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    if let Some(t) = cfg.connect_timeout {
        b = b.connect_timeout(t);
    }
    Ok(b.build()?)
}

/// Read our stdin on a plain thread (a blocking read in tokio's pool would keep the runtime
/// from shutting down while the terminal is still open) and forward it in chunks.
fn stdin_reader() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match std::io::Read::read(&mut input, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

pub async fn run(ctx: &Ctx, a: ExecArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let g = &ctx.global;
    let cfg = KubeConfig::load(&config::config_path(g.kubeconfig.as_deref()))?;
    let r = config::resolve(
        &cfg,
        &Overrides {
            kubeconfig: g.kubeconfig.clone(),
            context: g.context.clone(),
            server: g.server.clone(),
            token: g.token.clone(),
            namespace: g.namespace.clone(),
            insecure_skip_tls_verify: g.insecure_skip_tls_verify,
            request_timeout: None,
        },
    )?;
    let pod = a.pod.strip_prefix("pod/").unwrap_or(&a.pod).to_string();
    let url = format!(
        "{}{}",
        r.client.server.trim_end_matches('/'),
        exec_path(&ctx.namespace, &pod, &a)
    );
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let mut rb = http1_client(&r.client)?
        .get(&url)
        .header(reqwest::header::CONNECTION, "Upgrade")
        .header(reqwest::header::UPGRADE, "websocket")
        .header(reqwest::header::SEC_WEBSOCKET_VERSION, "13")
        .header(reqwest::header::SEC_WEBSOCKET_KEY, key)
        .header(
            reqwest::header::SEC_WEBSOCKET_PROTOCOL,
            format!("{V5}, {V4}"),
        );
    if let Some(t) = &r.client.token {
        rb = rb.bearer_auth(t);
    }
    let resp = rb.send().await.map_err(ClientError::from)?;
    if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        let code = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        return Err(refusal(code, &body).into());
    }
    let v5 = resp
        .headers()
        .get(reqwest::header::SEC_WEBSOCKET_PROTOCOL)
        .is_some_and(|p| p.as_bytes() == V5.as_bytes());
    let upgraded = resp.upgrade().await.map_err(ClientError::from)?;
    let ws =
        tokio_tungstenite::WebSocketStream::from_raw_socket(upgraded, Role::Client, None).await;
    let (mut sink, mut stream) = ws.split();
    let mut input = a.stdin.then(stdin_reader);
    let mut status: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let b = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => bail!("exec stream: {e}"),
                };
                let Some((&ch, data)) = b.split_first() else {
                    continue;
                };
                match ch {
                    1 => {
                        out.write_all(data)?;
                        out.flush()?;
                    }
                    2 => {
                        let mut e = std::io::stderr();
                        e.write_all(data)?;
                        e.flush()?;
                    }
                    3 => status = Some(data.to_vec()),
                    _ => {}
                }
            }
            chunk = async { input.as_mut()?.recv().await }, if input.is_some() => {
                let msg = match chunk {
                    Some(data) => {
                        let mut m = Vec::with_capacity(data.len() + 1);
                        m.push(0u8);
                        m.extend_from_slice(&data);
                        Some(m)
                    }
                    None => {
                        // EOF: v5 closes stdin; v4 has no way to say so.
                        input = None;
                        v5.then(|| vec![255u8, 0])
                    }
                };
                if let Some(m) = msg {
                    if sink.send(Message::Binary(m.into())).await.is_err() {
                        input = None;
                    }
                }
            }
        }
    }
    match outcome(status.as_deref()) {
        Outcome::Exit(0) => Ok(()),
        Outcome::Exit(code) => {
            eprintln!("command terminated with exit code {code}");
            Err(RemoteExit(code).into())
        }
        Outcome::Failed(s) => Err(anyhow!(ClientError::Api(s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_urls_repeat_command_and_escape() {
        let a = ExecArgs {
            pod: "web".into(),
            container: Some("c1".into()),
            stdin: true,
            command: vec!["sh".into(), "-c".into(), "echo a&b".into()],
        };
        assert_eq!(
            exec_path("default", "web", &a),
            "/api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&command=echo%20a%26b&container=c1&stdin=true&stdout=true&stderr=true"
        );
        let a = ExecArgs {
            container: None,
            stdin: false,
            command: vec!["ls".into()],
            ..a
        };
        assert_eq!(
            exec_path("kube system", "web", &a),
            "/api/v1/namespaces/kube%20system/pods/web/exec?command=ls&stdin=false&stdout=true&stderr=true"
        );
    }

    #[test]
    fn statuses_become_exit_codes() {
        let exit3 = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        type Row<'a> = (Option<&'a [u8]>, Result<i32, &'a str>);
        let table: [Row<'_>; 6] = [
            (Some(br#"{"metadata":{},"status":"Success"}"#), Ok(0)),
            (Some(exit3), Ok(3)),
            (
                Some(br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"126"}]}}"#),
                Ok(126),
            ),
            // an exit status without a usable code is a failure, not a guess
            (
                Some(br#"{"status":"Failure","reason":"NonZeroExitCode","message":"m"}"#),
                Err("m"),
            ),
            (
                Some(br#"{"status":"Failure","reason":"ServiceUnavailable","message":"no agent of node \"n\" is connected","code":503}"#),
                Err("no agent of node \"n\" is connected"),
            ),
            (None, Err("the exec stream ended without a status")),
        ];
        for (raw, want) in table {
            let got = match outcome(raw) {
                Outcome::Exit(c) => Ok(c),
                Outcome::Failed(s) => Err(s.message.unwrap_or_default()),
            };
            assert_eq!(got, want.map_err(String::from), "{raw:?}");
        }
    }

    #[test]
    fn refusals_print_like_kubectl() {
        let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"p\" is forbidden: exec is refused in namespace \"x\" (label kapsel.dev/exec=deny)","reason":"Forbidden","code":403}"#;
        let e = anyhow::Error::from(refusal(403, body));
        assert_eq!(
            crate::errors::format_error(&e),
            "Error from server (Forbidden): pods \"p\" is forbidden: exec is refused in namespace \"x\" (label kapsel.dev/exec=deny)"
        );
        let e = anyhow::Error::from(refusal(404, b"404 page not found"));
        assert_eq!(
            crate::errors::format_error(&e),
            "Error from server (NotFound): the server answered 404 to the exec upgrade: 404 page not found"
        );
    }
}
