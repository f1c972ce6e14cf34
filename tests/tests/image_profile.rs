//! ImageProfiles end to end (root): a `kapsel server` with its real local agent, busybox
//! images served from a directory, and `kapsel.dev/v1` ImageProfiles chosen by image:
//! - `kt.local/profile:web` may execute only `/bin/httpd`: the httpd serves but cannot spawn
//!   its CGI shell script, and a pod whose command is `/bin/sh` fails with permission denied;
//!   an annotation asking for more than the profile is refused;
//! - `kt.local/profile:tools` may execute only busybox (its `sh`), not the separate `/bin/cat`,
//!   and its root filesystem is read-only (EROFS) while the emptyDir in `writablePaths` is
//!   writable;
//! - `kt.local/profile:open` falls to the catch-all `kt.local/*` profile (nothing restricted,
//!   `readOnlyRootFilesystem: false`): the same commands succeed there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kapsel_api::client::{Api, Client};
use kapsel_api::{ImageProfile, Pod};
use kapsel_tests::local_cluster::{rootfs, HostGuard};
use kapsel_tests::*;
use serde_json::json;

/// Dropped in field order: the server first, then the host leftovers, then the directory.
struct Cluster {
    server: Server,
    _guard: HostGuard,
    run: PathBuf,
    _dir: tempfile::TempDir,
}

/// Busybox with `/bin/httpd` and `/bin/cat` as copies of their own (Landlock allows inodes:
/// a link to busybox would be busybox), a `/www` with an index and a `#!/bin/sh` CGI script.
fn profile_rootfs(dir: &Path) -> PathBuf {
    let root = rootfs(dir);
    for copy in ["httpd", "cat"] {
        std::fs::copy(root.join("bin/busybox"), root.join("bin").join(copy)).expect("copy");
    }
    std::fs::create_dir_all(root.join("data")).expect("data");
    write_shell_cgi_site(&root);
    root
}

fn start() -> Cluster {
    let dir = tempdir("kt-profile-");
    let node = format!("kt-profile-{}", short_id());
    let root = profile_rootfs(dir.path());
    let run = dir.path().join("run");
    let mut extra = vec![
        "--runtime-dir".to_string(),
        run.display().to_string(),
        "--cgroup-parent".into(),
        node.clone(),
    ];
    for tag in ["web", "tools", "open"] {
        extra.push("--image-dir".into());
        extra.push(format!("kt.local/profile:{tag}={}", root.display()));
    }
    let guard = HostGuard {
        cgroup: node.clone(),
        dir: dir.path().to_path_buf(),
    };
    let server = Server::start(
        &dir.path().join("data"),
        &ServerOpts {
            node_name: Some(node),
            extra,
            ..Default::default()
        },
    );
    Cluster {
        server,
        _guard: guard,
        run,
        _dir: dir,
    }
}

async fn create_profile(client: &Client, v: serde_json::Value) {
    let p: ImageProfile = serde_json::from_value(v).expect("profile");
    client
        .api::<ImageProfile>(None)
        .create(&p)
        .await
        .expect("create ImageProfile");
}

async fn create_pod(pods: &Api<Pod>, name: &str, spec: serde_json::Value, ann: serde_json::Value) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": ann},
        "spec": spec,
    }))
    .expect("pod");
    pods.create(&pod).await.expect("create pod");
}

/// Wait until `f` accepts the pod.
async fn pod_until<T>(pods: &Api<Pod>, name: &str, what: &str, f: impl Fn(&Pod) -> Option<T>) -> T {
    let f = &f;
    eventually(
        Duration::from_secs(90),
        &format!("pod {name}: {what}"),
        || {
            let pods = pods.clone();
            let name = name.to_string();
            async move { f(&pods.get(&name).await.ok()?) }
        },
    )
    .await
}

/// The first container's waiting (reason, message).
fn waiting(p: &Pod) -> Option<(String, String)> {
    let w = p
        .status
        .as_ref()?
        .container_statuses
        .first()?
        .state
        .as_ref()?
        .waiting
        .clone()?;
    Some((w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
}

/// An HTTP/1.0 GET to port 8080 inside the pod's network namespace (host busybox nc).
fn http_get(netns: &Path, path: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nsenter --net='{}' busybox nc -w 5 127.0.0.1 8080",
            netns.display()
        ))
        .output()
        .expect("nsenter");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const SCRIPT: &str = "/bin/busybox touch /data/ok && echo data-writable
/bin/busybox touch /nope 2>&1; echo root-write=$?
/bin/cat /www/index.html 2>&1; echo cat=$?";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_profiles_confine_containers_by_image() {
    let test = "image_profiles_confine_containers_by_image";
    if !require_root(test) || !require_tools(test, &["busybox", "umount", "nsenter"]) {
        return;
    }
    let t0 = std::time::Instant::now();
    let step = |what: &str| println!("{test}: {what} at {:.1} s", t0.elapsed().as_secs_f64());
    let c = start();
    let client = c.server.client();
    wait_nodes_ready(&client, 1, Duration::from_secs(60)).await;
    step("node ready");
    create_profile(
        &client,
        json!({"apiVersion": "kapsel.dev/v1", "kind": "ImageProfile",
               "metadata": {"name": "kt-web"},
               "spec": {"image": "kt.local/profile:web", "allowedExecutables": ["/bin/httpd"]}}),
    )
    .await;
    create_profile(
        &client,
        json!({"apiVersion": "kapsel.dev/v1", "kind": "ImageProfile",
               "metadata": {"name": "kt-tools"},
               "spec": {"image": "kt.local/profile:tools", "allowedExecutables": ["/bin/busybox"],
                        "writablePaths": ["/data"]}}),
    )
    .await;
    create_profile(
        &client,
        json!({"apiVersion": "kapsel.dev/v1", "kind": "ImageProfile",
               "metadata": {"name": "kt-all"},
               "spec": {"image": "kt.local/*", "readOnlyRootFilesystem": false}}),
    )
    .await;
    let pods: Api<Pod> = client.api(Some("default"));

    // The httpd serves, but cannot spawn its CGI script's shell.
    create_pod(
        &pods,
        "web",
        json!({"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": "kt.local/profile:web",
            "command": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]}]}),
        json!({}),
    )
    .await;
    let web = pod_until(&pods, "web", "Running and Ready", |p| {
        (pod_phase(p) == "Running" && pod_ready(p)).then(|| p.clone())
    })
    .await;
    let netns = c
        .run
        .join("sandboxes")
        .join(format!("p-{}", web.metadata.uid.as_deref().unwrap_or("")))
        .join("net");
    let page = eventually(Duration::from_secs(30), "httpd serving", || {
        let netns = netns.clone();
        async move {
            let r = http_get(&netns, "/");
            r.starts_with("HTTP/1.1 200").then_some(r)
        }
    })
    .await;
    step("web serving");
    assert!(page.ends_with("\r\n\r\nindex-ok\n"), "{page}");
    let cgi = http_get(&netns, "/cgi-bin/sh.cgi");
    assert!(
        cgi.starts_with("HTTP/1.1 ")
            && !cgi.starts_with("HTTP/1.1 200")
            && !cgi.contains("cgi-ran-a-shell"),
        "the httpd must not run a shell: {cgi}"
    );

    // A shell as the command of the same image: permission denied, nothing ran.
    create_pod(
        &pods,
        "shell",
        json!({"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "kt.local/profile:web",
            "command": ["/bin/sh", "-c", "echo should-not-run"]}]}),
        json!({}),
    )
    .await;
    let (reason, message) = pod_until(&pods, "shell", "refused to start", |p| {
        let w = waiting(p)?;
        (w.0 == "RunContainerError").then_some(w)
    })
    .await;
    step("shell refused");
    assert!(message.contains("Permission denied"), "{reason}: {message}");

    // An annotation may not widen the profile.
    create_pod(
        &pods,
        "widen",
        json!({"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "kt.local/profile:web", "command": ["/bin/busybox", "true"]}]}),
        json!({"kapsel.dev/allowed-executables": "/bin/httpd,/bin/busybox"}),
    )
    .await;
    let (_, message) = pod_until(&pods, "widen", "CreateContainerConfigError", |p| {
        waiting(p).filter(|w| w.0 == "CreateContainerConfigError")
    })
    .await;
    assert!(
        message.contains(
            "/bin/busybox is not within ImageProfile kt-web's allowedExecutables (/bin/httpd)"
        ),
        "{message}"
    );

    // tools: busybox only; the root filesystem read-only, /data (emptyDir) writable.
    // open: the catch-all profile, the same script succeeds.
    for (name, tag) in [("tools", "tools"), ("open", "open")] {
        create_pod(
            &pods,
            name,
            json!({"restartPolicy": "Never",
                   "volumes": [{"name": "data", "emptyDir": {}}],
                   "containers": [{
                       "name": "c", "image": format!("kt.local/profile:{tag}"),
                       "command": ["/bin/sh", "-c", SCRIPT],
                       "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}),
            json!({}),
        )
        .await;
    }
    for name in ["tools", "open"] {
        pod_until(&pods, name, "Succeeded", |p| {
            (pod_phase(p) == "Succeeded").then_some(())
        })
        .await;
    }
    step("tools and open done");
    let logs = |name: &str| c.server.kapsel(&["logs", name]);
    let tools = logs("tools");
    println!("tools:\n{tools}");
    assert!(tools.contains("data-writable\n"), "{tools}");
    assert!(
        tools.contains("touch: /nope: Read-only file system\nroot-write=1\n"),
        "{tools}"
    );
    assert!(tools.contains("Permission denied"), "{tools}");
    assert!(tools.ends_with("cat=126\n"), "{tools}");
    assert!(!tools.contains("index-ok"), "{tools}");
    let open = logs("open");
    println!("open:\n{open}");
    assert_eq!(
        open, "data-writable\nroot-write=0\nindex-ok\ncat=0\n",
        "the catch-all profile restricts nothing"
    );
}
