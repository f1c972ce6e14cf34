//! The agent's one error type.

use kapsel_runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The control plane refused or failed a call.
    #[error("control plane: {0}")]
    Control(String),
    /// The control plane could not be reached.
    #[error("cannot reach the control plane: {0}")]
    Connect(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    /// A pod the agent cannot run as given (bad env reference, bad volume, ...): reported as
    /// `CreateContainerConfigError`.
    #[error("{0}")]
    Config(String),
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Network(#[from] crate::net::NetError),
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// `io::Result` → `AgentError::Io` with a context.
pub trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| AgentError::Io {
            context: what(),
            source,
        })
    }
}

impl From<tonic::Status> for AgentError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::NotFound => AgentError::NotFound(s.message().to_string()),
            tonic::Code::Unavailable => AgentError::Connect(s.message().to_string()),
            _ => AgentError::Control(format!("{:?}: {}", s.code(), s.message())),
        }
    }
}
