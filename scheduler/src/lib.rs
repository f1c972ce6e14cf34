//! kapsel-scheduler: places pods on nodes.
//!
//! The decision core is pure and table-tested: `schedule(pod, &Snapshot, &Framework, &mut rng)`
//! runs the filter and score plugins (`plugins/`) of the framework (`framework.rs`) over a
//! snapshot of nodes (`snapshot.rs`). The loop around it watches pods and nodes, keeps an
//! assume-cache, a backoff queue, and binds through the API.

pub mod config;
pub mod error;
pub mod framework;
pub mod plugins;
pub mod resources;
pub mod schedule;
pub mod snapshot;
pub mod testing;

pub use config::{Config, Weights};
pub use error::{Error, Result};
pub use framework::ScoringStrategy;
pub use schedule::{schedule, FitError, Framework};
pub use snapshot::{NodeInfo, NodeName, PodInfo, Snapshot};
