//! `kapsel image import FILE`: an OCI image layout tar (`skopeo copy … oci-archive:`) or a
//! `docker save` / `skopeo copy … docker-archive:` tar, into the store without a registry.
//!
//! The archive is untrusted: it is unpacked into a staging directory inside the store with the
//! same safe unpacker as layers, every file it names is opened only inside that directory,
//! and every blob's digest is checked before it enters the content store.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{ImageError, Result};
use crate::pull::{select_platform, Manifest, Parsed, Progress, Resolved, DOCKER_MANIFEST};
use crate::reference::ImageRef;
use crate::store::{sha256_hex, ImageInfo, ImageStore};
use crate::unpack::{open_inside, sniff, unpack_layer, Compression, UnpackOptions};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<crate::pull::Descriptor>,
}

struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl ImageStore {
    /// Import every image of an archive. Names come from the archive (`RepoTags`, or the
    /// `io.containerd.image.name` / a full `org.opencontainers.image.ref.name` annotation);
    /// `name` names an archive that holds one image without a usable name (or renames it).
    pub async fn import_archive(
        &self,
        path: &Path,
        name: Option<&ImageRef>,
    ) -> Result<Vec<ImageInfo>> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let _g = self.inner.gc_lock.read().await;
        let start = Instant::now();
        let staging = Staging(self.root().join("tmp").join(format!(
            "import-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )));
        std::fs::create_dir_all(&staging.0).map_err(|e| ImageError::io("create", &staging.0, e))?;
        let (archive, dir) = (path.to_path_buf(), staging.0.clone());
        tokio::task::spawn_blocking(move || {
            let f =
                std::fs::File::open(&archive).map_err(|e| ImageError::io("open", &archive, e))?;
            unpack_layer(f, &dir, &[], UnpackOptions::default())
        })
        .await
        .map_err(|e| ImageError::InvalidContent(format!("import task: {e}")))??;

        let dir = staging.0.clone();
        let images: Vec<(Vec<ImageRef>, Resolved)> = if dir.join("manifest.json").exists() {
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.stage_docker_archive(&dir))
                .await
                .map_err(|e| ImageError::InvalidContent(format!("import task: {e}")))??
        } else if dir.join("index.json").exists() {
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.stage_oci_layout(&dir))
                .await
                .map_err(|e| ImageError::InvalidContent(format!("import task: {e}")))??
        } else {
            return Err(ImageError::InvalidContent(
                "archive has neither manifest.json (docker save) nor index.json (OCI layout)"
                    .into(),
            ));
        };
        if images.is_empty() {
            return Err(ImageError::InvalidContent("archive holds no image".into()));
        }
        if name.is_some() && images.len() > 1 {
            return Err(ImageError::InvalidContent(format!(
                "archive holds {} images: a name can only be given to one",
                images.len()
            )));
        }
        let mut out = Vec::new();
        for (names, resolved) in images {
            let names = match name {
                Some(n) => vec![n.clone()],
                None if names.is_empty() => {
                    return Err(ImageError::InvalidContent(
                        "an image in the archive has no name: give one".into(),
                    ))
                }
                None => names,
            };
            for n in names {
                let _img = self.inner.locks.lock(&format!("image:{n}")).await;
                let r = Resolved {
                    digest: resolved.digest.clone(),
                    manifest_digest: resolved.manifest_digest.clone(),
                    manifest: resolved.manifest.clone(),
                };
                let mut info = self
                    .materialize(&n, r, None, Progress::none(), start)
                    .await?;
                info.pulled = None;
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Hash `rel` (inside the staging dir) and move it into the blob store. Returns its digest.
    fn adopt_file(
        &self,
        dir: &Path,
        rel: &str,
        expect: Option<&str>,
    ) -> Result<(String, u64, Compression)> {
        let mut f = open_inside(dir, rel)?;
        let mut h = Sha256::new();
        let mut head = [0u8; 4];
        let mut n = 0;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = std::io::Read::read(&mut f, &mut buf)
                .map_err(|e| ImageError::io("read", dir.join(rel), e))?;
            if k == 0 {
                break;
            }
            if n < 4 {
                let take = (4 - n as usize).min(k);
                head[n as usize..n as usize + take].copy_from_slice(&buf[..take]);
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        if let Some(want) = expect {
            if want != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("archive blob {rel}"),
                    expected: want.to_string(),
                    actual: digest,
                });
            }
        }
        let dst = self.blob_path(&digest)?;
        if !dst.exists() {
            let canon = dir
                .join(rel)
                .canonicalize()
                .map_err(|e| ImageError::io("resolve", dir.join(rel), e))?;
            std::fs::rename(&canon, &dst).map_err(|e| ImageError::io("rename", &dst, e))?;
        }
        Ok((digest, n, sniff(&head)))
    }

    fn stage_docker_archive(&self, dir: &Path) -> Result<Vec<(Vec<ImageRef>, Resolved)>> {
        let mut mf = open_inside(dir, "manifest.json")?;
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut mf, &mut b)
            .map_err(|e| ImageError::io("read", dir.join("manifest.json"), e))?;
        let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(&b)
            .map_err(|e| ImageError::InvalidContent(format!("manifest.json: {e}")))?;
        let mut out = Vec::new();
        for e in entries {
            let mut cf = open_inside(dir, &e.config)?;
            let mut config = Vec::new();
            std::io::Read::read_to_end(&mut cf, &mut config)
                .map_err(|err| ImageError::io("read", dir.join(&e.config), err))?;
            let config_digest = format!("sha256:{}", sha256_hex(&config));
            self.write_blob(&config_digest, &config, "image config")?;
            let mut seen: std::collections::HashMap<String, serde_json::Value> = Default::default();
            let mut layers = Vec::new();
            for l in &e.layers {
                // the same file listed twice: the first adopt moved it already
                if let Some(v) = seen.get(l) {
                    layers.push(v.clone());
                    continue;
                }
                let (digest, size, comp) = self.adopt_file(dir, l, None)?;
                let media = match comp {
                    Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                    Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
                };
                let v = serde_json::json!({"mediaType": media, "size": size, "digest": digest});
                seen.insert(l.clone(), v.clone());
                layers.push(v);
            }
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": config.len(),
                    "digest": config_digest,
                },
                "layers": layers,
            });
            let bytes = serde_json::to_vec(&manifest)
                .map_err(|e| ImageError::InvalidContent(e.to_string()))?;
            let digest = format!("sha256:{}", sha256_hex(&bytes));
            self.write_blob(&digest, &bytes, "manifest")?;
            let names = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| ImageRef::parse(t))
                .collect::<Result<Vec<_>>>()?;
            out.push((
                names,
                Resolved {
                    digest: digest.clone(),
                    manifest_digest: digest,
                    manifest: Manifest::parse(&bytes)?,
                },
            ));
        }
        Ok(out)
    }

    fn stage_oci_layout(&self, dir: &Path) -> Result<Vec<(Vec<ImageRef>, Resolved)>> {
        let read = |rel: &str| -> Result<Vec<u8>> {
            let mut f = open_inside(dir, rel)?;
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut b)
                .map_err(|e| ImageError::io("read", dir.join(rel), e))?;
            Ok(b)
        };
        let index: OciIndex = serde_json::from_slice(&read("index.json")?)
            .map_err(|e| ImageError::InvalidContent(format!("index.json: {e}")))?;
        // every blob, verified, into the content store
        let blobs = dir.join("blobs/sha256");
        let rd = std::fs::read_dir(&blobs).map_err(|e| ImageError::io("read", &blobs, e))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let digest = format!("sha256:{name}");
            crate::reference::validate_digest(&digest)
                .map_err(|m| ImageError::InvalidContent(format!("archive blob name: {m}")))?;
            self.adopt_file(dir, &format!("blobs/sha256/{name}"), Some(&digest))?;
        }
        let mut out = Vec::new();
        for d in index.manifests {
            crate::reference::validate_digest(&d.digest).map_err(ImageError::InvalidContent)?;
            let ann = d.annotations.clone().unwrap_or_default();
            let mut names = Vec::new();
            if let Some(n) = ann.get("io.containerd.image.name") {
                names.push(ImageRef::parse(n)?);
            } else if let Some(n) = ann.get("org.opencontainers.image.ref.name") {
                // a bare tag ("1.36") does not say which repository: only full names count
                if n.contains('/') || n.contains(':') {
                    if let Ok(r) = ImageRef::parse(n) {
                        names.push(r);
                    }
                }
            }
            let bytes = self.read_blob(&d.digest)?;
            let (manifest_digest, manifest) = match Parsed::parse(&bytes)? {
                Parsed::Manifest(m) => (d.digest.clone(), m),
                Parsed::Index(entries) => {
                    let e = select_platform(&entries).ok_or_else(|| {
                        ImageError::InvalidContent(
                            "no manifest for this platform in the archive".into(),
                        )
                    })?;
                    (
                        e.digest.clone(),
                        Manifest::parse(&self.read_blob(&e.digest)?)?,
                    )
                }
            };
            out.push((
                names,
                Resolved {
                    digest: d.digest.clone(),
                    manifest_digest,
                    manifest,
                },
            ));
        }
        Ok(out)
    }
}
