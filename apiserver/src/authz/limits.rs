//! Abuse limits (kube-apiserver's `--max-requests-inflight`, `--max-mutating-requests-inflight`
//! and request body limit, plus a per-user watch limit): an authenticated but hostile client
//! gets `429 Too Many Requests` (with `Retry-After`) or `413`, and the server keeps answering
//! everyone else. Members of `system:masters` are exempt from the in-flight and watch limits,
//! as in Kubernetes; long-running requests (watches, log follows, gRPC streams) are not counted
//! as in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kapsel_api::{Status, StatusDetails};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::{status_response, ApiError, MAX_BODY_BYTES};

/// The limits' settings.
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    /// Read-only requests in flight (kube-apiserver's default 400).
    pub max_requests_inflight: usize,
    /// Mutating requests in flight (kube-apiserver's default 200).
    pub max_mutating_requests_inflight: usize,
    /// Open watches per user.
    pub max_watches_per_user: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            max_watches_per_user: 500,
        }
    }
}

/// The counters.
pub struct Limits {
    readonly: Arc<Semaphore>,
    mutating: Arc<Semaphore>,
    max_watches: usize,
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open watch of a user; dropping it frees the slot.
pub struct WatchSlot {
    watches: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut w = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = w.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.user);
            }
        }
    }
}

/// A refused request: answered `429 TooManyRequests` with `Retry-After`.
#[derive(Debug)]
pub struct TooMany(pub String);

impl IntoResponse for TooMany {
    fn into_response(self) -> Response {
        too_many_requests(&self.0)
    }
}

/// `429 TooManyRequests` with `Retry-After`, as kube-apiserver answers.
pub fn too_many_requests(message: &str) -> Response {
    let mut st = Status::failure(429, "TooManyRequests", message);
    st.details = Some(StatusDetails {
        retry_after_seconds: Some(1),
        ..Default::default()
    });
    let mut r = status_response(&st);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        Limits {
            readonly: Arc::new(Semaphore::new(cfg.max_requests_inflight.max(1))),
            mutating: Arc::new(Semaphore::new(cfg.max_mutating_requests_inflight.max(1))),
            max_watches: cfg.max_watches_per_user.max(1),
            watches: Arc::default(),
        }
    }

    /// A watch slot of `user`, or the 429 answer.
    pub fn watch(&self, user: &str) -> Result<WatchSlot, TooMany> {
        let mut w = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let n = w.entry(user.to_string()).or_default();
        if *n >= self.max_watches {
            return Err(TooMany(format!(
                "Too many requests, please try again later: user {user:?} has {n} open watches (the limit)"
            )));
        }
        *n += 1;
        Ok(WatchSlot {
            watches: Arc::clone(&self.watches),
            user: user.to_string(),
        })
    }

    /// An in-flight slot for a request with `method`, or the 429 answer.
    pub fn in_flight(&self, method: &Method) -> Result<OwnedSemaphorePermit, TooMany> {
        let mutating = matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        let sem = if mutating {
            &self.mutating
        } else {
            &self.readonly
        };
        Arc::clone(sem)
            .try_acquire_owned()
            .map_err(|_| TooMany("Too many requests, please try again later.".into()))
    }
}

/// Keep `slot` until the response body has been sent or dropped (watch streams).
pub fn hold_until_body_ends<T: Send + 'static>(resp: Response, slot: T) -> Response {
    let (parts, body) = resp.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Outside authentication: refuse bodies declared larger than the limit before reading them
/// (`413`); bodies without a length are cut at the limit by the handlers. gRPC bodies have
/// tonic's own message limit (4 MiB).
pub fn refuse_large_body(req: &Request) -> Option<Response> {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if !grpc && declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        let mut r = ApiError::TooLarge.into_response();
        // The unread body is not drained: the connection closes after this answer.
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Some(r);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_slots_per_user() {
        let l = Limits::new(&LimitsConfig {
            max_watches_per_user: 2,
            ..Default::default()
        });
        let a = l.watch("alice").unwrap();
        let _b = l.watch("alice").unwrap();
        let r = l.watch("alice").err().unwrap().into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert!(l.watch("bob").is_ok());
        drop(a);
        assert!(l.watch("alice").is_ok());
    }

    #[test]
    fn in_flight_mutating_and_readonly_are_separate() {
        let l = Limits::new(&LimitsConfig {
            max_requests_inflight: 1,
            max_mutating_requests_inflight: 1,
            ..Default::default()
        });
        let g = l.in_flight(&Method::GET).unwrap();
        assert!(l.in_flight(&Method::GET).is_err());
        let p = l.in_flight(&Method::POST).unwrap();
        assert!(l.in_flight(&Method::DELETE).is_err());
        drop(g);
        drop(p);
        assert!(l.in_flight(&Method::GET).is_ok());
    }
}
