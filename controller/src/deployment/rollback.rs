//! Rollback, two ways:
//! * [`rollback_deployment`] is kubectl's `rollout undo` (`DeploymentRollbacker`): find the
//!   ReplicaSet of the requested revision (0 = the previous one), copy its template (minus the
//!   hash label) and its annotations into the deployment; the ordinary rollout then rolls
//!   "forward" to the old template, reusing the old ReplicaSet and bumping its revision.
//! * the controller honours the deprecated `deprecated.deployment.rollback.to` annotation the way
//!   Kubernetes' `rollback.go` does (same copying, then the annotation is cleared).

use kapsel_api::{Deployment, ReplicaSet};

use super::util::*;
use super::{Action, Sync};
use crate::error::{Error, Result};
use crate::events::EventSpec;

/// The revision requested by the deprecated rollback annotation.
pub fn rollback_to(d: &Deployment) -> Option<i64> {
    d.metadata
        .annotations
        .get(DEPRECATED_ROLLBACK_TO)
        .map(|v| v.parse().unwrap_or(0))
}

/// kubectl's `rollout undo [--to-revision=N]` as a pure function: the deployment to write back
/// (with resourceVersion kept, so the write is a CAS).
pub fn rollback_deployment(
    d: &Deployment,
    rss: &[ReplicaSet],
    to_revision: i64,
) -> Result<Deployment> {
    let refs: Vec<&ReplicaSet> = rss.iter().collect();
    let rev = if to_revision == 0 {
        match last_revision(&refs) {
            0 => return Err(Error::RevisionNotFound(0)),
            r => r,
        }
    } else {
        to_revision
    };
    let rs = rss
        .iter()
        .find(|rs| revision(&rs.metadata) == Some(rev))
        .ok_or(Error::RevisionNotFound(rev))?;
    if equal_ignore_hash(&template(d), &rs_template(rs)) {
        return Err(Error::RollbackTemplateUnchanged);
    }
    let mut out = d.clone();
    set_from_rs_template(&mut out, &rs_template(rs));
    set_deployment_annotations_to(&mut out, rs);
    Ok(out)
}

impl Sync<'_> {
    /// `rollback` (deprecated annotation path).
    pub(crate) fn rollback(&mut self) {
        let (new, old) = self.get_all_rss_and_sync_revision(true);
        let mut names = old;
        names.extend(new);
        let all: Vec<ReplicaSet> = self.refs(&names).into_iter().cloned().collect();
        let requested = rollback_to(&self.d).unwrap_or(0);
        let mut d = self.d.clone();
        d.metadata.annotations.remove(DEPRECATED_ROLLBACK_TO);
        match rollback_deployment(&self.d, &all, requested) {
            Ok(mut rolled) => {
                rolled.metadata.annotations.remove(DEPRECATED_ROLLBACK_TO);
                let rev = if requested == 0 {
                    last_revision(&all.iter().collect::<Vec<_>>())
                } else {
                    requested
                };
                self.event(EventSpec::normal(
                    REASON_ROLLBACK_DONE,
                    format!(
                        "Rolled back deployment {:?} to revision {rev}",
                        d.metadata.name()
                    ),
                ));
                d = rolled;
            }
            Err(Error::RollbackTemplateUnchanged) => self.event(EventSpec::warning(
                REASON_ROLLBACK_TEMPLATE_UNCHANGED,
                format!(
                    "The rollback revision contains the same template as current deployment {:?}",
                    d.metadata.name()
                ),
            )),
            Err(Error::RevisionNotFound(0)) => self.event(EventSpec::warning(
                REASON_ROLLBACK_REVISION_NOT_FOUND,
                "Unable to find last revision.",
            )),
            Err(_) => self.event(EventSpec::warning(
                REASON_ROLLBACK_REVISION_NOT_FOUND,
                "Unable to find the revision to rollback to.",
            )),
        }
        self.actions.push(Action::UpdateDeploymentSpec(Box::new(d)));
    }
}
