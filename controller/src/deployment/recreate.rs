//! Port of `recreate.go`: scale every old RS to zero, wait for their pods to be gone, then scale
//! the new RS up.

use std::collections::HashMap;

use kapsel_api::Pod;

use super::util::*;
use super::Sync;
use crate::podutil;

impl Sync<'_> {
    /// `rolloutRecreate`.
    pub(crate) fn rollout_recreate(&mut self) {
        let (mut new, mut old) = self.get_all_rss_and_sync_revision(false);
        let active_old: Vec<String> = old
            .iter()
            .filter(|n| is_active_rs(self.rs(n)))
            .cloned()
            .collect();
        let mut scaled_down = false;
        for n in &active_old {
            if rs_replicas(self.rs(n)) == 0 {
                continue;
            }
            if self.scale_rs_and_record(n, 0) {
                scaled_down = true;
            }
        }
        if scaled_down {
            self.sync_rollout_status(new.as_deref());
            return;
        }
        if self.old_pods_running(new.as_deref(), &old) {
            self.sync_rollout_status(new.as_deref());
            return;
        }
        if new.is_none() {
            (new, old) = self.get_all_rss_and_sync_revision(true);
        }
        if let Some(n) = new.as_deref() {
            let desired = replicas(&self.d);
            self.scale_rs_and_record(n, desired);
        }
        let status = self.d.status.clone().unwrap_or_default();
        if deployment_complete(&self.d, &status) {
            self.cleanup_deployment(&old);
        }
        self.sync_rollout_status(new.as_deref());
    }

    /// `oldPodsRunning`: any pod of an old RS that is not in a terminal phase.
    fn old_pods_running(&self, new: Option<&str>, old: &[String]) -> bool {
        if actual_replica_count(&self.refs(old)) > 0 {
            return true;
        }
        let new_uid = new.map(|n| self.rs(n).metadata.uid().to_string());
        let mut by_owner: HashMap<&str, Vec<&Pod>> = HashMap::new();
        for p in self.pods {
            if let Some(o) = podutil::controller_of(&p.metadata) {
                by_owner.entry(o.uid.as_str()).or_default().push(p);
            }
        }
        let old_uids: Vec<String> = self
            .refs(old)
            .iter()
            .map(|r| r.metadata.uid().to_string())
            .collect();
        by_owner.iter().any(|(uid, pods)| {
            Some(uid.to_string()) != new_uid
                && old_uids.iter().any(|u| u == uid)
                && pods.iter().any(|p| {
                    let ph = podutil::phase(p);
                    ph != podutil::PHASE_FAILED && ph != podutil::PHASE_SUCCEEDED
                })
        })
    }
}
