//! Validation of names that end up formatted into SQL (schemas, roles) or AMQP short strings.

use crate::{Error, Result};

/// Checks that `value` is a plain lower-case PostgreSQL identifier: `[a-z_][a-z0-9_]{0,62}`.
/// Only such names are ever formatted into SQL by this crate (and they are quoted as well).
pub fn validate_identifier(kind: &'static str, value: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidName {
            kind,
            value: value.to_owned(),
            reason,
        })
    };
    let bytes = value.as_bytes();
    let Some(first) = bytes.first() else {
        return invalid("must not be empty");
    };
    if bytes.len() > 63 {
        return invalid("must be at most 63 characters");
    }
    if !(first.is_ascii_lowercase() || *first == b'_') {
        return invalid("must start with a lower-case ASCII letter or '_'");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
    {
        return invalid("may contain only lower-case ASCII letters, digits and '_'");
    }
    Ok(())
}

/// Checks an AMQP name (queue, exchange, binding key): 1..=`max_len` bytes (AMQP short strings
/// hold at most 255), no control characters.
pub(crate) fn validate_amqp_name(kind: &'static str, value: &str, max_len: usize) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidName {
            kind,
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return invalid("must not be empty");
    }
    if value.len() > max_len {
        return invalid("is too long for an AMQP short string");
    }
    if value.chars().any(char::is_control) {
        return invalid("must not contain control characters");
    }
    Ok(())
}

/// Checks an event type / routing key `<service>.<entity>.<verb>`: non-empty dot-separated
/// words without topic wildcards, at most 255 bytes.
pub(crate) fn validate_event_type(value: &str) -> Result<()> {
    validate_amqp_name("event type", value, 255)?;
    let ok = value.split('.').all(|word| {
        !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !ok {
        return Err(Error::InvalidName {
            kind: "event type",
            value: value.to_owned(),
            reason: "must be dot-separated words of [A-Za-z0-9_-] (e.g. campaigns.campaign.launched)",
        });
    }
    Ok(())
}

/// Quotes an identifier that already passed [`validate_identifier`].
pub(crate) fn quoted(ident: &str) -> String {
    format!("\"{ident}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["identity", "_x", "a1_b2", &"a".repeat(63)] {
            assert!(validate_identifier("schema", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "Identity",
            "a-b",
            "a b",
            "a;drop",
            "a\"b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(validate_identifier("schema", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_types() {
        assert!(validate_event_type("campaigns.campaign.launched").is_ok());
        assert!(validate_event_type("identity.api_key.created").is_ok());
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "a.*.b",
            "a.#",
            "a b",
            &"a".repeat(256),
        ] {
            assert!(validate_event_type(bad).is_err(), "{bad}");
        }
    }
}
