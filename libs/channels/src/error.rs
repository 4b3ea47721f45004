//! The outcome of one delivery attempt.

use std::time::Duration;

/// Why a delivery attempt failed, and whether retrying can help.
///
/// `reason` carries the provider's own words (e.g. `550 5.1.1 mailbox unavailable` or
/// `HTTP 410 Gone: <first 200 chars of the body>`) and never contains secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later (network error, timeout, SMTP 4xx, HTTP 408/425/429/5xx).
    /// `retry_after` is the receiver's own hint (HTTP `Retry-After`), when it gave one.
    #[error("transient: {reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Will never succeed (SMTP 5xx e.g. 550 mailbox unavailable, HTTP 4xx other than
    /// 408/425/429 e.g. 410 Gone, invalid address or message).
    #[error("permanent: {reason}")]
    Permanent { reason: String },
}

impl SendError {
    /// A transient error without a retry hint.
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent {
            reason: reason.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent { .. })
    }

    /// The provider's words (without the `transient:`/`permanent:` prefix).
    pub fn reason(&self) -> &str {
        match self {
            Self::Transient { reason, .. } | Self::Permanent { reason } => reason,
        }
    }

    /// The receiver's retry hint, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            Self::Permanent { .. } => None,
        }
    }
}

/// What the receiving side said when it accepted a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The receiver's id for the message when it tells one (SMTP `queued as X`), otherwise our
    /// own id (the `Message-ID` for email, the idempotency key for webhooks).
    pub provider_message_id: String,
    /// The receiver's reply, e.g. `250 2.0.0 Ok: queued as X` or `HTTP 200`.
    pub detail: String,
}

/// Cuts `s` to at most `max` characters (on a char boundary), replacing control characters
/// (CR, LF, ...) with spaces so provider text stays one log-friendly line.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}
