//! Shared RabbitMQ plumbing: connecting with a timeout, reconnect backoff, header helpers.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Connection, ConnectionProperties};
use rand::Rng;

use crate::{Error, Result};

/// Opens a connection (no built-in retries: callers own the reconnect policy), bounded by
/// `timeout`.
pub(crate) async fn connect(url: &str, name: &str, timeout: Duration) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    match tokio::time::timeout(timeout, Connection::connect(url, props)).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(Error::ConnectTimeout(timeout)),
    }
}

/// Best-effort clean close of a connection (the broker releases unacked deliveries either way).
pub(crate) async fn close(conn: &Connection) {
    if conn.status().connected() {
        let closing = conn.close(lapin::protocol::constants::REPLY_SUCCESS, "shutdown".into());
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}

/// Capped exponential backoff with "equal jitter" (each delay is in `[d/2, d]`).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        let max = max.max(min);
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay to wait now; doubles the next one up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::rng().random_range(0..=jitter_ns))
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

pub(crate) fn short(s: &str) -> Result<ShortString> {
    ShortString::try_new(s).map_err(|_| Error::InvalidName {
        kind: "AMQP short string",
        value: s.to_owned(),
        reason: "longer than 255 bytes",
    })
}

pub(crate) fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Reads a header as an integer, whatever integer type the publisher used.
pub(crate) fn header_int(headers: Option<&FieldTable>, key: &str) -> Option<i64> {
    let value = headers?.inner().get(key)?;
    match value {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(10));
        }
        let capped = b.next_delay();
        assert!(capped >= Duration::from_secs(5));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn integer_headers_of_any_width() {
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::LongInt(3));
        t.insert("b".into(), AMQPValue::LongLongInt(4));
        t.insert("c".into(), AMQPValue::ShortShortUInt(5));
        t.insert("d".into(), long_str("6"));
        assert_eq!(header_int(Some(&t), "a"), Some(3));
        assert_eq!(header_int(Some(&t), "b"), Some(4));
        assert_eq!(header_int(Some(&t), "c"), Some(5));
        assert_eq!(header_int(Some(&t), "d"), Some(6));
        assert_eq!(header_int(Some(&t), "e"), None);
    }
}
