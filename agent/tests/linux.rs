//! Root tests: the agent with the real runtime (busybox rootfs from Debian's busybox-static)
//! against an in-process API server. Under CI=true they fail when they cannot run.

use crate::common;
use crate::rt;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use futures::StreamExt;
use kapsel_agent::{Agent, AgentConfig, AgentHandle, DirImages};
use kapsel_api::client::{Api, Client, LogParams};
use kapsel_api::{
    ConfigMap, ConfigMapVolumeSource, Container, DeleteOptions, EnvFromSource, EnvVar,
    EnvVarSource, ExecAction, HttpGetAction, IntOrString, KeySelector, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, ObjectMeta, OptionalRef, Pod, Probe, Secret, SecretVolumeSource,
    TcpSocketAction, Volume, VolumeMount,
};
use kapsel_runtime::{LinuxRuntime, Runtime};

const T: Duration = Duration::from_secs(30);

struct Rig {
    srv: kapsel_apiserver::TestServer,
    env: rt::Env,
    dir: tempfile::TempDir,
    agent: Option<AgentHandle>,
    rt: Arc<LinuxRuntime>,
    api: Api<Pod>,
    client: Client,
}

impl Rig {
    async fn new(adjust: impl FnOnce(&mut AgentConfig)) -> Option<Rig> {
        let env = rt::Env::new()?;
        let srv = server().await;
        let dir = tempfile::tempdir().unwrap();
        let rtm = Arc::new(LinuxRuntime::new(env.config.clone()).unwrap());
        let mut cfg = AgentConfig::new(&srv.url, "real", dir.path().join("agent"));
        cfg.node_ip = Some("127.0.0.1".into());
        cfg.eviction_memory_available = 0;
        cfg.backoff.initial = Duration::from_millis(500);
        cfg.volume_resync = Duration::from_millis(500);
        adjust(&mut cfg);
        let images = DirImages::new(BTreeMap::from([(
            "busybox".to_string(),
            env.rootfs.clone(),
        )]));
        let agent = Agent::connect(cfg, rtm.clone(), Arc::new(images))
            .unwrap()
            .spawn();
        let client = Client::new(&srv.url).unwrap();
        Some(Rig {
            api: pods(&srv.url),
            client,
            srv,
            env,
            dir,
            agent: Some(agent),
            rt: rtm,
        })
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
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = (&self.srv, &self.dir, &self.env);
        self.agent.take();
    }
}

fn sh(name: &str, script: &str) -> Container {
    container(name, "busybox", &["/bin/sh", "-c", script])
}

async fn logs(api: &Api<Pod>, pod: &str, lp: LogParams) -> String {
    api.logs_string(pod, &lp)
        .await
        .unwrap_or_else(|e| panic!("logs of {pod}: {e}"))
}

async fn wait_log(api: &Api<Pod>, pod: &str, container: &str, needle: &str) -> String {
    tokio::time::timeout(T, async {
        loop {
            let lp = LogParams {
                container: Some(container.into()),
                ..Default::default()
            };
            if let Ok(s) = api.logs_string(pod, &lp).await {
                if s.contains(needle) {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{pod}/{container}: {needle:?} not logged"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_pod_with_init_and_two_containers_runs_and_deletes_cleanly() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    let mut p = pod(
        "web",
        "real",
        vec![
            sh("a", "echo a-up; exec sleep 1000"),
            sh("b", "exec sleep 1000"),
        ],
    );
    p.spec.as_mut().unwrap().init_containers = vec![sh("init", "echo init-done")];
    r.api.create(&p).await.unwrap();
    let got = wait_pod(&r.api, "web", T, |p| {
        phase(p) == "Running" && condition(p, "Ready").as_deref() == Some("True")
    })
    .await;
    let st = got.status.clone().unwrap();
    let init = &st.init_container_statuses[0];
    let t = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    for c in &st.container_statuses {
        assert!(c.ready, "{}", c.name);
        assert_eq!(c.restart_count, 0);
        assert!(c
            .state
            .as_ref()
            .unwrap()
            .running
            .as_ref()
            .unwrap()
            .started_at
            .is_some());
        assert!(c.container_id.as_deref().unwrap().starts_with("kapsel://"));
    }
    for c in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(&got, c).as_deref(), Some("True"), "{c}");
    }
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(st.start_time.is_some());
    assert_eq!(
        r.rt.list()
            .unwrap()
            .iter()
            .filter(|c| c.status == kapsel_runtime::ContainerStatus::Running)
            .count(),
        2
    );
    wait_log(&r.api, "web", "init", "init-done").await;
    wait_log(&r.api, "web", "a", "a-up").await;

    let t0 = Instant::now();
    r.api
        .delete(
            "web",
            &DeleteOptions {
                grace_period_seconds: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_gone(&r.api, "web", T).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "sleep dies on SIGTERM (default action), {:?}",
        t0.elapsed()
    );
    assert!(r.rt.list().unwrap().is_empty(), "nothing leaked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_crash_loop_backoff_grows_and_restart_policies() {
    let Some(r) = Rig::new(|c| c.backoff.initial = Duration::from_millis(700)).await else {
        return;
    };
    let mut crash = pod("crash", "real", vec![sh("c", "echo boom; exit 1")]);
    crash.spec.as_mut().unwrap().restart_policy = Some("Always".into());
    r.api.create(&crash).await.unwrap();
    let mut onf = pod("onfailure-ok", "real", vec![sh("c", "exit 0")]);
    onf.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
    r.api.create(&onf).await.unwrap();
    let mut never = pod("never-fail", "real", vec![sh("c", "exit 3")]);
    never.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    r.api.create(&never).await.unwrap();
    let mut onfail = pod("onfailure-fail", "real", vec![sh("c", "exit 2")]);
    onfail.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
    r.api.create(&onfail).await.unwrap();

    let p = wait_pod(&r.api, "crash", T, |p| {
        waiting_reason(p, "c").as_deref() == Some("CrashLoopBackOff")
    })
    .await;
    let last = cstatus(&p, "c")
        .unwrap()
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(last.exit_code, 1);
    // Restart times: the gaps grow (0.7 s, 1.4 s, 2.8 s).
    let mut seen = Vec::new();
    for n in 1..=3 {
        wait_pod(&r.api, "crash", T, |p| {
            cstatus(p, "c").is_some_and(|c| c.restart_count >= n)
        })
        .await;
        seen.push(Instant::now());
    }
    let g1 = seen[1] - seen[0];
    let g2 = seen[2] - seen[1];
    assert!(g2 > g1, "backoff grows: {g1:?} then {g2:?}");
    assert!(g2 >= Duration::from_millis(1300), "{g2:?}");

    let ok = wait_pod(&r.api, "onfailure-ok", T, |p| phase(p) == "Succeeded").await;
    assert_eq!(cstatus(&ok, "c").unwrap().restart_count, 0);
    let nf = wait_pod(&r.api, "never-fail", T, |p| phase(p) == "Failed").await;
    let t = cstatus(&nf, "c")
        .unwrap()
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    wait_pod(&r.api, "onfailure-fail", T, |p| {
        cstatus(p, "c").is_some_and(|c| c.restart_count >= 1)
    })
    .await;
    r.delete_all().await;
}

fn probe_exec(cmd: &str) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
        }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_probes_liveness_restarts_readiness_flips_exec_http_tcp() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    // Liveness (exec): healthy while /tmp/ok exists; it is removed after 2 s → restart.
    let mut live = sh(
        "live",
        "touch /tmp/ok; sleep 2; rm /tmp/ok; exec sleep 1000",
    );
    live.liveness_probe = Some(probe_exec("test -f /tmp/ok"));
    // Readiness (httpGet by port name): ready while index.html exists, then not; never restarted.
    let mut ready = sh(
        "ready",
        "mkdir -p /www && echo ok > /www/index.html && httpd -p 8080 -h /www && sleep 4 && rm /www/index.html && exec sleep 1000",
    );
    ready.ports = vec![kapsel_api::ContainerPort {
        name: Some("web".into()),
        container_port: 8080,
        ..Default::default()
    }];
    ready.readiness_probe = Some(Probe {
        http_get: Some(HttpGetAction {
            path: Some("/index.html".into()),
            port: IntOrString::String("web".into()),
            http_headers: vec![kapsel_api::HttpHeader {
                name: "X-Test".into(),
                value: "1".into(),
            }],
            ..Default::default()
        }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Default::default()
    });
    // tcpSocket: liveness on a listening port (stays up), readiness on a closed one (never ready).
    let mut tcp = sh(
        "tcp",
        "mkdir -p /w2 && httpd -p 9090 -h /w2 && exec sleep 1000",
    );
    tcp.liveness_probe = Some(Probe {
        tcp_socket: Some(TcpSocketAction {
            port: IntOrString::Int(9090),
            host: None,
        }),
        initial_delay_seconds: Some(1),
        period_seconds: Some(1),
        failure_threshold: Some(2),
        ..Default::default()
    });
    tcp.readiness_probe = Some(Probe {
        tcp_socket: Some(TcpSocketAction {
            port: IntOrString::Int(9999),
            host: None,
        }),
        period_seconds: Some(1),
        ..Default::default()
    });
    r.api
        .create(&pod("probes", "real", vec![live, ready, tcp]))
        .await
        .unwrap();
    wait_pod(&r.api, "probes", T, |p| {
        cstatus(p, "ready").is_some_and(|c| c.ready)
    })
    .await;
    let p = wait_pod(&r.api, "probes", T, |p| {
        cstatus(p, "live").is_some_and(|c| c.restart_count >= 1)
    })
    .await;
    assert_eq!(
        condition(&p, "Ready").as_deref(),
        Some("False"),
        "tcp readiness on a closed port"
    );
    let p = wait_pod(&r.api, "probes", T, |p| {
        cstatus(p, "ready")
            .is_some_and(|c| !c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some()))
    })
    .await;
    assert_eq!(
        cstatus(&p, "ready").unwrap().restart_count,
        0,
        "readiness never restarts"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = r.api.get("probes").await.unwrap();
    let tcp = cstatus(&p, "tcp").unwrap();
    assert_eq!(tcp.restart_count, 0, "tcp liveness passes");
    assert!(!tcp.ready);
    r.delete_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_delete_with_grace_period_term_handled_vs_ignored() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    let mut handled = pod(
        "handled",
        "real",
        vec![sh(
            "c",
            "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
        )],
    );
    handled
        .spec
        .as_mut()
        .unwrap()
        .termination_grace_period_seconds = Some(20);
    let mut ignored = pod(
        "ignored",
        "real",
        vec![sh("c", "trap '' TERM; while true; do sleep 0.1; done")],
    );
    ignored
        .spec
        .as_mut()
        .unwrap()
        .termination_grace_period_seconds = Some(3);
    // preStop runs first.
    ignored.spec.as_mut().unwrap().containers[0].lifecycle = Some(Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "echo prestop > /proc/1/fd/1".into(),
                ],
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    r.api.create(&handled).await.unwrap();
    r.api.create(&ignored).await.unwrap();
    wait_pod(&r.api, "handled", T, |p| phase(p) == "Running").await;
    wait_pod(&r.api, "ignored", T, |p| phase(p) == "Running").await;

    let t0 = Instant::now();
    r.api
        .delete("handled", &DeleteOptions::default())
        .await
        .unwrap();
    wait_gone(&r.api, "handled", T).await;
    let d = t0.elapsed();
    assert!(
        d < Duration::from_secs(5),
        "a container that handles SIGTERM ends early: {d:?}"
    );

    let t0 = Instant::now();
    let api2 = r.api.clone();
    let follower = tokio::spawn(async move {
        let lp = LogParams {
            follow: true,
            ..Default::default()
        };
        let mut s = Box::pin(api2.logs("ignored", &lp).await.unwrap());
        let mut out = Vec::new();
        while let Some(Ok(b)) = s.next().await {
            out.extend_from_slice(&b);
            if String::from_utf8_lossy(&out).contains("prestop") {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.api
        .delete("ignored", &DeleteOptions::default())
        .await
        .unwrap();
    wait_gone(&r.api, "ignored", T).await;
    let d = t0.elapsed();
    assert!(
        d >= Duration::from_millis(2700),
        "ignored SIGTERM waits for the grace period: {d:?}"
    );
    assert!(d < Duration::from_secs(10), "then SIGKILL: {d:?}");
    let out = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    assert!(out.contains("prestop"), "preStop hook ran: {out:?}");
    assert!(r.rt.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_logs_follow_tail_previous_timestamps() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    // Each instance prints its own marker lines; it crashes after 1.5 s.
    let script =
        "for i in 1 2 3 4 5; do echo line$i; done; echo err >&2; sleep 1.5; echo last; exit 1";
    r.api
        .create(&pod("logs", "real", vec![sh("c", script)]))
        .await
        .unwrap();
    wait_pod(&r.api, "logs", T, |p| {
        cstatus(p, "c").is_some_and(|c| c.restart_count >= 1)
    })
    .await;
    let all = wait_log(&r.api, "logs", "c", "err").await;
    assert!(all.contains("line1"), "{all}");
    let tail = logs(
        &r.api,
        "logs",
        LogParams {
            tail_lines: Some(2),
            ..Default::default()
        },
    )
    .await;
    assert!(tail.lines().count() <= 2, "{tail:?}");
    let prev = logs(
        &r.api,
        "logs",
        LogParams {
            previous: true,
            ..Default::default()
        },
    )
    .await;
    assert!(
        prev.contains("line5") && prev.contains("last"),
        "previous instance: {prev:?}"
    );
    let ts = logs(
        &r.api,
        "logs",
        LogParams {
            previous: true,
            timestamps: true,
            tail_lines: Some(1),
            ..Default::default()
        },
    )
    .await;
    let first = ts.split_whitespace().next().unwrap_or("");
    assert!(
        chrono::DateTime::parse_from_rfc3339(first).is_ok(),
        "timestamped: {ts:?}"
    );
    // Follow: a running instance streams new lines as they come.
    let api2 = r.api.clone();
    let got = tokio::time::timeout(T, async move {
        loop {
            let lp = LogParams {
                follow: true,
                ..Default::default()
            };
            if let Ok(s) = api2.logs("logs", &lp).await {
                let mut s = Box::pin(s);
                let mut out = Vec::new();
                while let Some(Ok(b)) = s.next().await {
                    out.extend_from_slice(&b);
                }
                let text = String::from_utf8_lossy(&out).into_owned();
                if text.contains("line1") && text.contains("last") {
                    return text;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("followed a whole instance");
    assert!(got.find("line1") < got.find("last"));
    let bad = r
        .api
        .logs_string(
            "logs",
            &LogParams {
                container: Some("nope".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(bad.is_err());
    r.delete_all().await;
}

/// The moment a watch shows a container terminated, its whole output is in its log: the
/// agent's final log flush is ordered before the status that reports the exit. Many rounds of
/// short-lived containers (most exit before the agent first looks at them, which is where the
/// flush used to be skipped and the lines arrived up to one pump period later), some with
/// thousands of lines and a last line without a newline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_logs_are_complete_when_terminated_is_reported() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    for round in 0..16usize {
        let lines = [1usize, 2, 1, 3000][round % 4];
        let name = format!("burst-{round}");
        let script = if lines <= 2 {
            // The last line has no newline: only the final flush moves it.
            (1..=lines)
                .map(|i| {
                    if i == lines {
                        format!("printf line-{i}")
                    } else {
                        format!("echo line-{i}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            format!("i=1; while [ $i -le {lines} ]; do echo line-$i; i=$((i+1)); done")
        };
        let mut p = pod(&name, "real", vec![sh("c", &script)]);
        p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        r.api.create(&p).await.unwrap();
        wait_pod(&r.api, &name, T, |p| {
            cstatus(p, "c")
                .and_then(|c| c.state.as_ref())
                .is_some_and(|s| s.terminated.is_some())
        })
        .await;
        let out = logs(
            &r.api,
            &name,
            LogParams {
                container: Some("c".into()),
                ..Default::default()
            },
        )
        .await;
        let got: Vec<&str> = out.lines().collect();
        assert_eq!(
            got.len(),
            lines,
            "round {round}: {} of {lines} lines logged when terminated was reported; last: {:?}",
            got.len(),
            got.last()
        );
        assert_eq!(got.last().copied(), Some(format!("line-{lines}").as_str()));
        r.api
            .delete(
                &name,
                &DeleteOptions {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    r.delete_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_configmap_secret_volumes_and_env_from_all_sources() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    let cms = r.client.api::<ConfigMap>(Some("default"));
    let secrets = r.client.api::<Secret>(Some("default"));
    let mut cm = ConfigMap::with_meta(ObjectMeta::namespaced("default", "cfg"));
    cm.data.insert("color".into(), "blue".into());
    cms.create(&cm).await.unwrap();
    let mut s = Secret::with_meta(ObjectMeta::namespaced("default", "creds"));
    s.data.insert(
        "password".into(),
        base64::engine::general_purpose::STANDARD.encode("hunter2"),
    );
    secrets.create(&s).await.unwrap();

    let mut c = sh(
        "c",
        "echo POD=$POD NS=$NS UID=$MYUID NODE=$NODE IP=$HOSTIP LIT=$LIT COLOR=$COLOR PW=$PW FROM=$CFG_color MEM=$MEM; \
         while true; do echo vol=$(cat /etc/cfg/color)/$(cat /etc/sec/password); sleep 0.3; done",
    );
    let fr = |p: &str| {
        Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: p.into(),
            }),
            ..Default::default()
        })
    };
    c.env = vec![
        EnvVar {
            name: "POD".into(),
            value: None,
            value_from: fr("metadata.name"),
        },
        EnvVar {
            name: "NS".into(),
            value: None,
            value_from: fr("metadata.namespace"),
        },
        EnvVar {
            name: "MYUID".into(),
            value: None,
            value_from: fr("metadata.uid"),
        },
        EnvVar {
            name: "NODE".into(),
            value: None,
            value_from: fr("spec.nodeName"),
        },
        EnvVar {
            name: "HOSTIP".into(),
            value: None,
            value_from: fr("status.hostIP"),
        },
        EnvVar {
            name: "LIT".into(),
            value: Some("x-$(POD)".into()),
            value_from: None,
        },
        EnvVar {
            name: "COLOR".into(),
            value: None,
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(KeySelector {
                    name: Some("cfg".into()),
                    key: "color".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        },
        EnvVar {
            name: "PW".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(KeySelector {
                    name: Some("creds".into()),
                    key: "password".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        },
        EnvVar {
            name: "MEM".into(),
            value: None,
            value_from: Some(EnvVarSource {
                resource_field_ref: Some(kapsel_api::ResourceFieldSelector {
                    container_name: None,
                    resource: "limits.memory".into(),
                    divisor: Some(kapsel_api::Quantity::new("1Mi")),
                }),
                ..Default::default()
            }),
        },
    ];
    c.env_from = vec![EnvFromSource {
        prefix: Some("CFG_".into()),
        config_map_ref: Some(OptionalRef {
            name: Some("cfg".into()),
            optional: None,
        }),
        secret_ref: None,
    }];
    let mut res = kapsel_api::ResourceRequirements::default();
    res.limits
        .insert("memory".into(), kapsel_api::Quantity::new("64Mi"));
    c.resources = Some(res);
    c.volume_mounts = vec![
        VolumeMount {
            name: "cfg".into(),
            mount_path: "/etc/cfg".into(),
            ..Default::default()
        },
        VolumeMount {
            name: "sec".into(),
            mount_path: "/etc/sec".into(),
            ..Default::default()
        },
    ];
    let mut p = pod("inputs", "real", vec![c]);
    p.spec.as_mut().unwrap().volumes = vec![
        Volume {
            name: "cfg".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: Some("cfg".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "sec".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("creds".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let created = r.api.create(&p).await.unwrap();
    let out = wait_log(&r.api, "inputs", "c", "vol=blue/hunter2").await;
    let uid = created.metadata.uid();
    let want = format!("POD=inputs NS=default UID={uid} NODE=real IP=127.0.0.1 LIT=x-inputs COLOR=blue PW=hunter2 FROM=blue MEM=64");
    assert!(out.contains(&want), "env line: {out}");
    // Updates flow into the projected files.
    let mut cur = cms.get("cfg").await.unwrap();
    cur.data.insert("color".into(), "green".into());
    cms.replace("cfg", &cur).await.unwrap();
    let mut cur = secrets.get("creds").await.unwrap();
    cur.data.insert(
        "password".into(),
        base64::engine::general_purpose::STANDARD.encode("s3cret"),
    );
    secrets.replace("creds", &cur).await.unwrap();
    wait_log(&r.api, "inputs", "c", "vol=green/s3cret").await;
    r.delete_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_bad_input_reasons_and_no_leftovers() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    let mut nouser = pod("nouser", "real", vec![sh("c", "sleep 100")]);
    nouser.spec.as_mut().unwrap().containers[0].security_context =
        Some(kapsel_api::SecurityContext {
            run_as_user: Some(4242),
            run_as_non_root: Some(false),
            ..Default::default()
        });
    let nocmd = pod("nocmd", "real", vec![container("c", "busybox", &[])]);
    let badcmd = pod(
        "badcmd",
        "real",
        vec![container("c", "busybox", &["/no/such/binary"])],
    );
    let mut badvol = pod("badvol", "real", vec![sh("c", "sleep 100")]);
    badvol.spec.as_mut().unwrap().volumes = vec![Volume {
        name: "h".into(),
        host_path: Some(kapsel_api::HostPathVolumeSource {
            path: "/definitely/not/here".into(),
            type_: Some("Directory".into()),
        }),
        ..Default::default()
    }];
    badvol.spec.as_mut().unwrap().containers[0].volume_mounts = vec![VolumeMount {
        name: "h".into(),
        mount_path: "/h".into(),
        ..Default::default()
    }];
    for p in [&nocmd, &badcmd, &badvol, &nouser] {
        r.api.create(p).await.unwrap();
    }
    r.api
        .create(&pod("fine", "real", vec![sh("c", "exec sleep 1000")]))
        .await
        .unwrap();
    let p = wait_pod(&r.api, "nocmd", T, |p| {
        waiting_reason(p, "c").as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    assert!(format!("{:?}", p.status).contains("no command"));
    wait_pod(&r.api, "badcmd", T, |p| {
        waiting_reason(p, "c").as_deref() == Some("RunContainerError")
    })
    .await;
    let p = wait_pod(&r.api, "badvol", T, |p| {
        waiting_reason(p, "c").as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    assert!(format!("{:?}", p.status).contains("not a directory"));
    wait_pod(&r.api, "fine", T, |p| phase(p) == "Running").await;
    // A uid with no passwd entry is fine for Kubernetes (numeric): the pod runs.
    wait_pod(&r.api, "nouser", T, |p| phase(p) == "Running").await;
    // Only the two good pods have running containers. (badcmd is retried with backoff, so a
    // listing can catch a retry between its create and the delete that follows the failed
    // start; the pods refused before the runtime never get one.)
    let all: Vec<_> = r.rt.list().unwrap();
    let pod_of = |c: &kapsel_runtime::ContainerState| c.labels["kapsel.pod.name"].clone();
    let mut running: Vec<String> = all
        .iter()
        .filter(|c| c.status == kapsel_runtime::ContainerStatus::Running)
        .map(pod_of)
        .collect();
    running.sort();
    assert_eq!(running, ["fine", "nouser"], "{all:?}");
    assert!(
        all.iter()
            .all(|c| ["fine", "nouser", "badcmd"].contains(&pod_of(c).as_str())),
        "{all:?}"
    );
    r.delete_all().await;
}

/// The agent as its own process: SIGKILL it, delete a pod meanwhile, restart it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_sigkill_restart_adopts_and_cleans_up() {
    let Some(env) = rt::Env::new() else { return };
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let rtm = LinuxRuntime::new(env.config.clone()).unwrap();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kapsel-agent"))
            .args([
                "--server",
                &srv.url,
                "--node-name",
                "proc",
                "--node-ip",
                "127.0.0.1",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--runtime-dir")
            .arg(&env.config.state_dir)
            .args([
                "--cgroup-parent",
                &env.config.cgroup_parent,
                "--eviction-memory-available",
                "0",
                // no controller here to hand out a podCIDR
                "--no-pod-network",
            ])
            .arg("--image-dir")
            .arg(format!("busybox={}", env.rootfs.display()))
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("agent binary")
    };
    let mut agent = spawn();
    let api = pods(&srv.url);
    api.create(&pod("keep", "proc", vec![sh("c", "exec sleep 1000")]))
        .await
        .unwrap();
    api.create(&pod("gone", "proc", vec![sh("c", "exec sleep 1000")]))
        .await
        .unwrap();
    let keep = wait_pod(&api, "keep", T, |p| phase(p) == "Running").await;
    let gone = wait_pod(&api, "gone", T, |p| phase(p) == "Running").await;
    let before = rtm.list().unwrap();
    let keep_c = before
        .iter()
        .find(|c| c.labels["kapsel.pod.uid"] == keep.metadata.uid())
        .unwrap()
        .clone();
    agent.kill().unwrap(); // SIGKILL
    agent.wait().unwrap();
    api.delete(
        "gone",
        &DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        rtm.list()
            .unwrap()
            .iter()
            .filter(|c| c.status == kapsel_runtime::ContainerStatus::Running)
            .count(),
        2,
        "containers survive the agent"
    );
    let mut agent = spawn();
    let res = tokio::time::timeout(T, async {
        loop {
            let l = rtm.list().unwrap();
            if !l
                .iter()
                .any(|c| c.labels["kapsel.pod.uid"] == gone.metadata.uid())
            {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let after = res.expect("the deleted pod's container is killed and removed");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, keep_c.id, "adopted, not recreated");
    assert_eq!(after[0].pid, keep_c.pid, "same pid");
    assert_eq!(after[0].status, kapsel_runtime::ContainerStatus::Running);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p = api.get("keep").await.unwrap();
    assert_eq!(cstatus(&p, "c").unwrap().restart_count, 0);
    assert_eq!(phase(&p), "Running");
    api.delete(
        "keep",
        &DeleteOptions {
            grace_period_seconds: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_gone(&api, "keep", T).await;
    assert!(rtm.list().unwrap().is_empty());
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_volumes_emptydir_memory_hostpath_and_downward_api() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("hello"), "from-host").unwrap();
    let create_me = host.path().join("made");
    let mut init = sh("init", "echo shared > /scratch/x");
    init.volume_mounts = vec![VolumeMount {
        name: "scratch".into(),
        mount_path: "/scratch".into(),
        ..Default::default()
    }];
    let mut c = sh(
        "c",
        "echo scratch=$(cat /scratch/x) host=$(cat /host/hello) name=$(cat /info/name) app=$(cat /info/labels); \
         grep ' /scratch ' /proc/mounts | cut -d' ' -f3; touch /made/ok; exec sleep 1000",
    );
    c.volume_mounts = vec![
        VolumeMount {
            name: "scratch".into(),
            mount_path: "/scratch".into(),
            ..Default::default()
        },
        VolumeMount {
            name: "host".into(),
            mount_path: "/host".into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "made".into(),
            mount_path: "/made".into(),
            ..Default::default()
        },
        VolumeMount {
            name: "info".into(),
            mount_path: "/info".into(),
            ..Default::default()
        },
    ];
    let mut p = pod("vols", "real", vec![c]);
    p.metadata.labels.insert("app".into(), "demo".into());
    let spec = p.spec.as_mut().unwrap();
    spec.init_containers = vec![init];
    spec.volumes = vec![
        Volume {
            name: "scratch".into(),
            empty_dir: Some(kapsel_api::EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(kapsel_api::Quantity::new("16Mi")),
            }),
            ..Default::default()
        },
        Volume {
            name: "host".into(),
            host_path: Some(kapsel_api::HostPathVolumeSource {
                path: host.path().display().to_string(),
                type_: Some("Directory".into()),
            }),
            ..Default::default()
        },
        Volume {
            name: "made".into(),
            host_path: Some(kapsel_api::HostPathVolumeSource {
                path: create_me.display().to_string(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        },
        Volume {
            name: "info".into(),
            downward_api: Some(kapsel_api::DownwardApiVolumeSource {
                items: vec![
                    kapsel_api::DownwardApiVolumeFile {
                        path: "name".into(),
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: "metadata.name".into(),
                        }),
                        ..Default::default()
                    },
                    kapsel_api::DownwardApiVolumeFile {
                        path: "labels".into(),
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: "metadata.labels['app']".into(),
                        }),
                        ..Default::default()
                    },
                ],
                default_mode: None,
            }),
            ..Default::default()
        },
    ];
    r.api.create(&p).await.unwrap();
    let out = wait_log(&r.api, "vols", "c", "tmpfs").await;
    assert!(
        out.contains("scratch=shared host=from-host name=vols app=demo"),
        "{out}"
    );
    assert!(
        create_me.join("ok").exists(),
        "DirectoryOrCreate made the host dir, the container wrote to it"
    );
    r.api
        .delete(
            "vols",
            &DeleteOptions {
                grace_period_seconds: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_gone(&r.api, "vols", T).await;
    assert!(
        host.path().join("hello").exists(),
        "hostPath content is left alone"
    );
}

/// `kapsel.dev/allowed-executables`: the listed command runs, a shell the list leaves out is
/// refused (RunContainerError, EACCES); a per-container list overrides the pod's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_allowed_executables_annotation() {
    let Some(r) = Rig::new(|_| {}).await else {
        return;
    };
    let mut p = pod(
        "locked",
        "real",
        vec![
            container("c", "busybox", &["/bin/sleep", "1000"]),
            sh("shell", "echo ran; exec sleep 1000"),
            sh("free", "exec sleep 1000"),
        ],
    );
    p.metadata.annotations = BTreeMap::from([
        (
            "kapsel.dev/allowed-executables".to_string(),
            "/bin/sleep".to_string(),
        ),
        (
            "kapsel.dev/allowed-executables.free".to_string(),
            "/bin".to_string(),
        ),
    ]);
    r.api.create(&p).await.unwrap();
    let p = wait_pod(&r.api, "locked", T, |p| {
        waiting_reason(p, "shell").as_deref() == Some("RunContainerError")
            && cstatus(p, "c")
                .is_some_and(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
            && cstatus(p, "free")
                .is_some_and(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
    })
    .await;
    let msg = format!("{:?}", cstatus(&p, "shell").unwrap().state);
    assert!(msg.contains("Permission denied"), "{msg}");
    r.delete_all().await;
}
