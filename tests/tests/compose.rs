//! docker-compose.yml end to end: a private dockerd (its own data and exec roots, socket, no
//! iptables/masquerade/ip_forward changes, no default bridge), the compose image built from this
//! workspace's `kapsel` binary (scripts/compose-context.sh, nothing pulled), `docker-compose up`
//! of the server and 3 agents, examples/deployment.yaml applied through the server container,
//! and, from a watch on the pods, the 3 replicas Running and Ready on at least 2 nodes. Then
//! `docker-compose down -v`. The guard stops dockerd and removes everything it made, also when
//! the test fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kapsel_api::client::{Api, Client, ClientConfig, ListParams};
use kapsel_api::meta::WatchEventType;
use kapsel_api::Pod;
use kapsel_tests::{
    binary, out_ok, pod_phase, pod_ready, require_root, require_tools, sh_quiet, short_id,
    wait_nodes_ready, workspace_root, Proc,
};

const DOCKER: &str = "/usr/bin/docker";

/// A dockerd of the test's own and the compose project on it.
struct Compose {
    dockerd: Option<Proc>,
    sock: String,
    data_root: PathBuf,
    exec_root: PathBuf,
    project: String,
    /// compose network bridges seen after `up` (removed if dockerd could not remove them)
    bridges: Vec<String>,
}

impl Compose {
    fn start(id: &str) -> Compose {
        let sock = format!("/run/kt-docker-{id}.sock");
        // The owner file names this test process (and later the compose bridges), so that a later
        // run can sweep what a run killed by a timeout left behind (see sweep_dead_dockerds).
        std::fs::write(
            format!("/run/kt-docker-{id}.owner"),
            format!("{}\n", std::process::id()),
        )
        .expect("owner file");
        let data_root = PathBuf::from(format!("/var/lib/kt-docker-{id}"));
        let exec_root = PathBuf::from(format!("/run/kt-docker-{id}"));
        let mut cmd = Command::new("dockerd");
        cmd.args([
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--bridge=none",
            "--log-level=warn",
        ])
        .arg(format!("--data-root={}", data_root.display()))
        .arg(format!("--exec-root={}", exec_root.display()))
        .arg(format!("--pidfile=/run/kt-docker-{id}.pid"))
        .arg(format!("--host=unix://{sock}"));
        if let Some(missing) = missing_capabilities() {
            // Privileged containers get every capability the kernel knows; where our bounding
            // set lacks some (a sandboxed dev VM), runc cannot grant them: a wrapper drops them.
            eprintln!("capabilities missing from the bounding set: {missing}; runc wrapper used");
            let wrapper = workspace_root().join("tests/scripts/runc-bounded-caps.sh");
            cmd.arg(format!("--add-runtime=kt-runc={}", wrapper.display()))
                .arg("--default-runtime=kt-runc");
        }
        // If nextest kills the test (timeout), Drop does not run: dockerd then gets SIGTERM
        // from the kernel instead of living on; the next run sweeps its roots.
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let log = std::env::temp_dir().join(format!("kt-dockerd-{id}.log"));
        let mut c = Compose {
            dockerd: Some(Proc::spawn("dockerd", cmd, log)),
            sock,
            data_root,
            exec_root,
            project: format!("ktcompose{id}"),
            bridges: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if c.docker(&["info", "--format", "{{.ServerVersion}}"])
                .status
                .success()
            {
                break;
            }
            let d = c.dockerd.as_mut().expect("dockerd");
            assert!(
                d.alive() && Instant::now() < deadline,
                "dockerd did not start:\n{}",
                d.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    fn host(&self) -> String {
        format!("unix://{}", self.sock)
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .args(args)
            .env("DOCKER_HOST", self.host())
            .output()
            .expect("run docker")
    }

    fn compose_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker-compose");
        c.arg("--project-name")
            .arg(&self.project)
            .arg("--file")
            .arg(workspace_root().join("docker-compose.yml"))
            .args(args)
            .current_dir(workspace_root())
            .env("DOCKER_HOST", self.host())
            .env("COMPOSE_INTERACTIVE_NO_CLI", "1");
        c
    }

    /// Run docker-compose, panicking with its output on failure.
    fn compose(&self, args: &[&str]) -> String {
        let out = self.compose_cmd(args).output().expect("run docker-compose");
        out_ok(&format!("docker-compose {args:?}"), &out)
    }

    /// `docker-compose exec -T SERVICE cmd…` with `input` on stdin.
    fn exec(&self, service: &str, cmd: &[&str], input: Option<&Path>) -> Output {
        // `docker exec` itself: docker-compose 1.29's `exec -T` never ended with a file on stdin.
        let cid = self.compose(&["ps", "--quiet", service]).trim().to_string();
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_HOST", self.host()).arg("exec");
        if input.is_some() {
            c.arg("-i");
        }
        c.arg(&cid).args(cmd);
        c.stdin(match input {
            Some(p) => Stdio::from(std::fs::File::open(p).expect("input file")),
            None => Stdio::null(),
        });
        c.output().expect("docker-compose exec")
    }

    fn logs(&self) -> String {
        let out = self
            .compose_cmd(&["logs", "--no-color", "--tail", "40"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self
            .compose_cmd(&["down", "--volumes", "--remove-orphans", "--timeout", "10"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut d) = self.dockerd.take() {
            d.terminate(Duration::from_secs(20));
        }
        // Shims of containers that outlived dockerd (only if `down` failed): ours are the ones
        // whose command line names our exec root.
        let root = self.exec_root.display().to_string();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&root) {
                    // SAFETY: kill(2) of a process started by our dockerd.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        for b in &self.bridges {
            sh_quiet(&format!("ip link del {b}"));
        }
        // unmount whatever dockerd left mounted under its roots, deepest first, then remove them
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| {
                m.starts_with(&*self.data_root.to_string_lossy())
                    || m.starts_with(&*self.exec_root.to_string_lossy())
            })
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            sh_quiet(&format!("umount -l '{m}'"));
        }
        let _ = std::fs::remove_dir_all(&self.data_root);
        let _ = std::fs::remove_dir_all(&self.exec_root);
        let _ = std::fs::remove_file(&self.sock);
        let _ = std::fs::remove_file(format!("{}.owner", self.exec_root.display()));
    }
}

/// Names of the capabilities (≤ cap_last_cap) missing from this process' bounding set.
fn missing_capabilities() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let missing: Vec<String> = (0..=last)
        .filter(|i| bnd & (1u64 << i) == 0)
        .map(|i| i.to_string())
        .collect();
    (!missing.is_empty()).then(|| format!("capability numbers {}", missing.join(",")))
}

/// Remove what an earlier run killed by a timeout (SIGKILL skips Drop) left behind: roots of
/// dockerds that are no longer running.
fn sweep_dead_dockerds() {
    let Ok(dir) = std::fs::read_dir("/run") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix("kt-docker-")
            .and_then(|n| n.strip_suffix(".owner"))
        else {
            continue;
        };
        let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
        let alive = owner
            .lines()
            .next()
            .and_then(|p| p.trim().parse::<i32>().ok())
            // SAFETY: kill(pid, 0) only checks for existence.
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if alive {
            continue;
        }
        eprintln!("removing the leftovers of dead dockerd kt-docker-{id}");
        sh_quiet(&format!(
            "grep -oE ' (/var/lib|/run)/kt-docker-{id}[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l"
        ));
        let _ = std::fs::remove_dir_all(format!("/var/lib/kt-docker-{id}"));
        let _ = std::fs::remove_dir_all(format!("/run/kt-docker-{id}"));
        let _ = std::fs::remove_file(format!("/run/kt-docker-{id}.sock"));
        let _ = std::fs::remove_file(format!("/run/kt-docker-{id}.pid"));
        for bridge in owner.lines().skip(1).filter(|b| b.starts_with("br-")) {
            sh_quiet(&format!("ip link del {bridge}"));
        }
        let _ = std::fs::remove_file(e.path());
    }
}

fn output_text(o: &Output) -> String {
    format!(
        "{}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Poll (startup only: the server's files appear once it has started) a `cat` in the server.
fn read_server_file(c: &Compose, path: &str, deadline: Instant) -> String {
    loop {
        let o = c.exec("server", &["cat", path], None);
        if o.status.success() && !o.stdout.is_empty() {
            return String::from_utf8_lossy(&o.stdout).trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not appear in the server container: {}\n{}",
            output_text(&o),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_spreads_the_example_deployment_over_the_agents() {
    let test = "compose_cluster_spreads_the_example_deployment_over_the_agents";
    if !require_root(test)
        || !require_tools(
            test,
            &[
                "dockerd",
                DOCKER,
                "docker-compose",
                "jq",
                "objcopy",
                "umoci",
                "skopeo",
                "busybox",
            ],
        )
    {
        return;
    }
    let t0 = Instant::now();
    sweep_dead_dockerds();
    // the image is built from the profile the tests run with (debug under scripts/test.sh)
    let kapsel = binary("kapsel");
    let profile = kapsel
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .expect("profile dir");
    let ctx = Command::new(workspace_root().join("scripts/compose-context.sh"))
        .arg(&profile)
        .env("KAPSEL_COMPOSE_BUILD", "0")
        .output()
        .expect("compose-context.sh");
    assert!(
        ctx.status.success(),
        "compose-context.sh: {}",
        output_text(&ctx)
    );
    eprintln!("[{:>5.1}s] build context ready", t0.elapsed().as_secs_f64());

    let mut c = Compose::start(&short_id());
    c.compose(&["build", "--quiet"]);
    eprintln!("[{:>5.1}s] image built", t0.elapsed().as_secs_f64());
    c.compose(&["up", "--detach", "--no-build"]);
    eprintln!("[{:>5.1}s] compose up", t0.elapsed().as_secs_f64());
    let nets = c.docker(&[
        "network",
        "ls",
        "--quiet",
        "--filter",
        &format!("label=com.docker.compose.project={}", c.project),
    ]);
    c.bridges = String::from_utf8_lossy(&nets.stdout)
        .split_whitespace()
        .map(|id| format!("br-{}", &id[..id.len().min(12)]))
        .collect();
    {
        use std::io::Write as _;
        let mut owner = std::fs::OpenOptions::new()
            .append(true)
            .open(format!(
                "/run/{}.owner",
                c.exec_root.file_name().unwrap().to_string_lossy()
            ))
            .expect("owner file");
        for b in &c.bridges {
            writeln!(owner, "{b}").expect("owner file");
        }
    }

    // the server container's address on the compose network (the host has a route to it)
    let cid = c.compose(&["ps", "--quiet", "server"]).trim().to_string();
    let ip = String::from_utf8_lossy(
        &c.docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &cid,
        ])
        .stdout,
    )
    .trim()
    .to_string();
    assert!(!ip.is_empty(), "no address for the server container {cid}");
    let deadline = Instant::now() + Duration::from_secs(90);
    let ca = read_server_file(&c, "/var/lib/kapsel/server/pki/ca.crt", deadline);
    let token = read_server_file(&c, "/var/lib/kapsel/server/admin-token", deadline);
    let mut cfg = ClientConfig::new(format!("https://{ip}:6443"));
    cfg.ca_cert_pem = Some(ca.into_bytes());
    let client = Client::from_config(cfg.with_token(token)).expect("client");

    // server + 3 joined agents
    let nodes = tokio::time::timeout(
        Duration::from_secs(120),
        wait_nodes_ready(&client, 4, Duration::from_secs(115)),
    )
    .await
    .unwrap_or_else(|_| panic!("4 nodes not Ready:\n{}", c.logs()));
    let names: BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    eprintln!(
        "[{:>5.1}s] nodes Ready: {names:?}",
        t0.elapsed().as_secs_f64()
    );
    for a in ["agent-1", "agent-2", "agent-3"] {
        assert!(names.contains(a), "{a} did not join: {names:?}");
    }

    // watch the pods from before the apply
    let pods: Api<Pod> = client.api(Some("default"));
    let listed = pods.list(&ListParams::default()).await.expect("list pods");
    let rv = listed.metadata.resource_version.clone().unwrap_or_default();
    let mut watch = pods
        .watch(&ListParams::default().labels("app=web").timeout(280), &rv)
        .await
        .expect("watch pods");
    let manifest = workspace_root().join("examples/deployment.yaml");
    let applied = c.exec("server", &["kapsel", "apply", "-f", "-"], Some(&manifest));
    assert!(
        applied.status.success(),
        "kapsel apply in the server container: {}",
        output_text(&applied)
    );
    eprintln!(
        "[{:>5.1}s] applied examples/deployment.yaml:\n{}",
        t0.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&applied.stdout)
    );

    // every pod as last seen: (node, Running and Ready)
    let mut seen: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let placed = loop {
        let ev = match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(Ok(ev))) => ev,
            Ok(Some(Err(e))) => panic!("watch error: {e}"),
            Ok(None) => panic!("watch ended; pods seen: {seen:?}"),
            Err(_) => panic!(
                "3 web pods not Running and Ready within 150 s; pods seen: {seen:?}\n{}",
                c.logs()
            ),
        };
        if ev.type_ == WatchEventType::Bookmark {
            continue; // progress marks carry no pod
        }
        assert!(
            ev.type_ != WatchEventType::Error,
            "watch error event: {:?}",
            ev.object.metadata
        );
        let p = ev.object;
        let name = p.metadata.name.clone().unwrap_or_default();
        if ev.type_ == WatchEventType::Deleted || p.metadata.deletion_timestamp.is_some() {
            seen.remove(&name);
        } else {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let up = pod_phase(&p) == "Running" && pod_ready(&p);
            seen.insert(name, (node, up));
        }
        if seen.len() == 3 && seen.values().all(|(_, up)| *up) {
            break seen.clone();
        }
    };
    let on: BTreeSet<&str> = placed.values().map(|(n, _)| n.as_str()).collect();
    eprintln!(
        "[{:>5.1}s] 3/3 Running and Ready: {placed:?}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        on.len() >= 2,
        "the 3 replicas are not spread over at least 2 nodes: {placed:?}"
    );
    assert!(
        on.iter().all(|n| names.contains(*n)),
        "pods on unknown nodes: {placed:?}"
    );
    // the CLI in the container sees the same (what the README shows)
    let wide = c.exec("server", &["kapsel", "get", "pods", "-o", "wide"], None);
    assert!(wide.status.success(), "{}", output_text(&wide));
    eprintln!("{}", String::from_utf8_lossy(&wide.stdout));

    c.compose(&["down", "--volumes", "--timeout", "20"]);
    eprintln!("[{:>5.1}s] compose down", t0.elapsed().as_secs_f64());
    let left = c.docker(&["ps", "--all", "--quiet"]);
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "containers left after down: {}",
        output_text(&left)
    );
    drop(c);
    let _ = kapsel;
}
