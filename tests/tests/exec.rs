//! `kapsel exec` end to end through a real `kapsel server` with its local agent: CLI → API
//! server (websocket channel protocol, `create pods/exec`, audit) → the agent's outbound relay
//! stream → `Runtime::exec` in the container's namespaces, cgroup and Landlock domain.
//!
//! The pods run Debian's busybox-static as image `kt.local/exec:v1` (busybox with a few
//! applet links, `/bin/httpd` a separate copy of it, a `/www` with an index and a `#!/bin/sh`
//! CGI script). The namespace-label test runs on a hollow node (no root needed: the refusal
//! happens before the agent is asked).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kapsel_api::client::{Api, Client, Patch};
use kapsel_api::{Namespace, Pod};
use kapsel_tests::local_cluster::{rootfs, HostGuard};
use kapsel_tests::*;

const IMAGE: &str = "kt.local/exec:v1";

/// A server with a real agent (or a hollow one), its audit log; dropped in field order:
/// the server first, then the host leftovers, then the directory.
struct Cluster {
    server: Server,
    _guard: Option<HostGuard>,
    audit: PathBuf,
    run: PathBuf,
    _dir: Removed,
}

/// The test's directory, removed after the runtime's last writes: a container's supervisor
/// may still write its exit record just after the guard killed it.
struct Removed(tempfile::TempDir);

impl Drop for Removed {
    fn drop(&mut self) {
        for _ in 0..50 {
            match std::fs::remove_dir_all(self.0.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => return,
            }
        }
    }
}

/// The busybox image of these tests.
fn exec_rootfs(dir: &Path) -> PathBuf {
    let root = rootfs(dir);
    for applet in ["echo", "cat", "true", "false", "id", "printf", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet");
    }
    // A file of its own: an allow-list naming /bin/httpd must not allow busybox (and sh).
    std::fs::copy(root.join("bin/busybox"), root.join("bin/httpd")).expect("httpd");
    write_shell_cgi_site(&root);
    root
}

fn start(prefix: &str, hollow: bool) -> Cluster {
    let dir = tempdir(prefix);
    let id = short_id();
    let audit = dir.path().join("audit/audit.log");
    let run = dir.path().join("run");
    let node = format!("kt-exec-{id}");
    let mut extra = vec!["--audit-log-path".into(), audit.display().to_string()];
    let guard = if hollow {
        None
    } else {
        let root = exec_rootfs(dir.path());
        extra.extend([
            "--runtime-dir".into(),
            run.display().to_string(),
            "--cgroup-parent".into(),
            node.clone(),
            "--image-dir".into(),
            format!("{IMAGE}={}", root.display()),
        ]);
        Some(HostGuard {
            cgroup: node.clone(),
            dir: dir.path().to_path_buf(),
        })
    };
    let server = Server::start(
        &dir.path().join("data"),
        &ServerOpts {
            hollow,
            node_name: Some(node),
            extra,
            ..Default::default()
        },
    );
    Cluster {
        server,
        _guard: guard,
        audit,
        run,
        _dir: Removed(dir),
    }
}

async fn running_pod(client: &Client, ns: &str, name: &str, extra: serde_json::Value) -> Pod {
    let pods: Api<Pod> = client.api(Some(ns));
    let mut pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": IMAGE, "command": ["/bin/busybox", "sleep", "3600"]}],
        },
    });
    merge(&mut pod, extra);
    let pod: Pod = serde_json::from_value(pod).expect("pod");
    pods.create(&pod).await.expect("create pod");
    eventually(
        Duration::from_secs(90),
        &format!("pod {ns}/{name} Running and Ready"),
        || {
            let pods = pods.clone();
            let name = name.to_string();
            async move {
                let p = pods.get(&name).await.ok()?;
                (pod_phase(&p) == "Running" && pod_ready(&p)).then_some(p)
            }
        },
    )
    .await
}

fn merge_into(mut a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    merge(&mut a, b);
    a
}

/// JSON merge: objects key by key, lists of objects (`containers`) item by item, anything
/// else replaced.
fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    if let (serde_json::Value::Array(a), serde_json::Value::Array(b)) = (&mut *a, &b) {
        if !b.iter().all(serde_json::Value::is_object) {
            *a = b.clone();
            return;
        }
        for (i, v) in b.iter().enumerate() {
            match a.get_mut(i) {
                Some(x) => merge(x, v.clone()),
                None => a.push(v.clone()),
            }
        }
        return;
    }
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// `kapsel exec …` with `stdin` on its standard input.
fn kapsel_exec(server: &Server, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(binary("kapsel"))
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kapsel");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    finish(child, &format!("kapsel {args:?}"))
}

/// Wait for a child we started, at most a minute: a hung exec fails the test with its name.
fn finish(child: std::process::Child, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect(what),
        Err(_) => {
            // SAFETY: kill(2) of our own child, still unreaped (its waiter thread holds it).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what} did not finish within 60 s");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The audit log's lines.
fn audit_entries(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_in_the_container_propagates_exit_codes_and_is_audited() {
    let test = "exec_runs_in_the_container_propagates_exit_codes_and_is_audited";
    if !require_root(test) || !require_tools(test, &["busybox", "umount"]) {
        return;
    }
    let c = start("kt-exec-run-", false);
    let client = c.server.client();
    wait_nodes_ready(&client, 1, Duration::from_secs(60)).await;
    running_pod(&client, "default", "shell", serde_json::json!({})).await;
    let exec = |args: &[&str], stdin: &[u8]| {
        let mut a = vec!["exec"];
        a.extend_from_slice(args);
        kapsel_exec(&c.server, &a, stdin)
    };

    // output and a zero exit
    let out = exec(&["shell", "--", "echo", "hi"], b"");
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "hi\n"),
        "{out:?}"
    );
    // the container's pid namespace: pid 1 is the container's command
    let out = exec(&["shell", "-c", "c", "--", "cat", "/proc/1/cmdline"], b"");
    assert_eq!(
        text(&out.stdout).replace('\0', " ").trim(),
        "/bin/busybox sleep 3600",
        "{out:?}"
    );
    // stdout and stderr apart, the exit code becomes kapsel's
    let out = exec(
        &["shell", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(text(&out.stdout), "out\n");
    let err = text(&out.stderr);
    assert!(
        err.starts_with("err\n") && err.contains("command terminated with exit code 3"),
        "{err}"
    );
    // stdin (-i), to its end
    let out = exec(
        &["-i", "shell", "--", "sh", "-c", "cat; echo done"],
        b"line one\nline two\n",
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "line one\nline two\ndone\n"),
        "{out:?}"
    );
    // a command that is not there: 127, the reason on stderr
    let out = exec(&["shell", "--", "no-such-command"], b"");
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    // refused before running: a container the pod does not have
    let out = exec(&["shell", "-c", "nope", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr).trim(),
        "Error from server (BadRequest): container nope is not valid for pod shell"
    );
    let out = exec(&["missing", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).starts_with("Error from server (NotFound): "),
        "{out:?}"
    );

    // kubectl speaks the same protocol (websocket v5 since 1.30), when installed
    let kubectl = Path::new("/opt/kapsel-venv/bin/kubectl");
    if kubectl.exists() {
        let child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(c.server.kubeconfig())
            .args([
                "exec",
                "shell",
                "--",
                "sh",
                "-c",
                "echo from-kubectl; exit 4",
            ])
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        let out = finish(child, "kubectl exec");
        assert_eq!(out.status.code(), Some(4), "kubectl exec: {out:?}");
        assert_eq!(text(&out.stdout), "from-kubectl\n", "{out:?}");
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(c.server.kubeconfig())
            .args(["exec", "-i", "shell", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("KUBECONFIG")
            .spawn()
            .expect("kubectl -i");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(b"piped to kubectl\n").expect("write");
        drop(input);
        let out = finish(child, "kubectl exec -i");
        assert_eq!(
            (out.status.code(), text(&out.stdout).as_str()),
            (Some(0), "piped to kubectl\n"),
            "{out:?}"
        );
    } else {
        eprintln!("{test}: kubectl 1.37 not installed, kubectl exec not exercised");
    }

    // audited: who, which pod, which container, which command
    let entries = audit_entries(&c.audit);
    let execs: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["subresource"] == "exec")
        .collect();
    let found = execs.iter().find(|e| {
        e["requestURI"].as_str().is_some_and(|u| {
            u.starts_with("/api/v1/namespaces/default/pods/shell/exec?")
                && u.contains("command=cat&command=%2Fproc%2F1%2Fcmdline")
                && u.contains("container=c")
        })
    });
    let e = found.unwrap_or_else(|| panic!("no audit line of the exec: {execs:#?}"));
    assert_eq!(e["user"], "system:admin", "{e}");
    assert_eq!(e["verb"], "create", "{e}");
    assert_eq!(e["resource"], "pods", "{e}");
    assert_eq!(e["namespace"], "default", "{e}");
    assert_eq!(e["name"], "shell", "{e}");
    assert_eq!(e["code"], 101, "{e}");
    // every exec made above is there (kubectl's too)
    assert!(execs.len() >= 7, "{execs:#?}");
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
    text(&out.stdout)
}

async fn serving(netns: &Path) -> String {
    eventually(Duration::from_secs(30), "httpd serving", || {
        let netns = netns.to_path_buf();
        async move {
            let r = http_get(&netns, "/");
            r.starts_with("HTTP/1.1 200").then_some(r)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_httpd_are_bound_by_an_httpd_only_allow_list() {
    let test = "exec_and_httpd_are_bound_by_an_httpd_only_allow_list";
    if !require_root(test) || !require_tools(test, &["busybox", "umount", "nsenter"]) {
        return;
    }
    let c = start("kt-exec-ll-", false);
    let client = c.server.client();
    wait_nodes_ready(&client, 1, Duration::from_secs(60)).await;
    let httpd = serde_json::json!({"spec": {"containers": [{
        "name": "c", "image": IMAGE,
        "command": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
    }]}});
    let mut locked = httpd.clone();
    merge(
        &mut locked,
        serde_json::json!({"metadata": {"annotations": {"kapsel.dev/allowed-executables": "/bin/httpd"}}}),
    );
    let web = running_pod(&client, "default", "web", locked.clone()).await;
    // Exec probes run confined too: a shell probe fails in the locked pod, while the same
    // probe passes in the same image without a profile (the control).
    let probe = serde_json::json!({"spec": {"containers": [{"name": "c", "readinessProbe": {
        "exec": {"command": ["/bin/sh", "-c", "true"]}, "periodSeconds": 1,
    }}]}});
    let mut probed = locked;
    merge(&mut probed, probe.clone());
    let mut open = httpd;
    merge(&mut open, probe);
    let pods: Api<Pod> = client.api(Some("default"));
    let p: Pod = serde_json::from_value(merge_into(
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probed"}}),
        probed,
    ))
    .expect("pod");
    pods.create(&p).await.expect("create probed");
    let open = running_pod(&client, "default", "open", open).await;
    let events: Api<kapsel_api::Event> = client.api(Some("default"));
    let denied = eventually(
        Duration::from_secs(60),
        "an Unhealthy event of the probed pod",
        || {
            let events = events.clone();
            async move {
                let l = events.list(&Default::default()).await.ok()?;
                l.items
                    .into_iter()
                    .filter_map(|e| serde_json::to_value(e).ok())
                    .find(|e| e["involvedObject"]["name"] == "probed" && e["reason"] == "Unhealthy")
            }
        },
    )
    .await;
    let msg = denied["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("Readiness probe failed: ") && msg.contains("Permission denied"),
        "{denied}"
    );
    let p = pods.get("probed").await.expect("probed");
    assert!(pod_phase(&p) == "Running" && !pod_ready(&p), "{p:?}");
    let netns = |p: &Pod| {
        c.run
            .join("sandboxes")
            .join(format!("p-{}", p.metadata.uid.as_deref().unwrap_or("")))
            .join("net")
    };

    // the container serves
    let page = serving(&netns(&web)).await;
    assert!(page.ends_with("\r\n\r\nindex-ok\n"), "{page}");
    // the httpd cannot spawn a shell (its CGI script), where the unrestricted one can
    let cgi = http_get(&netns(&web), "/cgi-bin/sh.cgi");
    assert!(
        cgi.starts_with("HTTP/1.1 404") && !cgi.contains("cgi-ran-a-shell"),
        "{cgi}"
    );
    serving(&netns(&open)).await;
    let cgi = http_get(&netns(&open), "/cgi-bin/sh.cgi");
    assert!(
        cgi.starts_with("HTTP/1.1 200") && cgi.ends_with("\n\ncgi-ran-a-shell\n"),
        "{cgi}"
    );

    // kapsel exec of a shell: permission denied (Landlock's EACCES), nothing ran
    let out = kapsel_exec(
        &c.server,
        &["exec", "web", "--", "sh", "-c", "echo should-not-run"],
        b"",
    );
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(!text(&out.stdout).contains("should-not-run"), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("Permission denied") && err.contains("command terminated with exit code 126"),
        "{err}"
    );
    // nor busybox itself under another name
    let out = kapsel_exec(
        &c.server,
        &["exec", "web", "--", "/bin/busybox", "true"],
        b"",
    );
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    // what the container may run, exec may run too
    let out = kapsel_exec(
        &c.server,
        &["exec", "web", "--", "/bin/httpd", "-e", "<b>"],
        b"",
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "&#60;b&#62;"),
        "{out:?}"
    );
    // and the unrestricted pod runs the same shell
    let out = kapsel_exec(
        &c.server,
        &["exec", "open", "--", "sh", "-c", "echo ran"],
        b"",
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "ran\n"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_is_refused_with_403_in_a_namespace_labelled_deny() {
    let c = start("kt-exec-deny-", true);
    let client = c.server.client();
    wait_nodes_ready(&client, 1, Duration::from_secs(60)).await;
    let nss: Api<Namespace> = client.api(None);
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "kt-locked", "labels": {"kapsel.dev/exec": "deny"}},
    }))
    .expect("namespace");
    nss.create(&ns).await.expect("create namespace");
    running_pod(&client, "kt-locked", "locked", serde_json::json!({})).await;

    let out = kapsel_exec(
        &c.server,
        &["-n", "kt-locked", "exec", "locked", "--", "true"],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr).trim(),
        "Error from server (Forbidden): pods \"locked\" is forbidden: exec is refused in namespace \"kt-locked\" (label kapsel.dev/exec=deny)"
    );
    // the raw answer: 403 with a metav1.Status
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(c.server.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = http
        .post(format!(
            "{}/api/v1/namespaces/kt-locked/pods/locked/exec?command=true&stdout=true",
            c.server.url
        ))
        .bearer_auth(&c.server.admin_token)
        .send()
        .await
        .expect("exec request");
    assert_eq!(resp.status().as_u16(), 403);
    let status: serde_json::Value = resp.json().await.expect("Status");
    assert_eq!(
        (
            &status["kind"],
            &status["status"],
            &status["reason"],
            &status["code"]
        ),
        (
            &serde_json::json!("Status"),
            &serde_json::json!("Failure"),
            &serde_json::json!("Forbidden"),
            &serde_json::json!(403)
        ),
        "{status}"
    );
    // the refusal is audited too
    let refused = audit_entries(&c.audit)
        .into_iter()
        .any(|e| e["subresource"] == "exec" && e["namespace"] == "kt-locked" && e["code"] == 403);
    assert!(refused, "no audit line of the refused exec");

    // the label is the cause: allow it and exec runs (the hollow runtime echoes the argv)
    nss.patch(
        "kt-locked",
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"kapsel.dev/exec": "allow"}}})),
    )
    .await
    .expect("relabel");
    let out = kapsel_exec(
        &c.server,
        &[
            "-n",
            "kt-locked",
            "exec",
            "locked",
            "--",
            "echo",
            "now allowed",
        ],
        b"",
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "echo now allowed\n"),
        "{out:?}"
    );
    // elsewhere (no label) exec is not refused
    running_pod(&client, "default", "free", serde_json::json!({})).await;
    let out = kapsel_exec(&c.server, &["exec", "free", "--", "false"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("command terminated with exit code 1"),
        "{out:?}"
    );
}
