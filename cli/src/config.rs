//! A kubeconfig-compatible configuration file (`~/.kapsel/config`, `$KAPSELCONFIG`,
//! `--kubeconfig`): clusters, users, contexts with a default namespace, and the current context.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use base64::Engine as _;
use kapsel_api::client::ClientConfig;
use serde::{Deserialize, Serialize};

/// The server used when nothing is configured.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:6443";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct KubeConfig {
    #[serde(default = "v1", rename = "apiVersion")]
    pub api_version: String,
    #[serde(default = "config_kind")]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferences: Option<serde_yaml::Value>,
}

fn v1() -> String {
    "v1".into()
}
fn config_kind() -> String {
    "Config".into()
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    #[serde(default)]
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    #[serde(default)]
    pub user: User,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    pub context: Context,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Where the config file is: `--kubeconfig`, else `$KAPSELCONFIG`, else `~/.kapsel/config`.
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("KAPSELCONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".kapsel").join("config")
}

impl KubeConfig {
    /// Load `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Ok(KubeConfig::empty()),
            Ok(text) => serde_yaml::from_str(&text)
                .with_context(|| format!("error loading config file \"{}\"", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KubeConfig::empty()),
            Err(e) => Err(anyhow!(
                "error loading config file \"{}\": {e}",
                path.display()
            )),
        }
    }

    pub fn empty() -> Self {
        KubeConfig {
            api_version: v1(),
            kind: config_kind(),
            ..Default::default()
        }
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_yaml::to_string(self)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
        }
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    pub fn context(&self, name: &str) -> Option<&Context> {
        self.contexts
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.context)
    }
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.cluster)
    }
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|c| c.name == name).map(|c| &c.user)
    }
}

/// Command-line overrides.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub server: Option<String>,
    pub token: Option<String>,
    pub namespace: Option<String>,
    pub insecure_skip_tls_verify: bool,
    pub request_timeout: Option<std::time::Duration>,
}

/// Everything needed to build a client.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub client: ClientConfig,
    /// The namespace for namespaced commands (`-n`, else the context's, else `default`).
    pub namespace: String,
    /// True when `-n` was given explicitly.
    pub namespace_explicit: bool,
    pub context_name: Option<String>,
}

fn read_file_or_data(
    file: Option<&str>,
    data: Option<&str>,
    what: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(d) = data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .with_context(|| format!("invalid base64 in {what}-data"))?;
        return Ok(Some(bytes));
    }
    if let Some(f) = file {
        let bytes = std::fs::read(f).with_context(|| format!("unable to read {what} {f}"))?;
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// Combine the config file with the flags.
pub fn resolve(cfg: &KubeConfig, o: &Overrides) -> anyhow::Result<Resolved> {
    let context_name = o.context.clone().or_else(|| cfg.current_context.clone());
    let context = match &context_name {
        Some(name) => match cfg.context(name) {
            Some(c) => Some(c.clone()),
            None if o.context.is_some() => {
                return Err(anyhow!(
                    "context was not found for specified context: {name}"
                ))
            }
            None => None,
        },
        None => None,
    };
    let cluster = context
        .as_ref()
        .and_then(|c| cfg.cluster(&c.cluster))
        .cloned()
        .unwrap_or_default();
    let user = context
        .as_ref()
        .and_then(|c| cfg.user(&c.user))
        .cloned()
        .unwrap_or_default();

    let server = o
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| Some(cluster.server.clone()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let server = if server.contains("://") {
        server
    } else {
        format!("http://{server}")
    };
    let mut client = ClientConfig::new(server);
    client.token = match (&o.token, &user.token, &user.token_file) {
        (Some(t), _, _) if !t.is_empty() => Some(t.clone()),
        (_, Some(t), _) => Some(t.clone()),
        (_, _, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("unable to read token file {f}"))?
                .trim()
                .to_string(),
        ),
        _ => None,
    };
    client.ca_cert_pem = read_file_or_data(
        cluster.certificate_authority.as_deref(),
        cluster.certificate_authority_data.as_deref(),
        "certificate-authority",
    )?;
    let cert = read_file_or_data(
        user.client_certificate.as_deref(),
        user.client_certificate_data.as_deref(),
        "client-certificate",
    )?;
    let key = read_file_or_data(
        user.client_key.as_deref(),
        user.client_key_data.as_deref(),
        "client-key",
    )?;
    if let (Some(mut c), Some(k)) = (cert, key) {
        c.push(b'\n');
        c.extend_from_slice(&k);
        client.client_identity_pem = Some(c);
    }
    client.insecure_skip_tls_verify =
        o.insecure_skip_tls_verify || cluster.insecure_skip_tls_verify;
    if let Some(t) = o.request_timeout {
        client.request_timeout = Some(t);
    }
    let (namespace, explicit) = match o.namespace.as_ref().filter(|n| !n.is_empty()) {
        Some(n) => (n.clone(), true),
        None => (
            context
                .as_ref()
                .and_then(|c| c.namespace.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_string()),
            false,
        ),
    };
    Ok(Resolved {
        client,
        namespace,
        namespace_explicit: explicit,
        context_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: home
  cluster:
    server: https://10.0.0.1:6443
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: secret-token
contexts:
- name: home
  context: {cluster: home, user: admin, namespace: apps}
- name: other
  context: {cluster: home, user: admin}
current-context: home
"#;

    #[test]
    fn resolves_context_namespace_and_overrides() {
        let cfg: KubeConfig = serde_yaml::from_str(SAMPLE).unwrap();
        let r = resolve(&cfg, &Overrides::default()).unwrap();
        assert_eq!(r.client.server, "https://10.0.0.1:6443");
        assert_eq!(r.client.token.as_deref(), Some("secret-token"));
        assert!(r.client.insecure_skip_tls_verify);
        assert_eq!(r.namespace, "apps");
        let r = resolve(
            &cfg,
            &Overrides {
                context: Some("other".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.namespace, "default");
        let r = resolve(
            &cfg,
            &Overrides {
                server: Some("127.0.0.1:9".into()),
                token: Some("t2".into()),
                namespace: Some("x".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.client.server, "http://127.0.0.1:9");
        assert_eq!(r.client.token.as_deref(), Some("t2"));
        assert_eq!(r.namespace, "x");
        assert!(r.namespace_explicit);
        assert!(resolve(
            &cfg,
            &Overrides {
                context: Some("nope".into()),
                ..Default::default()
            }
        )
        .is_err());
    }

    #[test]
    fn empty_config_uses_defaults_and_round_trips() {
        let r = resolve(&KubeConfig::empty(), &Overrides::default()).unwrap();
        assert_eq!(r.client.server, DEFAULT_SERVER);
        assert_eq!(r.namespace, "default");
        let cfg: KubeConfig = serde_yaml::from_str(SAMPLE).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/config");
        cfg.save(&p).unwrap();
        assert_eq!(KubeConfig::load(&p).unwrap(), cfg);
        assert_eq!(
            KubeConfig::load(&dir.path().join("missing")).unwrap(),
            KubeConfig::empty()
        );
    }
}
