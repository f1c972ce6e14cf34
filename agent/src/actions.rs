//! `compute_pod_actions` (pure, like kubelet's `computePodActions`): what to do to bring a
//! pod's runtime state to its spec, given what the runtime shows and the worker remembers.

use kapsel_api::Pod;
use kapsel_runtime::ContainerId;

use crate::model::{
    app_containers, init_containers, latest, restart_policy, should_restart, Instance,
    InstanceState, KillCause, PodMemo,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    CreateSandbox,
    /// Create and start an instance of a container.
    Start {
        name: String,
        init: bool,
        attempt: u32,
    },
    /// Kill a running instance (liveness or startup probe failed); it restarts per policy.
    Kill {
        id: ContainerId,
        cause: KillCause,
    },
    /// Delete an old exited instance (only the newest two of a container are kept).
    Remove {
        id: ContainerId,
    },
}

/// The next attempt number for a container whose newest instance is `last`.
fn next_attempt(last: Option<&Instance>) -> u32 {
    last.map_or(0, |i| i.attempt + 1)
}

/// What to do now (`now_ms`: unix ms). A running pod (not being deleted, not evicted).
pub fn compute_pod_actions(
    pod: &Pod,
    sandbox: bool,
    instances: &[Instance],
    memo: &PodMemo,
    now_ms: u64,
) -> Vec<Action> {
    let mut out = Vec::new();
    // Garbage: instances older than the previous one.
    for i in instances {
        let (last, prev) = latest(instances, &i.name, i.init);
        let keep = last.is_some_and(|l| l.id == i.id) || prev.is_some_and(|p| p.id == i.id);
        if !keep && !i.state.is_running() {
            out.push(Action::Remove { id: i.id.clone() });
        }
    }
    if memo.evicted.is_some() {
        return out;
    }
    if !sandbox {
        out.push(Action::CreateSandbox);
    }
    let policy = restart_policy(pod);
    let allowed = |init: bool, name: &str| {
        memo.get(init, name)
            .is_none_or(|m| now_ms >= m.restart_at_ms)
    };

    // Init containers run one at a time, in order, each to success.
    for c in init_containers(pod) {
        let (last, _) = latest(instances, &c.name, true);
        match last.map(|l| l.state) {
            None => {
                if allowed(true, &c.name) {
                    out.push(Action::Start {
                        name: c.name.clone(),
                        init: true,
                        attempt: 0,
                    });
                }
                return out;
            }
            Some(InstanceState::Created | InstanceState::Running) => return out,
            Some(InstanceState::Exited { code: 0, .. }) => continue,
            Some(InstanceState::Exited { code, .. }) => {
                if should_restart(policy, true, code) && allowed(true, &c.name) {
                    out.push(Action::Start {
                        name: c.name.clone(),
                        init: true,
                        attempt: next_attempt(last),
                    });
                }
                return out;
            }
        }
    }

    for c in app_containers(pod) {
        let (last, _) = latest(instances, &c.name, false);
        match last {
            None => {
                if allowed(false, &c.name) {
                    out.push(Action::Start {
                        name: c.name.clone(),
                        init: false,
                        attempt: 0,
                    });
                }
            }
            Some(l) => match l.state {
                InstanceState::Running | InstanceState::Created => {
                    if let Some(cause) = memo.probe(&l.id).and_then(|p| p.kill) {
                        out.push(Action::Kill {
                            id: l.id.clone(),
                            cause,
                        });
                    }
                }
                InstanceState::Exited { code, .. } => {
                    if should_restart(policy, false, code) && allowed(false, &c.name) {
                        out.push(Action::Start {
                            name: c.name.clone(),
                            init: false,
                            attempt: l.attempt + 1,
                        });
                    }
                }
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{container_id, ProbeState};
    use kapsel_api::{Container, ObjectMeta, PodSpec};

    fn pod(policy: &str, inits: &[&str], apps: &[&str]) -> Pod {
        let mut p = Pod::with_meta(ObjectMeta {
            name: Some("p".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..Default::default()
        });
        let mk = |n: &&str| Container {
            name: n.to_string(),
            image: Some("img".into()),
            ..Default::default()
        };
        p.spec = Some(PodSpec {
            restart_policy: Some(policy.into()),
            init_containers: inits.iter().map(mk).collect(),
            containers: apps.iter().map(mk).collect(),
            ..Default::default()
        });
        p
    }

    fn inst(name: &str, init: bool, attempt: u32, state: InstanceState) -> Instance {
        Instance {
            id: container_id("u1", name, attempt).unwrap(),
            name: name.into(),
            init,
            attempt,
            pid: 1,
            state,
            created_ms: 0,
            image_id: String::new(),
        }
    }

    fn exited(code: i32) -> InstanceState {
        InstanceState::Exited {
            code,
            signal: None,
            oom: false,
        }
    }

    fn start(name: &str, init: bool, attempt: u32) -> Action {
        Action::Start {
            name: name.into(),
            init,
            attempt,
        }
    }

    #[test]
    fn table() {
        use InstanceState::*;
        let memo = PodMemo::default();
        struct Case {
            name: &'static str,
            pod: Pod,
            sandbox: bool,
            instances: Vec<Instance>,
            want: Vec<Action>,
        }
        let cases = vec![
            Case {
                name: "new pod: sandbox, then the first init container only",
                pod: pod("Always", &["i1", "i2"], &["a", "b"]),
                sandbox: false,
                instances: vec![],
                want: vec![Action::CreateSandbox, start("i1", true, 0)],
            },
            Case {
                name: "init running: wait",
                pod: pod("Always", &["i1", "i2"], &["a"]),
                sandbox: true,
                instances: vec![inst("i1", true, 0, Running)],
                want: vec![],
            },
            Case {
                name: "first init done: second init",
                pod: pod("Always", &["i1", "i2"], &["a"]),
                sandbox: true,
                instances: vec![inst("i1", true, 0, exited(0))],
                want: vec![start("i2", true, 0)],
            },
            Case {
                name: "inits done: all app containers at once",
                pod: pod("Always", &["i1"], &["a", "b"]),
                sandbox: true,
                instances: vec![inst("i1", true, 0, exited(0))],
                want: vec![start("a", false, 0), start("b", false, 0)],
            },
            Case {
                name: "failed init under Always restarts it (as OnFailure)",
                pod: pod("Always", &["i1"], &["a"]),
                sandbox: true,
                instances: vec![inst("i1", true, 0, exited(3))],
                want: vec![start("i1", true, 1)],
            },
            Case {
                name: "failed init under Never: nothing more (pod fails)",
                pod: pod("Never", &["i1"], &["a"]),
                sandbox: true,
                instances: vec![inst("i1", true, 0, exited(3))],
                want: vec![],
            },
            Case {
                name: "Always restarts a container that exited 0",
                pod: pod("Always", &[], &["a"]),
                sandbox: true,
                instances: vec![inst("a", false, 0, exited(0))],
                want: vec![start("a", false, 1)],
            },
            Case {
                name: "OnFailure does not restart success",
                pod: pod("OnFailure", &[], &["a"]),
                sandbox: true,
                instances: vec![inst("a", false, 0, exited(0))],
                want: vec![],
            },
            Case {
                name: "OnFailure restarts failure",
                pod: pod("OnFailure", &[], &["a"]),
                sandbox: true,
                instances: vec![inst("a", false, 2, exited(1))],
                want: vec![start("a", false, 3)],
            },
            Case {
                name: "Never restarts nothing",
                pod: pod("Never", &[], &["a"]),
                sandbox: true,
                instances: vec![inst("a", false, 0, exited(1))],
                want: vec![],
            },
            Case {
                name: "old instances are removed, newest two kept",
                pod: pod("Always", &[], &["a"]),
                sandbox: true,
                instances: vec![
                    inst("a", false, 0, exited(1)),
                    inst("a", false, 1, exited(1)),
                    inst("a", false, 2, Running),
                ],
                want: vec![Action::Remove {
                    id: container_id("u1", "a", 0).unwrap(),
                }],
            },
        ];
        for c in cases {
            let got = compute_pod_actions(&c.pod, c.sandbox, &c.instances, &memo, 1000);
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn backoff_delays_restart() {
        let p = pod("Always", &[], &["a"]);
        let mut memo = PodMemo::default();
        memo.container(false, "a").restart_at_ms = 5000;
        let inst = vec![inst("a", false, 0, exited(1))];
        assert_eq!(compute_pod_actions(&p, true, &inst, &memo, 4999), vec![]);
        assert_eq!(
            compute_pod_actions(&p, true, &inst, &memo, 5000),
            vec![start("a", false, 1)]
        );
    }

    #[test]
    fn failed_liveness_kills_and_eviction_stops_everything() {
        let p = pod("Always", &[], &["a"]);
        let mut memo = PodMemo::default();
        let i = inst("a", false, 0, InstanceState::Running);
        memo.probes.insert(
            i.id.clone(),
            ProbeState {
                ready: false,
                started: true,
                kill: Some(KillCause::Liveness),
            },
        );
        assert_eq!(
            compute_pod_actions(&p, true, std::slice::from_ref(&i), &memo, 0),
            vec![Action::Kill {
                id: i.id.clone(),
                cause: KillCause::Liveness
            }]
        );
        memo.evicted = Some("low memory".into());
        assert_eq!(compute_pod_actions(&p, true, &[], &memo, 0), vec![]);
    }
}
