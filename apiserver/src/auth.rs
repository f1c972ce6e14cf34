//! The authentication slot. Today every request is admitted as `system:anonymous`; the security
//! issue plugs real authenticators (client certificates, bearer tokens) in here without touching
//! the handlers, which find the caller as a [`UserInfo`] request extension.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::errors::ApiError;

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
}

/// Decides who a request comes from. `Err` answers the request (401) without running it.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(&self, parts: &Parts) -> Result<UserInfo, ApiError>;
}

/// Admits everyone as `system:anonymous` (plain HTTP on loopback, until the security issue).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _parts: &Parts) -> Result<UserInfo, ApiError> {
        Ok(UserInfo::anonymous())
    }
}

/// The middleware that runs the configured [`Authenticator`].
pub async fn middleware(
    State(auth): State<Arc<dyn Authenticator>>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    match auth.authenticate(&parts) {
        Ok(user) => {
            parts.extensions.insert(user);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}
