//! Watch: newline-delimited JSON events streamed from a store [`WatchCursor`].
//!
//! - `resourceVersion` unset or `"0"`: ADDED for every current object first (from one consistent
//!   list), then the changes after that list's revision.
//! - `resourceVersion=N`: exactly the events after N, in order; older than the kept history →
//!   one `ERROR` event carrying a 410 `Expired` Status, then the stream ends (as Kubernetes).
//! - Selectors: an object that starts matching is sent as ADDED, one that stops matching as
//!   DELETED (using the event's previous value).
//! - `allowWatchBookmarks=true`: a BOOKMARK with the current revision after ~1 s of silence.
//! - `timeoutSeconds`: the stream ends then (default 30–60 min, like Kubernetes).
//! - A watcher that cannot keep up falls out of the ring and gets the 410 ERROR; writers never
//!   wait for watchers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::errors::ApiError;
use crate::filter::Filter;
use crate::registry::ResourceDef;
use crate::rest::Api;
use crate::store::{EventKind, Revision, Store, StoreError, StoreEvent, WatchCursor};

/// Silence after which a bookmark is sent.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

pub struct WatchRequest {
    pub def: &'static ResourceDef,
    pub prefix: String,
    /// `None`: send the current state first.
    pub from: Option<Revision>,
    pub filter: Filter,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    /// Plain objects, or one-row Tables / PartialObjectMetadata (`Accept`, see table.rs).
    pub format: crate::table::Format,
    /// `sendInitialEvents=true`: after the initial ADDED events, a BOOKMARK annotated
    /// `k8s.io/initial-events-end: "true"` (kubectl 1.37 waits for it, KUBECTL-COMPAT.md §14).
    pub initial_events_end: bool,
}

fn line(kind: &str, object: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(object.len() + 32);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(kind.as_bytes());
    b.put_slice(b"\",\"object\":");
    b.put_slice(object);
    b.put_slice(b"}\n");
    b.freeze()
}

fn error_line(e: &ApiError) -> Bytes {
    let st = serde_json::to_vec(&e.to_status()).unwrap_or_else(|_| b"{}".to_vec());
    line("ERROR", &st)
}

/// The bookmark that ends the initial events of a streaming list.
fn initial_events_end(def: &ResourceDef, rev: Revision) -> Bytes {
    let obj = serde_json::json!({
        "kind": def.kind,
        "apiVersion": def.api_version,
        "metadata": {"resourceVersion": rev.to_string(),
                     "annotations": {"k8s.io/initial-events-end": "true"}}
    });
    line("BOOKMARK", obj.to_string().as_bytes())
}

fn bookmark(def: &ResourceDef, rev: Revision) -> Bytes {
    let obj = serde_json::json!({
        "kind": def.kind,
        "apiVersion": def.api_version,
        "metadata": {"resourceVersion": rev.to_string()}
    });
    line("BOOKMARK", obj.to_string().as_bytes())
}

/// The wire event for a store event, after selector filtering (`None`: not for this watcher).
pub fn render(ev: &StoreEvent, req: &WatchRequest) -> Option<Bytes> {
    let filter = &req.filter;
    let line =
        |kind: &str, v: &Bytes| line(kind, &crate::table::object(req.format, req.def, v.clone()));
    let kind = match ev.kind {
        EventKind::Added => "ADDED",
        EventKind::Modified => "MODIFIED",
        EventKind::Deleted => "DELETED",
    };
    if filter.is_empty() {
        return Some(line(kind, &ev.value));
    }
    let now: Value = serde_json::from_slice(&ev.value).ok()?;
    let matches_now = filter.matches(&now);
    let kind = match ev.kind {
        EventKind::Added | EventKind::Deleted => {
            if !matches_now {
                return None;
            }
            kind
        }
        EventKind::Modified => {
            let before = ev
                .prev
                .as_ref()
                .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                .is_some_and(|p| filter.matches(&p));
            match (before, matches_now) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            }
        }
    };
    Some(line(kind, &ev.value))
}

fn default_timeout() -> Duration {
    use rand::Rng;
    Duration::from_secs(rand::thread_rng().gen_range(1800..3600))
}

/// Start a watch and answer with its stream.
pub fn watch(api: Arc<Api>, req: WatchRequest) -> Result<Response, ApiError> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let mut initial: Vec<Bytes> = Vec::new();
    let cursor = match req.from {
        None => {
            let list = api.store.list(&req.prefix, None, 0)?;
            for (_, v) in &list.items {
                if req.filter.matches_bytes(v) {
                    initial.push(line(
                        "ADDED",
                        &crate::table::object(req.format, req.def, v.clone()),
                    ));
                }
            }
            if req.initial_events_end {
                initial.push(initial_events_end(req.def, list.revision));
            }
            api.store.watch(&req.prefix, list.revision)
        }
        Some(rev) => api.store.watch(&req.prefix, rev),
    };
    match cursor {
        Ok(cursor) => {
            tokio::spawn(run(api, req, cursor, initial, tx));
        }
        Err(e @ StoreError::Gone { .. }) => {
            let ev = error_line(&e.into());
            tokio::spawn(async move {
                let _ = tx.send(Ok(ev)).await;
            });
        }
        Err(e) => return Err(e.into()),
    }
    let mut resp = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

async fn run(
    api: Arc<Api>,
    req: WatchRequest,
    mut cursor: WatchCursor,
    initial: Vec<Bytes>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    for l in initial {
        if tx.send(Ok(l)).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::Instant::now() + req.timeout.unwrap_or_else(default_timeout);
    let mut shutdown = api.shutdown.clone();
    if *shutdown.borrow() {
        return;
    }
    drop(api);
    loop {
        let silence = tokio::time::sleep(BOOKMARK_INTERVAL);
        let step = tokio::select! {
            r = cursor.next_batch(256) => Some(r),
            _ = silence, if req.bookmarks => None,
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
            _ = shutdown.changed() => return,
        };
        match step {
            None => {
                if tx
                    .send(Ok(bookmark(req.def, cursor.position())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Some(Ok(batch)) => {
                // The whole batch as one chunk: the connection task writes what it is handed
                // each time it runs, so a line per message would cap a busy server's watch at
                // the channel's 64 lines per turn of the connection task — the watcher falls
                // behind the writers (the scheduler e2e bench saw seconds of lag).
                let mut chunk = BytesMut::new();
                for ev in batch {
                    if let Some(l) = render(&ev, &req) {
                        chunk.extend_from_slice(&l);
                    }
                }
                if !chunk.is_empty() && tx.send(Ok(chunk.freeze())).await.is_err() {
                    return;
                }
            }
            Some(Err(e @ StoreError::Gone { .. })) => {
                let _ = tx.send(Ok(error_line(&e.into()))).await;
                return;
            }
            Some(Err(_)) => return,
        }
    }
}
