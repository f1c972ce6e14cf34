//! The on-disk store: verified blobs, unpacked snapshots, image records; list, remove, GC.
//!
//! ```text
//! ROOT/blobs/sha256/HEX          verified content (manifests, configs; layers until unpacked)
//! ROOT/ingest/HEX                a download in progress (resumed after a crash)
//! ROOT/snapshots/CHAINHEX/fs     one unpacked layer: an overlayfs lower dir, read-only by use
//! ROOT/snapshots/CHAINHEX/complete.json   written before the directory got its name
//! ROOT/snapshots/.tmp-*          unpacks in progress (deleted at open)
//! ROOT/images/HEX.json           one record per image name (HEX = sha256 of the name)
//! ROOT/tmp/                      archive import staging (deleted at open)
//! ```
//!
//! Snapshots are keyed by the layer's chain ID (as containerd does), so the same layer on the
//! same parents is unpacked once and shared by every image and container that uses it. A
//! snapshot is unpacked into `.tmp-…`, its `complete.json` is written (and, with
//! [`StoreOptions::sync_snapshots`], the filesystem synced) and only then is the directory
//! renamed to its final name: a crash at any point leaves either no snapshot or a complete
//! one, never a half-unpacked layer in use.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ImageConfig;
use crate::error::{ImageError, Result};
use crate::reference::ImageRef;
use crate::unpack::UnpackOptions;

/// Store options.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Create device nodes found in layers (privileged nodes only). Default: skipped.
    pub allow_device_nodes: bool,
    /// Layer downloads in flight at once per pull.
    pub max_concurrent_downloads: usize,
    /// Keep compressed layer blobs after they are unpacked (default: dropped, the snapshot is
    /// what containers use; they are fetched again only if the snapshot is ever rebuilt).
    pub keep_layer_blobs: bool,
    /// `syncfs` before a snapshot gets its final name, so a snapshot survives power loss too.
    /// Off by default: an agent crash never exposes a half-unpacked layer either way (rename
    /// is atomic and the page cache outlives the process), and `syncfs` flushes the whole
    /// filesystem's dirty data, which on a busy node costs seconds per layer.
    pub sync_snapshots: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            allow_device_nodes: false,
            max_concurrent_downloads: 3,
            keep_layer_blobs: false,
            sync_snapshots: false,
        }
    }
}

/// An image as the node has it: what a container start needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The reference as normalised (`docker.io/library/busybox:1.36`).
    pub reference: ImageRef,
    /// What the reference resolved to at the registry: the image index's digest for a
    /// multi-platform image, else the manifest's. Kubernetes' repo digest.
    pub digest: String,
    /// This node's platform manifest.
    pub manifest_digest: String,
    /// The config blob's digest (Docker's and containerd's "image ID").
    pub config_digest: String,
    /// `registry/repository@digest`: the value for `containerStatuses[].imageID`.
    pub image_id: String,
    pub config: ImageConfig,
    /// The overlayfs lower dirs, bottom layer first (`ContainerSpec::lower_dirs`).
    pub lower_dirs: Vec<PathBuf>,
    /// Bytes of unpacked file content.
    pub size: u64,
    /// Set when this call downloaded something: for the `Pulled` event.
    pub pulled: Option<PullStats>,
}

/// What a pull did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullStats {
    /// Compressed bytes downloaded by this pull (0 if every layer was already here).
    pub downloaded_bytes: u64,
    pub elapsed: Duration,
}

/// An image record as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Normalised reference as pulled or imported.
    pub name: String,
    pub digest: String,
    pub manifest_digest: String,
    pub config_digest: String,
    /// Snapshot keys, bottom layer first.
    pub chain_ids: Vec<String>,
    pub size: u64,
    pub pulled_at_unix_ms: u64,
    pub last_used_unix_ms: u64,
}

impl ImageRecord {
    /// `registry/repository@digest`.
    pub fn image_id(&self) -> String {
        match ImageRef::parse(&self.name) {
            Ok(r) => r.with_digest(&self.digest),
            Err(_) => self.digest.clone(),
        }
    }

    fn matches(&self, key: &str) -> bool {
        if key == self.name
            || key == self.digest
            || key == self.manifest_digest
            || key == self.config_digest
            || key == self.image_id()
        {
            return true;
        }
        match ImageRef::parse(key) {
            Ok(r) => {
                r.to_string() == self.name
                    || (r
                        .digest()
                        .is_some_and(|d| d == self.digest || d == self.manifest_digest)
                        && ImageRef::parse(&self.name).is_ok_and(|n| n.name() == r.name()))
            }
            Err(_) => false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotMeta {
    pub chain_id: String,
    pub diff_id: String,
    pub size: u64,
}

/// Filesystem usage of the store's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub total_bytes: u64,
    pub used_bytes: u64,
}

impl DiskUsage {
    pub fn percent(&self) -> u64 {
        self.used_bytes
            .saturating_mul(100)
            .checked_div(self.total_bytes)
            .unwrap_or(0)
    }
}

/// What a GC run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub usage_percent_before: u64,
    /// Image names removed, oldest-unused first.
    pub removed: Vec<String>,
    pub freed_bytes: u64,
}

/// Per-key async locks (coalescing): the second caller for a blob, snapshot or image waits for
/// the first and then finds the work done.
#[derive(Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub(crate) async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_string(), Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }
}

pub(crate) struct Inner {
    pub root: PathBuf,
    pub opts: StoreOptions,
    pub locks: KeyedLocks,
    /// pulls and imports hold it shared; remove and GC exclusively
    pub gc_lock: tokio::sync::RwLock<()>,
    pub clients: Mutex<Vec<(Vec<String>, Arc<oci_client::Client>)>>,
    /// total blob downloads started by this store (for tests and metrics)
    pub downloads: std::sync::atomic::AtomicU64,
    /// `ROOT/lock`, held shared while the store is open (see [`ImageStore::open_with`])
    _lock: std::fs::File,
}

/// The node's image store. Cheap to clone; all clones share locks.
#[derive(Clone)]
pub struct ImageStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.inner.root)
            .finish()
    }
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub(crate) fn digest_hex(d: &str) -> Result<&str> {
    crate::reference::validate_digest(d).map_err(ImageError::InvalidContent)?;
    Ok(&d["sha256:".len()..])
}

/// `chain(L1) = diff(L1)`, `chain(Ln) = sha256(chain(Ln-1) + " " + diff(Ln))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let id = match out.last() {
            None => d.clone(),
            Some(parent) => format!("sha256:{}", sha256_hex(format!("{parent} {d}").as_bytes())),
        };
        out.push(id);
    }
    out
}

fn remove_tree(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
    }
}

impl ImageStore {
    /// Open (or create) a store at `root` with default options.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(root, StoreOptions::default())
    }

    /// Open (or create) a store. Leftovers of a crash are cleaned: unpacks in progress,
    /// half-deleted snapshots and import staging are removed; partial downloads are kept and
    /// resumed by the next pull. Every open store holds a shared `flock` on `ROOT/lock`; the
    /// cleaning happens only when no other process has the store open (`kapsel image import`
    /// next to a running agent must not delete the agent's unpacks in progress).
    pub fn open_with(root: impl AsRef<Path>, opts: StoreOptions) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        for d in ["blobs/sha256", "ingest", "snapshots", "images", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| ImageError::io("create", &p, e))?;
        }
        let lock_path = root.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ImageError::io("open", &lock_path, e))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&lock);
        // SAFETY: `fd` is an open file descriptor owned by `lock`, alive for the call.
        let alone = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if alone {
            Self::clean_leftovers(&root)?;
        }
        // SAFETY: as above; converts our exclusive lock (if any) into a shared one, or waits
        // for a shared one (only an opening process holds it exclusively, briefly).
        if unsafe { libc::flock(fd, libc::LOCK_SH) } != 0 {
            return Err(ImageError::io(
                "flock",
                &lock_path,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(ImageStore {
            inner: Arc::new(Inner {
                root,
                opts,
                locks: KeyedLocks::default(),
                gc_lock: tokio::sync::RwLock::new(()),
                clients: Mutex::new(Vec::new()),
                downloads: std::sync::atomic::AtomicU64::new(0),
                _lock: lock,
            }),
        })
    }

    /// Remove unpacks in progress, half-deleted snapshots and import staging (no other
    /// process has the store open).
    fn clean_leftovers(root: &Path) -> Result<()> {
        let snaps = root.join("snapshots");
        for e in std::fs::read_dir(&snaps).map_err(|e| ImageError::io("read", &snaps, e))? {
            let e = e.map_err(|e| ImageError::io("read", &snaps, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = name.starts_with('.') || !e.path().join("complete.json").exists();
            if stale {
                tracing::info!(snapshot = %name, "removing incomplete snapshot");
                remove_tree(&e.path()).map_err(|err| ImageError::io("remove", e.path(), err))?;
            }
        }
        let tmp = root.join("tmp");
        for e in std::fs::read_dir(&tmp)
            .map_err(|e| ImageError::io("read", &tmp, e))?
            .flatten()
        {
            remove_tree(&e.path()).map_err(|err| ImageError::io("remove", e.path(), err))?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Blob downloads this store has started since it was opened.
    pub fn download_count(&self) -> u64 {
        self.inner
            .downloads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn unpack_options(&self) -> UnpackOptions {
        UnpackOptions {
            allow_device_nodes: self.inner.opts.allow_device_nodes,
        }
    }

    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .inner
            .root
            .join("blobs/sha256")
            .join(digest_hex(digest)?))
    }

    pub(crate) fn ingest_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.inner.root.join("ingest").join(digest_hex(digest)?))
    }

    pub(crate) fn snapshot_dir(&self, chain_id: &str) -> Result<PathBuf> {
        Ok(self
            .inner
            .root
            .join("snapshots")
            .join(digest_hex(chain_id)?))
    }

    pub(crate) fn snapshot_meta(&self, chain_id: &str) -> Option<SnapshotMeta> {
        let p = self.snapshot_dir(chain_id).ok()?.join("complete.json");
        let b = std::fs::read(p).ok()?;
        serde_json::from_slice(&b).ok()
    }

    pub(crate) fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        let b = std::fs::read(&p).map_err(|e| ImageError::io("read blob", &p, e))?;
        let got = format!("sha256:{}", sha256_hex(&b));
        if got != digest {
            // bit rot or tampering on disk: drop it so the next pull fetches it again
            let _ = std::fs::remove_file(&p);
            return Err(ImageError::DigestMismatch {
                what: format!("stored blob {}", p.display()),
                expected: digest.to_string(),
                actual: got,
            });
        }
        Ok(b)
    }

    /// Store `bytes` as the blob `digest` after checking it.
    pub(crate) fn write_blob(&self, digest: &str, bytes: &[u8], what: &str) -> Result<PathBuf> {
        let got = format!("sha256:{}", sha256_hex(bytes));
        if got != digest {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: digest.to_string(),
                actual: got,
            });
        }
        let p = self.blob_path(digest)?;
        if p.exists() {
            return Ok(p);
        }
        let tmp = self.inner.root.join("tmp").join(format!(
            "blob-{}-{}",
            digest_hex(digest)?,
            std::process::id()
        ));
        std::fs::write(&tmp, bytes).map_err(|e| ImageError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| ImageError::io("rename", &p, e))?;
        Ok(p)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.inner
            .root
            .join("images")
            .join(format!("{}.json", sha256_hex(name.as_bytes())))
    }

    pub(crate) fn write_record(&self, rec: &ImageRecord) -> Result<()> {
        let p = self.record_path(&rec.name);
        let tmp = p.with_extension("json.tmp");
        let b = serde_json::to_vec_pretty(rec)
            .map_err(|e| ImageError::InvalidContent(format!("record: {e}")))?;
        std::fs::write(&tmp, b).map_err(|e| ImageError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| ImageError::io("rename", &p, e))
    }

    pub(crate) fn read_record(&self, name: &str) -> Option<ImageRecord> {
        let b = std::fs::read(self.record_path(name)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Every image record, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.inner.root.join("images");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)
            .map_err(|e| ImageError::io("read", &dir, e))?
            .flatten()
        {
            if e.path().extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(e.path()).map(|b| serde_json::from_slice::<ImageRecord>(&b)) {
                Ok(Ok(r)) => out.push(r),
                _ => tracing::warn!(path = %e.path().display(), "unreadable image record"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The record for `image` (by name, or by digest within the same repository) if every
    /// layer of it is unpacked.
    pub(crate) fn find_complete(&self, image: &ImageRef) -> Result<Option<ImageRecord>> {
        let rec = match self.read_record(&image.to_string()) {
            Some(r) => Some(r),
            None if image.digest().is_some() => self
                .list()?
                .into_iter()
                .find(|r| r.matches(&image.to_string())),
            None => None,
        };
        Ok(rec.filter(|r| r.chain_ids.iter().all(|c| self.snapshot_meta(c).is_some())))
    }

    /// ImageInfo for a complete record (reads the config blob).
    pub(crate) fn info_for(&self, image: &ImageRef, rec: &ImageRecord) -> Result<ImageInfo> {
        let config = ImageConfig::from_json(&self.read_blob(&rec.config_digest)?)?;
        let mut lower_dirs = Vec::new();
        for c in &rec.chain_ids {
            lower_dirs.push(self.snapshot_dir(c)?.join("fs"));
        }
        Ok(ImageInfo {
            reference: image.clone(),
            digest: rec.digest.clone(),
            manifest_digest: rec.manifest_digest.clone(),
            config_digest: rec.config_digest.clone(),
            image_id: image.with_digest(&rec.digest),
            config,
            lower_dirs,
            size: rec.size,
            pulled: None,
        })
    }

    /// The image if it is on this node (no registry contact), and mark it used.
    pub async fn get(&self, image: &ImageRef) -> Result<Option<ImageInfo>> {
        let _g = self.inner.gc_lock.read().await;
        self.get_locked(image)
    }

    pub(crate) fn get_locked(&self, image: &ImageRef) -> Result<Option<ImageInfo>> {
        let Some(mut rec) = self.find_complete(image)? else {
            return Ok(None);
        };
        let info = self.info_for(image, &rec)?;
        rec.last_used_unix_ms = now_unix_ms();
        if rec.name == image.to_string() {
            self.write_record(&rec)?;
        }
        Ok(Some(info))
    }

    /// Remove the images named `name_or_digest` (a reference, an image ID or a digest) and
    /// whatever content no remaining image uses. Returns the names removed. Whether a container
    /// still uses the image is the caller's concern.
    pub async fn remove(&self, name_or_digest: &str) -> Result<Vec<String>> {
        let _g = self.inner.gc_lock.write().await;
        let mut removed = Vec::new();
        for rec in self.list()? {
            if rec.matches(name_or_digest) {
                let p = self.record_path(&rec.name);
                std::fs::remove_file(&p).map_err(|e| ImageError::io("remove", &p, e))?;
                removed.push(rec.name);
            }
        }
        if removed.is_empty() {
            return Err(ImageError::UnknownImage(name_or_digest.to_string()));
        }
        self.prune()?;
        Ok(removed)
    }

    /// Delete snapshots and blobs that no image record references. Returns bytes freed
    /// (unpacked sizes of snapshots, file sizes of blobs).
    pub(crate) fn prune(&self) -> Result<u64> {
        let records = self.list()?;
        let mut keep_snaps = BTreeSet::new();
        let mut keep_blobs = BTreeSet::new();
        for r in &records {
            for c in &r.chain_ids {
                keep_snaps.insert(digest_hex(c)?.to_string());
            }
            for d in [&r.digest, &r.manifest_digest, &r.config_digest] {
                keep_blobs.insert(digest_hex(d)?.to_string());
            }
            // layer blobs still waiting to be unpacked (keep_layer_blobs or a failed unpack)
            if let Ok(m) = self.read_blob(&r.manifest_digest) {
                if let Ok(m) = crate::pull::Manifest::parse(&m) {
                    for l in m.layers {
                        if let Ok(h) = digest_hex(&l.digest) {
                            keep_blobs.insert(h.to_string());
                        }
                    }
                }
            }
        }
        let mut freed = 0;
        let snaps = self.inner.root.join("snapshots");
        for e in std::fs::read_dir(&snaps)
            .map_err(|e| ImageError::io("read", &snaps, e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || keep_snaps.contains(&name) {
                continue;
            }
            let size = std::fs::read(e.path().join("complete.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<SnapshotMeta>(&b).ok())
                .map(|m| m.size)
                .unwrap_or(0);
            // rename first: a crash halfway through deleting leaves no "complete" snapshot
            let trash = snaps.join(format!(".trash-{name}"));
            std::fs::rename(e.path(), &trash)
                .map_err(|err| ImageError::io("rename", e.path(), err))?;
            remove_tree(&trash).map_err(|err| ImageError::io("remove", &trash, err))?;
            freed += size;
        }
        let blobs = self.inner.root.join("blobs/sha256");
        for e in std::fs::read_dir(&blobs)
            .map_err(|e| ImageError::io("read", &blobs, e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if keep_blobs.contains(&name) {
                continue;
            }
            freed += e.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = std::fs::remove_file(e.path());
        }
        Ok(freed)
    }

    /// Usage of the filesystem the store is on.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let st = nix::sys::statvfs::statvfs(&self.inner.root)
            .map_err(|e| ImageError::io("statvfs", &self.inner.root, e.into()))?;
        let frsize = st.fragment_size();
        let total = st.blocks() * frsize;
        let free = st.blocks_free() * frsize;
        Ok(DiskUsage {
            total_bytes: total,
            used_bytes: total.saturating_sub(free),
        })
    }

    /// Image GC as the kubelet does it: when disk usage is at or above `high_percent`
    /// (`--image-gc-high-threshold`), remove images that no container uses, least recently used
    /// first, until usage is expected to be below `low_percent`. `in_use` lists the images
    /// running containers use (names, image IDs or digests).
    pub async fn gc(
        &self,
        high_percent: u64,
        low_percent: u64,
        in_use: &[String],
    ) -> Result<GcReport> {
        let usage = self.disk_usage()?;
        self.gc_with_usage(high_percent, low_percent, in_use, usage)
            .await
    }

    /// [`ImageStore::gc`] with the disk usage given (tests, or a caller that measures elsewhere).
    pub async fn gc_with_usage(
        &self,
        high_percent: u64,
        low_percent: u64,
        in_use: &[String],
        usage: DiskUsage,
    ) -> Result<GcReport> {
        let _g = self.inner.gc_lock.write().await;
        let mut report = GcReport {
            usage_percent_before: usage.percent(),
            ..Default::default()
        };
        if usage.percent() < high_percent {
            return Ok(report);
        }
        let target = usage.total_bytes.saturating_mul(low_percent.min(100)) / 100;
        let to_free = usage.used_bytes.saturating_sub(target);
        let mut candidates: Vec<ImageRecord> = self
            .list()?
            .into_iter()
            .filter(|r| !in_use.iter().any(|u| r.matches(u)))
            .collect();
        candidates.sort_by_key(|r| (r.last_used_unix_ms, r.pulled_at_unix_ms));
        for rec in candidates {
            if report.freed_bytes >= to_free {
                break;
            }
            let p = self.record_path(&rec.name);
            std::fs::remove_file(&p).map_err(|e| ImageError::io("remove", &p, e))?;
            report.freed_bytes += self.prune()?;
            tracing::info!(image = %rec.name, "image GC removed unused image");
            report.removed.push(rec.name);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_cleaned_only_when_no_other_process_has_the_store_open() {
        let d = tempfile::tempdir().unwrap();
        let first = ImageStore::open(d.path()).unwrap();
        let unpacking = d.path().join("snapshots/.tmp-abc-1-0");
        std::fs::create_dir_all(unpacking.join("fs")).unwrap();
        // a second opener (another process, e.g. `kapsel image import`) keeps it: flock
        // is per open file description, so a second open in this process is a fair stand-in
        let second = ImageStore::open(d.path()).unwrap();
        assert!(unpacking.exists(), "an unpack in progress was removed");
        drop((first, second));
        let _third = ImageStore::open(d.path()).unwrap();
        assert!(!unpacking.exists(), "a crash's leftover was kept");
    }
}
