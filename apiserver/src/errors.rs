//! One error type for the REST layer, turned into a `metav1.Status` body and HTTP code at the edge.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kapsel_api::{ErrorList, Status, StatusCause, StatusDetails};

use crate::store::StoreError;

/// Kubernetes' request body limit (3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Identifies an object in error messages: `deployments.apps "web"`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjRef {
    /// `deployments` (the plural, as Kubernetes puts it in `details.kind`).
    pub resource: String,
    /// `apps`, or `""` for the core group.
    pub group: String,
    pub name: String,
}

impl ObjRef {
    pub fn new(resource: &str, group: &str, name: &str) -> Self {
        ObjRef {
            resource: resource.to_string(),
            group: group.to_string(),
            name: name.to_string(),
        }
    }
    /// `deployments.apps` / `pods`.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
    fn details(&self) -> StatusDetails {
        StatusDetails {
            name: Some(self.name.clone()).filter(|s| !s.is_empty()),
            group: Some(self.group.clone()).filter(|s| !s.is_empty()),
            kind: Some(self.resource.clone()).filter(|s| !s.is_empty()),
            ..Default::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed body, wrong kind for the path, name mismatch, unknown fields (strict), …
    #[error("{message}")]
    BadRequest {
        message: String,
        /// Field causes (e.g. the path of a type error or unknown fields).
        causes: Vec<StatusCause>,
    },
    /// 404 for an object.
    #[error("{} \"{}\" not found", .0.group_resource(), .0.name)]
    NotFound(ObjRef),
    /// 404 for a path that names no resource.
    #[error("the server could not find the requested resource")]
    NoSuchResource,
    /// 405.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 409 AlreadyExists.
    #[error("{} \"{}\" already exists", .0.group_resource(), .0.name)]
    AlreadyExists(ObjRef),
    /// 409 Conflict with a full message.
    #[error("{message}")]
    Conflict { obj: ObjRef, message: String },
    /// 409 Conflict of a server-side apply with other field managers (causes
    /// `FieldManagerConflict`, one per field).
    #[error("{message}")]
    ApplyConflict {
        message: String,
        causes: Vec<StatusCause>,
    },
    /// 422 Invalid.
    #[error("{kind} \"{name}\" is invalid: {}", invalid_summary(.errors))]
    Invalid {
        kind: String,
        group: String,
        name: String,
        errors: ErrorList,
    },
    /// 403 Forbidden: `pods "x" is forbidden: <reason>`.
    #[error("{} \"{}\" is forbidden: {reason}", .obj.group_resource(), .obj.name)]
    Forbidden { obj: ObjRef, reason: String },
    /// 422 for a patch that cannot be applied (a failed JSON patch `test`, a missing path).
    #[error("{0}")]
    UnprocessablePatch(String),
    /// 410 Expired (resourceVersion older than the kept history).
    #[error("{0}")]
    Gone(String),
    /// 413.
    #[error("Request entity too large: limit is {MAX_BODY_BYTES}")]
    TooLarge,
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 401 (reserved for the security issue's authenticators).
    #[error("Unauthorized")]
    Unauthorized,
    /// 503: the store is shutting down.
    #[error("the server is shutting down")]
    Unavailable,
    /// 500: a real server fault.
    #[error("Internal error occurred: {0}")]
    Internal(String),
}

fn invalid_summary(errors: &ErrorList) -> String {
    match errors.as_slice() {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            causes: Vec::new(),
        }
    }

    /// `Operation cannot be fulfilled on deployments.apps "web": the object has been modified; …`
    pub fn stale(obj: ObjRef) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
            obj.group_resource(),
            obj.name
        );
        ApiError::Conflict { obj, message }
    }

    /// A 409 Conflict with a custom reason: `Operation cannot be fulfilled on pods "x": <why>`.
    pub fn conflict(obj: ObjRef, why: impl std::fmt::Display) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{}\": {why}",
            obj.group_resource(),
            obj.name
        );
        ApiError::Conflict { obj, message }
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest { .. } => 400,
            ApiError::NotFound(_) | ApiError::NoSuchResource => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::AlreadyExists(_)
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => 409,
            ApiError::Invalid { .. } | ApiError::UnprocessablePatch(_) => 422,
            ApiError::Forbidden { .. } => 403,
            ApiError::Gone(_) => 410,
            ApiError::TooLarge => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Unauthorized => 401,
            ApiError::Unavailable => 503,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "BadRequest",
            ApiError::NotFound(_) | ApiError::NoSuchResource => "NotFound",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::AlreadyExists(_) => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } | ApiError::UnprocessablePatch(_) => "Invalid",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::Gone(_) => "Expired",
            ApiError::TooLarge => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Unavailable => "ServiceUnavailable",
            ApiError::Internal(_) => "InternalError",
        }
    }

    pub fn to_status(&self) -> Status {
        let st = Status::failure(self.code(), self.reason(), self.to_string());
        match self {
            ApiError::NotFound(o) | ApiError::AlreadyExists(o) => st.with_details(o.details()),
            ApiError::Conflict { obj, .. } | ApiError::Forbidden { obj, .. } => {
                st.with_details(obj.details())
            }
            ApiError::Invalid {
                kind,
                group,
                name,
                errors,
            } => st.with_details(StatusDetails {
                name: Some(name.clone()),
                group: Some(group.clone()).filter(|g| !g.is_empty()),
                kind: Some(kind.clone()),
                causes: errors
                    .iter()
                    .map(|e| {
                        let full = e.to_string();
                        let prefix = format!("{}: ", e.field);
                        StatusCause {
                            reason: Some(e.kind.cause_reason().to_string()),
                            message: Some(full.strip_prefix(&prefix).unwrap_or(&full).to_string()),
                            field: Some(e.field.clone()),
                        }
                    })
                    .collect(),
                ..Default::default()
            }),
            ApiError::BadRequest { causes, .. } | ApiError::ApplyConflict { causes, .. }
                if !causes.is_empty() =>
            {
                st.with_details(StatusDetails {
                    causes: causes.clone(),
                    ..Default::default()
                })
            }
            _ => st,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Gone { requested, oldest } => {
                ApiError::Gone(format!("too old resource version: {requested} ({oldest})"))
            }
            StoreError::Closed => ApiError::Unavailable,
            StoreError::Backend(m) => ApiError::Internal(format!("storage: {m}")),
        }
    }
}

/// A `Status` body as an HTTP response.
pub fn status_response(status: &Status) -> Response {
    let code = StatusCode::from_u16(status.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(status).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = (code, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code() >= 500 {
            tracing::error!(error = %self, "request failed");
        }
        status_response(&self.to_status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::{FieldError, FieldErrorKind};

    #[test]
    fn invalid_message_has_brackets_only_for_several_errors() {
        let one = ApiError::Invalid {
            kind: "Pod".into(),
            group: String::new(),
            name: "x".into(),
            errors: vec![FieldError {
                kind: FieldErrorKind::Required,
                field: "spec.containers[0].image".into(),
                value: None,
                detail: String::new(),
            }],
        };
        assert_eq!(
            one.to_string(),
            "Pod \"x\" is invalid: spec.containers[0].image: Required value"
        );
        let st = one.to_status();
        assert_eq!(st.code(), 422);
        let cause = &st.details.as_ref().unwrap().causes[0];
        assert_eq!(cause.reason.as_deref(), Some("FieldValueRequired"));
        assert_eq!(cause.field.as_deref(), Some("spec.containers[0].image"));
        assert_eq!(cause.message.as_deref(), Some("Required value"));
        let two = ApiError::Invalid {
            kind: "Pod".into(),
            group: String::new(),
            name: "x".into(),
            errors: vec![
                FieldError {
                    kind: FieldErrorKind::Required,
                    field: "a".into(),
                    value: None,
                    detail: String::new(),
                },
                FieldError {
                    kind: FieldErrorKind::Invalid,
                    field: "b".into(),
                    value: Some("-1".into()),
                    detail: "must be positive".into(),
                },
            ],
        };
        assert_eq!(
            two.to_string(),
            "Pod \"x\" is invalid: [a: Required value, b: Invalid value: -1: must be positive]"
        );
    }

    #[test]
    fn conflict_and_not_found_messages() {
        let o = ObjRef::new("deployments", "apps", "web");
        assert_eq!(
            ApiError::stale(o.clone()).to_string(),
            "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let nf = ApiError::NotFound(ObjRef::new("pods", "", "x")).to_status();
        assert_eq!(nf.message(), "pods \"x\" not found");
        assert_eq!(nf.reason(), "NotFound");
        assert_eq!(nf.details.unwrap().kind.as_deref(), Some("pods"));
    }
}
