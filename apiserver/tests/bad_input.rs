//! Every kind of bad input gets a precise 4xx `Status` and changes nothing.

use crate::common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// The global revision (a list's resourceVersion): unchanged means nothing was written.
async fn revision(h: &Http) -> String {
    h.get("/api/v1/namespaces").await.rv()
}

struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    code: u16,
    reason: &'static str,
    /// Substring of the message.
    message: &'static str,
    /// A field cause that must be reported.
    field: Option<&'static str>,
}

fn j(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

#[tokio::test]
async fn bad_input_is_a_precise_4xx_and_changes_nothing() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    assert_eq!(
        h.post(
            "/api/v1/namespaces/default/configmaps",
            &configmap("existing")
        )
        .await
        .code(),
        201
    );
    assert_eq!(
        h.post(
            "/apis/apps/v1/namespaces/default/deployments",
            &deployment("web", 1)
        )
        .await
        .code(),
        201
    );
    let mut huge = configmap("huge");
    huge["data"]["k"] = json!("x".repeat(3 * 1024 * 1024 + 10));
    let mut bad_qty = pod("q");
    bad_qty["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "lots"}});
    let mut no_image = pod("noimage");
    no_image["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("image");
    let mut wrong_type = deployment("wt", 1);
    wrong_type["spec"]["replicas"] = json!("three");
    let mut unknown = deployment("unk", 1);
    unknown["spec"]["replicaz"] = json!(3);
    let mut renamed = configmap("other");
    renamed["metadata"]["resourceVersion"] = json!("1");
    let mut other_ns = configmap("x");
    other_ns["metadata"]["namespace"] = json!("kube-system");

    let cases = vec![
        Case { what: "malformed JSON", method: Method::POST, path: "/api/v1/namespaces/default/configmaps",
               content_type: Some("application/json"), body: b"{\"kind\": ".to_vec(), code: 400, reason: "BadRequest",
               message: "not valid JSON", field: None },
        Case { what: "malformed YAML", method: Method::POST, path: "/api/v1/namespaces/default/configmaps",
               content_type: Some("application/yaml"), body: b"kind: ConfigMap\nmetadata: [unclosed\n".to_vec(), code: 400,
               reason: "BadRequest", message: "not valid YAML", field: None },
        Case { what: "JSON array body", method: Method::POST, path: "/api/v1/namespaces/default/configmaps",
               content_type: Some("application/json"), body: b"[1,2]".to_vec(), code: 400, reason: "BadRequest",
               message: "must be a JSON object", field: None },
        Case { what: "empty body", method: Method::POST, path: "/api/v1/namespaces/default/configmaps",
               content_type: Some("application/json"), body: Vec::new(), code: 400, reason: "BadRequest",
               message: "empty", field: None },
        Case { what: "wrong kind for the path", method: Method::POST, path: "/apis/apps/v1/namespaces/default/deployments",
               content_type: Some("application/json"), body: j(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "x"}})),
               code: 400, reason: "BadRequest", message: "the kind in the data (ReplicaSet) does not match the expected kind (Deployment)", field: None },
        Case { what: "wrong apiVersion for the path", method: Method::POST, path: "/api/v1/namespaces/default/pods",
               content_type: Some("application/json"), body: j(json!({"apiVersion": "apps/v1", "kind": "Pod", "metadata": {"name": "x"}})),
               code: 400, reason: "BadRequest", message: "does not match the expected API version (v1)", field: None },
        Case { what: "name mismatch with the path", method: Method::PUT, path: "/api/v1/namespaces/default/configmaps/existing",
               content_type: Some("application/json"), body: j(renamed), code: 400, reason: "BadRequest",
               message: "the name of the object (other) does not match the name on the URL (existing)", field: None },
        Case { what: "namespace mismatch with the path", method: Method::POST, path: "/api/v1/namespaces/default/configmaps",
               content_type: Some("application/json"), body: j(other_ns), code: 400, reason: "BadRequest",
               message: "the namespace of the provided object does not match the namespace sent on the request", field: None },
        Case { what: "body over 3 MiB", method: Method::POST, path: "/api/v1/namespaces/default/configmaps",
               content_type: Some("application/json"), body: j(huge), code: 413, reason: "RequestEntityTooLarge",
               message: "Request entity too large: limit is 3145728", field: None },
        Case { what: "invalid name", method: Method::POST, path: "/api/v1/namespaces/default/configmaps",
               content_type: Some("application/json"), body: j(configmap("Bad_Name")), code: 422, reason: "Invalid",
               message: "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\"", field: Some("metadata.name") },
        Case { what: "unknown field", method: Method::POST, path: "/apis/apps/v1/namespaces/default/deployments",
               content_type: Some("application/json"), body: j(unknown), code: 400, reason: "BadRequest",
               message: "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replicaz\"",
               field: Some("spec.replicaz") },
        Case { what: "wrong type", method: Method::POST, path: "/apis/apps/v1/namespaces/default/deployments",
               content_type: Some("application/json"), body: j(wrong_type), code: 400, reason: "BadRequest",
               message: "spec.replicas", field: Some("spec.replicas") },
        Case { what: "invalid quantity", method: Method::POST, path: "/api/v1/namespaces/default/pods",
               content_type: Some("application/json"), body: j(bad_qty), code: 422, reason: "Invalid",
               message: "spec.containers[0].resources.limits.cpu", field: Some("spec.containers[0].resources.limits.cpu") },
        Case { what: "missing required field", method: Method::POST, path: "/api/v1/namespaces/default/pods",
               content_type: Some("application/json"), body: j(no_image), code: 422, reason: "Invalid",
               message: "spec.containers[0].image: Required value", field: Some("spec.containers[0].image") },
        Case { what: "unknown resource", method: Method::GET, path: "/api/v1/namespaces/default/widgets",
               content_type: None, body: Vec::new(), code: 404, reason: "NotFound",
               message: "the server could not find the requested resource", field: None },
        Case { what: "unknown group", method: Method::POST, path: "/apis/example.com/v1/namespaces/default/widgets",
               content_type: Some("application/json"), body: j(json!({})), code: 404, reason: "NotFound",
               message: "the server could not find the requested resource", field: None },
        Case { what: "unsupported patch type", method: Method::PATCH, path: "/api/v1/namespaces/default/configmaps/existing",
               content_type: Some("text/plain"), body: b"data".to_vec(), code: 415, reason: "UnsupportedMediaType",
               message: "unknown format", field: None },
        Case { what: "unsupported body type", method: Method::POST, path: "/api/v1/namespaces/default/configmaps",
               content_type: Some("application/vnd.kubernetes.protobuf"), body: b"k8s\0".to_vec(), code: 415,
               reason: "UnsupportedMediaType", message: "unknown format", field: None },
        Case { what: "malformed merge patch", method: Method::PATCH, path: "/api/v1/namespaces/default/configmaps/existing",
               content_type: Some("application/merge-patch+json"), body: b"{nope".to_vec(), code: 400, reason: "BadRequest",
               message: "not valid JSON", field: None },
        Case { what: "JSON patch on a missing path", method: Method::PATCH, path: "/api/v1/namespaces/default/configmaps/existing",
               content_type: Some("application/json-patch+json"), body: j(json!([{"op": "remove", "path": "/spec/nothing"}])),
               code: 422, reason: "Invalid", message: "could not be applied", field: None },
        Case { what: "patch that makes the object invalid", method: Method::PATCH, path: "/apis/apps/v1/namespaces/default/deployments/web",
               content_type: Some("application/merge-patch+json"), body: j(json!({"spec": {"replicas": -1}})),
               code: 422, reason: "Invalid", message: "spec.replicas", field: Some("spec.replicas") },
        Case { what: "patch with an unknown field", method: Method::PATCH, path: "/apis/apps/v1/namespaces/default/deployments/web",
               content_type: Some("application/merge-patch+json"), body: j(json!({"spec": {"bogus": 1}})),
               code: 400, reason: "BadRequest", message: "unknown field \"spec.bogus\"", field: Some("spec.bogus") },
        Case { what: "invalid label selector", method: Method::GET, path: "/api/v1/namespaces/default/pods?labelSelector=a%20in%20(",
               content_type: None, body: Vec::new(), code: 400, reason: "BadRequest", message: "", field: None },
        Case { what: "unsupported field selector", method: Method::GET, path: "/api/v1/namespaces/default/pods?fieldSelector=spec.bogus%3Dx",
               content_type: None, body: Vec::new(), code: 400, reason: "BadRequest", message: "field label not supported: spec.bogus", field: None },
        Case { what: "bad limit", method: Method::GET, path: "/api/v1/namespaces/default/pods?limit=-3",
               content_type: None, body: Vec::new(), code: 400, reason: "BadRequest", message: "limit", field: None },
        Case { what: "bad watch resourceVersion", method: Method::GET, path: "/api/v1/namespaces/default/pods?watch=1&resourceVersion=abc",
               content_type: None, body: Vec::new(), code: 400, reason: "BadRequest", message: "resourceVersion", field: None },
        Case { what: "bad continue token", method: Method::GET, path: "/api/v1/namespaces/default/pods?limit=1&continue=%%%",
               content_type: None, body: Vec::new(), code: 400, reason: "BadRequest", message: "", field: None },
        Case { what: "resourceVersion on create", method: Method::POST, path: "/api/v1/namespaces/default/configmaps",
               content_type: Some("application/json"), body: j(json!({"kind": "ConfigMap", "metadata": {"name": "rv", "resourceVersion": "5"}})),
               code: 400, reason: "BadRequest", message: "resourceVersion should not be set on objects to be created", field: None },
        Case { what: "metadata of the wrong type", method: Method::POST, path: "/api/v1/namespaces/default/configmaps",
               content_type: Some("application/json"), body: j(json!({"kind": "ConfigMap", "metadata": "x"})),
               code: 400, reason: "BadRequest", message: "metadata", field: Some("metadata") },
        Case { what: "create in a missing namespace", method: Method::POST, path: "/api/v1/namespaces/nowhere/configmaps",
               content_type: Some("application/json"), body: j(configmap("x")), code: 404, reason: "NotFound",
               message: "namespaces \"nowhere\" not found", field: None },
        Case { what: "POST to an object", method: Method::POST, path: "/api/v1/namespaces/default/configmaps/existing",
               content_type: Some("application/json"), body: j(configmap("existing")), code: 405, reason: "MethodNotAllowed",
               message: "", field: None },
        Case { what: "bad fieldValidation", method: Method::POST, path: "/api/v1/namespaces/default/configmaps?fieldValidation=Loud",
               content_type: Some("application/json"), body: j(configmap("fv")), code: 400, reason: "BadRequest",
               message: "fieldValidation", field: None },
        Case { what: "bad scale body", method: Method::PUT, path: "/apis/apps/v1/namespaces/default/deployments/web/scale",
               content_type: Some("application/json"), body: j(json!({"kind": "Scale", "spec": {"replicas": "many"}})),
               code: 400, reason: "BadRequest", message: "spec.replicas", field: None },
        Case { what: "binding without target", method: Method::POST, path: "/api/v1/namespaces/default/pods/nope/binding",
               content_type: Some("application/json"), body: j(json!({"kind": "Binding", "target": {}})),
               code: 422, reason: "Invalid", message: "target.name: Required value", field: Some("target.name") },
        Case { what: "binding to an invalid node name", method: Method::POST, path: "/api/v1/namespaces/default/pods/nope/binding",
               content_type: Some("application/json"), body: j(json!({"kind": "Binding", "target": {"kind": "Node", "name": "Bad_Node"}})),
               code: 422, reason: "Invalid", message: "target.name: Invalid value: \"Bad_Node\"", field: Some("target.name") },
    ];

    let before_rev = revision(&h).await;
    let before_cm = h
        .get("/api/v1/namespaces/default/configmaps/existing")
        .await
        .body;
    for c in &cases {
        let r = h
            .send(
                c.method.clone(),
                c.path,
                c.content_type,
                Some(c.body.clone()),
            )
            .await;
        assert_eq!(r.code(), c.code, "{}: {}", c.what, r.body);
        assert_eq!(r.body["kind"], "Status", "{}: {}", c.what, r.body);
        assert_eq!(r.body["apiVersion"], "v1", "{}", c.what);
        assert_eq!(r.body["status"], "Failure", "{}", c.what);
        assert_eq!(r.body["code"], c.code, "{}", c.what);
        assert_eq!(r.reason(), c.reason, "{}: {}", c.what, r.body);
        assert!(
            r.message().contains(c.message),
            "{}: message {:?} lacks {:?}",
            c.what,
            r.message(),
            c.message
        );
        if let Some(f) = c.field {
            let causes = r.body["details"]["causes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                causes.iter().any(|x| x["field"] == f),
                "{}: no cause for {f}: {}",
                c.what,
                r.body
            );
        }
        assert_eq!(
            revision(&h).await,
            before_rev,
            "{} changed the store",
            c.what
        );
    }
    assert_eq!(
        h.get("/api/v1/namespaces/default/configmaps/existing")
            .await
            .body,
        before_cm
    );
    // The server is fine afterwards.
    assert_eq!(
        h.post("/api/v1/namespaces/default/configmaps", &configmap("after"))
            .await
            .code(),
        201
    );
}

#[tokio::test]
async fn unknown_fields_can_be_warned_about_or_ignored() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let mut d = deployment("warned", 1);
    d["spec"]["replicaz"] = json!(3);
    let r = h
        .send(
            Method::POST,
            "/apis/apps/v1/namespaces/default/deployments?fieldValidation=Warn",
            Some("application/json"),
            Some(d.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.code(), 201, "{}", r.body);
    let warning = r.headers.get("warning").unwrap().to_str().unwrap();
    assert_eq!(warning, "299 - \"unknown field \\\"spec.replicaz\\\"\"");
    assert!(r.body["spec"].get("replicaz").is_none());
    let mut d = deployment("ignored", 1);
    d["spec"]["replicaz"] = json!(3);
    let r = h
        .send(
            Method::POST,
            "/apis/apps/v1/namespaces/default/deployments?fieldValidation=Ignore",
            Some("application/json"),
            Some(d.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.code(), 201);
    assert!(r.headers.get("warning").is_none());
}

#[tokio::test]
async fn yaml_bodies_and_dry_run() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n";
    let r = h
        .send(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some("application/yaml"),
            Some(yaml.as_bytes().to_vec()),
        )
        .await;
    assert_eq!(r.code(), 201, "{}", r.body);
    assert_eq!(r.body["data"]["a"], "b");
    let before = revision(&h).await;
    let r = h
        .send(
            Method::POST,
            "/api/v1/namespaces/default/configmaps?dryRun=All",
            Some("application/json"),
            Some(configmap("dry").to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.code(), 201);
    assert_eq!(
        h.get("/api/v1/namespaces/default/configmaps/dry")
            .await
            .code(),
        404
    );
    assert_eq!(revision(&h).await, before);
    // A PUT without a Content-Type is JSON (kubectl sends some like that).
    let mut cm = h
        .get("/api/v1/namespaces/default/configmaps/from-yaml")
        .await
        .body;
    cm["data"]["a"] = json!("c");
    let r = h
        .send(
            Method::PUT,
            "/api/v1/namespaces/default/configmaps/from-yaml",
            None,
            Some(cm.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.code(), 200, "{}", r.body);
}
