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
        // Not the variables cargo/nextest set for this test crate: build scripts that watch
        // them (ring's `rerun-if-env-changed=CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, …) would
        // see another crate's values than at the prebuild, rerun, and rebuild every binary —
        // in CI once per test binary that builds, minutes of both cores each, under the tests.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(is_crate_env) {
                c.env_remove(&k);
            }
        }
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

/// Whether `name` is one of the variables cargo sets for a crate's own tests, binaries and
/// build scripts (not a setting of cargo itself, like `CARGO_HOME` or `CARGO_INCREMENTAL`).
pub fn is_crate_env(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_BIN_",
        "CARGO_CFG_",
        "CARGO_FEATURE_",
    ];
    const NAMES: &[&str] = &[
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
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
    out_ok(cmd, &out)
}

/// stdout of a command that succeeded; else a panic naming `what`, with its status and output.
pub fn out_ok(what: &str, o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "{what}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
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
        out_ok(&format!("kapsel {args:?}"), &self.kapsel_output(args))
    }

    /// Run the `kapsel` CLI against this server and return its output whatever its exit
    /// status. A call that outlives [`cli_deadline`] is killed and fails the test with what it
    /// printed, where it was stuck and the tail of the server's log.
    pub fn kapsel_output(&self, args: &[&str]) -> std::process::Output {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        kapsel_cli(&self.kubeconfig(), &args)
            .unwrap_or_else(|t| panic!("{}", t.report(&[("kapsel server", &self.proc)])))
    }
}

/// How long a harness CLI call may run before it is killed: 90 s (the CLI's own request
/// timeout is 60 s, so a server that does not answer shows as the CLI's error first), or its
/// `--timeout` plus 60 s for commands that wait (`rollout status --timeout 120s`).
pub fn cli_deadline(args: &[String]) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(90);
    let flag = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--timeout=")
            .or_else(|| (a == "--timeout").then(|| args.get(i + 1).map(String::as_str))?)
    });
    let Some(v) = flag else {
        return DEFAULT;
    };
    let v = v.trim();
    let secs = if let Some(m) = v.strip_suffix('m') {
        m.parse::<u64>().ok().map(|m| m * 60)
    } else {
        v.strip_suffix('s').unwrap_or(v).parse::<u64>().ok()
    };
    match secs {
        Some(s) => DEFAULT.max(Duration::from_secs(s + 60)),
        None => DEFAULT,
    }
}

/// `kapsel --kubeconfig <kubeconfig> <args>` (from the workspace root) within
/// [`cli_deadline`].
pub fn kapsel_cli(kubeconfig: &Path, args: &[String]) -> Result<std::process::Output, TimedOut> {
    let mut cmd = Command::new(binary("kapsel"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .current_dir(workspace_root());
    output_within(&mut cmd, cli_deadline(args))
}

/// A command that did not end within its deadline (it has been killed).
#[derive(Debug)]
pub struct TimedOut {
    /// The command line.
    pub command: String,
    pub deadline: Duration,
    /// What it printed before it was killed.
    pub stdout: String,
    pub stderr: String,
    /// Where it was stuck: process and thread states, kernel stacks, its TCP sockets.
    pub diagnosis: String,
}

impl TimedOut {
    /// A panic message: the command, what it printed, where it was stuck, and the last lines
    /// of the logs of the given processes (the server, agents).
    pub fn report(&self, logs: &[(&str, &Proc)]) -> String {
        let mut s = format!(
            "{} did not end within {:?} (killed)\n--- its stdout:\n{}\n--- its stderr:\n{}\n--- where it was stuck:\n{}",
            self.command, self.deadline, self.stdout, self.stderr, self.diagnosis
        );
        for (name, p) in logs {
            s.push_str(&format!(
                "\n--- last 60 lines of the {name} log ({}):\n{}",
                p.log.display(),
                p.log_tail(60)
            ));
        }
        s
    }
}

/// A process's state from /proc: per thread its name, state, wait channel and kernel stack,
/// and its TCP sockets (`ss`), for a command that hangs.
pub fn diagnose_process(pid: u32) -> String {
    let read = |p: String| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut s = String::new();
    for l in read(format!("/proc/{pid}/status"))
        .lines()
        .filter(|l| l.starts_with("State:") || l.starts_with("SigPnd") || l.starts_with("ShdPnd"))
    {
        s.push_str(&format!("{l}\n"));
    }
    s.push_str(&format!(
        "cgroup: {}\n",
        read(format!("/proc/{pid}/cgroup"))
    ));
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    for tid in tids {
        let t = format!("/proc/{pid}/task/{tid}");
        let stat = read(format!("{t}/stat"));
        // the state is the field after the parenthesised name
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        s.push_str(&format!(
            "thread {tid} {:?} state {state} wchan {}\n",
            read(format!("{t}/comm")),
            read(format!("{t}/wchan"))
        ));
        for l in read(format!("{t}/stack")).lines().take(12) {
            s.push_str(&format!("    {l}\n"));
        }
    }
    if let Ok(o) = Command::new("ss").args(["-tnpi"]).output() {
        let out = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = out.lines().collect();
        let needle = format!("pid={pid},");
        for (i, l) in lines.iter().enumerate() {
            if l.contains(&needle) {
                s.push_str(&format!("socket {}\n", l.trim()));
                if let Some(info) = lines
                    .get(i + 1)
                    .filter(|n| n.starts_with(char::is_whitespace))
                {
                    s.push_str(&format!("    {}\n", info.trim()));
                }
            }
        }
    }
    s
}

/// Run `cmd` (stdin null, stdout and stderr captured) and wait for it at most `deadline`. On
/// expiry it is diagnosed ([`diagnose_process`]), SIGKILLed and reaped, and what it printed so
/// far comes back in the error. Unlike `Command::output`, a process that exits while
/// something it started still holds its stdout or stderr does not hang the caller either.
pub fn output_within(
    cmd: &mut Command,
    deadline: Duration,
) -> Result<std::process::Output, TimedOut> {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let command = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{command}: {e}"));
    // Readers that keep what has arrived so far (for the report on expiry).
    let reader = |r: Option<Box<dyn Read + Send>>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (b, (tx, rx)) = (buf.clone(), std::sync::mpsc::channel::<()>());
        if let Some(mut r) = r {
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match r.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => b
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = tx.send(());
            });
        }
        (buf, rx)
    };
    let (out, out_done) = reader(child.stdout.take().map(|r| Box::new(r) as _));
    let (err, err_done) = reader(child.stderr.take().map(|r| Box::new(r) as _));
    let text = |b: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&b.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            .into_owned()
    };
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(e) => panic!("{command}: wait: {e}"),
        }
        if start.elapsed() >= deadline {
            break None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
    };
    let Some(status) = status else {
        let diagnosis = diagnose_process(child.id());
        let _ = child.kill();
        let _ = child.wait();
        // the pipes close with the process (unless something it started holds them)
        let _ = out_done.recv_timeout(Duration::from_secs(1));
        let _ = err_done.recv_timeout(Duration::from_secs(1));
        return Err(TimedOut {
            command,
            deadline,
            stdout: text(&out),
            stderr: text(&err),
            diagnosis,
        });
    };
    let left = deadline.saturating_sub(start.elapsed()) + Duration::from_secs(5);
    let open = |rx: &std::sync::mpsc::Receiver<()>| {
        matches!(
            rx.recv_timeout(left),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        )
    };
    if open(&out_done) || open(&err_done) {
        return Err(TimedOut {
            command,
            deadline,
            stdout: text(&out),
            stderr: text(&err),
            diagnosis: format!(
                "it exited ({status}) but its stdout or stderr stayed open: a process it started \
                 still holds them"
            ),
        });
    }
    let take = |b: &Arc<Mutex<Vec<u8>>>| {
        std::mem::take(&mut *b.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    };
    let (stdout, stderr) = (take(&out), take(&err));
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_deadline_covers_the_commands_own_timeout() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], u64)] = &[
            (&["scale", "deployment/x", "--replicas", "8"], 90),
            (
                &["rollout", "status", "deployment/x", "--timeout", "120s"],
                180,
            ),
            (&["rollout", "status", "deployment/x", "--timeout=3m"], 240),
            (&["delete", "pod", "x", "--timeout", "10s"], 90),
            (&["delete", "pod", "x", "--timeout", "soon"], 90),
            (&["get", "pods", "--timeout"], 90),
        ];
        for (args, want) in cases {
            assert_eq!(
                cli_deadline(&s(args)),
                Duration::from_secs(*want),
                "{args:?}"
            );
        }
    }

    #[test]
    fn crate_env_is_what_cargo_sets_for_a_crate_not_cargo_settings() {
        for (name, want) in [
            ("CARGO_PKG_NAME", true),
            ("CARGO_PKG_VERSION_MAJOR", true),
            ("CARGO_MANIFEST_DIR", true),
            ("CARGO_MANIFEST_LINKS", true),
            ("CARGO_BIN_EXE_kapsel", true),
            ("CARGO_CRATE_NAME", true),
            ("CARGO_PRIMARY_PACKAGE", true),
            ("CARGO_TARGET_TMPDIR", true),
            ("OUT_DIR", true),
            ("CARGO", false),
            ("CARGO_HOME", false),
            ("CARGO_INCREMENTAL", false),
            ("CARGO_TARGET_DIR", false),
            ("CARGO_BUILD_JOBS", false),
            ("PATH", false),
        ] {
            assert_eq!(is_crate_env(name), want, "{name}");
        }
    }

    #[test]
    fn output_within_returns_the_output_of_a_quick_command() {
        let o = output_within(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(30),
        )
        .expect("ends in time");
        assert_eq!(o.status.code(), Some(3));
        assert_eq!(o.stdout, b"out\n");
        assert_eq!(o.stderr, b"err\n");
    }

    #[test]
    fn output_within_kills_a_hanging_command_and_keeps_what_it_printed() {
        let t0 = Instant::now();
        let t = output_within(
            Command::new("sh").args(["-c", "echo started; echo working >&2; exec sleep 60"]),
            Duration::from_secs(1),
        )
        .expect_err("killed at its deadline");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        assert_eq!(t.stdout, "started\n");
        assert_eq!(t.stderr, "working\n");
        assert!(t.diagnosis.contains("State:"), "{}", t.diagnosis);
        assert!(t.command.contains("sleep 60"), "{}", t.command);
    }

    #[test]
    fn output_within_does_not_wait_for_a_grandchild_holding_the_pipes() {
        let t0 = Instant::now();
        let t = output_within(
            Command::new("sh").args(["-c", "echo parent; sleep 30 & exit 0"]),
            Duration::from_secs(1),
        )
        .expect_err("the pipes stay open");
        assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
        assert_eq!(t.stdout, "parent\n");
        assert!(t.diagnosis.contains("stayed open"), "{}", t.diagnosis);
    }
}
