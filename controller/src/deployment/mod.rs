//! The Deployment controller's decision core: a port of Kubernetes'
//! `pkg/controller/deployment` as a pure function of (deployment, its ReplicaSets, their pods,
//! now) → intended [`Action`]s.
//!
//! Kubernetes' controller writes as it goes and continues with the objects the API returned. Here
//! every write becomes an [`Action`] and is applied to in-memory working copies, so the rest of the
//! sync sees exactly what Kubernetes' would. The runtime performs the actions in order with
//! resourceVersion CAS and requeues on the first failure (the sync is level-triggered and
//! idempotent, so a partial sync is harmless).

pub mod progress;
pub mod recreate;
pub mod rollback;
pub mod rolling;
pub mod sync;
pub mod util;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kapsel_api::{Deployment, DeploymentStatus, Pod, ReplicaSet};

use crate::events::EventSpec;

/// One intended write (or event) of a deployment sync.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create this ReplicaSet (deterministic name `<deployment>-<pod-template-hash>`).
    CreateReplicaSet(Box<ReplicaSet>),
    /// Set `spec.replicas` (and the desired/max-replicas annotations): `object` is the whole
    /// updated ReplicaSet.
    ScaleReplicaSet {
        name: String,
        from: i32,
        to: i32,
        object: Box<ReplicaSet>,
    },
    /// Annotations / minReadySeconds of an existing ReplicaSet changed (revision sync).
    UpdateReplicaSetAnnotations {
        name: String,
        object: Box<ReplicaSet>,
    },
    /// Old ReplicaSet beyond `revisionHistoryLimit`.
    DeleteReplicaSet {
        name: String,
        uid: String,
    },
    /// New `metadata.annotations` of the deployment (the revision annotation).
    UpdateDeploymentAnnotations(BTreeMap<String, String>),
    /// Rollback: the deployment with the old template and annotations, `rollback.to` removed.
    UpdateDeploymentSpec(Box<Deployment>),
    UpdateDeploymentStatus(Box<DeploymentStatus>),
    Event(EventSpec),
}

/// The result of one sync.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Sync again after this long even if nothing changes (progress deadline, minReadySeconds).
    pub requeue_after: Option<std::time::Duration>,
}

impl Plan {
    /// `(name, from, to)` of every scale action, for tests and logs.
    pub fn scales(&self) -> Vec<(String, i32, i32)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::ScaleReplicaSet { name, from, to, .. } => Some((name.clone(), *from, *to)),
                _ => None,
            })
            .collect()
    }
    pub fn created(&self) -> Vec<&ReplicaSet> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateReplicaSet(rs) => Some(&**rs),
                _ => None,
            })
            .collect()
    }
    pub fn status(&self) -> Option<&DeploymentStatus> {
        self.actions.iter().rev().find_map(|a| match a {
            Action::UpdateDeploymentStatus(s) => Some(&**s),
            _ => None,
        })
    }
    pub fn events(&self) -> Vec<&EventSpec> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }
}

/// The working state of one sync (Kubernetes' `d` plus the RS objects it holds).
pub struct Sync<'a> {
    /// The deployment as the sync sees it (status and annotations mutated as Kubernetes does).
    pub d: Deployment,
    orig: &'a Deployment,
    /// Working copies of the deployment's ReplicaSets; new ones are appended.
    pub rss: Vec<ReplicaSet>,
    pods: &'a [Pod],
    pub now: DateTime<Utc>,
    pub actions: Vec<Action>,
}

/// Run one `syncDeployment`. `rss` are the ReplicaSets the deployment controls (already claimed),
/// `pods` the pods those ReplicaSets control (only Recreate looks at them).
pub fn plan(d: &Deployment, rss: &[ReplicaSet], pods: &[Pod], now: DateTime<Utc>) -> Plan {
    let mut s = Sync {
        d: d.clone(),
        orig: d,
        rss: rss.to_vec(),
        pods,
        now,
        actions: Vec::new(),
    };
    s.sync_deployment();
    s.finish()
}

impl<'a> Sync<'a> {
    fn sync_deployment(&mut self) {
        let sel = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        if crate::labels::is_everything(&sel) {
            self.event(EventSpec::warning(
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            ));
            let status = self.d.status.get_or_insert_with(Default::default);
            if status.observed_generation.unwrap_or(0) < self.orig.metadata.generation.unwrap_or(0)
            {
                status.observed_generation = self.orig.metadata.generation;
            }
            return;
        }
        if self.d.metadata.deletion_timestamp.is_some() {
            self.sync_status_only();
            return;
        }
        self.check_paused_conditions();
        if util::is_paused(&self.d) {
            self.sync();
            return;
        }
        if rollback::rollback_to(&self.d).is_some() {
            self.rollback();
            return;
        }
        if self.is_scaling_event() {
            self.sync();
            return;
        }
        match util::strategy_type(&self.d) {
            util::RECREATE => self.rollout_recreate(),
            util::ROLLING_UPDATE => self.rollout_rolling(),
            other => self.event(EventSpec::warning(
                "InvalidStrategy",
                format!("deployment strategy type {other:?} isn't supported"),
            )),
        }
    }

    fn finish(mut self) -> Plan {
        let orig_ann = &self.orig.metadata.annotations;
        let rollback_done = self
            .actions
            .iter()
            .any(|a| matches!(a, Action::UpdateDeploymentSpec(_)));
        if !rollback_done && &self.d.metadata.annotations != orig_ann {
            // Write the annotations before the status (same order as Kubernetes).
            let pos = self
                .actions
                .iter()
                .position(|a| matches!(a, Action::UpdateDeploymentStatus(_)))
                .unwrap_or(self.actions.len());
            self.actions.insert(
                pos,
                Action::UpdateDeploymentAnnotations(self.d.metadata.annotations.clone()),
            );
        }
        let new_status = self.d.status.clone().unwrap_or_default();
        let old_status = self.orig.status.clone().unwrap_or_default();
        if !rollback_done && new_status != old_status {
            self.actions
                .retain(|a| !matches!(a, Action::UpdateDeploymentStatus(_)));
            self.actions
                .push(Action::UpdateDeploymentStatus(Box::new(new_status.clone())));
        }
        let requeue_after = progress::requeue_stuck(&self.d, &new_status, self.now);
        Plan {
            actions: self.actions,
            requeue_after,
        }
    }

    pub(crate) fn event(&mut self, e: EventSpec) {
        self.actions.push(Action::Event(e));
    }

    pub(crate) fn idx(&self, name: &str) -> Option<usize> {
        self.rss.iter().position(|r| r.metadata.name() == name)
    }

    pub(crate) fn rs(&self, name: &str) -> &ReplicaSet {
        &self.rss[self.idx(name).expect("known replica set")]
    }

    /// Names of the old RSs (all but `new`), optionally sorted.
    pub(crate) fn old_names(&self, new: Option<&str>) -> Vec<String> {
        self.rss
            .iter()
            .filter(|r| Some(r.metadata.name()) != new)
            .map(|r| r.metadata.name().to_string())
            .collect()
    }

    pub(crate) fn refs(&self, names: &[String]) -> Vec<&ReplicaSet> {
        names.iter().map(|n| self.rs(n)).collect()
    }
}

#[cfg(test)]
mod tests;
