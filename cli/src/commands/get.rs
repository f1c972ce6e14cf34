//! `kapsel get`.

use std::io::Write;

use anyhow::bail;
use clap::Args;
use futures::StreamExt;
use kapsel_api::client::ListParams;
use kapsel_api::WatchEventType;
use serde_json::Value;

use super::Ctx;
use crate::errors::{format_error, Reported};
use crate::printers::{self, OutputFormat, Table, TableOptions};
use crate::resources::{self, ResourceInfo};

#[derive(Debug, Args)]
pub struct GetArgs {
    /// TYPE[,TYPE…] [NAME…] or TYPE/NAME…
    #[arg(required = true, value_name = "TYPE[.GROUP] [NAME]")]
    pub args: Vec<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector (`app=web,tier!=db`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector (`metadata.name=x`, `spec.nodeName=n1`, `status.phase=Running`).
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Output format: wide, yaml, json, name, jsonpath=TEMPLATE.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Watch for changes after listing.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Watch for changes without listing first.
    #[arg(long)]
    pub watch_only: bool,
    /// Show all labels as the last column.
    #[arg(long)]
    pub show_labels: bool,
    /// Do not print headers.
    #[arg(long)]
    pub no_headers: bool,
    /// Treat "not found" for named objects as success.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Page size of list requests.
    #[arg(long, default_value_t = 500)]
    pub chunk_size: u32,
}

pub async fn run(ctx: &Ctx, a: GetArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let sel = resources::parse_selection(&a.args)?;
    let format = OutputFormat::parse(a.output.as_deref().unwrap_or(""))?;
    let any_names = sel.groups.iter().any(|(_, n)| !n.is_empty());
    if any_names && a.selector.is_some() {
        bail!("name cannot be provided when a selector is specified");
    }
    if a.watch || a.watch_only {
        if sel.groups.len() != 1 {
            bail!("you may only specify a single resource type when watching");
        }
        let (info, names) = &sel.groups[0];
        return watch(ctx, &a, info, names, &format, out).await;
    }
    let multi = sel.groups.len() > 1;
    let mut errors = 0;
    let mut objects: Vec<(ResourceInfo, Value)> = Vec::new();
    let mut first_table = true;
    let mut list_ns_scoped = true;
    for (info, names) in &sel.groups {
        let all_ns = a.all_namespaces && info.namespaced;
        if all_ns || !info.namespaced {
            list_ns_scoped = false;
        }
        let api = ctx.api(info, all_ns);
        let mut items = Vec::new();
        if names.is_empty() {
            let mut lp = ListParams {
                label_selector: a.selector.clone(),
                field_selector: a.field_selector.clone(),
                limit: Some(a.chunk_size).filter(|c| *c > 0),
                ..Default::default()
            };
            loop {
                let list = api.list(&lp).await?;
                items.extend(list.items);
                match list.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(c) => lp.continue_token = Some(c),
                    None => break,
                }
            }
        } else {
            for n in names {
                match api.get(n).await {
                    Ok(o) => items.push(o),
                    Err(e) if e.is_not_found() && a.ignore_not_found => {}
                    Err(e) => {
                        eprintln!("{}", format_error(&e.into()));
                        errors += 1;
                    }
                }
            }
        }
        if format.is_table() {
            if items.is_empty() {
                continue;
            }
            let opts = TableOptions {
                wide: format == OutputFormat::Wide,
                with_namespace: all_ns,
                show_labels: a.show_labels,
                with_kind: multi,
                no_headers: a.no_headers,
                ..Default::default()
            };
            let mut t = Table::new(info, &opts);
            for o in &items {
                t.add(info, o, &opts);
            }
            if !first_table {
                writeln!(out)?;
            }
            first_table = false;
            out.write_all(t.render(a.no_headers).as_bytes())?;
        } else {
            objects.extend(items.into_iter().map(|o| (info.clone(), o)));
        }
    }
    if format.is_table() {
        if first_table && !any_names {
            if list_ns_scoped {
                eprintln!("No resources found in {} namespace.", ctx.namespace);
            } else {
                eprintln!("No resources found");
            }
        }
    } else {
        let single = sel.groups.len() == 1 && sel.groups[0].1.len() == 1;
        if !(single && objects.is_empty()) {
            printers::print_structured(out, &format, &objects, single)?;
        }
    }
    out.flush()?;
    if errors > 0 {
        return Err(Reported(errors).into());
    }
    Ok(())
}

async fn watch(
    ctx: &Ctx,
    a: &GetArgs,
    info: &ResourceInfo,
    names: &[String],
    format: &OutputFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if names.len() > 1 {
        bail!("watch is only supported on individual resources and resource collections, but {} resources were found", names.len());
    }
    let all_ns = a.all_namespaces && info.namespaced;
    let api = ctx.api(info, all_ns);
    let field_selector = match (names.first(), &a.field_selector) {
        (Some(n), Some(f)) => Some(format!("metadata.name={n},{f}")),
        (Some(n), None) => Some(format!("metadata.name={n}")),
        (None, f) => f.clone(),
    };
    let lp = ListParams {
        label_selector: a.selector.clone(),
        field_selector,
        ..Default::default()
    };
    let opts = TableOptions {
        wide: *format == OutputFormat::Wide,
        with_namespace: all_ns,
        show_labels: a.show_labels,
        with_kind: false,
        no_headers: a.no_headers,
        ..Default::default()
    };
    let mut table = Table::new(info, &opts);
    let mut rv = String::new();
    let mut printed_header = false;
    if !a.watch_only {
        let list = api.list(&lp).await?;
        rv = list.metadata.resource_version.clone().unwrap_or_default();
        if format.is_table() {
            for o in &list.items {
                table.add(info, o, &opts);
            }
            if !list.items.is_empty() {
                out.write_all(table.render(a.no_headers).as_bytes())?;
                printed_header = true;
            }
        } else {
            for o in list.items {
                print_one(out, format, info, o)?;
            }
        }
        out.flush()?;
    }
    let mut widths = table.widths(!a.no_headers);
    let mut stream = api.watch(&lp, &rv).await?;
    while let Some(ev) = stream.next().await {
        let ev = ev?;
        if ev.type_ == WatchEventType::Bookmark {
            continue;
        }
        let mut o = ev.object;
        if format.is_table() {
            // kubectl prints the header with the first row when the list was empty.
            let mut opts = opts.clone();
            opts.now = chrono::Utc::now();
            if ev.type_ == WatchEventType::Deleted && info.plural == "pods" {
                // Keep the last state; kubectl prints deleted objects as normal rows.
            }
            let row = printers::row(info, &o, &opts);
            if !printed_header && !a.no_headers {
                let mut t = Table::new(info, &opts);
                t.rows.push(row.clone());
                widths = t.widths(true);
                out.write_all(printers::render_row(&t.headers, &widths).as_bytes())?;
                printed_header = true;
            }
            for (i, c) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
            out.write_all(printers::render_row(&row, &widths).as_bytes())?;
        } else {
            o = printers::with_type_meta(o, info);
            print_one(out, format, info, o)?;
        }
        out.flush()?;
    }
    Ok(())
}

fn print_one(
    out: &mut dyn Write,
    format: &OutputFormat,
    info: &ResourceInfo,
    o: Value,
) -> anyhow::Result<()> {
    let o = printers::with_type_meta(o, info);
    match format {
        OutputFormat::Yaml => {
            out.write_all(b"---\n")?;
            out.write_all(printers::to_yaml(&o).as_bytes())?;
        }
        OutputFormat::Json => out.write_all(printers::to_json(&o).as_bytes())?,
        OutputFormat::Name => writeln!(out, "{}", printers::name_of(info, &o))?,
        OutputFormat::JsonPath(jp) => out.write_all(jp.render(&o)?.as_bytes())?,
        OutputFormat::Table | OutputFormat::Wide => {}
    }
    Ok(())
}
