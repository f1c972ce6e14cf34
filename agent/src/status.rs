//! Pod status from runtime state (pure, table-tested): phase, conditions, container statuses.

use kapsel_api::{
    Condition, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodStatus, Time,
};

use crate::model::{
    app_containers, init_containers, latest, qos_class, restart_policy, should_restart, Instance,
    InstanceState, PodMemo,
};

fn time_ms(ms: u64) -> Time {
    let t =
        chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(0)).unwrap_or_default();
    Time(chrono::SubsecRound::trunc_subsecs(t, 0))
}

fn terminated(i: &Instance, memo: &PodMemo, now_ms: u64) -> Option<ContainerState> {
    let InstanceState::Exited { code, signal, oom } = i.state else {
        return None;
    };
    let reason = if oom {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let finished = memo.finished_ms.get(&i.id).copied().unwrap_or(now_ms);
    Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            signal,
            reason: Some(reason.into()),
            message: None,
            started_at: Some(time_ms(i.created_ms)),
            finished_at: Some(time_ms(finished)),
            container_id: Some(format!("kapsel://{}", i.id)),
        }),
        ..Default::default()
    })
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

/// The status of one container; `blocked`: an earlier init container has not finished.
fn container_status(
    pod: &Pod,
    c: &Container,
    init: bool,
    instances: &[Instance],
    memo: &PodMemo,
    blocked: bool,
    now_ms: u64,
) -> ContainerStatus {
    let (last, prev) = latest(instances, &c.name, init);
    let cm = memo.get(init, &c.name);
    let err = cm.and_then(|m| m.error.clone());
    let policy = restart_policy(pod);
    let mut st = ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: last.map(|l| l.image_id.clone()).unwrap_or_default(),
        restart_count: last.map_or(0, |l| i32::try_from(l.attempt).unwrap_or(i32::MAX)),
        ..Default::default()
    };
    let prev_term = prev.and_then(|p| terminated(p, memo, now_ms));
    match last {
        None => {
            st.state = Some(match err {
                Some(e) => waiting(&e.reason, Some(e.message)),
                None if blocked => waiting("PodInitializing", None),
                None => waiting("ContainerCreating", None),
            });
        }
        Some(l) => {
            st.container_id = Some(format!("kapsel://{}", l.id));
            match l.state {
                InstanceState::Created => {
                    st.state = Some(waiting("ContainerCreating", None));
                    st.last_state = prev_term;
                }
                InstanceState::Running => {
                    let p = memo.probe(&l.id).copied().unwrap_or_default();
                    let has_readiness = c.readiness_probe.is_some();
                    let has_startup = c.startup_probe.is_some();
                    let started = !has_startup || p.started;
                    st.started = Some(started);
                    st.ready = !init && started && (!has_readiness || p.ready);
                    st.state = Some(ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(time_ms(l.created_ms)),
                        }),
                        ..Default::default()
                    });
                    st.last_state = prev_term;
                }
                InstanceState::Exited { code, .. } => {
                    st.started = Some(false);
                    let restarting = memo.evicted.is_none() && should_restart(policy, init, code);
                    if restarting {
                        let (reason, msg) = match err {
                            Some(e) => (e.reason, e.message),
                            None => {
                                let delay =
                                    cm.and_then(|m| m.backoff.current()).unwrap_or_default();
                                (
                                    "CrashLoopBackOff".to_string(),
                                    format!(
                                        "back-off {}s restarting failed container={} pod={}_{}({})",
                                        delay.as_secs(),
                                        c.name,
                                        pod.metadata.name(),
                                        pod.metadata.namespace(),
                                        pod.metadata.uid()
                                    ),
                                )
                            }
                        };
                        st.state = Some(waiting(&reason, Some(msg)));
                        st.last_state = terminated(l, memo, now_ms);
                    } else {
                        st.state = terminated(l, memo, now_ms);
                        st.last_state = prev_term;
                    }
                }
            }
        }
    }
    st
}

fn condition(type_: &str, ok: bool, reason: Option<&str>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(str::to_string),
        ..Default::default()
    }
}

/// The pod's status. `old` supplies `startTime` and condition transition times.
pub fn pod_status(
    pod: &Pod,
    instances: &[Instance],
    memo: &PodMemo,
    host_ip: &str,
    now_ms: u64,
) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let policy = restart_policy(pod);

    // Init containers.
    let mut init_statuses = Vec::new();
    let mut inits_done = true;
    let mut init_failed = false;
    let mut blocked = false;
    for c in init_containers(pod) {
        let st = container_status(pod, c, true, instances, memo, blocked, now_ms);
        let (last, _) = latest(instances, &c.name, true);
        match last.and_then(|l| l.state.exit_code()) {
            Some(0) => {}
            Some(code) => {
                inits_done = false;
                blocked = true;
                if !should_restart(policy, true, code) {
                    init_failed = true;
                }
            }
            None => {
                inits_done = false;
                blocked = true;
            }
        }
        init_statuses.push(st);
    }

    let mut statuses = Vec::new();
    let (mut waiting, mut running, mut stopped, mut succeeded, mut failed) = (0, 0, 0, 0, 0);
    for c in app_containers(pod) {
        let st = container_status(pod, c, false, instances, memo, !inits_done, now_ms);
        let state = st.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            } else {
                failed += 1;
            }
        } else if st
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            stopped += 1;
        } else {
            waiting += 1;
        }
        statuses.push(st);
    }

    let phase = if init_failed {
        "Failed"
    } else if !inits_done || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match policy {
            "Always" => "Running",
            "OnFailure" if stopped == succeeded => "Succeeded",
            "OnFailure" => "Running",
            _ if failed > 0 => "Failed",
            _ => "Succeeded",
        }
    } else {
        "Pending"
    };

    let containers_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let mut conditions = vec![
        condition("PodScheduled", true, None),
        condition(
            "Initialized",
            inits_done,
            (!inits_done).then_some("ContainersNotInitialized"),
        ),
        condition(
            "ContainersReady",
            containers_ready,
            (!containers_ready).then_some("ContainersNotReady"),
        ),
        condition(
            "Ready",
            containers_ready,
            (!containers_ready).then_some("ContainersNotReady"),
        ),
    ];
    let now = time_ms(now_ms);
    for c in conditions.iter_mut() {
        c.last_transition_time = old
            .conditions
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
            .and_then(|o| o.last_transition_time)
            .or(Some(now));
    }

    let (phase, reason, message) = match &memo.evicted {
        Some(m) => ("Failed", Some("Evicted".to_string()), Some(m.clone())),
        None => (phase, None, None),
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions,
        message,
        reason,
        host_ip: Some(host_ip.into()).filter(|s: &String| !s.is_empty()),
        pod_ip: old.pod_ip.clone(),
        pod_ips: old.pod_ips.clone(),
        start_time: old
            .start_time
            .or_else(|| Some(time_ms(memo.start_ms.max(1)))),
        init_container_statuses: init_statuses,
        container_statuses: statuses,
        qos_class: Some(qos_class(pod).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{container_id, ProbeState, StartError};
    use kapsel_api::{ObjectMeta, PodSpec, Probe};

    fn pod(policy: &str, inits: &[&str], apps: &[&str]) -> Pod {
        let mut p = Pod::with_meta(ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..Default::default()
        });
        let mk = |n: &&str| Container {
            name: n.to_string(),
            image: Some("busybox".into()),
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
            pid: 10,
            state,
            created_ms: 1_700_000_000_000,
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

    fn cond(s: &PodStatus, t: &str) -> String {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .status
            .clone()
    }

    fn wait_reason(s: &ContainerStatus) -> Option<String> {
        s.state.as_ref()?.waiting.as_ref()?.reason.clone()
    }

    #[test]
    fn phases_table() {
        use InstanceState::*;
        let memo = PodMemo::default();
        let cases: Vec<(&str, Pod, Vec<Instance>, &str)> = vec![
            ("nothing yet", pod("Always", &[], &["a"]), vec![], "Pending"),
            (
                "init running",
                pod("Always", &["i"], &["a"]),
                vec![inst("i", true, 0, Running)],
                "Pending",
            ),
            (
                "running",
                pod("Always", &["i"], &["a", "b"]),
                vec![
                    inst("i", true, 0, exited(0)),
                    inst("a", false, 0, Running),
                    inst("b", false, 0, Running),
                ],
                "Running",
            ),
            (
                "one of two started",
                pod("Always", &[], &["a", "b"]),
                vec![inst("a", false, 0, Running)],
                "Pending",
            ),
            (
                "never, succeeded",
                pod("Never", &[], &["a"]),
                vec![inst("a", false, 0, exited(0))],
                "Succeeded",
            ),
            (
                "never, failed",
                pod("Never", &[], &["a"]),
                vec![inst("a", false, 0, exited(1))],
                "Failed",
            ),
            (
                "onfailure, succeeded",
                pod("OnFailure", &[], &["a"]),
                vec![inst("a", false, 0, exited(0))],
                "Succeeded",
            ),
            (
                "onfailure, failed: restarting",
                pod("OnFailure", &[], &["a"]),
                vec![inst("a", false, 0, exited(1))],
                "Running",
            ),
            (
                "always, exited: restarting",
                pod("Always", &[], &["a"]),
                vec![inst("a", false, 0, exited(0))],
                "Running",
            ),
            (
                "never, init failed",
                pod("Never", &["i"], &["a"]),
                vec![inst("i", true, 0, exited(2))],
                "Failed",
            ),
            (
                "onfailure, init failed",
                pod("OnFailure", &["i"], &["a"]),
                vec![inst("i", true, 0, exited(2))],
                "Pending",
            ),
        ];
        for (name, p, inst, want) in cases {
            let s = pod_status(&p, &inst, &memo, "10.0.0.1", 1_700_000_001_000);
            assert_eq!(s.phase.as_deref(), Some(want), "{name}");
        }
    }

    #[test]
    fn running_pod_statuses_and_conditions() {
        let p = pod("Always", &["i"], &["a", "b"]);
        let inst = vec![
            inst("i", true, 0, exited(0)),
            inst("a", false, 0, InstanceState::Running),
            inst("b", false, 0, InstanceState::Running),
        ];
        let s = pod_status(
            &p,
            &inst,
            &PodMemo::default(),
            "10.0.0.1",
            1_700_000_001_000,
        );
        assert_eq!(cond(&s, "PodScheduled"), "True");
        assert_eq!(cond(&s, "Initialized"), "True");
        assert_eq!(cond(&s, "ContainersReady"), "True");
        assert_eq!(cond(&s, "Ready"), "True");
        assert_eq!(s.host_ip.as_deref(), Some("10.0.0.1"));
        assert!(s.start_time.is_some());
        let i = &s.init_container_statuses[0];
        let t = i.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
        for c in &s.container_statuses {
            assert!(c.ready);
            assert!(c.state.as_ref().unwrap().running.is_some());
            assert_eq!(c.restart_count, 0);
            assert_eq!(c.started, Some(true));
        }
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
    }

    #[test]
    fn waiting_reasons() {
        let p = pod("Always", &["i"], &["a"]);
        let s = pod_status(
            &p,
            &[inst("i", true, 0, InstanceState::Running)],
            &PodMemo::default(),
            "",
            0,
        );
        assert_eq!(
            wait_reason(&s.container_statuses[0]).as_deref(),
            Some("PodInitializing")
        );
        assert_eq!(cond(&s, "Initialized"), "False");

        let p = pod("Always", &[], &["a"]);
        let mut memo = PodMemo::default();
        memo.container(false, "a").error = Some(StartError {
            reason: "CreateContainerConfigError".into(),
            message: "configmap \"x\" not found".into(),
        });
        let s = pod_status(&p, &[], &memo, "", 0);
        let c = &s.container_statuses[0];
        assert_eq!(
            wait_reason(c).as_deref(),
            Some("CreateContainerConfigError")
        );
        assert!(c
            .state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .message
            .as_ref()
            .unwrap()
            .contains("not found"));
    }

    #[test]
    fn crash_loop_shows_last_state_and_restart_count() {
        let p = pod("Always", &[], &["a"]);
        let mut memo = PodMemo::default();
        memo.container(false, "a")
            .backoff
            .next(&Default::default(), std::time::Duration::ZERO);
        let inst = vec![
            inst("a", false, 0, exited(1)),
            inst("a", false, 1, exited(1)),
        ];
        let s = pod_status(&p, &inst, &memo, "", 1_700_000_002_000);
        let c = &s.container_statuses[0];
        assert_eq!(wait_reason(c).as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(c.restart_count, 1);
        let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.exit_code, 1);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        assert!(!c.ready);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready"), "False");
    }

    #[test]
    fn readiness_probe_gates_ready() {
        let mut p = pod("Always", &[], &["a"]);
        p.spec.as_mut().unwrap().containers[0].readiness_probe = Some(Probe::default());
        let i = inst("a", false, 0, InstanceState::Running);
        let mut memo = PodMemo::default();
        let s = pod_status(&p, std::slice::from_ref(&i), &memo, "", 0);
        assert!(!s.container_statuses[0].ready);
        assert_eq!(cond(&s, "Ready"), "False");
        memo.probes.insert(
            i.id.clone(),
            ProbeState {
                ready: true,
                started: true,
                kill: None,
            },
        );
        let s = pod_status(&p, &[i], &memo, "", 0);
        assert!(s.container_statuses[0].ready);
        assert_eq!(cond(&s, "Ready"), "True");
    }

    #[test]
    fn eviction_is_failed_evicted() {
        let p = pod("Always", &[], &["a"]);
        let memo = PodMemo {
            evicted: Some("The node was low on resource: memory.".into()),
            ..Default::default()
        };
        let s = pod_status(&p, &[inst("a", false, 0, exited(137))], &memo, "", 0);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("Evicted"));
    }
}
