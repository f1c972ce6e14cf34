//! Executable allow-lists from pod annotations (kapsel's image profiles), turned into the
//! runtime's [`LandlockSpec`].
//!
//! - `kapsel.dev/allowed-executables: "/bin/httpd,/bin/true"` — every container of the pod may
//!   execute only these files (or files beneath listed directories);
//!   `kapsel.dev/allowed-executables.NAME` sets the list of container `NAME` instead.
//! - `kapsel.dev/writable-paths` (and `.NAME`): writes only beneath these paths.
//! - `kapsel.dev/landlock-best-effort: "true"`: run unrestricted on a kernel without Landlock
//!   instead of failing the container.
//!
//! A container without an allow-list is not restricted (a writable-paths annotation alone
//! allows executing everything: `/` is the allow-list then).

use std::collections::BTreeMap;
use std::path::PathBuf;

use kapsel_runtime::LandlockSpec;

pub const ALLOWED_EXECUTABLES: &str = "kapsel.dev/allowed-executables";
pub const WRITABLE_PATHS: &str = "kapsel.dev/writable-paths";
pub const BEST_EFFORT: &str = "kapsel.dev/landlock-best-effort";

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

/// The Landlock spec of container `container` from the pod's annotations; `Err` is the reason
/// of a `CreateContainerConfigError`.
pub fn landlock_for(
    annotations: &BTreeMap<String, String>,
    container: &str,
) -> Result<Option<LandlockSpec>, String> {
    let exe = lookup(annotations, ALLOWED_EXECUTABLES, container);
    let writable = lookup(annotations, WRITABLE_PATHS, container);
    if exe.is_none() && writable.is_none() {
        return Ok(None);
    }
    let allowed_executables = match exe {
        Some((v, key)) => {
            let l = list(v, &key)?;
            if l.is_empty() {
                return Err(format!("annotation {key} lists no executable"));
            }
            l
        }
        None => vec![PathBuf::from("/")],
    };
    let writable_paths = writable.map(|(v, key)| list(v, &key)).transpose()?;
    let best_effort = match annotations.get(BEST_EFFORT).map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!(
                "annotation {BEST_EFFORT}: {other:?} is not \"true\" or \"false\""
            ))
        }
    };
    Ok(Some(LandlockSpec {
        allowed_executables,
        writable_paths,
        best_effort,
    }))
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
}
