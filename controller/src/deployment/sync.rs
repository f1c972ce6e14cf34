//! Port of `sync.go`: finding/creating the new ReplicaSet with the next revision, proportional
//! scaling, history cleanup and status calculation.

use kapsel_api::labels as wk;
use kapsel_api::{DeploymentStatus, ObjectMeta, ReplicaSet, ReplicaSetSpec, Time};

use super::util::{self, *};
use super::{Action, Sync};
use crate::events::EventSpec;

impl Sync<'_> {
    /// `getAllReplicaSetsAndSyncRevision`: the new RS's name (if any) and the old RSs' names.
    pub(crate) fn get_all_rss_and_sync_revision(
        &mut self,
        create: bool,
    ) -> (Option<String>, Vec<String>) {
        let existing = self.find_new_rs();
        let old = self.old_names(existing.as_deref());
        let new = self.get_new_rs(existing, &old, create);
        let old = self.old_names(new.as_deref());
        (new, old)
    }

    /// `FindNewReplicaSet`: the oldest RS whose template equals the deployment's.
    pub(crate) fn find_new_rs(&self) -> Option<String> {
        let t = template(&self.d);
        let mut c: Vec<&ReplicaSet> = self.rss.iter().collect();
        c.sort_by(|a, b| by_creation(a, b));
        c.into_iter()
            .find(|rs| equal_ignore_hash(&rs_template(rs), &t))
            .map(|rs| rs.metadata.name().to_string())
    }

    fn get_new_rs(
        &mut self,
        existing: Option<String>,
        old: &[String],
        create: bool,
    ) -> Option<String> {
        let max_old = max_revision(&self.refs(old));
        let new_revision = max_old + 1;
        let mrs = util::min_ready_seconds(&self.d);
        if let Some(name) = existing {
            let i = self.idx(&name).expect("existing");
            let mut copy = self.rss[i].clone();
            let changed = set_new_rs_annotations(&self.d, &mut copy, new_revision, true);
            let mrs_changed = copy
                .spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0)
                != mrs;
            if changed || mrs_changed {
                copy.spec
                    .get_or_insert_with(Default::default)
                    .min_ready_seconds = Some(mrs);
                self.rss[i] = copy.clone();
                self.actions.push(Action::UpdateReplicaSetAnnotations {
                    name: name.clone(),
                    object: Box::new(copy),
                });
                // Kubernetes returns here; the deployment's revision is synced on the next pass.
                return Some(name);
            }
            let rev = copy
                .metadata
                .annotations
                .get(wk::REVISION)
                .cloned()
                .unwrap_or_default();
            set_deployment_revision(&mut self.d, &rev);
            let has_cond = self
                .d
                .status
                .as_ref()
                .is_some_and(|s| get_condition(s, COND_PROGRESSING).is_some());
            if has_progress_deadline(&self.d) && !has_cond {
                let c = new_condition(
                    COND_PROGRESSING,
                    "True",
                    REASON_FOUND_NEW_RS,
                    format!("Found new replica set {name:?}"),
                    self.now,
                );
                set_condition(self.d.status.get_or_insert_with(Default::default), c);
            }
            return Some(name);
        }
        if !create {
            return None;
        }
        // Create the new ReplicaSet.
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let mut t = template(&self.d);
        let hash = pod_template_hash(&t, collision);
        t.metadata
            .labels
            .insert(wk::POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .insert(wk::POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{}", self.d.metadata.name(), hash);
        let mut meta = ObjectMeta::namespaced(self.d.metadata.namespace(), name.clone());
        meta.owner_references = vec![crate::podutil::controller_ref(&self.d)];
        meta.labels = t.metadata.labels.clone();
        let mut rs = ReplicaSet::with_meta(meta);
        rs.spec = Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: Some(mrs),
            selector: Some(selector),
            template: Some(t),
        });
        let mut all: Vec<&ReplicaSet> = self.refs(old);
        all.push(&rs);
        let n = match new_rs_new_replicas(&self.d, &all, &rs) {
            Ok(n) => n,
            Err(e) => {
                self.event(EventSpec::warning(REASON_FAILED_RS_CREATE, e.to_string()));
                return None;
            }
        };
        set_rs_replicas(&mut rs, n);
        set_new_rs_annotations(&self.d, &mut rs, new_revision, false);
        self.actions
            .push(Action::CreateReplicaSet(Box::new(rs.clone())));
        if n > 0 {
            self.event(EventSpec::normal(
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {n}"),
            ));
        }
        // In the working set the new RS is the newest object.
        rs.metadata.creation_timestamp =
            Some(Time(chrono::SubsecRound::trunc_subsecs(self.now, 0)));
        self.rss.push(rs);
        set_deployment_revision(&mut self.d, &new_revision.to_string());
        if has_progress_deadline(&self.d) {
            let c = new_condition(
                COND_PROGRESSING,
                "True",
                REASON_NEW_RS,
                format!("Created new replica set {name:?}"),
                self.now,
            );
            set_condition(self.d.status.get_or_insert_with(Default::default), c);
        }
        Some(name)
    }

    /// `scaleReplicaSetAndRecordEvent`.
    pub(crate) fn scale_rs_and_record(&mut self, name: &str, to: i32) -> bool {
        if rs_replicas(self.rs(name)) == to {
            return false;
        }
        self.scale_rs(name, to)
    }

    /// `scaleReplicaSet`: size and replicas annotations in one update.
    pub(crate) fn scale_rs(&mut self, name: &str, to: i32) -> bool {
        let desired = replicas(&self.d);
        let max = desired + max_surge(&self.d);
        let i = self.idx(name).expect("known");
        let from = rs_replicas(&self.rss[i]);
        let size = from != to;
        let ann = replicas_annotations_need_update(&self.rss[i], desired, max);
        if !(size || ann) {
            return false;
        }
        let mut copy = self.rss[i].clone();
        set_rs_replicas(&mut copy, to);
        set_replicas_annotations(&mut copy, desired, max);
        self.rss[i] = copy.clone();
        self.actions.push(Action::ScaleReplicaSet {
            name: name.to_string(),
            from,
            to,
            object: Box::new(copy),
        });
        if size {
            let dir = if from < to { "up" } else { "down" };
            self.event(EventSpec::normal(
                "ScalingReplicaSet",
                format!("Scaled {dir} replica set {name} from {from} to {to}"),
            ));
        }
        size
    }

    /// `sync`: scaling only (paused deployments, scaling events).
    pub(crate) fn sync(&mut self) {
        let (new, old) = self.get_all_rss_and_sync_revision(false);
        self.scale(new.as_deref(), &old);
        if util::is_paused(&self.d) && super::rollback::rollback_to(&self.d).is_none() {
            self.cleanup_deployment(&old);
        }
        self.sync_deployment_status(new.as_deref());
    }

    pub(crate) fn sync_status_only(&mut self) {
        let (new, _) = self.get_all_rss_and_sync_revision(false);
        self.sync_deployment_status(new.as_deref());
    }

    /// `isScalingEvent`: an active RS whose desired-replicas annotation differs from spec.replicas.
    pub(crate) fn is_scaling_event(&mut self) -> bool {
        let (new, old) = self.get_all_rss_and_sync_revision(false);
        let desired = replicas(&self.d);
        let mut names = old;
        names.extend(new);
        names.iter().any(|n| {
            let rs = self.rs(n);
            is_active_rs(rs) && desired_replicas_annotation(rs).is_some_and(|v| v != desired)
        })
    }

    /// `scale`: proportional scaling of all active RSs.
    pub(crate) fn scale(&mut self, new: Option<&str>, old: &[String]) {
        let desired = replicas(&self.d);
        if let Some(target) = self.find_active_or_latest(new, old) {
            if rs_replicas(self.rs(&target)) != desired {
                self.scale_rs_and_record(&target, desired);
            }
            return;
        }
        if is_saturated(&self.d, new.map(|n| self.rs(n))) {
            for n in old {
                if is_active_rs(self.rs(n)) {
                    self.scale_rs_and_record(n, 0);
                }
            }
            return;
        }
        if !is_rolling_update(&self.d) {
            return;
        }
        let mut names: Vec<String> = old.to_vec();
        names.extend(new.map(str::to_string));
        names.retain(|n| is_active_rs(self.rs(n)));
        let total = replica_count(&self.refs(&names));
        let allowed = if desired > 0 {
            desired + max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - total;
        let mut sorted: Vec<ReplicaSet> = names.iter().map(|n| self.rs(n).clone()).collect();
        if to_add > 0 {
            sorted.sort_by(by_size_newer);
        } else if to_add < 0 {
            sorted.sort_by(by_size_older);
        }
        let mut added = 0;
        let mut sizes: Vec<(String, i32)> = Vec::new();
        for rs in &sorted {
            if to_add != 0 {
                let p = rs_proportion(rs, &self.d, to_add, added);
                sizes.push((rs.metadata.name().to_string(), rs_replicas(rs) + p));
                added += p;
            } else {
                sizes.push((rs.metadata.name().to_string(), rs_replicas(rs)));
            }
        }
        for (i, (name, size)) in sizes.iter_mut().enumerate() {
            if i == 0 && to_add != 0 {
                *size = (*size + to_add - added).max(0);
            }
            let (name, size) = (name.clone(), *size);
            self.scale_rs(&name, size);
        }
    }

    /// `FindActiveOrLatest`.
    fn find_active_or_latest(&self, new: Option<&str>, old: &[String]) -> Option<String> {
        if new.is_none() && old.is_empty() {
            return None;
        }
        let mut olds: Vec<&ReplicaSet> = self.refs(old);
        olds.sort_by(|a, b| by_creation(b, a));
        let mut all: Vec<&ReplicaSet> = olds.clone();
        if let Some(n) = new {
            all.push(self.rs(n));
        }
        let active: Vec<&ReplicaSet> = all.into_iter().filter(|r| is_active_rs(r)).collect();
        match active.len() {
            0 => Some(
                new.map(str::to_string)
                    .unwrap_or_else(|| olds[0].metadata.name().to_string()),
            ),
            1 => Some(active[0].metadata.name().to_string()),
            _ => None,
        }
    }

    /// `cleanupDeployment`: delete the oldest fully scaled-down RSs beyond `revisionHistoryLimit`.
    pub(crate) fn cleanup_deployment(&mut self, old: &[String]) {
        let Some(limit) = revision_history_limit(&self.d) else {
            return;
        };
        let mut cleanable: Vec<ReplicaSet> = self
            .refs(old)
            .into_iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return;
        }
        cleanable.sort_by(by_revision);
        for rs in cleanable.iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status_replicas(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
                || rs.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let name = rs.metadata.name().to_string();
            self.actions.push(Action::DeleteReplicaSet {
                name: name.clone(),
                uid: rs.metadata.uid().to_string(),
            });
            if let Some(i) = self.idx(&name) {
                self.rss[i].metadata.deletion_timestamp = Some(Time(self.now));
            }
        }
    }

    /// `syncDeploymentStatus`.
    pub(crate) fn sync_deployment_status(&mut self, new: Option<&str>) {
        let st = self.calculate_status(new);
        self.d.status = Some(st);
    }

    /// `calculateStatus`.
    pub(crate) fn calculate_status(&self, new: Option<&str>) -> DeploymentStatus {
        let all: Vec<&ReplicaSet> = self.rss.iter().collect();
        let available = available_replica_count(&all);
        let total = replica_count(&all);
        let unavailable = (total - available).max(0);
        let updated = new.map(|n| rs_status_replicas(self.rs(n))).unwrap_or(0);
        let prev = self.d.status.clone().unwrap_or_default();
        let mut st = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: Some(actual_replica_count(&all)),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready_replica_count(&all)),
            available_replicas: Some(available),
            unavailable_replicas: Some(unavailable),
            conditions: prev.conditions.clone(),
            collision_count: prev.collision_count,
        };
        let c = if available >= replicas(&self.d) - max_unavailable(&self.d) {
            new_condition(
                COND_AVAILABLE,
                "True",
                REASON_MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                self.now,
            )
        } else {
            new_condition(
                COND_AVAILABLE,
                "False",
                REASON_MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                self.now,
            )
        };
        set_condition(&mut st, c);
        st
    }

    /// `checkPausedConditions`.
    pub(crate) fn check_paused_conditions(&mut self) {
        if !has_progress_deadline(&self.d) {
            return;
        }
        let paused = util::is_paused(&self.d);
        let now = self.now;
        let status = self.d.status.get_or_insert_with(Default::default);
        let cond = get_condition(status, COND_PROGRESSING);
        if cond.is_some_and(|c| c.reason.as_deref() == Some(REASON_TIMED_OUT)) {
            return;
        }
        let paused_exists = cond.is_some_and(|c| c.reason.as_deref() == Some(REASON_PAUSED));
        if paused && !paused_exists {
            let c = new_condition(
                COND_PROGRESSING,
                "Unknown",
                REASON_PAUSED,
                "Deployment is paused".into(),
                now,
            );
            set_condition(status, c);
        } else if !paused && paused_exists {
            let c = new_condition(
                COND_PROGRESSING,
                "Unknown",
                REASON_RESUMED,
                "Deployment is resumed".into(),
                now,
            );
            set_condition(status, c);
        }
    }
}
