//! End-to-end tests of the `kapsel` binary against a real, in-process API server.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kapsel_api::client::Client;
use kapsel_api::{ConfigMap, Deployment, ObjectMeta};
use kapsel_apiserver::{start_test_server, TestServer};

struct Env {
    server: TestServer,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Self {
        Env {
            server: start_test_server().await,
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kapsel"));
        c.arg("--server")
            .arg(&self.server.url)
            .args(args)
            .env("KAPSELCONFIG", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .env_remove("RUST_BACKTRACE");
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, None)
    }
    fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawning kapsel");
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().unwrap()
    }
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
    fn client(&self) -> Client {
        Client::new(&self.server.url).unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kapsel failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}
#[track_caller]
fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "kapsel unexpectedly succeeded:\n{}",
        stdout(o)
    );
    let e = stderr(o);
    assert!(
        !e.contains("panicked") && !e.contains("RUST_BACKTRACE"),
        "{e}"
    );
    e
}

const WEB_V1: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_create_unchanged_configured_cycle() {
    let env = Env::new().await;
    let f = env.file("web.yaml", WEB_V1);
    assert_eq!(
        ok(&env.run(&["apply", "-f", &f])),
        "deployment.apps/web created\n"
    );
    assert_eq!(
        ok(&env.run(&["apply", "-f", &f])),
        "deployment.apps/web unchanged\n"
    );
    // Another writer scales; the manifest has no replicas, so the scale must survive.
    assert_eq!(
        ok(&env.run(&["scale", "deployment/web", "--replicas", "4"])),
        "deployment.apps/web scaled\n"
    );
    // Remove a label and change the image.
    env.file(
        "web.yaml",
        &WEB_V1
            .replace(", tier: front", "")
            .replace("nginx:1.25", "nginx:1.26"),
    );
    assert_eq!(
        ok(&env.run(&["apply", "-f", &f])),
        "deployment.apps/web configured\n"
    );
    let d = env
        .client()
        .api::<Deployment>(Some("default"))
        .get("web")
        .await
        .unwrap();
    assert!(
        !d.metadata.labels.contains_key("tier"),
        "{:?}",
        d.metadata.labels
    );
    assert_eq!(
        d.metadata.labels.get("app").map(String::as_str),
        Some("web")
    );
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(4));
    assert_eq!(
        spec.template.unwrap().spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("nginx:1.26")
    );
    assert_eq!(
        ok(&env.run(&["apply", "-f", &f])),
        "deployment.apps/web unchanged\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_document_applies_nothing_and_names_it() {
    let env = Env::new().await;
    let f = env.file(
        "cms.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: good}\ndata: {a: b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndatta: {a: b}\n",
    );
    let e = fails(&env.run(&["apply", "-f", &f]));
    assert!(e.contains(&format!("\"{f}\"")), "{e}");
    assert!(e.contains("document 2"), "{e}");
    assert!(e.contains("datta"), "{e}");
    let cms = env.client().api::<ConfigMap>(Some("default"));
    assert!(cms.get_opt("good").await.unwrap().is_none());
    assert!(cms.get_opt("bad").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_from_directory_and_stdin() {
    let env = Env::new().await;
    env.file(
        "m/a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    );
    env.file(
        "m/sub/b.json",
        "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"b\"}}",
    );
    env.file("m/notes.txt", "not a manifest");
    let dir = env.dir.path().join("m").display().to_string();
    assert_eq!(
        ok(&env.run(&["apply", "-f", &dir])),
        "configmap/a created\n"
    );
    assert_eq!(
        ok(&env.run(&["apply", "-R", "-f", &dir])),
        "configmap/a unchanged\nconfigmap/b created\n"
    );
    let out = ok(&env.run_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: from-stdin}\n"),
    ));
    assert_eq!(out, "namespace/from-stdin created\n");
    let out = ok(&env.run(&["get", "cm", "-o", "name"]));
    assert!(out.contains("configmap/a\nconfigmap/b\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_formats_against_the_server() {
    let env = Env::new().await;
    let cms = env.client().api::<ConfigMap>(Some("default"));
    let mut cm = ConfigMap::with_meta(ObjectMeta::namespaced("default", "settings"));
    cm.metadata.labels.insert("app".into(), "web".into());
    cm.data.insert("k".into(), "v".into());
    cms.create(&cm).await.unwrap();
    let table = ok(&env.run(&["get", "configmaps"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "NAME       DATA   AGE");
    assert!(lines[1].starts_with("settings   1      "), "{table}");
    let labels = ok(&env.run(&["get", "cm", "--show-labels"]));
    assert!(
        labels.lines().next().unwrap().ends_with("AGE   LABELS"),
        "{labels}"
    );
    assert!(labels.contains("app=web"), "{labels}");
    let all = ok(&env.run(&["get", "cm", "-A", "-l", "app=web"]));
    assert!(
        all.starts_with("NAMESPACE   NAME       DATA   AGE\ndefault     settings"),
        "{all}"
    );
    let json = ok(&env.run(&["get", "cm", "settings", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kind"], "ConfigMap");
    assert_eq!(v["data"]["k"], "v");
    assert!(json.starts_with("{\n    \"apiVersion\""), "{json}");
    let yaml = ok(&env.run(&["get", "cm", "-o", "yaml"]));
    assert!(
        yaml.starts_with("apiVersion: v1\nitems:\n- apiVersion: v1\n"),
        "{yaml}"
    );
    assert_eq!(
        ok(&env.run(&["get", "cm/settings", "-o", "name"])),
        "configmap/settings\n"
    );
    assert_eq!(
        ok(&env.run(&["get", "cm", "-o", "jsonpath={.items[*].metadata.name}"])),
        "settings"
    );
    let none = env.run(&["get", "pods"]);
    assert_eq!(stdout(&none), "");
    assert_eq!(stderr(&none), "No resources found in default namespace.\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_prints_changes_as_they_happen() {
    let env = Env::new().await;
    let mut child = env
        .cmd(&["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    // Give the watch time to start, then make changes.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let cms = env.client().api::<ConfigMap>(Some("default"));
    cms.create(&ConfigMap::with_meta(ObjectMeta::namespaced(
        "default", "watched",
    )))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l.clone());
            if l.starts_with("watched") {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|l| l.starts_with("NAME")), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("watched ")), "{seen:?}");
}

async fn deployment_with_status(env: &Env, name: &str, status: serde_json::Value) {
    let api = env.client().api::<Deployment>(Some("default"));
    let f = env.file(
        &format!("{name}.yaml"),
        &WEB_V1.replace("name: web", &format!("name: {name}")),
    );
    ok(&env.run(&["apply", "-f", &f]));
    let mut d = api.get(name).await.unwrap();
    let mut st = status;
    st["observedGeneration"] = serde_json::json!(d.metadata.generation.unwrap_or(1));
    d.status = Some(serde_json::from_value(st).unwrap());
    api.replace_status(name, &d).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_complete_and_deadline_exceeded() {
    let env = Env::new().await;
    deployment_with_status(
        &env,
        "done",
        serde_json::json!({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}),
    )
    .await;
    let out = ok(&env.run(&["rollout", "status", "deployment/done", "--timeout", "20s"]));
    assert!(
        out.ends_with("deployment \"done\" successfully rolled out\n"),
        "{out}"
    );

    deployment_with_status(
        &env,
        "stuck",
        serde_json::json!({"replicas": 1, "updatedReplicas": 0, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
    )
    .await;
    let e = fails(&env.run(&["rollout", "status", "deployment/stuck", "--timeout", "20s"]));
    assert!(
        e.contains("error: deployment \"stuck\" exceeded its progress deadline"),
        "{e}"
    );

    // Not finished: --timeout ends it with kubectl's message.
    deployment_with_status(
        &env,
        "slow",
        serde_json::json!({"replicas": 1, "updatedReplicas": 0}),
    )
    .await;
    let o = env.run(&["rollout", "status", "deploy/slow", "--timeout", "1s"]);
    let e = fails(&o);
    assert!(e.contains("timed out waiting for the condition"), "{e}");
    assert!(
        stdout(&o).contains("0 out of 1 new replicas have been updated"),
        "{}",
        stdout(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_get_is_not_found() {
    let env = Env::new().await;
    let f = env.file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: gone}\ndata: {a: b}\n",
    );
    ok(&env.run(&["apply", "-f", &f]));
    assert_eq!(
        ok(&env.run(&["delete", "-f", &f])),
        "configmap \"gone\" deleted\n"
    );
    let e = fails(&env.run(&["get", "cm", "gone"]));
    assert_eq!(
        e,
        "Error from server (NotFound): configmaps \"gone\" not found\n"
    );
    let e = fails(&env.run(&["delete", "cm", "gone"]));
    assert_eq!(
        e,
        "Error from server (NotFound): configmaps \"gone\" not found\n"
    );
    ok(&env.run(&["delete", "cm", "gone", "--ignore-not-found"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_formats() {
    let env = Env::new().await;
    // 404
    let e = fails(&env.run(&["get", "deployment", "nope"]));
    assert_eq!(
        e,
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );
    // 409
    let f = env.file(
        "ns.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dup}\n",
    );
    ok(&env.run(&["create", "-f", &f]));
    let e = fails(&env.run(&["create", "-f", &f]));
    assert_eq!(
        e,
        format!("Error from server (AlreadyExists): error when creating \"{f}\": configmaps \"dup\" already exists\n")
    );
    // 422: the server's validation (client-side validation off).
    let bad = env.file(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n",
    );
    let e = fails(&env.run(&["apply", "--validate=false", "-f", &bad]));
    assert!(
        e.starts_with("Error from server (Invalid): error when creating"),
        "{e}"
    );
    assert!(e.contains("metadata.name"), "{e}");
    // Unreachable server.
    let o = Command::new(env!("CARGO_BIN_EXE_kapsel"))
        .args(["--server", "http://127.0.0.1:1", "get", "pods"])
        .env("KAPSELCONFIG", env.dir.path().join("config"))
        .output()
        .unwrap();
    let e = fails(&o);
    assert_eq!(
        e,
        "The connection to the server 127.0.0.1:1 was refused - did you specify the right host or port?\n"
    );
    // Unknown type and flag: suggestions, no panic.
    let e = fails(&env.run(&["get", "deploymnt"]));
    assert!(e.contains("Did you mean \"deployments\"?"), "{e}");
    let e = fails(&env.run(&["get", "pods", "--show-lables"]));
    assert!(e.contains("--show-labels"), "{e}");
    let e = fails(&env.run(&["apply", "-f", "/does/not/exist.yaml"]));
    assert_eq!(
        e,
        "error: the path \"/does/not/exist.yaml\" does not exist\n"
    );
}
