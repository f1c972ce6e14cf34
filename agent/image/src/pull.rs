//! Pulling from an OCI distribution registry (through `oci-client`) and turning manifests and
//! blobs into snapshots and an image record.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::auth::{Credentials, Endpoint, RegistryConfig};
use crate::config::ImageConfig;
use crate::error::{ImageError, Result};
use crate::reference::{ImageRef, PullPolicy};
use crate::store::{
    chain_ids, digest_hex, now_unix_ms, sha256_hex, ImageInfo, ImageRecord, ImageStore, PullStats,
    SnapshotMeta,
};
use crate::unpack::unpack_layer;

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ACCEPT: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// What a pull reports while it works (for `Pulling` events and progress lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// Asking `endpoint` (a mirror or the registry) what the reference names.
    Resolving {
        reference: String,
        endpoint: String,
    },
    /// A mirror failed; the next mirror or the registry itself is tried.
    MirrorFailed {
        mirror: String,
        error: String,
    },
    /// The manifest for this node: `layers` layers, `bytes` compressed in all.
    Resolved {
        digest: String,
        layers: usize,
        bytes: u64,
    },
    /// The layer is unpacked on this node already.
    LayerPresent {
        digest: String,
    },
    Downloading {
        digest: String,
        done: u64,
        total: u64,
    },
    Downloaded {
        digest: String,
        bytes: u64,
    },
    Unpacked {
        digest: String,
        size: u64,
    },
}

/// A progress callback (cheap to clone). `Progress::default()` reports nothing.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<ProgressFn>>);

/// The callback behind a [`Progress`].
pub type ProgressFn = dyn Fn(&PullEvent) + Send + Sync;

impl Progress {
    pub fn new(f: impl Fn(&PullEvent) + Send + Sync + 'static) -> Self {
        Progress(Some(Arc::new(f)))
    }
    pub fn none() -> Self {
        Progress(None)
    }
    pub(crate) fn emit(&self, e: PullEvent) {
        if let Some(f) = &self.0 {
            f(&e);
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(..)"
        } else {
            "Progress(none)"
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: i64,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// An image manifest (OCI or Docker v2 schema 2).
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

pub(crate) enum Parsed {
    Index(Vec<Descriptor>),
    Manifest(Manifest),
}

fn is_layer_type(mt: &str) -> bool {
    mt.is_empty()
        || matches!(
            mt,
            "application/vnd.oci.image.layer.v1.tar"
                | "application/vnd.oci.image.layer.v1.tar+gzip"
                | "application/vnd.oci.image.layer.v1.tar+zstd"
                | "application/vnd.oci.image.layer.nondistributable.v1.tar"
                | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
                | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
                | "application/vnd.docker.image.rootfs.diff.tar"
                | "application/vnd.docker.image.rootfs.diff.tar.gzip"
                | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        )
}

impl Parsed {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self> {
        let raw: RawManifest = serde_json::from_slice(bytes)
            .map_err(|e| ImageError::InvalidContent(format!("manifest: {e}")))?;
        if raw.schema_version != 2 {
            return Err(ImageError::Unsupported(format!(
                "manifest schema version {} (Docker schema 1 images are not supported)",
                raw.schema_version
            )));
        }
        let mt = raw.media_type.clone().unwrap_or_default();
        let check = |d: &Descriptor| {
            crate::reference::validate_digest(&d.digest)
                .map_err(|e| ImageError::InvalidContent(format!("manifest descriptor: {e}")))
        };
        if let Some(list) = raw.manifests {
            if !(mt.is_empty() || mt == OCI_INDEX || mt == DOCKER_LIST) {
                return Err(ImageError::Unsupported(format!("manifest media type {mt}")));
            }
            for d in &list {
                check(d)?;
            }
            return Ok(Parsed::Index(list));
        }
        if !(mt.is_empty() || mt == OCI_MANIFEST || mt == DOCKER_MANIFEST) {
            return Err(ImageError::Unsupported(format!("manifest media type {mt}")));
        }
        let config = raw
            .config
            .ok_or_else(|| ImageError::InvalidContent("manifest without config".into()))?;
        check(&config)?;
        let layers = raw.layers.unwrap_or_default();
        for l in &layers {
            check(l)?;
            if !is_layer_type(&l.media_type) {
                return Err(ImageError::Unsupported(format!(
                    "layer media type {}",
                    l.media_type
                )));
            }
        }
        Ok(Parsed::Manifest(Manifest { config, layers }))
    }
}

impl Manifest {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self> {
        match Parsed::parse(bytes)? {
            Parsed::Manifest(m) => Ok(m),
            Parsed::Index(_) => Err(ImageError::InvalidContent(
                "expected an image manifest, got an index".into(),
            )),
        }
    }
}

/// This node's platform in OCI terms (`linux`, `amd64`/`arm64`/…).
pub fn node_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    ("linux", arch)
}

/// The index entry for this node: linux/ARCH, preferring arm64's `v8` variant or none.
pub(crate) fn select_platform(entries: &[Descriptor]) -> Option<&Descriptor> {
    let (os, arch) = node_platform();
    let mut candidates = entries.iter().filter(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == arch)
    });
    let first = candidates.next()?;
    let preferred = std::iter::once(first).chain(candidates).find(|d| {
        let v = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        v.is_none() || v == Some("v8")
    });
    Some(preferred.unwrap_or(first))
}

fn err_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

pub(crate) fn map_oci(e: OciDistributionError, image: &str, registry: &str) -> ImageError {
    let reference = image.to_string();
    let registry = registry.to_string();
    match e {
        OciDistributionError::RegistryError { envelope, url } => {
            let msg = envelope
                .errors
                .iter()
                .map(|x| {
                    format!(
                        "{}: {}",
                        serde_json::to_string(&x.code)
                            .unwrap_or_default()
                            .trim_matches('"'),
                        x.message
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            let message = format!("{msg} ({url})");
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|x| &x.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::ManifestBlobUnknown
                )
            }) {
                ImageError::NotFound { reference, message }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                ImageError::Unauthorized { reference, message }
            } else {
                ImageError::Registry { registry, message }
            }
        }
        OciDistributionError::ImageManifestNotFoundError(message) => {
            ImageError::NotFound { reference, message }
        }
        OciDistributionError::UnauthorizedError { url } => ImageError::Unauthorized {
            reference,
            message: format!("401 Unauthorized from {url}"),
        },
        OciDistributionError::AuthenticationFailure(message) => {
            ImageError::Unauthorized { reference, message }
        }
        OciDistributionError::ServerError { code, url, message } => match code {
            404 => ImageError::NotFound {
                reference,
                message: format!("404 from {url}: {message}"),
            },
            401 | 403 => ImageError::Unauthorized {
                reference,
                message: format!("{code} from {url}: {message}"),
            },
            _ => ImageError::Registry {
                registry,
                message: format!("HTTP {code} from {url}: {message}"),
            },
        },
        OciDistributionError::RequestError(e) => ImageError::Network {
            registry,
            message: err_chain(&e),
        },
        OciDistributionError::IoError(e) => ImageError::Network {
            registry,
            message: err_chain(&e),
        },
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => ImageError::DigestMismatch {
            what: format!("content of {reference}"),
            expected,
            actual,
        },
        other => ImageError::Registry {
            registry,
            message: err_chain(&other),
        },
    }
}

/// Where blobs come from during a pull.
#[derive(Clone)]
pub(crate) struct RemoteSource {
    pub client: Arc<oci_client::Client>,
    pub reference: oci_client::Reference,
    pub auth: RegistryAuth,
    pub host: String,
    pub image: String,
}

pub(crate) struct Resolved {
    pub digest: String,
    pub manifest_digest: String,
    pub manifest: Manifest,
}

/// Aborts the download tasks still running when a pull fails.
struct Tasks(Vec<Option<tokio::task::JoinHandle<Result<PathBuf>>>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for h in self.0.iter().flatten() {
            h.abort();
        }
    }
}

impl ImageStore {
    fn client(&self, registry: &RegistryConfig) -> Arc<oci_client::Client> {
        let http = registry.http_hosts();
        let mut cache = self.inner.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = cache.iter().find(|(h, _)| *h == http) {
            return c.clone();
        }
        // reqwest is built without a bundled crypto provider: use ring (already in the tree)
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::HttpsExcept(http.clone()),
            connect_timeout: Some(std::time::Duration::from_secs(15)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            platform_resolver: None,
            user_agent: concat!("kapsel/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let c = Arc::new(oci_client::Client::new(config));
        cache.push((http, c.clone()));
        c
    }

    /// Make `image` available according to `policy`; the agent's one call per container start.
    pub async fn ensure_image(
        &self,
        image: &ImageRef,
        policy: PullPolicy,
        creds: &Credentials,
        registry: &RegistryConfig,
        progress: Progress,
    ) -> Result<ImageInfo> {
        let _g = self.inner.gc_lock.read().await;
        let _img = self.inner.locks.lock(&format!("image:{image}")).await;
        match policy {
            PullPolicy::Never => self
                .get_locked(image)?
                .ok_or_else(|| ImageError::NotPresent(image.to_string())),
            PullPolicy::IfNotPresent => match self.get_locked(image)? {
                Some(info) => Ok(info),
                None => self.pull_locked(image, creds, registry, progress).await,
            },
            PullPolicy::Always => self.pull_locked(image, creds, registry, progress).await,
        }
    }

    /// Resolve `image` at its registry (or a mirror) and fetch whatever is missing.
    pub async fn pull(
        &self,
        image: &ImageRef,
        creds: &Credentials,
        registry: &RegistryConfig,
        progress: Progress,
    ) -> Result<ImageInfo> {
        self.ensure_image(image, PullPolicy::Always, creds, registry, progress)
            .await
    }

    async fn pull_locked(
        &self,
        image: &ImageRef,
        creds: &Credentials,
        registry: &RegistryConfig,
        progress: Progress,
    ) -> Result<ImageInfo> {
        let start = Instant::now();
        let client = self.client(registry);
        let endpoints = registry.endpoints(image.registry());
        let mut last_err = None;
        for ep in endpoints {
            let src = self.source(&client, image, &ep, creds)?;
            progress.emit(PullEvent::Resolving {
                reference: image.to_string(),
                endpoint: ep.host.clone(),
            });
            match self.resolve(&src, image).await {
                Ok(resolved) => {
                    return self
                        .materialize(image, resolved, Some(src), progress, start)
                        .await
                }
                Err(e) if ep.is_mirror => {
                    tracing::warn!(mirror = %ep.host, error = %e, "registry mirror failed");
                    progress.emit(PullEvent::MirrorFailed {
                        mirror: ep.host.clone(),
                        error: e.to_string(),
                    });
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| ImageError::NotFound {
            reference: image.to_string(),
            message: "no registry endpoint".into(),
        }))
    }

    fn source(
        &self,
        client: &Arc<oci_client::Client>,
        image: &ImageRef,
        ep: &Endpoint,
        creds: &Credentials,
    ) -> Result<RemoteSource> {
        let repo = image.repository().to_string();
        let reference = match (image.digest(), image.tag()) {
            (Some(d), _) => {
                oci_client::Reference::with_digest(ep.host.clone(), repo, d.to_string())
            }
            (None, Some(t)) => {
                oci_client::Reference::with_tag(ep.host.clone(), repo, t.to_string())
            }
            (None, None) => oci_client::Reference::with_tag(ep.host.clone(), repo, "latest".into()),
        };
        let lookup = if ep.is_mirror {
            ImageRef::from_parts(&ep.host, image.repository(), Some("latest"), None).ok()
        } else {
            Some(image.clone())
        };
        let auth = match lookup.as_ref().and_then(|r| creds.lookup(r)) {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(RemoteSource {
            client: client.clone(),
            reference,
            auth,
            host: ep.host.clone(),
            image: image.to_string(),
        })
    }

    async fn fetch_manifest(
        &self,
        src: &RemoteSource,
        reference: &oci_client::Reference,
        expect: Option<&str>,
    ) -> Result<(String, Vec<u8>)> {
        let (bytes, _) = src
            .client
            .pull_manifest_raw(reference, &src.auth, ACCEPT)
            .await
            .map_err(|e| map_oci(e, &src.image, &src.host))?;
        let digest = format!("sha256:{}", sha256_hex(&bytes));
        if let Some(want) = expect {
            if want != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("manifest of {}", src.image),
                    expected: want.to_string(),
                    actual: digest,
                });
            }
        }
        Ok((digest, bytes.to_vec()))
    }

    pub(crate) async fn resolve(&self, src: &RemoteSource, image: &ImageRef) -> Result<Resolved> {
        let (digest, bytes) = self
            .fetch_manifest(src, &src.reference, image.digest())
            .await?;
        match Parsed::parse(&bytes)? {
            Parsed::Manifest(manifest) => {
                self.write_blob(&digest, &bytes, "manifest")?;
                Ok(Resolved {
                    manifest_digest: digest.clone(),
                    digest,
                    manifest,
                })
            }
            Parsed::Index(entries) => {
                let (os, arch) = node_platform();
                let entry = select_platform(&entries).ok_or_else(|| ImageError::NotFound {
                    reference: image.to_string(),
                    message: format!("no manifest for {os}/{arch} in the image index"),
                })?;
                let child_ref = src.reference.clone_with_digest(entry.digest.clone());
                let (child_digest, child) = self
                    .fetch_manifest(src, &child_ref, Some(&entry.digest))
                    .await?;
                let manifest = Manifest::parse(&child)?;
                self.write_blob(&digest, &bytes, "image index")?;
                self.write_blob(&child_digest, &child, "manifest")?;
                Ok(Resolved {
                    digest,
                    manifest_digest: child_digest,
                    manifest,
                })
            }
        }
    }

    /// Config, layers, snapshots and the record, from the store or from `src`.
    pub(crate) async fn materialize(
        &self,
        image: &ImageRef,
        resolved: Resolved,
        src: Option<RemoteSource>,
        progress: Progress,
        start: Instant,
    ) -> Result<ImageInfo> {
        let Resolved {
            digest,
            manifest_digest,
            manifest,
        } = resolved;
        let downloaded = Arc::new(AtomicU64::new(0));
        progress.emit(PullEvent::Resolved {
            digest: digest.clone(),
            layers: manifest.layers.len(),
            bytes: manifest.layers.iter().map(|l| l.size.max(0) as u64).sum(),
        });
        self.ensure_blob(&manifest.config, src.as_ref(), &progress, &downloaded)
            .await?;
        let config = ImageConfig::from_json(&self.read_blob(&manifest.config.digest)?)?;
        if config.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::InvalidContent(format!(
                "manifest has {} layers, config {} diff_ids",
                manifest.layers.len(),
                config.diff_ids.len()
            )));
        }
        let chains = chain_ids(&config.diff_ids);
        let sem = Arc::new(tokio::sync::Semaphore::new(
            self.inner.opts.max_concurrent_downloads.max(1),
        ));
        let mut tasks = Tasks(Vec::new());
        for (layer, chain) in manifest.layers.iter().zip(&chains) {
            if self.snapshot_meta(chain).is_some() {
                progress.emit(PullEvent::LayerPresent {
                    digest: layer.digest.clone(),
                });
                tasks.0.push(None);
                continue;
            }
            let (store, src, progress, downloaded, sem, layer) = (
                self.clone(),
                src.clone(),
                progress.clone(),
                downloaded.clone(),
                sem.clone(),
                layer.clone(),
            );
            tasks.0.push(Some(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                store
                    .ensure_blob(&layer, src.as_ref(), &progress, &downloaded)
                    .await
            })));
        }
        let mut size = 0;
        for (i, (layer, chain)) in manifest.layers.iter().zip(&chains).enumerate() {
            let task = tasks.0.get_mut(i).and_then(Option::take);
            let _l = self.inner.locks.lock(&format!("snap:{chain}")).await;
            if let Some(meta) = self.snapshot_meta(chain) {
                size += meta.size;
                if let Some(t) = task {
                    t.abort();
                }
                continue;
            }
            let blob = match task {
                Some(t) => t
                    .await
                    .map_err(|e| ImageError::InvalidContent(format!("download task: {e}")))??,
                // unpacked when we looked, gone now (removed meanwhile): fetch it here
                None => {
                    self.ensure_blob(layer, src.as_ref(), &progress, &downloaded)
                        .await?
                }
            };
            let mut lowers = Vec::with_capacity(i);
            for c in chains[..i].iter().rev() {
                lowers.push(self.snapshot_dir(c)?.join("fs"));
            }
            let store = self.clone();
            let (chain_c, diff_id, layer_digest) = (
                chain.clone(),
                config.diff_ids[i].clone(),
                layer.digest.clone(),
            );
            let blob_c = blob.clone();
            let meta = tokio::task::spawn_blocking(move || {
                store.unpack_snapshot(&chain_c, &diff_id, &layer_digest, &blob_c, &lowers)
            })
            .await
            .map_err(|e| ImageError::InvalidContent(format!("unpack task: {e}")))?;
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    // hostile or corrupt: keep nothing of it
                    let _ = std::fs::remove_file(&blob);
                    return Err(e);
                }
            };
            if !self.inner.opts.keep_layer_blobs {
                let _ = std::fs::remove_file(&blob);
            }
            progress.emit(PullEvent::Unpacked {
                digest: layer.digest.clone(),
                size: meta.size,
            });
            size += meta.size;
        }
        let now = now_unix_ms();
        let name = image.to_string();
        let pulled_at = self
            .read_record(&name)
            .filter(|r| r.manifest_digest == manifest_digest)
            .map(|r| r.pulled_at_unix_ms)
            .unwrap_or(now);
        let rec = ImageRecord {
            name,
            digest: digest.clone(),
            manifest_digest: manifest_digest.clone(),
            config_digest: manifest.config.digest.clone(),
            chain_ids: chains.clone(),
            size,
            pulled_at_unix_ms: pulled_at,
            last_used_unix_ms: now,
        };
        self.write_record(&rec)?;
        let mut info = self.info_for(image, &rec)?;
        let bytes = downloaded.load(Ordering::Relaxed);
        if bytes > 0 {
            info.pulled = Some(PullStats {
                downloaded_bytes: bytes,
                elapsed: start.elapsed(),
            });
        }
        Ok(info)
    }

    /// Unpack a layer blob into the snapshot `chain_id` (blocking). Crash-safe: see the module
    /// docs of [`crate::store`].
    pub(crate) fn unpack_snapshot(
        &self,
        chain_id: &str,
        diff_id: &str,
        layer_digest: &str,
        blob: &std::path::Path,
        lowers_top_first: &[PathBuf],
    ) -> Result<SnapshotMeta> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let final_dir = self.snapshot_dir(chain_id)?;
        if let Some(m) = self.snapshot_meta(chain_id) {
            return Ok(m);
        }
        let tmp = self.root().join("snapshots").join(format!(
            ".tmp-{}-{}-{}",
            digest_hex(chain_id)?,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let fs = tmp.join("fs");
        std::fs::create_dir_all(&fs).map_err(|e| ImageError::io("create", &fs, e))?;
        let result = (|| {
            let f = std::fs::File::open(blob).map_err(|e| ImageError::io("open", blob, e))?;
            let stats = unpack_layer(f, &fs, lowers_top_first, self.unpack_options())?;
            if stats.diff_id != diff_id {
                return Err(ImageError::DigestMismatch {
                    what: format!("uncompressed layer {layer_digest} (diff_id)"),
                    expected: diff_id.to_string(),
                    actual: stats.diff_id,
                });
            }
            let meta = SnapshotMeta {
                chain_id: chain_id.to_string(),
                diff_id: diff_id.to_string(),
                size: stats.size,
            };
            let b =
                serde_json::to_vec(&meta).map_err(|e| ImageError::InvalidContent(e.to_string()))?;
            let marker = tmp.join("complete.json");
            std::fs::write(&marker, b).map_err(|e| ImageError::io("write", &marker, e))?;
            if self.inner.opts.sync_snapshots {
                // everything on disk before the snapshot gets its name
                let dirf =
                    std::fs::File::open(&tmp).map_err(|e| ImageError::io("open", &tmp, e))?;
                nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dirf))
                    .map_err(|e| ImageError::io("syncfs", &tmp, e.into()))?;
            }
            match std::fs::rename(&tmp, &final_dir) {
                Ok(()) => Ok(meta),
                Err(_) if final_dir.join("complete.json").exists() => Ok(meta),
                Err(e) => Err(ImageError::io("rename snapshot", &final_dir, e)),
            }
        })();
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// The blob for `desc`, downloading it from `src` if it is not in the store. Concurrent
    /// calls for the same digest wait for one download. A partial download left by a crash is
    /// resumed with a range request. The bytes are hashed as they arrive; a mismatch deletes
    /// them.
    pub(crate) async fn ensure_blob(
        &self,
        desc: &Descriptor,
        src: Option<&RemoteSource>,
        progress: &Progress,
        downloaded: &AtomicU64,
    ) -> Result<PathBuf> {
        let digest = desc.digest.as_str();
        let path = self.blob_path(digest)?;
        let _l = self.inner.locks.lock(&format!("blob:{digest}")).await;
        if path.exists() {
            return Ok(path);
        }
        let Some(src) = src else {
            return Err(ImageError::InvalidContent(format!(
                "blob {digest} is missing from the archive/store"
            )));
        };
        self.inner.downloads.fetch_add(1, Ordering::Relaxed);
        let size = u64::try_from(desc.size).unwrap_or(0);
        let ingest = self.ingest_path(digest)?;
        let mut hasher = Sha256::new();
        let mut have: u64 = 0;
        if let Ok(md) = std::fs::metadata(&ingest) {
            if md.len() > 0 && (size == 0 || md.len() < size) {
                let mut f =
                    std::fs::File::open(&ingest).map_err(|e| ImageError::io("open", &ingest, e))?;
                have = std::io::copy(&mut f, &mut HashWriter(&mut hasher))
                    .map_err(|e| ImageError::io("read", &ingest, e))?;
                tracing::info!(%digest, bytes = have, "resuming partial download");
            } else {
                let _ = std::fs::remove_file(&ingest);
            }
        }
        let map = |e| map_oci(e, &src.image, &src.host);
        let stream = if have > 0 {
            match src
                .client
                .pull_blob_stream_partial(&src.reference, digest, have, None)
                .await
                .map_err(map)?
            {
                oci_client::client::BlobResponse::Partial(s) => s,
                oci_client::client::BlobResponse::Full(s) => {
                    hasher = Sha256::new();
                    have = 0;
                    let _ = std::fs::remove_file(&ingest);
                    s
                }
            }
        } else {
            src.client
                .pull_blob_stream(&src.reference, digest)
                .await
                .map_err(map)?
        };
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ingest)
            .await
            .map_err(|e| ImageError::io("open", &ingest, e))?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut stream = stream.stream;
        let mut count = have;
        let mut last_report = 0u64;
        let mismatch = |hasher: Sha256| {
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            ImageError::DigestMismatch {
                what: format!("blob of {}", src.image),
                expected: digest.to_string(),
                actual,
            }
        };
        loop {
            match stream.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    count += chunk.len() as u64;
                    downloaded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if size > 0 && count > size {
                        drop(out);
                        let _ = std::fs::remove_file(&ingest);
                        return Err(ImageError::DigestMismatch {
                            what: format!(
                                "blob of {} (larger than its descriptor's {size} bytes)",
                                src.image
                            ),
                            expected: digest.to_string(),
                            actual: format!("{count}+ bytes"),
                        });
                    }
                    out.write_all(&chunk)
                        .await
                        .map_err(|e| ImageError::io("write", &ingest, e))?;
                    if count - last_report >= 1 << 20 {
                        last_report = count;
                        progress.emit(PullEvent::Downloading {
                            digest: digest.to_string(),
                            done: count,
                            total: size,
                        });
                    }
                }
                Some(Err(e)) => {
                    let _ = out.flush().await;
                    drop(out);
                    if size > 0 && count == size {
                        // everything arrived and oci-client's own check failed: a digest error
                        let _ = std::fs::remove_file(&ingest);
                        return Err(mismatch(hasher));
                    }
                    // a broken connection: keep the partial file, the next pull resumes it
                    return Err(ImageError::Network {
                        registry: src.host.clone(),
                        message: format!("downloading {digest}: {}", err_chain(&e)),
                    });
                }
                None => break,
            }
        }
        out.flush()
            .await
            .map_err(|e| ImageError::io("write", &ingest, e))?;
        drop(out);
        let actual = format!("sha256:{}", hex::encode(hasher.clone().finalize()));
        if actual != digest {
            let _ = std::fs::remove_file(&ingest);
            return Err(mismatch(hasher));
        }
        std::fs::rename(&ingest, &path).map_err(|e| ImageError::io("rename", &path, e))?;
        progress.emit(PullEvent::Downloaded {
            digest: digest.to_string(),
            bytes: count,
        });
        Ok(path)
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(os: &str, arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", hex::encode([n; 32])),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: variant.map(Into::into),
            }),
            annotations: None,
        }
    }

    #[test]
    fn platform_selection() {
        let (_, arch) = node_platform();
        let entries = vec![
            desc("windows", arch, None, 1),
            desc("linux", "s390x", None, 2),
            desc("linux", arch, Some("v7"), 3),
            desc("linux", arch, None, 4),
        ];
        assert_eq!(
            select_platform(&entries).map(|d| d.digest.clone()),
            Some(entries[3].digest.clone())
        );
        assert!(select_platform(&entries[..2]).is_none());
        assert_eq!(
            select_platform(&entries[..3]).map(|d| d.digest.clone()),
            Some(entries[2].digest.clone())
        );
    }

    #[test]
    fn manifests_parse_and_schema1_is_refused() {
        let d = format!("sha256:{}", "a".repeat(64));
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{d}","size":1}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{d}","size":2}}]}}"#
        );
        assert!(
            matches!(Parsed::parse(m.as_bytes()).unwrap(), Parsed::Manifest(m) if m.layers.len() == 1)
        );
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{d}","size":3,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        assert!(matches!(Parsed::parse(i.as_bytes()).unwrap(), Parsed::Index(v) if v.len() == 1));
        assert!(matches!(
            Parsed::parse(br#"{"schemaVersion":1}"#),
            Err(ImageError::Unsupported(_))
        ));
        let evil = r#"{"schemaVersion":2,"config":{"digest":"sha256:../../etc/passwd","size":1},"layers":[]}"#;
        assert!(Parsed::parse(evil.as_bytes()).is_err());
        let enc = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{d}"}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+encrypted","digest":"{d}"}}]}}"#
        );
        assert!(matches!(
            Parsed::parse(enc.as_bytes()),
            Err(ImageError::Unsupported(_))
        ));
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(
            c[1],
            format!("sha256:{}", sha256_hex(format!("{a} {b}").as_bytes()))
        );
    }
}
