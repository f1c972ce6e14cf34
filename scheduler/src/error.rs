//! The crate's one error enum.

use kapsel_api::quantity::QuantityError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pod or node carries a quantity that does not parse (`cpu: "lots"`).
    #[error("invalid quantity {value:?} for {resource} in {object}: {source}")]
    InvalidQuantity {
        object: String,
        resource: String,
        value: String,
        #[source]
        source: QuantityError,
    },
    /// The configuration file or flags are not usable.
    #[error("invalid scheduler configuration: {0}")]
    Config(String),
    /// Reading the configuration file failed.
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A call to the API server failed.
    #[error("api: {0}")]
    Api(String),
    /// The scheduler was asked to stop.
    #[error("shutting down")]
    Shutdown,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
