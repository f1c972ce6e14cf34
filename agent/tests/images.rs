//! Pods with images from a registry: the agent with the real runtime and kapsel-image's store
//! against Debian's docker-registry on 127.0.0.1 (busybox built with umoci from busybox-static,
//! pushed with skopeo as OCI and as Docker v2 schema 2; digests read from the registry).
//! Root and the tools are needed; under CI=true their absence fails the tests.

use crate::common;
use crate::rt;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use kapsel_agent::{Agent, AgentConfig, AgentHandle, StoreImages};
use kapsel_api::client::{Api, Client, ListParams, LogParams};
use kapsel_api::{DeleteOptions, Event, Pod, WatchEventType};
use kapsel_image::testing::{build_busybox, require_tools, Registry, REGISTRY_TOOLS};
use kapsel_image::{Credentials, ImageRef, ImageStore, Progress, PullPolicy};
use kapsel_runtime::LinuxRuntime;

const T: Duration = Duration::from_secs(60);

struct Rig {
    srv: kapsel_apiserver::TestServer,
    env: rt::Env,
    dir: tempfile::TempDir,
    agent: Option<AgentHandle>,
    api: Api<Pod>,
    client: Client,
    reg: Registry,
    layout: PathBuf,
    store: ImageStore,
    /// digests of library/busybox:1.36 (OCI) and library/busybox-docker:1.36 (v2s2)
    oci_digest: String,
    docker_digest: String,
}

impl Rig {
    async fn new(adjust: impl FnOnce(&mut AgentConfig)) -> Option<Rig> {
        if !require_tools(REGISTRY_TOOLS) {
            return None;
        }
        let env = rt::Env::new()?;
        let reg = Registry::start().expect("start docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("kt-img-")
            .tempdir()
            .unwrap();
        let layout = build_busybox(dir.path(), "1.36").expect("build busybox");
        let oci_digest = reg
            .push_layout(&layout, "1.36", "library/busybox:1.36", false)
            .expect("push OCI");
        let docker_digest = reg
            .push_layout(&layout, "1.36", "library/busybox-docker:1.36", true)
            .expect("push v2s2");
        let srv = server().await;
        let rtm = Arc::new(LinuxRuntime::new(env.config.clone()).unwrap());
        let data = dir.path().join("agent");
        let mut cfg = AgentConfig::new(&srv.url, "real", &data);
        cfg.node_ip = Some("127.0.0.1".into());
        cfg.eviction_memory_available = 0;
        cfg.backoff.initial = Duration::from_millis(500);
        cfg.backoff.max = Duration::from_secs(2);
        cfg.registry = reg.registry_config();
        adjust(&mut cfg);
        let store = ImageStore::open(data.join("images")).unwrap();
        let images = StoreImages::new(Arc::new(store.clone()), BTreeMap::new());
        let agent = Agent::connect(cfg, rtm, Arc::new(images)).unwrap().spawn();
        Some(Rig {
            api: pods(&srv.url),
            client: Client::new(&srv.url).unwrap(),
            srv,
            env,
            dir,
            agent: Some(agent),
            reg,
            layout,
            store,
            oci_digest,
            docker_digest,
        })
    }

    fn image(&self, repo: &str) -> String {
        format!("{}/{repo}", self.reg.host())
    }

    async fn delete_all(&self) {
        let list = self.api.list(&Default::default()).await.unwrap();
        for p in list.items {
            let _ = self
                .api
                .delete(
                    p.metadata.name(),
                    &DeleteOptions {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await;
        }
        for name in [
            "a", "b", "c", "tag", "digest", "later", "present", "always", "user",
        ] {
            wait_gone(&self.api, name, T).await;
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // the agent first (it stops using the store and the runtime), then the rest
        self.agent.take();
        let _ = (&self.srv, &self.env, &self.dir);
    }
}

fn running(p: &Pod) -> bool {
    phase(p) == "Running" && condition(p, "Ready").as_deref() == Some("True")
}

fn image_pod(name: &str, image: &str, cmd: &[&str], policy: Option<&str>) -> Pod {
    let mut c = container("c", image, cmd);
    c.image_pull_policy = policy.map(Into::into);
    pod(name, "real", vec![c])
}

fn image_id(p: &Pod) -> String {
    cstatus(p, "c")
        .map(|c| c.image_id.clone())
        .unwrap_or_default()
}

/// Wait (through a watch) for an event about `pod` with `reason` whose message contains
/// `needle`; returns its message.
async fn wait_event(client: &Client, pod: &str, reason: &str, needle: &str) -> String {
    let api: Api<Event> = client.api(Some("default"));
    let matches = |e: &Event| {
        e.involved_object.name.as_deref() == Some(pod)
            && e.reason.as_deref() == Some(reason)
            && e.message.as_deref().unwrap_or("").contains(needle)
    };
    let fut = async {
        loop {
            let list = api.list(&ListParams::default()).await.expect("list events");
            if let Some(e) = list.items.iter().find(|e| matches(e)) {
                return e.message.clone().unwrap_or_default();
            }
            let rv = list.metadata.resource_version.clone().unwrap_or_default();
            let lp = ListParams::default().timeout(30);
            let mut w = api.watch_boxed(&lp, &rv).await.expect("watch events");
            while let Some(ev) = w.next().await {
                let Ok(ev) = ev else { break };
                if ev.type_ == WatchEventType::Added && matches(&ev.object) {
                    return ev.object.message.clone().unwrap_or_default();
                }
            }
        }
    };
    match tokio::time::timeout(T, fut).await {
        Ok(m) => m,
        Err(_) => {
            let all = api.list(&ListParams::default()).await.unwrap();
            let seen: Vec<String> = all
                .items
                .iter()
                .filter(|e| e.involved_object.name.as_deref() == Some(pod))
                .map(|e| format!("{:?}: {:?}", e.reason, e.message))
                .collect();
            panic!("no {reason} event with {needle:?} for {pod}; events: {seen:#?}")
        }
    }
}

/// Record the waiting reasons of container `c` of pod `name`, in order, from a watch opened
/// before the pod exists, until the pod runs.
fn record_reasons(api: Api<Pod>, rv: String, name: &str) -> Arc<Mutex<Vec<(String, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let (s, name) = (seen.clone(), name.to_string());
    tokio::spawn(async move {
        let lp = ListParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(120);
        let mut w = api.watch_boxed(&lp, &rv).await.expect("watch");
        while let Some(Ok(ev)) = w.next().await {
            let p = ev.object;
            if let Some(wt) = cstatus(&p, "c")
                .and_then(|c| c.state.clone())
                .and_then(|s| s.waiting)
            {
                let r = (
                    wt.reason.unwrap_or_default(),
                    wt.message.unwrap_or_default(),
                );
                let mut v = s.lock().unwrap();
                if v.last() != Some(&r) {
                    v.push(r);
                }
            }
            if running(&p) {
                return;
            }
        }
    });
    seen
}

async fn log_of(api: &Api<Pod>, pod: &str) -> String {
    api.logs_string(
        pod,
        &LogParams {
            container: Some("c".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("logs of {pod}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_images_by_tag_and_by_digest_in_both_formats_with_the_image_config() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    // by tag, OCI manifest, no command: the image's Cmd runs with the image's Env
    let mut tag = image_pod("tag", &r.image("library/busybox:1.36"), &[], None);
    tag.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    // by digest, Docker v2s2 manifest, args only: the image has no Entrypoint, so args run
    let mut dig = image_pod(
        "digest",
        &r.image(&format!("library/busybox-docker@{}", r.docker_digest)),
        &[],
        None,
    );
    dig.spec.as_mut().unwrap().containers[0].args =
        vec!["/bin/sh".into(), "-c".into(), "echo path=$PATH".into()];
    dig.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    let pulls_before = pull_count();
    r.api.create(&tag).await.unwrap();
    r.api.create(&dig).await.unwrap();

    let t = wait_pod(&r.api, "tag", T, |p| phase(p) == "Succeeded").await;
    assert_eq!(
        image_id(&t),
        format!("{}@{}", r.image("library/busybox"), r.oci_digest)
    );
    assert!(log_of(&r.api, "tag").await.contains("hello from busybox"));
    let d = wait_pod(&r.api, "digest", T, |p| phase(p) == "Succeeded").await;
    assert_eq!(
        image_id(&d),
        format!("{}@{}", r.image("library/busybox-docker"), r.docker_digest)
    );
    assert!(
        log_of(&r.api, "digest")
            .await
            .contains("path=/usr/local/sbin"),
        "the image's PATH"
    );
    // the default policy of a tagged image is IfNotPresent, of a digest too
    assert_eq!(
        t.spec.as_ref().unwrap().containers[0]
            .image_pull_policy
            .as_deref(),
        Some("IfNotPresent")
    );
    wait_event(&r.client, "tag", "Pulling", "Pulling image").await;
    let pulled = wait_event(&r.client, "tag", "Pulled", "Successfully pulled image").await;
    assert!(pulled.contains("Image size: "), "{pulled}");
    // both pulls are in kubelet_image_pull_duration_seconds
    wait_pod(&r.api, "digest", T, |p| phase(p) == "Succeeded").await;
    assert!(
        pull_count() >= pulls_before + 2.0,
        "image pull histogram did not move: {pulls_before} -> {}",
        pull_count()
    );
    r.delete_all().await;
}

/// `kubelet_image_pull_duration_seconds_count` of this process' agent (its /metrics body).
fn pull_count() -> f64 {
    let body = kapsel_agent::metrics::endpoint("metrics").expect("metrics endpoint");
    body.lines()
        .find_map(|l| l.strip_prefix("kubelet_image_pull_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pull histogram in\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_pulling_the_same_image_at_once_download_each_blob_once() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    let image = r.image("library/busybox:1.36");
    let sleep = ["/bin/sleep", "1000"];
    let (a, b) = (
        image_pod("a", &image, &sleep, Some("Always")),
        image_pod("b", &image, &sleep, Some("Always")),
    );
    let (ra, rb) = tokio::join!(r.api.create(&a), r.api.create(&b));
    ra.unwrap();
    rb.unwrap();
    let pa = wait_pod(&r.api, "a", T, running).await;
    let pb = wait_pod(&r.api, "b", T, running).await;
    assert_eq!(image_id(&pa), image_id(&pb));
    let m = r.reg.raw_manifest("library/busybox:1.36").unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        blobs.push(l["digest"].as_str().unwrap().to_string());
    }
    for b in &blobs {
        assert_eq!(
            r.reg.blob_gets(b),
            1,
            "blob {b} fetched more than once: {:#?}",
            r.reg.kapsel_requests()
        );
    }
    // both pods asked the registry (policy Always): the manifest twice, the blobs once
    let manifest_gets = r
        .reg
        .kapsel_requests()
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains("/manifests/"))
        .count();
    assert!(manifest_gets >= 2, "{:#?}", r.reg.kapsel_requests());
    r.delete_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_a_missing_image_backs_off_and_starts_once_the_image_is_pushed() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    let image = r.image("team/later:1.0");
    let rv = r
        .api
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap_or_default();
    let reasons = record_reasons(r.api.clone(), rv, "later");
    r.api
        .create(&image_pod("later", &image, &["/bin/sleep", "1000"], None))
        .await
        .unwrap();
    let p = wait_pod(&r.api, "later", T, |p| {
        waiting_reason(p, "c").as_deref() == Some("ImagePullBackOff")
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    // the registry's own words reach the event
    let failed = wait_event(&r.client, "later", "Failed", "Failed to pull image").await;
    assert!(failed.to_lowercase().contains("unknown"), "{failed}");
    wait_event(&r.client, "later", "BackOff", "Back-off pulling image").await;

    r.reg
        .push_layout(&r.layout, "1.36", "team/later:1.0", false)
        .unwrap();
    let p = wait_pod(&r.api, "later", T, running).await;
    assert_eq!(
        image_id(&p),
        format!(
            "{}@{}",
            r.image("team/later"),
            r.reg.digest_of("team/later:1.0").unwrap()
        )
    );
    let seen = reasons.lock().unwrap().clone();
    let first = |reason: &str| seen.iter().position(|(r, _)| r == reason);
    let (err, backoff) = (first("ErrImagePull"), first("ImagePullBackOff"));
    assert!(
        err.is_some() && backoff.is_some() && err < backoff,
        "waiting reasons in order: {seen:#?}"
    );
    let (_, msg) = &seen[err.unwrap()];
    assert!(msg.contains("Failed to pull image"), "{msg}");
    r.delete_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_not_present_does_not_contact_the_registry_when_the_image_is_present() {
    let Some(mut r) = Rig::new(|_| {}).await else {
        return;
    };
    let image = r.image("library/busybox:1.36");
    let sleep = ["/bin/sleep", "1000"];
    r.api
        .create(&image_pod("a", &image, &sleep, Some("IfNotPresent")))
        .await
        .unwrap();
    let a = wait_pod(&r.api, "a", T, running).await;
    let requests = r.reg.kapsel_requests().len();
    r.reg.stop();
    // the same image, IfNotPresent: starts with the registry down
    r.api
        .create(&image_pod("present", &image, &sleep, Some("IfNotPresent")))
        .await
        .unwrap();
    let p = wait_pod(&r.api, "present", T, running).await;
    assert_eq!(image_id(&p), image_id(&a));
    wait_event(&r.client, "present", "Pulled", "already present on machine").await;
    // Always has to ask the registry, which is down
    r.api
        .create(&image_pod("always", &image, &sleep, Some("Always")))
        .await
        .unwrap();
    let p = wait_pod(&r.api, "always", T, |p| {
        matches!(
            waiting_reason(p, "c").as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    r.api
        .delete(
            "always",
            &DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_gone(&r.api, "always", T).await;
    r.reg.restart().unwrap();
    assert_eq!(
        r.reg.kapsel_requests().len(),
        requests,
        "IfNotPresent contacted the registry"
    );
    r.delete_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_gc_removes_the_images_no_pod_uses() {
    let Some(r) = Rig::new(|c| {
        // always "above the threshold": every image no pod uses goes
        c.image_gc_high_threshold = 0;
        c.image_gc_low_threshold = 0;
        c.image_gc_period = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let used = r.image("library/busybox:1.36");
    r.api
        .create(&image_pod("a", &used, &["/bin/sleep", "1000"], None))
        .await
        .unwrap();
    wait_pod(&r.api, "a", T, running).await;
    // an image no pod uses, sharing the layer of the used one
    let unused = ImageRef::parse(&r.image("library/busybox-docker:1.36")).unwrap();
    let rc = r.reg.registry_config();
    r.store
        .ensure_image(
            &unused,
            PullPolicy::Always,
            &Credentials::anonymous(),
            &rc,
            Progress::none(),
        )
        .await
        .unwrap();
    let names = || -> Vec<String> {
        r.store
            .list()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect()
    };
    let gone = |name: String| {
        let names = &names;
        move || !names().contains(&name)
    };
    assert!(
        rt::wait_for(gone(unused.to_string()), T),
        "unused image kept: {:?}",
        names()
    );
    let used_ref = ImageRef::parse(&used).unwrap();
    assert!(names().contains(&used_ref.to_string()), "{:?}", names());
    let info = r
        .store
        .get(&used_ref)
        .await
        .unwrap()
        .expect("used image kept");
    assert!(info
        .lower_dirs
        .iter()
        .all(|d| d.join("bin/busybox").exists()));
    // the pod is still fine, and once it is gone its image goes too
    let p = r.api.get("a").await.unwrap();
    assert!(running(&p));
    r.delete_all().await;
    assert!(
        rt::wait_for(gone(used_ref.to_string()), T),
        "image of a deleted pod kept: {:?}",
        names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_does_not_pull_and_reports_err_image_never_pull() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    // Never, absent: ErrImageNeverPull, nothing asked of the registry
    let before = r.reg.kapsel_requests().len();
    let image = r.image("library/busybox:1.36");
    r.api
        .create(&image_pod(
            "a",
            &image,
            &["/bin/sleep", "1000"],
            Some("Never"),
        ))
        .await
        .unwrap();
    let p = wait_pod(&r.api, "a", T, |p| {
        waiting_reason(p, "c").as_deref() == Some("ErrImageNeverPull")
    })
    .await;
    let msg = cstatus(&p, "c")
        .and_then(|c| c.state.clone())
        .and_then(|s| s.waiting)
        .and_then(|w| w.message)
        .unwrap_or_default();
    assert!(msg.contains("pull policy of Never"), "{msg}");
    assert_eq!(r.reg.kapsel_requests().len(), before);

    r.delete_all().await;
}
