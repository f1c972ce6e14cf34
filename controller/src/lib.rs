//! kapsel-controller: the control loops of kapsel (ReplicaSet, Deployment, node lifecycle, garbage
//! collector, namespace and ResourceQuota status).
//!
//! Shape (DESIGN.md §5): level-triggered reconcilers over watch-fed caches. Every decision is a pure
//! function of (object, snapshot, now) returning intended actions, so it is table-tested without a
//! server; the runtime (`runtime` module) only feeds caches, runs work queues and performs writes with
//! resourceVersion compare-and-swap.

pub mod clock;
pub mod deployment;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod gc;

pub mod labels;
pub mod metrics;
pub mod nodelifecycle;
pub mod podcidr;

pub mod podutil;
pub mod quota;
pub mod replicaset;
pub mod runtime;

pub use clock::{Clock, FakeClock, SystemClock};
pub use error::Error;
pub use runtime::{Config, Controller};
