//! `kapsel.dev/v1` ImageProfile: a cluster-scoped whitelist of what containers of an image may
//! do (kapsel's *container image profiles*), and the pure rules that pick the profile of an
//! image.
//!
//! ```yaml
//! apiVersion: kapsel.dev/v1
//! kind: ImageProfile
//! metadata: {name: busybox-httpd}
//! spec:
//!   image: busybox            # repo, repo:tag, repo@sha256:…; `*` globs in repo and tag
//!   allowedExecutables: [/bin/httpd]   # omitted: everything may be executed
//!   writablePaths: [/www]              # omitted: writes are not restricted by Landlock
//!   readOnlyRootFilesystem: true       # default true
//!   bestEffort: false                  # default false: no Landlock in the kernel fails the pod
//! ```
//!
//! ## Which images a profile applies to ([`ImagePattern`])
//!
//! `spec.image` is `REPO`, `REPO:TAG` or `REPO@DIGEST`; `*` matches any run of characters
//! (including `/`) in `REPO` and in `TAG`, digests are compared exactly.
//! - `REPO` is compared with the container image's repository as written in the pod
//!   (`busybox`, `127.0.0.1:5000/web`), and both fully qualified the Docker way
//!   (`docker.io/library/busybox`); either comparison matching is enough. So `busybox` and
//!   `docker.io/library/busybox` name the same images, and `*` names every image.
//! - Without a tag or digest the pattern matches every tag and digest of the repository. With a
//!   tag it matches only that tag (an image without tag or digest is `:latest`); with a digest
//!   only images referenced by that digest.
//!
//! When several profiles match, the most specific one applies ([`select`]): a digest beats a
//! tag beats no tag, a pattern without `*` beats one with, then the one with more literal
//! characters; equal ones are ordered by name. Profiles do not combine.

use serde::{Deserialize, Serialize};

use crate::kind;

/// The API group of kapsel's own kinds.
pub const KAPSEL_GROUP: &str = "kapsel.dev";

kind! {
    /// A cluster-scoped profile of what containers of an image may execute and write.
    ImageProfile { group: "kapsel.dev", version: "v1", api_version: "kapsel.dev/v1", plural: "imageprofiles", singular: "imageprofile", namespaced: false, short: [] }
    {
        #[serde(default)]
        pub spec: ImageProfileSpec,
    }
}

/// `ImageProfile.spec`.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageProfileSpec {
    /// The images this profile applies to (see the module docs).
    #[serde(default)]
    pub image: String,
    /// Absolute paths of the files (or directories: everything beneath) containers may
    /// execute; omitted: no restriction.
    pub allowed_executables: Option<Vec<String>>,
    /// Absolute paths beneath which containers may write; omitted: writes are not restricted
    /// (beyond `readOnlyRootFilesystem`).
    pub writable_paths: Option<Vec<String>>,
    /// Mount the container's root filesystem read-only. Defaults to `true`.
    pub read_only_root_filesystem: Option<bool>,
    /// On a kernel without Landlock, run the container unrestricted instead of failing it.
    /// Defaults to `false`.
    pub best_effort: Option<bool>,
}

/// (digest, tag, no glob, literal characters): compared in this order, higher wins.
type Specificity = (bool, bool, bool, usize);

/// A parsed `spec.image`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePattern {
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// A container image reference split the way patterns are compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// As written in the pod, without tag and digest.
    pub repo: String,
    /// Fully qualified (`docker.io/library/busybox`).
    pub full_repo: String,
    /// `latest` when the reference has neither tag nor digest.
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Split `repo[:tag][@digest]` (the tag's `:` is the last one after the last `/`).
fn split(reference: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (reference, None),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

/// Docker's normalization: a first component that is no host (`.`, `:` or `localhost`) means
/// Docker Hub, and a single component the `library/` namespace there.
pub fn qualify(repo: &str) -> String {
    match repo.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => repo.into(),
        Some(_) => format!("docker.io/{repo}"),
        None => format!("docker.io/library/{repo}"),
    }
}

impl ImageRef {
    pub fn parse(reference: &str) -> ImageRef {
        let (repo, tag, digest) = split(reference.trim());
        let tag = match (tag, digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        ImageRef {
            repo: repo.to_string(),
            full_repo: qualify(repo),
            tag,
            digest: digest.map(str::to_string),
        }
    }
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, s: &str) -> bool {
    let p = pattern.as_bytes();
    let s = s.as_bytes();
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl ImagePattern {
    /// The pattern of `spec.image`; `Err` is the reason it is invalid.
    pub fn parse(image: &str) -> Result<ImagePattern, String> {
        if image.is_empty() {
            return Err("must not be empty".into());
        }
        if image.len() > 512 {
            return Err("must be no more than 512 characters".into());
        }
        if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace".into());
        }
        let (repo, tag, digest) = split(image);
        if repo.is_empty() {
            return Err("must name a repository".into());
        }
        if repo.split('/').any(str::is_empty) {
            return Err("repository path components must not be empty".into());
        }
        if tag == Some("") {
            return Err("tag after ':' must not be empty".into());
        }
        if let Some(d) = digest {
            let ok = d.split_once(':').is_some_and(|(alg, hex)| {
                !alg.is_empty()
                    && alg.chars().all(|c| c.is_ascii_alphanumeric())
                    && hex.len() >= 32
                    && hex.chars().all(|c| c.is_ascii_hexdigit())
            });
            if !ok {
                return Err(format!("digest {d:?} must be ALGORITHM:HEX (sha256:…)"));
            }
        }
        Ok(ImagePattern {
            repo: repo.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    pub fn matches(&self, image: &ImageRef) -> bool {
        let repo_ok = glob(&self.repo, &image.repo)
            || glob(&self.repo, &image.full_repo)
            || glob(&qualify(&self.repo), &image.full_repo);
        if !repo_ok {
            return false;
        }
        if let Some(d) = &self.digest {
            if image.digest.as_deref() != Some(d.as_str()) {
                return false;
            }
        }
        match (&self.tag, &image.tag) {
            (None, _) => true,
            (Some(p), Some(t)) => glob(p, t),
            (Some(_), None) => false,
        }
    }

    /// Higher is more specific (see the module docs).
    fn specificity(&self) -> Specificity {
        let literal = |s: &str| s.chars().filter(|&c| c != '*').count();
        let globs = self.repo.contains('*') || self.tag.as_deref().is_some_and(|t| t.contains('*'));
        (
            self.digest.is_some(),
            self.tag.is_some(),
            !globs,
            literal(&self.repo) + self.tag.as_deref().map_or(0, literal),
        )
    }
}

/// The profile that applies to container image `image`: the most specific matching one.
/// Profiles whose `spec.image` does not parse match nothing.
pub fn select<'a, P>(profiles: impl IntoIterator<Item = &'a P>, image: &str) -> Option<&'a P>
where
    P: std::borrow::Borrow<ImageProfile> + 'a,
{
    let image = ImageRef::parse(image);
    let mut best: Option<(&'a P, Specificity)> = None;
    for p in profiles {
        let prof: &ImageProfile = p.borrow();
        let Ok(pattern) = ImagePattern::parse(&prof.spec.image) else {
            continue;
        };
        if !pattern.matches(&image) {
            continue;
        }
        let score = pattern.specificity();
        let better = match &best {
            None => true,
            Some((b, bs)) => {
                score > *bs
                    || (score == *bs && prof.metadata.name() < (*b).borrow().metadata.name())
            }
        };
        if better {
            best = Some((p, score));
        }
    }
    best.map(|(p, _)| p)
}

/// `readOnlyRootFilesystem: true` and `bestEffort: false` when omitted.
pub fn default_image_profile(p: &mut ImageProfile) {
    p.spec.read_only_root_filesystem.get_or_insert(true);
    p.spec.best_effort.get_or_insert(false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::ObjectMeta;

    fn profile(name: &str, image: &str) -> ImageProfile {
        let mut p = ImageProfile::with_meta(ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        });
        p.spec.image = image.into();
        p
    }

    #[test]
    fn references_split_and_qualify() {
        for (input, repo, full, tag, digest) in [
            (
                "busybox",
                "busybox",
                "docker.io/library/busybox",
                Some("latest"),
                None,
            ),
            (
                "busybox:1.36",
                "busybox",
                "docker.io/library/busybox",
                Some("1.36"),
                None,
            ),
            (
                "user/app:v1",
                "user/app",
                "docker.io/user/app",
                Some("v1"),
                None,
            ),
            (
                "127.0.0.1:5000/busybox",
                "127.0.0.1:5000/busybox",
                "127.0.0.1:5000/busybox",
                Some("latest"),
                None,
            ),
            (
                "localhost/x@sha256:ab",
                "localhost/x",
                "localhost/x",
                None,
                Some("sha256:ab"),
            ),
            (
                "reg.io/a/b:t@sha256:ab",
                "reg.io/a/b",
                "reg.io/a/b",
                Some("t"),
                Some("sha256:ab"),
            ),
        ] {
            let r = ImageRef::parse(input);
            assert_eq!(r.repo, repo, "{input}");
            assert_eq!(r.full_repo, full, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(r.digest.as_deref(), digest, "{input}");
        }
    }

    #[test]
    fn globs() {
        for (p, s, want) in [
            ("*", "", true),
            ("*", "anything/at:all", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("busybox", "busybox", true),
            ("busybox", "busybox2", false),
            ("*box", "busybox", true),
            ("reg.io/*/web", "reg.io/team/x/web", true),
            ("1.*", "1.36", true),
            ("1.*", "2.1", false),
            ("**a", "ba", true),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(glob(p, s), want, "{p} ~ {s}");
        }
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn patterns_match_images() {
        let with_digest = format!("busybox@{DIGEST}");
        let cases: Vec<(&str, &str, bool)> = vec![
            ("busybox", "busybox", true),
            ("busybox", "busybox:1.36", true),
            ("busybox", "docker.io/library/busybox:1.36", true),
            ("docker.io/library/busybox", "busybox", true),
            ("busybox", &with_digest, true),
            ("busybox", "evil.io/busybox", false),
            ("busybox", "busybox2", false),
            ("busybox:latest", "busybox", true),
            ("busybox:1.36", "busybox", false),
            ("busybox:1.36", "busybox:1.36", true),
            ("busybox:1.*", "busybox:1.37", true),
            ("busybox:1.*", &with_digest, false),
            ("127.0.0.1:*/busybox", "127.0.0.1:5000/busybox:t", true),
            ("127.0.0.1:*/busybox", "busybox", false),
            ("*", "anything.io/x/y:z", true),
            ("*/busybox", "127.0.0.1:5000/busybox", true),
        ];
        for (pattern, image, want) in cases {
            let p = ImagePattern::parse(pattern).unwrap();
            assert_eq!(
                p.matches(&ImageRef::parse(image)),
                want,
                "{pattern} ~ {image}"
            );
        }
        let by_digest = ImagePattern::parse(&with_digest).unwrap();
        assert!(by_digest.matches(&ImageRef::parse(&format!(
            "docker.io/library/busybox@{DIGEST}"
        ))));
        assert!(!by_digest.matches(&ImageRef::parse("busybox")));
    }

    #[test]
    fn invalid_patterns() {
        for bad in [
            "",
            " busybox",
            "busy box",
            ":tag",
            "busybox:",
            "reg.io//x",
            "busybox@sha256:xyz",
            "busybox@md5",
        ] {
            assert!(ImagePattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ImagePattern::parse(&"a".repeat(513)).is_err());
    }

    #[test]
    fn most_specific_profile_wins() {
        let all = profile("all", "*");
        let repo = profile("repo", "busybox");
        let repo_b = profile("a-repo", "docker.io/library/busybox");
        let tag = profile("tag", "busybox:1.36");
        let tag_glob = profile("tag-glob", "busybox:1.*");
        let digest = profile("digest", &format!("busybox@{DIGEST}"));
        let broken = profile("broken", "busy box");
        let set = vec![
            all.clone(),
            repo.clone(),
            tag.clone(),
            tag_glob.clone(),
            digest.clone(),
            broken,
        ];
        let name = |image: &str, set: &[ImageProfile]| {
            select(set, image).map(|p| p.metadata.name().to_string())
        };
        assert_eq!(name("busybox:1.36", &set).as_deref(), Some("tag"));
        assert_eq!(name("busybox:1.37", &set).as_deref(), Some("tag-glob"));
        assert_eq!(name("busybox", &set).as_deref(), Some("repo"));
        assert_eq!(
            name(&format!("busybox:1.36@{DIGEST}"), &set).as_deref(),
            Some("digest")
        );
        assert_eq!(name("nginx", &set).as_deref(), Some("all"));
        assert_eq!(name("nginx", &set[1..]), None);
        // Longer literal pattern first; equal specificity by name.
        let two = vec![repo.clone(), repo_b.clone()];
        assert_eq!(name("busybox", &two).as_deref(), Some("a-repo"));
        let same = vec![profile("z", "busybox"), profile("b", "busybox")];
        assert_eq!(name("busybox", &same).as_deref(), Some("b"));
        // Works over Arcs (the agent's cache) too.
        let arcs: Vec<std::sync::Arc<ImageProfile>> = set.into_iter().map(Into::into).collect();
        assert_eq!(
            select(&arcs, "busybox:1.36").map(|p| p.metadata.name().to_string()),
            Some("tag".into())
        );
    }

    #[test]
    fn defaults_and_wire_form() {
        let mut p: ImageProfile = serde_json::from_value(serde_json::json!({
            "apiVersion": "kapsel.dev/v1", "kind": "ImageProfile",
            "metadata": {"name": "x"},
            "spec": {"image": "busybox", "allowedExecutables": ["/bin/httpd"]}
        }))
        .unwrap();
        default_image_profile(&mut p);
        assert_eq!(p.spec.read_only_root_filesystem, Some(true));
        assert_eq!(p.spec.best_effort, Some(false));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["spec"]["readOnlyRootFilesystem"], true);
        assert!(v["spec"].get("writablePaths").is_none());
        let mut off = p.clone();
        off.spec.read_only_root_filesystem = Some(false);
        default_image_profile(&mut off);
        assert_eq!(off.spec.read_only_root_filesystem, Some(false));
    }
}
