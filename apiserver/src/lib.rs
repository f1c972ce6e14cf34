//! kapsel's API server: Kubernetes-shaped REST over a durable store.
//!
//! - [`server`]: [`serve`] for the binary, [`start_test_server`] for other crates' tests.
//! - [`handlers`]: generic REST handlers dispatching by path; [`rest`]: the write path;
//!   [`watch`]: streaming watches; [`discovery`]: `/api`, `/apis`, `/version`, health.
//! - [`registry`]: the served kinds; [`admission`]: LimitRange and ResourceQuota (pure functions).
//! - [`store`]: the storage layer (sled, group commit, watch ring).

pub mod accept;
pub mod admission;
pub mod apply;
pub mod auth;
pub mod authz;
pub mod checks;
pub mod component;
pub mod discovery;
pub mod errors;
pub mod eventttl;
pub mod filter;
pub mod gate;
pub mod handlers;
pub mod managed;
pub mod metrics;
pub mod objects;
pub mod patch;
pub mod registry;
pub mod rest;
pub mod security;
pub mod server;
pub mod store;
pub mod svcalloc;
pub mod table;
pub mod tls;
pub mod ui;
pub mod watch;

pub use auth::{AllowAll, Authenticator, UserInfo};
pub use errors::ApiError;
pub use server::{serve, start_test_server, ServerConfig, ServerError, TestServer};
