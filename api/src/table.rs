//! The table columns of every kind, as Kubernetes' server-side printers define them: one
//! definition shared by the API server (the `meta.k8s.io/v1 Table` that kubectl asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) and `kapsel get`, so both print the same.
//!
//! [`columns`] lists a kind's columns with their `priority` (1: only with `-o wide`), [`cells`]
//! renders one object's cells for all of them (Age as kubectl's human duration).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// One column, as `metav1.TableColumnDefinition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// As Kubernetes names it (`Up-to-date`); kubectl prints it upper-cased.
    pub name: &'static str,
    /// `string`, `integer` or `date`.
    pub type_: &'static str,
    /// `name` for the object's name column, else empty.
    pub format: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: u8,
    pub description: &'static str,
}

const fn col(
    name: &'static str,
    type_: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        priority,
        description,
    }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    priority: 0,
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
};
const AGE: Column = col(
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.",
);
const CREATED_AT: Column = Column {
    name: "Created At",
    type_: "date",
    format: "",
    priority: 0,
    description: AGE.description,
};
const CONTAINERS: Column = col(
    "Containers",
    "string",
    1,
    "Names of each container in the template.",
);
const IMAGES: Column = col(
    "Images",
    "string",
    1,
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = col("Selector", "string", 1, "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.");

const PODS: &[Column] = &[
    NAME,
    col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", 0, "The aggregate status of the containers in this pod."),
    col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    col("IP", "string", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
    col("Node", "string", 1, "NodeName is a request to schedule this pod onto a specific node."),
    col("Nominated Node", "string", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
    col("Readiness Gates", "string", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
];
const DEPLOYMENTS: &[Column] = &[
    NAME,
    col("Ready", "string", 0, "Number of the pod with ready state"),
    col("Up-to-date", "integer", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
    col("Available", "integer", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const REPLICASETS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        0,
        "Replicas is the number of desired replicas.",
    ),
    col(
        "Current",
        "integer",
        0,
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        0,
        "The number of ready replicas for this replica set.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const NODES: &[Column] = &[
    NAME,
    col("Status", "string", 0, "The status of the node"),
    col("Roles", "string", 0, "The roles of the node"),
    AGE,
    col("Version", "string", 0, "Kubelet Version reported by the node."),
    col("Internal-IP", "string", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."),
    col("External-IP", "string", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."),
    col("OS-Image", "string", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    col("Kernel-Version", "string", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    col("Container-Runtime", "string", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
];
const SERVICES: &[Column] = &[
    NAME,
    col("Type", "string", 0, "type determines how the Service is exposed."),
    col("Cluster-IP", "string", 0, "clusterIP is the IP address of the service and is usually assigned randomly."),
    col("External-IP", "string", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
    col("Port(s)", "string", 0, "The list of ports that are exposed by this service."),
    AGE,
    col("Selector", "string", 1, "Route service traffic to pods with label keys and values matching this selector."),
];
const NAMESPACES: &[Column] = &[
    NAME,
    col("Status", "string", 0, "The status of the namespace"),
    AGE,
];
const CONFIGMAPS: &[Column] = &[
    NAME,
    col(
        "Data",
        "integer",
        0,
        "Data contains the configuration data.",
    ),
    AGE,
];
const SECRETS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        0,
        "Used to facilitate programmatic handling of secret data.",
    ),
    col("Data", "integer", 0, "Data contains the secret data."),
    AGE,
];
const ENDPOINTS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        0,
        "Endpoints is the list of endpoints.",
    ),
    AGE,
];
const EVENTS: &[Column] = &[
    col("Last Seen", "string", 0, "The time at which the most recent occurrence of this event was recorded."),
    col("Type", "string", 0, "Type of this event (Normal, Warning), new types could be added in the future."),
    col("Reason", "string", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    col("Object", "string", 0, "The object that this event is about."),
    col("Subobject", "string", 1, "The subobject (a field path) that this event is about."),
    col("Source", "string", 1, "The component reporting this event."),
    col("Message", "string", 0, "A human-readable description of the status of this operation."),
    col("First Seen", "string", 1, "The time at which the event was first recorded."),
    col("Count", "integer", 1, "The number of times this event has occurred."),
    Column { priority: 1, ..NAME },
];
const RESOURCEQUOTAS: &[Column] = &[
    NAME,
    AGE,
    col("Request", "string", 0, "Request represents a minimum amount of cpu/memory that a container may consume."),
    col("Limit", "string", 0, "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
];
const LEASES: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        0,
        "HolderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];
const IMAGEPROFILES: &[Column] = &[
    NAME,
    col("Image", "string", 0, "The images the profile applies to."),
    col(
        "Executables",
        "string",
        0,
        "The files containers may execute (<all>: not restricted).",
    ),
    col(
        "ReadOnlyRoot",
        "boolean",
        1,
        "Whether the root filesystem is mounted read-only.",
    ),
    AGE,
];
const NAME_CREATED: &[Column] = &[NAME, CREATED_AT];
const NAME_AGE: &[Column] = &[NAME, AGE];

/// The columns of resource `plural` (all of them, wide ones with priority 1).
pub fn columns(plural: &str) -> &'static [Column] {
    match plural {
        "pods" => PODS,
        "deployments" => DEPLOYMENTS,
        "replicasets" => REPLICASETS,
        "nodes" => NODES,
        "services" => SERVICES,
        "namespaces" => NAMESPACES,
        "configmaps" => CONFIGMAPS,
        "secrets" => SECRETS,
        "endpoints" => ENDPOINTS,
        "events" => EVENTS,
        "resourcequotas" => RESOURCEQUOTAS,
        "leases" => LEASES,
        "imageprofiles" => IMAGEPROFILES,
        "limitranges" | "roles" | "clusterroles" => NAME_CREATED,
        _ => NAME_AGE,
    }
}

/// The header kubectl prints for a column: its name upper-cased.
pub fn header(c: &Column) -> String {
    c.name.to_uppercase()
}

/// The cells of `o` (a resource `plural` object) for every column of [`columns`], as kubectl
/// prints them; `now` is the reference for ages.
pub fn cells(plural: &str, o: &Value, now: DateTime<Utc>) -> Vec<String> {
    let name = s(o, "/metadata/name").to_string();
    let created = o.pointer("/metadata/creationTimestamp");
    let age_ = age(created, now);
    match plural {
        "pods" => pod_cells(o, name, age_, now),
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
            c.extend(template_wide(o));
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
            c.extend(template_wide(o));
            c
        }
        "nodes" => {
            let addr = |t: &str| {
                arr(o, "/status/addresses")
                    .iter()
                    .find(|a| s(a, "/type") == t)
                    .map(|a| s(a, "/address").to_string())
                    .unwrap_or_else(|| "<none>".into())
            };
            vec![
                name,
                node_status(o),
                node_roles(o),
                age_,
                s(o, "/status/nodeInfo/kubeletVersion").to_string(),
                addr("InternalIP"),
                addr("ExternalIP"),
                or_unknown(s(o, "/status/nodeInfo/osImage")),
                or_unknown(s(o, "/status/nodeInfo/kernelVersion")),
                or_unknown(s(o, "/status/nodeInfo/containerRuntimeVersion")),
            ]
        }
        "services" => {
            let ty = match s(o, "/spec/type") {
                "" => "ClusterIP",
                t => t,
            };
            vec![
                name,
                ty.to_string(),
                or_none(s(o, "/spec/clusterIP")),
                service_external_ip(o, ty),
                service_ports(o),
                age_,
                format_labels(o.pointer("/spec/selector")),
            ]
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
        "events" => event_cells(o, now),
        "resourcequotas" => {
            let (req, lim) = quota_usage(o);
            vec![name, age_, req, lim]
        }
        "leases" => vec![name, s(o, "/spec/holderIdentity").to_string(), age_],
        "imageprofiles" => {
            let exe = match o
                .pointer("/spec/allowedExecutables")
                .and_then(Value::as_array)
            {
                Some(l) => l
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                None => "<all>".to_string(),
            };
            let ro = o
                .pointer("/spec/readOnlyRootFilesystem")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            vec![
                name,
                s(o, "/spec/image").to_string(),
                exe,
                ro.to_string(),
                age_,
            ]
        }
        "limitranges" | "roles" | "clusterroles" => {
            vec![name, s(o, "/metadata/creationTimestamp").to_string()]
        }
        _ => vec![name, age_],
    }
}

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
fn pod_cells(o: &Value, name: String, age_: String, now: DateTime<Utc>) -> Vec<String> {
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
    c.push(or_none(s(o, "/status/podIP")));
    c.push(or_none(s(o, "/spec/nodeName")));
    c.push(or_none(s(o, "/status/nominatedNodeName")));
    {
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

fn event_cells(o: &Value, now: DateTime<Utc>) -> Vec<String> {
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
    {
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
    fn every_kind_has_one_cell_per_column() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 10, 0).unwrap();
        let o = serde_json::json!({"metadata": {"name": "x", "creationTimestamp": "2024-01-01T00:00:00Z"}});
        for plural in [
            "pods",
            "deployments",
            "replicasets",
            "nodes",
            "services",
            "namespaces",
            "configmaps",
            "secrets",
            "endpoints",
            "events",
            "resourcequotas",
            "leases",
            "imageprofiles",
            "limitranges",
            "roles",
            "widgets",
        ] {
            assert_eq!(
                cells(plural, &o, now).len(),
                columns(plural).len(),
                "{plural}"
            );
        }
        assert_eq!(cells("configmaps", &o, now), vec!["x", "0", "10m"]);
    }

    #[test]
    fn pod_status_logic() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 10, 0).unwrap();
        let pod = serde_json::json!({
            "metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T00:05:00Z"}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        assert_eq!(
            cells("pods", &pod, now),
            vec![
                "p",
                "1/2",
                "CrashLoopBackOff",
                "2 (5m ago)",
                "10m",
                "10.0.0.5",
                "n1",
                "<none>",
                "<none>"
            ]
        );
        let mut terminating = pod.clone();
        terminating["metadata"]["deletionTimestamp"] = "2024-01-01T00:09:00Z".into();
        assert_eq!(cells("pods", &terminating, now)[2], "Terminating");
    }

    #[test]
    fn deployment_columns_and_wide_cells() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 24).unwrap();
        let d = serde_json::json!({
            "metadata": {"name": "nginx", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "nginx"}},
                     "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
        });
        let names: Vec<String> = columns("deployments").iter().map(header).collect();
        assert_eq!(
            names,
            [
                "NAME",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR"
            ]
        );
        let wide: Vec<u8> = columns("deployments").iter().map(|c| c.priority).collect();
        assert_eq!(wide, [0, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(
            cells("deployments", &d, now),
            [
                "nginx",
                "2/2",
                "2",
                "2",
                "24s",
                "nginx",
                "nginx:1.25",
                "app=nginx"
            ]
        );
    }
}
