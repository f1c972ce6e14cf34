//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong getting, storing or unpacking an image.
///
/// The variants the agent needs to tell apart for pod status are distinct: [`Self::NotFound`],
/// [`Self::Unauthorized`], [`Self::DigestMismatch`], [`Self::Network`] and [`Self::NotPresent`]
/// (`imagePullPolicy: Never`). [`ImageError::kubernetes_reason`] maps them to the reasons the
/// kubelet puts in `containerStatuses[].state.waiting.reason`.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("{reference}: not found: {message}")]
    NotFound { reference: String, message: String },
    #[error("{reference}: unauthorized: {message}")]
    Unauthorized { reference: String, message: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("registry {registry}: {message}")]
    Network { registry: String, message: String },
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    #[error("image {0} is not present on this node and the pull policy is Never")]
    NotPresent(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("unsafe layer entry {path:?}: {reason}")]
    UnsafeLayer { path: String, reason: String },
    #[error("invalid image content: {0}")]
    InvalidContent(String),
    #[error("image {0} not in the store")]
    UnknownImage(String),
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

impl ImageError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ImageError::Io {
            context,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn unsafe_entry(path: impl std::fmt::Debug, reason: impl Into<String>) -> Self {
        ImageError::UnsafeLayer {
            path: format!("{path:?}").trim_matches('"').to_string(),
            reason: reason.into(),
        }
    }

    /// The kubelet's waiting reason for a container whose image could not be had:
    /// `InvalidImageName`, `ErrImageNeverPull` or `ErrImagePull` (after repeated failures the
    /// agent reports `ImagePullBackOff` itself).
    pub fn kubernetes_reason(&self) -> &'static str {
        match self {
            ImageError::InvalidReference { .. } => "InvalidImageName",
            ImageError::NotPresent(_) => "ErrImageNeverPull",
            _ => "ErrImagePull",
        }
    }

    /// Whether trying again later may help (network trouble, a tag not pushed yet, a registry
    /// error). Invalid names, hostile layers and unsupported content will not get better.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            ImageError::InvalidReference { .. }
                | ImageError::UnsafeLayer { .. }
                | ImageError::Unsupported(_)
        )
    }
}
