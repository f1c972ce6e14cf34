//! Table tests lifted from Kubernetes' `pkg/controller/deployment` (`*_test.go` and the worked
//! examples in the code comments).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use kapsel_api::labels as wk;
use kapsel_api::{
    Container, Deployment, DeploymentSpec, DeploymentStrategy, IntOrString, LabelSelector,
    ObjectMeta, PodSpec, PodTemplateSpec, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus,
    RollingUpdateDeployment, Time,
};

use super::util::*;
use super::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn ios(v: &str) -> IntOrString {
    match v.parse::<i32>() {
        Ok(i) => IntOrString::Int(i),
        Err(_) => IntOrString::String(v.to_string()),
    }
}

fn tmpl(image: &str) -> PodTemplateSpec {
    let mut m = ObjectMeta::default();
    m.labels.insert("app".into(), "foo".into());
    PodTemplateSpec {
        metadata: m,
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// `newDeployment(name, replicas, revisionHistoryLimit, maxSurge, maxUnavailable, selector)`.
fn dep(replicas: i32, max_surge: &str, max_unavailable: &str, image: &str) -> Deployment {
    let mut d = Deployment::with_meta(ObjectMeta::namespaced("ns", "foo"));
    d.metadata.uid = Some("dep-uid".into());
    d.metadata.generation = Some(1);
    d.spec = Some(DeploymentSpec {
        replicas: Some(replicas),
        selector: Some(LabelSelector {
            match_labels: BTreeMap::from([("app".to_string(), "foo".to_string())]),
            ..Default::default()
        }),
        template: Some(tmpl(image)),
        strategy: Some(DeploymentStrategy {
            type_: Some(ROLLING_UPDATE.into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(ios(max_surge)),
                max_unavailable: Some(ios(max_unavailable)),
            }),
        }),
        ..Default::default()
    });
    d
}

/// `rs(name, replicas, selector, timestamp)` with a template for `image`.
fn rs(
    name: &str,
    replicas: i32,
    available: i32,
    image: &str,
    age_secs: i64,
    revision: i64,
) -> ReplicaSet {
    let mut r = ReplicaSet::with_meta(ObjectMeta::namespaced("ns", name));
    r.metadata.uid = Some(format!("uid-{name}"));
    r.metadata.creation_timestamp = Some(Time(t0() - Duration::seconds(age_secs)));
    r.metadata.owner_references = vec![crate::podutil::controller_ref(&dep(1, "0", "1", "x"))];
    if revision > 0 {
        r.metadata
            .annotations
            .insert(wk::REVISION.into(), revision.to_string());
    }
    r.spec = Some(ReplicaSetSpec {
        replicas: Some(replicas),
        template: Some(tmpl(image)),
        ..Default::default()
    });
    r.status = Some(ReplicaSetStatus {
        replicas,
        ready_replicas: Some(available),
        available_replicas: Some(available),
        ..Default::default()
    });
    r
}

/// A tiny fake API: applies a plan's actions to the deployment and its ReplicaSets the way the API
/// server would, so multi-step rollouts can be replayed.
struct World {
    d: Deployment,
    rss: Vec<ReplicaSet>,
    now: DateTime<Utc>,
}

impl World {
    fn new(d: Deployment, rss: Vec<ReplicaSet>) -> Self {
        World { d, rss, now: t0() }
    }
    fn step(&mut self) -> Plan {
        let p = plan(&self.d, &self.rss, &[], self.now);
        for a in &p.actions {
            match a {
                Action::CreateReplicaSet(r) => {
                    let mut r = (**r).clone();
                    r.metadata.uid = Some(format!("uid-{}", r.metadata.name()));
                    r.metadata.creation_timestamp = Some(Time(self.now));
                    let n = rs_replicas(&r);
                    r.status = Some(ReplicaSetStatus {
                        replicas: n,
                        ..Default::default()
                    });
                    self.rss.push(r);
                }
                Action::ScaleReplicaSet { name, object, .. }
                | Action::UpdateReplicaSetAnnotations { name, object } => {
                    let cur = self
                        .rss
                        .iter_mut()
                        .find(|r| r.metadata.name() == name)
                        .unwrap();
                    let status = cur.status.clone();
                    *cur = (**object).clone();
                    cur.status = status;
                    // The ReplicaSet controller converges the pod count at once in this model;
                    // availability is what the test says it is.
                    let n = rs_replicas(cur);
                    let st = cur.status.get_or_insert_with(Default::default);
                    st.replicas = n;
                    st.available_replicas = Some(st.available_replicas.unwrap_or(0).min(n));
                    st.ready_replicas = st.available_replicas;
                }
                Action::DeleteReplicaSet { name, .. } => {
                    self.rss.retain(|r| r.metadata.name() != name)
                }
                Action::UpdateDeploymentStatus(s) => self.d.status = Some((**s).clone()),
                Action::UpdateDeploymentAnnotations(a) => self.d.metadata.annotations = a.clone(),
                Action::UpdateDeploymentSpec(d) => {
                    let gen = self.d.metadata.generation.unwrap_or(0) + 1;
                    self.d = (**d).clone();
                    self.d.metadata.generation = Some(gen);
                }
                Action::Event(_) => {}
            }
        }
        p
    }
    /// Step until nothing but status changes (bounded).
    fn settle(&mut self) {
        for _ in 0..20 {
            let p = self.step();
            if p.actions
                .iter()
                .all(|a| matches!(a, Action::UpdateDeploymentStatus(_) | Action::Event(_)))
            {
                return;
            }
        }
        panic!("did not settle");
    }
    fn get(&self, image: &str) -> &ReplicaSet {
        self.rss
            .iter()
            .find(|r| rs_template(r).spec.unwrap().containers[0].image.as_deref() == Some(image))
            .unwrap()
    }
    fn size(&self, image: &str) -> i32 {
        rs_replicas(self.get(image))
    }
    fn set_available(&mut self, image: &str, n: i32) {
        let name = self.get(image).metadata.name().to_string();
        let r = self
            .rss
            .iter_mut()
            .find(|r| r.metadata.name() == name)
            .unwrap();
        let st = r.status.get_or_insert_with(Default::default);
        st.available_replicas = Some(n);
        st.ready_replicas = Some(n);
    }
    fn set_image(&mut self, image: &str) {
        self.d.spec.as_mut().unwrap().template = Some(tmpl(image));
        self.d.metadata.generation = Some(self.d.metadata.generation.unwrap_or(0) + 1);
    }
    fn total(&self) -> i32 {
        self.rss.iter().map(rs_replicas).sum()
    }
}

// ---------------------------------------------------------------- util

#[test]
fn resolve_fenceposts_table() {
    // TestResolveFenceposts (deployment_util_test.go).
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        i32,
        Result<(i32, i32), ()>,
    );
    let cases: &[Case<'_>] = &[
        (Some("0%"), Some("0%"), 0, Ok((0, 1))),
        (Some("39%"), Some("39%"), 10, Ok((4, 3))),
        (Some("oops"), Some("39%"), 10, Err(())),
        (Some("55%"), Some("urg"), 10, Err(())),
        (None, Some("39%"), 10, Ok((0, 3))),
        (Some("39%"), None, 10, Ok((4, 0))),
        (None, None, 10, Ok((0, 1))),
    ];
    for (surge, unavail, desired, want) in cases {
        let s = surge.map(ios).unwrap_or(IntOrString::Int(0));
        let u = unavail.map(ios).unwrap_or(IntOrString::Int(0));
        let got = resolve_fenceposts(&s, &u, *desired).map_err(|_| ());
        assert_eq!(
            &got, want,
            "surge={surge:?} unavailable={unavail:?} desired={desired}"
        );
    }
}

#[test]
fn resolve_fenceposts_doc_comment_cases() {
    // The ResolveFenceposts doc comment: 1 and 2 replicas with small percentages.
    let cases = [
        ("1%", "0%", 2, (1, 0)),
        ("1%", "0%", 1, (1, 0)),
        ("1%", "25%", 2, (1, 0)),
        ("1%", "25%", 1, (1, 0)),
        ("50%", "0%", 2, (1, 0)),
        ("50%", "0%", 1, (1, 0)),
        ("0%", "10%", 2, (0, 1)),
        ("0%", "10%", 1, (0, 1)),
        // 25%/25% defaults: surge rounds up, unavailable down.
        ("25%", "25%", 10, (3, 2)),
        ("25%", "25%", 100, (25, 25)),
        ("25%", "25%", 3, (1, 0)),
        ("3", "2", 10, (3, 2)),
    ];
    for (s, u, d, want) in cases {
        assert_eq!(
            resolve_fenceposts(&ios(s), &ios(u), d).unwrap(),
            want,
            "{s} {u} {d}"
        );
    }
}

#[test]
fn new_rs_new_replicas_table() {
    // TestNewRSNewReplicas: allRSs = [rs5], maxUnavailable 1.
    let cases = [
        (
            "can not scale up - to newRSReplicas",
            ROLLING_UPDATE,
            1,
            5,
            1,
            5,
        ),
        ("scale up - to depReplicas", ROLLING_UPDATE, 6, 2, 10, 6),
        ("recreate - to depReplicas", RECREATE, 3, 1, 1, 3),
    ];
    for (name, strategy, dep_replicas, new_rs_replicas, surge, want) in cases {
        let mut d = dep(dep_replicas, &surge.to_string(), "1", "v2");
        d.spec.as_mut().unwrap().strategy.as_mut().unwrap().type_ = Some(strategy.into());
        let rs5 = rs("rs5", 5, 0, "v1", 10, 0);
        let mut new_rs = rs("new", new_rs_replicas, 0, "v2", 0, 0);
        new_rs.status = None;
        let got = new_rs_new_replicas(&d, &[&rs5], &new_rs).unwrap();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn max_revision_and_last_revision() {
    let a = rs("a", 0, 0, "v1", 30, 1);
    let b = rs("b", 0, 0, "v2", 20, 3);
    let c = rs("c", 0, 0, "v3", 10, 2);
    let all = [&a, &b, &c];
    assert_eq!(max_revision(&all), 3);
    assert_eq!(last_revision(&all), 2);
    assert_eq!(max_revision(&[]), 0);
}

#[test]
fn equal_ignore_hash_ignores_only_the_hash_label() {
    let a = tmpl("v1");
    let mut b = tmpl("v1");
    b.metadata
        .labels
        .insert(wk::POD_TEMPLATE_HASH.into(), "abc".into());
    assert!(equal_ignore_hash(&a, &b));
    b.metadata.labels.insert("x".into(), "y".into());
    assert!(!equal_ignore_hash(&a, &b));
    assert!(!equal_ignore_hash(&tmpl("v1"), &tmpl("v2")));
}

#[test]
fn pod_template_hash_is_stable_safe_and_collision_aware() {
    assert_eq!(fnv32a(b""), 0x811c_9dc5);
    assert_eq!(fnv32a(b"a"), 0xe40c_292c);
    assert_eq!(fnv32a(b"foobar"), 0xbf9c_f968);
    // SafeEncodeString maps digits onto the consonant alphabet: '0'=48 → 48 % 27 = 21 → '4'.
    assert_eq!(safe_encode_string("0"), "4");
    assert_eq!(safe_encode_string("123"), "567");
    let h = pod_template_hash(&tmpl("v1"), None);
    assert_eq!(h, pod_template_hash(&tmpl("v1"), None));
    assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    assert_ne!(h, pod_template_hash(&tmpl("v2"), None));
    assert_ne!(h, pod_template_hash(&tmpl("v1"), Some(1)));
    assert_ne!(
        pod_template_hash(&tmpl("v1"), Some(1)),
        pod_template_hash(&tmpl("v1"), Some(2))
    );
}

#[test]
fn saturation_and_completeness() {
    let d = dep(3, "1", "0", "v1");
    let mut r = rs("foo-1", 3, 3, "v1", 0, 1);
    assert!(
        !is_saturated(&d, Some(&r)),
        "needs desired-replicas annotation"
    );
    set_replicas_annotations(&mut r, 3, 4);
    assert!(is_saturated(&d, Some(&r)));
    r.status.as_mut().unwrap().available_replicas = Some(2);
    assert!(!is_saturated(&d, Some(&r)));
    assert!(!is_saturated(&d, None));

    let st = |upd, rep, avail, og| DeploymentStatus {
        updated_replicas: Some(upd),
        replicas: Some(rep),
        available_replicas: Some(avail),
        observed_generation: Some(og),
        ..Default::default()
    };
    assert!(deployment_complete(&d, &st(3, 3, 3, 1)));
    assert!(
        !deployment_complete(&d, &st(3, 4, 3, 1)),
        "old pods still around"
    );
    assert!(!deployment_complete(&d, &st(3, 3, 2, 1)));
    assert!(
        !deployment_complete(&d, &st(3, 3, 3, 0)),
        "generation not observed"
    );
}

#[test]
fn deployment_progressing_table() {
    // TestDeploymentProgressing (progress_test.go).
    let cases = [
        ("not progressing", (10, 5, 2, 1), (10, 5, 2, 1), false),
        (
            "updated replicas increased",
            (10, 5, 2, 1),
            (10, 6, 2, 1),
            true,
        ),
        ("old replicas decreased", (10, 5, 2, 1), (9, 5, 2, 1), true),
        (
            "ready replicas increased",
            (10, 5, 2, 1),
            (10, 5, 3, 1),
            true,
        ),
        (
            "available replicas increased",
            (10, 5, 2, 1),
            (10, 5, 2, 2),
            true,
        ),
        (
            "available decreased, updated increased",
            (10, 5, 2, 2),
            (10, 6, 2, 1),
            true,
        ),
    ];
    for (name, (r0, u0, rd0, a0), (r1, u1, rd1, a1), want) in cases {
        let mut d = dep(10, "1", "0", "v1");
        d.status = Some(DeploymentStatus {
            replicas: Some(r0),
            updated_replicas: Some(u0),
            ready_replicas: Some(rd0),
            available_replicas: Some(a0),
            ..Default::default()
        });
        let new = DeploymentStatus {
            replicas: Some(r1),
            updated_replicas: Some(u1),
            ready_replicas: Some(rd1),
            available_replicas: Some(a1),
            ..Default::default()
        };
        assert_eq!(deployment_progressing(&d, &new), want, "{name}");
    }
}

#[test]
fn deployment_timed_out_table() {
    // TestDeploymentTimedOut: deadline 30 s.
    let now = t0();
    let cases = [
        ("no progressing condition", None, None, false),
        (
            "last update 30 s ago: not yet",
            Some(REASON_RS_UPDATED),
            Some(30),
            false,
        ),
        (
            "last update 31 s ago",
            Some(REASON_RS_UPDATED),
            Some(31),
            true,
        ),
        (
            "complete rollouts never time out",
            Some(REASON_NEW_RS_AVAILABLE),
            Some(100),
            false,
        ),
        ("already timed out", Some(REASON_TIMED_OUT), Some(1), true),
    ];
    for (name, reason, ago, want) in cases {
        let mut d = dep(1, "1", "0", "v1");
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(30);
        let mut st = DeploymentStatus::default();
        if let (Some(r), Some(ago)) = (reason, ago) {
            st.conditions.push(new_condition(
                COND_PROGRESSING,
                "True",
                r,
                String::new(),
                now - Duration::seconds(ago),
            ));
        }
        assert_eq!(deployment_timed_out(&d, &st, now), want, "{name}");
    }
    let mut d = dep(1, "1", "0", "v1");
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(i32::MAX);
    assert!(!has_progress_deadline(&d));
}

// ---------------------------------------------------------------- rolling.go

#[test]
fn reconcile_new_replica_set_table() {
    // TestDeploymentController_reconcileNewReplicaSet: maxUnavailable 0.
    let cases = [
        (10, "0", 10, 0, None),
        (10, "2", 10, 0, Some(2)),
        (10, "2", 5, 0, Some(7)),
        (10, "2", 10, 2, None),
        (2, "2", 2, 4, Some(2)),
    ];
    for (i, (dep_replicas, surge, old, new, want)) in cases.into_iter().enumerate() {
        let d = dep(dep_replicas, surge, "0", "v2");
        let rss = vec![
            rs("foo-v1", old, old, "v1", 10, 1),
            rs("foo-v2", new, new, "v2", 5, 2),
        ];
        let mut s = Sync {
            d: d.clone(),
            orig: &d,
            rss,
            pods: &[],
            now: t0(),
            actions: vec![],
        };
        let scaled = s.reconcile_new_rs("foo-v2");
        assert_eq!(scaled, want.is_some(), "case {i}");
        if let Some(w) = want {
            assert_eq!(rs_replicas(s.rs("foo-v2")), w, "case {i}");
        }
    }
}

#[test]
fn reconcile_old_replica_sets_table() {
    // TestDeploymentController_reconcileOldReplicaSets: maxSurge 0.
    let cases = [
        (10, "0", 10, 0, 10, 0, Some(9)),
        (10, "2", 10, 0, 10, 0, Some(8)),
        // unhealthy replicas of old RSs are cleaned up first
        (10, "2", 10, 0, 8, 0, Some(8)),
        // one unhealthy cleaned up, one ready scaled down
        (10, "2", 10, 0, 9, 0, Some(8)),
        // unavailable pods of the new RS do not let old RSs shrink further
        (10, "2", 8, 2, 8, 0, None),
    ];
    for (i, (dep_replicas, unavail, old, new, ready_old, ready_new, want)) in
        cases.into_iter().enumerate()
    {
        let d = dep(dep_replicas, "0", unavail, "v2");
        let rss = vec![
            rs("foo-v1", old, ready_old, "v1", 10, 1),
            rs("foo-v2", new, ready_new, "v2", 5, 2),
        ];
        let mut s = Sync {
            d: d.clone(),
            orig: &d,
            rss,
            pods: &[],
            now: t0(),
            actions: vec![],
        };
        let olds = vec!["foo-v1".to_string()];
        let scaled = s.reconcile_old_rss(&olds, &olds, "foo-v2");
        assert_eq!(scaled, want.is_some(), "case {i}");
        if let Some(w) = want {
            assert_eq!(rs_replicas(s.rs("foo-v1")), w, "case {i}");
        }
    }
}

/// The worked example in `reconcileOldReplicaSets`: 10 replicas, maxUnavailable 2, maxSurge 3, the
/// new pods crash-loop. Case 1 (rollback) and case 2 (roll over).
#[test]
fn crashlooping_rollout_10_surge3_unavailable2() {
    let mut d = dep(10, "3", "2", "v1");
    d.metadata
        .annotations
        .insert(wk::REVISION.into(), "1".into());
    let mut w = World::new(d, vec![rs("foo-v1", 10, 10, "v1", 100, 1)]);
    w.settle();
    assert_eq!(w.size("v1"), 10);

    // The deployment is updated: newRS is created with 3 replicas…
    w.set_image("v2");
    let p = w.step();
    let created = p.created();
    assert_eq!(created.len(), 1);
    assert_eq!(rs_replicas(created[0]), 3);
    assert_eq!(created[0].metadata.annotations[wk::REVISION], "2");
    assert_eq!(created[0].metadata.annotations[wk::DESIRED_REPLICAS], "10");
    assert_eq!(created[0].metadata.annotations[wk::MAX_REPLICAS], "13");
    assert!(created[0].metadata.name().starts_with("foo-"));
    assert_eq!(
        created[0].metadata.labels[wk::POD_TEMPLATE_HASH],
        created[0].metadata.name().trim_start_matches("foo-")
    );
    assert_eq!(w.d.metadata.annotations[wk::REVISION], "2");
    // …in the same sync (nothing to scale up: 13 pods) oldRS is scaled down to 8…
    assert_eq!(p.scales(), vec![("foo-v1".to_string(), 10, 8)]);
    // …and the next sync scales newRS up to 5.
    let new_name = w.get("v2").metadata.name().to_string();
    assert_eq!(w.step().scales(), vec![(new_name.clone(), 3, 5)]);
    assert_eq!((w.size("v1"), w.size("v2"), w.total()), (8, 5, 13));
    // The new pods crash-loop: nothing else happens.
    w.settle();
    assert_eq!((w.size("v1"), w.size("v2")), (8, 5));
    // A node fails and one old pod becomes unavailable: 13 − 8 − 5 = 0, old RS is not scaled down.
    w.set_available("v1", 7);
    w.settle();
    assert_eq!((w.size("v1"), w.size("v2")), (8, 5));
    let avail = w.d.status.as_ref().unwrap();
    assert_eq!(avail.available_replicas, Some(7));
    assert_eq!(avail.unavailable_replicas, Some(6));
    assert_eq!(avail.updated_replicas, Some(5));

    // Case 2 first, on a copy: roll over to v3 instead of rolling back.
    let mut w2 = World::new(w.d.clone(), w.rss.clone());
    w2.set_available("v1", 8);
    w2.set_image("v3");
    let p = w2.step();
    // The new RS must start with 0 replicas (13 pods exist already), and since newRS has no
    // unavailable pods the old RSs may shrink by 13 − 8 − 0 = 5: the crash-looping ones go first.
    assert_eq!(rs_replicas(p.created()[0]), 0);
    assert_eq!((w2.size("v1"), w2.size("v2"), w2.size("v3")), (8, 0, 0));
    assert_eq!(
        w2.step().scales(),
        vec![(w2.get("v3").metadata.name().to_string(), 0, 5)]
    );

    // Case 1: the user rolls back. newRSPodsUnavailable is 1 (8 − 7), so maxScaledDown =
    // 13 − 8 − 1 = 4: four crash-looping pods are scaled down, leaving 9 pods.
    let rss = w.rss.clone();
    let undone = rollback::rollback_deployment(&w.d, &rss, 0).unwrap();
    w.d = undone;
    w.d.metadata.generation = Some(w.d.metadata.generation.unwrap() + 1);
    let p = w.step();
    assert!(p.created().is_empty(), "the old ReplicaSet is reused");
    assert_eq!(p.scales(), vec![(new_name.clone(), 5, 1)]);
    assert_eq!(w.size("v1") + w.size("v2"), 9);
    // Revision numbering follows Kubernetes: the reused RS becomes revision 3, history "1".
    let v1 = w.get("v1");
    assert_eq!(v1.metadata.annotations[wk::REVISION], "3");
    assert_eq!(v1.metadata.annotations[wk::REVISION_HISTORY], "1");
    // Then the newRS can be scaled up to 10.
    w.set_available("v1", 8);
    let p = w.step();
    assert_eq!(
        p.scales(),
        vec![(w.get("v1").metadata.name().to_string(), 8, 10)]
    );
    w.set_available("v1", 10);
    w.settle();
    assert_eq!((w.size("v1"), w.size("v2")), (10, 0));
    let st = w.d.status.clone().unwrap();
    let c = get_condition(&st, COND_PROGRESSING).unwrap();
    assert_eq!(c.reason.as_deref(), Some(REASON_NEW_RS_AVAILABLE));
    assert_eq!(w.d.metadata.annotations[wk::REVISION], "3");
}

/// A complete rolling update never exceeds replicas + maxSurge pods nor drops below
/// replicas − maxUnavailable available pods, one step per sync.
#[test]
fn rolling_update_respects_fenceposts_every_step() {
    for (replicas, surge, unavail) in [
        (10, "3", "2"),
        (10, "25%", "25%"),
        (3, "0", "1"),
        (5, "1", "0"),
        (100, "25%", "0"),
    ] {
        let d = dep(replicas, surge, unavail, "v1");
        let mut w = World::new(d, vec![rs("foo-v1", replicas, replicas, "v1", 100, 1)]);
        w.settle();
        w.set_image("v2");
        let (ms, mu) = resolve_fenceposts(&ios(surge), &ios(unavail), replicas).unwrap();
        for _ in 0..200 {
            w.step();
            // Pods become available immediately in this model.
            let n = w.size("v2");
            w.set_available("v2", n);
            assert!(
                w.total() <= replicas + ms,
                "{surge}/{unavail}: total {}",
                w.total()
            );
            let avail: i32 = w.rss.iter().map(rs_available).sum();
            assert!(
                avail >= replicas - mu,
                "{surge}/{unavail}: available {avail}"
            );
            if w.size("v1") == 0 && w.size("v2") == replicas {
                break;
            }
        }
        w.settle();
        assert_eq!(
            (w.size("v1"), w.size("v2")),
            (0, replicas),
            "{surge}/{unavail}"
        );
        assert!(deployment_complete(&w.d, w.d.status.as_ref().unwrap()));
    }
}

// ---------------------------------------------------------------- sync.go

#[test]
fn proportional_scaling_table() {
    // TestScale (sync_test.go): maxSurge 0 / maxUnavailable 0 deployments; the RSs carry the
    // replicas annotations of the old deployment size.
    type Case = (
        &'static str,
        i32,
        i32,
        (&'static str, i32),
        Vec<(&'static str, i32)>,
        i32,
        Vec<i32>,
    );
    let cases: Vec<Case> = vec![
        (
            "proportional scaling: 5 -> 10",
            10,
            5,
            ("v2", 2),
            vec![("v1", 3)],
            4,
            vec![6],
        ),
        (
            "proportional scaling: 5 -> 3",
            3,
            5,
            ("v2", 2),
            vec![("v1", 3)],
            1,
            vec![2],
        ),
        (
            "proportional scaling: 9 -> 4",
            4,
            9,
            ("v2", 8),
            vec![("v1", 1)],
            4,
            vec![0],
        ),
        (
            "proportional scaling: 7 -> 10",
            10,
            7,
            ("v3", 2),
            vec![("v2", 3), ("v1", 2)],
            3,
            vec![4, 3],
        ),
        (
            "proportional scaling: 13 -> 8",
            8,
            13,
            ("v3", 2),
            vec![("v2", 8), ("v1", 3)],
            1,
            vec![5, 2],
        ),
        (
            "leftover distribution: 3 -> 4",
            4,
            3,
            ("v3", 1),
            vec![("v2", 1), ("v1", 1)],
            2,
            vec![1, 1],
        ),
        (
            "leftover distribution: 3 -> 2",
            2,
            3,
            ("v3", 1),
            vec![("v2", 1), ("v1", 1)],
            1,
            vec![1, 0],
        ),
    ];
    for (name, new_size, old_size, (new_img, new_n), olds, want_new, want_old) in cases {
        let d = dep(new_size, "0", "0", new_img);
        let mut rss = vec![];
        let mut newr = rs(&format!("foo-{new_img}"), new_n, 0, new_img, 1, 10);
        set_replicas_annotations(&mut newr, old_size, old_size);
        rss.push(newr);
        for (i, (img, n)) in olds.iter().enumerate() {
            let mut r = rs(
                &format!("foo-{img}"),
                *n,
                0,
                img,
                10 * (i as i64 + 2),
                5 - i as i64,
            );
            set_replicas_annotations(&mut r, old_size, old_size);
            rss.push(r);
        }
        let mut w = World::new(d, rss);
        w.step();
        assert_eq!(w.size(new_img), want_new, "{name}: new");
        for ((img, _), want) in olds.iter().zip(want_old) {
            assert_eq!(w.size(img), want, "{name}: {img}");
        }
    }
}

#[test]
fn revision_history_limit_cleans_oldest_scaled_down() {
    let mut d = dep(2, "1", "0", "v5");
    d.spec.as_mut().unwrap().revision_history_limit = Some(2);
    let mut rss = vec![];
    for i in 1..=5 {
        let n = if i == 5 { 2 } else { 0 };
        rss.push(rs(&format!("foo-v{i}"), n, n, &format!("v{i}"), 100 - i, i));
    }
    rss[0].status.as_mut().unwrap().observed_generation = Some(0);
    let mut w = World::new(d, rss);
    let mut deleted: Vec<String> = vec![];
    for _ in 0..3 {
        let p = w.step();
        deleted.extend(p.actions.iter().filter_map(|a| match a {
            Action::DeleteReplicaSet { name, .. } => Some(name.clone()),
            _ => None,
        }));
    }
    assert_eq!(deleted, vec!["foo-v1", "foo-v2"]);
    let left: Vec<&str> = w.rss.iter().map(|r| r.metadata.name()).collect();
    assert_eq!(left, vec!["foo-v3", "foo-v4", "foo-v5"]);
}

#[test]
fn paused_deployment_only_scales_then_resume_rolls() {
    let mut d = dep(4, "1", "0", "v1");
    d.spec.as_mut().unwrap().paused = Some(true);
    let mut w = World::new(d, vec![rs("foo-v1", 4, 4, "v1", 100, 1)]);
    w.step();
    let c = get_condition(w.d.status.as_ref().unwrap(), COND_PROGRESSING)
        .unwrap()
        .clone();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("Unknown", Some(REASON_PAUSED))
    );
    w.set_image("v2");
    w.settle();
    assert_eq!(w.rss.len(), 1, "paused: no new ReplicaSet");
    // Scaling still works while paused.
    w.d.spec.as_mut().unwrap().replicas = Some(6);
    w.settle();
    assert_eq!(w.size("v1"), 6);
    w.set_available("v1", 6);
    w.settle();
    // Resume: the Progressing condition becomes DeploymentResumed and the rollout starts.
    w.d.spec.as_mut().unwrap().paused = Some(false);
    let p = w.step();
    assert_eq!(p.created().len(), 1);
    let c = get_condition(w.d.status.as_ref().unwrap(), COND_PROGRESSING).unwrap();
    assert_eq!(c.reason.as_deref(), Some(REASON_NEW_RS));
}

#[test]
fn progress_deadline_exceeded_when_new_pods_never_become_available() {
    let mut d = dep(3, "1", "0", "v1");
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(10);
    let mut w = World::new(d, vec![rs("foo-v1", 3, 3, "v1", 100, 1)]);
    w.settle();
    w.set_image("v2");
    w.step();
    let p = w.step();
    assert!(
        p.requeue_after.is_some(),
        "a stuck rollout requeues itself at the deadline"
    );
    let after = p.requeue_after.unwrap();
    assert!(after <= std::time::Duration::from_secs(11), "{after:?}");
    w.now += Duration::seconds(11);
    let p = w.step();
    let st = w.d.status.clone().unwrap();
    let c = get_condition(&st, COND_PROGRESSING).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some(REASON_TIMED_OUT))
    );
    assert!(p.events().iter().any(|e| e.reason == REASON_TIMED_OUT));
    assert_eq!(p.requeue_after, None);
    // Old pods keep serving: maxUnavailable 0 means the old RS was never scaled down.
    assert_eq!(w.size("v1"), 3);
    let a = get_condition(&st, COND_AVAILABLE).unwrap();
    assert_eq!(a.status, "True");
}

#[test]
fn recreate_scales_old_down_before_creating_new() {
    let mut d = dep(3, "0", "1", "v1");
    d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
        type_: Some(RECREATE.into()),
        rolling_update: None,
    });
    let mut w = World::new(d, vec![rs("foo-v1", 3, 3, "v1", 100, 1)]);
    w.settle();
    w.set_image("v2");
    let p = w.step();
    assert!(p.created().is_empty());
    assert_eq!(p.scales(), vec![("foo-v1".into(), 3, 0)]);
    // Status still reports old pods until the ReplicaSet controller removed them.
    w.rss[0].status.as_mut().unwrap().replicas = 1;
    assert!(w.step().created().is_empty());
    w.rss[0].status.as_mut().unwrap().replicas = 0;
    let p = w.step();
    assert_eq!(rs_replicas(p.created()[0]), 3);
}

#[test]
fn rollback_revisions_follow_kubernetes() {
    let mut d = dep(2, "1", "0", "v1");
    let mut w = World::new(d.clone(), vec![]);
    w.settle();
    w.set_available("v1", 2);
    w.settle();
    assert_eq!(w.get("v1").metadata.annotations[wk::REVISION], "1");
    w.set_image("v2");
    for _ in 0..10 {
        w.step();
        let n = w.size("v2");
        w.set_available("v2", n);
    }
    w.settle();
    assert_eq!(w.get("v2").metadata.annotations[wk::REVISION], "2");
    assert_eq!(w.d.metadata.annotations[wk::REVISION], "2");
    // undo → v1 becomes revision 3 (history "1").
    w.d = rollback::rollback_deployment(&w.d, &w.rss, 0).unwrap();
    assert_eq!(
        template(&w.d),
        tmpl("v1"),
        "template copied without the hash label"
    );
    for _ in 0..10 {
        w.step();
        let n = w.size("v1");
        w.set_available("v1", n);
    }
    w.settle();
    assert_eq!(w.get("v1").metadata.annotations[wk::REVISION], "3");
    assert_eq!(w.get("v1").metadata.annotations[wk::REVISION_HISTORY], "1");
    assert_eq!(w.d.metadata.annotations[wk::REVISION], "3");
    // undo again goes back to revision 2 (the previous one), which becomes 4.
    w.d = rollback::rollback_deployment(&w.d, &w.rss, 0).unwrap();
    for _ in 0..10 {
        w.step();
        let n = w.size("v2");
        w.set_available("v2", n);
    }
    assert_eq!(w.get("v2").metadata.annotations[wk::REVISION], "4");
    assert_eq!(w.get("v2").metadata.annotations[wk::REVISION_HISTORY], "2");
    // --to-revision=3 (v1) works; unknown revisions and the current template are errors.
    assert!(rollback::rollback_deployment(&w.d, &w.rss, 3).is_ok());
    assert!(matches!(
        rollback::rollback_deployment(&w.d, &w.rss, 9),
        Err(crate::Error::RevisionNotFound(9))
    ));
    assert!(matches!(
        rollback::rollback_deployment(&w.d, &w.rss, 4),
        Err(crate::Error::RollbackTemplateUnchanged)
    ));
    // The deprecated rollback annotation is honoured by the controller and cleared.
    d = w.d.clone();
    d.metadata
        .annotations
        .insert(DEPRECATED_ROLLBACK_TO.into(), "3".into());
    w.d = d;
    let p = w.step();
    assert!(p.events().iter().any(|e| e.reason == REASON_ROLLBACK_DONE));
    assert!(!w
        .d
        .metadata
        .annotations
        .contains_key(DEPRECATED_ROLLBACK_TO));
    assert_eq!(template(&w.d), tmpl("v1"));
}

#[test]
fn restart_annotation_creates_a_new_replica_set() {
    let d = dep(2, "1", "0", "v1");
    let mut w = World::new(d, vec![rs("foo-v1", 2, 2, "v1", 100, 1)]);
    w.settle();
    let mut t = tmpl("v1");
    t.metadata
        .annotations
        .insert(wk::RESTARTED_AT.into(), "2024-05-01T10:00:00Z".into());
    w.d.spec.as_mut().unwrap().template = Some(t);
    let p = w.step();
    assert_eq!(p.created().len(), 1);
    assert_eq!(p.created()[0].metadata.annotations[wk::REVISION], "2");
}

#[test]
fn status_counts_and_available_condition() {
    let mut d = dep(10, "3", "2", "v2");
    d.metadata.generation = Some(7);
    let rss = vec![
        rs("foo-v1", 8, 8, "v1", 100, 1),
        rs("foo-v2", 5, 0, "v2", 50, 2),
    ];
    let mut w = World::new(d, rss);
    let p = w.step();
    assert!(p.scales().is_empty(), "13 − 8 − 5 = 0: nothing to scale");
    let st = w.d.status.clone().unwrap();
    assert_eq!(st.observed_generation, Some(7));
    assert_eq!(st.replicas, Some(13));
    assert_eq!(st.updated_replicas, Some(5));
    assert_eq!(st.ready_replicas, Some(8));
    assert_eq!(st.available_replicas, Some(8));
    assert_eq!(st.unavailable_replicas, Some(5));
    let a = get_condition(&st, COND_AVAILABLE).unwrap();
    assert_eq!(
        (a.status.as_str(), a.reason.as_deref()),
        ("True", Some(REASON_MIN_AVAILABLE))
    );
}
