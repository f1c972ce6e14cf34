//! The ReplicaSet controller's decision core (`pkg/controller/replicaset/replica_set.go`):
//! claim pods (adopt orphans that match, release pods that stopped matching), create or delete
//! pods to reach `spec.replicas` (deleting the least valuable pods first), and compute the status.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use kapsel_api::{ObjectMeta, Pod, ReplicaSet, ReplicaSetStatus, Resource};

use crate::events::EventSpec;
use crate::labels;
use crate::podutil::{self, *};

/// `burstReplicas`: at most this many creations or deletions per sync.
pub const BURST_REPLICAS: usize = 500;
/// `ExpectationsTimeout`: expectations older than this are considered satisfied.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::minutes(5);

/// One intended write of a ReplicaSet sync.
#[derive(Clone, Debug, PartialEq)]
pub enum RsAction {
    /// Create `count` pods from `template` (the runtime names each `generateName` + 5 chars).
    CreatePods {
        count: usize,
        template: Box<Pod>,
    },
    DeletePod {
        name: String,
        uid: String,
    },
    /// Add this RS as controller owner of an orphan that matches the selector.
    AdoptPod {
        name: String,
        uid: String,
    },
    /// Remove this RS's owner reference from a pod that no longer matches.
    ReleasePod {
        name: String,
        uid: String,
    },
    UpdateStatus(Box<ReplicaSetStatus>),
    Event(EventSpec),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RsPlan {
    pub actions: Vec<RsAction>,
    /// Sync again then (a pod becomes available after minReadySeconds).
    pub requeue_after: Option<std::time::Duration>,
}

impl RsPlan {
    pub fn creates(&self) -> usize {
        self.actions
            .iter()
            .map(|a| match a {
                RsAction::CreatePods { count, .. } => *count,
                _ => 0,
            })
            .sum()
    }
    pub fn deletes(&self) -> Vec<&str> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                RsAction::DeletePod { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }
    pub fn status(&self) -> Option<&ReplicaSetStatus> {
        self.actions.iter().find_map(|a| match a {
            RsAction::UpdateStatus(s) => Some(&**s),
            _ => None,
        })
    }
}

/// `ControllerExpectations` with UID tracking: the pods this controller created (by name) or
/// deleted (by uid) but has not yet seen so in its pod cache. While unsatisfied, the RS is not
/// resized again, so a burst of watch events cannot create or delete too many pods.
#[derive(Clone, Debug)]
pub struct Expectations {
    pub creates: HashSet<String>,
    pub deletes: HashSet<String>,
    pub set_at: DateTime<Utc>,
}

impl Expectations {
    pub fn new(now: DateTime<Utc>) -> Self {
        Expectations {
            creates: HashSet::new(),
            deletes: HashSet::new(),
            set_at: now,
        }
    }
    /// Everything issued has been observed, or the expectations expired.
    pub fn satisfied(&self, now: DateTime<Utc>) -> bool {
        (self.creates.is_empty() && self.deletes.is_empty())
            || now - self.set_at > EXPECTATIONS_TIMEOUT
    }
    /// Check the issued operations against the pod cache: created pods that appeared, deleted
    /// pods that are terminating or gone.
    pub fn observe<'a>(&mut self, pods: impl IntoIterator<Item = &'a Pod>) {
        let mut present: HashMap<&str, &Pod> = HashMap::new();
        let mut by_uid: HashMap<&str, &Pod> = HashMap::new();
        for p in pods {
            present.insert(p.metadata.name(), p);
            by_uid.insert(p.metadata.uid(), p);
        }
        self.creates.retain(|n| !present.contains_key(n.as_str()));
        self.deletes.retain(|u| {
            by_uid
                .get(u.as_str())
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        });
    }
}

/// Pods that the selector of `rs` picks and this RS controls or may adopt, split by what to do.
struct Claim<'a> {
    owned: Vec<&'a Pod>,
    adopt: Vec<&'a Pod>,
    release: Vec<&'a Pod>,
}

fn claim<'a>(rs: &ReplicaSet, pods: &'a [Pod]) -> Claim<'a> {
    let sel = rs
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let uid = rs.metadata.uid();
    let mut c = Claim {
        owned: vec![],
        adopt: vec![],
        release: vec![],
    };
    // An RS without a selector selects nothing (validation requires one).
    let empty = labels::is_everything(&sel);
    for p in pods {
        if p.metadata.namespace() != rs.metadata.namespace() {
            continue;
        }
        let matches = !empty && labels::selects(&sel, &p.metadata.labels);
        match controller_of(&p.metadata) {
            Some(o) if o.uid == uid => {
                if matches {
                    c.owned.push(p);
                } else {
                    c.release.push(p);
                }
            }
            Some(_) => {}
            None => {
                if matches
                    && p.metadata.deletion_timestamp.is_none()
                    && rs.metadata.deletion_timestamp.is_none()
                {
                    c.adopt.push(p);
                }
            }
        }
    }
    c
}

/// The pod a ReplicaSet creates (`GetPodFromTemplate`).
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let t = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let mut meta = ObjectMeta {
        namespace: Some(rs.metadata.namespace().to_string()),
        generate_name: Some(format!("{}-", rs.metadata.name())),
        labels: t.metadata.labels.clone(),
        annotations: t.metadata.annotations.clone(),
        finalizers: t.metadata.finalizers.clone(),
        ..Default::default()
    };
    meta.owner_references = vec![podutil::controller_ref(rs)];
    let mut p = Pod::with_meta(meta);
    p.spec = t.spec;
    p
}

/// `getPodsRankedByRelatedPodsOnSameNode` + `ActivePodsWithRanks.Less`: the order in which
/// surplus pods are deleted (first = deleted first).
pub fn deletion_order(pods: &[&Pod], now: DateTime<Utc>) -> Vec<usize> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in pods {
        if let Some(n) = node_name(p) {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let rank = |p: &Pod| node_name(p).map(|n| per_node[n]).unwrap_or(0);
    let phase_rank = |p: &Pod| match phase(p) {
        PHASE_PENDING => 0,
        PHASE_UNKNOWN => 1,
        PHASE_RUNNING => 2,
        _ => 0,
    };
    let ready_since = |p: &Pod| {
        ready_condition(p)
            .filter(|c| c.status == "True")
            .and_then(|c| c.last_transition_time)
    };
    let _ = now;
    let mut idx: Vec<usize> = (0..pods.len()).collect();
    idx.sort_by(|&i, &j| {
        let (a, b) = (pods[i], pods[j]);
        // 1. unassigned < assigned
        node_name(a)
            .is_some()
            .cmp(&node_name(b).is_some())
            // 2. Pending < Unknown < Running
            .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
            // 3. not ready < ready
            .then_with(|| is_ready(a).cmp(&is_ready(b)))
            // 4. more related pods on the same node first
            .then_with(|| rank(b).cmp(&rank(a)))
            // 5. ready for less time first (both ready)
            .then_with(|| match (ready_since(a), ready_since(b)) {
                (Some(x), Some(y)) => y.cmp(&x),
                _ => std::cmp::Ordering::Equal,
            })
            // 6. more restarts first
            .then_with(|| restart_count(b).cmp(&restart_count(a)))
            // 7. empty creation time < newer < older
            .then_with(
                || match (a.metadata.creation_timestamp, b.metadata.creation_timestamp) {
                    (None, Some(_)) => std::cmp::Ordering::Less,
                    (Some(_), None) => std::cmp::Ordering::Greater,
                    (Some(x), Some(y)) => y.cmp(&x),
                    (None, None) => std::cmp::Ordering::Equal,
                },
            )
            .then_with(|| a.metadata.name().cmp(b.metadata.name()))
    });
    idx
}

/// Does a pod carry every label of the template (`fullyLabeledReplicas`)?
fn fully_labeled(rs: &ReplicaSet, p: &Pod) -> bool {
    let t = rs.spec.as_ref().and_then(|s| s.template.as_ref());
    t.map(|t| {
        t.metadata
            .labels
            .iter()
            .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
    })
    .unwrap_or(true)
}

/// One `syncReplicaSet`: `pods` are the pods of the RS's namespace from the cache,
/// `expectations_satisfied` whether earlier creations/deletions have been observed.
pub fn plan(
    rs: &ReplicaSet,
    pods: &[Pod],
    expectations_satisfied: bool,
    now: DateTime<Utc>,
) -> RsPlan {
    let mut out = RsPlan::default();
    let c = claim(rs, pods);
    for p in &c.adopt {
        out.actions.push(RsAction::AdoptPod {
            name: p.metadata.name().into(),
            uid: p.metadata.uid().into(),
        });
    }
    for p in &c.release {
        out.actions.push(RsAction::ReleasePod {
            name: p.metadata.name().into(),
            uid: p.metadata.uid().into(),
        });
    }
    let mut filtered: Vec<&Pod> = c.owned.iter().chain(c.adopt.iter()).copied().collect();
    filtered.retain(|p| is_active(p));
    let want = rs
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize;
    let deleting = rs.metadata.deletion_timestamp.is_some();
    if expectations_satisfied && !deleting {
        if filtered.len() < want {
            let n = (want - filtered.len()).min(BURST_REPLICAS);
            out.actions.push(RsAction::CreatePods {
                count: n,
                template: Box::new(pod_from_template(rs)),
            });
        } else if filtered.len() > want {
            let n = (filtered.len() - want).min(BURST_REPLICAS);
            for i in deletion_order(&filtered, now).into_iter().take(n) {
                let p = filtered[i];
                out.actions.push(RsAction::DeletePod {
                    name: p.metadata.name().into(),
                    uid: p.metadata.uid().into(),
                });
            }
        }
    }
    // Status from the pods as observed before this sync's writes (as Kubernetes does).
    let mrs = rs
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let ready = filtered.iter().filter(|p| is_ready(p)).count() as i32;
    let available = filtered
        .iter()
        .filter(|p| is_available(p, mrs, now))
        .count() as i32;
    let prev = rs.status.clone().unwrap_or_default();
    let st = ReplicaSetStatus {
        replicas: filtered.len() as i32,
        fully_labeled_replicas: Some(
            filtered.iter().filter(|p| fully_labeled(rs, p)).count() as i32
        ),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        observed_generation: rs.metadata.generation,
        conditions: prev.conditions.clone(),
    };
    if st != prev {
        out.actions.push(RsAction::UpdateStatus(Box::new(st)));
    }
    if mrs > 0 {
        out.requeue_after = filtered
            .iter()
            .filter(|p| !is_available(p, mrs, now))
            .filter_map(|p| available_at(p, mrs))
            .min()
            .and_then(|t| (t - now + Duration::milliseconds(100)).to_std().ok());
    }
    out
}

/// Key of the RS that controls a pod (fan-in: pod event → owner RS).
pub fn owner_key(p: &Pod) -> Option<(String, String)> {
    let o = controller_of(&p.metadata)?;
    (o.kind == ReplicaSet::KIND).then(|| (p.metadata.namespace().to_string(), o.name.clone()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use kapsel_api::{
        Condition, LabelSelector, PodSpec, PodStatus, PodTemplateSpec, ReplicaSetSpec, Time,
    };

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn rs(replicas: i32) -> ReplicaSet {
        let mut r = ReplicaSet::with_meta(ObjectMeta::namespaced("ns", "web"));
        r.metadata.uid = Some("rs-uid".into());
        r.metadata.generation = Some(3);
        let l: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        r.spec = Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: Some(LabelSelector {
                match_labels: l.clone(),
                ..Default::default()
            }),
            template: Some(PodTemplateSpec {
                metadata: ObjectMeta {
                    labels: l,
                    ..Default::default()
                },
                spec: Some(PodSpec::default()),
            }),
            ..Default::default()
        });
        r
    }

    /// A pod: `owned` by the RS, on `node` (or unscheduled), `phase`, ready since `ready_ago`.
    fn pod(
        name: &str,
        owned: bool,
        node: Option<&str>,
        phase: &str,
        ready_ago: Option<i64>,
        age: i64,
    ) -> Pod {
        let mut p = Pod::with_meta(ObjectMeta::namespaced("ns", name));
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.labels.insert("app".into(), "web".into());
        p.metadata.creation_timestamp = Some(Time(t0() - Duration::seconds(age)));
        if owned {
            p.metadata.owner_references = vec![podutil::controller_ref(&rs(1))];
        }
        p.spec = Some(PodSpec {
            node_name: node.map(str::to_string),
            ..Default::default()
        });
        let mut st = PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        };
        if let Some(ago) = ready_ago {
            st.conditions.push(Condition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(t0() - Duration::seconds(ago))),
                ..Default::default()
            });
        }
        p.status = Some(st);
        p
    }

    #[test]
    fn creates_missing_pods_from_template_with_controller_ref() {
        let p = plan(
            &rs(5),
            &[pod("a", true, Some("n1"), "Running", Some(10), 10)],
            true,
            t0(),
        );
        assert_eq!(p.creates(), 4);
        let RsAction::CreatePods { template, .. } = &p.actions[0] else {
            panic!()
        };
        assert_eq!(template.metadata.generate_name.as_deref(), Some("web-"));
        let o = template.metadata.controller_ref().unwrap();
        assert_eq!(
            (o.kind.as_str(), o.uid.as_str(), o.block_owner_deletion),
            ("ReplicaSet", "rs-uid", Some(true))
        );
        assert_eq!(template.metadata.labels["app"], "web");
    }

    #[test]
    fn expectations_block_resizing_but_not_status() {
        let p = plan(&rs(5), &[], false, t0());
        assert_eq!(p.creates(), 0);
        assert_eq!(p.status().unwrap().replicas, 0);
        let mut e = Expectations::new(t0());
        e.creates.extend(["web-a".to_string(), "web-b".to_string()]);
        e.deletes.insert("uid-old".to_string());
        let old = pod("old", true, Some("n1"), "Running", Some(1), 1);
        let a = pod("web-a", true, None, "Pending", None, 0);
        e.observe([&old, &a]);
        assert!(!e.satisfied(t0()));
        assert_eq!(e.creates.len(), 1);
        let mut old_terminating = old.clone();
        old_terminating.metadata.deletion_timestamp = Some(Time(t0()));
        let b = pod("web-b", true, None, "Pending", None, 0);
        e.observe([&old_terminating, &a, &b]);
        assert!(e.satisfied(t0()));
        let mut e = Expectations::new(t0());
        e.creates.insert("never".into());
        assert!(
            e.satisfied(t0() + Duration::minutes(6)),
            "expectations expire"
        );
    }

    #[test]
    fn deletion_ranking_unscheduled_then_not_ready_then_newest() {
        let pods = vec![
            pod("old-ready", true, Some("n1"), "Running", Some(100), 100),
            pod("new-ready", true, Some("n2"), "Running", Some(5), 10),
            pod("unscheduled", true, None, "Pending", None, 50),
            pod("not-ready", true, Some("n3"), "Running", None, 200),
            pod("pending", true, Some("n4"), "Pending", None, 300),
        ];
        let cases = [
            (4, vec!["unscheduled"]),
            (3, vec!["unscheduled", "pending"]),
            (2, vec!["unscheduled", "pending", "not-ready"]),
            (1, vec!["unscheduled", "pending", "not-ready", "new-ready"]),
            (
                0,
                vec![
                    "unscheduled",
                    "pending",
                    "not-ready",
                    "new-ready",
                    "old-ready",
                ],
            ),
        ];
        for (replicas, want) in cases {
            let p = plan(&rs(replicas), &pods, true, t0());
            assert_eq!(p.deletes(), want, "replicas={replicas}");
        }
    }

    #[test]
    fn colocated_pods_are_deleted_first() {
        let pods = vec![
            pod("alone", true, Some("n1"), "Running", Some(10), 10),
            pod("crowd-a", true, Some("n2"), "Running", Some(10), 10),
            pod("crowd-b", true, Some("n2"), "Running", Some(10), 10),
        ];
        assert_eq!(plan(&rs(2), &pods, true, t0()).deletes(), vec!["crowd-a"]);
    }

    #[test]
    fn adopts_matching_orphans_and_releases_non_matching() {
        let mut stray = pod("stray", true, Some("n1"), "Running", Some(10), 10);
        stray.metadata.labels.insert("app".into(), "other".into());
        let mut foreign = pod("foreign", false, Some("n1"), "Running", Some(10), 10);
        foreign.metadata.owner_references = vec![kapsel_api::OwnerReference {
            kind: "ReplicaSet".into(),
            uid: "someone-else".into(),
            controller: Some(true),
            ..Default::default()
        }];
        let pods = vec![
            pod("orphan", false, Some("n1"), "Running", Some(10), 10),
            stray,
            foreign,
        ];
        let p = plan(&rs(1), &pods, true, t0());
        assert!(p.actions.contains(&RsAction::AdoptPod {
            name: "orphan".into(),
            uid: "uid-orphan".into()
        }));
        assert!(p.actions.contains(&RsAction::ReleasePod {
            name: "stray".into(),
            uid: "uid-stray".into()
        }));
        // The adopted orphan counts: nothing to create or delete.
        assert_eq!((p.creates(), p.deletes().len()), (0, 0));
        assert_eq!(p.status().unwrap().replicas, 1);
    }

    #[test]
    fn failed_and_terminating_pods_are_replaced() {
        let mut gone = pod("gone", true, Some("n1"), "Running", Some(10), 10);
        gone.metadata.deletion_timestamp = Some(Time(t0()));
        let pods = vec![
            pod("ok", true, Some("n1"), "Running", Some(10), 10),
            pod("failed", true, Some("n1"), "Failed", None, 10),
            gone,
        ];
        let p = plan(&rs(3), &pods, true, t0());
        assert_eq!(p.creates(), 2);
        assert!(
            p.deletes().is_empty(),
            "failed pods are left for inspection"
        );
    }

    #[test]
    fn status_counts_with_min_ready_seconds() {
        let mut r = rs(4);
        r.spec.as_mut().unwrap().min_ready_seconds = Some(30);
        let mut unlabeled = pod("partial", true, Some("n1"), "Running", Some(100), 10);
        unlabeled.metadata.labels.insert("app".into(), "web".into());
        let pods = vec![
            pod("long-ready", true, Some("n1"), "Running", Some(100), 100),
            pod("just-ready", true, Some("n1"), "Running", Some(10), 100),
            pod("not-ready", true, Some("n1"), "Running", None, 100),
            unlabeled,
        ];
        let p = plan(&r, &pods, true, t0());
        let s = p.status().unwrap();
        assert_eq!(s.replicas, 4);
        assert_eq!(s.fully_labeled_replicas, Some(4));
        assert_eq!(s.ready_replicas, Some(3));
        assert_eq!(s.available_replicas, Some(2));
        assert_eq!(s.observed_generation, Some(3));
        // just-ready becomes available 20 s from now.
        let after = p.requeue_after.unwrap();
        assert!(
            after >= std::time::Duration::from_secs(20)
                && after < std::time::Duration::from_secs(21)
        );
    }

    #[test]
    fn deleting_replica_set_neither_creates_nor_adopts() {
        let mut r = rs(3);
        r.metadata.deletion_timestamp = Some(Time(t0()));
        let p = plan(
            &r,
            &[pod("orphan", false, Some("n1"), "Running", Some(1), 1)],
            true,
            t0(),
        );
        assert_eq!(p.creates(), 0);
        assert!(!p
            .actions
            .iter()
            .any(|a| matches!(a, RsAction::AdoptPod { .. })));
    }
}
