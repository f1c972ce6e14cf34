//! Namespace, Node, Service, Endpoints, ConfigMap, Secret, LimitRange, ResourceQuota, Event and
//! Binding rules and defaults.

use std::collections::BTreeMap;

use base64::Engine;

use super::field::*;
use super::meta::*;
use super::names::*;
use super::pod::*;
use super::ErrorList;
use crate::core::*;
use crate::meta::IntOrString;
use crate::quantity::QuantityValue;

/// Kubernetes' `MaxSecretSize` (also the ConfigMap limit).
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;

// ------------------------------------------------------------------ Namespace

pub fn validate_namespace(ns: &Namespace) -> ErrorList {
    let mut errs = validate_type_meta((&ns.api_version, &ns.kind), "v1", "Namespace");
    errs.extend(validate_object_meta_with(
        &ns.metadata,
        false,
        name_is_dns_label,
        "metadata",
    ));
    if let Some(spec) = &ns.spec {
        for f in &spec.finalizers {
            let msgs = qualified_name_errors(f);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(invalid("spec.finalizers", f, m));
                }
            } else if f != "kubernetes" && !f.contains('/') {
                errs.push(invalid(
                    "spec.finalizers",
                    f,
                    "name is neither a standard finalizer name nor is it fully qualified",
                ));
            }
        }
    }
    if let Some(phase) = ns.status.as_ref().and_then(|s| s.phase.as_deref()) {
        if !matches!(phase, "Active" | "Terminating") {
            errs.push(not_supported(
                "status.phase",
                phase,
                &["Active", "Terminating"],
            ));
        }
    }
    errs
}

/// `SetDefaults_NamespaceStatus`: the phase of a namespace the server creates is `Active`.
/// (Status is the server's; call this when creating a namespace.)
pub fn namespace_status_defaults(ns: &mut Namespace) {
    let status = ns.status.get_or_insert_with(Default::default);
    if status.phase.as_deref().unwrap_or("").is_empty() {
        status.phase = Some("Active".into());
    }
}

// ------------------------------------------------------------------ Node

fn validate_resource_list(list: &ResourceList, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    for (name, q) in list {
        let p = child(path, name);
        for m in qualified_name_errors(name) {
            errs.push(invalid(&p, name, m));
        }
        errs.extend(validate_quantity(q, false, &p));
    }
    errs
}

fn is_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, bits)) => {
            let max = if is_ipv4(ip) {
                32
            } else if is_ip(ip) {
                128
            } else {
                return false;
            };
            bits.parse::<u8>().is_ok_and(|b| b <= max)
        }
        None => false,
    }
}

pub fn validate_node(n: &Node) -> ErrorList {
    let mut errs = validate_type_meta((&n.api_version, &n.kind), "v1", "Node");
    errs.extend(validate_object_meta(&n.metadata, false, "metadata"));
    if let Some(spec) = &n.spec {
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in spec.taints.iter().enumerate() {
            let p = index("spec.taints", i);
            errs.extend(validate_label_name(&t.key, &child(&p, "key")));
            if let Some(v) = &t.value {
                for m in label_value_errors(v) {
                    errs.push(invalid(child(&p, "value"), v, m));
                }
            }
            if t.effect.is_empty() {
                errs.push(required(child(&p, "effect"), ""));
            } else if !TAINT_EFFECTS.contains(&t.effect.as_str()) {
                errs.push(not_supported(child(&p, "effect"), &t.effect, TAINT_EFFECTS));
            }
            if !seen.insert((t.key.as_str(), t.effect.as_str())) {
                errs.push(duplicate(&p, &format!("{}:{}", t.key, t.effect)));
            }
        }
        if let Some(c) = spec.pod_cidr.as_deref().filter(|s| !s.is_empty()) {
            if !is_cidr(c) {
                errs.push(invalid("spec.podCIDR", c, "must be a valid CIDR"));
            }
        }
        for (i, c) in spec.pod_cidrs.iter().enumerate() {
            if !is_cidr(c) {
                errs.push(invalid(
                    index("spec.podCIDRs", i),
                    c,
                    "must be a valid CIDR",
                ));
            }
        }
    }
    if let Some(st) = &n.status {
        errs.extend(validate_resource_list(&st.capacity, "status.capacity"));
        errs.extend(validate_resource_list(
            &st.allocatable,
            "status.allocatable",
        ));
    }
    errs
}

pub fn validate_node_update(new: &Node, old: &Node) -> ErrorList {
    let mut errs = validate_node(new);
    errs.extend(validate_object_meta_update(
        &new.metadata,
        &old.metadata,
        "metadata",
    ));
    let ns = new.spec.clone().unwrap_or_default();
    let os = old.spec.clone().unwrap_or_default();
    if os.pod_cidr.as_deref().is_some_and(|c| !c.is_empty()) && ns.pod_cidr != os.pod_cidr {
        errs.push(forbidden(
            "spec.podCIDRs",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    if !os.pod_cidrs.is_empty() && ns.pod_cidrs != os.pod_cidrs {
        errs.push(forbidden(
            "spec.podCIDRs",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    if os.provider_id.as_deref().is_some_and(|c| !c.is_empty()) && ns.provider_id != os.provider_id
    {
        errs.push(forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
    errs
}

/// `SetDefaults_NodeStatus`: allocatable defaults to capacity.
pub fn default_node(n: &mut Node) {
    if let Some(st) = &mut n.status {
        if st.allocatable.is_empty() && !st.capacity.is_empty() {
            st.allocatable = st.capacity.clone();
        }
    }
}

// ------------------------------------------------------------------ Service

pub const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

pub fn validate_service(s: &Service) -> ErrorList {
    let mut errs = validate_type_meta((&s.api_version, &s.kind), "v1", "Service");
    errs.extend(validate_object_meta_with(
        &s.metadata,
        true,
        name_is_dns1035_label,
        "metadata",
    ));
    let default_spec = ServiceSpec::default();
    let spec = s.spec.as_ref().unwrap_or(&default_spec);
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let headless = cluster_ip == "None";
    if !SERVICE_TYPES.contains(&ty) {
        errs.push(not_supported("spec.type", ty, SERVICE_TYPES));
    }
    if ty == "ExternalName" {
        match spec.external_name.as_deref().unwrap_or("") {
            "" => errs.push(required("spec.externalName", "")),
            n => {
                let n = n.strip_suffix('.').unwrap_or(n);
                for m in dns1123_subdomain_errors(n) {
                    errs.push(invalid("spec.externalName", n, m));
                }
            }
        }
        if !cluster_ip.is_empty() {
            errs.push(forbidden(
                "spec.clusterIP",
                "may not be set for ExternalName services",
            ));
        }
    } else if spec.ports.is_empty() && !headless {
        errs.push(required("spec.ports", ""));
    }
    if !cluster_ip.is_empty() && !headless && !is_ipv4(cluster_ip) {
        errs.push(invalid(
            "spec.clusterIP",
            cluster_ip,
            "must be empty, 'None', or a valid IPv4 address",
        ));
    }
    if headless && ty != "ClusterIP" && ty != "ExternalName" {
        errs.push(invalid(
            "spec.clusterIP",
            cluster_ip,
            "may not be set to 'None' for LoadBalancer or NodePort services",
        ));
    }
    let require_name = spec.ports.len() > 1;
    let mut names = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut node_ports = std::collections::BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let pp = index("spec.ports", i);
        match p.name.as_deref().unwrap_or("") {
            "" if require_name => errs.push(required(child(&pp, "name"), "")),
            "" => {}
            n => {
                for m in dns1123_label_errors(n) {
                    errs.push(invalid(child(&pp, "name"), n, m));
                }
                if !names.insert(n.to_string()) {
                    errs.push(duplicate(child(&pp, "name"), n));
                }
            }
        }
        for m in port_num_errors(p.port as i64) {
            errs.push(invalid_raw(child(&pp, "port"), p.port, m));
        }
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        if !PROTOCOLS.contains(&proto) {
            errs.push(not_supported(child(&pp, "protocol"), proto, PROTOCOLS));
        }
        if !seen.insert((p.port, proto.to_string())) {
            errs.push(duplicate(&pp, &format!("{}/{}", p.port, proto)));
        }
        if let Some(tp) = &p.target_port {
            if *tp != IntOrString::Int(0) && *tp != IntOrString::String(String::new()) {
                errs.extend(validate_port_num_or_name(tp, &child(&pp, "targetPort")));
            }
        }
        if let Some(np) = p.node_port.filter(|n| *n != 0) {
            if ty == "ClusterIP" || ty == "ExternalName" {
                errs.push(forbidden(
                    child(&pp, "nodePort"),
                    format!("may not be used when `type` is '{ty}'"),
                ));
            } else if !(30000..=32767).contains(&np) {
                errs.push(invalid_raw(
                    child(&pp, "nodePort"),
                    np,
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                ));
            } else if !node_ports.insert((np, proto.to_string())) {
                errs.push(duplicate(child(&pp, "nodePort"), &np.to_string()));
            }
        }
    }
    if let Some(sa) = &spec.session_affinity {
        if !matches!(sa.as_str(), "ClientIP" | "None") {
            errs.push(not_supported(
                "spec.sessionAffinity",
                sa,
                &["ClientIP", "None"],
            ));
        }
    }
    for (f, v) in [
        ("spec.externalTrafficPolicy", &spec.external_traffic_policy),
        ("spec.internalTrafficPolicy", &spec.internal_traffic_policy),
    ] {
        if let Some(v) = v.as_deref() {
            if !matches!(v, "Cluster" | "Local") {
                errs.push(not_supported(f, v, &["Cluster", "Local"]));
            }
        }
    }
    if spec.external_traffic_policy.is_some() && !matches!(ty, "NodePort" | "LoadBalancer") {
        errs.push(invalid(
            "spec.externalTrafficPolicy",
            spec.external_traffic_policy.as_deref().unwrap_or(""),
            "may only be set for externally-accessible services",
        ));
    }
    for (i, ip) in spec.external_ips.iter().enumerate() {
        if !is_ip(ip) {
            errs.push(invalid(
                index("spec.externalIPs", i),
                ip,
                "must be a valid IP address",
            ));
        }
    }
    errs.extend(validate_labels(&spec.selector, "spec.selector"));
    errs
}

pub fn validate_service_update(new: &Service, old: &Service) -> ErrorList {
    let mut errs = validate_service(new);
    errs.extend(validate_object_meta_update(
        &new.metadata,
        &old.metadata,
        "metadata",
    ));
    let old_ip = old
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("");
    let new_ip = new
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("");
    let old_type = old.spec.as_ref().and_then(|s| s.type_.as_deref());
    let new_type = new.spec.as_ref().and_then(|s| s.type_.as_deref());
    let needs_ip = |t: Option<&str>| t != Some("ExternalName");
    // An empty clusterIP in an update means "keep it" (the server copies it over).
    if !old_ip.is_empty() && !new_ip.is_empty() && needs_ip(old_type) && needs_ip(new_type) {
        errs.extend(immutable(&new_ip, &old_ip, "spec.clusterIP", |v| quote(v)));
    }
    errs
}

/// `SetDefaults_Service`.
pub fn default_service(s: &mut Service) {
    let spec = s.spec.get_or_insert_with(Default::default);
    if spec.session_affinity.as_deref().unwrap_or("").is_empty() {
        spec.session_affinity = Some("None".into());
    }
    if spec.type_.as_deref().unwrap_or("").is_empty() {
        spec.type_ = Some("ClusterIP".into());
    }
    for p in &mut spec.ports {
        if p.protocol.as_deref().unwrap_or("").is_empty() {
            p.protocol = Some("TCP".into());
        }
        let unset = match &p.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            _ => false,
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    let ty = spec.type_.clone().unwrap_or_default();
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer")
        && spec
            .external_traffic_policy
            .as_deref()
            .unwrap_or("")
            .is_empty()
    {
        spec.external_traffic_policy = Some("Cluster".into());
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP")
        && spec.internal_traffic_policy.is_none()
    {
        spec.internal_traffic_policy = Some("Cluster".into());
    }
}

// ------------------------------------------------------------------ Endpoints

pub fn validate_endpoints(e: &Endpoints) -> ErrorList {
    let mut errs = validate_type_meta((&e.api_version, &e.kind), "v1", "Endpoints");
    errs.extend(validate_object_meta(&e.metadata, true, "metadata"));
    for (i, ss) in e.subsets.iter().enumerate() {
        let sp = index("subsets", i);
        for (field, addrs) in [
            ("addresses", &ss.addresses),
            ("notReadyAddresses", &ss.not_ready_addresses),
        ] {
            for (j, a) in addrs.iter().enumerate() {
                let ap = index(&child(&sp, field), j);
                if !is_ip(&a.ip) {
                    errs.push(invalid(
                        child(&ap, "ip"),
                        &a.ip,
                        "must be a valid IP address",
                    ));
                }
                if let Some(h) = a.hostname.as_deref().filter(|s| !s.is_empty()) {
                    for m in dns1123_label_errors(h) {
                        errs.push(invalid(child(&ap, "hostname"), h, m));
                    }
                }
                if let Some(n) = a.node_name.as_deref().filter(|s| !s.is_empty()) {
                    for m in dns1123_subdomain_errors(n) {
                        errs.push(invalid(child(&ap, "nodeName"), n, m));
                    }
                }
            }
        }
        let require_name = ss.ports.len() > 1;
        for (j, p) in ss.ports.iter().enumerate() {
            let pp = index(&child(&sp, "ports"), j);
            match p.name.as_deref().unwrap_or("") {
                "" if require_name => errs.push(required(child(&pp, "name"), "")),
                "" => {}
                n => {
                    for m in dns1123_label_errors(n) {
                        errs.push(invalid(child(&pp, "name"), n, m));
                    }
                }
            }
            for m in port_num_errors(p.port as i64) {
                errs.push(invalid_raw(child(&pp, "port"), p.port, m));
            }
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            if !PROTOCOLS.contains(&proto) {
                errs.push(not_supported(child(&pp, "protocol"), proto, PROTOCOLS));
            }
        }
    }
    errs
}

/// `SetDefaults_EndpointPort`: protocol TCP.
pub fn default_endpoints(e: &mut Endpoints) {
    for ss in &mut e.subsets {
        for p in &mut ss.ports {
            if p.protocol.as_deref().unwrap_or("").is_empty() {
                p.protocol = Some("TCP".into());
            }
        }
    }
}

// ------------------------------------------------------------------ ConfigMap / Secret

fn b64_decode(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| match e {
            base64::DecodeError::InvalidByte(off, _) => {
                format!("illegal base64 data at input byte {off}")
            }
            base64::DecodeError::InvalidLastSymbol(off, _) => {
                format!("illegal base64 data at input byte {off}")
            }
            _ => format!("illegal base64 data at input byte {}", s.len()),
        })
}

fn validate_keys<'a>(keys: impl Iterator<Item = &'a String>, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    for k in keys {
        for m in config_map_key_errors(k) {
            errs.push(invalid(key(path, k), k, m));
        }
    }
    errs
}

pub fn validate_config_map(c: &ConfigMap) -> ErrorList {
    let mut errs = validate_type_meta((&c.api_version, &c.kind), "v1", "ConfigMap");
    errs.extend(validate_object_meta(&c.metadata, true, "metadata"));
    errs.extend(validate_keys(c.data.keys(), "data"));
    errs.extend(validate_keys(c.binary_data.keys(), "binaryData"));
    let mut size = 0usize;
    for (k, v) in &c.data {
        size += k.len() + v.len();
    }
    for (k, v) in &c.binary_data {
        if c.data.contains_key(k) {
            errs.push(invalid(
                key("binaryData", k),
                k,
                "duplicate of key present in data",
            ));
        }
        match b64_decode(v) {
            Ok(b) => size += k.len() + b.len(),
            Err(m) => errs.push(invalid_raw(key("binaryData", k), "<binary data>", m)),
        }
    }
    if size > MAX_SECRET_SIZE {
        errs.push(too_long("data", MAX_SECRET_SIZE));
    }
    errs
}

pub fn validate_config_map_update(new: &ConfigMap, old: &ConfigMap) -> ErrorList {
    let mut errs = validate_config_map(new);
    errs.extend(validate_object_meta_update(
        &new.metadata,
        &old.metadata,
        "metadata",
    ));
    if old.immutable == Some(true) {
        if new.immutable != Some(true) {
            errs.push(forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
        if new.data != old.data {
            errs.push(forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
        if new.binary_data != old.binary_data {
            errs.push(forbidden(
                "binaryData",
                "field is immutable when `immutable` is set",
            ));
        }
    }
    errs
}

pub fn validate_secret(s: &Secret) -> ErrorList {
    let mut errs = validate_type_meta((&s.api_version, &s.kind), "v1", "Secret");
    errs.extend(validate_object_meta(&s.metadata, true, "metadata"));
    errs.extend(validate_keys(s.data.keys(), "data"));
    errs.extend(validate_keys(s.string_data.keys(), "stringData"));
    let mut size = 0usize;
    let mut decoded: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for (k, v) in &s.data {
        match b64_decode(v) {
            Ok(b) => {
                size += b.len();
                decoded.insert(k, b);
            }
            Err(m) => errs.push(invalid_raw(key("data", k), "<secret data>", m)),
        }
    }
    for (k, v) in &s.string_data {
        if !s.data.contains_key(k) {
            size += v.len();
        }
    }
    if size > MAX_SECRET_SIZE {
        errs.push(too_long("data", MAX_SECRET_SIZE));
    }
    let has = |k: &str| s.data.contains_key(k) || s.string_data.contains_key(k);
    match s.type_.as_deref().unwrap_or("Opaque") {
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(required(key("data", k), ""));
                }
            }
        }
        "kubernetes.io/dockerconfigjson" => {
            if !has(".dockerconfigjson") {
                errs.push(required(key("data", ".dockerconfigjson"), ""));
            } else if let Some(b) = decoded.get(".dockerconfigjson") {
                if serde_json::from_slice::<serde_json::Value>(b).is_err() {
                    errs.push(invalid_raw(
                        key("data", ".dockerconfigjson"),
                        "<secret contents redacted>",
                        "invalid JSON",
                    ));
                }
            }
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            errs.push(required(key("data", ".dockercfg"), ""));
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(required(key("data", "username"), ""));
            errs.push(required(key("data", "password"), ""));
        }
        "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
            errs.push(required(key("data", "ssh-privatekey"), ""));
        }
        "kubernetes.io/service-account-token"
            if !s
                .metadata
                .annotations
                .contains_key("kubernetes.io/service-account.name") =>
        {
            errs.push(required(
                key("metadata.annotations", "kubernetes.io/service-account.name"),
                "",
            ));
        }
        "" => errs.push(required("type", "")),
        _ => {}
    }
    errs
}

pub fn validate_secret_update(new: &Secret, old: &Secret) -> ErrorList {
    let mut errs = validate_secret(new);
    errs.extend(validate_object_meta_update(
        &new.metadata,
        &old.metadata,
        "metadata",
    ));
    let nt = new.type_.as_deref().unwrap_or("Opaque");
    let ot = old.type_.as_deref().unwrap_or("Opaque");
    errs.extend(immutable(&nt, &ot, "type", |v| quote(v)));
    if old.immutable == Some(true) {
        if new.immutable != Some(true) {
            errs.push(forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
        if new.data != old.data {
            errs.push(forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
    }
    errs
}

/// `SetDefaults_Secret` plus the API server's `stringData` merge: type `Opaque`, `stringData`
/// entries base64-encoded into `data` (overriding) and cleared.
pub fn default_secret(s: &mut Secret) {
    if s.type_.as_deref().unwrap_or("").is_empty() {
        s.type_ = Some("Opaque".into());
    }
    for (k, v) in std::mem::take(&mut s.string_data) {
        s.data
            .insert(k, base64::engine::general_purpose::STANDARD.encode(v));
    }
}

// ------------------------------------------------------------------ LimitRange

pub const LIMIT_TYPES: &[&str] = &["Container", "Pod", "PersistentVolumeClaim"];

fn validate_limit_resource_name(ty: &str, name: &str, path: &str) -> ErrorList {
    let mut errs: ErrorList = qualified_name_errors(name)
        .into_iter()
        .map(|m| invalid(path, name, m))
        .collect();
    if errs.is_empty() && !name.contains('/') {
        let ok = match ty {
            "PersistentVolumeClaim" => name == "storage",
            _ => is_standard_container_resource(name),
        };
        if !ok {
            errs.push(invalid(
                path,
                name,
                "must be a standard resource type or fully qualified",
            ));
        }
    }
    errs
}

pub fn validate_limit_range(lr: &LimitRange) -> ErrorList {
    let mut errs = validate_type_meta((&lr.api_version, &lr.kind), "v1", "LimitRange");
    errs.extend(validate_object_meta(&lr.metadata, true, "metadata"));
    let Some(spec) = &lr.spec else {
        return errs;
    };
    let mut types = std::collections::BTreeSet::new();
    for (i, item) in spec.limits.iter().enumerate() {
        let ip = index("spec.limits", i);
        let ty = item.type_.as_str();
        if !LIMIT_TYPES.contains(&ty) {
            let msgs = qualified_name_errors(ty);
            if !msgs.is_empty() || !ty.contains('/') {
                errs.push(invalid(
                    child(&ip, "type"),
                    ty,
                    "must be a standard limit type or fully qualified",
                ));
            }
        }
        if !types.insert(ty) {
            errs.push(duplicate(child(&ip, "type"), ty));
        }
        let mut keys = std::collections::BTreeSet::new();
        let mut parsed: BTreeMap<(&str, &str), QuantityValue> = BTreeMap::new();
        let lists: [(&str, &ResourceList); 5] = [
            ("max", &item.max),
            ("min", &item.min),
            ("default", &item.default),
            ("defaultRequest", &item.default_request),
            ("maxLimitRequestRatio", &item.max_limit_request_ratio),
        ];
        for (field, list) in lists {
            if ty == "Pod" && (field == "default" || field == "defaultRequest") {
                if !list.is_empty() {
                    errs.push(forbidden(
                        child(&ip, field),
                        "may not be specified when `type` is 'Pod'",
                    ));
                }
                continue;
            }
            for (name, q) in list {
                let p = child(&child(&ip, field), name);
                errs.extend(validate_limit_resource_name(ty, name, &p));
                let qe = validate_quantity(q, false, &p);
                if qe.is_empty() {
                    if let Ok(v) = q.parse() {
                        parsed.insert((field, name.as_str()), v);
                    }
                }
                errs.extend(qe);
                keys.insert(name.as_str());
            }
        }
        if ty == "PersistentVolumeClaim"
            && !item.min.contains_key("storage")
            && !item.max.contains_key("storage")
        {
            errs.push(required(
                child(&ip, "limits"),
                "either minimum or maximum storage value is required, but neither was provided",
            ));
        }
        for k in keys {
            let get = |f: &str| parsed.get(&(f, k)).copied();
            let (min, max, def, defreq, ratio) = (
                get("min"),
                get("max"),
                get("default"),
                get("defaultRequest"),
                get("maxLimitRequestRatio"),
            );
            let at = |f: &str| child(&child(&ip, f), k);
            if let (Some(mn), Some(mx)) = (min, max) {
                if mn > mx {
                    errs.push(invalid(
                        at("min"),
                        &mn.to_string(),
                        format!("min value {mn} is greater than max value {mx}"),
                    ));
                }
            }
            if let (Some(dr), Some(mn)) = (defreq, min) {
                if mn > dr {
                    errs.push(invalid(
                        at("defaultRequest"),
                        &dr.to_string(),
                        format!("min value {mn} is greater than default request value {dr}"),
                    ));
                }
            }
            if let (Some(dr), Some(mx)) = (defreq, max) {
                if dr > mx {
                    errs.push(invalid(
                        at("defaultRequest"),
                        &dr.to_string(),
                        format!("default request value {dr} is greater than max value {mx}"),
                    ));
                }
            }
            if let (Some(dr), Some(d)) = (defreq, def) {
                if dr > d {
                    errs.push(invalid(
                        at("defaultRequest"),
                        &dr.to_string(),
                        format!(
                            "default request value {dr} is greater than default limit value {d}"
                        ),
                    ));
                }
            }
            if let (Some(d), Some(mn)) = (def, min) {
                if mn > d {
                    errs.push(invalid(
                        at("default"),
                        &mn.to_string(),
                        format!("min value {mn} is greater than default value {d}"),
                    ));
                }
            }
            if let (Some(d), Some(mx)) = (def, max) {
                if d > mx {
                    errs.push(invalid(
                        at("default"),
                        &mx.to_string(),
                        format!("default value {d} is greater than max value {mx}"),
                    ));
                }
            }
            if let Some(r) = ratio {
                if r < QuantityValue::from_units(1, Default::default()) {
                    errs.push(invalid(
                        at("maxLimitRequestRatio"),
                        &r.to_string(),
                        format!("ratio {r} is less than 1"),
                    ));
                }
                if let (Some(mn), Some(mx)) = (min, max) {
                    if mn.nanos() > 0 {
                        let limit = mx.nanos() as f64 / mn.nanos() as f64;
                        if r.as_f64() > limit {
                            errs.push(invalid(
                                at("maxLimitRequestRatio"),
                                &r.to_string(),
                                format!("ratio {r} is greater than max/min = {limit:.6}"),
                            ));
                        }
                    }
                }
            }
        }
    }
    errs
}

/// `SetDefaults_LimitRangeItem`: for `Container` items, default ← max, defaultRequest ← default,
/// defaultRequest ← min.
pub fn default_limit_range(lr: &mut LimitRange) {
    let Some(spec) = &mut lr.spec else {
        return;
    };
    for item in &mut spec.limits {
        if item.type_ != "Container" {
            continue;
        }
        for (k, v) in &item.max {
            item.default.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &item.default {
            item.default_request
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        for (k, v) in &item.min {
            item.default_request
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
    }
}

// ------------------------------------------------------------------ ResourceQuota

const QUOTA_RESOURCES: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
    "cpu",
    "memory",
    "ephemeral-storage",
    "storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];
const INTEGER_QUOTA_RESOURCES: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
];
pub const QUOTA_SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
];

/// Whether `name` is a resource a quota may limit (standard names, `count/…`, extended resources).
pub fn is_quota_resource(name: &str) -> bool {
    name.contains('/')
        || QUOTA_RESOURCES.contains(&name)
        || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
}

fn validate_quota_list(list: &ResourceList, path: &str) -> ErrorList {
    let mut errs = Vec::new();
    for (name, q) in list {
        let p = child(path, name);
        let msgs = qualified_name_errors(name);
        if !msgs.is_empty() {
            for m in msgs {
                errs.push(invalid(&p, name, m));
            }
        } else if !is_quota_resource(name) {
            errs.push(invalid(&p, name, "must be a standard resource for quota"));
        }
        let integer = INTEGER_QUOTA_RESOURCES.contains(&name.as_str())
            || name.starts_with("count/")
            || is_extended_resource(name);
        errs.extend(validate_quantity(q, integer, &p));
    }
    errs
}

pub fn validate_resource_quota(rq: &ResourceQuota) -> ErrorList {
    let mut errs = validate_type_meta((&rq.api_version, &rq.kind), "v1", "ResourceQuota");
    errs.extend(validate_object_meta(&rq.metadata, true, "metadata"));
    if let Some(spec) = &rq.spec {
        errs.extend(validate_quota_list(&spec.hard, "spec.hard"));
        for s in &spec.scopes {
            if !QUOTA_SCOPES.contains(&s.as_str()) {
                errs.push(not_supported("spec.scopes", s, QUOTA_SCOPES));
            }
        }
    }
    if let Some(st) = &rq.status {
        errs.extend(validate_quota_list(&st.hard, "status.hard"));
        errs.extend(validate_quota_list(&st.used, "status.used"));
    }
    errs
}

// ------------------------------------------------------------------ Event / Binding

pub fn validate_event(e: &Event) -> ErrorList {
    let mut errs = validate_type_meta((&e.api_version, &e.kind), "v1", "Event");
    errs.extend(validate_object_meta_with(
        &e.metadata,
        true,
        name_is_path_segment,
        "metadata",
    ));
    let ns = e.metadata.namespace();
    let ins = e.involved_object.namespace.as_deref().unwrap_or("");
    let mismatch = if ins.is_empty() {
        !ns.is_empty() && ns != "default"
    } else {
        ns != ins
    };
    if mismatch {
        errs.push(invalid(
            "involvedObject.namespace",
            ins,
            "does not match event.namespace",
        ));
    }
    if let Some(t) = e.type_.as_deref().filter(|t| !t.is_empty()) {
        if t != "Normal" && t != "Warning" {
            errs.push(invalid("type", "", format!("has invalid value: {t}")));
        }
    }
    if let Some(c) = e.count {
        errs.extend(nonnegative("count", c as i64));
    }
    errs
}

pub fn validate_binding(b: &Binding) -> ErrorList {
    let mut errs = Vec::new();
    if b.target.name.as_deref().unwrap_or("").is_empty() {
        errs.push(required("target.name", ""));
    }
    if let Some(k) = b.target.kind.as_deref().filter(|k| !k.is_empty()) {
        if k != "Node" {
            errs.push(not_supported("target.kind", k, &["Node", "<empty>"]));
        }
    }
    errs
}
