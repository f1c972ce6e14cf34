//! kapsel's API: Kubernetes-shaped resource types, quantities, label selectors, validation, and the
//! typed client every component uses. No I/O except the client.

pub mod apps;
pub mod client;
pub mod codec;
pub mod core;
pub mod meta;
pub mod metrics_endpoint;
pub mod profile;
pub mod quantity;
pub mod rbac;
pub mod resource;

pub use apps::*;
pub use core::*;
pub use meta::*;
pub use profile::{ImageProfile, ImageProfileSpec};
pub use quantity::Quantity;
pub use rbac::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
pub use resource::Resource;
pub mod selector;
pub mod table;
pub mod validation;
pub mod watcher;

pub use validation::{Defaults, ErrorList, FieldError, FieldErrorKind, Validate};

/// A kind the API server can store: typed, defaulted and validated.
pub trait ApiObject: Resource + Validate + Defaults {}
impl<T: Resource + Validate + Defaults> ApiObject for T {}
