//! Against a real registry: Debian's docker-registry on 127.0.0.1 with a busybox image built
//! by umoci from busybox-static and pushed by skopeo as OCI and as Docker v2 schema 2.
//! Tools missing: skipped outside CI, failed under CI=true. Containers run only as root (CI).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kapsel_image::testing::{
    build_busybox, make_layer, require_root, require_tools, write_oci_layout, Registry,
    TarEntry::*, BUSYBOX_CMD, REGISTRY_TOOLS,
};
use kapsel_image::{
    Credentials, DiskUsage, ImageError, ImageRef, ImageStore, Progress, PullEvent, PullPolicy,
    RegistryConfig,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

struct Fixture {
    reg: Registry,
    work: tempfile::TempDir,
    layout: PathBuf,
    /// digest of library/busybox:1.36 (OCI) and library/busybox-docker:1.36 (v2s2), read from
    /// the registry
    oci_digest: String,
    docker_digest: String,
}

impl Fixture {
    fn new() -> Option<Self> {
        if !require_tools(REGISTRY_TOOLS) {
            return None;
        }
        let reg = Registry::start().expect("start docker-registry");
        let work = common::tempdir();
        let layout = build_busybox(work.path(), "1.36").expect("build busybox image");
        let oci_digest = reg
            .push_layout(&layout, "1.36", "library/busybox:1.36", false)
            .expect("push OCI");
        let docker_digest = reg
            .push_layout(&layout, "1.36", "library/busybox-docker:1.36", true)
            .expect("push v2s2");
        Some(Fixture {
            reg,
            work,
            layout,
            oci_digest,
            docker_digest,
        })
    }

    fn image(&self, repo_tag: &str) -> ImageRef {
        ImageRef::parse(&format!("{}/{repo_tag}", self.reg.host())).expect("ref")
    }

    fn store(&self, name: &str) -> ImageStore {
        ImageStore::open(self.work.path().join(name)).expect("open store")
    }

    fn rc(&self) -> RegistryConfig {
        self.reg.registry_config()
    }

    async fn ensure(
        &self,
        store: &ImageStore,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> Result<kapsel_image::ImageInfo, ImageError> {
        store
            .ensure_image(
                image,
                policy,
                &Credentials::anonymous(),
                &self.rc(),
                Progress::none(),
            )
            .await
    }

    fn layer_digests(&self, repo_tag: &str) -> Vec<String> {
        let m = self.reg.raw_manifest(repo_tag).expect("manifest");
        m["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn config_digest(&self, repo_tag: &str) -> String {
        let m = self.reg.raw_manifest(repo_tag).expect("manifest");
        m["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[tokio::test]
async fn pull_by_tag_and_by_digest_in_both_manifest_formats_then_run_a_container() {
    let Some(fx) = Fixture::new() else { return };
    let store = fx.store("store");
    let mut infos = Vec::new();
    for (repo, digest, config_type) in [
        ("library/busybox", &fx.oci_digest, OCI_CONFIG),
        ("library/busybox-docker", &fx.docker_digest, DOCKER_CONFIG),
    ] {
        let tag = format!("{repo}:1.36");
        let raw = fx.reg.raw_manifest(&tag).unwrap();
        // umoci's OCI manifest leaves the optional mediaType out; the config's type tells
        assert_eq!(raw["config"]["mediaType"], config_type);
        if config_type == DOCKER_CONFIG {
            assert_eq!(raw["mediaType"], DOCKER_MANIFEST);
        } else {
            assert!(raw["mediaType"].is_null() || raw["mediaType"] == OCI_MANIFEST);
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let info = store
            .ensure_image(
                &fx.image(&tag),
                PullPolicy::Always,
                &Credentials::anonymous(),
                &fx.rc(),
                Progress::new(move |e| ev.lock().unwrap().push(e.clone())),
            )
            .await
            .unwrap_or_else(|e| panic!("pull {tag}: {e}"));
        assert_eq!(&info.digest, digest, "{tag}");
        assert_eq!(info.image_id, format!("{}/{repo}@{digest}", fx.reg.host()));
        assert_eq!(info.config.cmd, BUSYBOX_CMD);
        assert!(info.config.env.iter().any(|e| e.starts_with("PATH=")));
        assert_eq!(info.lower_dirs.len(), 1);
        let root = &info.lower_dirs[0];
        assert!(root.join("bin/busybox").is_file());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(root.join("bin/sh")).unwrap().ino(),
            std::fs::metadata(root.join("bin/busybox")).unwrap().ino(),
            "applets are hardlinks"
        );
        assert!(info.size > 1_000_000);
        let ev = events.lock().unwrap().clone();
        assert!(
            ev.iter().any(|e| matches!(e, PullEvent::Resolved { .. })),
            "{ev:?}"
        );
        // by digest: the same image, nothing downloaded again
        let before = store.download_count();
        let by_digest = fx.image(&format!("{repo}@{digest}"));
        let again = fx
            .ensure(&store, &by_digest, PullPolicy::Always)
            .await
            .expect("pull by digest");
        assert_eq!(&again.digest, digest);
        assert_eq!(again.lower_dirs, info.lower_dirs);
        assert_eq!(
            store.download_count(),
            before,
            "pull by digest downloaded again"
        );
        assert!(again.pulled.is_none());
        infos.push(info);
    }
    // skopeo kept the layer blob when converting: one snapshot serves both images
    assert_eq!(infos[0].lower_dirs, infos[1].lower_dirs);
    // a digest that is not the image's is refused
    let wrong = fx.image(&format!("library/busybox@sha256:{}", "0".repeat(64)));
    assert!(fx.ensure(&store, &wrong, PullPolicy::Always).await.is_err());

    if require_root() {
        let runner = common::Runner::new();
        for (i, info) in infos.iter().enumerate() {
            let (code, out) = runner.run(&format!("img-{i}"), info, &[], &[]);
            assert_eq!((code, out.as_str()), (0, "hello from busybox\n"));
        }
        let (code, out) = runner.run(
            "img-args",
            &infos[0],
            &["/bin/sh", "-c", "echo $PATH; ls /bin/sh"],
            &[],
        );
        assert_eq!(code, 0);
        assert!(
            out.starts_with("PATH=/usr/local/sbin") || out.starts_with("/usr/local/sbin"),
            "{out}"
        );
    }
}

#[tokio::test]
async fn a_blob_altered_in_the_registry_is_refused_and_nothing_is_cached() {
    let Some(fx) = Fixture::new() else { return };
    let tag = "library/busybox:1.36";
    let layer = fx.layer_digests(tag).remove(0);
    let data = fx.reg.blob_data(&layer);
    let mut bytes = std::fs::read(&data).expect("blob in registry storage");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let store = fx.store("store");
    for attempt in 0..2 {
        let err = fx
            .ensure(&store, &fx.image(tag), PullPolicy::IfNotPresent)
            .await
            .unwrap_err();
        match &err {
            ImageError::DigestMismatch { expected, .. } => assert_eq!(expected, &layer),
            other => panic!("attempt {attempt}: expected a digest error, got {other:?}"),
        }
        assert_eq!(err.kubernetes_reason(), "ErrImagePull");
        let hex = layer.trim_start_matches("sha256:");
        assert!(
            !store.root().join("blobs/sha256").join(hex).exists(),
            "bad blob kept"
        );
        assert!(
            dir_is_empty(&store.root().join("ingest")),
            "partial bad blob kept"
        );
        assert!(
            dir_is_empty(&store.root().join("snapshots")),
            "snapshot made from a bad blob"
        );
        assert!(store.list().unwrap().is_empty());
    }
    // the layer was fetched each time: nothing of it was cached
    assert_eq!(fx.reg.blob_gets(&layer), 2);
}

#[tokio::test]
async fn a_hostile_image_from_the_registry_is_refused_and_nothing_is_kept() {
    let Some(fx) = Fixture::new() else { return };
    let dir = fx.work.path().join("evil");
    let layer1 = make_layer(&[Dir("etc"), Symlink("root", "/")]);
    let layer2 = make_layer(&[File("root/etc/kapsel-image-escape-test", b"pwned")]);
    write_oci_layout(&dir, "1", &[layer1, layer2], true, &["/bin/sh"]).unwrap();
    fx.reg.push_layout(&dir, "1", "evil/app:1", false).unwrap();
    let store = fx.store("store");
    let err = fx
        .ensure(&store, &fx.image("evil/app:1"), PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::UnsafeLayer { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(!Path::new("/etc/kapsel-image-escape-test").exists());
    assert!(store.list().unwrap().is_empty());
    // the first (harmless) layer is unpacked and may be kept; the hostile one is not
    let snaps: Vec<_> = std::fs::read_dir(store.root().join("snapshots"))
        .unwrap()
        .flatten()
        .collect();
    assert!(snaps.len() <= 1, "{snaps:?}");
    let hostile = &fx.layer_digests("evil/app:1")[1];
    assert!(!store
        .root()
        .join("blobs/sha256")
        .join(hostile.trim_start_matches("sha256:"))
        .exists());
}

#[tokio::test]
async fn whiteouts_across_two_pulled_layers_give_the_merged_view() {
    let Some(fx) = Fixture::new() else { return };
    if !require_root() {
        return;
    }
    let dir = fx.work.path().join("wh");
    let l1 = make_layer(&[
        Dir("a"),
        File("a/keep", b"1"),
        File("a/gone", b"1"),
        Dir("o"),
        File("o/old", b"1"),
    ]);
    let l2 = make_layer(&[
        File("a/.wh.gone", b""),
        Dir("o"),
        File("o/.wh..wh..opq", b""),
        File("o/new", b"2"),
    ]);
    write_oci_layout(&dir, "1", &[l1, l2], true, &["/bin/sh"]).unwrap();
    fx.reg.push_layout(&dir, "1", "test/wh:1", true).unwrap();
    let store = fx.store("store");
    let info = fx
        .ensure(&store, &fx.image("test/wh:1"), PullPolicy::Always)
        .await
        .unwrap();
    assert_eq!(info.lower_dirs.len(), 2);
    let m = common::Overlay::mount(&info.lower_dirs, &fx.work.path().join("merged"));
    let seen: Vec<String> = common::tree(&m.target)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(seen, vec!["a", "a/keep", "o", "o/new"]);
}

#[tokio::test]
async fn two_pods_pulling_the_same_image_at_once_download_each_blob_once() {
    let Some(fx) = Fixture::new() else { return };
    let store = fx.store("store");
    let (s1, s2, s3) = (store.clone(), store.clone(), store.clone());
    let (a, b, c, d) = (
        fx.image("library/busybox:1.36"),
        fx.image("library/busybox:1.36"),
        fx.image("library/busybox-docker:1.36"),
        fx.image("library/busybox:1.36"),
    );
    let creds = Credentials::anonymous();
    let rc = fx.rc();
    let (r1, r2, r3, r4) = tokio::join!(
        s1.ensure_image(&a, PullPolicy::Always, &creds, &rc, Progress::none()),
        s2.ensure_image(&b, PullPolicy::Always, &creds, &rc, Progress::none()),
        s3.ensure_image(&c, PullPolicy::IfNotPresent, &creds, &rc, Progress::none()),
        store.ensure_image(&d, PullPolicy::IfNotPresent, &creds, &rc, Progress::none()),
    );
    let (r1, r2, r3, r4) = (r1.unwrap(), r2.unwrap(), r3.unwrap(), r4.unwrap());
    assert_eq!(r1.digest, r2.digest);
    assert_eq!(r1.digest, r4.digest);
    assert_eq!(r1.lower_dirs, r3.lower_dirs);
    // the shared layer: once for all four pulls (two images use it)
    let layer = fx.layer_digests("library/busybox:1.36").remove(0);
    assert_eq!(fx.layer_digests("library/busybox-docker:1.36")[0], layer);
    assert_eq!(
        fx.reg.blob_gets(&layer),
        1,
        "{:#?}",
        fx.reg.kapsel_requests()
    );
    assert_eq!(
        fx.reg.blob_gets(&fx.config_digest("library/busybox:1.36")),
        1
    );
}

#[tokio::test]
async fn if_not_present_does_not_contact_the_registry_when_the_image_is_present() {
    let Some(mut fx) = Fixture::new() else { return };
    let store = fx.store("store");
    let image = fx.image("library/busybox:1.36");
    // Never, image absent
    let err = fx
        .ensure(&store, &image, PullPolicy::Never)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotPresent(_)));
    assert_eq!(err.kubernetes_reason(), "ErrImageNeverPull");
    let pulled = fx
        .ensure(&store, &image, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert!(pulled.pulled.is_some_and(|p| p.downloaded_bytes > 0));
    let requests = fx.reg.kapsel_requests().len();
    fx.reg.stop();
    let again = fx
        .ensure(&store, &image, PullPolicy::IfNotPresent)
        .await
        .expect("no registry needed");
    assert_eq!(again.digest, pulled.digest);
    assert!(again.pulled.is_none());
    let by_digest = fx.image(&format!("library/busybox@{}", pulled.digest));
    fx.ensure(&store, &by_digest, PullPolicy::IfNotPresent)
        .await
        .expect("by digest, offline");
    fx.ensure(&store, &image, PullPolicy::Never)
        .await
        .expect("Never, present");
    // Always does go to the registry, which is down
    let err = fx
        .ensure(&store, &image, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Network { .. }), "{err:?}");
    assert!(err.is_retryable());
    fx.reg.restart().unwrap();
    assert_eq!(
        fx.reg.kapsel_requests().len(),
        requests,
        "IfNotPresent/Never contacted the registry"
    );
}

#[tokio::test]
async fn a_missing_image_is_not_found_until_it_is_pushed() {
    let Some(fx) = Fixture::new() else { return };
    let store = fx.store("store");
    let image = fx.image("team/later:1.0");
    let err = fx
        .ensure(&store, &image, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    match &err {
        ImageError::NotFound { message, .. } => {
            // the registry's own words reach the pod's events
            assert!(message.to_lowercase().contains("unknown"), "{message}");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(err.kubernetes_reason(), "ErrImagePull");
    assert!(err.is_retryable());
    fx.reg
        .push_layout(&fx.layout, "1.36", "team/later:1.0", false)
        .unwrap();
    let info = fx
        .ensure(&store, &image, PullPolicy::IfNotPresent)
        .await
        .expect("after push");
    assert_eq!(info.digest, fx.reg.digest_of("team/later:1.0").unwrap());
}

#[tokio::test]
async fn gc_removes_unused_images_only_oldest_unused_first() {
    let Some(fx) = Fixture::new() else { return };
    let store = fx.store("store");
    for (name, body) in [("tiny/a:1", &b"a"[..]), ("tiny/b:1", &b"b"[..])] {
        let dir = fx.work.path().join(name.replace([':', '/'], "-"));
        let body: &'static [u8] = if body == b"a" { b"a" } else { b"b" };
        write_oci_layout(&dir, "1", &[make_layer(&[File("f", body)])], true, &["/f"]).unwrap();
        fx.reg.push_layout(&dir, "1", name, false).unwrap();
    }
    let busybox = fx
        .ensure(
            &store,
            &fx.image("library/busybox:1.36"),
            PullPolicy::IfNotPresent,
        )
        .await
        .unwrap();
    let a = fx
        .ensure(&store, &fx.image("tiny/a:1"), PullPolicy::IfNotPresent)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let b = fx
        .ensure(&store, &fx.image("tiny/b:1"), PullPolicy::IfNotPresent)
        .await
        .unwrap();
    // busybox is the oldest-used but in use: it must survive
    let in_use = vec![busybox.image_id.clone()];
    // below the threshold: nothing
    let r = store
        .gc_with_usage(
            85,
            80,
            &in_use,
            DiskUsage {
                total_bytes: 1000,
                used_bytes: 500,
            },
        )
        .await
        .unwrap();
    assert!(r.removed.is_empty());
    // above it, one byte to free: only the oldest unused image goes
    let r = store
        .gc_with_usage(
            85,
            85,
            &in_use,
            DiskUsage {
                total_bytes: 1000,
                used_bytes: 851,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.removed, vec![a.reference.to_string()]);
    assert!(!a.lower_dirs[0].exists());
    assert!(b.lower_dirs[0].exists());
    // everything to free: every unused image goes, the used one stays
    let r = store
        .gc_with_usage(
            85,
            0,
            &in_use,
            DiskUsage {
                total_bytes: 1000,
                used_bytes: 900,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.removed, vec![b.reference.to_string()]);
    let left: Vec<String> = store.list().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(left, vec![busybox.reference.to_string()]);
    assert!(busybox
        .lower_dirs
        .iter()
        .all(|d| d.join("bin/busybox").exists()));
    // and the real filesystem's usage drives gc(): a 100 % threshold removes nothing
    assert!(
        store.gc(100, 90, &[]).await.unwrap().removed.is_empty()
            || store.disk_usage().unwrap().percent() >= 100
    );
    // remove by name
    assert_eq!(
        store
            .remove("127.0.0.1:1/nothing:1")
            .await
            .map_err(|e| e.to_string())
            .unwrap_err(),
        "image 127.0.0.1:1/nothing:1 not in the store"
    );
    assert_eq!(
        store
            .remove(&busybox.reference.to_string())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(dir_is_empty(&store.root().join("snapshots")));
    assert!(dir_is_empty(&store.root().join("blobs/sha256")));
}

#[tokio::test]
async fn import_of_a_docker_archive_runs_a_container_without_any_registry() {
    let Some(mut fx) = Fixture::new() else { return };
    let archive = fx.work.path().join("busybox-docker.tar");
    fx.reg
        .save_docker_archive("library/busybox:1.36", &archive, "busybox:1.36")
        .unwrap();
    let oci_archive = fx.work.path().join("busybox-oci.tar");
    let st = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg(format!("oci:{}:1.36", fx.layout.display()))
        .arg(format!(
            "oci-archive:{}:registry.lan/team/bb:2",
            oci_archive.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    fx.reg.stop();

    let store = fx.store("offline");
    let infos = store
        .import_archive(&archive, None)
        .await
        .expect("import docker archive");
    assert_eq!(infos.len(), 1);
    assert_eq!(
        infos[0].reference.to_string(),
        "docker.io/library/busybox:1.36"
    );
    let info = store
        .ensure_image(
            &ImageRef::parse("busybox:1.36").unwrap(),
            PullPolicy::Never,
            &Credentials::anonymous(),
            &RegistryConfig::default(),
            Progress::none(),
        )
        .await
        .expect("imported image is present");
    assert_eq!(info.config.cmd, BUSYBOX_CMD);
    assert!(info.lower_dirs[0].join("bin/busybox").is_file());
    let oci = store
        .import_archive(&oci_archive, None)
        .await
        .expect("import OCI archive");
    assert_eq!(oci[0].reference.to_string(), "registry.lan/team/bb:2");
    assert_eq!(
        oci[0].lower_dirs, info.lower_dirs,
        "same layer, same snapshot"
    );
    let names: Vec<String> = store.list().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        vec!["docker.io/library/busybox:1.36", "registry.lan/team/bb:2"]
    );
    // an archive that is not one
    let junk = fx.work.path().join("junk.tar");
    std::fs::write(&junk, make_layer(&[File("hello", b"x")])).unwrap();
    assert!(store.import_archive(&junk, None).await.is_err());
    if require_root() {
        let runner = common::Runner::new();
        let (code, out) = runner.run("imported", &info, &[], &[]);
        assert_eq!((code, out.as_str()), (0, "hello from busybox\n"));
    }
}

#[tokio::test]
async fn docker_hub_names_come_from_a_mirror_and_a_dead_mirror_is_skipped() {
    let Some(fx) = Fixture::new() else { return };
    let store = fx.store("store");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut rc = RegistryConfig::default();
    rc.add_docker_hub_mirror(&format!("http://127.0.0.1:{dead}"));
    rc.add_docker_hub_mirror(&format!("http://{}", fx.reg.host()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let info = store
        .ensure_image(
            &ImageRef::parse("busybox:1.36").unwrap(),
            PullPolicy::IfNotPresent,
            &Credentials::anonymous(),
            &rc,
            Progress::new(move |e| ev.lock().unwrap().push(e.clone())),
        )
        .await
        .expect("pull through the mirror");
    assert_eq!(info.digest, fx.oci_digest);
    assert_eq!(
        info.image_id,
        format!("docker.io/library/busybox@{}", fx.oci_digest)
    );
    let ev = events.lock().unwrap();
    assert!(ev.iter().any(|e| matches!(e, PullEvent::MirrorFailed { mirror, .. } if mirror.ends_with(&dead.to_string()))), "{ev:?}");
}

#[tokio::test]
async fn a_crash_leaves_nothing_half_done_and_a_partial_download_resumes() {
    let Some(fx) = Fixture::new() else { return };
    let root = fx.work.path().join("store");
    let tag = "library/busybox:1.36";
    let layer = fx.layer_digests(tag).remove(0);
    let hex = layer.trim_start_matches("sha256:").to_string();
    {
        let store = ImageStore::open(&root).unwrap();
        drop(store);
    }
    // what an agent killed mid-pull leaves: an unpack in progress, a snapshot dir without its
    // completion marker, and half of the layer downloaded
    std::fs::create_dir_all(root.join("snapshots/.tmp-x-1-0/fs/bin")).unwrap();
    std::fs::create_dir_all(root.join("snapshots").join(&hex).join("fs")).unwrap();
    let bytes = std::fs::read(fx.reg.blob_data(&layer)).unwrap();
    std::fs::write(root.join("ingest").join(&hex), &bytes[..bytes.len() / 2]).unwrap();

    let store = ImageStore::open(&root).unwrap();
    assert!(
        dir_is_empty(&root.join("snapshots")),
        "half-done snapshots survived open"
    );
    let info = fx
        .ensure(&store, &fx.image(tag), PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert!(info.lower_dirs[0].join("bin/busybox").is_file());
    // the layer was fetched once, as a range request for the missing half
    let log = fx.reg.access_log();
    let gets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("kapsel/") && l.contains(&format!("/blobs/{layer}")))
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert!(
        gets[0].contains("\" 206 "),
        "not a partial request: {}",
        gets[0]
    );
    assert!(dir_is_empty(&root.join("ingest")));
}
