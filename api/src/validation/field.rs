//! Constructors for [`FieldError`]s (Kubernetes' `field.Required`, `field.Invalid`, …) and field
//! path helpers.

use super::{FieldError, FieldErrorKind};

/// `parent.child` (or `child` at the root).
pub fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// `parent[i]`.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// `parent[key]` (map entries, as `field.Path.Key`).
pub fn key(parent: &str, k: &str) -> String {
    format!("{parent}[{k}]")
}

/// Render a string value as Kubernetes does (`%q`).
pub fn quote(s: &str) -> String {
    format!("{s:?}")
}

pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
    FieldError {
        kind: FieldErrorKind::Required,
        field: field.into(),
        value: None,
        detail: detail.into(),
    }
}

/// An invalid string value (quoted in the message).
pub fn invalid(field: impl Into<String>, value: &str, detail: impl Into<String>) -> FieldError {
    FieldError {
        kind: FieldErrorKind::Invalid,
        field: field.into(),
        value: Some(quote(value)),
        detail: detail.into(),
    }
}

/// An invalid value rendered as is (numbers, booleans, lists).
pub fn invalid_raw(
    field: impl Into<String>,
    value: impl std::fmt::Display,
    detail: impl Into<String>,
) -> FieldError {
    FieldError {
        kind: FieldErrorKind::Invalid,
        field: field.into(),
        value: Some(value.to_string()),
        detail: detail.into(),
    }
}

/// `Unsupported value: "x": supported values: "a", "b"`.
pub fn not_supported(field: impl Into<String>, value: &str, valid: &[&str]) -> FieldError {
    let list: Vec<String> = valid.iter().map(|v| quote(v)).collect();
    FieldError {
        kind: FieldErrorKind::NotSupported,
        field: field.into(),
        value: Some(quote(value)),
        detail: format!("supported values: {}", list.join(", ")),
    }
}

pub fn duplicate(field: impl Into<String>, value: &str) -> FieldError {
    FieldError {
        kind: FieldErrorKind::Duplicate,
        field: field.into(),
        value: Some(quote(value)),
        detail: String::new(),
    }
}

pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
    FieldError {
        kind: FieldErrorKind::Forbidden,
        field: field.into(),
        value: None,
        detail: detail.into(),
    }
}

/// `Too long: may not be more than N bytes`.
pub fn too_long(field: impl Into<String>, max: usize) -> FieldError {
    FieldError {
        kind: FieldErrorKind::TooLong,
        field: field.into(),
        value: None,
        detail: format!(
            "may not be more than {max} {}",
            if max == 1 { "byte" } else { "bytes" }
        ),
    }
}

/// Kubernetes' `field.NotFound` (there is no separate kind here: reported as Invalid with the
/// detail `not found`).
pub fn not_found(field: impl Into<String>, value: &str) -> FieldError {
    invalid(field, value, "not found")
}

pub const IS_NEGATIVE_ERROR_MSG: &str = "must be greater than or equal to 0";
pub const IS_NOT_POSITIVE_ERROR_MSG: &str = "must be greater than 0";
pub const FIELD_IMMUTABLE_ERROR_MSG: &str = "field is immutable";

/// `ValidateNonnegativeField`.
pub fn nonnegative(field: impl Into<String>, v: i64) -> Option<FieldError> {
    (v < 0).then(|| invalid_raw(field, v, IS_NEGATIVE_ERROR_MSG))
}

/// `ValidatePositiveField`-like: `v > 0`.
pub fn positive(field: impl Into<String>, v: i64) -> Option<FieldError> {
    (v <= 0).then(|| invalid_raw(field, v, IS_NOT_POSITIVE_ERROR_MSG))
}

/// `ValidateImmutableField` for anything comparable; `render` gives the reported value.
pub fn immutable<T: PartialEq>(
    new: &T,
    old: &T,
    field: impl Into<String>,
    render: impl FnOnce(&T) -> String,
) -> Option<FieldError> {
    (new != old).then(|| FieldError {
        kind: FieldErrorKind::Invalid,
        field: field.into(),
        value: Some(render(new)),
        detail: FIELD_IMMUTABLE_ERROR_MSG.to_string(),
    })
}
