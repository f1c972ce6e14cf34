//! A minimal `GET /metrics` HTTP/1.1 endpoint for the standalone binaries
//! (`kapsel-scheduler --metrics-addr`, `kapsel-controller --metrics-addr`). Inside
//! `kapsel server` the API server serves the same exposition behind its authentication.
//! One request per connection; an optional bearer token guards it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The OpenMetrics text content type (what Prometheus asks for).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const MAX_HEAD: usize = 16 * 1024;

/// What to answer for a request head (pure): status line, content type, body.
pub fn answer(
    head: &str,
    token: Option<&str>,
    render: &dyn Fn() -> String,
) -> (&'static str, &'static str, String) {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if let Some(want) = token {
        let got = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| v.trim().strip_prefix("Bearer "))
            .map(str::trim);
        if got != Some(want) {
            return ("401 Unauthorized", "text/plain", "Unauthorized\n".into());
        }
    }
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", CONTENT_TYPE, render()),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok".into()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".into(),
        ),
    }
}

async fn handle(
    mut s: TcpStream,
    token: Option<String>,
    render: fn() -> String,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_HEAD {
            return Ok(());
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let (status, ctype, body) = answer(&head, token.as_deref(), &render);
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

/// Serve `render()` at `GET /metrics` on `addr` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    token: Option<String>,
    render: fn() -> String,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics endpoint listening");
    loop {
        let (s, _) = listener.accept().await?;
        let token = token.clone();
        tokio::spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(10), handle(s, token, render)).await;
            if let Ok(Err(e)) = r {
                tracing::debug!(error = %e, "metrics request");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let r = || "m 1\n# EOF\n".to_string();
        let get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(answer(get, None, &r).0, "200 OK");
        assert_eq!(answer(get, None, &r).2, "m 1\n# EOF\n");
        assert_eq!(answer(get, Some("t"), &r).0, "401 Unauthorized");
        let authed = "GET /metrics?x=1 HTTP/1.1\r\nauthorization: Bearer t\r\n\r\n";
        assert_eq!(answer(authed, Some("t"), &r).0, "200 OK");
        let wrong = "GET /metrics HTTP/1.1\r\nAuthorization: Bearer u\r\n\r\n";
        assert_eq!(answer(wrong, Some("t"), &r).0, "401 Unauthorized");
        assert_eq!(
            answer("GET /x HTTP/1.1\r\n\r\n", None, &r).0,
            "404 Not Found"
        );
        assert_eq!(
            answer("POST /metrics HTTP/1.1\r\n\r\n", None, &r).0,
            "405 Method Not Allowed"
        );
        assert_eq!(answer("", None, &r).0, "405 Method Not Allowed");
    }
}
