//! Output like kubectl's: tables (with `-o wide`, `-A`, `--show-labels`), YAML, JSON, names and
//! JSONPath, plus kubectl's human durations for the AGE column.
//!
//! Objects are handled as `serde_json::Value` so every kind (and every server version) prints.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{anyhow, bail};
use chrono::{DateTime, Utc};
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

// ---------------------------------------------------------------------------------------------
// Durations and small helpers
// ---------------------------------------------------------------------------------------------

/// kubectl's `HumanDuration`: `5s`, `3m2s`, `15m`, `5h3m`, `2d3h`, `400d`, `3y20d`.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// AGE of a timestamp field, `<unknown>` when absent.
pub fn age(v: Option<&Value>, now: DateTime<Utc>) -> String {
    match parse_time(v) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

/// `a=b,c=d` of a string map, or `<none>`.
pub fn format_labels(m: Option<&Value>) -> String {
    match m.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            sorted
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        }
        _ => "<none>".into(),
    }
}

/// A `metav1.LabelSelector` as a string (`app=web,tier in (a,b)`), `<none>` when empty.
pub fn format_label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        let sorted: BTreeMap<&String, &Value> = m.iter().collect();
        for (k, v) in sorted {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in arr(sel, "/matchExpressions") {
        let key = s(e, "/key");
        let values: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        match s(e, "/operator") {
            "In" => parts.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            op => parts.push(format!("{key} {op} ({})", values.join(","))),
        }
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
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

/// Column headers of a kind (without NAMESPACE/LABELS).
pub fn headers(info: &ResourceInfo, wide: bool) -> Vec<&'static str> {
    let mut h: Vec<&'static str> = match info.plural {
        "pods" => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "deployments" => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "replicasets" => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "nodes" => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "services" => vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        "namespaces" => vec!["NAME", "STATUS", "AGE"],
        "configmaps" => vec!["NAME", "DATA", "AGE"],
        "secrets" => vec!["NAME", "TYPE", "DATA", "AGE"],
        "endpoints" => vec!["NAME", "ENDPOINTS", "AGE"],
        "events" => {
            if wide {
                vec![
                    "LAST SEEN",
                    "TYPE",
                    "REASON",
                    "OBJECT",
                    "SUBOBJECT",
                    "SOURCE",
                    "MESSAGE",
                    "FIRST SEEN",
                    "COUNT",
                    "NAME",
                ]
            } else {
                vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
            }
        }
        "resourcequotas" => vec!["NAME", "AGE", "REQUEST", "LIMIT"],
        "limitranges" => vec!["NAME", "CREATED AT"],
        "leases" => vec!["NAME", "HOLDER", "AGE"],
        _ => vec!["NAME", "AGE"],
    };
    if wide {
        match info.plural {
            "pods" => h.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]),
            "deployments" | "replicasets" => h.extend(["CONTAINERS", "IMAGES", "SELECTOR"]),
            "nodes" => h.extend([
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
            ]),
            "services" => h.push("SELECTOR"),
            _ => {}
        }
    }
    h
}

/// The cells of one object (without NAMESPACE/LABELS), matching [`headers`].
pub fn cells(info: &ResourceInfo, o: &Value, opts: &TableOptions) -> Vec<String> {
    let now = opts.now;
    let name = if opts.with_kind {
        format!("{}/{}", info.type_name(), s(o, "/metadata/name"))
    } else {
        s(o, "/metadata/name").to_string()
    };
    let created = o.pointer("/metadata/creationTimestamp");
    let age_ = age(created, now);
    let wide = opts.wide;
    match info.plural {
        "pods" => pod_cells(o, name, age_, wide, now),
        "deployments" => {
            let mut c = vec![
                name,
                format!(
                    "{}/{}",
                    i(o, "/status/readyReplicas"),
                    o.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ),
                i(o, "/status/updatedReplicas").to_string(),
                i(o, "/status/availableReplicas").to_string(),
                age_,
            ];
            if wide {
                c.extend(template_wide(o));
            }
            c
        }
        "replicasets" => {
            let mut c = vec![
                name,
                o.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
                    .to_string(),
                i(o, "/status/replicas").to_string(),
                i(o, "/status/readyReplicas").to_string(),
                age_,
            ];
            if wide {
                c.extend(template_wide(o));
            }
            c
        }
        "nodes" => {
            let mut c = vec![
                name,
                node_status(o),
                node_roles(o),
                age_,
                s(o, "/status/nodeInfo/kubeletVersion").to_string(),
            ];
            if wide {
                let addr = |t: &str| {
                    arr(o, "/status/addresses")
                        .iter()
                        .find(|a| s(a, "/type") == t)
                        .map(|a| s(a, "/address").to_string())
                        .unwrap_or_else(|| "<none>".into())
                };
                c.push(addr("InternalIP"));
                c.push(addr("ExternalIP"));
                c.push(or_unknown(s(o, "/status/nodeInfo/osImage")));
                c.push(or_unknown(s(o, "/status/nodeInfo/kernelVersion")));
                c.push(or_unknown(s(o, "/status/nodeInfo/containerRuntimeVersion")));
            }
            c
        }
        "services" => {
            let ty = match s(o, "/spec/type") {
                "" => "ClusterIP",
                t => t,
            };
            let mut c = vec![
                name,
                ty.to_string(),
                or_none(s(o, "/spec/clusterIP")),
                service_external_ip(o, ty),
                service_ports(o),
                age_,
            ];
            if wide {
                c.push(format_labels(o.pointer("/spec/selector")));
            }
            c
        }
        "namespaces" => vec![
            name,
            match s(o, "/status/phase") {
                "" => "Active".to_string(),
                p => p.to_string(),
            },
            age_,
        ],
        "configmaps" => vec![
            name,
            (count_keys(o, "/data") + count_keys(o, "/binaryData")).to_string(),
            age_,
        ],
        "secrets" => vec![
            name,
            match s(o, "/type") {
                "" => "Opaque".to_string(),
                t => t.to_string(),
            },
            (count_keys(o, "/data") + count_keys(o, "/stringData")).to_string(),
            age_,
        ],
        "endpoints" => vec![name, endpoints(o), age_],
        "events" => event_cells(o, wide, now),
        "resourcequotas" => {
            let (req, lim) = quota_usage(o);
            vec![name, age_, req, lim]
        }
        "limitranges" => vec![name, s(o, "/metadata/creationTimestamp").to_string()],
        "leases" => vec![name, s(o, "/spec/holderIdentity").to_string(), age_],
        _ => vec![name, age_],
    }
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "<unknown>".into()
    } else {
        s.to_string()
    }
}

fn count_keys(o: &Value, ptr: &str) -> usize {
    o.pointer(ptr)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

fn template_wide(o: &Value) -> Vec<String> {
    let containers = arr(o, "/spec/template/spec/containers");
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    vec![
        names.join(","),
        images.join(","),
        format_label_selector(o.pointer("/spec/selector")),
    ]
}

/// kubectl's pod STATUS/READY/RESTARTS logic.
fn pod_cells(o: &Value, name: String, age_: String, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let total = arr(o, "/spec/containers").len();
    let mut ready = 0;
    let mut restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut reason = s(o, "/status/phase").to_string();
    if !s(o, "/status/reason").is_empty() {
        reason = s(o, "/status/reason").to_string();
    }
    let mut note_restart = |cs: &Value, restarts: &mut i64| {
        *restarts += i(cs, "/restartCount");
        if let Some(t) = parse_time(cs.pointer("/lastState/terminated/finishedAt")) {
            if last_restart.is_none_or(|l| t > l) {
                last_restart = Some(t);
            }
        }
    };
    let init_specs = arr(o, "/spec/initContainers").len();
    let mut initializing = false;
    for (idx, cs) in arr(o, "/status/initContainerStatuses").iter().enumerate() {
        note_restart(cs, &mut restarts);
        let term = cs.pointer("/state/terminated");
        let waiting_reason = s(cs, "/state/waiting/reason");
        if let Some(t) = term {
            if i(t, "/exitCode") == 0 {
                continue;
            }
            reason = if !s(t, "/reason").is_empty() {
                format!("Init:{}", s(t, "/reason"))
            } else if i(t, "/signal") != 0 {
                format!("Init:Signal:{}", i(t, "/signal"))
            } else {
                format!("Init:ExitCode:{}", i(t, "/exitCode"))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{idx}/{init_specs}");
        }
        initializing = true;
        break;
    }
    if !initializing {
        restarts = 0;
        let mut has_running = false;
        for cs in arr(o, "/status/containerStatuses").iter().rev() {
            note_restart(cs, &mut restarts);
            let waiting_reason = s(cs, "/state/waiting/reason");
            let term = cs.pointer("/state/terminated");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = term.filter(|t| !s(t, "/reason").is_empty()) {
                reason = s(t, "/reason").to_string();
            } else if let Some(t) = term {
                reason = if i(t, "/signal") != 0 {
                    format!("Signal:{}", i(t, "/signal"))
                } else {
                    format!("ExitCode:{}", i(t, "/exitCode"))
                };
            } else if cs.get("ready").and_then(Value::as_bool) == Some(true)
                && cs.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = arr(o, "/status/conditions")
                .iter()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }
    if o.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        reason = if s(o, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    if reason.is_empty() {
        reason = "Pending".into();
    }
    let restarts_s = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };
    let mut c = vec![name, format!("{ready}/{total}"), reason, restarts_s, age_];
    if wide {
        c.push(or_none(s(o, "/status/podIP")));
        c.push(or_none(s(o, "/spec/nodeName")));
        c.push(or_none(s(o, "/status/nominatedNodeName")));
        let gates = arr(o, "/spec/readinessGates");
        c.push(if gates.is_empty() {
            "<none>".into()
        } else {
            let ok = gates
                .iter()
                .filter(|g| {
                    arr(o, "/status/conditions").iter().any(|c| {
                        s(c, "/type") == s(g, "/conditionType") && s(c, "/status") == "True"
                    })
                })
                .count();
            format!("{ok}/{}", gates.len())
        });
    }
    c
}

fn node_status(o: &Value) -> String {
    let ready = arr(o, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Ready")
        .map(|c| s(c, "/status"));
    let mut st = match ready {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        st.push_str(",SchedulingDisabled");
    }
    st
}

fn node_roles(o: &Value) -> String {
    let mut roles = Vec::new();
    if let Some(m) = o.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in m {
            if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                if !r.is_empty() {
                    roles.push(r.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.push(v.to_string());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn service_external_ip(o: &Value, ty: &str) -> String {
    let mut ips: Vec<String> = arr(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if ty == "LoadBalancer" {
        for ing in arr(o, "/status/loadBalancer/ingress") {
            let ip = s(ing, "/ip");
            let host = s(ing, "/hostname");
            if !ip.is_empty() {
                ips.push(ip.into());
            } else if !host.is_empty() {
                ips.push(host.into());
            }
        }
        if ips.is_empty() {
            return "<pending>".into();
        }
    }
    if ty == "ExternalName" {
        return or_none(s(o, "/spec/externalName"));
    }
    if ips.is_empty() {
        "<none>".into()
    } else {
        ips.join(",")
    }
}

fn service_ports(o: &Value) -> String {
    let ports: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = match s(p, "/protocol") {
                "" => "TCP",
                x => x,
            };
            let node = i(p, "/nodePort");
            if node > 0 {
                format!("{}:{node}/{proto}", i(p, "/port"))
            } else {
                format!("{}/{proto}", i(p, "/port"))
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

fn endpoints(o: &Value) -> String {
    let mut list = Vec::new();
    for subset in arr(o, "/subsets") {
        let ports = arr(subset, "/ports");
        for a in arr(subset, "/addresses") {
            let ip = s(a, "/ip");
            if ports.is_empty() {
                list.push(ip.to_string());
            }
            for p in ports {
                list.push(format!("{ip}:{}", i(p, "/port")));
            }
        }
    }
    if list.is_empty() {
        return "<none>".into();
    }
    if list.len() > 3 {
        let more = list.len() - 3;
        list.truncate(3);
        return format!("{} + {more} more...", list.join(","));
    }
    list.join(",")
}

fn event_cells(o: &Value, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let last = o
        .pointer("/lastTimestamp")
        .filter(|v| !v.is_null())
        .or_else(|| o.pointer("/eventTime").filter(|v| !v.is_null()))
        .or_else(|| o.pointer("/firstTimestamp"));
    let first = o
        .pointer("/firstTimestamp")
        .filter(|v| !v.is_null())
        .or_else(|| o.pointer("/eventTime"));
    let object = format!(
        "{}/{}",
        s(o, "/involvedObject/kind").to_ascii_lowercase(),
        s(o, "/involvedObject/name")
    );
    let mut c = vec![
        age(last, now),
        s(o, "/type").to_string(),
        s(o, "/reason").to_string(),
        object,
    ];
    if wide {
        c.push(s(o, "/involvedObject/fieldPath").to_string());
        let comp = match s(o, "/source/component") {
            "" => s(o, "/reportingComponent"),
            c => c,
        };
        let host = s(o, "/source/host");
        c.push(if host.is_empty() {
            comp.to_string()
        } else {
            format!("{comp}, {host}")
        });
        c.push(s(o, "/message").trim().to_string());
        c.push(age(first, now));
        c.push(
            o.pointer("/count")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .to_string(),
        );
        c.push(s(o, "/metadata/name").to_string());
    } else {
        c.push(s(o, "/message").trim().to_string());
    }
    c
}

fn quota_usage(o: &Value) -> (String, String) {
    let hard = o
        .pointer("/status/hard")
        .or_else(|| o.pointer("/spec/hard"));
    let used = o.pointer("/status/used");
    let Some(hard) = hard.and_then(Value::as_object) else {
        return (String::new(), String::new());
    };
    let sorted: BTreeMap<&String, &Value> = hard.iter().collect();
    let mut req = Vec::new();
    let mut lim = Vec::new();
    for (k, v) in sorted {
        let u = used
            .and_then(|u| u.get(k.as_str()))
            .and_then(Value::as_str)
            .unwrap_or("0");
        let item = format!("{k}: {u}/{}", v.as_str().unwrap_or(""));
        if k.starts_with("limits.") {
            lim.push(item);
        } else {
            req.push(item);
        }
    }
    (req.join(", "), lim.join(", "))
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
        let mut headers: Vec<String> = Vec::new();
        if opts.with_namespace && info.namespaced {
            headers.push("NAMESPACE".into());
        }
        headers.extend(headers_of(info, opts.wide).into_iter().map(String::from));
        if opts.show_labels {
            headers.push("LABELS".into());
        }
        Table {
            headers,
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

fn headers_of(info: &ResourceInfo, wide: bool) -> Vec<&'static str> {
    headers(info, wide)
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
    fn human_durations_like_kubectl() {
        let d = chrono::Duration::seconds;
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (182, "3m2s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 3 * 60, "5h3m"),
            (47 * 3600, "47h"),
            (2 * 86400 + 3 * 3600, "2d3h"),
            (7 * 86400, "7d"),
            (400 * 86400, "400d"),
            (3 * 365 * 86400 + 20 * 86400, "3y20d"),
            (10 * 365 * 86400, "10y"),
        ] {
            assert_eq!(human_duration(d(secs)), want, "{secs}");
        }
    }

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
