//! The image configuration (the OCI / Docker config blob) and how Kubernetes applies it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};

/// A port the image declares (`ExposedPorts`: `"80/tcp"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExposedPort {
    pub port: u16,
    /// `tcp`, `udp` or `sctp`
    pub protocol: String,
}

/// What of the image config a container start needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries, in the image's order.
    pub env: Vec<String>,
    /// Empty when the image sets none (the runtime then uses `/`).
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty for root.
    pub user: String,
    pub exposed_ports: Vec<ExposedPort>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    /// `linux`, …
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// Uncompressed layer digests, bottom first (`rootfs.diff_ids`).
    pub diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RawConfig>,
    rootfs: RawRootfs,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    stop_signal: Option<String>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    diff_ids: Vec<String>,
}

impl ImageConfig {
    /// Parse an OCI image config or a Docker image config (`application/vnd.docker.container.image.v1+json`).
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let raw: RawConfigFile = serde_json::from_slice(bytes)
            .map_err(|e| ImageError::InvalidContent(format!("image config: {e}")))?;
        if raw.rootfs.kind != "layers" {
            return Err(ImageError::InvalidContent(format!(
                "image config: rootfs type {:?} (want \"layers\")",
                raw.rootfs.kind
            )));
        }
        for d in &raw.rootfs.diff_ids {
            crate::reference::validate_digest(d)
                .map_err(|e| ImageError::InvalidContent(format!("image config diff_ids: {e}")))?;
        }
        let c = raw.config.unwrap_or_default();
        let mut exposed_ports = Vec::new();
        for key in c.exposed_ports.unwrap_or_default().into_keys() {
            let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            let port = port.parse::<u16>().map_err(|_| {
                ImageError::InvalidContent(format!("image config: exposed port {key:?}"))
            })?;
            exposed_ports.push(ExposedPort {
                port,
                protocol: proto.to_ascii_lowercase(),
            });
        }
        exposed_ports.sort();
        Ok(ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            exposed_ports,
            labels: c.labels.unwrap_or_default(),
            stop_signal: c.stop_signal,
            os: raw.os,
            architecture: raw.architecture,
            diff_ids: raw.rootfs.diff_ids,
        })
    }
}

/// The argv a container runs, with Kubernetes' rules
/// (<https://kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container/#notes>):
///
/// | pod `command` | pod `args` | runs |
/// |---|---|---|
/// | – | – | image Entrypoint + image Cmd |
/// | set | – | `command` (image Entrypoint and Cmd ignored) |
/// | – | set | image Entrypoint + `args` |
/// | set | set | `command` + `args` |
///
/// `$(VAR)` expansion in command and args is the agent's job (it knows the container's env).
/// An empty result is an error: the container has nothing to run.
pub fn effective_command(
    image: &ImageConfig,
    command: &[String],
    args: &[String],
) -> Result<Vec<String>, ImageError> {
    let argv: Vec<String> = match (command.is_empty(), args.is_empty()) {
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
        (false, true) => command.to_vec(),
        (true, false) => image.entrypoint.iter().chain(args).cloned().collect(),
        (false, false) => command.iter().chain(args).cloned().collect(),
    };
    if argv.is_empty() {
        return Err(ImageError::InvalidContent(
            "no command specified: the pod gives no command and the image no Entrypoint or Cmd"
                .into(),
        ));
    }
    Ok(argv)
}

/// The container's environment: the image's `Env`, then the pod's entries, a pod entry replacing
/// the image's entry of the same name in place (as the kubelet and containerd do).
pub fn merge_env(image_env: &[String], pod_env: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = image_env.to_vec();
    for (k, v) in pod_env {
        let entry = format!("{k}={v}");
        match out
            .iter_mut()
            .find(|e| e.split_once('=').map(|(n, _)| n).unwrap_or(e) == k)
        {
            Some(slot) => *slot = entry,
            None => out.push(entry),
        }
    }
    out
}

/// The working directory: the pod's `workingDir` if set, else the image's, else `/`.
pub fn effective_working_dir(image: &ImageConfig, pod_working_dir: Option<&str>) -> String {
    match pod_working_dir {
        Some(w) if !w.is_empty() => w.to_string(),
        _ if !image.working_dir.is_empty() => image.working_dir.clone(),
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn effective_command_table() {
        let img = ImageConfig {
            entrypoint: v(&["/docker-entrypoint.sh"]),
            cmd: v(&["nginx", "-g", "daemon off;"]),
            ..Default::default()
        };
        let no_ep = ImageConfig {
            cmd: v(&["/bin/sh"]),
            ..Default::default()
        };
        type Case<'a> = (&'a ImageConfig, Vec<String>, Vec<String>, Vec<String>);
        let cases: Vec<Case<'_>> = vec![
            // neither: entrypoint + cmd
            (
                &img,
                v(&[]),
                v(&[]),
                v(&["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]),
            ),
            // command only: image entrypoint and cmd both ignored
            (&img, v(&["/bin/echo"]), v(&[]), v(&["/bin/echo"])),
            // args only: image entrypoint + args (cmd ignored)
            (
                &img,
                v(&[]),
                v(&["-v"]),
                v(&["/docker-entrypoint.sh", "-v"]),
            ),
            // both
            (
                &img,
                v(&["/bin/echo"]),
                v(&["a", "b"]),
                v(&["/bin/echo", "a", "b"]),
            ),
            // image without entrypoint
            (&no_ep, v(&[]), v(&[]), v(&["/bin/sh"])),
            (&no_ep, v(&[]), v(&["-c", "true"]), v(&["-c", "true"])),
            (&no_ep, v(&["/bin/true"]), v(&[]), v(&["/bin/true"])),
        ];
        for (i, (image, cmd, args, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                effective_command(image, &cmd, &args).unwrap(),
                want,
                "case {i}"
            );
        }
        assert!(effective_command(&ImageConfig::default(), &[], &[]).is_err());
    }

    #[test]
    fn env_and_workdir_rules() {
        let img = ImageConfig {
            env: v(&["PATH=/bin", "A=1"]),
            working_dir: "/app".into(),
            ..Default::default()
        };
        let env = merge_env(
            &img.env,
            &[("A".into(), "2".into()), ("B".into(), "3".into())],
        );
        assert_eq!(env, v(&["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(effective_working_dir(&img, None), "/app");
        assert_eq!(effective_working_dir(&img, Some("")), "/app");
        assert_eq!(effective_working_dir(&img, Some("/w")), "/w");
        assert_eq!(effective_working_dir(&ImageConfig::default(), None), "/");
    }

    #[test]
    fn parses_oci_and_docker_configs() {
        let json = br#"{"architecture":"amd64","os":"linux",
            "config":{"User":"1000:1000","ExposedPorts":{"80/tcp":{},"53/udp":{}},
              "Env":["PATH=/usr/bin"],"Entrypoint":null,"Cmd":["sh"],"WorkingDir":"/w",
              "Labels":{"a":"b"},"StopSignal":"SIGQUIT"},
            "rootfs":{"type":"layers","diff_ids":["sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]},
            "history":[]}"#;
        let c = ImageConfig::from_json(json).unwrap();
        assert_eq!(c.user, "1000:1000");
        assert_eq!(
            c.exposed_ports,
            vec![
                ExposedPort {
                    port: 53,
                    protocol: "udp".into()
                },
                ExposedPort {
                    port: 80,
                    protocol: "tcp".into()
                }
            ]
        );
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.cmd, v(&["sh"]));
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(c.diff_ids.len(), 1);
        // no config section at all
        let c = ImageConfig::from_json(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
        assert_eq!(c, ImageConfig::default());
        assert!(ImageConfig::from_json(br#"{"rootfs":{"type":"x"}}"#).is_err());
        assert!(ImageConfig::from_json(b"not json").is_err());
    }
}
