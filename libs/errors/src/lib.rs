//! One error-code table for the whole mesh: each code maps to a `tonic::Code`, an HTTP status and
//! an RFC 9457 `application/problem+json` body with field violations.
//!
//! Services return [`ServiceError`]s; they cross gRPC as `tonic::Status` carrying an `ErrorInfo`
//! (reason = the code's name) and a `BadRequest` (field violations) in the rich error details,
//! so the gateway recovers the exact code (a plan limit and a rate limit are both
//! RESOURCE_EXHAUSTED in gRPC, but 402 and 429 in HTTP).

use std::fmt;

use http::StatusCode;
use serde::Serialize;
use tonic_types::{ErrorDetails, StatusExt};

/// Domain put in `ErrorInfo` so foreign details are not mistaken for ours.
pub const ERROR_DOMAIN: &str = "campaign-os";

/// Base URI of the problem `type` field; the slug of each code is appended.
pub const PROBLEM_TYPE_BASE: &str = "https://docs.campaign-os.dev/problems/";

/// Content type of error bodies.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

macro_rules! error_codes {
    ($( $variant:ident => $slug:literal, $grpc:ident, $http:ident, $title:literal; )*) => {
        /// Every error the mesh can return, with its gRPC and HTTP mapping.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $( $variant, )* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$( ErrorCode::$variant, )*];

            /// Stable snake_case name, used as `code` in problem+json and `reason` in gRPC.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $slug, )* }
            }
            pub fn grpc_code(self) -> tonic::Code {
                match self { $( ErrorCode::$variant => tonic::Code::$grpc, )* }
            }
            pub fn http_status(self) -> StatusCode {
                match self { $( ErrorCode::$variant => StatusCode::$http, )* }
            }
            pub fn title(self) -> &'static str {
                match self { $( ErrorCode::$variant => $title, )* }
            }
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $( $slug => Some(ErrorCode::$variant), )* _ => None }
            }
        }
    };
}

error_codes! {
    InvalidArgument => "invalid_argument", InvalidArgument, UNPROCESSABLE_ENTITY, "The request has invalid fields";
    MalformedRequest => "malformed_request", InvalidArgument, BAD_REQUEST, "The request could not be parsed";
    Unauthenticated => "unauthenticated", Unauthenticated, UNAUTHORIZED, "Authentication is required";
    PermissionDenied => "permission_denied", PermissionDenied, FORBIDDEN, "You are not allowed to do this";
    NotFound => "not_found", NotFound, NOT_FOUND, "Not found";
    MethodNotAllowed => "method_not_allowed", Unimplemented, METHOD_NOT_ALLOWED, "Method not allowed";
    AlreadyExists => "already_exists", AlreadyExists, CONFLICT, "It already exists";
    FailedPrecondition => "failed_precondition", FailedPrecondition, CONFLICT, "The resource is not in a state that allows this";
    VersionConflict => "version_conflict", Aborted, CONFLICT, "The resource was changed by someone else";
    PlanLimit => "plan_limit", ResourceExhausted, PAYMENT_REQUIRED, "Your plan's limit is reached";
    RateLimited => "rate_limited", ResourceExhausted, TOO_MANY_REQUESTS, "Too many requests";
    PayloadTooLarge => "payload_too_large", InvalidArgument, PAYLOAD_TOO_LARGE, "The request body is too large";
    UnsupportedMediaType => "unsupported_media_type", InvalidArgument, UNSUPPORTED_MEDIA_TYPE, "Unsupported content type";
    Unavailable => "unavailable", Unavailable, SERVICE_UNAVAILABLE, "The service is temporarily unavailable";
    DeadlineExceeded => "deadline_exceeded", DeadlineExceeded, GATEWAY_TIMEOUT, "The request took too long";
    Internal => "internal", Internal, INTERNAL_SERVER_ERROR, "Internal error";
}

impl ErrorCode {
    /// The code a bare `tonic::Status` (one without our details) stands for.
    pub fn from_grpc(code: tonic::Code) -> Self {
        use tonic::Code as C;
        match code {
            C::InvalidArgument | C::OutOfRange => ErrorCode::InvalidArgument,
            C::Unauthenticated => ErrorCode::Unauthenticated,
            C::PermissionDenied => ErrorCode::PermissionDenied,
            C::NotFound => ErrorCode::NotFound,
            C::AlreadyExists => ErrorCode::AlreadyExists,
            C::FailedPrecondition => ErrorCode::FailedPrecondition,
            C::Aborted => ErrorCode::VersionConflict,
            C::ResourceExhausted => ErrorCode::RateLimited,
            C::Unavailable => ErrorCode::Unavailable,
            C::DeadlineExceeded | C::Cancelled => ErrorCode::DeadlineExceeded,
            C::Unimplemented => ErrorCode::NotFound,
            C::Ok | C::Unknown | C::Internal | C::DataLoss => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One invalid field: `field` is the snake_case path as the client sent it (`tokens.access_token`,
/// `members[2].role`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldViolation {
    pub field: String,
    pub message: String,
}

/// An error a service returns to its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
    pub violations: Vec<FieldViolation>,
    /// Extra machine-readable facts (a plan limit's name, value and usage; retry-after seconds).
    pub metadata: Vec<(String, String)>,
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            violations: Vec::new(),
            metadata: Vec::new(),
        }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let (field, message) = (field.into(), message.into());
        Self::new(ErrorCode::InvalidArgument, format!("{field}: {message}"))
            .with_violation(field, message)
    }
    /// Several violations at once (validation collects all of them, not only the first).
    pub fn invalid_fields(violations: Vec<FieldViolation>) -> Self {
        let message = violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            code: ErrorCode::InvalidArgument,
            message,
            violations,
            metadata: Vec::new(),
        }
    }
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AlreadyExists, message)
    }
    /// The client-facing message never carries internal detail; log `detail` where it happens.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }
    pub fn with_violation(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.violations.push(FieldViolation {
            field: field.into(),
            message: message.into(),
        });
        self
    }
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.metadata.push((key.into(), value.to_string()));
        self
    }
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Encodes as a `tonic::Status` with rich details.
    pub fn to_status(&self) -> tonic::Status {
        let mut details = ErrorDetails::new();
        let metadata: std::collections::HashMap<String, String> =
            self.metadata.iter().cloned().collect();
        details.set_error_info(self.code.as_str(), ERROR_DOMAIN, metadata);
        for v in &self.violations {
            details.add_bad_request_violation(v.field.clone(), v.message.clone());
        }
        tonic::Status::with_error_details(self.code.grpc_code(), self.message.clone(), details)
    }

    /// Decodes a status from any service (ours carry details; others fall back on the code).
    pub fn from_status(status: &tonic::Status) -> Self {
        let details = status.get_error_details();
        let mut code = ErrorCode::from_grpc(status.code());
        let mut metadata = Vec::new();
        if let Some(info) = details.error_info()
            && info.domain == ERROR_DOMAIN
        {
            if let Some(c) = ErrorCode::from_name(&info.reason) {
                code = c;
            }
            let mut md: Vec<_> = info.metadata.clone().into_iter().collect();
            md.sort();
            metadata = md;
        }
        let violations = details
            .bad_request()
            .map(|br| {
                br.field_violations
                    .iter()
                    .map(|v| FieldViolation {
                        field: v.field.clone(),
                        message: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let message = if code == ErrorCode::Internal {
            // Never forward whatever text an upstream put in an internal error.
            "internal error".to_owned()
        } else {
            status.message().to_owned()
        };
        Self {
            code,
            message,
            violations,
            metadata,
        }
    }

    /// The RFC 9457 body for this error.
    pub fn to_problem(&self, instance: &str, request_id: Option<&str>) -> Problem {
        Problem {
            r#type: format!("{PROBLEM_TYPE_BASE}{}", self.code.as_str()),
            title: self.code.title().to_owned(),
            status: self.code.http_status().as_u16(),
            detail: self.message.clone(),
            instance: instance.to_owned(),
            code: self.code.as_str(),
            request_id: request_id.map(str::to_owned),
            errors: self.violations.clone(),
            metadata: if self.metadata.is_empty() {
                None
            } else {
                Some(self.metadata.iter().cloned().collect())
            },
        }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ServiceError {}

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        e.to_status()
    }
}

/// `application/problem+json` body.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub r#type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub instance: String,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldViolation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_grpc_status() {
        for &code in ErrorCode::ALL {
            let err = ServiceError::new(code, "boom").with_metadata("limit", 5);
            let back = ServiceError::from_status(&err.to_status());
            assert_eq!(back.code, code, "{code}");
            assert_eq!(back.metadata_value("limit"), Some("5"));
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
        }
    }

    #[test]
    fn plan_limit_and_rate_limit_share_a_grpc_code_but_not_an_http_status() {
        assert_eq!(
            ErrorCode::PlanLimit.grpc_code(),
            ErrorCode::RateLimited.grpc_code()
        );
        assert_eq!(
            ErrorCode::PlanLimit.http_status(),
            StatusCode::PAYMENT_REQUIRED
        );
        assert_eq!(
            ErrorCode::RateLimited.http_status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn field_violations_survive_the_trip_and_reach_the_problem_body() {
        let err = ServiceError::invalid_fields(vec![
            FieldViolation {
                field: "email".into(),
                message: "is not a valid email address".into(),
            },
            FieldViolation {
                field: "password".into(),
                message: "must be at least 10 characters".into(),
            },
        ]);
        let back = ServiceError::from_status(&err.to_status());
        assert_eq!(back.violations, err.violations);
        let problem =
            serde_json::to_value(back.to_problem("/v1/auth/register", Some("r1"))).unwrap();
        assert_eq!(problem["status"], 422);
        assert_eq!(problem["code"], "invalid_argument");
        assert_eq!(problem["errors"][0]["field"], "email");
        assert_eq!(problem["errors"][1]["field"], "password");
        assert_eq!(problem["request_id"], "r1");
    }

    #[test]
    fn internal_messages_from_upstream_are_not_forwarded() {
        let status = tonic::Status::internal("duplicate key value violates constraint users_pkey");
        let err = ServiceError::from_status(&status);
        assert_eq!(err.code, ErrorCode::Internal);
        assert_eq!(err.message, "internal error");
    }

    #[test]
    fn foreign_status_falls_back_on_the_grpc_code() {
        let err = ServiceError::from_status(&tonic::Status::not_found("no such thing"));
        assert_eq!(err.code, ErrorCode::NotFound);
        assert_eq!(err.code.http_status(), StatusCode::NOT_FOUND);
    }
}
