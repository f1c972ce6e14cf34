//! Images as the agent needs them: read-only lower dirs, the image config defaults, and the
//! image ID for `containerStatuses[].imageID`.
//!
//! [`Images`] is the seam; [`StoreImages`] is the real thing (`kapsel-image`'s store: pulls
//! from OCI registries with the pod's `imagePullPolicy` and `imagePullSecrets`, the agent's
//! `--insecure-registry` / `--registry-mirror`, coalesced concurrent pulls, image GC), with
//! plain rootfs directories ([`DirImages`]: `dir:///path`, or names given with
//! `--image-dir NAME=PATH`) taking precedence. [`ensure_for`] is what a container start calls:
//! it reads the pull secrets, emits `Pulling` / `Pulled` / `Failed` events and maps errors to
//! the kubelet's waiting reasons.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use kapsel_api::{Container, Pod};
use kapsel_image::{
    Credentials, GcReport, ImageError, ImageRef, ImageService, Progress, PullEvent, PullPolicy,
    PullStats, RegistryConfig,
};

use crate::model::PodMemo;
use crate::sync::Ctx;

/// What the runtime needs from an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// Lowest first.
    pub lower_dirs: Vec<PathBuf>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `registry/repository@sha256:…` (`containerStatuses[].imageID`).
    pub image_id: String,
    /// Unpacked bytes.
    pub size: u64,
    /// Set when this call downloaded something (for the `Pulled` event).
    pub pulled: Option<PullStats>,
}

/// One container's image, as the pod asks for it.
#[derive(Clone, Debug, Default)]
pub struct PullRequest {
    /// As in the pod spec (`busybox:1.36`, `registry.lan:5000/team/app@sha256:…`).
    pub image: String,
    /// `imagePullPolicy` as given (`None`: Kubernetes' default by tag).
    pub policy: Option<String>,
    /// From the pod's `imagePullSecrets`.
    pub credentials: Credentials,
    /// The agent's `--insecure-registry` / `--registry-mirror`.
    pub registry: RegistryConfig,
}

impl PullRequest {
    /// The effective pull policy: the spec's, else `Always` for `:latest` or no tag and
    /// `IfNotPresent` otherwise (Kubernetes' defaults).
    pub fn policy_for(&self, image: &ImageRef) -> PullPolicy {
        self.policy
            .as_deref()
            .and_then(PullPolicy::parse)
            .unwrap_or_else(|| PullPolicy::default_for(image))
    }
}

/// Resolves (and, by policy, fetches) images.
pub trait Images: Send + Sync + 'static {
    fn ensure<'a>(
        &'a self,
        req: &'a PullRequest,
        progress: Progress,
    ) -> BoxFuture<'a, Result<ImageInfo, ImageError>>;

    /// Image GC: above `high_percent` disk usage remove images no pod uses (`in_use`: names or
    /// image IDs), least recently used first, down to `low_percent`. Default: nothing to collect.
    fn gc<'a>(
        &'a self,
        _high_percent: u64,
        _low_percent: u64,
        _in_use: &'a [String],
    ) -> BoxFuture<'a, Result<GcReport, ImageError>> {
        Box::pin(async { Ok(GcReport::default()) })
    }
}

/// Rootfs directories as images.
#[derive(Clone, Debug, Default)]
pub struct DirImages {
    pub dirs: BTreeMap<String, PathBuf>,
}

impl DirImages {
    pub fn new(dirs: BTreeMap<String, PathBuf>) -> Self {
        DirImages { dirs }
    }

    /// The directory serving `image`, if any (`dir://PATH`, or a configured name).
    pub fn lookup(&self, image: &str) -> Option<PathBuf> {
        if let Some(p) = image.strip_prefix("dir://") {
            return Some(PathBuf::from(p));
        }
        self.dirs
            .get(image)
            .or_else(|| self.dirs.get(normalize(image)))
            .cloned()
    }

    /// Blocking resolution (no registry involved).
    pub fn resolve(&self, image: &str) -> Result<ImageInfo, ImageError> {
        let path = self
            .lookup(image)
            .ok_or_else(|| ImageError::UnknownImage(format!("{image} (no --image-dir for it)")))?;
        if !path.is_dir() {
            return Err(ImageError::NotPresent(format!(
                "{image}: {} is not a directory",
                path.display()
            )));
        }
        Ok(ImageInfo {
            image_id: format!("dir://{}", path.display()),
            lower_dirs: vec![path],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..Default::default()
        })
    }
}

/// `busybox`, `busybox:latest` and `docker.io/library/busybox:latest` are one image.
fn normalize(image: &str) -> &str {
    let s = image
        .strip_prefix("docker.io/library/")
        .or_else(|| image.strip_prefix("docker.io/"))
        .unwrap_or(image);
    s.strip_suffix(":latest").unwrap_or(s)
}

impl Images for DirImages {
    fn ensure<'a>(
        &'a self,
        req: &'a PullRequest,
        _progress: Progress,
    ) -> BoxFuture<'a, Result<ImageInfo, ImageError>> {
        Box::pin(async move { self.resolve(&req.image) })
    }
}

/// Every image "exists" (for the hollow runtime, which runs nothing).
#[derive(Clone, Copy, Debug, Default)]
pub struct HollowImages;

impl Images for HollowImages {
    fn ensure<'a>(
        &'a self,
        req: &'a PullRequest,
        _progress: Progress,
    ) -> BoxFuture<'a, Result<ImageInfo, ImageError>> {
        Box::pin(async move {
            Ok(ImageInfo {
                lower_dirs: vec![PathBuf::from("/hollow")],
                cmd: vec!["/hollow".into()],
                image_id: format!("hollow://{}", req.image),
                ..Default::default()
            })
        })
    }
}

/// The node's images: `--image-dir` names and `dir://` first, then the image service (the
/// node's [`kapsel_image::ImageStore`], which pulls).
pub struct StoreImages {
    service: Arc<dyn ImageService>,
    dirs: DirImages,
}

impl StoreImages {
    pub fn new(service: Arc<dyn ImageService>, dirs: BTreeMap<String, PathBuf>) -> Self {
        StoreImages {
            service,
            dirs: DirImages::new(dirs),
        }
    }
}

/// The agent's view of a `kapsel-image` result.
pub fn from_store(info: kapsel_image::ImageInfo) -> ImageInfo {
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    ImageInfo {
        working_dir: nonempty(&info.config.working_dir),
        user: nonempty(&info.config.user),
        entrypoint: info.config.entrypoint,
        cmd: info.config.cmd,
        env: info.config.env,
        lower_dirs: info.lower_dirs,
        image_id: info.image_id,
        size: info.size,
        pulled: info.pulled,
    }
}

impl Images for StoreImages {
    fn ensure<'a>(
        &'a self,
        req: &'a PullRequest,
        progress: Progress,
    ) -> BoxFuture<'a, Result<ImageInfo, ImageError>> {
        Box::pin(async move {
            if self.dirs.lookup(&req.image).is_some() {
                return self.dirs.resolve(&req.image);
            }
            let image = ImageRef::parse(&req.image)?;
            let policy = req.policy_for(&image);
            let info = self
                .service
                .ensure_image(&image, policy, &req.credentials, &req.registry, progress)
                .await?;
            Ok(from_store(info))
        })
    }

    fn gc<'a>(
        &'a self,
        high_percent: u64,
        low_percent: u64,
        in_use: &'a [String],
    ) -> BoxFuture<'a, Result<GcReport, ImageError>> {
        self.service.gc(high_percent, low_percent, in_use)
    }
}

/// Image-related waiting reasons that use the pull backoff.
pub fn is_pull_reason(reason: &str) -> bool {
    matches!(
        reason,
        "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" | "InvalidImageName"
    )
}

/// `Successfully pulled image "X" in 1.234s. Image size: N bytes.` (the kubelet's words).
pub fn pulled_message(image: &str, info: &ImageInfo) -> String {
    match info.pulled {
        Some(p) => format!(
            "Successfully pulled image \"{image}\" in {:.3}s ({} bytes downloaded). Image size: {} bytes.",
            p.elapsed.as_secs_f64(),
            p.downloaded_bytes,
            info.size
        ),
        None => format!("Container image \"{image}\" already present on machine"),
    }
}

/// How long a pull took, for `kubelet_image_pull_duration_seconds`: every successful lookup
/// that asked a registry (a download's own timing, else the wall time of the manifest check);
/// `None` for cache hits (`IfNotPresent` with the image present, `Never`) and failures.
pub fn pull_duration<E>(
    res: &Result<ImageInfo, E>,
    asked_registry: bool,
    elapsed: std::time::Duration,
) -> Option<std::time::Duration> {
    match res {
        Ok(ImageInfo {
            pulled: Some(p), ..
        }) => Some(p.elapsed),
        Ok(_) if asked_registry => Some(elapsed),
        _ => None,
    }
}

/// The waiting reason and message for a failed image lookup.
pub fn failure(image: &str, e: &ImageError) -> (String, String) {
    let reason = e.kubernetes_reason();
    let message = match e {
        ImageError::NotPresent(_) => {
            format!("Container image \"{image}\" is not present with pull policy of Never")
        }
        ImageError::InvalidReference { .. } => {
            format!("Failed to apply default image tag \"{image}\": {e}")
        }
        _ => format!("Failed to pull image \"{image}\": {e}"),
    };
    (reason.to_string(), message)
}

/// Credentials from the pod's `imagePullSecrets` (types `kubernetes.io/dockerconfigjson` and
/// `kubernetes.io/dockercfg`). A missing or malformed secret is logged and skipped, as the
/// kubelet does: the pull goes on with what is left (possibly anonymous).
pub async fn pull_credentials(ctx: &Ctx, pod: &Pod) -> Credentials {
    let mut creds = Credentials::anonymous();
    let ns = pod.metadata.namespace();
    let names = pod
        .spec
        .as_ref()
        .map(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    for r in names {
        let Some(name) = r.name.filter(|n| !n.is_empty()) else {
            continue;
        };
        let secret = match ctx.cp.get_secret(ns, &name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                tracing::warn!(pod = %pod.metadata.name(), secret = %name, "image pull secret not found; pulling without it");
                continue;
            }
            Err(e) => {
                tracing::warn!(pod = %pod.metadata.name(), secret = %name, error = %e, "reading image pull secret");
                continue;
            }
        };
        let data = crate::env::secret_data(&secret);
        let key = match secret.type_.as_deref() {
            Some("kubernetes.io/dockercfg") => ".dockercfg",
            _ => ".dockerconfigjson",
        };
        match data.get(key) {
            Some(b) => {
                if let Err(e) = creds.add_docker_config_json(b) {
                    tracing::warn!(secret = %name, error = %e, "image pull secret is malformed");
                }
            }
            None => tracing::warn!(secret = %name, "image pull secret has no {key}"),
        }
    }
    creds
}

/// Get container `c`'s image for a start, with events: `Pulling` when a registry is contacted,
/// `Pulled` (size and time, or "already present"), `Failed` with the registry's message.
/// Errors are `(waiting reason, message)`.
pub async fn ensure_for(
    ctx: &Arc<Ctx>,
    pod: &Arc<Pod>,
    c: &Container,
) -> Result<ImageInfo, (String, String)> {
    let image = c.image.clone().unwrap_or_default();
    let req = PullRequest {
        image: image.clone(),
        policy: c.image_pull_policy.clone(),
        credentials: pull_credentials(ctx, pod).await,
        registry: ctx.cfg.registry.clone(),
    };
    let announced = Arc::new(AtomicBool::new(false));
    let progress = {
        let (ctx, pod, image, announced) =
            (ctx.clone(), pod.clone(), image.clone(), announced.clone());
        Progress::new(move |e| {
            if matches!(e, PullEvent::Resolving { .. }) && !announced.swap(true, Ordering::Relaxed)
            {
                ctx.event(
                    &pod,
                    "Normal",
                    "Pulling",
                    format!("Pulling image \"{image}\""),
                );
            }
        })
    };
    let t0 = std::time::Instant::now();
    let res = ctx.images.ensure(&req, progress).await;
    if let Some(d) = pull_duration(&res, announced.load(Ordering::Relaxed), t0.elapsed()) {
        crate::metrics::image_pulled(d);
    }
    match res {
        Ok(info) => {
            // "already present" only when no registry was asked (IfNotPresent, Never)
            if info.pulled.is_some() || !announced.load(Ordering::Relaxed) {
                ctx.event(pod, "Normal", "Pulled", pulled_message(&image, &info));
            } else {
                ctx.event(
                    pod,
                    "Normal",
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\": up to date, nothing downloaded. Image size: {} bytes.",
                        info.size
                    ),
                );
            }
            Ok(info)
        }
        Err(e) => {
            let (reason, message) = failure(&image, &e);
            let ev_reason = match reason.as_str() {
                "ErrImageNeverPull" => "ErrImageNeverPull",
                "InvalidImageName" => "InspectFailed",
                _ => "Failed",
            };
            ctx.event(pod, "Warning", ev_reason, message.clone());
            Err((reason, message))
        }
    }
}

/// After a failed pull has been reported (`ErrImagePull`), the container waits out its pull
/// backoff as `ImagePullBackOff` (the kubelet's sequence). Turns every `ErrImagePull` whose
/// retry is still ahead into `ImagePullBackOff`; returns `(init, name, message)` of each, for
/// the `BackOff` events.
pub fn enter_pull_backoff(memo: &mut PodMemo, now_ms: u64) -> Vec<(bool, String, String)> {
    let mut out = Vec::new();
    for ((init, name), m) in memo.containers.iter_mut() {
        if m.restart_at_ms <= now_ms {
            continue;
        }
        if let Some(e) = m.error.as_mut().filter(|e| e.reason == "ErrImagePull") {
            e.reason = "ImagePullBackOff".into();
            let wait = m.restart_at_ms - now_ms;
            e.message = format!("Back-off pulling image ({} ms): {}", wait, e.message);
            out.push((*init, name.clone(), e.message.clone()));
        }
    }
    out.sort();
    out
}

/// Whether a reported `ErrImagePull` still has to turn into `ImagePullBackOff` (the worker
/// syncs again right away instead of waiting for its period).
pub fn backoff_pending(memo: &PodMemo, now_ms: u64) -> bool {
    memo.containers.values().any(|m| {
        m.restart_at_ms > now_ms && m.error.as_ref().is_some_and(|e| e.reason == "ErrImagePull")
    })
}

/// The images the node's pods use (spec names and the image IDs of their containers): GC
/// keeps them.
pub fn in_use(ctx: &Ctx) -> Vec<String> {
    let mut v: Vec<String> = crate::lock(&ctx.pod_images)
        .values()
        .flatten()
        .cloned()
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Image GC every `image_gc_period` (kubelet: 5 minutes), first right away.
pub async fn run_gc(ctx: Arc<Ctx>) {
    let (high, low) = (
        ctx.cfg.image_gc_high_threshold,
        ctx.cfg.image_gc_low_threshold,
    );
    loop {
        let used = in_use(&ctx);
        match ctx.images.gc(high, low, &used).await {
            Ok(r) if !r.removed.is_empty() => tracing::info!(
                usage_percent = r.usage_percent_before,
                removed = ?r.removed,
                freed_bytes = r.freed_bytes,
                "image GC"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "image GC failed"),
        }
        tokio::time::sleep(ctx.cfg.image_gc_period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(image: &str) -> PullRequest {
        PullRequest {
            image: image.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn dir_images_resolve_by_url_and_name() {
        let d = tempfile::tempdir().unwrap();
        let mut m = BTreeMap::new();
        m.insert("busybox".to_string(), d.path().to_path_buf());
        let imgs = DirImages::new(m);
        let p = Progress::none;
        for name in [
            "busybox:latest",
            "docker.io/library/busybox",
            &format!("dir://{}", d.path().display()),
        ] {
            assert_eq!(
                imgs.ensure(&req(name), p()).await.unwrap().lower_dirs[0],
                d.path(),
                "{name}"
            );
        }
        assert!(matches!(
            imgs.ensure(&req("nginx"), p()).await,
            Err(ImageError::UnknownImage(_))
        ));
    }

    #[test]
    fn policies_default_by_tag() {
        let cases = [
            ("busybox", None, PullPolicy::Always),
            ("busybox:latest", None, PullPolicy::Always),
            ("busybox:1.36", None, PullPolicy::IfNotPresent),
            (
                "r.lan:5000/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                None,
                PullPolicy::IfNotPresent,
            ),
            ("busybox:1.36", Some("Always"), PullPolicy::Always),
            ("busybox", Some("Never"), PullPolicy::Never),
            ("busybox", Some("IfNotPresent"), PullPolicy::IfNotPresent),
        ];
        for (image, policy, want) in cases {
            let r = PullRequest {
                image: image.into(),
                policy: policy.map(Into::into),
                ..Default::default()
            };
            let parsed = ImageRef::parse(image).unwrap();
            assert_eq!(r.policy_for(&parsed), want, "{image} {policy:?}");
        }
    }

    #[test]
    fn failures_map_to_kubelet_reasons() {
        let cases: Vec<(ImageError, &str, &str)> = vec![
            (
                ImageError::NotFound {
                    reference: "x".into(),
                    message: "MANIFEST_UNKNOWN: manifest unknown".into(),
                },
                "ErrImagePull",
                "manifest unknown",
            ),
            (
                ImageError::NotPresent("x".into()),
                "ErrImageNeverPull",
                "pull policy of Never",
            ),
            (
                ImageRef::parse("UPPER/case").unwrap_err(),
                "InvalidImageName",
                "Failed to apply default image tag",
            ),
            (
                ImageError::Network {
                    registry: "r".into(),
                    message: "connection refused".into(),
                },
                "ErrImagePull",
                "connection refused",
            ),
        ];
        for (e, reason, needle) in cases {
            let (r, m) = failure("x", &e);
            assert_eq!(r, reason, "{e}");
            assert!(m.contains(needle), "{m}");
        }
        assert!(is_pull_reason("ImagePullBackOff"));
        assert!(!is_pull_reason("CrashLoopBackOff"));
    }

    #[test]
    fn err_image_pull_turns_into_backoff_while_the_retry_is_ahead() {
        use crate::model::StartError;
        let mut memo = PodMemo::default();
        let err = |r: &str| {
            Some(StartError {
                reason: r.into(),
                message: "Failed to pull image \"x\": not found".into(),
            })
        };
        // (name, reason, restart_at) → reason after, event?
        let cases = [
            ("a", "ErrImagePull", 2_000, "ImagePullBackOff", true),
            ("b", "ErrImagePull", 1_000, "ErrImagePull", false), // retry due: pull again
            ("c", "ImagePullBackOff", 2_000, "ImagePullBackOff", false),
            (
                "d",
                "CreateContainerConfigError",
                2_000,
                "CreateContainerConfigError",
                false,
            ),
        ];
        for (n, r, at, _, _) in cases {
            let m = memo.container(false, n);
            m.error = err(r);
            m.restart_at_ms = at;
        }
        assert!(backoff_pending(&memo, 1_000));
        let evs = enter_pull_backoff(&mut memo, 1_000);
        for (n, _, _, want, event) in cases {
            let m = memo.get(false, n).unwrap();
            assert_eq!(m.error.as_ref().unwrap().reason, want, "{n}");
            assert_eq!(evs.iter().any(|(_, en, _)| en == n), event, "{n}");
        }
        assert!(evs[0].2.contains("not found"), "{evs:?}");
        assert!(!backoff_pending(&memo, 1_000));
    }

    #[test]
    fn pull_duration_counts_registry_lookups_only() {
        let secs = std::time::Duration::from_secs;
        let hit: Result<ImageInfo, ()> = Ok(ImageInfo::default());
        assert_eq!(pull_duration(&hit, false, secs(1)), None, "cache hit");
        assert_eq!(
            pull_duration(&hit, true, secs(1)),
            Some(secs(1)),
            "up to date"
        );
        let pulled: Result<ImageInfo, ()> = Ok(ImageInfo {
            pulled: Some(PullStats {
                downloaded_bytes: 1,
                elapsed: secs(3),
            }),
            ..Default::default()
        });
        assert_eq!(pull_duration(&pulled, true, secs(5)), Some(secs(3)));
        assert_eq!(
            pull_duration(&Err::<ImageInfo, ()>(()), true, secs(1)),
            None
        );
    }

    #[test]
    fn pulled_messages_carry_time_and_size() {
        let mut info = ImageInfo {
            size: 2048,
            ..Default::default()
        };
        assert!(pulled_message("b", &info).contains("already present"));
        info.pulled = Some(PullStats {
            downloaded_bytes: 1000,
            elapsed: std::time::Duration::from_millis(1500),
        });
        let m = pulled_message("b", &info);
        assert!(
            m.contains("in 1.500s") && m.contains("Image size: 2048 bytes"),
            "{m}"
        );
    }
}
