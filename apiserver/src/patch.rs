//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes' strategic
//! merge patch for the built-in kinds (lists merged by their merge keys, and the `$patch`,
//! `$setElementOrder/…`, `$deleteFromPrimitiveList/…` and `$retainKeys` directives).

use serde_json::{Map, Value};

use crate::errors::ApiError;

/// A decoded patch body.
#[derive(Debug)]
pub enum PatchBody {
    Merge(Value),
    Json(json_patch::Patch),
    Strategic(Value),
}

pub const MERGE: &str = "application/merge-patch+json";
pub const JSON: &str = "application/json-patch+json";
pub const STRATEGIC: &str = "application/strategic-merge-patch+json";
pub const APPLY: &str = "application/apply-patch+yaml";

impl PatchBody {
    /// Decode a patch of media type `ct` (the base type, lower-case).
    pub fn decode(ct: &str, body: &[u8]) -> Result<PatchBody, ApiError> {
        let json = |b: &[u8]| -> Result<Value, ApiError> {
            serde_json::from_slice(b)
                .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))
        };
        match ct {
            MERGE => Ok(PatchBody::Merge(json(body)?)),
            STRATEGIC => Ok(PatchBody::Strategic(json(body)?)),
            JSON => {
                let ops: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("the JSON patch is not valid: {e}"))
                })?;
                Ok(PatchBody::Json(ops))
            }
            // Apply patches of subresources (scale): the applied fields merged in.
            APPLY => Ok(PatchBody::Merge(crate::apply::decode(body)?)),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: {JSON}, {MERGE}, {STRATEGIC}, {APPLY}"
            ))),
        }
    }

    /// Whether the patch sets `metadata.resourceVersion` (a precondition from the client).
    pub fn sets_resource_version(&self) -> bool {
        match self {
            PatchBody::Merge(v) | PatchBody::Strategic(v) => v
                .pointer("/metadata/resourceVersion")
                .is_some_and(|v| !v.is_null()),
            PatchBody::Json(p) => p.0.iter().any(|op| {
                let path = match op {
                    json_patch::PatchOperation::Add(o) => o.path.to_string(),
                    json_patch::PatchOperation::Replace(o) => o.path.to_string(),
                    json_patch::PatchOperation::Test(o) => o.path.to_string(),
                    _ => String::new(),
                };
                path == "/metadata/resourceVersion"
            }),
        }
    }

    /// Apply the patch to `doc`.
    pub fn apply(&self, doc: &mut Value) -> Result<(), ApiError> {
        match self {
            PatchBody::Merge(p) => {
                json_patch::merge(doc, p);
                Ok(())
            }
            PatchBody::Json(p) => json_patch::patch(doc, p).map_err(|e| {
                ApiError::UnprocessablePatch(format!("the JSON patch could not be applied: {e}"))
            }),
            PatchBody::Strategic(p) => strategic_merge(doc, p),
        }
    }
}

/// The merge key of list field `field` whose patch elements are `items` (`None`: replace).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "ports" => {
            let has = |k: &str| items.iter().any(|i| i.get(k).is_some());
            if has("containerPort") {
                Some("containerPort")
            } else if has("port") {
                Some("port")
            } else {
                Some("containerPort")
            }
        }
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "schedulingGates" => Some("name"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// Lists of strings merged as sets.
fn is_primitive_merge(field: &str) -> bool {
    field == "finalizers"
}

/// Remove directives and nulls (for values inserted where the document had nothing).
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|v| v.get("$patch").and_then(Value::as_str) != Some("delete"))
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Reject unknown `$patch` directives anywhere in a patch (before anything is applied).
fn check_directives(v: &Value) -> Result<(), ApiError> {
    match v {
        Value::Object(m) => {
            if let Some(d) = m.get("$patch") {
                if !matches!(d.as_str(), Some("replace" | "merge" | "delete")) {
                    return Err(ApiError::bad_request(format!(
                        "unknown patch directive $patch: {d}"
                    )));
                }
            }
            m.values().try_for_each(check_directives)
        }
        Value::Array(a) => a.iter().try_for_each(check_directives),
        _ => Ok(()),
    }
}

/// Apply a strategic merge patch.
pub fn strategic_merge(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    check_directives(patch)?;
    match (doc.as_object_mut(), patch.as_object()) {
        (Some(d), Some(p)) => merge_map(d, p),
        (_, Some(_)) => {
            *doc = strip(patch);
            Ok(())
        }
        _ => Err(ApiError::bad_request(
            "a strategic merge patch must be a JSON object",
        )),
    }
}

fn merge_map(doc: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), ApiError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            if let Value::Object(m) = strip(&Value::Object(patch.clone())) {
                *doc = m;
            }
            return Ok(());
        }
        Some("delete") => {
            doc.clear();
            return Ok(());
        }
        Some(other) if other != "merge" => {
            return Err(ApiError::bad_request(format!(
                "unknown patch directive $patch: {other}"
            )))
        }
        _ => {}
    }
    // (field, $setElementOrder list, the live list before merging)
    let mut orders: Vec<(String, Vec<Value>, Vec<Value>)> = Vec::new();
    for (k, pv) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            if let Value::Array(a) = pv {
                let live = match doc.get(field) {
                    Some(Value::Array(l)) => l.clone(),
                    _ => Vec::new(),
                };
                orders.push((field.to_string(), a.clone(), live));
            }
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (doc.get_mut(field), pv) {
                list.retain(|v| !del.contains(v));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            doc.remove(k);
            continue;
        }
        let existing = doc.get_mut(k);
        match (existing, pv) {
            (Some(Value::Object(d)), Value::Object(p)) => {
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    doc.remove(k);
                } else {
                    merge_map(d, p)?;
                }
            }
            (Some(Value::Array(d)), Value::Array(p)) => {
                if let Some(key) = merge_key(k, p) {
                    merge_list(d, p, key)?;
                } else if is_primitive_merge(k) {
                    for v in p {
                        if !d.contains(v) {
                            d.push(v.clone());
                        }
                    }
                } else {
                    *d = p.iter().map(strip).collect();
                }
            }
            _ => {
                doc.insert(k.clone(), strip(pv));
            }
        }
    }
    for (field, order, live) in orders {
        let Some(Value::Array(list)) = doc.get_mut(&field) else {
            continue;
        };
        let key = merge_key(&field, &order);
        let merged = std::mem::take(list);
        *list = element_order(merged, &order, &live, key);
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        doc.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

/// The position of `v` in `list`, matching by merge key (or whole value for primitives).
fn index_in(list: &[Value], v: &Value, key: Option<&str>) -> Option<usize> {
    list.iter().position(|o| match key {
        Some(k) => o.get(k).is_some() && o.get(k) == v.get(k),
        None => o == v,
    })
}

/// Kubernetes' `$setElementOrder` (strategicpatch `normalizeElementOrder`): the elements named
/// in `order` come in that order; elements only the server has keep their place relative to
/// the live list (`live`), interleaved with the ordered ones by their live positions.
fn element_order(
    merged: Vec<Value>,
    order: &[Value],
    live: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let (mut ordered, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| index_in(order, v, key).is_some());
    ordered.sort_by_key(|v| index_in(order, v, key));
    server_only.sort_by_key(|v| index_in(live, v, key).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(ordered.len() + server_only.len());
    let (mut left, mut right) = (
        server_only.into_iter().peekable(),
        ordered.into_iter().peekable(),
    );
    loop {
        match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => {
                let take_left = matches!(
                    (index_in(live, l, key), index_in(live, r, key)),
                    (Some(li), Some(ri)) if li < ri
                );
                let next = if take_left { left.next() } else { right.next() };
                out.extend(next);
            }
            (Some(_), None) => out.extend(left.next()),
            (None, Some(_)) => out.extend(right.next()),
            (None, None) => break,
        }
    }
    out
}

fn merge_list(doc: &mut Vec<Value>, patch: &[Value], key: &str) -> Result<(), ApiError> {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *doc = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .map(strip)
            .collect();
        return Ok(());
    }
    for pe in patch {
        let Some(pm) = pe.as_object() else {
            doc.push(pe.clone());
            continue;
        };
        let Some(kv) = pm.get(key) else {
            return Err(ApiError::bad_request(format!(
                "a strategic merge patch list element lacks its merge key {key:?}"
            )));
        };
        let idx = doc.iter().position(|d| d.get(key) == Some(kv));
        if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
            doc.retain(|d| d.get(key) != Some(kv));
            continue;
        }
        match idx.and_then(|i| doc.get_mut(i)) {
            Some(Value::Object(d)) => merge_map(d, pm)?,
            _ => doc.push(strip(pe)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_handles_kubectl_apply_patches() {
        let mut doc = json!({
            "metadata": {"labels": {"app": "x"}, "annotations": {"a": "1"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:1.25", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "x"}],
                 "ports": [{"containerPort": 80}]}
            ]}}}
        });
        let p = json!({"metadata": {"annotations": {"k": "v"}},
            "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "nginx"}],
              "containers": [{"$setElementOrder/env": [{"name": "A"}, {"name": "B"}], "env": [{"name": "A", "value": "2"}], "image": "nginx:1.26", "name": "nginx"}]}}}});
        strategic_merge(&mut doc, &p).unwrap();
        let c = &doc["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:1.26");
        assert_eq!(
            c["env"],
            json!([{"name": "A", "value": "2"}, {"name": "B", "value": "x"}])
        );
        assert_eq!(doc["metadata"]["annotations"], json!({"a": "1", "k": "v"}));

        let p2 = json!({"metadata": {"labels": null},
            "spec": {"strategy": {"type": "Recreate"}, "template": {"spec": {
              "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "nginx"}],
              "containers": [{"args": ["sleep", "3600"], "image": "busybox:1.36", "name": "sidecar"},
                {"$setElementOrder/ports": [{"containerPort": 8080}], "env": null, "name": "nginx",
                 "ports": [{"containerPort": 8080}, {"$patch": "delete", "containerPort": 80}]}]}}}});
        strategic_merge(&mut doc, &p2).unwrap();
        assert!(doc["metadata"].get("labels").is_none());
        let cs = doc["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs[0]["name"], "sidecar");
        assert_eq!(cs[1]["name"], "nginx");
        assert!(cs[1].get("env").is_none());
        assert_eq!(cs[1]["ports"], json!([{"containerPort": 8080}]));
        assert_eq!(doc["spec"]["strategy"]["type"], "Recreate");
    }

    /// Cases after Kubernetes' strategicpatch tests (patch_test.go): `mergingList` → a list
    /// merged by `name` (containers), `nonMergingList` → a replaced list (args),
    /// `mergingIntList` → a primitive list merged as a set (finalizers).
    #[test]
    fn kubernetes_strategicpatch_cases() {
        let cases = [
            (
                "add an element that exists in the patch but not the original",
                json!({"containers": [{"name": "1"}]}),
                json!({"$setElementOrder/containers": [{"name": "1"}, {"name": "2"}], "containers": [{"name": "2"}]}),
                json!({"containers": [{"name": "1"}, {"name": "2"}]}),
            ),
            (
                "delete one item from a merging list",
                json!({"containers": [{"name": "1", "value": "a"}, {"name": "2", "value": "b"}]}),
                json!({"$setElementOrder/containers": [{"name": "2"}], "containers": [{"$patch": "delete", "name": "1"}]}),
                json!({"containers": [{"name": "2", "value": "b"}]}),
            ),
            (
                "delete all items from a merging list",
                json!({"containers": [{"name": "1"}, {"name": "2"}]}),
                json!({"containers": [{"$patch": "replace"}]}),
                json!({"containers": []}),
            ),
            (
                "replace a merging list with $patch: replace",
                json!({"containers": [{"name": "1", "value": "a"}, {"name": "2"}]}),
                json!({"containers": [{"name": "3", "value": "c"}, {"$patch": "replace"}]}),
                json!({"containers": [{"name": "3", "value": "c"}]}),
            ),
            (
                "a non-merging list is replaced",
                json!({"args": ["a", "b"]}),
                json!({"args": ["c"]}),
                json!({"args": ["c"]}),
            ),
            (
                "null deletes a key of a map",
                json!({"labels": {"a": "1", "b": "2"}}),
                json!({"labels": {"a": null}}),
                json!({"labels": {"b": "2"}}),
            ),
            (
                "$patch: delete deletes a map",
                json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}, "replicas": 1}),
                json!({"strategy": {"$patch": "delete"}}),
                json!({"replicas": 1}),
            ),
            (
                "$patch: replace replaces a map",
                json!({"a": {"x": 1, "y": 2}}),
                json!({"a": {"$patch": "replace", "z": 3}}),
                json!({"a": {"z": 3}}),
            ),
            (
                "$deleteFromPrimitiveList",
                json!({"finalizers": ["a", "b", "c"]}),
                json!({"$deleteFromPrimitiveList/finalizers": ["b"]}),
                json!({"finalizers": ["a", "c"]}),
            ),
            (
                "$setElementOrder of a primitive list with an added item",
                json!({"finalizers": ["a", "b"]}),
                json!({"$setElementOrder/finalizers": ["c", "a", "b"], "finalizers": ["c"]}),
                json!({"finalizers": ["c", "a", "b"]}),
            ),
            (
                "$retainKeys drops the keys not listed",
                json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}),
                json!({"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}),
                json!({"strategy": {"type": "Recreate"}}),
            ),
            (
                "server-only items keep their place relative to the live list",
                json!({"containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}]}),
                json!({"$setElementOrder/containers": [{"name": "1"}, {"name": "3"}], "containers": [{"name": "3", "image": "x"}]}),
                json!({"containers": [{"name": "1"}, {"name": "2"}, {"name": "3", "image": "x"}]}),
            ),
            (
                "reorder with $setElementOrder only",
                json!({"containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}]}),
                json!({"$setElementOrder/containers": [{"name": "3"}, {"name": "2"}, {"name": "1"}]}),
                json!({"containers": [{"name": "3"}, {"name": "2"}, {"name": "1"}]}),
            ),
            (
                "new items go before later server-only items",
                json!({"containers": [{"name": "1"}, {"name": "2"}]}),
                json!({"$setElementOrder/containers": [{"name": "3"}, {"name": "1"}], "containers": [{"name": "3"}]}),
                json!({"containers": [{"name": "3"}, {"name": "1"}, {"name": "2"}]}),
            ),
            (
                "a nested merging list inside a merged element",
                json!({"containers": [{"name": "a", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}),
                json!({"containers": [{"name": "a", "env": [{"$patch": "delete", "name": "B"}]}]}),
                json!({"containers": [{"name": "a", "env": [{"name": "A", "value": "1"}]}]}),
            ),
            (
                "null deletes a list of an element",
                json!({"containers": [{"name": "a", "env": [{"name": "A"}], "image": "i"}]}),
                json!({"containers": [{"name": "a", "env": null}]}),
                json!({"containers": [{"name": "a", "image": "i"}]}),
            ),
            (
                "a merging list the original does not have (directives stripped)",
                json!({}),
                json!({"containers": [{"name": "a", "ports": [{"containerPort": 80}, {"$patch": "delete", "containerPort": 81}]}]}),
                json!({"containers": [{"name": "a", "ports": [{"containerPort": 80}]}]}),
            ),
            (
                "deleting an element the original lacks changes nothing",
                json!({"containers": [{"name": "a"}]}),
                json!({"containers": [{"$patch": "delete", "name": "b"}]}),
                json!({"containers": [{"name": "a"}]}),
            ),
            (
                "volume mounts merge by mountPath, ports by containerPort",
                json!({"volumeMounts": [{"mountPath": "/a", "name": "x"}], "ports": [{"containerPort": 80, "name": "http"}]}),
                json!({"volumeMounts": [{"mountPath": "/a", "readOnly": true}], "ports": [{"containerPort": 80, "protocol": "TCP"}]}),
                json!({"volumeMounts": [{"mountPath": "/a", "name": "x", "readOnly": true}], "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}]}),
            ),
            (
                "conditions merge by type",
                json!({"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}),
                json!({"conditions": [{"type": "Ready", "status": "True"}]}),
                json!({"conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}),
            ),
        ];
        for (name, mut doc, patch, want) in cases {
            strategic_merge(&mut doc, &patch).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(doc, want, "{name}");
        }
        // Bad input: a merging list element without its merge key is a 400, not a panic.
        let mut doc = json!({"containers": [{"name": "a"}]});
        let err = strategic_merge(&mut doc, &json!({"containers": [{"image": "x"}]})).unwrap_err();
        assert_eq!(err.code(), 400);
        let err = strategic_merge(&mut doc, &json!({"spec": {"$patch": "explode"}})).unwrap_err();
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn directives() {
        let mut doc = json!({"metadata": {"finalizers": ["a"]}, "spec": {"x": {"a": 1, "b": 2}, "l": [1, 2, 3]}});
        let p = json!({"metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
                       "spec": {"x": {"$patch": "replace", "c": 3}, "l": [4]}});
        strategic_merge(&mut doc, &p).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(doc["spec"]["x"], json!({"c": 3}));
        assert_eq!(doc["spec"]["l"], json!([4]));
        let mut d2 = json!({"spec": {"a": 1, "b": 2}});
        strategic_merge(
            &mut d2,
            &json!({"spec": {"$retainKeys": ["a", "c"], "c": 3}}),
        )
        .unwrap();
        assert_eq!(d2["spec"], json!({"a": 1, "c": 3}));
    }

    #[test]
    fn patch_kinds() {
        let mut doc = json!({"metadata": {"name": "a"}, "spec": {"replicas": 1}});
        PatchBody::decode(MERGE, br#"{"spec":{"replicas":3}}"#)
            .unwrap()
            .apply(&mut doc)
            .unwrap();
        assert_eq!(doc["spec"]["replicas"], 3);
        let jp = PatchBody::decode(
            JSON,
            br#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
        )
        .unwrap();
        jp.apply(&mut doc).unwrap();
        assert_eq!(doc["spec"]["replicas"], 5);
        let bad = PatchBody::decode(JSON, br#"[{"op":"remove","path":"/nope"}]"#).unwrap();
        assert_eq!(bad.apply(&mut doc).unwrap_err().code(), 422);
        assert_eq!(
            PatchBody::decode("text/plain", b"x").unwrap_err().code(),
            415
        );
        assert!(
            PatchBody::decode(MERGE, br#"{"metadata":{"resourceVersion":"5"}}"#)
                .unwrap()
                .sets_resource_version()
        );
    }
}
