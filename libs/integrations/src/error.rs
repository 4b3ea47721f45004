//! The crate's error type and its mapping onto the mesh's error codes.

use cos_crypto::DecryptError;
use cos_db::DbError;
use cos_errors::{ErrorCode, FieldViolation, ServiceError};

/// Errors of [`crate::IntegrationStore`] and [`crate::ensure_tables`]. No variant ever holds a
/// submitted value, a decrypted secret or a ciphertext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrationError {
    /// The update was refused; each violation names its field (`values.secret_key`, `reason`).
    #[error("invalid integration settings: {}", describe(.0))]
    Invalid(Vec<FieldViolation>),
    /// `expected_version` did not match: someone else changed the config since it was read.
    #[error(
        "integration settings for {provider} were changed by someone else (expected version {expected}, current version {current})"
    )]
    VersionConflict {
        provider: String,
        expected: i64,
        /// 0 when the config does not exist (or was created concurrently).
        current: i64,
    },
    /// Platform-level settings may only be changed by a platform administrator.
    #[error("only platform administrators may change platform-level integration settings")]
    PermissionDenied,
    /// A stored secret did not decrypt: the key ring lacks its key, or the ciphertext was moved
    /// or tampered with.
    #[error("cannot decrypt {scope} {provider}.{field}: {source}")]
    Decrypt {
        scope: String,
        provider: String,
        field: String,
        source: DecryptError,
    },
    /// A schema, role or provider spec that cannot be used (a programming or deployment error).
    #[error("invalid {kind}: {detail}")]
    Misconfigured { kind: &'static str, detail: String },
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for IntegrationError {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(DbError::Sqlx(err))
    }
}

impl IntegrationError {
    /// The mesh error code this error maps to.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::VersionConflict { .. } => ErrorCode::VersionConflict,
            Self::PermissionDenied => ErrorCode::PermissionDenied,
            Self::Decrypt { .. } | Self::Misconfigured { .. } | Self::Db(_) => ErrorCode::Internal,
        }
    }
}

impl From<IntegrationError> for ServiceError {
    fn from(err: IntegrationError) -> Self {
        match err {
            IntegrationError::Invalid(violations) => ServiceError::invalid_fields(violations),
            IntegrationError::VersionConflict { current, .. } => {
                ServiceError::new(ErrorCode::VersionConflict, err.to_string())
                    .with_metadata("current_version", current)
            }
            IntegrationError::PermissionDenied => ServiceError::permission_denied(err.to_string()),
            IntegrationError::Decrypt { .. }
            | IntegrationError::Misconfigured { .. }
            | IntegrationError::Db(_) => {
                // The detail stays in the log (it names key ids and rows, never secrets).
                tracing::error!(error = %err, "integration settings");
                ServiceError::internal()
            }
        }
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_onto_mesh_codes() {
        let invalid = IntegrationError::Invalid(vec![FieldViolation {
            field: "values.secret_key".into(),
            message: "is required".into(),
        }]);
        assert_eq!(
            invalid.to_string(),
            "invalid integration settings: values.secret_key: is required"
        );
        let service = ServiceError::from(invalid);
        assert_eq!(service.code, ErrorCode::InvalidArgument);
        assert_eq!(service.violations[0].field, "values.secret_key");

        let conflict = ServiceError::from(IntegrationError::VersionConflict {
            provider: "stripe".into(),
            expected: 2,
            current: 3,
        });
        assert_eq!(conflict.code, ErrorCode::VersionConflict);
        assert_eq!(format!("{:?}", conflict.code.grpc_code()), "Aborted");
        assert_eq!(conflict.code.http_status().as_u16(), 409);
        assert_eq!(conflict.metadata_value("current_version"), Some("3"));

        let internal = ServiceError::from(IntegrationError::Decrypt {
            scope: "platform".into(),
            provider: "stripe".into(),
            field: "secret_key".into(),
            source: DecryptError::AuthenticationFailed,
        });
        assert_eq!(internal.code, ErrorCode::Internal);
        assert_eq!(internal.message, "internal error");
    }
}
