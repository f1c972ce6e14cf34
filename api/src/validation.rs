//! Validation in Kubernetes' style: every error with its field path, all errors at once.
//! (Interface fixed here; rules are filled in per kind.)

use std::fmt;

pub mod apps;
pub mod core;
pub mod field;
pub mod meta;
pub mod names;
pub mod pod;
pub mod profile;
pub mod rbac;
pub use self::core::namespace_status_defaults;
pub use field::*;
pub use meta::*;
pub use names::*;

/// `field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
}

impl FieldErrorKind {
    /// The `reason` used in `StatusCause` (`FieldValueRequired`, …).
    pub fn cause_reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
        }
    }
}

/// One validation error: `spec.replicas: Invalid value: -1: must be greater than or equal to 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    /// Kubernetes path form: `spec.template.spec.containers[0].image`.
    pub field: String,
    /// The offending value, rendered as Kubernetes does (strings quoted).
    pub value: Option<String>,
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = match self.kind {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
        };
        write!(f, "{}: {head}", self.field)?;
        if let Some(v) = &self.value {
            write!(f, ": {v}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

pub type ErrorList = Vec<FieldError>;

/// Validation of a kind on create and update.
pub trait Validate {
    /// All errors of the object as a new object.
    fn validate(&self) -> ErrorList;
    /// All errors of `self` as an update of `old` (includes immutable-field rules).
    fn validate_update(&self, old: &Self) -> ErrorList {
        let _ = old;
        self.validate()
    }
}

/// Kubernetes' server-side defaults for omitted fields.
pub trait Defaults {
    fn apply_defaults(&mut self) {}
}

// ------------------------------------------------------------------ per-kind impls

macro_rules! rules {
    ($t:ty, validate: $v:expr, update: $u:expr, defaults: $d:expr) => {
        impl Validate for $t {
            fn validate(&self) -> ErrorList {
                $v(self)
            }
            fn validate_update(&self, old: &Self) -> ErrorList {
                $u(self, old)
            }
        }
        impl Defaults for $t {
            fn apply_defaults(&mut self) {
                $d(self)
            }
        }
    };
}

/// `validate` plus the metadata update rules.
fn with_meta_update<T: crate::Resource>(v: fn(&T) -> ErrorList) -> impl Fn(&T, &T) -> ErrorList {
    move |new: &T, old: &T| {
        let mut errs = v(new);
        errs.extend(validate_object_meta_update(
            new.meta(),
            old.meta(),
            "metadata",
        ));
        errs
    }
}

fn no_defaults<T>(_: &mut T) {}

use crate::apps::{Deployment, Lease, ReplicaSet, Scale};
use crate::core::{
    Binding, ConfigMap, Endpoints, Event, LimitRange, Namespace, Node, Pod, ResourceQuota, Secret,
    Service,
};
use crate::profile::ImageProfile;
use crate::rbac::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

rules!(Namespace, validate: core::validate_namespace, update: with_meta_update(core::validate_namespace), defaults: no_defaults);
rules!(Node, validate: core::validate_node, update: core::validate_node_update, defaults: core::default_node);
rules!(Pod, validate: pod::validate_pod, update: pod::validate_pod_update, defaults: pod::default_pod);
rules!(Service, validate: core::validate_service, update: core::validate_service_update, defaults: core::default_service);
rules!(Endpoints, validate: core::validate_endpoints, update: with_meta_update(core::validate_endpoints), defaults: core::default_endpoints);
rules!(ConfigMap, validate: core::validate_config_map, update: core::validate_config_map_update, defaults: no_defaults);
rules!(Secret, validate: core::validate_secret, update: core::validate_secret_update, defaults: core::default_secret);
rules!(LimitRange, validate: core::validate_limit_range, update: with_meta_update(core::validate_limit_range), defaults: core::default_limit_range);
rules!(ResourceQuota, validate: core::validate_resource_quota, update: with_meta_update(core::validate_resource_quota), defaults: no_defaults);
rules!(Event, validate: core::validate_event, update: with_meta_update(core::validate_event), defaults: no_defaults);
rules!(Binding, validate: core::validate_binding, update: |n: &Binding, _: &Binding| core::validate_binding(n), defaults: no_defaults);
rules!(ReplicaSet, validate: apps::validate_replica_set, update: apps::validate_replica_set_update, defaults: apps::default_replica_set);
rules!(Deployment, validate: apps::validate_deployment, update: apps::validate_deployment_update, defaults: apps::default_deployment);
rules!(Lease, validate: apps::validate_lease, update: with_meta_update(apps::validate_lease), defaults: no_defaults);
rules!(Scale, validate: apps::validate_scale, update: |n: &Scale, _: &Scale| apps::validate_scale(n), defaults: no_defaults);
rules!(Role, validate: rbac::validate_role, update: with_meta_update(rbac::validate_role), defaults: no_defaults);
rules!(ClusterRole, validate: rbac::validate_cluster_role, update: with_meta_update(rbac::validate_cluster_role), defaults: no_defaults);
rules!(RoleBinding, validate: rbac::validate_role_binding, update: rbac::validate_role_binding_update, defaults: no_defaults);
rules!(ImageProfile, validate: profile::validate_image_profile, update: with_meta_update(profile::validate_image_profile), defaults: crate::profile::default_image_profile);
rules!(ClusterRoleBinding, validate: rbac::validate_cluster_role_binding, update: rbac::validate_cluster_role_binding_update, defaults: no_defaults);
