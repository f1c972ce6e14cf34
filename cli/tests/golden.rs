//! Golden output of `get` for every kind in table, wide, yaml, json and name formats, printed by
//! the same code the binary uses, with a fixed clock. Regenerate with `UPDATE_GOLDEN=1`.

use chrono::{TimeZone, Utc};
use kapsel_cli::printers::{self, OutputFormat, Table, TableOptions};
use kapsel_cli::resources;
use serde_json::{json, Value};

fn fixtures() -> Vec<(&'static str, Vec<Value>)> {
    let meta = |name: &str, ns: Option<&str>, age_s: &str| {
        let mut m = json!({"name": name, "creationTimestamp": age_s, "uid": format!("uid-{name}"),
            "resourceVersion": "42", "labels": {"app": "web"}});
        if let Some(ns) = ns {
            m["namespace"] = json!(ns);
        }
        m
    };
    vec![
        (
            "pods",
            vec![
                json!({"metadata": meta("web-7d4b9-abcde", Some("default"), "2024-05-01T11:55:00Z"),
                "spec": {"nodeName": "node-1", "containers": [{"name": "nginx", "image": "nginx:1.25"}]},
                "status": {"phase": "Running", "podIP": "10.42.0.7", "containerStatuses": [
                    {"name": "nginx", "ready": true, "restartCount": 0, "image": "nginx:1.25", "imageID": "", "state": {"running": {"startedAt": "2024-05-01T11:55:03Z"}}}]}}),
                json!({"metadata": meta("batch-1", Some("default"), "2024-04-29T09:00:00Z"),
                "spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]},
                "status": {"phase": "Pending"}}),
            ],
        ),
        (
            "deployments",
            vec![
                json!({"metadata": meta("web", Some("default"), "2024-05-01T11:00:00Z"),
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}}},
            "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}}),
            ],
        ),
        (
            "replicasets",
            vec![
                json!({"metadata": meta("web-7d4b9", Some("default"), "2024-05-01T11:00:00Z"),
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7d4b9"}},
                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2}}),
            ],
        ),
        (
            "nodes",
            vec![
                json!({"metadata": {"name": "node-1", "creationTimestamp": "2024-04-01T12:00:00Z",
                "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v0.1.0", "osImage": "Debian GNU/Linux 13", "kernelVersion": "6.12.0", "containerRuntimeVersion": "kapsel://0.1.0"}}}),
            ],
        ),
        (
            "services",
            vec![
                json!({"metadata": meta("web", Some("default"), "2024-05-01T10:00:00Z"),
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.10", "selector": {"app": "web"},
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 443}]}}),
            ],
        ),
        (
            "namespaces",
            vec![
                json!({"metadata": {"name": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Active"}}),
            ],
        ),
        (
            "configmaps",
            vec![
                json!({"metadata": meta("settings", Some("default"), "2024-05-01T11:59:55Z"),
            "data": {"a": "1", "b": "2"}}),
            ],
        ),
        (
            "secrets",
            vec![
                json!({"metadata": meta("creds", Some("default"), "2024-05-01T11:30:00Z"),
            "type": "Opaque", "data": {"password": "cw=="}}),
            ],
        ),
        (
            "endpoints",
            vec![
                json!({"metadata": meta("web", Some("default"), "2024-05-01T10:00:00Z"),
            "subsets": [{"addresses": [{"ip": "10.42.0.7"}, {"ip": "10.42.0.8"}, {"ip": "10.42.0.9"}, {"ip": "10.42.1.2"}],
                "ports": [{"port": 80}]}]}),
            ],
        ),
        (
            "events",
            vec![
                json!({"metadata": meta("web.17a", Some("default"), "2024-05-01T11:58:00Z"),
            "involvedObject": {"kind": "Pod", "name": "web-7d4b9-abcde", "namespace": "default"},
            "reason": "Scheduled", "message": "Successfully assigned default/web-7d4b9-abcde to node-1",
            "type": "Normal", "source": {"component": "kapsel-scheduler"}, "count": 1,
            "firstTimestamp": "2024-05-01T11:58:00Z", "lastTimestamp": "2024-05-01T11:58:00Z"}),
            ],
        ),
        (
            "resourcequotas",
            vec![
                json!({"metadata": meta("compute", Some("default"), "2024-04-30T12:00:00Z"),
            "spec": {"hard": {"pods": "10", "limits.cpu": "4"}},
            "status": {"hard": {"pods": "10", "limits.cpu": "4"}, "used": {"pods": "2", "limits.cpu": "500m"}}}),
            ],
        ),
        (
            "limitranges",
            vec![
                json!({"metadata": meta("defaults", Some("default"), "2024-04-30T12:00:00Z"),
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}}),
            ],
        ),
        (
            "leases",
            vec![
                json!({"metadata": meta("node-1", Some("kube-node-lease"), "2024-05-01T11:00:00Z"),
            "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}}),
            ],
        ),
    ]
}

fn render(plural: &str, objects: &[Value], format: &str) -> String {
    let info = resources::lookup(plural).unwrap();
    let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    let fmt = OutputFormat::parse(format).unwrap();
    if fmt.is_table() {
        let opts = TableOptions {
            wide: fmt == OutputFormat::Wide,
            now,
            ..Default::default()
        };
        let mut t = Table::new(&info, &opts);
        for o in objects {
            t.add(&info, o, &opts);
        }
        return t.render(false);
    }
    let mut buf = Vec::new();
    let objs: Vec<_> = objects.iter().map(|o| (info.clone(), o.clone())).collect();
    printers::print_structured(&mut buf, &fmt, &objs, false).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn golden_get_output_for_every_kind_and_format() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (plural, objs) in fixtures() {
        for (format, ext) in [
            ("", "table"),
            ("wide", "wide"),
            ("yaml", "yaml"),
            ("json", "json"),
            ("name", "name"),
        ] {
            let got = render(plural, &objs, format);
            let path = dir.join(format!("{plural}.{ext}"));
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(want) if want == got => {}
                Ok(want) => failures.push(format!(
                    "{}:\n--- want\n{want}--- got\n{got}",
                    path.display()
                )),
                Err(e) => failures.push(format!(
                    "{}: {e} (run with UPDATE_GOLDEN=1)",
                    path.display()
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn several_kinds_print_type_prefixed_names() {
    let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    let info = resources::lookup("deploy").unwrap();
    let opts = TableOptions {
        with_kind: true,
        with_namespace: true,
        show_labels: true,
        now,
        ..Default::default()
    };
    let mut t = Table::new(&info, &opts);
    t.add(&info, &fixtures()[1].1[0], &opts);
    assert_eq!(
        t.render(false),
        "NAMESPACE   NAME                  READY   UP-TO-DATE   AVAILABLE   AGE   LABELS\n\
         default     deployment.apps/web   2/3     3            2           60m   app=web\n"
    );
}
