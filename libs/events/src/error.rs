//! The crate's error type.

/// Errors returned by the outbox, relay and consumer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A schema, role or other name that is formatted into SQL or AMQP is not acceptable.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidName {
        /// What the name is for (schema, role, event type, queue, ...).
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// RabbitMQ failed (connection, channel, declaration or publish).
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// Connecting to RabbitMQ took longer than the configured timeout.
    #[error("amqp: connecting timed out after {0:?}")]
    ConnectTimeout(std::time::Duration),
    /// The broker did not confirm published messages in time.
    #[error("amqp: publisher confirms timed out after {0:?}")]
    ConfirmTimeout(std::time::Duration),
    /// The broker negatively acknowledged (or returned) a published message.
    #[error("amqp: broker rejected message {message_id}: {reason}")]
    Rejected {
        /// The message id (event id) of the rejected message.
        message_id: String,
        /// nack, or the return reason for a mandatory message.
        reason: String,
    },
    /// The consumer's delivery stream ended (channel or connection closed, consumer cancelled).
    #[error("amqp: consumer stream ended")]
    ConsumerClosed,
    /// A protobuf message (envelope or payload) did not decode.
    #[error("decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The envelope's payload is not of the requested type.
    #[error("payload type mismatch: expected {expected}, envelope has {actual:?}")]
    PayloadType {
        /// The type the caller asked for.
        expected: String,
        /// The envelope's `payload_type`.
        actual: String,
    },
}

impl Error {
    /// Whether the error came from RabbitMQ (as opposed to PostgreSQL or the caller's input).
    pub fn is_amqp(&self) -> bool {
        matches!(
            self,
            Self::Amqp(_)
                | Self::ConnectTimeout(_)
                | Self::ConfirmTimeout(_)
                | Self::Rejected { .. }
                | Self::ConsumerClosed
        )
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
