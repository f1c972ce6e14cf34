//! Port of `progress.go`: the Progressing condition, the progress deadline and the requeue at the
//! deadline.

use chrono::{DateTime, Duration, Utc};
use kapsel_api::{Deployment, DeploymentStatus};

use super::util::*;
use super::Sync;

impl Sync<'_> {
    /// `syncRolloutStatus`.
    pub(crate) fn sync_rollout_status(&mut self, new: Option<&str>) {
        let mut st = self.calculate_status(new);
        if !has_progress_deadline(&self.d) {
            remove_condition(&mut st, COND_PROGRESSING);
        }
        let cur_status = self.d.status.clone().unwrap_or_default();
        let current = get_condition(&cur_status, COND_PROGRESSING).cloned();
        let complete_already = st.replicas == st.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(REASON_NEW_RS_AVAILABLE));
        if has_progress_deadline(&self.d) && !complete_already {
            let what = |verb: &str| match new {
                Some(n) => format!("ReplicaSet {n:?} {verb}."),
                None => format!("Deployment {:?} {verb}.", self.d.metadata.name()),
            };
            if deployment_complete(&self.d, &st) {
                let c = new_condition(
                    COND_PROGRESSING,
                    "True",
                    REASON_NEW_RS_AVAILABLE,
                    what("has successfully progressed"),
                    self.now,
                );
                set_condition(&mut st, c);
            } else if deployment_progressing(&self.d, &st) {
                let mut c = new_condition(
                    COND_PROGRESSING,
                    "True",
                    REASON_RS_UPDATED,
                    what("is progressing"),
                    self.now,
                );
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time;
                    }
                    remove_condition(&mut st, COND_PROGRESSING);
                }
                set_condition(&mut st, c);
            } else if deployment_timed_out(&self.d, &st, self.now) {
                let c = new_condition(
                    COND_PROGRESSING,
                    "False",
                    REASON_TIMED_OUT,
                    what("has timed out progressing"),
                    self.now,
                );
                set_condition(&mut st, c);
                self.event(crate::events::EventSpec::warning(
                    REASON_TIMED_OUT,
                    what("has timed out progressing"),
                ));
            }
        }
        // ReplicaFailure conditions of the ReplicaSets are not modelled by kapsel yet.
        remove_condition(&mut st, COND_REPLICA_FAILURE);
        self.d.status = Some(st);
    }
}

/// `requeueStuckDeployment`: when the rollout is neither complete nor timed out, check again at
/// `lastUpdateTime + progressDeadlineSeconds` (+1 s against skew, as Kubernetes does).
pub fn requeue_stuck(
    d: &Deployment,
    new: &DeploymentStatus,
    now: DateTime<Utc>,
) -> Option<std::time::Duration> {
    let deadline = progress_deadline_seconds(d)?;
    let cur = get_condition(new, COND_PROGRESSING)?;
    if deployment_complete(d, new) || cur.reason.as_deref() == Some(REASON_TIMED_OUT) {
        return None;
    }
    if cur.reason.as_deref() == Some(REASON_NEW_RS_AVAILABLE)
        || cur.reason.as_deref() == Some(REASON_PAUSED)
    {
        return None;
    }
    let from = cur.last_update_time?.0;
    let after = from + Duration::seconds(i64::from(deadline)) - now;
    if after < Duration::seconds(1) {
        return Some(std::time::Duration::from_secs(1));
    }
    (after + Duration::seconds(1)).to_std().ok()
}
