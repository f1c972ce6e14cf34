//! The cluster-scoped `kapsel.dev/v1` ImageProfile through the real HTTP server: discovery,
//! defaults, strict decoding, validation causes, list/watch, and who may read or write it.

use crate::common;

use std::time::Duration;

use axum::http::request::Parts;
use common::*;
use kapsel_apiserver::{ApiError, Authenticator, UserInfo};
use serde_json::json;

const PROFILES: &str = "/apis/kapsel.dev/v1/imageprofiles";

/// `Bearer NAME|GROUP,GROUP` taken at its word; no header is the server's own loopback client.
struct TestAuth;

impl Authenticator for TestAuth {
    fn authenticate(&self, parts: &Parts) -> Result<UserInfo, ApiError> {
        let Some(token) = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return Ok(UserInfo::admin());
        };
        let (name, groups) = token.split_once('|').unwrap_or((token, ""));
        let mut groups: Vec<String> = groups
            .split(',')
            .filter(|g| !g.is_empty())
            .map(String::from)
            .collect();
        groups.push("system:authenticated".into());
        Ok(UserInfo {
            name: name.into(),
            groups,
        })
    }
}

fn as_user(srv: &TestServer, token: &str) -> Http {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    Http {
        base: srv.url.clone(),
        client: reqwest::Client::builder()
            .default_headers(h)
            .build()
            .unwrap(),
    }
}

fn profile(name: &str, image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "kapsel.dev/v1", "kind": "ImageProfile",
        "metadata": {"name": name},
        "spec": {"image": image, "allowedExecutables": ["/bin/httpd"], "writablePaths": ["/www"]}
    })
}

#[tokio::test]
async fn image_profiles_are_served_validated_watched_and_guarded() {
    let srv = start_test_server_with(|c| c.authenticator = std::sync::Arc::new(TestAuth)).await;
    let admin = as_user(&srv, "root|system:masters");

    // Discovery.
    let groups = admin.get("/apis").await;
    assert!(
        groups.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "kapsel.dev"
                && g["preferredVersion"]["groupVersion"] == "kapsel.dev/v1"),
        "{}",
        groups.body
    );
    let list = admin.get("/apis/kapsel.dev/v1").await;
    assert_eq!(list.code(), 200, "{}", list.body);
    let r = list.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "imageprofiles")
        .cloned()
        .unwrap_or_else(|| panic!("{}", list.body));
    assert_eq!(r["kind"], "ImageProfile");
    assert_eq!(r["namespaced"], false);

    // Create: defaults filled in, cluster-scoped (no namespace).
    let c = admin
        .post(PROFILES, &profile("busybox-httpd", "busybox"))
        .await;
    assert_eq!(c.code(), 201, "{}", c.body);
    assert_eq!(c.body["spec"]["readOnlyRootFilesystem"], true);
    assert_eq!(c.body["spec"]["bestEffort"], false);
    assert!(c.body["metadata"].get("namespace").is_none());
    let start = c.rv();
    let g = admin.get(&format!("{PROFILES}/busybox-httpd")).await;
    assert_eq!(g.body, c.body);
    assert_eq!(
        admin
            .get("/apis/kapsel.dev/v1/namespaces/default/imageprofiles")
            .await
            .code(),
        404
    );

    // Strict decoding.
    let mut unknown = profile("x", "busybox");
    unknown["spec"]["allowedExecutable"] = json!(["/bin/sh"]);
    let r = admin.post(PROFILES, &unknown).await;
    assert_eq!(r.code(), 400, "{}", r.body);
    assert_eq!(r.reason(), "BadRequest");
    assert!(
        r.message()
            .contains("strict decoding error: unknown field \"spec.allowedExecutable\""),
        "{}",
        r.message()
    );

    // Validation: every error with its field.
    let bad = json!({
        "apiVersion": "kapsel.dev/v1", "kind": "ImageProfile", "metadata": {"name": "bad"},
        "spec": {"image": "busy box", "allowedExecutables": ["bin/sh"], "writablePaths": ["/a/../b"]}
    });
    let r = admin.post(PROFILES, &bad).await;
    assert_eq!(r.code(), 422, "{}", r.body);
    assert_eq!(r.reason(), "Invalid");
    assert!(
        r.message()
            .starts_with("ImageProfile.kapsel.dev \"bad\" is invalid: ")
            || r.message().starts_with("ImageProfile \"bad\" is invalid: "),
        "{}",
        r.message()
    );
    let fields: Vec<&str> = r.body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.image",
            "spec.allowedExecutables[0]",
            "spec.writablePaths[0]"
        ]
    );
    let r = admin
        .post(
            PROFILES,
            &json!({"apiVersion": "kapsel.dev/v1", "kind": "ImageProfile", "metadata": {"name": "empty"}}),
        )
        .await;
    assert_eq!(r.code(), 422, "{}", r.body);
    assert_eq!(r.body["details"]["causes"][0]["field"], "spec.image");
    assert_eq!(
        r.body["details"]["causes"][0]["reason"],
        "FieldValueRequired"
    );

    // Watch from the create: an update and a delete arrive in order.
    let mut w = reqwest::Client::new()
        .get(format!(
            "{}{PROFILES}?watch=1&resourceVersion={start}",
            srv.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(w.status(), 200);
    let r = admin
        .patch(
            &format!("{PROFILES}/busybox-httpd"),
            "application/merge-patch+json",
            &json!({"spec": {"bestEffort": true, "readOnlyRootFilesystem": false}}),
        )
        .await;
    assert_eq!(r.code(), 200, "{}", r.body);
    assert_eq!(r.body["metadata"]["generation"], 2);
    let r = admin
        .patch(
            &format!("{PROFILES}/busybox-httpd"),
            "application/merge-patch+json",
            &json!({"spec": {"writablePaths": ["tmp"]}}),
        )
        .await;
    assert_eq!(r.code(), 422, "{}", r.body);
    assert_eq!(
        r.body["details"]["causes"][0]["field"],
        "spec.writablePaths[0]"
    );
    assert_eq!(
        admin
            .delete(&format!("{PROFILES}/busybox-httpd"))
            .await
            .code(),
        200
    );
    let evs = read_events(&mut w, 2, Duration::from_secs(10)).await;
    let got: Vec<(&str, bool)> = evs
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["spec"]["bestEffort"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("MODIFIED", true), ("DELETED", true)]);

    // Nodes read profiles (the agent applies them) but cannot write them; other users
    // without a role can do neither.
    assert_eq!(admin.post(PROFILES, &profile("p", "*")).await.code(), 201);
    let node = as_user(&srv, "system:node:n1|system:nodes");
    let l = node.get(PROFILES).await;
    assert_eq!(l.code(), 200, "{}", l.body);
    assert_eq!(l.body["kind"], "ImageProfileList");
    assert_eq!(l.body["items"][0]["metadata"]["name"], "p");
    assert_eq!(
        node.get(&format!("{PROFILES}?watch=1&timeoutSeconds=1"))
            .await
            .code(),
        200
    );
    let r = node.post(PROFILES, &profile("q", "*")).await;
    assert_eq!(r.code(), 403, "{}", r.body);
    assert_eq!(r.reason(), "Forbidden");
    let r = node.delete(&format!("{PROFILES}/p")).await;
    assert_eq!(r.code(), 403, "{}", r.body);
    let alice = as_user(&srv, "alice");
    let r = alice.get(PROFILES).await;
    assert_eq!(r.code(), 403, "{}", r.body);
    assert_eq!(
        r.message(),
        "imageprofiles.kapsel.dev is forbidden: User \"alice\" cannot list resource \"imageprofiles\" in API group \"kapsel.dev\" at the cluster scope"
    );
}
