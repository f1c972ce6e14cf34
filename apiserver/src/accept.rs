//! The accept loop: TCP (`TCP_NODELAY`), optionally TLS (rustls), then HTTP/1.1 or HTTP/2
//! (h2c prior knowledge or ALPN `h2`, for the gRPC component API) on one listener. A verified
//! client certificate goes into every request of its connection as a [`PeerCertificate`] so
//! the authenticator sees it.
//!
//! Slow and abusive clients ([`ConnLimits`]): a TLS handshake must finish within
//! `handshake_timeout` and the first request's header must arrive within
//! `header_read_timeout` (slowloris: a partial header or nothing at all), or the connection is
//! closed. Beyond `max_connections` open connections, new ones are accepted and closed at once
//! (so the kernel's backlog does not fill), while the connections already open keep being
//! served. The peer address goes into every request as a [`RemoteAddr`] (the audit log's
//! `sourceIP`).
//!
//! Shutdown: when `stop` turns true the loop stops accepting, open connections are told to
//! finish (HTTP/2 GOAWAY, HTTP/1 close after the current request) and the loop waits for them
//! at most `grace`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::PeerCertificate;
use crate::authz::audit::RemoteAddr;

/// Default of `--tls-handshake-timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `--request-header-timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection-level limits against slow and abusive clients (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time from accept (after the handshake) until the first request's header is complete.
    pub header_read_timeout: Duration,
    /// Open connections at most; `0`: [`auto_max_connections`].
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: 0,
        }
    }
}

/// The connection cap for a soft `RLIMIT_NOFILE` of `nofile`: three quarters of it (the rest
/// is for the store, watches' files, logs), at least 64. Pure; table-tested.
pub fn max_connections_for(nofile: u64) -> usize {
    usize::try_from((nofile / 4 * 3).max(64)).unwrap_or(usize::MAX)
}

/// [`max_connections_for`] this process's soft `RLIMIT_NOFILE`.
pub fn auto_max_connections() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _hard)| soft);
    max_connections_for(soft)
}

async fn handle<I>(
    io: I,
    app: Router,
    peer: Option<PeerCertificate>,
    remote: SocketAddr,
    header_read_timeout: Duration,
    watcher: Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let first_request = Arc::new(Notify::new());
    let seen = Arc::clone(&first_request);
    let svc = app.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        seen.notify_one();
        if let Some(p) = &peer {
            req.extensions_mut().insert(p.clone());
        }
        req.extensions_mut().insert(RemoteAddr(remote));
        req
    });
    let conn = Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc))
        .into_owned();
    let conn = watcher.watch(conn);
    tokio::pin!(conn);
    // Until the first request's header is complete the connection is on a clock (slowloris);
    // dropping `conn` closes it.
    let result = tokio::select! {
        r = &mut conn => r,
        _ = first_request.notified() => conn.await,
        _ = tokio::time::sleep(header_read_timeout) => {
            tracing::debug!(%remote, "no complete request header in time; closing the connection");
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serve `app` on `listener` until `stop` is true, then drain for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let max = match limits.max_connections {
        0 => auto_max_connections(),
        n => n,
    };
    tracing::debug!(max_connections = max, ?limits, "accepting connections");
    let open = Arc::new(Semaphore::new(max));
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the cap: close at once (RST-free FIN; the client sees the connection end).
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%remote, max_connections = max, refused, "too many open connections; closing new ones");
            }
            drop(tcp);
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let app = app.clone();
        let watcher = graceful.watcher();
        let header_timeout = limits.header_read_timeout;
        let Some(acceptor) = tls.clone() else {
            tokio::spawn(async move {
                handle(tcp, app, None, remote, header_timeout, watcher).await;
                drop(permit);
            });
            continue;
        };
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| PeerCertificate(Arc::new(c.to_vec())));
            handle(stream, app, peer, remote, header_timeout, watcher).await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("open requests did not finish in time; closing them");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_follows_the_file_limit() {
        for (nofile, want) in [(20_000, 15_000), (1024, 768), (0, 64), (10, 64)] {
            assert_eq!(max_connections_for(nofile), want, "{nofile}");
        }
    }
}
