//! Pod volumes: emptyDir (tmpfs when `medium: Memory`), hostPath, and projected configMap,
//! secret and downwardAPI files written atomically (kubelet's AtomicWriter: a `..data` symlink
//! swapped to a fresh timestamped directory, so readers never see a half-written set).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use kapsel_api::{Container, KeyToPath, Pod, Volume};
use kapsel_runtime::VolumeMount;

use crate::env::{config_map_data, field_value, resource_value, secret_data, EnvSources};
use crate::error::{AgentError, IoContext, Result};

/// A relative path that stays inside its directory.
fn safe_rel(p: &str) -> Result<PathBuf> {
    let pb = PathBuf::from(p);
    if p.is_empty()
        || pb.is_absolute()
        || pb.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(AgentError::Config(format!("invalid path {p:?} in volume")));
    }
    Ok(pb)
}

/// Files of a projected volume: relative path → (content, mode).
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    default_mode: Option<i32>,
    what: &str,
) -> Result<Payload> {
    let mode = default_mode.map_or(0o644, |m| (m & 0o777) as u32);
    let mut out = Payload::new();
    if items.is_empty() {
        for (k, v) in data {
            out.insert(k.clone(), (v.clone(), mode));
        }
    } else {
        for it in items {
            let v = data
                .get(&it.key)
                .ok_or_else(|| AgentError::Config(format!("{what}: key {:?} not found", it.key)))?;
            safe_rel(&it.path)?;
            out.insert(
                it.path.clone(),
                (v.clone(), it.mode.map_or(mode, |m| (m & 0o777) as u32)),
            );
        }
    }
    Ok(out)
}

/// The payload of a configMap/secret/downwardAPI volume (`None` for other kinds, or an
/// optional source that does not exist).
pub fn payload(pod: &Pod, v: &Volume, src: &EnvSources) -> Result<Option<Payload>> {
    let ns = pod.metadata.namespace();
    if let Some(c) = &v.config_map {
        let name = c.name.clone().unwrap_or_default();
        return match src.config_maps.get(&name) {
            Some(cm) => project(
                &config_map_data(cm),
                &c.items,
                c.default_mode,
                &format!("configmap {ns}/{name}"),
            )
            .map(Some),
            None if c.optional == Some(true) => Ok(Some(Payload::new())),
            None => Err(AgentError::Config(format!(
                "configmap \"{name}\" not found"
            ))),
        };
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        return match src.secrets.get(&name) {
            Some(sec) => project(
                &secret_data(sec),
                &s.items,
                s.default_mode,
                &format!("secret {ns}/{name}"),
            )
            .map(Some),
            None if s.optional == Some(true) => Ok(Some(Payload::new())),
            None => Err(AgentError::Config(format!("secret \"{name}\" not found"))),
        };
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.map_or(0o644, |m| (m & 0o777) as u32);
        let mut out = Payload::new();
        let first = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
            .unwrap_or_default();
        for f in &d.items {
            safe_rel(&f.path)?;
            let val = if let Some(fr) = &f.field_ref {
                field_value(pod, fr, src)?
            } else if let Some(rr) = &f.resource_field_ref {
                resource_value(pod, &first, rr, src)?
            } else {
                String::new()
            };
            out.insert(
                f.path.clone(),
                (
                    val.into_bytes(),
                    f.mode.map_or(mode, |m| (m & 0o777) as u32),
                ),
            );
        }
        return Ok(Some(out));
    }
    Ok(None)
}

fn read_payload(dir: &Path, payload: &Payload) -> bool {
    payload
        .iter()
        .all(|(rel, (content, _))| std::fs::read(dir.join(rel)).is_ok_and(|c| &c == content))
        && count_files(dir) == payload.len()
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_files(&p)
            } else {
                1
            }
        })
        .sum()
}

/// Write `payload` into `dir` atomically. Returns whether anything changed.
pub fn atomic_write(dir: &Path, payload: &Payload) -> Result<bool> {
    std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    let data = dir.join("..data");
    if data.exists() && read_payload(&data, payload) {
        return Ok(false);
    }
    let old = std::fs::read_link(&data).ok();
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let new_dir = dir.join(&stamp);
    std::fs::create_dir(&new_dir).ctx(|| format!("create {}", new_dir.display()))?;
    for (rel, (content, mode)) in payload {
        let p = new_dir.join(safe_rel(rel)?);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).ctx(|| format!("create {}", parent.display()))?;
        }
        std::fs::write(&p, content).ctx(|| format!("write {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
            .ctx(|| format!("chmod {}", p.display()))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).ctx(|| "symlink ..data_tmp".into())?;
    std::fs::rename(&tmp, &data).ctx(|| "swap ..data".into())?;
    // Top-level names point through ..data.
    let tops: std::collections::BTreeSet<String> = payload
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_string))
        .collect();
    for t in &tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(t), &link)
                .ctx(|| format!("symlink {t}"))?;
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy().into_owned();
            if !n.starts_with("..") && !tops.contains(&n) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// The directory of the pod's volume `name`.
pub fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

fn is_mountpoint(p: &Path) -> bool {
    let Ok(s) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.to_string_lossy();
    s.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
}

/// Create or refresh every volume of the pod; returns volume name → host path.
pub fn prepare(
    pod: &Pod,
    pod_dir: &Path,
    src: &EnvSources,
    can_mount: bool,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let Some(spec) = &pod.spec else {
        return Ok(out);
    };
    for v in &spec.volumes {
        let dir = volume_dir(pod_dir, &v.name);
        if let Some(e) = &v.empty_dir {
            std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .ctx(|| format!("chmod {}", dir.display()))?;
            if e.medium.as_deref() == Some("Memory") && can_mount && !is_mountpoint(&dir) {
                let size = e
                    .size_limit
                    .as_ref()
                    .and_then(|q| q.value().ok())
                    .filter(|s| *s > 0);
                let opts = match size {
                    Some(s) => format!("mode=0777,size={s}"),
                    None => "mode=0777".to_string(),
                };
                nix::mount::mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                    Some(opts.as_str()),
                )
                .map_err(|e| {
                    AgentError::Config(format!("emptyDir {}: tmpfs mount: {e}", v.name))
                })?;
            }
            out.insert(v.name.clone(), dir);
        } else if let Some(h) = &v.host_path {
            let p = PathBuf::from(&h.path);
            if !p.is_absolute() {
                return Err(AgentError::Config(format!(
                    "hostPath {:?} must be absolute",
                    h.path
                )));
            }
            match h.type_.as_deref().unwrap_or("") {
                "" => {}
                "DirectoryOrCreate" => {
                    std::fs::create_dir_all(&p).ctx(|| format!("create {}", p.display()))?;
                }
                "Directory" if p.is_dir() => {}
                "Directory" => {
                    return Err(AgentError::Config(format!(
                        "hostPath type check failed: {} is not a directory",
                        h.path
                    )))
                }
                "File" if p.is_file() => {}
                "File" => {
                    return Err(AgentError::Config(format!(
                        "hostPath type check failed: {} is not a file",
                        h.path
                    )))
                }
                "FileOrCreate" => {
                    if !p.exists() {
                        std::fs::write(&p, b"").ctx(|| format!("create {}", p.display()))?;
                    }
                }
                other => {
                    return Err(AgentError::Config(format!(
                        "hostPath type {other:?} is not supported"
                    )))
                }
            }
            out.insert(v.name.clone(), p);
        } else if let Some(payload) = payload(pod, v, src)? {
            atomic_write(&dir, &payload)?;
            out.insert(v.name.clone(), dir);
        } else {
            return Err(AgentError::Config(format!(
                "volume {:?} has no supported source",
                v.name
            )));
        }
    }
    Ok(out)
}

/// Remove the pod's volumes (unmounting tmpfs first). Host paths are left alone.
pub fn cleanup(pod_dir: &Path) {
    let vols = pod_dir.join("volumes");
    if let Ok(rd) = std::fs::read_dir(&vols) {
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if is_mountpoint(&p) {
                let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
    let _ = std::fs::remove_dir_all(pod_dir);
}

/// The container's mounts from its `volumeMounts`.
pub fn mounts(
    pod: &Pod,
    c: &Container,
    vols: &BTreeMap<String, PathBuf>,
) -> Result<Vec<VolumeMount>> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    for m in &c.volume_mounts {
        let base = vols.get(&m.name).ok_or_else(|| {
            AgentError::Config(format!("volumeMount {:?}: no such volume", m.name))
        })?;
        let projected = spec
            .volumes
            .iter()
            .find(|v| v.name == m.name)
            .is_some_and(|v| {
                v.config_map.is_some() || v.secret.is_some() || v.downward_api.is_some()
            });
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sp) => {
                let p = base.join(safe_rel(sp)?);
                if !p.exists() {
                    std::fs::create_dir_all(&p)
                        .ctx(|| format!("create subPath {}", p.display()))?;
                }
                p
            }
            None => base.clone(),
        };
        out.push(VolumeMount {
            source,
            destination: PathBuf::from(&m.mount_path),
            read_only: m.read_only == Some(true) || projected,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{ConfigMap, ConfigMapVolumeSource, HostPathVolumeSource, ObjectMeta, PodSpec};

    fn payload_of(pairs: &[(&str, &str)]) -> Payload {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn atomic_writer_swaps_and_prunes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        assert!(atomic_write(&dir, &payload_of(&[("a", "1"), ("sub/b", "2")])).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert!(!atomic_write(&dir, &payload_of(&[("a", "1"), ("sub/b", "2")])).unwrap());
        assert!(atomic_write(&dir, &payload_of(&[("a", "3")])).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(!dir.join("sub").exists());
        let stamps = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                let n = e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(stamps, 1, "old generation removed");
    }

    #[test]
    fn prepare_configmap_and_hostpath_errors() {
        let d = tempfile::tempdir().unwrap();
        let mut p = Pod::with_meta(ObjectMeta::namespaced("ns", "p"));
        p.spec = Some(PodSpec {
            volumes: vec![Volume {
                name: "cfg".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: Some("c".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut src = EnvSources::default();
        let err = prepare(&p, d.path(), &src, false).unwrap_err();
        assert_eq!(err.to_string(), "configmap \"c\" not found");
        let mut cm = ConfigMap::default();
        cm.data.insert("k".into(), "v".into());
        src.config_maps.insert("c".into(), cm);
        let v = prepare(&p, d.path(), &src, false).unwrap();
        assert_eq!(std::fs::read_to_string(v["cfg"].join("k")).unwrap(), "v");

        p.spec.as_mut().unwrap().volumes = vec![Volume {
            name: "h".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/definitely/not/here".into(),
                type_: Some("Directory".into()),
            }),
            ..Default::default()
        }];
        assert!(prepare(&p, d.path(), &src, false)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
    }

    #[test]
    fn rejects_escaping_paths() {
        assert!(safe_rel("../x").is_err());
        assert!(safe_rel("/etc/passwd").is_err());
        assert!(safe_rel("a/b").is_ok());
    }
}
