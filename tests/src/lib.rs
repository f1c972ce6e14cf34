//! Shared test harness for kapsel integration and end-to-end tests: the workspace binaries,
//! a `kapsel server` process with a temporary data dir, clients, waits, and root gating.
//!
//! Everything a test starts is owned by a guard whose `Drop` stops it and removes what it
//! created (processes, data dirs, cgroups under `kt-…`), also when the test fails.
//!
//! [`multinode`] runs a cluster of several real agents, each node a network namespace on a
//! shared bridge, the control plane on the host.

pub mod local_cluster;
pub mod multinode;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kapsel_api::client::{Api, Client, ClientConfig, ListParams};
use kapsel_api::{Deployment, Node, Pod};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `target/debug` (the profile directory the test binary runs from).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/kapsel_tests-… → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary in target/PROFILE/deps")
        .to_path_buf()
}

/// A workspace binary (`kapsel`, `kapsel-apiserver`, …), built on first use: `cargo nextest
/// run -p kapsel-tests` builds only this package's dependencies as libraries, so the harness
/// runs `cargo build --workspace --bins` (a no-op after scripts/test.sh's prebuild).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        // `--workspace` so the feature set matches scripts/test.sh's prebuild (a no-op then).
        c.current_dir(workspace_root())
            .args(["build", "-q", "--workspace", "--bins"]);
        if profile_dir().file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        match c.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("cargo build of the binaries failed: {s}")),
            Err(e) => Err(format!("cannot run cargo: {e}")),
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    let p = profile_dir().join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// Under `root`: `/www/index.html` ("index-ok") and an executable `#!/bin/sh` CGI script
/// `/www/cgi-bin/sh.cgi` printing "cgi-ran-a-shell" — for tests checking that an httpd under an
/// executable allow-list cannot spawn a shell.
pub fn write_shell_cgi_site(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(root.join("www/cgi-bin")).expect("www");
    std::fs::write(root.join("www/index.html"), "index-ok\n").expect("index");
    let cgi = root.join("www/cgi-bin/sh.cgi");
    std::fs::write(
        &cgi,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho cgi-ran-a-shell\n",
    )
    .expect("cgi");
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).expect("chmod cgi");
}

/// Whether root-only tests can run. Not root: skip (return false), except under `CI=true`,
/// where it panics so the test fails instead of silently passing.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs root, and CI=true forbids skipping");
    }
    eprintln!("{test}: skipped (needs root)");
    false
}

/// Fail (under CI) or skip when a tool is missing.
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: missing tools {missing:?} (scripts/install-deps.sh), and CI=true forbids skipping");
    }
    eprintln!("{test}: skipped (missing {missing:?})");
    false
}

/// Run a command, panicking with its output on failure.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command, ignoring failure (cleanup).
pub fn sh_quiet(cmd: &str) {
    let _ = Command::new("sh")
        .args(["-c", cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A short unique id for names (`kt-<id>…`): fits in an interface name.
pub fn short_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id() % 10_000;
    format!("{pid}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A child process that is SIGTERMed (then SIGKILLed) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).expect("log file");
        let f2 = f.try_clone().expect("log file");
        cmd.stdout(f).stderr(f2).stdin(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| i32::try_from(c.id()).unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn signal(&self, sig: i32) {
        let pid = self.pid();
        if pid > 0 {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait up to `timeout`, then SIGKILL. Returns whether it exited by itself
    /// with status 0.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(i32::try_from(c.id()).unwrap_or(0), libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let v: Vec<&str> = s.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate(Duration::from_secs(10));
        }
    }
}

/// Options of a `kapsel server` process.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    pub hollow: bool,
    pub no_agent: bool,
    pub node_name: Option<String>,
    pub extra: Vec<String>,
}

/// A `kapsel server` process over a data directory.
pub struct Server {
    pub proc: Proc,
    pub data_dir: PathBuf,
    pub url: String,
    pub admin_token: String,
    /// The default join token (`K10<CA hash>::ID.SECRET`) for `kapsel agent --token`.
    pub node_token: String,
    /// The cluster CA (PEM) the server's certificate is signed by.
    pub ca_pem: String,
}

impl Server {
    /// Start `kapsel server` on a free loopback port and wait until it serves.
    pub fn start(data_dir: &Path, opts: &ServerOpts) -> Server {
        Self::start_listen(data_dir, opts, "127.0.0.1:0")
    }

    pub fn start_listen(data_dir: &Path, opts: &ServerOpts, listen: &str) -> Server {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let url_file = data_dir.join("server/url");
        let _ = std::fs::remove_file(&url_file);
        let mut cmd = Command::new(binary("kapsel"));
        cmd.arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen, "--no-kubeconfig"])
            .env("RUST_LOG", "info");
        if opts.hollow {
            cmd.arg("--hollow");
        }
        if opts.no_agent {
            cmd.arg("--no-agent");
        }
        if let Some(n) = &opts.node_name {
            cmd.args(["--node-name", n]);
        }
        if !opts.no_agent && !opts.hollow {
            // A real agent on the host itself: keep the host's network untouched (no kapsel0
            // bridge, routes or nft tables); the multi-node harness tests the pod network in
            // namespaces it owns.
            cmd.arg("--no-pod-network");
        }
        cmd.args(&opts.extra);
        let log = data_dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ));
        let mut proc = Proc::spawn("kapsel server", cmd, log);
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            if let Ok(u) = std::fs::read_to_string(&url_file) {
                if !u.trim().is_empty() {
                    break u.trim().to_string();
                }
            }
            if !proc.alive() || Instant::now() > deadline {
                panic!("kapsel server did not start:\n{}", proc.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let read = |f: &str| {
            std::fs::read_to_string(data_dir.join("server").join(f))
                .expect("token")
                .trim()
                .to_string()
        };
        Server {
            proc,
            data_dir: data_dir.to_path_buf(),
            url,
            admin_token: read("admin-token"),
            node_token: read("node-token"),
            ca_pem: read("pki/ca.crt"),
        }
    }

    /// A client config trusting the cluster CA, without credentials.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(&self.url);
        c.ca_cert_pem = Some(self.ca_pem.clone().into_bytes());
        c
    }

    /// The admin's client (HTTPS, the admin token).
    pub fn client(&self) -> Client {
        Client::from_config(self.client_config().with_token(self.admin_token.clone()))
            .expect("client")
    }

    /// The client config the server wrote (for `kapsel --kubeconfig`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("server/kubeconfig")
    }

    /// Run the `kapsel` CLI against this server; returns stdout, panics on failure.
    pub fn kapsel(&self, args: &[&str]) -> String {
        let out = self.kapsel_output(args);
        assert!(
            out.status.success(),
            "kapsel {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kapsel_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary("kapsel"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .current_dir(workspace_root())
            .output()
            .expect("run kapsel")
    }
}

/// Poll `f` every 200 ms until it returns `Some`, or panic with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn node_ready(n: &Node) -> bool {
    n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

pub fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

pub fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn restart_count(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .map(|s| s.container_statuses.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// Wait until `n` nodes are Ready.
pub async fn wait_nodes_ready(client: &Client, n: usize, timeout: Duration) -> Vec<Node> {
    let nodes: Api<Node> = client.api(None);
    eventually(timeout, &format!("{n} nodes Ready"), || {
        let nodes = nodes.clone();
        async move {
            let l = nodes.list(&ListParams::default()).await.ok()?;
            let ready: Vec<Node> = l.items.into_iter().filter(node_ready).collect();
            (ready.len() >= n).then_some(ready)
        }
    })
    .await
}

/// Wait until the Deployment has `replicas` updated, ready and available replicas and no
/// others, and its pods (matching `selector`) are exactly that many, all Ready.
pub async fn wait_deployment_ready(
    client: &Client,
    ns: &str,
    name: &str,
    selector: &str,
    timeout: Duration,
) -> Vec<Pod> {
    let deps: Api<Deployment> = client.api(Some(ns));
    let pods: Api<Pod> = client.api(Some(ns));
    eventually(timeout, &format!("deployment {ns}/{name} ready"), || {
        let (deps, pods) = (deps.clone(), pods.clone());
        async move {
            let d = deps.get(name).await.ok()?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let st = d.status.as_ref()?;
            let observed =
                st.observed_generation >= d.metadata.generation && st.observed_generation.is_some();
            let ok = observed
                && st.replicas == Some(want)
                && st.updated_replicas == Some(want)
                && st.ready_replicas == Some(want)
                && st.available_replicas == Some(want);
            if !ok {
                return None;
            }
            let l = pods
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            let live: Vec<Pod> = l
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            (live.len() == usize::try_from(want).unwrap_or(0) && live.iter().all(pod_ready))
                .then_some(live)
        }
    })
    .await
}

/// A temporary directory removed on drop (also for root-owned content).
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}
