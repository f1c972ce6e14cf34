//! The web dashboard at `/ui`: one static page, a stylesheet and a script, embedded in the
//! binary (no build step, nothing loaded from elsewhere). The page holds no data: after the
//! login (a bearer token kept in the browser's localStorage) the script reads the cluster
//! through the same authenticated REST API as any client, lists and then follows every kind
//! with a streaming watch (fetch + ReadableStream, no polling), and streams pod logs.
//!
//! The shell is served without authentication (like kube-dashboard's login page); every
//! request for data carries `Authorization: Bearer TOKEN`.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// Only our own origin; no inline script; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// `/ui` (redirects to `/ui/`), `/ui/`, `/ui/app.js`, `/ui/style.css`.
pub fn routes() -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(script))
        .route("/ui/style.css", get(style))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_loads_nothing_from_elsewhere() {
        for text in [INDEX, SCRIPT, STYLE] {
            assert!(!text.contains("http://"), "external http reference");
            assert!(!text.contains("https://"), "external https reference");
            assert!(!text.contains("//cdn"), "CDN reference");
        }
        assert!(INDEX.contains("src=\"/ui/app.js\""));
        assert!(
            !INDEX.contains("<script>"),
            "inline scripts are blocked by the CSP"
        );
    }
}
