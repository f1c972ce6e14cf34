//! Server-side output formats chosen by the `Accept` header: the `meta.k8s.io` **Table** that
//! `kubectl get` asks for (`application/json;as=Table;v=v1;g=meta.k8s.io`), and
//! **PartialObjectMetadata(List)** (`as=PartialObjectMetadata[List]`), for lists, single objects
//! and watch events. Columns and cells come from [`kapsel_api::table`], the definitions `kapsel get`
//! prints with, so both show the same.

use axum::http::{header, HeaderMap, Uri};
use bytes::Bytes;
use chrono::Utc;
use serde_json::{json, Map, Value};

use kapsel_api::table as cols;

use crate::errors::ApiError;
use crate::registry::ResourceDef;

/// What a Table row carries in `object` (`?includeObject=`; Kubernetes' default: `Metadata`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Include {
    None,
    #[default]
    Metadata,
    Object,
}

/// The representation a request asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// The plain object / list.
    #[default]
    Json,
    /// `meta.k8s.io/{version} Table`.
    Table {
        version: &'static str,
        include: Include,
    },
    /// `meta.k8s.io/{version} PartialObjectMetadata` (and `…List` for lists).
    Partial { version: &'static str },
}

/// Pick the format from `Accept` (first supported media range wins; Kubernetes ignores the
/// q-values too) and `?includeObject=`.
pub fn negotiate(headers: &HeaderMap, uri: &Uri) -> Result<Format, ApiError> {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let include = match query_param(uri, "includeObject").as_deref() {
        None | Some("") | Some("Metadata") => Include::Metadata,
        Some("None") => Include::None,
        Some("Object") => Include::Object,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"None\", \"Metadata\", \"Object\""
            )))
        }
    };
    Ok(choose(&accept, include))
}

fn query_param(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| v.to_string())
    })
}

/// The decision of [`negotiate`], on the header's text.
pub fn choose(accept: &str, include: Include) -> Format {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut as_, mut g, mut v) = ("", "", "");
        for p in parts {
            match p.split_once('=') {
                Some(("as", x)) => as_ = x,
                Some(("g", x)) => g = x,
                Some(("v", x)) => v = x,
                _ => {}
            }
        }
        let json_like = matches!(
            media.as_str(),
            "application/json" | "application/*" | "*/*" | "application/yaml"
        );
        if as_.is_empty() {
            if json_like {
                return Format::Json;
            }
            continue;
        }
        if media != "application/json" || g != "meta.k8s.io" {
            continue;
        }
        let version = match v {
            "v1" => "v1",
            "v1beta1" => "v1beta1",
            _ => continue,
        };
        match as_ {
            "Table" => return Format::Table { version, include },
            "PartialObjectMetadata" | "PartialObjectMetadataList" => {
                return Format::Partial { version }
            }
            _ => continue,
        }
    }
    Format::Json
}

fn partial(version: &str, obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Column definitions of `def`'s kind, as `metav1.TableColumnDefinition`s.
pub fn column_definitions(def: &ResourceDef) -> Vec<Value> {
    cols::columns(def.plural)
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.type_, "format": c.format,
                   "description": c.description, "priority": c.priority})
        })
        .collect()
}

/// One `metav1.TableRow` of `obj`.
pub fn row(def: &ResourceDef, obj: &Value, include: Include, version: &str) -> Value {
    let cells: Vec<Value> = cols::cells(def.plural, obj, Utc::now())
        .into_iter()
        .zip(cols::columns(def.plural))
        .map(|(cell, c)| match c.type_ {
            "integer" => cell
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or(Value::String(cell)),
            _ => Value::String(cell),
        })
        .collect();
    let mut r = Map::new();
    r.insert("cells".into(), Value::Array(cells));
    match include {
        Include::None => {}
        Include::Metadata => {
            r.insert("object".into(), partial(version, obj));
        }
        Include::Object => {
            r.insert("object".into(), obj.clone());
        }
    }
    Value::Object(r)
}

fn table(def: &ResourceDef, meta: Value, rows: Vec<Value>, version: &str) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": meta,
        "columnDefinitions": column_definitions(def),
        "rows": rows,
    })
}

fn parse(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

/// A list in `fmt` (`None`: plain JSON, which the caller builds from the bytes directly).
pub fn list(fmt: Format, def: &ResourceDef, meta: &Value, items: &[Bytes]) -> Option<Value> {
    match fmt {
        Format::Json => None,
        Format::Table { version, include } => {
            let rows = items
                .iter()
                .map(|b| row(def, &parse(b), include, version))
                .collect();
            Some(table(def, meta.clone(), rows, version))
        }
        Format::Partial { version } => {
            let items: Vec<Value> = items.iter().map(|b| partial(version, &parse(b))).collect();
            Some(json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": format!("meta.k8s.io/{version}"),
                "metadata": meta,
                "items": items,
            }))
        }
    }
}

/// One object in `fmt`: a one-row Table, a PartialObjectMetadata, or the stored bytes as they are.
pub fn object(fmt: Format, def: &ResourceDef, stored: Bytes) -> Bytes {
    match fmt {
        Format::Json => stored,
        Format::Table { version, include } => {
            let obj = parse(&stored);
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            let meta = if rv.is_null() {
                json!({})
            } else {
                json!({"resourceVersion": rv})
            };
            let t = table(def, meta, vec![row(def, &obj, include, version)], version);
            Bytes::from(t.to_string())
        }
        Format::Partial { version } => Bytes::from(partial(version, &parse(&stored)).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn negotiation() {
        let t = Format::Table {
            version: "v1",
            include: Include::Metadata,
        };
        for (accept, want) in [
            (KUBECTL_GET, t),
            ("application/json, */*", Format::Json),
            ("", Format::Json),
            (
                "application/vnd.kubernetes.protobuf,application/json",
                Format::Json,
            ),
            (
                "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
                Format::Table {
                    version: "v1beta1",
                    include: Include::Metadata,
                },
            ),
            (
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json",
                Format::Partial { version: "v1" },
            ),
            (
                "application/json;as=Table;v=v2;g=meta.k8s.io,application/json",
                Format::Json,
            ),
            ("application/json;as=Table;v=v1;g=other.io", Format::Json),
        ] {
            assert_eq!(choose(accept, Include::Metadata), want, "{accept}");
        }
        let uri: Uri = "/api/v1/pods?includeObject=Object".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, KUBECTL_GET.parse().unwrap());
        assert_eq!(
            negotiate(&h, &uri).unwrap(),
            Format::Table {
                version: "v1",
                include: Include::Object
            }
        );
        let bad: Uri = "/api/v1/pods?includeObject=All".parse().unwrap();
        assert_eq!(negotiate(&h, &bad).unwrap_err().code(), 400);
    }

    #[test]
    fn table_of_a_deployment_list() {
        let def = registry::find("apps", "v1", "deployments").unwrap();
        let d = json!({"kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": "nginx", "namespace": "default", "resourceVersion": "7",
                         "creationTimestamp": "2024-01-01T00:00:00Z", "labels": {"app": "nginx"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "nginx"}},
                     "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 1}});
        let items = vec![Bytes::from(d.to_string())];
        let fmt = choose(KUBECTL_GET, Include::Metadata);
        let t = list(fmt, def, &json!({"resourceVersion": "9"}), &items).unwrap();
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"]["resourceVersion"], "9");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        let row = &t["rows"][0];
        assert_eq!(row["cells"][0], "nginx");
        assert_eq!(row["cells"][1], "2/2");
        assert_eq!(row["cells"][2], 2, "integer columns are JSON numbers");
        assert_eq!(row["cells"][3], 1);
        assert_eq!(row["cells"][7], "app=nginx");
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["namespace"], "default");
        assert!(row["object"].get("spec").is_none());

        let one = object(fmt, def, items[0].clone());
        let one: Value = serde_json::from_slice(&one).unwrap();
        assert_eq!(one["rows"].as_array().unwrap().len(), 1);
        assert_eq!(one["metadata"]["resourceVersion"], "7");

        let p = list(
            Format::Partial { version: "v1" },
            def,
            &json!({"resourceVersion": "9"}),
            &items,
        )
        .unwrap();
        assert_eq!(p["kind"], "PartialObjectMetadataList");
        assert_eq!(p["items"][0]["metadata"]["name"], "nginx");
        assert!(list(Format::Json, def, &json!({}), &items).is_none());
        assert_eq!(object(Format::Json, def, items[0].clone()), items[0]);
    }
}
