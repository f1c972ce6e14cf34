//! Pod and pod template rules (`ValidatePodSpec`, `ValidatePodUpdate`) and pod defaults.

use std::collections::{BTreeMap, BTreeSet};

use super::field::*;
use super::meta::*;
use super::names::*;
use super::ErrorList;
use crate::core::*;
use crate::meta::IntOrString;

pub const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
pub const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
pub const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
pub const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
pub const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
pub const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];

/// Native container resources (`cpu`, `memory`, `ephemeral-storage`, `hugepages-*`).
pub fn is_standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

/// `IsNativeResource`: no domain prefix, or a `kubernetes.io/` one.
pub fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// `IsExtendedResourceName`: `example.com/gpu`-style resources (integers, no overcommit).
pub fn is_extended_resource(name: &str) -> bool {
    !is_native_resource(name) && !name.starts_with("requests.")
}

/// `ValidateResourceQuantityValue` plus syntax: the quantity parses, is non-negative, and is an
/// integer for integer resources. `integer` says whether the resource counts whole units.
pub fn validate_quantity(q: &crate::Quantity, integer: bool, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    match q.parse() {
        Err(e) => errs.push(invalid(path, q.as_str(), e.to_string())),
        Ok(v) => {
            if v.is_negative() {
                errs.push(invalid(path, v.to_string().as_str(), IS_NEGATIVE_ERROR_MSG));
            }
            if integer && v.nanos() % 1_000_000_000 != 0 {
                errs.push(invalid(path, v.to_string().as_str(), "must be an integer"));
            }
        }
    }
    errs
}

fn validate_container_resource_name(name: &str, path: &str) -> ErrorList {
    let mut errs: ErrorList = qualified_name_errors(name)
        .into_iter()
        .map(|m| invalid(path, name, m))
        .collect();
    if errs.is_empty() && !name.contains('/') && !is_standard_container_resource(name) {
        errs.push(invalid(
            path,
            name,
            "must be a standard resource for containers",
        ));
    }
    errs
}

/// `ValidateContainerResourceRequirements` (resource list paths as `resources.limits.memory`).
pub fn validate_resource_requirements(r: &ResourceRequirements, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    let lim_path = child(path, "limits");
    let req_path = child(path, "requests");
    for (name, q) in &r.limits {
        let p = child(&lim_path, name);
        errs.extend(validate_container_resource_name(name, &p));
        errs.extend(validate_quantity(q, is_extended_resource(name), &p));
    }
    for (name, q) in &r.requests {
        let p = child(&req_path, name);
        errs.extend(validate_container_resource_name(name, &p));
        errs.extend(validate_quantity(q, is_extended_resource(name), &p));
        let overcommit = !is_extended_resource(name) && !name.starts_with("hugepages-");
        match r.limits.get(name) {
            Some(limit) => {
                if let (Ok(rv), Ok(lv)) = (q.parse(), limit.parse()) {
                    if rv != lv && !overcommit {
                        errs.push(invalid(
                            &p,
                            &rv.to_string(),
                            format!("must be equal to {name} limit of {lv}"),
                        ));
                    } else if rv > lv {
                        errs.push(invalid(
                            &p,
                            &rv.to_string(),
                            format!("must be less than or equal to {name} limit of {lv}"),
                        ));
                    }
                }
            }
            None if !overcommit => errs.push(required(
                &lim_path,
                "Limit must be set for non overcommitable resources",
            )),
            None => {}
        }
    }
    errs
}

/// `ValidatePortNumOrName`.
pub fn validate_port_num_or_name(port: &IntOrString, path: &str) -> ErrorList {
    match port {
        IntOrString::Int(n) => port_num_errors(*n as i64)
            .into_iter()
            .map(|m| invalid_raw(path, n, m))
            .collect(),
        IntOrString::String(s) => port_name_errors(s)
            .into_iter()
            .map(|m| invalid(path, s, m))
            .collect(),
    }
}

fn validate_exec(e: &ExecAction, path: &str) -> ErrorList {
    if e.command.is_empty() {
        vec![required(child(path, "command"), "")]
    } else {
        Vec::new()
    }
}

fn validate_http_get(h: &HttpGetAction, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    if h.path.as_deref() == Some("") {
        errs.push(required(child(path, "path"), ""));
    }
    errs.extend(validate_port_num_or_name(&h.port, &child(path, "port")));
    if let Some(s) = &h.scheme {
        if s != "HTTP" && s != "HTTPS" {
            errs.push(not_supported(child(path, "scheme"), s, &["HTTP", "HTTPS"]));
        }
    }
    for (i, hdr) in h.http_headers.iter().enumerate() {
        if hdr.name.is_empty()
            || !hdr
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
        {
            errs.push(invalid(
                child(&index(&child(path, "httpHeaders"), i), "name"),
                &hdr.name,
                "a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
            ));
        }
    }
    errs
}

fn validate_tcp(t: &TcpSocketAction, path: &str) -> ErrorList {
    validate_port_num_or_name(&t.port, &child(path, "port"))
}

/// `validateHandler`: exactly one of exec, httpGet, tcpSocket.
fn validate_handler(
    exec: Option<&ExecAction>,
    http: Option<&HttpGetAction>,
    tcp: Option<&TcpSocketAction>,
    path: &str,
) -> ErrorList {
    let mut errs = Vec::new();
    let mut n = 0;
    if let Some(e) = exec {
        n += 1;
        errs.extend(validate_exec(e, &child(path, "exec")));
    }
    if let Some(h) = http {
        if n > 0 {
            errs.push(forbidden(
                child(path, "httpGet"),
                "may not specify more than 1 handler type",
            ));
        } else {
            errs.extend(validate_http_get(h, &child(path, "httpGet")));
        }
        n += 1;
    }
    if let Some(t) = tcp {
        if n > 0 {
            errs.push(forbidden(
                child(path, "tcpSocket"),
                "may not specify more than 1 handler type",
            ));
        } else {
            errs.extend(validate_tcp(t, &child(path, "tcpSocket")));
        }
        n += 1;
    }
    if n == 0 {
        errs.push(required(path, "must specify a handler type"));
    }
    errs
}

fn validate_probe(p: &Probe, path: &str, success_must_be_one: bool) -> ErrorList {
    let mut errs = validate_handler(
        p.exec.as_ref(),
        p.http_get.as_ref(),
        p.tcp_socket.as_ref(),
        path,
    );
    if let Some(v) = p.initial_delay_seconds {
        errs.extend(nonnegative(child(path, "initialDelaySeconds"), v as i64));
    }
    for (name, v) in [
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(v) = v {
            if v < 1 {
                errs.push(invalid_raw(
                    child(path, name),
                    v,
                    "must be greater than or equal to 1",
                ));
            }
        }
    }
    if success_must_be_one {
        if let Some(v) = p.success_threshold {
            if v > 1 {
                errs.push(invalid_raw(child(path, "successThreshold"), v, "must be 1"));
            }
        }
    }
    if let Some(v) = p.termination_grace_period_seconds {
        if v <= 0 {
            errs.push(invalid_raw(
                child(path, "terminationGracePeriodSeconds"),
                v,
                IS_NOT_POSITIVE_ERROR_MSG,
            ));
        }
    }
    errs
}

fn validate_env(env: &[EnvVar], path: &str) -> ErrorList {
    let mut errs = Vec::new();
    for (i, ev) in env.iter().enumerate() {
        let p = index(path, i);
        if ev.name.is_empty() {
            errs.push(required(child(&p, "name"), ""));
        } else {
            for m in env_var_name_errors(&ev.name) {
                errs.push(invalid(child(&p, "name"), &ev.name, m));
            }
        }
        if let Some(from) = &ev.value_from {
            let vp = child(&p, "valueFrom");
            let mut n = 0;
            if let Some(f) = &from.field_ref {
                n += 1;
                if f.field_path.is_empty() {
                    errs.push(required(child(&child(&vp, "fieldRef"), "fieldPath"), ""));
                }
            }
            if let Some(r) = &from.resource_field_ref {
                n += 1;
                if r.resource.is_empty() {
                    errs.push(required(
                        child(&child(&vp, "resourceFieldRef"), "resource"),
                        "",
                    ));
                }
            }
            for (name, k) in [
                ("configMapKeyRef", &from.config_map_key_ref),
                ("secretKeyRef", &from.secret_key_ref),
            ] {
                if let Some(k) = k {
                    n += 1;
                    let kp = child(&vp, name);
                    if k.name.as_deref().unwrap_or("").is_empty() {
                        errs.push(required(child(&kp, "name"), ""));
                    }
                    if k.key.is_empty() {
                        errs.push(required(child(&kp, "key"), ""));
                    } else {
                        for m in config_map_key_errors(&k.key) {
                            errs.push(invalid(child(&kp, "key"), &k.key, m));
                        }
                    }
                }
            }
            if n == 0 {
                errs.push(invalid(
                    &vp,
                    "",
                    "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
                ));
            } else if n > 1 {
                errs.push(invalid(
                    &vp,
                    "",
                    "may not have more than one field specified at a time",
                ));
            } else if ev.value.as_deref().is_some_and(|v| !v.is_empty()) {
                errs.push(invalid(
                    &vp,
                    "",
                    "may not be specified when `value` is not empty",
                ));
            }
        }
    }
    errs
}

fn validate_ports(ports: &[ContainerPort], path: &str) -> ErrorList {
    let mut errs = Vec::new();
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index(path, i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = port_name_errors(name);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(invalid(child(&p, "name"), name, m));
                }
            } else if !names.insert(name) {
                errs.push(duplicate(child(&p, "name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(required(child(&p, "containerPort"), ""));
        } else {
            for m in port_num_errors(port.container_port as i64) {
                errs.push(invalid_raw(
                    child(&p, "containerPort"),
                    port.container_port,
                    m,
                ));
            }
        }
        if let Some(hp) = port.host_port.filter(|h| *h != 0) {
            for m in port_num_errors(hp as i64) {
                errs.push(invalid_raw(child(&p, "hostPort"), hp, m));
            }
        }
        let proto = port.protocol.as_deref().unwrap_or("TCP");
        if proto.is_empty() {
            errs.push(required(child(&p, "protocol"), ""));
        } else if !PROTOCOLS.contains(&proto) {
            errs.push(not_supported(child(&p, "protocol"), proto, PROTOCOLS));
        }
        if port.container_port != 0 && !seen.insert((port.container_port, proto.to_string())) {
            errs.push(duplicate(&p, &format!("{}/{}", port.container_port, proto)));
        }
        if let Some(ip) = port.host_ip.as_deref().filter(|s| !s.is_empty()) {
            if !is_ip(ip) {
                errs.push(invalid(
                    child(&p, "hostIP"),
                    ip,
                    "must be a valid IP address",
                ));
            }
        }
    }
    errs
}

fn validate_volume_mounts(
    mounts: &[VolumeMount],
    volumes: &BTreeSet<&str>,
    path: &str,
) -> ErrorList {
    let mut errs = Vec::new();
    let mut points = BTreeSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = index(path, i);
        if m.name.is_empty() {
            errs.push(required(child(&p, "name"), ""));
        } else if !volumes.contains(m.name.as_str()) {
            errs.push(not_found(child(&p, "name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(required(child(&p, "mountPath"), ""));
        } else if !points.insert(m.mount_path.as_str()) {
            errs.push(invalid(
                child(&p, "mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
        if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sp.starts_with('/') {
                errs.push(invalid(child(&p, "subPath"), sp, "must be a relative path"));
            } else if sp.split('/').any(|s| s == "..") {
                errs.push(invalid(child(&p, "subPath"), sp, "must not contain '..'"));
            }
        }
        if let Some(mp) = &m.mount_propagation {
            const MP: &[&str] = &["None", "HostToContainer", "Bidirectional"];
            if !MP.contains(&mp.as_str()) {
                errs.push(not_supported(child(&p, "mountPropagation"), mp, MP));
            }
        }
    }
    errs
}

fn validate_container(
    c: &Container,
    volumes: &BTreeSet<&str>,
    init: bool,
    path: &str,
) -> ErrorList {
    let mut errs = Vec::new();
    match c.image.as_deref() {
        None | Some("") => errs.push(required(child(path, "image"), "")),
        Some(img) if img.trim() != img => errs.push(invalid(
            child(path, "image"),
            img,
            "must not have leading or trailing whitespace",
        )),
        _ => {}
    }
    if let Some(pp) = &c.image_pull_policy {
        if !PULL_POLICIES.contains(&pp.as_str()) {
            errs.push(not_supported(
                child(path, "imagePullPolicy"),
                pp,
                PULL_POLICIES,
            ));
        }
    }
    if let Some(tp) = &c.termination_message_policy {
        if !TERMINATION_MESSAGE_POLICIES.contains(&tp.as_str()) {
            errs.push(not_supported(
                child(path, "terminationMessagePolicy"),
                tp,
                TERMINATION_MESSAGE_POLICIES,
            ));
        }
    }
    errs.extend(validate_ports(&c.ports, &child(path, "ports")));
    errs.extend(validate_env(&c.env, &child(path, "env")));
    for (i, ef) in c.env_from.iter().enumerate() {
        let p = index(&child(path, "envFrom"), i);
        if let Some(prefix) = ef.prefix.as_deref().filter(|s| !s.is_empty()) {
            for m in env_var_name_errors(prefix) {
                errs.push(invalid(child(&p, "prefix"), prefix, m));
            }
        }
        match (&ef.config_map_ref, &ef.secret_ref) {
            (None, None) => errs.push(invalid(
                &p,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            )),
            (Some(_), Some(_)) => errs.push(invalid(
                &p,
                "",
                "may not have more than one field specified at a time",
            )),
            _ => {}
        }
    }
    errs.extend(validate_volume_mounts(
        &c.volume_mounts,
        volumes,
        &child(path, "volumeMounts"),
    ));
    if let Some(r) = &c.resources {
        errs.extend(validate_resource_requirements(r, &child(path, "resources")));
    }
    let probes = [
        ("livenessProbe", &c.liveness_probe, true),
        ("readinessProbe", &c.readiness_probe, false),
        ("startupProbe", &c.startup_probe, true),
    ];
    for (name, probe, one) in probes {
        if let Some(p) = probe {
            if init {
                errs.push(forbidden(
                    child(path, name),
                    "may not be set for init containers without restartPolicy=Always",
                ));
            } else {
                errs.extend(validate_probe(p, &child(path, name), one));
            }
        }
    }
    if let Some(l) = &c.lifecycle {
        for (name, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
            if let Some(h) = h {
                errs.extend(validate_handler(
                    h.exec.as_ref(),
                    h.http_get.as_ref(),
                    h.tcp_socket.as_ref(),
                    &child(&child(path, "lifecycle"), name),
                ));
            }
        }
    }
    errs
}

fn validate_volumes(volumes: &[Volume], path: &str) -> ErrorList {
    let mut errs = Vec::new();
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = index(path, i);
        let mut sources = 0;
        let mut src = |name: &str, errs: &mut ErrorList| {
            if sources > 0 {
                errs.push(forbidden(
                    child(&p, name),
                    "may not specify more than 1 volume type",
                ));
            }
            sources += 1;
        };
        if let Some(e) = &v.empty_dir {
            src("emptyDir", &mut errs);
            if let Some(m) = e.medium.as_deref() {
                if !matches!(m, "" | "Memory") {
                    errs.push(not_supported(
                        child(&child(&p, "emptyDir"), "medium"),
                        m,
                        &["", "Memory"],
                    ));
                }
            }
            if let Some(q) = &e.size_limit {
                errs.extend(validate_quantity(
                    q,
                    false,
                    &child(&child(&p, "emptyDir"), "sizeLimit"),
                ));
            }
        }
        if let Some(h) = &v.host_path {
            src("hostPath", &mut errs);
            if h.path.is_empty() {
                errs.push(required(child(&child(&p, "hostPath"), "path"), ""));
            }
            if let Some(t) = h.type_.as_deref() {
                const HT: &[&str] = &[
                    "",
                    "BlockDevice",
                    "CharDevice",
                    "Directory",
                    "DirectoryOrCreate",
                    "File",
                    "FileOrCreate",
                    "Socket",
                ];
                if !HT.contains(&t) {
                    errs.push(not_supported(child(&child(&p, "hostPath"), "type"), t, HT));
                }
            }
        }
        if let Some(c) = &v.config_map {
            src("configMap", &mut errs);
            if c.name.as_deref().unwrap_or("").is_empty() {
                errs.push(required(child(&child(&p, "configMap"), "name"), ""));
            }
        }
        if let Some(s) = &v.secret {
            src("secret", &mut errs);
            if s.secret_name.as_deref().unwrap_or("").is_empty() {
                errs.push(required(child(&child(&p, "secret"), "secretName"), ""));
            }
        }
        if v.downward_api.is_some() {
            src("downwardAPI", &mut errs);
        }
        if sources == 0 {
            errs.push(required(&p, "must specify a volume type"));
        }
        let np = child(&p, "name");
        if v.name.is_empty() {
            errs.push(required(&np, ""));
        } else {
            for m in dns1123_label_errors(&v.name) {
                errs.push(invalid(&np, &v.name, m));
            }
        }
        if !v.name.is_empty() && !names.insert(v.name.as_str()) {
            errs.push(duplicate(&np, &v.name));
        }
    }
    errs
}

/// `ValidateTolerations`.
pub fn validate_tolerations(tolerations: &[Toleration], path: &str) -> ErrorList {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let p = index(path, i);
        let key = t.key.as_deref().unwrap_or("");
        let op = t.operator.as_deref().unwrap_or("");
        let value = t.value.as_deref().unwrap_or("");
        let effect = t.effect.as_deref().unwrap_or("");
        if !key.is_empty() {
            errs.extend(validate_label_name(key, &child(&p, "key")));
        }
        if key.is_empty() && op != "Exists" {
            errs.push(invalid(
                child(&p, "operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            errs.push(invalid(
                child(&p, "effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "" | "Equal" => {
                let msgs = label_value_errors(value);
                if !msgs.is_empty() {
                    errs.push(invalid(child(&p, "operator"), value, msgs.join(";")));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(invalid(
                        child(&p, "operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(not_supported(
                child(&p, "operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
            errs.push(not_supported(child(&p, "effect"), effect, TAINT_EFFECTS));
        }
    }
    errs
}

/// `ValidateNodeSelectorRequirement` (node affinity expressions).
pub fn validate_node_selector_requirement(r: &NodeSelectorRequirement, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    let vp = child(path, "values");
    match r.operator.as_str() {
        "In" | "NotIn" => {
            if r.values.is_empty() {
                errs.push(required(
                    &vp,
                    "must be specified when `operator` is 'In' or 'NotIn'",
                ));
            }
        }
        "Exists" | "DoesNotExist" => {
            if !r.values.is_empty() {
                errs.push(forbidden(
                    &vp,
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ));
            }
        }
        "Gt" | "Lt" => {
            if r.values.len() != 1 {
                errs.push(required(
                    &vp,
                    "must be specified single value when `operator` is 'Lt' or 'Gt'",
                ));
            } else if r.values[0].parse::<i64>().is_err() {
                errs.push(invalid(index(&vp, 0), &r.values[0], "must be an integer"));
            }
        }
        op => errs.push(invalid(
            child(path, "operator"),
            op,
            "not a valid selector operator",
        )),
    }
    errs.extend(validate_label_name(&r.key, &child(path, "key")));
    errs
}

fn validate_node_selector_term(t: &NodeSelectorTerm, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    for (i, r) in t.match_expressions.iter().enumerate() {
        errs.extend(validate_node_selector_requirement(
            r,
            &index(&child(path, "matchExpressions"), i),
        ));
    }
    for (i, r) in t.match_fields.iter().enumerate() {
        let p = index(&child(path, "matchFields"), i);
        if r.key != "metadata.name" {
            errs.push(invalid(
                child(&p, "key"),
                &r.key,
                "not a valid field selector key",
            ));
        }
        match r.operator.as_str() {
            "In" | "NotIn" => {
                if r.values.len() != 1 {
                    errs.push(required(
                        child(&p, "values"),
                        "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
                    ));
                }
            }
            op => errs.push(invalid(
                child(&p, "operator"),
                op,
                "not a valid selector operator",
            )),
        }
    }
    errs
}

fn validate_affinity(a: &Affinity, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    if let Some(na) = &a.node_affinity {
        let np = child(path, "nodeAffinity");
        if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
            let rp = child(
                &child(&np, "requiredDuringSchedulingIgnoredDuringExecution"),
                "nodeSelectorTerms",
            );
            if req.node_selector_terms.is_empty() {
                errs.push(required(&rp, "must have at least one node selector term"));
            }
            for (i, t) in req.node_selector_terms.iter().enumerate() {
                errs.extend(validate_node_selector_term(t, &index(&rp, i)));
            }
        }
        let pp = child(&np, "preferredDuringSchedulingIgnoredDuringExecution");
        for (i, t) in na
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .enumerate()
        {
            let p = index(&pp, i);
            if !(1..=100).contains(&t.weight) {
                errs.push(invalid_raw(
                    child(&p, "weight"),
                    t.weight,
                    "must be in the range 1-100",
                ));
            }
            errs.extend(validate_node_selector_term(
                &t.preference,
                &child(&p, "preference"),
            ));
        }
    }
    errs
}

/// `ValidatePodSpec`.
pub fn validate_pod_spec(spec: &PodSpec, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    errs.extend(validate_volumes(&spec.volumes, &child(path, "volumes")));
    let volumes: BTreeSet<&str> = spec.volumes.iter().map(|v| v.name.as_str()).collect();
    if spec.containers.is_empty() {
        errs.push(required(child(path, "containers"), ""));
    }
    let mut names = BTreeSet::new();
    for (field, list, init) in [
        ("initContainers", &spec.init_containers, true),
        ("containers", &spec.containers, false),
    ] {
        for (i, c) in list.iter().enumerate() {
            let p = index(&child(path, field), i);
            let np = child(&p, "name");
            if c.name.is_empty() {
                errs.push(required(&np, ""));
            } else {
                for m in dns1123_label_errors(&c.name) {
                    errs.push(invalid(&np, &c.name, m));
                }
                if !names.insert(c.name.as_str()) {
                    errs.push(duplicate(&np, &c.name));
                }
            }
            errs.extend(validate_container(c, &volumes, init, &p));
        }
    }
    if let Some(rp) = &spec.restart_policy {
        if !RESTART_POLICIES.contains(&rp.as_str()) {
            errs.push(not_supported(
                child(path, "restartPolicy"),
                rp,
                RESTART_POLICIES,
            ));
        }
    }
    if let Some(dp) = &spec.dns_policy {
        if !DNS_POLICIES.contains(&dp.as_str()) {
            errs.push(not_supported(child(path, "dnsPolicy"), dp, DNS_POLICIES));
        }
    }
    errs.extend(validate_labels(
        &spec.node_selector,
        &child(path, "nodeSelector"),
    ));
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        for m in dns1123_subdomain_errors(sa) {
            errs.push(invalid(child(path, "serviceAccountName"), sa, m));
        }
    }
    if let Some(n) = spec.node_name.as_deref().filter(|s| !s.is_empty()) {
        for m in dns1123_subdomain_errors(n) {
            errs.push(invalid(child(path, "nodeName"), n, m));
        }
    }
    if let Some(v) = spec.active_deadline_seconds {
        if !(1..=u32::MAX as i64).contains(&v) {
            errs.push(invalid_raw(
                child(path, "activeDeadlineSeconds"),
                v,
                inclusive_range_error(1, u32::MAX as i64),
            ));
        }
    }
    if let Some(v) = spec.termination_grace_period_seconds {
        errs.extend(nonnegative(child(path, "terminationGracePeriodSeconds"), v));
    }
    for (field, v) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = v.as_deref().filter(|s| !s.is_empty()) {
            for m in dns1123_label_errors(v) {
                errs.push(invalid(child(path, field), v, m));
            }
        }
    }
    if let Some(a) = &spec.affinity {
        errs.extend(validate_affinity(a, &child(path, "affinity")));
    }
    errs.extend(validate_tolerations(
        &spec.tolerations,
        &child(path, "tolerations"),
    ));
    for (i, s) in spec.image_pull_secrets.iter().enumerate() {
        if s.name.as_deref().unwrap_or("").is_empty() {
            errs.push(required(
                child(&index(&child(path, "imagePullSecrets"), i), "name"),
                "",
            ));
        }
    }
    if let Some(sc) = &spec.security_context {
        let p = child(path, "securityContext");
        for (name, v) in [
            ("runAsUser", sc.run_as_user),
            ("runAsGroup", sc.run_as_group),
            ("fsGroup", sc.fs_group),
        ] {
            if let Some(v) = v {
                if !(0..=i32::MAX as i64).contains(&v) {
                    errs.push(invalid_raw(
                        child(&p, name),
                        v,
                        inclusive_range_error(0, i32::MAX as i64),
                    ));
                }
            }
        }
    }
    errs
}

/// `ValidatePodTemplateSpec`: template labels/annotations and the pod spec.
pub fn validate_pod_template(t: &PodTemplateSpec, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    let mp = child(path, "metadata");
    errs.extend(validate_labels(&t.metadata.labels, &child(&mp, "labels")));
    errs.extend(validate_annotations(
        &t.metadata.annotations,
        &child(&mp, "annotations"),
    ));
    match &t.spec {
        Some(spec) => errs.extend(validate_pod_spec(spec, &child(path, "spec"))),
        None => errs.push(required(child(&child(path, "spec"), "containers"), "")),
    }
    errs
}

/// Go's `%#v` rendering of a `map[string]string` (how Kubernetes reports label maps).
pub fn go_map_string(m: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

pub fn validate_pod(pod: &Pod) -> ErrorList {
    let mut errs = validate_type_meta(pod_type(pod), "v1", "Pod");
    errs.extend(validate_object_meta(&pod.metadata, true, "metadata"));
    match &pod.spec {
        Some(spec) => errs.extend(validate_pod_spec(spec, "spec")),
        None => errs.push(required("spec.containers", "")),
    }
    errs
}

fn pod_type(pod: &Pod) -> (&str, &str) {
    (&pod.api_version, &pod.kind)
}

const POD_UPDATE_MSG: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Top-level spec fields whose JSON differs (a compact stand-in for Kubernetes' spec diff).
fn spec_diff(old: &PodSpec, new: &PodSpec) -> String {
    let (Ok(serde_json::Value::Object(o)), Ok(serde_json::Value::Object(n))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return String::new();
    };
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let mut out = String::new();
    for k in keys {
        if o.get(k) != n.get(k) {
            let show = |v: Option<&serde_json::Value>| {
                v.map(|v| v.to_string()).unwrap_or_else(|| "null".into())
            };
            out.push_str(&format!(
                "\n  spec.{k}: {} -> {}",
                show(o.get(k)),
                show(n.get(k))
            ));
        }
    }
    out
}

/// `ValidatePodUpdate`.
pub fn validate_pod_update(new: &Pod, old: &Pod) -> ErrorList {
    let mut errs = validate_pod(new);
    errs.extend(validate_object_meta_update(
        &new.metadata,
        &old.metadata,
        "metadata",
    ));
    let (Some(ns), Some(os)) = (&new.spec, &old.spec) else {
        return errs;
    };
    if ns.containers.len() != os.containers.len() {
        errs.push(forbidden(
            "spec.containers",
            "pod updates may not add or remove containers",
        ));
        return errs;
    }
    if ns.init_containers.len() != os.init_containers.len() {
        errs.push(forbidden(
            "spec.initContainers",
            "pod updates may not add or remove containers",
        ));
        return errs;
    }
    // Tolerations: only additions (tolerationSeconds may change).
    for o in &os.tolerations {
        let found = ns.tolerations.iter().any(|n| {
            let mut oc = o.clone();
            oc.toleration_seconds = n.toleration_seconds;
            oc == *n
        });
        if !found {
            errs.push(forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    // activeDeadlineSeconds: may be set or decreased, never unset or increased.
    match (ns.active_deadline_seconds, os.active_deadline_seconds) {
        (Some(n), _) if !(0..=i32::MAX as i64).contains(&n) => errs.push(invalid_raw(
            "spec.activeDeadlineSeconds",
            n,
            inclusive_range_error(0, i32::MAX as i64),
        )),
        (Some(n), Some(o)) if o < n => errs.push(invalid_raw(
            "spec.activeDeadlineSeconds",
            n,
            "must be less than or equal to previous value",
        )),
        (None, Some(_)) => errs.push(invalid_raw(
            "spec.activeDeadlineSeconds",
            "null",
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    // nodeName may be set once (binding), never changed.
    if let Some(o) = os.node_name.as_deref().filter(|s| !s.is_empty()) {
        if ns.node_name.as_deref() != Some(o) {
            errs.push(invalid(
                "spec.nodeName",
                ns.node_name.as_deref().unwrap_or(""),
                "field is immutable once set",
            ));
        }
    }
    // Everything else is immutable.
    let mut munged = ns.clone();
    for (m, o) in munged.containers.iter_mut().zip(&os.containers) {
        m.image = o.image.clone();
    }
    for (m, o) in munged.init_containers.iter_mut().zip(&os.init_containers) {
        m.image = o.image.clone();
    }
    munged.active_deadline_seconds = os.active_deadline_seconds;
    munged.tolerations = os.tolerations.clone();
    munged.node_name = os.node_name.clone();
    if let (Some(o), Some(1)) = (
        os.termination_grace_period_seconds,
        munged.termination_grace_period_seconds,
    ) {
        if o < 0 {
            munged.termination_grace_period_seconds = Some(o);
        }
    }
    if munged != *os {
        errs.push(forbidden(
            "spec",
            format!("{POD_UPDATE_MSG}{}", spec_diff(os, &munged)),
        ));
    }
    errs
}

// ------------------------------------------------------------------ defaults

/// `Always` when the tag is `latest` or absent (and no digest), otherwise `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn default_probe(p: &mut Probe) {
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    if let Some(h) = &mut p.http_get {
        default_http_get(h);
    }
}

fn default_http_get(h: &mut HttpGetAction) {
    if h.path.as_deref().unwrap_or("").is_empty() {
        h.path = Some("/".into());
    }
    if h.scheme.as_deref().unwrap_or("").is_empty() {
        h.scheme = Some("HTTP".into());
    }
}

fn default_container(c: &mut Container) {
    if c.image_pull_policy.as_deref().unwrap_or("").is_empty() {
        c.image_pull_policy = Some(default_pull_policy(c.image.as_deref().unwrap_or("")).into());
    }
    if c.termination_message_path
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        c.termination_message_path = Some("/dev/termination-log".into());
    }
    if c.termination_message_policy
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        c.termination_message_policy = Some("File".into());
    }
    for p in &mut c.ports {
        if p.protocol.as_deref().unwrap_or("").is_empty() {
            p.protocol = Some("TCP".into());
        }
    }
    for p in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(p);
    }
    if let Some(l) = &mut c.lifecycle {
        for h in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
            if let Some(g) = &mut h.http_get {
                default_http_get(g);
            }
        }
    }
    for e in &mut c.env {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            f.api_version.get_or_insert_with(|| "v1".into());
        }
    }
}

/// `SetDefaults_PodSpec` (also applied to pod templates). The scheduler name is left unset: it
/// means kapsel's default scheduler.
pub fn default_pod_spec(spec: &mut PodSpec) {
    if spec.dns_policy.as_deref().unwrap_or("").is_empty() {
        spec.dns_policy = Some("ClusterFirst".into());
    }
    if spec.restart_policy.as_deref().unwrap_or("").is_empty() {
        spec.restart_policy = Some("Always".into());
    }
    spec.termination_grace_period_seconds.get_or_insert(30);
    let host_network = spec.host_network == Some(true);
    for c in spec
        .init_containers
        .iter_mut()
        .chain(spec.containers.iter_mut())
    {
        default_container(c);
        if host_network {
            for p in &mut c.ports {
                if p.host_port.unwrap_or(0) == 0 {
                    p.host_port = Some(p.container_port);
                }
            }
        }
    }
    for v in &mut spec.volumes {
        let no_source = v.empty_dir.is_none()
            && v.host_path.is_none()
            && v.config_map.is_none()
            && v.secret.is_none()
            && v.downward_api.is_none();
        if no_source {
            v.empty_dir = Some(EmptyDirVolumeSource::default());
        }
        if let Some(c) = &mut v.config_map {
            c.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = &mut v.secret {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(d) = &mut v.downward_api {
            d.default_mode.get_or_insert(0o644);
            for f in &mut d.items {
                if let Some(fr) = &mut f.field_ref {
                    fr.api_version.get_or_insert_with(|| "v1".into());
                }
            }
        }
    }
}

/// `SetDefaults_Pod`: pod spec defaults, requests copied from limits where missing, and
/// `enableServiceLinks: true`.
pub fn default_pod(pod: &mut Pod) {
    let Some(spec) = &mut pod.spec else {
        return;
    };
    default_pod_spec(spec);
    for c in spec
        .init_containers
        .iter_mut()
        .chain(spec.containers.iter_mut())
    {
        if let Some(r) = &mut c.resources {
            for (k, v) in r.limits.clone() {
                r.requests.entry(k).or_insert(v);
            }
        }
    }
    spec.enable_service_links.get_or_insert(true);
}
