//! Image references, normalised the way docker and the kubelet do:
//! `busybox` → `docker.io/library/busybox:latest`.

use std::fmt;
use std::str::FromStr;

use crate::error::{ImageError, Result};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";

/// A fully qualified image reference: registry, repository, and a tag and/or a digest.
/// A reference with neither gets the tag `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parse and normalise an image name as written in a pod spec.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > 4096 || s.trim() != s {
            return Err(bad("too long or surrounded by whitespace"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                validate_digest(d).map_err(|e| bad(&e))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // a tag is after the last ':' that follows the last '/'
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(i) if last_slash.is_none_or(|sl| i > sl) => {
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            validate_tag(t).map_err(|e| bad(&e))?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        validate_registry(&registry).map_err(|e| bad(&e))?;
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|e| bad(&e))?;
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Build a reference from parts (validated like [`ImageRef::parse`]).
    pub fn from_parts(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Result<Self> {
        let mut s = format!("{registry}/{repository}");
        if let Some(t) = tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = digest {
            s.push('@');
            s.push_str(d);
        }
        Self::parse(&s)
    }

    /// `docker.io`, `ghcr.io`, `registry.lan:5000`, …
    pub fn registry(&self) -> &str {
        &self.registry
    }
    /// `library/busybox`, `team/app`, …
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
    /// `registry/repository@digest`: the form of `containerStatuses[].imageID`.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{}", self.name(), digest)
    }
    /// The same repository at `digest` (the tag is dropped).
    pub fn pinned(&self, digest: &str) -> Self {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }
    /// Whether `docker.io/library/busybox` could be written `busybox` (for display).
    pub fn familiar(&self) -> String {
        let mut s = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// `sha256:` followed by 64 lowercase hex digits (the only algorithm kapsel accepts).
pub fn validate_digest(d: &str) -> std::result::Result<(), String> {
    let Some(hex) = d.strip_prefix("sha256:") else {
        return Err(format!("digest {d:?} is not sha256:<hex>"));
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!("digest {d:?} is not 64 lowercase hex digits"));
    }
    Ok(())
}

fn validate_tag(t: &str) -> std::result::Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {t:?}"))
    }
}

fn validate_registry(r: &str) -> std::result::Result<(), String> {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err(format!("invalid registry port in {r:?}"));
        }
    }
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'[' || b == b']');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid registry host {r:?}"))
    }
}

fn validate_repository(repo: &str) -> std::result::Result<(), String> {
    if repo.len() > 255 {
        return Err("repository name longer than 255 characters".into());
    }
    for comp in repo.split('/') {
        // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
        let b = comp.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ok = !b.is_empty()
            && b.first().is_some_and(|&c| alnum(c))
            && b.last().is_some_and(|&c| alnum(c))
            && b.iter()
                .all(|&c| alnum(c) || c == b'.' || c == b'_' || c == b'-')
            && !comp.contains("..")
            && !comp.contains("___")
            && !comp.contains("._")
            && !comp.contains("_.")
            && !comp.contains(".-")
            && !comp.contains("-.")
            && !comp.contains("_-")
            && !comp.contains("-_");
        if !ok {
            return Err(format!("invalid repository path component {comp:?} (lowercase letters, digits and separators only)"));
        }
    }
    Ok(())
}

/// When to contact the registry (`imagePullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PullPolicy {
    /// Resolve the reference at the registry every time (layers already present are reused).
    Always,
    /// Use the image on the node if present; pull otherwise.
    IfNotPresent,
    /// Never pull: fail with [`ImageError::NotPresent`] if the image is missing.
    Never,
}

impl PullPolicy {
    /// Kubernetes' default: `Always` when the tag is `latest` (written or implied),
    /// `IfNotPresent` otherwise (any other tag, or a digest without a tag).
    pub fn default_for(image: &ImageRef) -> Self {
        if image.tag() == Some("latest") {
            PullPolicy::Always
        } else {
            PullPolicy::IfNotPresent
        }
    }

    /// Parse `Always` / `IfNotPresent` / `Never` as written in a pod spec.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Always" => Some(PullPolicy::Always),
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Never" => Some(PullPolicy::Never),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, &str)] = &[
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            (
                "docker.io/library/nginx:1.27",
                "docker.io/library/nginx:1.27",
            ),
            (
                "index.docker.io/library/nginx",
                "docker.io/library/nginx:latest",
            ),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
            ("ghcr.io/owner/app:v1", "ghcr.io/owner/app:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            (
                "registry.lan:5000/team/app:1.0",
                "registry.lan:5000/team/app:1.0",
            ),
            (
                "127.0.0.1:5000/a/b/c:x-y_z.1",
                "127.0.0.1:5000/a/b/c:x-y_z.1",
            ),
        ];
        for (input, want) in cases {
            let r = ImageRef::parse(input).unwrap();
            assert_eq!(r.to_string(), *want, "{input}");
        }
        let r = ImageRef::parse(&format!("registry.lan:5000/team/app@{D}")).unwrap();
        assert_eq!(r.registry(), "registry.lan:5000");
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.to_string(), format!("registry.lan:5000/team/app@{D}"));
        let r = ImageRef::parse(&format!("busybox:1.36@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1.36@{D}"));
        assert_eq!(r.familiar(), format!("busybox:1.36@{D}"));
        assert_eq!(r.with_digest(D), format!("docker.io/library/busybox@{D}"));
    }

    #[test]
    fn invalid_names_are_refused() {
        for bad in [
            "",
            " busybox",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a//b",
            "a/../b",
            "registry.lan:99999/app",
            "app:tag:tag2",
            "a/b_/c",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn default_pull_policy_follows_kubernetes() {
        let p = |s: &str| PullPolicy::default_for(&ImageRef::parse(s).unwrap());
        assert_eq!(p("busybox"), PullPolicy::Always);
        assert_eq!(p("busybox:latest"), PullPolicy::Always);
        assert_eq!(p("busybox:1.36"), PullPolicy::IfNotPresent);
        assert_eq!(p(&format!("busybox@{D}")), PullPolicy::IfNotPresent);
        assert_eq!(p(&format!("busybox:latest@{D}")), PullPolicy::Always);
        assert_eq!(PullPolicy::parse("Never"), Some(PullPolicy::Never));
        assert_eq!(PullPolicy::parse("never"), None);
    }
}
