//! The crate's error type.

/// Everything that can go wrong in kapsel-controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `maxSurge`/`maxUnavailable` that is neither an integer nor a percentage.
    #[error("invalid value {value:?} for {field}: {reason}")]
    InvalidIntOrPercent {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// The deployment strategy type is not `RollingUpdate` or `Recreate`.
    #[error("deployment strategy type {0:?} isn't supported")]
    UnsupportedStrategy(String),
    /// A rollback target that does not exist.
    #[error("unable to find the revision to rollback to ({0})")]
    RevisionNotFound(i64),
    /// `kapsel rollout undo` asked for the current template.
    #[error("skipped rollback (the rollback revision contains the same template as the current deployment)")]
    RollbackTemplateUnchanged,
    /// An object lacks a field the controller needs.
    #[error("{kind} {name}: missing {field}")]
    Missing {
        kind: &'static str,
        name: String,
        field: &'static str,
    },
    /// A label selector that cannot be evaluated.
    #[error("invalid label selector: {0}")]
    InvalidSelector(String),
    /// An error answered by the API server (conflicts, not found, …).
    #[error("api: {0}")]
    Api(String),
    /// A write raced with another writer (resourceVersion mismatch): refresh and retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The object vanished.
    #[error("not found: {0}")]
    NotFound(String),
    /// The object's name is already taken.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A local cache is not synced yet.
    #[error("cache not ready: {0}")]
    NotReady(&'static str),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<kapsel_api::client::ClientError> for Error {
    fn from(e: kapsel_api::client::ClientError) -> Self {
        if e.is_conflict() {
            Error::Conflict(e.to_string())
        } else if e.is_not_found() {
            Error::NotFound(e.to_string())
        } else if e.is_already_exists() {
            Error::AlreadyExists(e.to_string())
        } else {
            Error::Api(e.to_string())
        }
    }
}
