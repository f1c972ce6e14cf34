//! The one middleware in front of every route. In order, outermost first:
//!
//! 1. request metrics ([`metrics::Tracked`]): every answer counts, 401s and 413s too;
//! 2. the audit log ([`audit::Pending`]), when configured;
//! 3. the body-size limit ([`limits::refuse_large_body`]): `413` before anything is read;
//! 4. a panic catcher: a handler that panics still answers a `500` Status, which 1 and 2 see;
//! 5. a tracing span per request;
//! 6. authentication ([`auth::authenticate`]): `401`;
//! 7. authorization and the in-flight and watch limits ([`authz::authorize`]): `403`, `429`.
//!
//! They were seven tower layers; as one function a request pays for one layer's boxing and
//! cloning instead of seven (about a sixth of the server's CPU under the scheduler benchmark),
//! the attributes are computed once for audit and authorization, and the order above is
//! written down in one place.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::FutureExt;
use kapsel_api::Status;
use tracing::Instrument;

use crate::auth::{self, Authenticator, UserInfo};
use crate::authz::{self, audit, limits, request_attributes, Guards};
use crate::errors::status_response;
use crate::metrics;

/// What the gate needs: who is calling, and what they may do.
pub struct Gate {
    pub authenticator: Arc<dyn Authenticator>,
    pub guards: Arc<Guards>,
}

/// `app` behind the gate (one layer around every route and the fallback).
pub fn layer(app: Router, gate: Gate) -> Router {
    app.layer(axum::middleware::from_fn_with_state(Arc::new(gate), handle))
}

async fn handle(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let tracked = metrics::Tracked::begin(&req);
    let attributes = request_attributes(req.method().as_str(), req.uri().path(), req.uri().query());
    let pending = gate
        .guards
        .audit
        .as_ref()
        .map(|log| audit::Pending::begin(log, &req, &attributes));
    let resp = match limits::refuse_large_body(&req) {
        Some(refused) => refused,
        None => {
            let span = tracing::debug_span!(
                "request",
                method = %req.method(),
                uri = %req.uri(),
                version = ?req.version(),
            );
            // Who the caller turned out to be, for the audit line of a request that panics.
            let mut caller = None;
            let inner = async {
                match auth::authenticate(gate.authenticator.as_ref(), req) {
                    Ok(req) => {
                        caller = req.extensions().get::<UserInfo>().cloned();
                        authz::authorize(&gate.guards, req, &attributes, next).await
                    }
                    Err(e) => e.into_response(),
                }
            };
            // Unwind-safe enough: what a panicking request leaves behind is its own; the shared
            // state it touches (limits, the authorization cache) sits behind locks that
            // recover from poisoning.
            let outcome = AssertUnwindSafe(inner.instrument(span))
                .catch_unwind()
                .await;
            match outcome {
                Ok(resp) => resp,
                Err(panic) => match caller {
                    Some(user) => authz::with_user(panic_response(panic), user),
                    None => panic_response(panic),
                },
            }
        }
    };
    if resp.status().is_server_error() {
        tracing::error!(status = %resp.status(), path = %attributes.path, "request failed");
    }
    if let Some(p) = pending {
        p.end(&resp);
    }
    tracked.end(resp)
}

fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %detail, "a request handler panicked");
    status_response(&Status::failure(
        500,
        "InternalError",
        format!("Internal error occurred: {detail}"),
    ))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::AllowAll;
    use crate::authz::audit::{AuditConfig, AuditLog};
    use crate::authz::limits::{Limits, LimitsConfig};
    use crate::authz::Authorizer;
    use crate::errors::{ApiError, MAX_BODY_BYTES};
    use crate::store::sled_store::SledOptions;
    use crate::store::SledStore;

    /// Refuses everyone, as a bad token would be.
    struct Nobody;
    impl Authenticator for Nobody {
        fn authenticate(&self, _: &axum::http::request::Parts) -> Result<UserInfo, ApiError> {
            Err(ApiError::Unauthorized)
        }
    }

    /// A gate over a real (empty) store and audit log in `dir`, in front of a pods route
    /// whose GET panics and whose POST answers 201.
    fn app(dir: &std::path::Path, authenticator: Arc<dyn Authenticator>) -> Router {
        let store = SledStore::open(&dir.join("data"), SledOptions::default()).unwrap();
        let guards = Arc::new(Guards {
            authorizer: Authorizer::start(store).unwrap(),
            limits: Limits::new(&LimitsConfig::default()),
            audit: Some(AuditLog::open(AuditConfig::new(dir.join("audit.log"))).unwrap()),
            connections: Default::default(),
        });
        let routes = Router::new().route(
            "/api/v1/namespaces/{ns}/pods",
            get(|| async {
                panic!("kt-gate boom");
                #[allow(unreachable_code)]
                StatusCode::OK
            })
            .post(|| async { StatusCode::CREATED }),
        );
        layer(
            routes,
            Gate {
                authenticator,
                guards,
            },
        )
    }

    fn audit_codes(dir: &std::path::Path) -> Vec<(u16, String)> {
        std::fs::read_to_string(dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["code"].as_u64().unwrap() as u16,
                    v["user"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    async fn send(app: &Router, req: Request) -> (StatusCode, serde_json::Value) {
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    fn req(method: &str, len: Option<u64>) -> Request {
        let mut b = Request::builder()
            .method(method)
            .uri("/api/v1/namespaces/kt-gate/pods");
        if let Some(n) = len {
            b = b.header(header::CONTENT_LENGTH, n);
        }
        b.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_a_status_that_is_audited_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), Arc::new(AllowAll));
        let before = metrics::request_count("LIST", "pods", "500");
        let (code, status) = send(&app, req("GET", None)).await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "InternalError");
        assert_eq!(status["message"], "Internal error occurred: kt-gate boom");
        assert_eq!(metrics::request_count("LIST", "pods", "500"), before + 1);
        // The gate still serves the next request.
        let (code, _) = send(&app, req("POST", Some(2))).await;
        assert_eq!(code, StatusCode::CREATED);
        assert_eq!(
            audit_codes(dir.path()),
            vec![(500, "system:admin".into()), (201, "system:admin".into())]
        );
    }

    #[tokio::test]
    async fn refusals_before_authentication_are_audited_without_a_user() {
        let dir = tempfile::tempdir().unwrap();
        // 413 comes before authentication: even a caller without credentials gets it.
        let app = app(dir.path(), Arc::new(Nobody));
        let (code, status) = send(&app, req("POST", Some(MAX_BODY_BYTES as u64 + 1))).await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status["kind"], "Status");
        let (code, status) = send(&app, req("POST", Some(2))).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert_eq!(status["reason"], "Unauthorized");
        // The panicking handler never ran for an unauthenticated GET.
        let (code, _) = send(&app, req("GET", None)).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert_eq!(
            audit_codes(dir.path()),
            vec![
                (413, String::new()),
                (401, String::new()),
                (401, String::new())
            ]
        );
    }
}
