//! Pull credentials (`imagePullSecrets` of type `kubernetes.io/dockerconfigjson`) and the
//! agent's registry settings (`--insecure-registry`, `--registry-mirror`).

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use crate::error::{ImageError, Result};
use crate::reference::{ImageRef, DOCKER_HUB};

/// A username and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Credentials keyed the way `.dockerconfigjson` keys them (`registry.lan:5000`,
/// `https://index.docker.io/v1/`, `registry.lan/team`, `*.example.com`). Empty = anonymous
/// (the registry's bearer-token challenge is still answered, anonymously, as Docker Hub and
/// GHCR require).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    entries: Vec<(String, RegistryCredential)>,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: Option<BTreeMap<String, DockerAuthEntry>>,
}

#[derive(Deserialize)]
struct DockerAuthEntry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
}

impl Credentials {
    /// No credentials: anonymous pulls.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Add one credential for `key` (a registry host, optionally with a path prefix).
    pub fn insert(&mut self, key: &str, username: &str, password: &str) {
        self.entries.push((
            key.to_string(),
            RegistryCredential {
                username: username.to_string(),
                password: password.to_string(),
            },
        ));
    }

    /// Add the entries of a secret's `.dockerconfigjson` (or legacy `.dockercfg`) data, already
    /// base64-decoded from the Secret. Call once per `imagePullSecrets` entry.
    pub fn add_docker_config_json(&mut self, data: &[u8]) -> Result<()> {
        let bad = |m: String| ImageError::InvalidContent(format!("docker config json: {m}"));
        let parsed: DockerConfigJson =
            serde_json::from_slice(data).map_err(|e| bad(e.to_string()))?;
        let auths = match parsed.auths {
            Some(a) => a,
            // legacy .dockercfg: the map itself
            None => serde_json::from_slice::<BTreeMap<String, DockerAuthEntry>>(data)
                .map_err(|e| bad(e.to_string()))?,
        };
        for (key, e) in auths {
            let (user, pass) = match (e.username, e.password, e.auth) {
                (Some(u), Some(p), _) if !u.is_empty() => (u, p),
                (_, _, Some(auth)) if !auth.is_empty() => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|e| bad(format!("auth of {key}: {e}")))?;
                    let s = String::from_utf8(raw)
                        .map_err(|_| bad(format!("auth of {key} is not UTF-8")))?;
                    let (u, p) = s
                        .split_once(':')
                        .ok_or_else(|| bad(format!("auth of {key} is not user:password")))?;
                    (u.to_string(), p.to_string())
                }
                _ => continue,
            };
            self.insert(&key, &user, &pass);
        }
        Ok(())
    }

    /// The best credential for an image: the matching key with the longest path prefix; among
    /// equals, the first added.
    pub fn lookup(&self, image: &ImageRef) -> Option<&RegistryCredential> {
        let mut best: Option<(usize, &RegistryCredential)> = None;
        for (key, cred) in &self.entries {
            let (host, path) = split_key(key);
            if !host_matches(&host, image.registry()) {
                continue;
            }
            if !path.is_empty()
                && image.repository() != path
                && !image.repository().starts_with(&format!("{path}/"))
            {
                continue;
            }
            let score = path.len() + 1;
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, cred));
            }
        }
        best.map(|(_, c)| c)
    }
}

/// `https://index.docker.io/v1/` → (`docker.io`, ``); `registry.lan:5000/team` →
/// (`registry.lan:5000`, `team`).
fn split_key(key: &str) -> (String, String) {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let host = normalise_host(host);
    let path = path.trim_matches('/');
    // Docker Hub's legacy key carries the API version as its path
    let path = if host == DOCKER_HUB && (path == "v1" || path == "v2") {
        ""
    } else {
        path
    };
    (host, path.to_string())
}

fn normalise_host(h: &str) -> String {
    match h {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => DOCKER_HUB.to_string(),
        _ => h.to_ascii_lowercase(),
    }
}

/// Host match with `*` globs per DNS label, as the kubelet's keyring does.
fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == host {
        return true;
    }
    let (pat_host, pat_port) = pattern.rsplit_once(':').unwrap_or((pattern, ""));
    let (h, port) = host.rsplit_once(':').unwrap_or((host, ""));
    if pat_port != port {
        return false;
    }
    let pl: Vec<&str> = pat_host.split('.').collect();
    let hl: Vec<&str> = h.split('.').collect();
    pl.len() == hl.len()
        && pl.iter().zip(&hl).all(|(p, l)| {
            if let Some((pre, suf)) = p.split_once('*') {
                l.len() >= pre.len() + suf.len() && l.starts_with(pre) && l.ends_with(suf)
            } else {
                p == l
            }
        })
}

/// The agent's registry settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RegistryConfig {
    /// Registries (`host[:port]`) reached over plain HTTP (`--insecure-registry`). All others
    /// are HTTPS only.
    pub insecure_registries: Vec<String>,
    /// Mirrors per upstream registry, tried in order before the upstream itself
    /// (`--registry-mirror URL` adds to `docker.io`'s list). A mirror is `host[:port]` or a URL
    /// (`http://…` makes it plain HTTP).
    pub mirrors: BTreeMap<String, Vec<String>>,
}

/// One place to fetch an image from: a mirror or the upstream registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub host: String,
    pub insecure: bool,
    pub is_mirror: bool,
}

impl RegistryConfig {
    /// Add a Docker Hub mirror, as `--registry-mirror` does.
    pub fn add_docker_hub_mirror(&mut self, url: &str) {
        self.mirrors
            .entry(DOCKER_HUB.to_string())
            .or_default()
            .push(url.to_string());
    }

    /// Allow plain HTTP to `host[:port]`, as `--insecure-registry` does.
    pub fn add_insecure_registry(&mut self, host: &str) {
        self.insecure_registries.push(host.to_string());
    }

    pub(crate) fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mut out = Vec::new();
        for m in self.mirrors.get(registry).into_iter().flatten() {
            let (host, http) = if let Some(h) = m.strip_prefix("http://") {
                (h, true)
            } else {
                (m.strip_prefix("https://").unwrap_or(m), false)
            };
            let host = host.trim_end_matches('/').to_string();
            let insecure = http || self.insecure_registries.contains(&host);
            out.push(Endpoint {
                host,
                insecure,
                is_mirror: true,
            });
        }
        out.push(Endpoint {
            host: registry.to_string(),
            insecure: self.insecure_registries.iter().any(|i| i == registry),
            is_mirror: false,
        });
        out
    }

    /// Every host that is spoken to over plain HTTP.
    pub(crate) fn http_hosts(&self) -> Vec<String> {
        let mut v: Vec<String> = self.insecure_registries.clone();
        for list in self.mirrors.values() {
            for m in list {
                if let Some(h) = m.strip_prefix("http://") {
                    v.push(h.trim_end_matches('/').to_string());
                }
            }
        }
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_json_lookup() {
        let mut c = Credentials::default();
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let json = format!(
            r#"{{"auths":{{
                "https://index.docker.io/v1/":{{"username":"hub","password":"hp"}},
                "registry.lan:5000":{{"auth":"{auth}"}},
                "registry.lan:5000/team/special":{{"username":"sp","password":"x"}},
                "*.corp.example":{{"username":"g","password":"y"}}
            }}}}"#
        );
        c.add_docker_config_json(json.as_bytes()).unwrap();
        let user = |img: &str| {
            c.lookup(&ImageRef::parse(img).unwrap())
                .map(|c| c.username.clone())
        };
        assert_eq!(user("busybox").as_deref(), Some("hub"));
        assert_eq!(user("registry.lan:5000/team/app").as_deref(), Some("bob"));
        assert_eq!(
            c.lookup(&ImageRef::parse("registry.lan:5000/team/app").unwrap())
                .map(|c| c.password.clone())
                .as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            user("registry.lan:5000/team/special/x").as_deref(),
            Some("sp")
        );
        assert_eq!(
            user("registry.lan:5000/team/specialx").as_deref(),
            Some("bob")
        );
        assert_eq!(user("r.corp.example/a").as_deref(), Some("g"));
        assert_eq!(user("registry.lan/a"), None);
        assert_eq!(user("ghcr.io/a/b"), None);
        assert!(!format!("{:?}", c).contains("s3cret"));
        // legacy .dockercfg
        let mut c = Credentials::default();
        c.add_docker_config_json(br#"{"ghcr.io":{"username":"u","password":"p"}}"#)
            .unwrap();
        assert!(c.lookup(&ImageRef::parse("ghcr.io/a/b").unwrap()).is_some());
        assert!(Credentials::default()
            .add_docker_config_json(br#"{"auths":{"x":{"auth":"!!"}}}"#)
            .is_err());
    }

    #[test]
    fn endpoints_put_mirrors_first() {
        let mut rc = RegistryConfig::default();
        rc.add_docker_hub_mirror("http://127.0.0.1:5001/");
        rc.add_docker_hub_mirror("mirror.lan");
        rc.add_insecure_registry("registry.lan:5000");
        let e = rc.endpoints("docker.io");
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].host.as_str(), e[0].insecure, e[0].is_mirror),
            ("127.0.0.1:5001", true, true)
        );
        assert_eq!((e[1].host.as_str(), e[1].insecure), ("mirror.lan", false));
        assert_eq!((e[2].host.as_str(), e[2].is_mirror), ("docker.io", false));
        let e = rc.endpoints("registry.lan:5000");
        assert_eq!(e.len(), 1);
        assert!(e[0].insecure);
        assert_eq!(rc.http_hosts(), vec!["127.0.0.1:5001", "registry.lan:5000"]);
    }
}
