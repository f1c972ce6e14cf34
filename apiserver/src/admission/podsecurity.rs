//! Pod Security admission: Kubernetes' Pod Security Standards (`privileged`, `baseline`,
//! `restricted`) per namespace, from the namespace labels
//! `pod-security.kubernetes.io/{enforce,warn,audit}` and their `-version` companions.
//!
//! The checks and their messages are those of `k8s.io/pod-security-admission/policy` (checked in
//! the order of their IDs, a restricted check replacing the baseline check it overrides). A
//! namespace without an `enforce` label is `baseline`; `warn` and `audit` default to
//! `privileged` (nothing). `kube-system` is exempt, as in k3s. Every version (`latest`, `v1.N`)
//! is evaluated with the current checks; the version only appears in the messages.
//!
//! Everything here is a pure function of the namespace's labels and the pod.

use std::collections::{BTreeMap, BTreeSet};

use kapsel_api::{Container, FieldError, FieldErrorKind, ObjectMeta, PodSpec};

pub const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
pub const WARN: &str = "pod-security.kubernetes.io/warn";
pub const AUDIT: &str = "pod-security.kubernetes.io/audit";
/// The audit annotation Kubernetes records for an `audit`-mode violation.
pub const AUDIT_VIOLATIONS: &str = "pod-security.kubernetes.io/audit-violations";
/// Namespaces that are never checked.
pub const EXEMPT_NAMESPACES: [&str; 1] = ["kube-system"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// A level and the version of the standard (`latest` or `v1.N`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelVersion {
    pub level: Level,
    pub version: String,
}

impl LevelVersion {
    fn latest(level: Level) -> Self {
        LevelVersion {
            level,
            version: "latest".into(),
        }
    }
}

impl std::fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.level.as_str(), self.version)
    }
}

/// The three modes of a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub enforce: LevelVersion,
    pub warn: LevelVersion,
    pub audit: LevelVersion,
}

fn valid_version(v: &str) -> bool {
    v == "latest"
        || v.strip_prefix("v1.")
            .is_some_and(|m| !m.is_empty() && m.len() <= 3 && m.bytes().all(|b| b.is_ascii_digit()))
}

/// Errors in a namespace's pod-security labels (Kubernetes refuses such namespaces).
pub fn label_errors(labels: &BTreeMap<String, String>) -> Vec<FieldError> {
    let mut out = Vec::new();
    for mode in [ENFORCE, WARN, AUDIT] {
        if let Some(v) = labels.get(mode) {
            if Level::parse(v).is_none() {
                out.push(FieldError {
                    kind: FieldErrorKind::NotSupported,
                    field: format!("metadata.labels[{mode}]"),
                    value: Some(format!("{v:?}")),
                    detail: "supported values: \"baseline\", \"privileged\", \"restricted\"".into(),
                });
            }
        }
        let vk = format!("{mode}-version");
        if let Some(v) = labels.get(&vk) {
            if !valid_version(v) {
                out.push(FieldError {
                    kind: FieldErrorKind::Invalid,
                    field: format!("metadata.labels[{vk}]"),
                    value: Some(format!("{v:?}")),
                    detail: "must be \"latest\" or \"v1.x\"".into(),
                });
            }
        }
    }
    out
}

/// The policy of a namespace from its name and labels. An invalid level or version fails closed
/// (`restricted:latest`), as Kubernetes does.
pub fn policy(namespace: &str, labels: &BTreeMap<String, String>) -> Policy {
    let default_enforce = if EXEMPT_NAMESPACES.contains(&namespace) {
        Level::Privileged
    } else {
        Level::Baseline
    };
    let mode = |key: &str, default: Level| -> LevelVersion {
        let level = match labels.get(key) {
            None => default,
            Some(v) => match Level::parse(v) {
                Some(l) => l,
                None => return LevelVersion::latest(Level::Restricted),
            },
        };
        let version = match labels.get(&format!("{key}-version")) {
            None => "latest".to_string(),
            Some(v) if valid_version(v) => v.clone(),
            Some(_) => return LevelVersion::latest(Level::Restricted),
        };
        LevelVersion { level, version }
    };
    if EXEMPT_NAMESPACES.contains(&namespace) {
        let p = LevelVersion::latest(Level::Privileged);
        return Policy {
            enforce: p.clone(),
            warn: p.clone(),
            audit: p,
        };
    }
    Policy {
        enforce: mode(ENFORCE, default_enforce),
        warn: mode(WARN, Level::Privileged),
        audit: mode(AUDIT, Level::Privileged),
    }
}

/// One failed check: Kubernetes' `ForbiddenReason (ForbiddenDetail)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub reason: String,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{} ({})", self.reason, self.detail)
        }
    }
}

fn v(reason: &str, detail: String) -> Option<Violation> {
    Some(Violation {
        reason: reason.into(),
        detail,
    })
}

fn pluralize<'a>(one: &'a str, many: &'a str, n: usize) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// Go's `joinQuote`: `"a", "b"`.
fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("{:?}", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers.iter().chain(spec.containers.iter())
}

fn names_where(spec: &PodSpec, f: impl Fn(&Container) -> bool) -> Vec<String> {
    containers(spec)
        .filter(|c| f(c))
        .map(|c| c.name.clone())
        .collect()
}

/// `containers "a", "b"` (or the singular).
fn which(names: &[String]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// Capabilities baseline allows adding (Docker's default set).
const BASELINE_CAPS: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls baseline allows.
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

fn check_allow_privilege_escalation(spec: &PodSpec) -> Option<Violation> {
    let bad = names_where(spec, |c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.allow_privilege_escalation)
            != Some(false)
    });
    if bad.is_empty() {
        return None;
    }
    v(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            which(&bad)
        ),
    )
}

fn added_caps(c: &Container) -> impl Iterator<Item = &String> {
    c.security_context
        .iter()
        .filter_map(|s| s.capabilities.as_ref())
        .flat_map(|caps| caps.add.iter())
}

fn check_capabilities_baseline(spec: &PodSpec) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut caps = BTreeSet::new();
    for c in containers(spec) {
        let mut found = false;
        for cap in added_caps(c) {
            if !BASELINE_CAPS.contains(&cap.as_str()) {
                caps.insert(cap.clone());
                found = true;
            }
        }
        if found {
            bad.push(c.name.clone());
        }
    }
    if bad.is_empty() {
        return None;
    }
    let caps: Vec<String> = caps.into_iter().collect();
    v(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            which(&bad),
            join_quote(&caps)
        ),
    )
}

fn check_capabilities_restricted(spec: &PodSpec) -> Option<Violation> {
    let mut no_drop = Vec::new();
    let mut adding = Vec::new();
    let mut caps = BTreeSet::new();
    for c in containers(spec) {
        let drops_all = c
            .security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .is_some_and(|caps| caps.drop.iter().any(|d| d == "ALL"));
        if !drops_all {
            no_drop.push(c.name.clone());
        }
        let mut found = false;
        for cap in added_caps(c) {
            if cap != "NET_BIND_SERVICE" {
                caps.insert(cap.clone());
                found = true;
            }
        }
        if found {
            adding.push(c.name.clone());
        }
    }
    let mut details = Vec::new();
    if !no_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            which(&no_drop)
        ));
    }
    if !adding.is_empty() {
        let caps: Vec<String> = caps.into_iter().collect();
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            which(&adding),
            join_quote(&caps)
        ));
    }
    if details.is_empty() {
        return None;
    }
    v("unrestricted capabilities", details.join("; "))
}

fn check_host_namespaces(spec: &PodSpec) -> Option<Violation> {
    let mut found = Vec::new();
    if spec.host_network == Some(true) {
        found.push("hostNetwork=true");
    }
    if spec.host_pid == Some(true) {
        found.push("hostPID=true");
    }
    if spec.host_ipc == Some(true) {
        found.push("hostIPC=true");
    }
    if found.is_empty() {
        return None;
    }
    v("host namespaces", found.join(", "))
}

fn check_host_path_volumes(spec: &PodSpec) -> Option<Violation> {
    let bad: Vec<&str> = spec
        .volumes
        .iter()
        .filter(|v| v.host_path.is_some())
        .map(|v| v.name.as_str())
        .collect();
    if bad.is_empty() {
        return None;
    }
    v(
        "hostPath volumes",
        format!(
            "{} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad)
        ),
    )
}

fn check_host_ports(spec: &PodSpec) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut ports = BTreeSet::new();
    for c in containers(spec) {
        let mut found = false;
        for p in &c.ports {
            if let Some(hp) = p.host_port.filter(|hp| *hp != 0) {
                ports.insert(hp.to_string());
                found = true;
            }
        }
        if found {
            bad.push(c.name.clone());
        }
    }
    if bad.is_empty() {
        return None;
    }
    let ports: Vec<String> = ports.into_iter().collect();
    v(
        "hostPort",
        format!(
            "{} {} {} {}",
            which(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.join(", ")
        ),
    )
}

fn check_privileged(spec: &PodSpec) -> Option<Violation> {
    let bad = names_where(spec, |c| {
        c.security_context.as_ref().and_then(|s| s.privileged) == Some(true)
    });
    if bad.is_empty() {
        return None;
    }
    v(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            which(&bad)
        ),
    )
}

fn check_proc_mount(spec: &PodSpec) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for c in containers(spec) {
        if let Some(pm) = c
            .security_context
            .as_ref()
            .and_then(|s| s.proc_mount.as_ref())
        {
            if pm != "Default" {
                bad.push(c.name.clone());
                types.insert(pm.clone());
            }
        }
    }
    if bad.is_empty() {
        return None;
    }
    let types: Vec<String> = types.into_iter().collect();
    v(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            which(&bad),
            join_quote(&types)
        ),
    )
}

fn check_restricted_volumes(spec: &PodSpec) -> Option<Violation> {
    // Of the volume sources kapsel knows, only hostPath is outside restricted's allowed list
    // (configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret).
    let bad: Vec<&str> = spec
        .volumes
        .iter()
        .filter(|v| v.host_path.is_some())
        .map(|v| v.name.as_str())
        .collect();
    if bad.is_empty() {
        return None;
    }
    v(
        "restricted volume types",
        format!(
            "{} {} {} {} \"hostPath\"",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad),
            pluralize("uses", "use", bad.len()),
            "restricted volume type",
        ),
    )
}

fn check_run_as_non_root(spec: &PodSpec) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut pod_ok = false;
    match spec
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root)
    {
        Some(false) => setters.push("pod".to_string()),
        Some(true) => pod_ok = true,
        None => {}
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in containers(spec) {
        match c.security_context.as_ref().and_then(|s| s.run_as_non_root) {
            Some(false) => explicit.push(c.name.clone()),
            Some(true) => {}
            None if pod_ok => {}
            None => implicit.push(c.name.clone()),
        }
    }
    if !explicit.is_empty() {
        setters.push(which(&explicit));
    }
    let mut details = Vec::new();
    if !setters.is_empty() {
        details.push(format!(
            "{} must not set securityContext.runAsNonRoot=false",
            setters.join(" and ")
        ));
    }
    if !implicit.is_empty() {
        details.push(format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            which(&implicit)
        ));
    }
    if details.is_empty() {
        return None;
    }
    v("runAsNonRoot != true", details.join("; "))
}

fn check_run_as_user(spec: &PodSpec) -> Option<Violation> {
    let mut setters = Vec::new();
    if spec.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0) {
        setters.push("pod".to_string());
    }
    let bad = names_where(spec, |c| {
        c.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0)
    });
    if !bad.is_empty() {
        setters.push(which(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    v(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters.join(" and ")),
    )
}

fn pod_seccomp(spec: &PodSpec) -> Option<&str> {
    spec.security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str())
}

fn container_seccomp(c: &Container) -> Option<&str> {
    c.security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str())
}

fn check_seccomp_baseline(spec: &PodSpec) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    if pod_seccomp(spec) == Some("Unconfined") {
        setters.push("pod".to_string());
        values.insert("Unconfined".to_string());
    }
    let bad = names_where(spec, |c| container_seccomp(c) == Some("Unconfined"));
    if !bad.is_empty() {
        setters.push(which(&bad));
        values.insert("Unconfined".to_string());
    }
    if setters.is_empty() {
        return None;
    }
    let values: Vec<String> = values.into_iter().collect();
    v(
        "seccompProfile",
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

fn check_seccomp_restricted(spec: &PodSpec) -> Option<Violation> {
    let valid = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    let mut pod_set = false;
    if let Some(t) = pod_seccomp(spec) {
        if valid(t) {
            pod_set = true;
        } else {
            setters.push("pod".to_string());
            values.insert(t.to_string());
        }
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in containers(spec) {
        match container_seccomp(c) {
            Some(t) if valid(t) => {}
            Some(t) => {
                explicit.push(c.name.clone());
                values.insert(t.to_string());
            }
            None if pod_set => {}
            None => implicit.push(c.name.clone()),
        }
    }
    if !explicit.is_empty() {
        setters.push(which(&explicit));
    }
    let mut details = Vec::new();
    if !setters.is_empty() {
        let values: Vec<String> = values.into_iter().collect();
        details.push(format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters.join(" and "),
            join_quote(&values)
        ));
    }
    if !implicit.is_empty() {
        details.push(format!(
            "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
            which(&implicit)
        ));
    }
    if details.is_empty() {
        return None;
    }
    v("seccompProfile", details.join("; "))
}

fn check_sysctls(spec: &PodSpec) -> Option<Violation> {
    let bad: Vec<&str> = spec
        .security_context
        .iter()
        .flat_map(|s| s.sysctls.iter())
        .map(|s| s.name.as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .collect();
    if bad.is_empty() {
        return None;
    }
    v("forbidden sysctls", bad.join(", "))
}

type Check = fn(&PodSpec) -> Option<Violation>;

/// The checks of a level, in the order of their Kubernetes check IDs; a restricted check
/// replaces the baseline check it overrides (capabilities, hostPath volumes, seccomp).
fn checks(level: Level) -> &'static [Check] {
    match level {
        Level::Privileged => &[],
        Level::Baseline => &[
            check_capabilities_baseline,
            check_host_namespaces,
            check_host_path_volumes,
            check_host_ports,
            check_privileged,
            check_proc_mount,
            check_seccomp_baseline,
            check_sysctls,
        ],
        Level::Restricted => &[
            check_allow_privilege_escalation,
            check_capabilities_restricted,
            check_host_namespaces,
            check_host_ports,
            check_privileged,
            check_proc_mount,
            check_restricted_volumes,
            check_run_as_non_root,
            check_run_as_user,
            check_seccomp_restricted,
            check_sysctls,
        ],
    }
}

/// Every violation of `level` by a pod spec.
pub fn violations(level: Level, spec: &PodSpec) -> Vec<Violation> {
    checks(level).iter().filter_map(|c| c(spec)).collect()
}

fn summary(lv: &LevelVersion, violations: &[Violation]) -> String {
    let list: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
    format!("PodSecurity \"{lv}\": {}", list.join(", "))
}

/// What admission does with a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The reason of a 403 (`violates PodSecurity "baseline:latest": …`).
    pub forbidden: Option<String>,
    /// `Warning` headers.
    pub warnings: Vec<String>,
    /// Audit annotations (key, value).
    pub audit: Vec<(String, String)>,
}

/// Evaluate a pod (its metadata and spec) against a namespace's policy.
pub fn evaluate(policy: &Policy, _meta: &ObjectMeta, spec: &PodSpec) -> Decision {
    let mut d = Decision::default();
    let enforced = violations(policy.enforce.level, spec);
    if !enforced.is_empty() {
        d.forbidden = Some(format!("violates {}", summary(&policy.enforce, &enforced)));
        d.audit.push((
            "pod-security.kubernetes.io/enforce-policy".into(),
            policy.enforce.to_string(),
        ));
    }
    if policy.warn.level > policy.enforce.level || d.forbidden.is_none() {
        let warned = violations(policy.warn.level, spec);
        if !warned.is_empty() && policy.warn != policy.enforce {
            d.warnings
                .push(format!("would violate {}", summary(&policy.warn, &warned)));
        }
    }
    let audited = violations(policy.audit.level, spec);
    if !audited.is_empty() {
        d.audit.push((
            AUDIT_VIOLATIONS.into(),
            format!("would violate {}", summary(&policy.audit, &audited)),
        ));
    }
    d
}

/// Whether a pod update needs evaluating: Kubernetes skips updates that change nothing in the
/// spec but container images (and metadata/status updates).
pub fn significant_update(old: &PodSpec, new: &PodSpec) -> bool {
    let mut o = old.clone();
    for (oc, nc) in o
        .init_containers
        .iter_mut()
        .zip(new.init_containers.iter())
        .chain(o.containers.iter_mut().zip(new.containers.iter()))
    {
        oc.image = nc.image.clone();
    }
    &o != new
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{
        Capabilities, ContainerPort, HostPathVolumeSource, PodSecurityContext, SeccompProfile,
        SecurityContext, Sysctl, Volume,
    };

    fn c(name: &str, sc: Option<SecurityContext>) -> Container {
        Container {
            name: name.into(),
            image: Some("busybox".into()),
            security_context: sc,
            ..Default::default()
        }
    }

    fn spec(cs: Vec<Container>) -> PodSpec {
        PodSpec {
            containers: cs,
            ..Default::default()
        }
    }

    /// A container that satisfies restricted.
    fn good_sc() -> SecurityContext {
        SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: vec!["ALL".into()],
                add: vec![],
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn msgs(level: Level, s: &PodSpec) -> Vec<String> {
        violations(level, s).iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn baseline_checks_and_messages() {
        let privileged = SecurityContext {
            privileged: Some(true),
            ..Default::default()
        };
        let caps = |add: &[&str]| SecurityContext {
            capabilities: Some(Capabilities {
                add: add.iter().map(|s| s.to_string()).collect(),
                drop: vec![],
            }),
            ..Default::default()
        };
        let mut host = spec(vec![c("c", None)]);
        host.host_network = Some(true);
        host.host_pid = Some(true);
        host.host_ipc = Some(true);
        let mut vols = spec(vec![c("c", None)]);
        vols.volumes = ["a", "b"]
            .iter()
            .map(|n| Volume {
                name: n.to_string(),
                host_path: Some(HostPathVolumeSource {
                    path: "/".into(),
                    type_: None,
                }),
                ..Default::default()
            })
            .collect();
        let mut ports = spec(vec![c("a", None), c("b", None)]);
        for (i, cont) in ports.containers.iter_mut().enumerate() {
            cont.ports = vec![ContainerPort {
                container_port: 80,
                host_port: Some(8080 + i as i32),
                ..Default::default()
            }];
        }
        let mut sysctl = spec(vec![c("c", None)]);
        sysctl.security_context = Some(PodSecurityContext {
            sysctls: vec![
                Sysctl {
                    name: "kernel.shm_rmid_forced".into(),
                    value: "1".into(),
                },
                Sysctl {
                    name: "kernel.msgmax".into(),
                    value: "1".into(),
                },
            ],
            ..Default::default()
        });
        let mut unconfined = spec(vec![c(
            "c",
            Some(SecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "Unconfined".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
        )]);
        unconfined.security_context = Some(PodSecurityContext {
            seccomp_profile: Some(SeccompProfile {
                type_: "Unconfined".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        });
        let table: Vec<(&str, PodSpec, Vec<&str>)> = vec![
            ("plain pod", spec(vec![c("c", None)]), vec![]),
            (
                "privileged",
                spec(vec![c("c", Some(privileged.clone()))]),
                vec!["privileged (container \"c\" must not set securityContext.privileged=true)"],
            ),
            (
                "two privileged",
                spec(vec![c("a", Some(privileged.clone())), c("b", Some(privileged))]),
                vec!["privileged (containers \"a\", \"b\" must not set securityContext.privileged=true)"],
            ),
            ("default caps", spec(vec![c("c", Some(caps(&["CHOWN", "NET_BIND_SERVICE"])))]), vec![]),
            (
                "dangerous caps",
                spec(vec![c("c", Some(caps(&["SYS_ADMIN", "CHOWN", "NET_ADMIN"])))]),
                vec!["non-default capabilities (container \"c\" must not include \"NET_ADMIN\", \"SYS_ADMIN\" in securityContext.capabilities.add)"],
            ),
            (
                "host namespaces",
                host,
                vec!["host namespaces (hostNetwork=true, hostPID=true, hostIPC=true)"],
            ),
            ("hostPath", vols, vec!["hostPath volumes (volumes \"a\", \"b\")"]),
            (
                "hostPorts",
                ports,
                vec!["hostPort (containers \"a\", \"b\" use hostPorts 8080, 8081)"],
            ),
            ("sysctls", sysctl, vec!["forbidden sysctls (kernel.msgmax)"]),
            (
                "unconfined",
                unconfined,
                vec!["seccompProfile (pod and container \"c\" must not set securityContext.seccompProfile.type to \"Unconfined\")"],
            ),
            (
                "procMount",
                spec(vec![c(
                    "c",
                    Some(SecurityContext {
                        proc_mount: Some("Unmasked".into()),
                        ..Default::default()
                    }),
                )]),
                vec!["procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")"],
            ),
        ];
        for (name, s, want) in table {
            assert_eq!(msgs(Level::Baseline, &s), want, "{name}");
            assert!(msgs(Level::Privileged, &s).is_empty(), "{name}");
        }
    }

    #[test]
    fn restricted_checks_and_messages() {
        let mut root = good_sc();
        root.run_as_user = Some(0);
        let mut adds = good_sc();
        adds.capabilities.as_mut().unwrap().add = vec!["NET_BIND_SERVICE".into(), "CHOWN".into()];
        let mut pod_level = spec(vec![c(
            "c",
            Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: vec!["ALL".into()],
                    add: vec![],
                }),
                ..Default::default()
            }),
        )]);
        pod_level.security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "Localhost".into(),
                localhost_profile: Some("p.json".into()),
            }),
            ..Default::default()
        });
        let mut explicit_false = good_sc();
        explicit_false.run_as_non_root = Some(false);
        let mut hp = spec(vec![c("c", Some(good_sc()))]);
        hp.volumes = vec![Volume {
            name: "h".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/".into(),
                type_: None,
            }),
            ..Default::default()
        }];
        let table: Vec<(&str, PodSpec, Vec<&str>)> = vec![
            ("good", spec(vec![c("c", Some(good_sc()))]), vec![]),
            ("pod-level settings", pod_level, vec![]),
            (
                "nothing set",
                spec(vec![c("c", None)]),
                vec![
                    "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)",
                    "unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"])",
                    "runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true)",
                    "seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
                ],
            ),
            (
                "runs as root",
                spec(vec![c("c", Some(root))]),
                vec!["runAsUser=0 (container \"c\" must not set runAsUser=0)"],
            ),
            (
                "runAsNonRoot false",
                spec(vec![c("a", Some(explicit_false)), c("b", None)]),
                vec![
                    "allowPrivilegeEscalation != false (container \"b\" must set securityContext.allowPrivilegeEscalation=false)",
                    "unrestricted capabilities (container \"b\" must set securityContext.capabilities.drop=[\"ALL\"])",
                    "runAsNonRoot != true (container \"a\" must not set securityContext.runAsNonRoot=false; pod or container \"b\" must set securityContext.runAsNonRoot=true)",
                    "seccompProfile (pod or container \"b\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
                ],
            ),
            (
                "adds caps",
                spec(vec![c("c", Some(adds))]),
                vec!["unrestricted capabilities (container \"c\" must not include \"CHOWN\" in securityContext.capabilities.add)"],
            ),
            (
                "hostPath",
                hp,
                vec!["restricted volume types (volume \"h\" uses restricted volume type \"hostPath\")"],
            ),
        ];
        for (name, s, want) in table {
            assert_eq!(msgs(Level::Restricted, &s), want, "{name}");
        }
    }

    #[test]
    fn policy_from_labels() {
        let lv = |l, v: &str| LevelVersion {
            level: l,
            version: v.into(),
        };
        let table = vec![
            (
                "default",
                labels(&[]),
                lv(Level::Baseline, "latest"),
                lv(Level::Privileged, "latest"),
            ),
            (
                "kube-system",
                labels(&[(ENFORCE, "restricted")]),
                lv(Level::Privileged, "latest"),
                lv(Level::Privileged, "latest"),
            ),
            (
                "apps",
                labels(&[
                    (ENFORCE, "restricted"),
                    ("pod-security.kubernetes.io/enforce-version", "v1.30"),
                    (WARN, "restricted"),
                ]),
                lv(Level::Restricted, "v1.30"),
                lv(Level::Restricted, "latest"),
            ),
            (
                "apps",
                labels(&[(ENFORCE, "privileged")]),
                lv(Level::Privileged, "latest"),
                lv(Level::Privileged, "latest"),
            ),
            (
                "bad",
                labels(&[(ENFORCE, "nonsense")]),
                lv(Level::Restricted, "latest"),
                lv(Level::Privileged, "latest"),
            ),
            (
                "badversion",
                labels(&[
                    (ENFORCE, "baseline"),
                    ("pod-security.kubernetes.io/enforce-version", "2"),
                ]),
                lv(Level::Restricted, "latest"),
                lv(Level::Privileged, "latest"),
            ),
        ];
        for (ns, l, enforce, warn) in table {
            let p = policy(ns, &l);
            assert_eq!((p.enforce, p.warn), (enforce, warn), "{ns} {l:?}");
        }
        assert!(label_errors(&labels(&[
            (ENFORCE, "baseline"),
            ("pod-security.kubernetes.io/warn-version", "v1.29")
        ]))
        .is_empty());
        let errs = label_errors(&labels(&[
            (ENFORCE, "nonsense"),
            ("pod-security.kubernetes.io/audit-version", "v2"),
        ]));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(
            errs[0].field,
            "metadata.labels[pod-security.kubernetes.io/enforce]"
        );
    }

    #[test]
    fn evaluate_modes() {
        let priv_pod = spec(vec![c(
            "c",
            Some(SecurityContext {
                privileged: Some(true),
                ..Default::default()
            }),
        )]);
        let meta = ObjectMeta::default();
        let d = evaluate(&policy("default", &labels(&[])), &meta, &priv_pod);
        assert_eq!(
            d.forbidden.as_deref(),
            Some("violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)")
        );
        assert!(d.warnings.is_empty());

        let d = evaluate(
            &policy(
                "apps",
                &labels(&[
                    (ENFORCE, "privileged"),
                    (WARN, "baseline"),
                    (AUDIT, "baseline"),
                ]),
            ),
            &meta,
            &priv_pod,
        );
        assert_eq!(d.forbidden, None);
        assert_eq!(
            d.warnings,
            vec!["would violate PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"]
        );
        assert_eq!(d.audit.len(), 1);
        assert_eq!(d.audit[0].0, AUDIT_VIOLATIONS);

        // Allowed by baseline, warned by restricted.
        let plain = spec(vec![c("c", None)]);
        let d = evaluate(
            &policy("apps", &labels(&[(WARN, "restricted")])),
            &meta,
            &plain,
        );
        assert_eq!(d.forbidden, None);
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].starts_with(
            "would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"
        ));

        // Exempt namespace.
        assert_eq!(
            evaluate(&policy("kube-system", &labels(&[])), &meta, &priv_pod),
            Decision::default()
        );
    }

    #[test]
    fn significant_updates() {
        let a = spec(vec![c("c", None)]);
        let mut b = a.clone();
        b.containers[0].image = Some("busybox:2".into());
        assert!(!significant_update(&a, &b));
        b.active_deadline_seconds = Some(5);
        assert!(significant_update(&a, &b));
    }
}
