//! `kapsel describe`: a human summary of objects plus their recent events.

use std::fmt::Write as _;
use std::io::Write;

use clap::Args;
use kapsel_api::client::ListParams;
use serde_json::Value;

use super::Ctx;
use crate::errors::{format_error, Reported};
use crate::printers::{self, age, format_label_selector};
use crate::resources::{self, ResourceInfo};

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// TYPE [NAME…] or TYPE/NAME.
    #[arg(required = true, value_name = "TYPE[.GROUP] [NAME]")]
    pub args: Vec<String>,
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Show events.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub show_events: bool,
}

pub async fn run(ctx: &Ctx, a: DescribeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let sel = resources::parse_selection(&a.args)?;
    let mut errors = 0;
    let mut first = true;
    for (info, names) in sel.groups {
        let all_ns = a.all_namespaces && info.namespaced;
        let api = ctx.api(&info, all_ns);
        let mut objs = Vec::new();
        if names.is_empty() {
            let lp = ListParams {
                label_selector: a.selector.clone(),
                ..Default::default()
            };
            objs.extend(api.list(&lp).await?.items);
        } else {
            for n in &names {
                match api.get(n).await {
                    Ok(o) => objs.push(o),
                    Err(e) => {
                        eprintln!("{}", format_error(&e.into()));
                        errors += 1;
                    }
                }
            }
        }
        for o in objs {
            if !first {
                writeln!(out)?;
                writeln!(out)?;
            }
            first = false;
            let events = if a.show_events {
                events_for(ctx, &info, &o).await.unwrap_or_default()
            } else {
                Vec::new()
            };
            out.write_all(describe(&info, &o, &events, a.show_events).as_bytes())?;
        }
    }
    if errors > 0 {
        return Err(Reported(errors).into());
    }
    Ok(())
}

async fn events_for(ctx: &Ctx, info: &ResourceInfo, o: &Value) -> anyhow::Result<Vec<Value>> {
    let ev_info = resources::lookup("events").expect("events are a known type");
    let ns = s(o, "/metadata/namespace");
    let api = if info.namespaced {
        ctx.api_in(&ev_info, Some(ns))
    } else {
        ctx.api_in(&ev_info, None)
    };
    let list = api.list(&ListParams::default()).await?;
    let name = s(o, "/metadata/name");
    let uid = s(o, "/metadata/uid");
    let mut evs: Vec<Value> = list
        .items
        .into_iter()
        .filter(|e| {
            s(e, "/involvedObject/name") == name
                && s(e, "/involvedObject/kind") == info.kind
                && (uid.is_empty()
                    || s(e, "/involvedObject/uid").is_empty()
                    || s(e, "/involvedObject/uid") == uid)
        })
        .collect();
    evs.sort_by(|a, b| last_seen(a).cmp(last_seen(b)));
    Ok(evs)
}

fn last_seen(e: &Value) -> &str {
    for p in ["/lastTimestamp", "/eventTime", "/firstTimestamp"] {
        let v = s(e, p);
        if !v.is_empty() {
            return v;
        }
    }
    ""
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn map_lines(out: &mut String, title: &str, m: Option<&Value>, skip_last_applied: bool) {
    let entries: Vec<(String, String)> = m
        .and_then(Value::as_object)
        .map(|m| {
            let mut v: Vec<(String, String)> = m
                .iter()
                .filter(|(k, _)| !(skip_last_applied && *k == kapsel_api::labels::LAST_APPLIED))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    if entries.is_empty() {
        let _ = writeln!(out, "{:<W$}<none>", format!("{title}:"));
        return;
    }
    for (i, (k, v)) in entries.iter().enumerate() {
        let sep = if title == "Annotations" { ": " } else { "=" };
        if i == 0 {
            let _ = writeln!(out, "{:<W$}{k}{sep}{v}", format!("{title}:"));
        } else {
            let _ = writeln!(out, "{:<W$}{k}{sep}{v}", "");
        }
    }
}

/// Width of the label column of top-level fields (the longest label plus padding).
const W: usize = 24;

fn field(out: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{:<W$}{value}", format!("{name}:"));
}

/// The text of `describe` for one object.
pub fn describe(info: &ResourceInfo, o: &Value, events: &[Value], show_events: bool) -> String {
    let now = chrono::Utc::now();
    let mut out = String::new();
    field(&mut out, "Name", s(o, "/metadata/name"));
    if info.namespaced {
        field(&mut out, "Namespace", s(o, "/metadata/namespace"));
    }
    map_lines(&mut out, "Labels", o.pointer("/metadata/labels"), false);
    map_lines(
        &mut out,
        "Annotations",
        o.pointer("/metadata/annotations"),
        true,
    );
    let created = s(o, "/metadata/creationTimestamp");
    if !created.is_empty() {
        field(&mut out, "CreationTimestamp", created);
    }
    if !s(o, "/metadata/deletionTimestamp").is_empty() {
        field(&mut out, "Terminating", s(o, "/metadata/deletionTimestamp"));
    }
    match info.plural {
        "pods" => describe_pod(&mut out, o),
        "deployments" => describe_deployment(&mut out, o),
        "replicasets" => {
            field(
                &mut out,
                "Selector",
                format_label_selector(o.pointer("/spec/selector")),
            );
            field(
                &mut out,
                "Replicas",
                format!(
                    "{} current / {} desired",
                    o.pointer("/status/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                    o.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ),
            );
            if let Some(owner) = o
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
            {
                field(
                    &mut out,
                    "Controlled By",
                    format!("{}/{}", s(owner, "/kind"), s(owner, "/name")),
                );
            }
            pod_template(&mut out, o.pointer("/spec/template"));
        }
        "nodes" => describe_node(&mut out, o),
        "services" => {
            field(
                &mut out,
                "Selector",
                printers::format_labels(o.pointer("/spec/selector")),
            );
            field(
                &mut out,
                "Type",
                match s(o, "/spec/type") {
                    "" => "ClusterIP",
                    t => t,
                },
            );
            field(&mut out, "IP", or_none(s(o, "/spec/clusterIP")));
            for p in o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let proto = match s(p, "/protocol") {
                    "" => "TCP",
                    x => x,
                };
                let name = match s(p, "/name") {
                    "" => "<unset>",
                    n => n,
                };
                field(
                    &mut out,
                    "Port",
                    format!(
                        "{name}  {}/{proto}",
                        p.get("port").and_then(Value::as_i64).unwrap_or(0)
                    ),
                );
                let tp = p.get("targetPort").map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                if let Some(tp) = tp {
                    field(&mut out, "TargetPort", format!("{tp}/{proto}"));
                }
            }
        }
        _ => {
            // Everything else: its content as YAML, indented.
            let mut body = o.clone();
            if let Some(m) = body.as_object_mut() {
                for k in ["apiVersion", "kind", "metadata"] {
                    m.remove(k);
                }
            }
            if body.as_object().is_some_and(|m| !m.is_empty()) {
                for line in printers::to_yaml(&body).lines() {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
    }
    if show_events {
        if events.is_empty() {
            field(&mut out, "Events", "<none>");
        } else {
            let _ = writeln!(out, "Events:");
            let mut t = printers::Table {
                headers: ["Type", "Reason", "Age", "From", "Message"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                rows: vec![["----", "------", "----", "----", "-------"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()],
            };
            for e in events {
                let from = match s(e, "/source/component") {
                    "" => s(e, "/reportingComponent"),
                    c => c,
                };
                let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
                let last = age(Some(&Value::String(last_seen(e).to_string())), now);
                let age_s = if count > 1 {
                    let first = age(e.pointer("/firstTimestamp"), now);
                    format!("{last} (x{count} over {first})")
                } else {
                    last
                };
                t.rows.push(vec![
                    s(e, "/type").to_string(),
                    s(e, "/reason").to_string(),
                    age_s,
                    from.to_string(),
                    s(e, "/message").trim().to_string(),
                ]);
            }
            for line in t.render(false).lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    out
}

fn or_none(v: &str) -> &str {
    if v.is_empty() {
        "<none>"
    } else {
        v
    }
}

fn describe_pod(out: &mut String, o: &Value) {
    field(out, "Node", or_none(s(o, "/spec/nodeName")));
    if !s(o, "/status/startTime").is_empty() {
        field(out, "Start Time", s(o, "/status/startTime"));
    }
    field(out, "Status", or_none(s(o, "/status/phase")));
    if !s(o, "/status/reason").is_empty() {
        field(out, "Reason", s(o, "/status/reason"));
    }
    if !s(o, "/status/message").is_empty() {
        field(out, "Message", s(o, "/status/message"));
    }
    field(out, "IP", or_none(s(o, "/status/podIP")));
    if let Some(owner) = o
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        field(
            out,
            "Controlled By",
            format!("{}/{}", s(owner, "/kind"), s(owner, "/name")),
        );
    }
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let _ = writeln!(out, "Containers:");
    for c in o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(c, "/name");
        let _ = writeln!(out, "  {name}:");
        let _ = writeln!(out, "    Image:          {}", s(c, "/image"));
        if let Some(st) = statuses.iter().find(|st| s(st, "/name") == name) {
            let state = st.get("state");
            let (label, detail) = match state {
                Some(v) if v.get("running").is_some() => (
                    "Running",
                    format!("Started: {}", s(v, "/running/startedAt")),
                ),
                Some(v) if v.get("waiting").is_some() => {
                    ("Waiting", format!("Reason: {}", s(v, "/waiting/reason")))
                }
                Some(v) if v.get("terminated").is_some() => (
                    "Terminated",
                    format!(
                        "Reason: {}, Exit Code: {}",
                        s(v, "/terminated/reason"),
                        v.pointer("/terminated/exitCode")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                    ),
                ),
                _ => ("Waiting", String::new()),
            };
            let _ = writeln!(out, "    State:          {label}");
            if !detail.is_empty() {
                let _ = writeln!(out, "      {detail}");
            }
            let _ = writeln!(
                out,
                "    Ready:          {}",
                if st.get("ready").and_then(Value::as_bool) == Some(true) {
                    "True"
                } else {
                    "False"
                }
            );
            let _ = writeln!(
                out,
                "    Restart Count:  {}",
                st.get("restartCount").and_then(Value::as_i64).unwrap_or(0)
            );
        }
        if let Some(r) = c
            .get("resources")
            .filter(|r| r.as_object().is_some_and(|m| !m.is_empty()))
        {
            for (k, title) in [("limits", "Limits"), ("requests", "Requests")] {
                if let Some(m) = r.get(k).and_then(Value::as_object) {
                    let _ = writeln!(out, "    {title}:");
                    for (rk, rv) in m {
                        let _ = writeln!(out, "      {rk}:  {}", rv.as_str().unwrap_or(""));
                    }
                }
            }
        }
    }
    conditions(out, o, false);
}

fn conditions(out: &mut String, o: &Value, with_reason: bool) {
    let conds = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if conds.is_empty() {
        return;
    }
    let _ = writeln!(out, "Conditions:");
    let mut t = printers::Table::default();
    if with_reason {
        t.headers = vec!["Type".into(), "Status".into(), "Reason".into()];
        t.rows
            .push(vec!["----".into(), "------".into(), "------".into()]);
    } else {
        t.headers = vec!["Type".into(), "Status".into()];
        t.rows.push(vec!["----".into(), "------".into()]);
    }
    for c in &conds {
        let mut r = vec![s(c, "/type").to_string(), s(c, "/status").to_string()];
        if with_reason {
            r.push(s(c, "/reason").to_string());
        }
        t.rows.push(r);
    }
    for line in t.render(false).lines() {
        let _ = writeln!(out, "  {line}");
    }
}

fn pod_template(out: &mut String, t: Option<&Value>) {
    let Some(t) = t else { return };
    let _ = writeln!(out, "Pod Template:");
    let labels = printers::format_labels(t.pointer("/metadata/labels"));
    let _ = writeln!(out, "  Labels:  {labels}");
    let _ = writeln!(out, "  Containers:");
    for c in t
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = writeln!(out, "   {}:", s(c, "/name"));
        let _ = writeln!(out, "    Image:      {}", s(c, "/image"));
        let ports: Vec<String> = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.get("containerPort").and_then(Value::as_i64).unwrap_or(0),
                    match s(p, "/protocol") {
                        "" => "TCP",
                        x => x,
                    }
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "    Port:       {}",
            if ports.is_empty() {
                "<none>".to_string()
            } else {
                ports.join(", ")
            }
        );
    }
}

fn describe_deployment(out: &mut String, o: &Value) {
    field(
        out,
        "Selector",
        format_label_selector(o.pointer("/spec/selector")),
    );
    let g = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    field(
        out,
        "Replicas",
        format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable",
            o.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1),
            g("/status/updatedReplicas"),
            g("/status/replicas"),
            g("/status/availableReplicas"),
            g("/status/unavailableReplicas"),
        ),
    );
    let strategy = match s(o, "/spec/strategy/type") {
        "" => "RollingUpdate",
        t => t,
    };
    field(out, "StrategyType", strategy);
    field(
        out,
        "MinReadySeconds",
        o.pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0),
    );
    if strategy == "RollingUpdate" {
        let ru = |k: &str| {
            o.pointer(&format!("/spec/strategy/rollingUpdate/{k}"))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_else(|| "25%".into())
        };
        field(
            out,
            "RollingUpdateStrategy",
            format!(
                "{} max unavailable, {} max surge",
                ru("maxUnavailable"),
                ru("maxSurge")
            ),
        );
    }
    if o.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        field(out, "Paused", "true");
    }
    pod_template(out, o.pointer("/spec/template"));
    conditions(out, o, true);
}

fn describe_node(out: &mut String, o: &Value) {
    let roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    field(
        out,
        "Roles",
        if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        },
    );
    let taints: Vec<String> = o
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            let v = s(t, "/value");
            if v.is_empty() {
                format!("{}:{}", s(t, "/key"), s(t, "/effect"))
            } else {
                format!("{}={v}:{}", s(t, "/key"), s(t, "/effect"))
            }
        })
        .collect();
    field(
        out,
        "Taints",
        if taints.is_empty() {
            "<none>".to_string()
        } else {
            taints.join(", ")
        },
    );
    field(
        out,
        "Unschedulable",
        o.pointer("/spec/unschedulable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    );
    conditions(out, o, true);
    let _ = writeln!(out, "Addresses:");
    for a in o
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = writeln!(out, "  {}:  {}", s(a, "/type"), s(a, "/address"));
    }
    for (key, title) in [("capacity", "Capacity"), ("allocatable", "Allocatable")] {
        if let Some(m) = o
            .pointer(&format!("/status/{key}"))
            .and_then(Value::as_object)
        {
            let _ = writeln!(out, "{title}:");
            for (k, v) in m {
                let _ = writeln!(out, "  {k}:  {}", v.as_str().unwrap_or(""));
            }
        }
    }
    if let Some(m) = o.pointer("/status/nodeInfo").and_then(Value::as_object) {
        let _ = writeln!(out, "System Info:");
        for (k, v) in m {
            let _ = writeln!(out, "  {k}:  {}", v.as_str().unwrap_or(""));
        }
    }
}
