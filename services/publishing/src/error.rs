//! Publishing's error type: client errors pass through; everything else is logged with the
//! request's trace and reaches the client as a bare "internal error".

use cos_errors::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] ServiceError),
    #[error(transparent)]
    Db(#[from] cos_db::DbError),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Events(#[from] cos_events::Error),
    /// Already a client-facing status (from the auth helpers).
    #[error(transparent)]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Internal(String),
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Client(err) => err.to_status(),
            Error::Status(status) => status,
            other => {
                tracing::error!(error = %other, "publishing request failed");
                ServiceError::internal().to_status()
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
