//! Container environment (pure, table-tested): image env, `envFrom`, `env` with `value`,
//! `fieldRef`, `resourceFieldRef`, `configMapKeyRef`, `secretKeyRef`, and `$(VAR)` expansion.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use kapsel_api::{ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret};

use crate::error::{AgentError, Result};

/// Objects and facts environment values may come from.
#[derive(Clone, Debug, Default)]
pub struct EnvSources {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    pub node_name: String,
    pub host_ip: String,
    pub pod_ip: String,
    /// Node allocatable, the default of `limits.*` fields.
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
}

/// ConfigMaps and Secrets a pod uses (env, envFrom, volumes).
pub fn references(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    for c in spec.init_containers.iter().chain(&spec.containers) {
        for e in &c.env_from {
            if let Some(n) = e.config_map_ref.as_ref().and_then(|r| r.name.clone()) {
                cms.insert(n);
            }
            if let Some(n) = e.secret_ref.as_ref().and_then(|r| r.name.clone()) {
                secrets.insert(n);
            }
        }
        for e in &c.env {
            let Some(vf) = &e.value_from else { continue };
            if let Some(n) = vf.config_map_key_ref.as_ref().and_then(|r| r.name.clone()) {
                cms.insert(n);
            }
            if let Some(n) = vf.secret_key_ref.as_ref().and_then(|r| r.name.clone()) {
                secrets.insert(n);
            }
        }
    }
    for v in &spec.volumes {
        if let Some(n) = v.config_map.as_ref().and_then(|c| c.name.clone()) {
            cms.insert(n);
        }
        if let Some(n) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(n);
        }
    }
    (cms, secrets)
}

/// Decoded secret data.
pub fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (k, v) in &s.data {
        if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(v) {
            out.insert(k.clone(), b);
        }
    }
    for (k, v) in &s.string_data {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// ConfigMap data, binaryData decoded.
pub fn config_map_data(c: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = c
        .data
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in &c.binary_data {
        if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(v) {
            out.insert(k.clone(), b);
        }
    }
    out
}

/// `metadata.labels['app']` → `("metadata.labels", "app")`.
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (head, rest) = path.split_once('[')?;
    let key = rest
        .strip_suffix(']')?
        .trim_matches(|c| c == '\'' || c == '"');
    Some((head, key))
}

/// The value of a `fieldRef` (env and downward API files).
pub fn field_value(pod: &Pod, f: &ObjectFieldSelector, src: &EnvSources) -> Result<String> {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let v = match f.field_path.as_str() {
        "metadata.name" => m.name().to_string(),
        "metadata.namespace" => m.namespace().to_string(),
        "metadata.uid" => m.uid().to_string(),
        "metadata.labels" => format_map(&m.labels),
        "metadata.annotations" => format_map(&m.annotations),
        "spec.nodeName" => spec
            .node_name
            .clone()
            .unwrap_or_else(|| src.node_name.clone()),
        "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => src.host_ip.clone(),
        "status.podIP" | "status.podIPs" => src.pod_ip.clone(),
        other => match subscript(other) {
            Some(("metadata.labels", k)) => m.labels.get(k).cloned().unwrap_or_default(),
            Some(("metadata.annotations", k)) => m.annotations.get(k).cloned().unwrap_or_default(),
            _ => {
                return Err(AgentError::Config(format!(
                    "unsupported fieldRef path {other:?}"
                )))
            }
        },
    };
    Ok(v)
}

/// Downward API map format: `key="value"` lines, sorted.
fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a `resourceFieldRef` for container `default_container`.
pub fn resource_value(
    pod: &Pod,
    default_container: &str,
    r: &ResourceFieldSelector,
    src: &EnvSources,
) -> Result<String> {
    let cname = r.container_name.as_deref().unwrap_or(default_container);
    let spec = pod.spec.clone().unwrap_or_default();
    let c = spec
        .containers
        .iter()
        .chain(&spec.init_containers)
        .find(|c| c.name == cname)
        .ok_or_else(|| AgentError::Config(format!("resourceFieldRef: no container {cname:?}")))?;
    let res = c.resources.clone().unwrap_or_default();
    let (kind, which) = r
        .resource
        .split_once('.')
        .ok_or_else(|| AgentError::Config(format!("unsupported resource {:?}", r.resource)))?;
    let list = if kind == "limits" {
        &res.limits
    } else {
        &res.requests
    };
    let is_cpu = which == "cpu";
    // In milli-units for cpu, units otherwise.
    let amount: i64 = match list.get(which) {
        Some(q) if is_cpu => q
            .milli_value()
            .map_err(|e| AgentError::Config(e.to_string()))?,
        Some(q) => q.value().map_err(|e| AgentError::Config(e.to_string()))?,
        None if kind == "limits" && is_cpu => i64::try_from(src.node_cpu_millis).unwrap_or(0),
        None if kind == "limits" => i64::try_from(src.node_memory_bytes).unwrap_or(0),
        None => 0,
    };
    let divisor: i64 = match &r.divisor {
        Some(d) if is_cpu => d
            .milli_value()
            .map_err(|e| AgentError::Config(e.to_string()))?,
        Some(d) => d.value().map_err(|e| AgentError::Config(e.to_string()))?,
        None if is_cpu => 1000,
        None => 1,
    }
    .max(1);
    // Rounded up, as Kubernetes.
    Ok(((amount + divisor - 1) / divisor).to_string())
}

/// Expand `$(NAME)` from `vars`; `$$(NAME)` is a literal `$(NAME)`; unknown names stay.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The container's environment as `KEY=VALUE`, image env first, in Kubernetes' precedence.
pub fn resolve(
    pod: &Pod,
    c: &Container,
    image_env: &[String],
    src: &EnvSources,
) -> Result<Vec<String>> {
    let ns = pod.metadata.namespace();
    let mut order: Vec<String> = Vec::new();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let set =
        |k: String, v: String, order: &mut Vec<String>, vars: &mut BTreeMap<String, String>| {
            if !vars.contains_key(&k) {
                order.push(k.clone());
            }
            vars.insert(k, v);
        };
    for kv in image_env {
        if let Some((k, v)) = kv.split_once('=') {
            set(k.into(), v.into(), &mut order, &mut vars);
        }
    }
    for ef in &c.env_from {
        let prefix = ef.prefix.clone().unwrap_or_default();
        // configMapRef and secretRef differ only in where the data comes from.
        let sources = [
            ef.config_map_ref.as_ref().map(|r| {
                let name = r.name.clone().unwrap_or_default();
                let data = src.config_maps.get(&name).map(config_map_data);
                ("configmap", name, r.optional, data)
            }),
            ef.secret_ref.as_ref().map(|r| {
                let name = r.name.clone().unwrap_or_default();
                let data = src.secrets.get(&name).map(secret_data);
                ("secret", name, r.optional, data)
            }),
        ];
        for (kind, name, optional, data) in sources.into_iter().flatten() {
            match data {
                Some(data) => {
                    for (k, v) in data {
                        set(
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                            &mut order,
                            &mut vars,
                        );
                    }
                }
                None if optional == Some(true) => {}
                None => return Err(AgentError::Config(format!("{kind} \"{name}\" not found"))),
            }
        }
    }
    for e in &c.env {
        let v = if let Some(vf) = &e.value_from {
            if let Some(f) = &vf.field_ref {
                Some(field_value(pod, f, src)?)
            } else if let Some(r) = &vf.resource_field_ref {
                Some(resource_value(pod, &c.name, r, src)?)
            } else if let Some(k) = &vf.config_map_key_ref {
                let name = k.name.clone().unwrap_or_default();
                match src.config_maps.get(&name).map(config_map_data) {
                    Some(d) => match d.get(&k.key) {
                        Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                        None if k.optional == Some(true) => None,
                        None => {
                            return Err(AgentError::Config(format!(
                                "couldn't find key {} in ConfigMap {ns}/{name}",
                                k.key
                            )))
                        }
                    },
                    None if k.optional == Some(true) => None,
                    None => {
                        return Err(AgentError::Config(format!(
                            "configmap \"{name}\" not found"
                        )))
                    }
                }
            } else if let Some(k) = &vf.secret_key_ref {
                let name = k.name.clone().unwrap_or_default();
                match src.secrets.get(&name).map(secret_data) {
                    Some(d) => match d.get(&k.key) {
                        Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                        None if k.optional == Some(true) => None,
                        None => {
                            return Err(AgentError::Config(format!(
                                "couldn't find key {} in Secret {ns}/{name}",
                                k.key
                            )))
                        }
                    },
                    None if k.optional == Some(true) => None,
                    None => return Err(AgentError::Config(format!("secret \"{name}\" not found"))),
                }
            } else {
                None
            }
        } else {
            Some(expand(e.value.as_deref().unwrap_or(""), &vars))
        };
        if let Some(v) = v {
            set(e.name.clone(), v, &mut order, &mut vars);
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|k| vars.get(&k).map(|v| format!("{k}={v}")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{
        EnvFromSource, EnvVar, EnvVarSource, KeySelector, ObjectMeta, OptionalRef, PodSpec,
        Quantity, ResourceRequirements,
    };

    fn pod_with(env: Vec<EnvVar>, env_from: Vec<EnvFromSource>) -> Pod {
        let mut p = Pod::with_meta(ObjectMeta {
            name: Some("web".into()),
            namespace: Some("prod".into()),
            uid: Some("u-1".into()),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        });
        let mut res = ResourceRequirements::default();
        res.limits.insert("memory".into(), Quantity::new("64Mi"));
        res.requests.insert("cpu".into(), Quantity::new("250m"));
        p.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            containers: vec![Container {
                name: "c".into(),
                env,
                env_from,
                resources: Some(res),
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    fn field(path: &str) -> Option<EnvVarSource> {
        Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..Default::default()
        })
    }

    fn sources() -> EnvSources {
        let mut cm = ConfigMap::default();
        cm.data.insert("color".into(), "blue".into());
        cm.data.insert("size".into(), "xl".into());
        let mut s = Secret::default();
        s.data.insert(
            "password".into(),
            base64::engine::general_purpose::STANDARD.encode("hunter2"),
        );
        EnvSources {
            config_maps: [("cfg".to_string(), cm)].into(),
            secrets: [("creds".to_string(), s)].into(),
            node_name: "n1".into(),
            host_ip: "10.0.0.9".into(),
            pod_ip: "10.1.0.5".into(),
            node_cpu_millis: 4000,
            node_memory_bytes: 8 << 30,
        }
    }

    fn ev(name: &str, value: Option<&str>, vf: Option<EnvVarSource>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.map(str::to_string),
            value_from: vf,
        }
    }

    #[test]
    fn all_sources() {
        let env = vec![
            ev("A", Some("1"), None),
            ev("B", Some("$(A)-x $$(A) $(NOPE)"), None),
            ev("POD", None, field("metadata.name")),
            ev("NS", None, field("metadata.namespace")),
            ev("UID", None, field("metadata.uid")),
            ev("APP", None, field("metadata.labels['app']")),
            ev("NODE", None, field("spec.nodeName")),
            ev("IP", None, field("status.podIP")),
            ev("HOSTIP", None, field("status.hostIP")),
            ev(
                "MEM",
                None,
                Some(EnvVarSource {
                    resource_field_ref: Some(ResourceFieldSelector {
                        container_name: None,
                        resource: "limits.memory".into(),
                        divisor: Some(Quantity::new("1Mi")),
                    }),
                    ..Default::default()
                }),
            ),
            ev(
                "CPU",
                None,
                Some(EnvVarSource {
                    resource_field_ref: Some(ResourceFieldSelector {
                        container_name: Some("c".into()),
                        resource: "requests.cpu".into(),
                        divisor: Some(Quantity::new("1m")),
                    }),
                    ..Default::default()
                }),
            ),
            ev(
                "CPULIM",
                None,
                Some(EnvVarSource {
                    resource_field_ref: Some(ResourceFieldSelector {
                        container_name: None,
                        resource: "limits.cpu".into(),
                        divisor: None,
                    }),
                    ..Default::default()
                }),
            ),
            ev(
                "COLOR",
                None,
                Some(EnvVarSource {
                    config_map_key_ref: Some(KeySelector {
                        name: Some("cfg".into()),
                        key: "color".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            ),
            ev(
                "PW",
                None,
                Some(EnvVarSource {
                    secret_key_ref: Some(KeySelector {
                        name: Some("creds".into()),
                        key: "password".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            ),
            ev(
                "OPT",
                None,
                Some(EnvVarSource {
                    config_map_key_ref: Some(KeySelector {
                        name: Some("missing".into()),
                        key: "k".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                }),
            ),
        ];
        let from = vec![
            EnvFromSource {
                prefix: Some("CFG_".into()),
                config_map_ref: Some(OptionalRef {
                    name: Some("cfg".into()),
                    optional: None,
                }),
                secret_ref: None,
            },
            EnvFromSource {
                prefix: None,
                config_map_ref: None,
                secret_ref: Some(OptionalRef {
                    name: Some("creds".into()),
                    optional: None,
                }),
            },
        ];
        let p = pod_with(env, from);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let got = resolve(&p, c, &["PATH=/bin".into(), "A=image".into()], &sources()).unwrap();
        let want = [
            "PATH=/bin",
            "A=1",
            "CFG_color=blue",
            "CFG_size=xl",
            "password=hunter2",
            "B=1-x $(A) $(NOPE)",
            "POD=web",
            "NS=prod",
            "UID=u-1",
            "APP=web",
            "NODE=n1",
            "IP=10.1.0.5",
            "HOSTIP=10.0.0.9",
            "MEM=64",
            "CPU=250",
            "CPULIM=4",
            "COLOR=blue",
            "PW=hunter2",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn missing_references_are_config_errors() {
        let cases = vec![
            (
                ev(
                    "X",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: Some(KeySelector {
                            name: Some("nope".into()),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                ),
                "configmap \"nope\" not found",
            ),
            (
                ev(
                    "X",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: Some(KeySelector {
                            name: Some("cfg".into()),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                ),
                "couldn't find key k in ConfigMap prod/cfg",
            ),
            (
                ev(
                    "X",
                    None,
                    Some(EnvVarSource {
                        secret_key_ref: Some(KeySelector {
                            name: Some("nope".into()),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                ),
                "secret \"nope\" not found",
            ),
            (
                ev("X", None, field("spec.bogus")),
                "unsupported fieldRef path \"spec.bogus\"",
            ),
        ];
        for (e, want) in cases {
            let p = pod_with(vec![e], vec![]);
            let c = &p.spec.as_ref().unwrap().containers[0];
            let err = resolve(&p, c, &[], &sources()).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn references_collects_env_and_volumes() {
        let p = pod_with(
            vec![ev(
                "C",
                None,
                Some(EnvVarSource {
                    config_map_key_ref: Some(KeySelector {
                        name: Some("a".into()),
                        key: "k".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            )],
            vec![EnvFromSource {
                prefix: None,
                config_map_ref: None,
                secret_ref: Some(OptionalRef {
                    name: Some("s".into()),
                    optional: None,
                }),
            }],
        );
        let (c, s) = references(&p);
        assert!(c.contains("a"));
        assert!(s.contains("s"));
    }
}
