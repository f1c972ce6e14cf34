//! Executable allow-lists, writable paths and read-only root filesystems of containers: from
//! the cluster's `kapsel.dev/v1` ImageProfiles and from pod annotations, turned into the
//! runtime's [`LandlockSpec`].
//!
//! Pod annotations:
//! - `kapsel.dev/allowed-executables: "/bin/httpd,/bin/true"` — every container of the pod may
//!   execute only these files (or files beneath listed directories);
//!   `kapsel.dev/allowed-executables.NAME` sets the list of container `NAME` instead.
//! - `kapsel.dev/writable-paths` (and `.NAME`): writes only beneath these paths.
//! - `kapsel.dev/landlock-best-effort: "true"`: run unrestricted on a kernel without Landlock
//!   instead of failing the container.
//!
//! A container without an allow-list is not restricted (a writable-paths annotation alone
//! allows executing everything: `/` is the allow-list then).
//!
//! ## ImageProfiles ([`effective`])
//!
//! When the agent creates a container it applies the ImageProfile matching the container's
//! image (the most specific one, see `kapsel_api::profile`), from a watch of the cluster's
//! profiles ([`ProfileCache`]). Annotations may narrow a profile, never widen it:
//! - no profile matches: the annotations alone decide (as above);
//! - a profile matches: its `allowedExecutables` / `writablePaths` apply; an annotation list
//!   replaces the profile's only if every path it names is one of the profile's or lies
//!   beneath one (`/bin/httpd` within `/bin`), otherwise the container fails with
//!   `CreateContainerConfigError` naming the path and the profile. A field the profile omits
//!   is unrestricted, so the annotation may set it freely.
//! - the root filesystem is read-only if the profile says so (its default) or the
//!   container's `securityContext.readOnlyRootFilesystem` does;
//! - `bestEffort` comes from the profile; the annotation may turn it off, and asking for
//!   `"true"` against a profile with `bestEffort: false` is a config error.
//!
//! Profiles are read from a cache: a profile created just before a pod applies once the
//! agent's watch has delivered it (normally milliseconds). Until the cache has its first full
//! list, containers are not created (they fail with `CreateContainerConfigError` and are
//! retried), so no container starts without the profile that should confine it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kapsel_api::client::Client;
use kapsel_api::watcher::{self, reflector, watcher, Store, WatcherConfig};
use kapsel_api::ImageProfile;
use kapsel_runtime::LandlockSpec;

pub const ALLOWED_EXECUTABLES: &str = "kapsel.dev/allowed-executables";
pub const WRITABLE_PATHS: &str = "kapsel.dev/writable-paths";
pub const BEST_EFFORT: &str = "kapsel.dev/landlock-best-effort";
/// The container label naming the ImageProfile applied to it.
pub const PROFILE_LABEL: &str = "kapsel.dev/image-profile";

fn list(value: &str, key: &str) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !item.starts_with('/') || item.split('/').any(|c| c == "..") {
            return Err(format!(
                "annotation {key}: {item:?} must be an absolute path without .."
            ));
        }
        out.push(PathBuf::from(item));
    }
    Ok(out)
}

/// The container-level annotation, else the pod-level one.
fn lookup<'a>(
    ann: &'a BTreeMap<String, String>,
    key: &str,
    container: &str,
) -> Option<(&'a str, String)> {
    let own = format!("{key}.{container}");
    if let Some(v) = ann.get(&own) {
        return Some((v.as_str(), own));
    }
    ann.get(key).map(|v| (v.as_str(), key.to_string()))
}

/// What a pod's annotations ask of one container.
#[derive(Debug, Default, PartialEq, Eq)]
struct Asked {
    /// (list, the annotation key it came from)
    executables: Option<(Vec<PathBuf>, String)>,
    writable: Option<(Vec<PathBuf>, String)>,
    best_effort: Option<bool>,
}

fn asked(annotations: &BTreeMap<String, String>, container: &str) -> Result<Asked, String> {
    let executables = match lookup(annotations, ALLOWED_EXECUTABLES, container) {
        Some((v, key)) => {
            let l = list(v, &key)?;
            if l.is_empty() {
                return Err(format!("annotation {key} lists no executable"));
            }
            Some((l, key))
        }
        None => None,
    };
    let writable = lookup(annotations, WRITABLE_PATHS, container)
        .map(|(v, key)| list(v, &key).map(|l| (l, key)))
        .transpose()?;
    let best_effort = match annotations.get(BEST_EFFORT).map(String::as_str) {
        None => None,
        Some("false") => Some(false),
        Some("true") => Some(true),
        Some(other) => {
            return Err(format!(
                "annotation {BEST_EFFORT}: {other:?} is not \"true\" or \"false\""
            ))
        }
    };
    Ok(Asked {
        executables,
        writable,
        best_effort,
    })
}

/// The Landlock spec of container `container` from the pod's annotations alone; `Err` is the
/// reason of a `CreateContainerConfigError`.
pub fn landlock_for(
    annotations: &BTreeMap<String, String>,
    container: &str,
) -> Result<Option<LandlockSpec>, String> {
    let a = asked(annotations, container)?;
    Ok(spec_of(
        a.executables.map(|(l, _)| l),
        a.writable.map(|(l, _)| l),
        a.best_effort.unwrap_or(false),
    ))
}

fn spec_of(
    executables: Option<Vec<PathBuf>>,
    writable: Option<Vec<PathBuf>>,
    best_effort: bool,
) -> Option<LandlockSpec> {
    if executables.is_none() && writable.is_none() {
        return None;
    }
    Some(LandlockSpec {
        allowed_executables: executables.unwrap_or_else(|| vec![PathBuf::from("/")]),
        writable_paths: writable,
        best_effort,
    })
}

/// How one container is confined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    pub landlock: Option<LandlockSpec>,
    pub read_only_rootfs: bool,
    /// The ImageProfile applied, if any.
    pub profile: Option<String>,
}

/// `asked` narrowed to within `allowed` (see the module docs); `field` names the profile's
/// field in the error.
fn narrow(
    allowed: Option<&Vec<String>>,
    asked: Option<(Vec<PathBuf>, String)>,
    profile: &str,
    field: &str,
) -> Result<Option<Vec<PathBuf>>, String> {
    match (allowed, asked) {
        (None, a) => Ok(a.map(|(l, _)| l)),
        (Some(p), None) => Ok(Some(p.iter().map(PathBuf::from).collect())),
        (Some(p), Some((a, key))) => {
            for path in &a {
                if !p.iter().any(|q| path.starts_with(Path::new(q))) {
                    return Err(format!(
                        "annotation {key}: {} is not within ImageProfile {profile}'s {field} ({}); annotations may only narrow a profile",
                        path.display(),
                        p.join(",")
                    ));
                }
            }
            Ok(Some(a))
        }
    }
}

/// The confinement of container `container` of a pod with `annotations`, its
/// `securityContext.readOnlyRootFilesystem` (`sc_read_only`) and the `profile` matching its
/// image. `Err` is the message of a `CreateContainerConfigError`.
pub fn effective(
    profile: Option<&ImageProfile>,
    annotations: &BTreeMap<String, String>,
    container: &str,
    sc_read_only: bool,
) -> Result<Confinement, String> {
    let a = asked(annotations, container)?;
    let Some(p) = profile else {
        return Ok(Confinement {
            landlock: spec_of(
                a.executables.map(|(l, _)| l),
                a.writable.map(|(l, _)| l),
                a.best_effort.unwrap_or(false),
            ),
            read_only_rootfs: sc_read_only,
            profile: None,
        });
    };
    let name = p.metadata.name();
    let s = &p.spec;
    let executables = narrow(
        s.allowed_executables.as_ref(),
        a.executables,
        name,
        "allowedExecutables",
    )?;
    let writable = narrow(s.writable_paths.as_ref(), a.writable, name, "writablePaths")?;
    let profile_best_effort = s.best_effort.unwrap_or(false);
    let best_effort = match a.best_effort {
        Some(true) if !profile_best_effort => {
            return Err(format!(
                "annotation {BEST_EFFORT}: \"true\" would relax ImageProfile {name} (bestEffort: false)"
            ))
        }
        Some(b) => b,
        None => profile_best_effort,
    };
    Ok(Confinement {
        landlock: spec_of(executables, writable, best_effort),
        read_only_rootfs: sc_read_only || s.read_only_root_filesystem.unwrap_or(true),
        profile: Some(name.to_string()),
    })
}

/// The cluster's ImageProfiles as the agent sees them: a list+watch started on first use.
#[derive(Default)]
pub struct ProfileCache {
    store: Mutex<Option<Store<ImageProfile>>>,
}

impl std::fmt::Debug for ProfileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileCache").finish_non_exhaustive()
    }
}

impl ProfileCache {
    /// The watch's store, starting it with the client `connect` gives on first use (must be
    /// called within a tokio runtime).
    fn store(
        &self,
        connect: impl FnOnce() -> crate::Result<Client>,
    ) -> crate::Result<Store<ImageProfile>> {
        let mut g = crate::lock(&self.store);
        if let Some(s) = &*g {
            return Ok(s.clone());
        }
        let client = connect()?;
        let (store, writer) = watcher::store::<ImageProfile>();
        tokio::spawn(async move {
            let stream = reflector(
                writer,
                watcher(client.api::<ImageProfile>(None), WatcherConfig::default()),
            );
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    tracing::debug!(error = %e, "image profile watch error (the watcher recovers)");
                }
            }
        });
        *g = Some(store.clone());
        Ok(store)
    }

    /// The profile that applies to `image`, waiting up to `wait` for the first list. `Err`
    /// is the message of a `CreateContainerConfigError` (the container is retried).
    pub async fn for_image(
        &self,
        connect: impl FnOnce() -> crate::Result<Client>,
        image: &str,
        wait: Duration,
    ) -> Result<Option<Arc<ImageProfile>>, String> {
        let store = self
            .store(connect)
            .map_err(|e| format!("cannot watch ImageProfiles: {e}"))?;
        if !store.is_ready()
            && tokio::time::timeout(wait, store.wait_until_ready())
                .await
                .is_err()
        {
            return Err(
                "ImageProfiles not yet listed from the API server; the container starts once they are"
                    .into(),
            );
        }
        let all = store.list();
        Ok(kapsel_api::profile::select(&all, image).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn paths(p: &[&str]) -> Vec<PathBuf> {
        p.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn annotations_to_landlock() {
        let pod_level = ann(&[(ALLOWED_EXECUTABLES, "/bin/httpd, /bin/true,")]);
        let got = landlock_for(&pod_level, "web").unwrap().unwrap();
        assert_eq!(got.allowed_executables, paths(&["/bin/httpd", "/bin/true"]));
        assert_eq!(got.writable_paths, None);
        assert!(!got.best_effort);

        let both = ann(&[
            (ALLOWED_EXECUTABLES, "/bin/httpd"),
            ("kapsel.dev/allowed-executables.side", "/bin/sleep"),
            (WRITABLE_PATHS, "/tmp,/var/run"),
            (BEST_EFFORT, "true"),
        ]);
        let web = landlock_for(&both, "web").unwrap().unwrap();
        let side = landlock_for(&both, "side").unwrap().unwrap();
        assert_eq!(web.allowed_executables, paths(&["/bin/httpd"]));
        assert_eq!(side.allowed_executables, paths(&["/bin/sleep"]));
        assert_eq!(side.writable_paths, Some(paths(&["/tmp", "/var/run"])));
        assert!(side.best_effort);

        let only_writes = ann(&[("kapsel.dev/writable-paths.c", "/data")]);
        assert_eq!(landlock_for(&only_writes, "other").unwrap(), None);
        let c = landlock_for(&only_writes, "c").unwrap().unwrap();
        assert_eq!(c.allowed_executables, paths(&["/"]));

        assert_eq!(landlock_for(&ann(&[]), "c").unwrap(), None);
        for bad in [
            ann(&[(ALLOWED_EXECUTABLES, "bin/sh")]),
            ann(&[(ALLOWED_EXECUTABLES, "/bin/../sh")]),
            ann(&[(ALLOWED_EXECUTABLES, " , ")]),
            ann(&[(ALLOWED_EXECUTABLES, "/bin/sh"), (BEST_EFFORT, "yes")]),
            ann(&[(WRITABLE_PATHS, "tmp")]),
        ] {
            let err = landlock_for(&bad, "c").unwrap_err();
            assert!(err.contains("annotation kapsel.dev/"), "{err}");
        }
    }

    fn prof(
        exe: Option<&[&str]>,
        writable: Option<&[&str]>,
        read_only: Option<bool>,
        best_effort: Option<bool>,
    ) -> ImageProfile {
        let mut p = ImageProfile::with_meta(kapsel_api::ObjectMeta::named("web-profile"));
        let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        p.spec = kapsel_api::ImageProfileSpec {
            image: "busybox".into(),
            allowed_executables: exe.map(strings),
            writable_paths: writable.map(strings),
            read_only_root_filesystem: read_only,
            best_effort,
        };
        p
    }

    fn spec(exe: &[&str], writable: Option<&[&str]>, best_effort: bool) -> Option<LandlockSpec> {
        Some(LandlockSpec {
            allowed_executables: paths(exe),
            writable_paths: writable.map(paths),
            best_effort,
        })
    }

    #[test]
    fn profiles_merged_with_annotations() {
        let httpd = prof(Some(&["/bin/httpd", "/lib"]), Some(&["/www"]), None, None);
        let open = prof(None, None, Some(false), Some(true));
        struct Case {
            what: &'static str,
            profile: Option<ImageProfile>,
            ann: Vec<(&'static str, &'static str)>,
            sc_read_only: bool,
            want: Result<(Option<LandlockSpec>, bool), &'static str>,
        }
        let cases = vec![
            Case {
                what: "no profile, no annotations: unconfined",
                profile: None,
                ann: vec![],
                sc_read_only: false,
                want: Ok((None, false)),
            },
            Case {
                what: "no profile: the annotations decide, securityContext the root fs",
                profile: None,
                ann: vec![(ALLOWED_EXECUTABLES, "/bin/sh"), (BEST_EFFORT, "true")],
                sc_read_only: true,
                want: Ok((spec(&["/bin/sh"], None, true), true)),
            },
            Case {
                what: "profile alone: its lists, read-only root by default, not best effort",
                profile: Some(httpd.clone()),
                ann: vec![],
                sc_read_only: false,
                want: Ok((spec(&["/bin/httpd", "/lib"], Some(&["/www"]), false), true)),
            },
            Case {
                what: "annotations narrow: a listed file and a file beneath a listed directory",
                profile: Some(httpd.clone()),
                ann: vec![
                    ("kapsel.dev/allowed-executables.web", "/bin/httpd,/lib/ld.so"),
                    (WRITABLE_PATHS, "/www/upload"),
                ],
                sc_read_only: false,
                want: Ok((spec(&["/bin/httpd", "/lib/ld.so"], Some(&["/www/upload"]), false), true)),
            },
            Case {
                what: "annotations cannot widen the executables",
                profile: Some(httpd.clone()),
                ann: vec![(ALLOWED_EXECUTABLES, "/bin/httpd,/bin/sh")],
                sc_read_only: false,
                want: Err("annotation kapsel.dev/allowed-executables: /bin/sh is not within ImageProfile web-profile's allowedExecutables (/bin/httpd,/lib)"),
            },
            Case {
                what: "a sibling with a common string prefix is not beneath",
                profile: Some(httpd.clone()),
                ann: vec![(WRITABLE_PATHS, "/www2")],
                sc_read_only: false,
                want: Err("annotation kapsel.dev/writable-paths: /www2 is not within ImageProfile web-profile's writablePaths (/www)"),
            },
            Case {
                what: "the container's own annotation is checked too",
                profile: Some(httpd.clone()),
                ann: vec![("kapsel.dev/writable-paths.web", "/")],
                sc_read_only: false,
                want: Err("annotation kapsel.dev/writable-paths.web: / is not within"),
            },
            Case {
                what: "best effort cannot be asked against the profile",
                profile: Some(httpd.clone()),
                ann: vec![(BEST_EFFORT, "true")],
                sc_read_only: false,
                want: Err("annotation kapsel.dev/landlock-best-effort: \"true\" would relax ImageProfile web-profile (bestEffort: false)"),
            },
            Case {
                what: "fields the profile omits are open to the annotations; best effort can be turned off",
                profile: Some(open.clone()),
                ann: vec![(ALLOWED_EXECUTABLES, "/bin/sh"), (BEST_EFFORT, "false")],
                sc_read_only: false,
                want: Ok((spec(&["/bin/sh"], None, false), false)),
            },
            Case {
                what: "profile without lists: no Landlock, its root fs setting, securityContext may still make it read-only",
                profile: Some(open.clone()),
                ann: vec![],
                sc_read_only: true,
                want: Ok((None, true)),
            },
            Case {
                what: "readOnlyRootFilesystem false in the profile and the pod: writable",
                profile: Some(prof(Some(&["/bin"]), None, Some(false), Some(true))),
                ann: vec![],
                sc_read_only: false,
                want: Ok((spec(&["/bin"], None, true), false)),
            },
            Case {
                what: "bad annotations are still errors with a profile",
                profile: Some(httpd.clone()),
                ann: vec![(ALLOWED_EXECUTABLES, "bin/httpd")],
                sc_read_only: false,
                want: Err("annotation kapsel.dev/allowed-executables: \"bin/httpd\" must be an absolute path"),
            },
        ];
        for c in cases {
            let got = effective(c.profile.as_ref(), &ann(&c.ann), "web", c.sc_read_only);
            match (got, c.want) {
                (Ok(g), Ok((landlock, ro))) => {
                    assert_eq!(g.landlock, landlock, "{}", c.what);
                    assert_eq!(g.read_only_rootfs, ro, "{}", c.what);
                    assert_eq!(
                        g.profile.as_deref(),
                        c.profile.as_ref().map(|p| p.metadata.name()),
                        "{}",
                        c.what
                    );
                }
                (Err(e), Err(want)) => assert!(e.starts_with(want), "{}: {e}", c.what),
                (got, want) => panic!("{}: got {got:?}, want {want:?}", c.what),
            }
        }
    }
}
