//! Test fixtures (feature `testing`): a throwaway Debian `docker-registry` on 127.0.0.1, a
//! busybox image built from Debian's `busybox-static` with umoci and pushed with skopeo (as OCI
//! and as Docker v2 schema 2), and hand-made layers and OCI layouts for hostile-input tests.
//!
//! Everything is cleaned up on drop (the registry process is killed, temp dirs removed).
//! [`require_tools`] and [`require_root`] skip outside CI but panic under `CI=true`: a CI
//! run must not pass by skipping.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::auth::RegistryConfig;

type IoResult<T> = std::io::Result<T>;

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn find_tool(t: &str) -> Option<PathBuf> {
    if t.contains('/') {
        return Path::new(t).exists().then(|| PathBuf::from(t));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(t))
        .find(|p| p.exists())
}

/// True if every tool is installed. Otherwise: panic under `CI=true`, else print a skip note.
pub fn require_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "missing {} (apt-get install docker-registry skopeo umoci busybox-static)",
        missing.join(", ")
    );
    if in_ci() {
        panic!("cannot run image tests under CI=true: {msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// True if running as root. Otherwise: panic under `CI=true`, else print a skip note.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if in_ci() {
        panic!("cannot run root-only image tests under CI=true: not root");
    }
    eprintln!("SKIPPED: not root");
    false
}

/// The tools the registry fixture and the busybox image need.
pub const REGISTRY_TOOLS: &[&str] = &["docker-registry", "skopeo", "umoci", "/bin/busybox"];

fn run(cmd: &mut Command) -> IoResult<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `docker-registry` serving plain HTTP on 127.0.0.1 with its storage in a temp dir.
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Registry {
    /// Start one on a free port and wait until `/v2/` answers.
    pub fn start() -> IoResult<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kapsel-registry-")
            .tempdir()?;
        std::fs::create_dir(dir.path().join("storage"))?;
        let mut r = Registry {
            dir,
            port: 0,
            child: None,
        };
        let mut last = None;
        for _ in 0..3 {
            r.port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            match r.spawn() {
                Ok(()) => return Ok(r),
                Err(e) => {
                    r.stop();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("registry did not start")))
    }

    fn spawn(&mut self) -> IoResult<()> {
        let config = self.dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{}\n",
                self.storage().display(),
                self.port
            ),
        )?;
        let access = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("access.log"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))?;
        let child =
            Command::new(find_tool("docker-registry").unwrap_or_else(|| "docker-registry".into()))
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(access)
                .stderr(log)
                .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(std::io::Error::other(format!(
                        "docker-registry exited {st}: {}",
                        std::fs::read_to_string(self.dir.path().join("registry.log"))
                            .unwrap_or_default()
                    )));
                }
            }
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(std::io::Error::other(
            "docker-registry did not answer /v2/ within 20 s",
        ))
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(
            format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port).as_bytes(),
        )
        .is_err()
        {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if n >= 12 && buf.starts_with(b"HTTP/1.") && &buf[9..12] == b"200")
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's storage root.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the bytes of a blob.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).unwrap_or("00"))
            .join(hex)
            .join("data")
    }

    /// A [`RegistryConfig`] that allows plain HTTP to this registry.
    pub fn registry_config(&self) -> RegistryConfig {
        let mut c = RegistryConfig::default();
        c.add_insecure_registry(&self.host());
        c
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// How many GETs of blob `digest` kapsel made (skopeo's own requests are not counted).
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.access_log()
            .lines()
            .filter(|l| {
                l.contains("\"GET /v2/")
                    && l.contains(&format!("/blobs/{digest}"))
                    && l.contains("kapsel/")
            })
            .count()
    }

    /// Every request kapsel made (method and path), in order.
    pub fn kapsel_requests(&self) -> Vec<String> {
        self.access_log()
            .lines()
            .filter(|l| l.contains("kapsel/"))
            .filter_map(|l| l.split('"').nth(1).map(str::to_string))
            .collect()
    }

    /// Kill the registry (storage is kept).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and storage.
    pub fn restart(&mut self) -> IoResult<()> {
        self.stop();
        self.spawn()
    }

    /// `skopeo copy oci:LAYOUT:TAG docker://HOST/REPO_TAG` (as OCI, or converted to Docker v2
    /// schema 2). Returns the manifest digest the registry now serves for it.
    pub fn push_layout(
        &self,
        layout: &Path,
        tag: &str,
        repo_tag: &str,
        docker_v2s2: bool,
    ) -> IoResult<String> {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if docker_v2s2 {
            cmd.args(["--format", "v2s2"]);
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        run(&mut cmd)?;
        self.digest_of(repo_tag)
    }

    /// The digest of the manifest the registry serves for `repo_tag`, read from the registry.
    pub fn digest_of(&self, repo_tag: &str) -> IoResult<String> {
        let raw = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "inspect",
                "--raw",
                "--tls-verify=false",
            ])
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .stdin(Stdio::null())
            .output()?;
        if !raw.status.success() {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&raw.stderr).into_owned(),
            ));
        }
        Ok(format!(
            "sha256:{}",
            hex::encode(Sha256::digest(&raw.stdout))
        ))
    }

    /// The raw manifest JSON the registry serves for `repo_tag`.
    pub fn raw_manifest(&self, repo_tag: &str) -> IoResult<serde_json::Value> {
        let out = run(Command::new("skopeo")
            .args([
                "--insecure-policy",
                "inspect",
                "--raw",
                "--tls-verify=false",
            ])
            .arg(format!("docker://{}/{repo_tag}", self.host())))?;
        serde_json::from_str(&out).map_err(std::io::Error::other)
    }

    /// `skopeo copy docker://HOST/REPO_TAG docker-archive:FILE:NAME`
    pub fn save_docker_archive(&self, repo_tag: &str, file: &Path, name: &str) -> IoResult<()> {
        run(Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
            ])
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .arg(format!("docker-archive:{}:{name}", file.display())))
        .map(|_| ())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The config `umoci config` gives the busybox test image.
pub const BUSYBOX_CMD: &[&str] = &["/bin/sh", "-c", "echo hello from busybox"];
pub const BUSYBOX_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Fills a rootfs for one layer of [`umoci_image`].
pub type LayerFill = Box<dyn FnOnce(&Path) -> IoResult<()>>;

/// Build an OCI layout at `dir/oci` holding `TAG`: one layer built with umoci from a rootfs
/// that `fill` populates, then `umoci config` with `cmd` and `env`. `extra_layers` are applied
/// one `umoci repack` each (so the image gets one layer per closure).
pub fn umoci_image(
    dir: &Path,
    tag: &str,
    layers: Vec<LayerFill>,
    cmd: &[&str],
    env: &[&str],
) -> IoResult<PathBuf> {
    let layout = dir.join("oci");
    let bundle = dir.join("bundle");
    let image = format!("{}:{tag}", layout.display());
    if !layout.exists() {
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout))?;
    }
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    for fill in layers {
        if bundle.exists() {
            std::fs::remove_dir_all(&bundle)?;
        }
        run(Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle))?;
        fill(&bundle.join("rootfs"))?;
        run(Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle))?;
    }
    let mut c = Command::new("umoci");
    c.args(["config", "--image", &image]);
    for a in cmd {
        c.arg(format!("--config.cmd={a}"));
    }
    for e in env {
        c.arg(format!("--config.env={e}"));
    }
    run(&mut c)?;
    if bundle.exists() {
        std::fs::remove_dir_all(&bundle)?;
    }
    Ok(layout)
}

/// Copy Debian's static busybox into `rootfs` with every applet as a hardlink to it.
pub fn fill_busybox(rootfs: &Path) -> IoResult<()> {
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    let list = run(Command::new("/bin/busybox").arg("--list-full"))?;
    for applet in list.lines() {
        let p = rootfs.join(applet.trim_start_matches('/'));
        if p.exists() {
            continue;
        }
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::hard_link(rootfs.join("bin/busybox"), &p)?;
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// The busybox test image as an OCI layout (`dir/oci`, tag `tag`).
pub fn build_busybox(dir: &Path, tag: &str) -> IoResult<PathBuf> {
    umoci_image(
        dir,
        tag,
        vec![Box::new(fill_busybox)],
        BUSYBOX_CMD,
        &[BUSYBOX_PATH],
    )
}

/// One entry of a hand-made layer. Names and link targets are written verbatim into the tar
/// header (no sanitising: these make hostile layers).
#[derive(Debug, Clone)]
pub enum TarEntry {
    Dir(&'static str),
    File(&'static str, &'static [u8]),
    FileMode(&'static str, &'static [u8], u32, u64, u64),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    CharDev(&'static str, u32, u32),
    Fifo(&'static str),
    /// a file with one PAX xattr
    FileXattr(&'static str, &'static [u8], &'static str, &'static [u8]),
}

fn raw_header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    let field = &mut h.as_ustar_mut().map(|u| &mut u.name);
    if let Some(f) = field {
        let n = name.len().min(f.len());
        f[..n].copy_from_slice(&name.as_bytes()[..n]);
    }
    h
}

fn set_link(h: &mut tar::Header, target: &str) {
    if let Some(u) = h.as_ustar_mut() {
        let n = target.len().min(u.linkname.len());
        u.linkname[..n].copy_from_slice(&target.as_bytes()[..n]);
    }
}

/// An uncompressed layer tar of `entries`, names taken verbatim.
pub fn make_layer(entries: &[TarEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (mut h, data): (tar::Header, &[u8]) = match e {
            TarEntry::Dir(n) => (raw_header(n, tar::EntryType::Directory, 0, 0o755), &[]),
            TarEntry::File(n, d) => (
                raw_header(n, tar::EntryType::Regular, d.len() as u64, 0o644),
                d,
            ),
            TarEntry::FileMode(n, d, m, uid, gid) => {
                let mut h = raw_header(n, tar::EntryType::Regular, d.len() as u64, *m);
                h.set_uid(*uid);
                h.set_gid(*gid);
                (h, d)
            }
            TarEntry::Symlink(n, t) => {
                let mut h = raw_header(n, tar::EntryType::Symlink, 0, 0o777);
                set_link(&mut h, t);
                (h, &[])
            }
            TarEntry::Hardlink(n, t) => {
                let mut h = raw_header(n, tar::EntryType::Link, 0, 0o644);
                set_link(&mut h, t);
                (h, &[])
            }
            TarEntry::CharDev(n, maj, min) => {
                let mut h = raw_header(n, tar::EntryType::Char, 0, 0o666);
                let _ = h.set_device_major(*maj);
                let _ = h.set_device_minor(*min);
                (h, &[])
            }
            TarEntry::Fifo(n) => (raw_header(n, tar::EntryType::Fifo, 0, 0o644), &[]),
            TarEntry::FileXattr(n, d, k, v) => {
                let key = format!("SCHILY.xattr.{k}");
                let _ = b.append_pax_extensions([(key.as_str(), *v)]);
                (
                    raw_header(n, tar::EntryType::Regular, d.len() as u64, 0o644),
                    d,
                )
            }
        };
        h.set_cksum();
        let _ = b.append(&h, data);
    }
    b.into_inner().unwrap_or_default()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap_or_default()
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Write an OCI image layout at `dir` with one image tagged `tag`: `layers` are uncompressed
/// tars (stored gzip-compressed when `compress`), the config gets their diff_ids and `cmd`.
/// Returns the manifest digest.
pub fn write_oci_layout(
    dir: &Path,
    tag: &str,
    layers: &[Vec<u8>],
    compress: bool,
    cmd: &[&str],
) -> IoResult<String> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let put = |b: &[u8]| -> IoResult<String> {
        let d = sha(b);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), b)?;
        Ok(d)
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(sha(l));
        let (bytes, mt) = if compress {
            (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (l.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let d = put(&bytes)?;
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": bytes.len()}));
    }
    let (os, arch) = crate::pull::node_platform();
    let config = serde_json::json!({
        "architecture": arch, "os": os,
        "config": {"Cmd": cmd, "Env": [BUSYBOX_PATH]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let cb = serde_json::to_vec(&config).map_err(std::io::Error::other)?;
    let cd = put(&cb)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::pull::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cb.len()},
        "layers": descs,
    });
    let mb = serde_json::to_vec(&manifest).map_err(std::io::Error::other)?;
    let md = put(&mb)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": crate::pull::OCI_MANIFEST, "digest": md, "size": mb.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(md)
}

/// A scripted [`crate::ImageService`] for the agent's tests: queued errors per image are
/// returned first (one per call), then the image's [`crate::ImageInfo`] if one was added,
/// else [`crate::ImageError::NotFound`]. Every call is recorded.
#[derive(Default)]
pub struct FakeImageService {
    images: std::sync::Mutex<std::collections::HashMap<String, crate::ImageInfo>>,
    errors: std::sync::Mutex<
        std::collections::HashMap<String, std::collections::VecDeque<crate::ImageError>>,
    >,
    calls: std::sync::Mutex<Vec<(String, crate::PullPolicy)>>,
}

impl FakeImageService {
    pub fn new() -> Self {
        Self::default()
    }

    /// An image with `lower_dirs` and `config`, digest derived from the name.
    pub fn add(
        &self,
        image: &str,
        lower_dirs: Vec<PathBuf>,
        config: crate::ImageConfig,
    ) -> crate::ImageInfo {
        let reference = crate::ImageRef::parse(image).unwrap_or_else(|e| panic!("{e}"));
        let digest = sha(reference.to_string().as_bytes());
        let info = crate::ImageInfo {
            image_id: reference.with_digest(&digest),
            reference: reference.clone(),
            manifest_digest: digest.clone(),
            config_digest: digest.clone(),
            digest,
            config,
            lower_dirs,
            size: 0,
            pulled: None,
        };
        self.images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reference.to_string(), info.clone());
        info
    }

    /// Make the next call for `image` fail with `err` (queue several for several calls).
    pub fn fail_next(&self, image: &str, err: crate::ImageError) {
        let key = crate::ImageRef::parse(image)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| image.to_string());
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .push_back(err);
    }

    /// `(image, policy)` of every `ensure_image` call so far.
    pub fn calls(&self) -> Vec<(String, crate::PullPolicy)> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl crate::ImageService for FakeImageService {
    fn ensure_image<'a>(
        &'a self,
        image: &'a crate::ImageRef,
        policy: crate::PullPolicy,
        _creds: &'a crate::Credentials,
        _registry: &'a RegistryConfig,
        _progress: crate::Progress,
    ) -> futures::future::BoxFuture<'a, crate::Result<crate::ImageInfo>> {
        Box::pin(async move {
            let key = image.to_string();
            self.calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((key.clone(), policy));
            if let Some(e) = self
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&key)
                .and_then(|q| q.pop_front())
            {
                return Err(e);
            }
            let found = self
                .images
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned();
            match (found, policy) {
                (Some(i), _) => Ok(i),
                (None, crate::PullPolicy::Never) => Err(crate::ImageError::NotPresent(key)),
                (None, _) => Err(crate::ImageError::NotFound {
                    reference: key,
                    message: "manifest unknown (fake)".into(),
                }),
            }
        })
    }
    fn get<'a>(
        &'a self,
        image: &'a crate::ImageRef,
    ) -> futures::future::BoxFuture<'a, crate::Result<Option<crate::ImageInfo>>> {
        Box::pin(async move {
            Ok(self
                .images
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&image.to_string())
                .cloned())
        })
    }
    fn list(&self) -> futures::future::BoxFuture<'_, crate::Result<Vec<crate::ImageRecord>>> {
        Box::pin(async move {
            let imgs = self.images.lock().unwrap_or_else(|p| p.into_inner());
            let mut v: Vec<crate::ImageRecord> = imgs
                .values()
                .map(|i| crate::ImageRecord {
                    name: i.reference.to_string(),
                    digest: i.digest.clone(),
                    manifest_digest: i.manifest_digest.clone(),
                    config_digest: i.config_digest.clone(),
                    chain_ids: Vec::new(),
                    size: i.size,
                    pulled_at_unix_ms: 0,
                    last_used_unix_ms: 0,
                })
                .collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(v)
        })
    }
    fn remove<'a>(
        &'a self,
        name_or_digest: &'a str,
    ) -> futures::future::BoxFuture<'a, crate::Result<Vec<String>>> {
        Box::pin(async move {
            let key = crate::ImageRef::parse(name_or_digest)
                .map(|r| r.to_string())
                .unwrap_or_else(|_| name_or_digest.to_string());
            match self
                .images
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key)
            {
                Some(_) => Ok(vec![key]),
                None => Err(crate::ImageError::UnknownImage(name_or_digest.to_string())),
            }
        })
    }
    fn import_archive<'a>(
        &'a self,
        _path: &'a Path,
        _name: Option<&'a crate::ImageRef>,
    ) -> futures::future::BoxFuture<'a, crate::Result<Vec<crate::ImageInfo>>> {
        Box::pin(async move {
            Err(crate::ImageError::Unsupported(
                "import in FakeImageService".into(),
            ))
        })
    }
    fn gc<'a>(
        &'a self,
        _high: u64,
        _low: u64,
        _in_use: &'a [String],
    ) -> futures::future::BoxFuture<'a, crate::Result<crate::GcReport>> {
        Box::pin(async move { Ok(crate::GcReport::default()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageService;

    #[tokio::test]
    async fn fake_service_scripts_errors_then_success() {
        let f = FakeImageService::new();
        f.fail_next(
            "busybox:1.36",
            crate::ImageError::Network {
                registry: "docker.io".into(),
                message: "down".into(),
            },
        );
        let img = crate::ImageRef::parse("busybox:1.36").unwrap();
        let (c, r) = (crate::Credentials::anonymous(), RegistryConfig::default());
        let p = crate::PullPolicy::IfNotPresent;
        assert!(matches!(
            f.ensure_image(&img, p, &c, &r, crate::Progress::none())
                .await,
            Err(crate::ImageError::Network { .. })
        ));
        assert!(matches!(
            f.ensure_image(&img, p, &c, &r, crate::Progress::none())
                .await,
            Err(crate::ImageError::NotFound { .. })
        ));
        f.add(
            "busybox:1.36",
            vec!["/x".into()],
            crate::ImageConfig::default(),
        );
        let info = f
            .ensure_image(&img, p, &c, &r, crate::Progress::none())
            .await
            .unwrap();
        assert_eq!(
            info.image_id,
            format!("docker.io/library/busybox@{}", info.digest)
        );
        assert_eq!(f.calls().len(), 3);
        assert_eq!(f.list().await.unwrap().len(), 1);
    }
}
