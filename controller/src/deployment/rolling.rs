//! Port of `rolling.go`: one rolling-update step per sync.

use kapsel_api::ReplicaSet;

use super::util::*;
use super::Sync;

impl Sync<'_> {
    /// `rolloutRolling`.
    pub(crate) fn rollout_rolling(&mut self) {
        let (new, old) = self.get_all_rss_and_sync_revision(true);
        let Some(new) = new else {
            // Creation failed (event recorded): report status and retry later.
            self.sync_rollout_status(None);
            return;
        };
        if self.reconcile_new_rs(&new) {
            self.sync_rollout_status(Some(&new));
            return;
        }
        let active_old: Vec<String> = old
            .iter()
            .filter(|n| is_active_rs(self.rs(n)))
            .cloned()
            .collect();
        if self.reconcile_old_rss(&old, &active_old, &new) {
            self.sync_rollout_status(Some(&new));
            return;
        }
        let status = self.d.status.clone().unwrap_or_default();
        if deployment_complete(&self.d, &status) {
            self.cleanup_deployment(&old);
        }
        self.sync_rollout_status(Some(&new));
    }

    /// `reconcileNewReplicaSet`.
    pub(crate) fn reconcile_new_rs(&mut self, new: &str) -> bool {
        let desired = replicas(&self.d);
        let cur = rs_replicas(self.rs(new));
        if cur == desired {
            return false;
        }
        if cur > desired {
            return self.scale_rs_and_record(new, desired);
        }
        let all: Vec<&ReplicaSet> = self.rss.iter().collect();
        match new_rs_new_replicas(&self.d, &all, self.rs(new)) {
            Ok(n) => self.scale_rs_and_record(new, n),
            Err(_) => false,
        }
    }

    /// `reconcileOldReplicaSets`.
    pub(crate) fn reconcile_old_rss(
        &mut self,
        _all_old: &[String],
        old: &[String],
        new: &str,
    ) -> bool {
        let old_count = replica_count(&self.refs(old));
        if old_count == 0 {
            return false;
        }
        let all: Vec<&ReplicaSet> = self.rss.iter().collect();
        let all_count = replica_count(&all);
        let max_unavail = max_unavailable(&self.d);
        let min_available = replicas(&self.d) - max_unavail;
        let new_rs = self.rs(new);
        let new_unavailable = rs_replicas(new_rs) - rs_available(new_rs);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let cleaned = self.cleanup_unhealthy_replicas(old, max_scaled_down);
        let scaled = self.scale_down_old_rss_for_rolling_update(old, new);
        cleaned + scaled > 0
    }

    /// `cleanupUnhealthyReplicas`: scale down old RSs by their unavailable replicas, oldest first.
    fn cleanup_unhealthy_replicas(&mut self, old: &[String], max_cleanup: i32) -> i32 {
        let mut sorted: Vec<ReplicaSet> = self.refs(old).into_iter().cloned().collect();
        sorted.sort_by(by_creation);
        let mut total = 0;
        for rs in &sorted {
            if total >= max_cleanup {
                break;
            }
            let spec = rs_replicas(rs);
            if spec == 0 || spec == rs_available(rs) {
                continue;
            }
            let down = (max_cleanup - total).min(spec - rs_available(rs));
            let to = spec - down;
            if to > spec {
                break;
            }
            self.scale_rs_and_record(rs.metadata.name(), to);
            total += down;
        }
        total
    }

    /// `scaleDownOldReplicaSetsForRollingUpdate`: keep at least `replicas − maxUnavailable`
    /// available pods, scaling down the oldest RSs first.
    fn scale_down_old_rss_for_rolling_update(&mut self, old: &[String], _new: &str) -> i32 {
        let max_unavail = max_unavailable(&self.d);
        let min_available = replicas(&self.d) - max_unavail;
        let available: i32 = self.rss.iter().map(rs_available_bounded).sum();
        if available <= min_available {
            return 0;
        }
        let mut sorted: Vec<ReplicaSet> = self.refs(old).into_iter().cloned().collect();
        sorted.sort_by(by_creation);
        let goal = available - min_available;
        let mut total = 0;
        for rs in &sorted {
            if total >= goal {
                break;
            }
            // Current size (cleanupUnhealthyReplicas may just have changed it).
            let spec = rs_replicas(self.rs(rs.metadata.name()));
            if spec == 0 {
                continue;
            }
            let down = spec.min(goal - total);
            self.scale_rs_and_record(rs.metadata.name(), spec - down);
            total += down;
        }
        total
    }
}
