//! Output like kubectl's: tables (with `-o wide`, `-A`, `--show-labels`), YAML, JSON, names and
//! JSONPath, plus kubectl's human durations for the AGE column.
//!
//! Objects are handled as `serde_json::Value` so every kind (and every server version) prints.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{anyhow, bail};
use chrono::{DateTime, Utc};
use kapsel_api::table;
use serde_json::Value;

use crate::jsonpath::JsonPath;
use crate::resources::ResourceInfo;

/// `-o` formats.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputFormat {
    Table,
    Wide,
    Yaml,
    Json,
    Name,
    JsonPath(JsonPath),
}

impl OutputFormat {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "" => OutputFormat::Table,
            "wide" => OutputFormat::Wide,
            "yaml" => OutputFormat::Yaml,
            "json" => OutputFormat::Json,
            "name" => OutputFormat::Name,
            _ => {
                if let Some(t) = s
                    .strip_prefix("jsonpath=")
                    .or_else(|| s.strip_prefix("jsonpath-as-json="))
                {
                    OutputFormat::JsonPath(JsonPath::parse(t)?)
                } else {
                    bail!(
                        "unable to match a printer suitable for the output format \"{s}\", allowed formats are: json,jsonpath,name,wide,yaml"
                    )
                }
            }
        })
    }
    pub fn is_table(&self) -> bool {
        matches!(self, OutputFormat::Table | OutputFormat::Wide)
    }
}

pub use kapsel_api::table::{age, format_label_selector, format_labels, human_duration};

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

/// How to print a table.
#[derive(Clone, Debug)]
pub struct TableOptions {
    pub wide: bool,
    /// `-A`: a NAMESPACE column first.
    pub with_namespace: bool,
    pub show_labels: bool,
    /// Several types in one command: names print as `deployment.apps/web`.
    pub with_kind: bool,
    pub no_headers: bool,
    pub now: DateTime<Utc>,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            wide: false,
            with_namespace: false,
            show_labels: false,
            with_kind: false,
            no_headers: false,
            now: Utc::now(),
        }
    }
}

/// Column headers of a kind (without NAMESPACE/LABELS): the shared column definitions of
/// [`kapsel_api::table`], wide (priority 1) ones only with `-o wide`.
pub fn headers(info: &ResourceInfo, wide: bool) -> Vec<String> {
    table::columns(info.plural)
        .iter()
        .filter(|c| wide || c.priority == 0)
        .map(table::header)
        .collect()
}

/// The cells of one object (without NAMESPACE/LABELS), matching [`headers`].
pub fn cells(info: &ResourceInfo, o: &Value, opts: &TableOptions) -> Vec<String> {
    let cols = table::columns(info.plural);
    table::cells(info.plural, o, opts.now)
        .into_iter()
        .zip(cols)
        .filter(|(_, c)| opts.wide || c.priority == 0)
        .map(|(cell, c)| {
            if opts.with_kind && c.format == "name" {
                format!("{}/{cell}", info.type_name())
            } else {
                cell
            }
        })
        .collect()
}

/// A table being built: headers plus rows, rendered like kubectl (columns left-aligned, three
/// spaces apart, the last column unpadded).
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(info: &ResourceInfo, opts: &TableOptions) -> Self {
        let mut hs: Vec<String> = Vec::new();
        if opts.with_namespace && info.namespaced {
            hs.push("NAMESPACE".into());
        }
        hs.extend(headers(info, opts.wide));
        if opts.show_labels {
            hs.push("LABELS".into());
        }
        Table {
            headers: hs,
            rows: Vec::new(),
        }
    }

    pub fn add(&mut self, info: &ResourceInfo, o: &Value, opts: &TableOptions) {
        self.rows.push(row(info, o, opts));
    }

    /// Column widths over headers and rows.
    pub fn widths(&self, include_headers: bool) -> Vec<usize> {
        let mut w = vec![0; self.headers.len()];
        if include_headers {
            for (i, h) in self.headers.iter().enumerate() {
                w[i] = h.chars().count();
            }
        }
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
        }
        w
    }

    pub fn render(&self, no_headers: bool) -> String {
        let widths = self.widths(!no_headers);
        let mut out = String::new();
        if !no_headers {
            out.push_str(&render_row(&self.headers, &widths));
        }
        for r in &self.rows {
            out.push_str(&render_row(r, &widths));
        }
        out
    }
}

/// One full row (with NAMESPACE and LABELS columns as requested).
pub fn row(info: &ResourceInfo, o: &Value, opts: &TableOptions) -> Vec<String> {
    let mut r = Vec::new();
    if opts.with_namespace && info.namespaced {
        r.push(s(o, "/metadata/namespace").to_string());
    }
    r.extend(cells(info, o, opts));
    if opts.show_labels {
        r.push(format_labels(o.pointer("/metadata/labels")));
    }
    r
}

/// Render one row against given widths (growing none: long cells just push the next column).
pub fn render_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    let n = cells.len();
    for (i, c) in cells.iter().enumerate() {
        line.push_str(c);
        if i + 1 < n {
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = w.saturating_sub(c.chars().count()) + 3;
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    let trimmed = line.trim_end().len();
    line.truncate(trimmed);
    line.push('\n');
    line
}

// ---------------------------------------------------------------------------------------------
// Structured output
// ---------------------------------------------------------------------------------------------

/// Recursively sort object keys (kubectl's YAML/JSON output is sorted).
pub fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let b: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(b.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// JSON like kubectl: four-space indentation, trailing newline.
pub fn to_json(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(&sorted(v), &mut ser).expect("serialising a Value cannot fail");
    let mut s = String::from_utf8(buf).expect("serde_json writes UTF-8");
    s.push('\n');
    s
}

pub fn to_yaml(v: &Value) -> String {
    serde_yaml::to_string(&sorted(v)).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n"))
}

/// A `kind: List` wrapping several objects, as kubectl prints for `-o yaml|json` of many.
pub fn list_of(items: Vec<Value>) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": items,
    })
}

/// Make sure an object carries `apiVersion`/`kind` (list items may omit them).
pub fn with_type_meta(mut o: Value, info: &ResourceInfo) -> Value {
    if let Some(m) = o.as_object_mut() {
        if m.get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            m.insert("apiVersion".into(), Value::String(info.api_version()));
        }
        if m.get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            m.insert("kind".into(), Value::String(info.kind.into()));
        }
    }
    o
}

/// `deployment.apps/web`.
pub fn name_of(info: &ResourceInfo, o: &Value) -> String {
    format!("{}/{}", info.type_name(), s(o, "/metadata/name"))
}

/// Print objects (already grouped by type) in a structured format: one object alone, several
/// as a List. `single` means the user asked for exactly one named object.
pub fn print_structured(
    out: &mut dyn Write,
    format: &OutputFormat,
    objects: &[(ResourceInfo, Value)],
    single: bool,
) -> anyhow::Result<()> {
    let values: Vec<Value> = objects
        .iter()
        .map(|(info, o)| with_type_meta(o.clone(), info))
        .collect();
    let doc = if single && values.len() == 1 {
        values[0].clone()
    } else {
        list_of(values)
    };
    match format {
        OutputFormat::Json => out.write_all(to_json(&doc).as_bytes())?,
        OutputFormat::Yaml => out.write_all(to_yaml(&doc).as_bytes())?,
        OutputFormat::Name => {
            for (info, o) in objects {
                writeln!(out, "{}", name_of(info, o))?;
            }
        }
        OutputFormat::JsonPath(jp) => {
            let text = jp
                .render(&doc)
                .map_err(|e| anyhow!("error executing jsonpath {:?}: {e}", jp.source()))?;
            out.write_all(text.as_bytes())?;
        }
        OutputFormat::Table | OutputFormat::Wide => unreachable!("tables are printed elsewhere"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn rows_are_padded_with_three_spaces() {
        let t = Table {
            headers: vec!["NAME".into(), "READY".into(), "AGE".into()],
            rows: vec![
                vec!["web-1".into(), "1/1".into(), "5s".into()],
                vec!["a".into(), "0/1".into(), "10m".into()],
            ],
        };
        assert_eq!(
            t.render(false),
            "NAME    READY   AGE\nweb-1   1/1     5s\na       0/1     10m\n"
        );
    }

    #[test]
    fn pod_status_logic() {
        let info = crate::resources::lookup("pods").unwrap();
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 10, 0).unwrap();
        let opts = TableOptions {
            now,
            ..Default::default()
        };
        let pod = serde_json::json!({
            "metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T00:05:00Z"}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        assert_eq!(
            cells(&info, &pod, &opts),
            vec!["p", "1/2", "CrashLoopBackOff", "2 (5m ago)", "10m"]
        );
        let mut terminating = pod.clone();
        terminating["metadata"]["deletionTimestamp"] = "2024-01-01T00:09:00Z".into();
        assert_eq!(cells(&info, &terminating, &opts)[2], "Terminating");
    }
}
