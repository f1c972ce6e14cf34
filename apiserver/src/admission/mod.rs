//! Admission: pure functions applied by the write path.
//!
//! - [`limitrange`]: LimitRange defaulting and min/max/ratio checks on pod create, as Kubernetes'
//!   `LimitRanger` plugin does.
//! - [`quota`]: ResourceQuota usage of objects and the check of a usage delta against a quota;
//!   the write path applies them inside the store transaction, so enforcement is atomic.
//! - [`podsecurity`]: Pod Security Standards (`privileged`, `baseline`, `restricted`) per
//!   namespace from its `pod-security.kubernetes.io/*` labels.
//!
//! The namespace lifecycle check (namespace exists and is not terminating) lives in the write path
//! itself, since it reads the store in the same transaction.

pub mod limitrange;
pub mod podsecurity;
pub mod quota;

/// Kubernetes' `utilerrors.NewAggregate(errs).Error()`: one message as is, several in brackets.
pub fn aggregate(msgs: &[String]) -> String {
    match msgs {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}
