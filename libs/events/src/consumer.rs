//! Idempotent event consumer: inbox de-duplication, manual ack after commit, delayed retries
//! through TTL queues and a dead-letter queue.

use std::collections::HashSet;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cos_proto::common::v1::EventEnvelope;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};
use prost::Message;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::amqp::{self, Backoff, header_int, long_str, short};
use crate::ident::{quoted, validate_amqp_name, validate_identifier};
use crate::relay::{DEFAULT_EXCHANGE, redact_url};
use crate::trace::parent_context;
use crate::{Error, Result};

/// Header with the 1-based attempt number of a delivery (absent on the first one); on a
/// dead-lettered message, the attempt that failed last.
pub const ATTEMPT_HEADER: &str = "x-cos-attempt";
/// Header with the last handler error (retried and dead-lettered messages).
pub const ERROR_HEADER: &str = "x-cos-error";
/// Header with the consumer name that dead-lettered a message.
pub const CONSUMER_HEADER: &str = "x-cos-consumer";

/// Why a handler did not apply an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Might succeed later (database unavailable, dependency down, serialization failure): the
    /// transaction is rolled back and the event is retried after a backoff, then dead-lettered
    /// after `max_attempts`.
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed (invalid payload, violated invariant): dead-lettered at once.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandlerError {
    /// A transient error from anything displayable.
    pub fn transient(e: impl fmt::Display) -> Self {
        Self::Transient(e.to_string())
    }

    /// A permanent error from anything displayable.
    pub fn permanent(e: impl fmt::Display) -> Self {
        Self::Permanent(e.to_string())
    }
}

/// Database errors are retried (and dead-lettered if they persist).
impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(e.to_string())
    }
}

/// A payload that does not decode will not decode next time either.
impl From<prost::DecodeError> for HandlerError {
    fn from(e: prost::DecodeError) -> Self {
        Self::Permanent(e.to_string())
    }
}

impl From<Error> for HandlerError {
    fn from(e: Error) -> Self {
        match e {
            Error::Decode(_) | Error::PayloadType { .. } | Error::InvalidName { .. } => {
                Self::Permanent(e.to_string())
            }
            _ => Self::Transient(e.to_string()),
        }
    }
}

/// Applies one event. Runs inside the consumer's transaction (`tx`), which already holds the
/// inbox row: everything the handler writes commits together with it, exactly once. To write
/// as the RLS app role, the handler may `SET LOCAL ROLE` and `set_config('app.tenant_id', ..,
/// true)` on `tx` itself.
pub trait EventHandler: Send + Sync + 'static {
    /// Handles `envelope`; an error rolls the transaction back.
    fn handle<'a>(
        &'a self,
        envelope: &'a EventEnvelope,
        tx: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// Settings of a [`Consumer`].
#[derive(Clone)]
pub struct ConsumerConfig {
    /// RabbitMQ URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub amqp_url: String,
    /// Topic exchange the queue is bound to (declared durable if missing).
    pub exchange: String,
    /// Durable queue, one per (service, purpose), e.g. `analytics.campaign-events`. The delay
    /// queues `<queue>.retry.<ms>` and the dead-letter queue `<queue>.dlq` derive from it.
    pub queue: String,
    /// Topic patterns the queue is bound with, e.g. `campaigns.campaign.*`, `identity.#`.
    pub binding_keys: Vec<String>,
    /// Inbox key: events are de-duplicated per consumer name.
    pub consumer_name: String,
    /// Deliveries in flight (and handled concurrently). Default 16.
    pub prefetch: u16,
    /// Handler attempts before a transiently failing event is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles per attempt. Default 1 s.
    pub base_backoff: Duration,
    /// Cap of the retry delay. Default 10 min.
    pub max_backoff: Duration,
    /// Timeout of one connection attempt. Default 5 s.
    pub connect_timeout: Duration,
    /// How long a retry or dead-letter publish waits for the broker's confirm. Default 10 s.
    pub confirm_timeout: Duration,
    /// First reconnect delay (doubles up to `max_reconnect_backoff`, jittered). Default 100 ms.
    pub min_reconnect_backoff: Duration,
    /// Reconnect delay cap. Default 10 s.
    pub max_reconnect_backoff: Duration,
}

impl ConsumerConfig {
    /// Defaults for `queue` on [`DEFAULT_EXCHANGE`], bound with `binding_keys`, de-duplicating
    /// under `consumer_name`.
    pub fn new(
        amqp_url: impl Into<String>,
        queue: impl Into<String>,
        binding_keys: impl IntoIterator<Item = impl Into<String>>,
        consumer_name: impl Into<String>,
    ) -> Self {
        Self {
            amqp_url: amqp_url.into(),
            exchange: DEFAULT_EXCHANGE.to_owned(),
            queue: queue.into(),
            binding_keys: binding_keys.into_iter().map(Into::into).collect(),
            consumer_name: consumer_name.into(),
            prefetch: 16,
            max_attempts: 5,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(10),
            min_reconnect_backoff: Duration::from_millis(100),
            max_reconnect_backoff: Duration::from_secs(10),
        }
    }

    /// Replaces the exchange name.
    #[must_use]
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// Name of the dead-letter queue.
    pub fn dlq_name(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    /// Name of the delay queue holding messages for `delay`.
    pub fn retry_queue_name(&self, delay: Duration) -> String {
        format!("{}.retry.{}", self.queue, delay.as_millis())
    }

    /// Delay before attempt `failed_attempt + 1`: `base_backoff * 2^(failed_attempt - 1)`,
    /// capped at `max_backoff`.
    pub fn retry_delay(&self, failed_attempt: u32) -> Duration {
        let exp = failed_attempt.saturating_sub(1).min(30);
        self.base_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff)
    }

    fn validate(&self) -> Result<()> {
        validate_amqp_name("exchange", &self.exchange, 255)?;
        // Leave room for the longest derived name, `<queue>.retry.<ms>`.
        validate_amqp_name("queue", &self.queue, 200)?;
        if self.queue.starts_with("amq.") {
            return Err(Error::InvalidName {
                kind: "queue",
                value: self.queue.clone(),
                reason: "the amq. prefix is reserved by the broker",
            });
        }
        if self.binding_keys.is_empty() {
            return Err(Error::Config("at least one binding key is required".into()));
        }
        for key in &self.binding_keys {
            validate_amqp_name("binding key", key, 255)?;
        }
        if self.consumer_name.is_empty() {
            return Err(Error::Config("consumer_name must not be empty".into()));
        }
        if self.prefetch == 0 {
            return Err(Error::Config("prefetch must be at least 1".into()));
        }
        if self.max_attempts == 0 {
            return Err(Error::Config("max_attempts must be at least 1".into()));
        }
        if self.base_backoff.is_zero() {
            return Err(Error::Config("base_backoff must be positive".into()));
        }
        Ok(())
    }
}

impl fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("exchange", &self.exchange)
            .field("queue", &self.queue)
            .field("binding_keys", &self.binding_keys)
            .field("consumer_name", &self.consumer_name)
            .field("prefetch", &self.prefetch)
            .field("max_attempts", &self.max_attempts)
            .field("base_backoff", &self.base_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish_non_exhaustive()
    }
}

/// Consumes one queue with an [`EventHandler`]; see the crate docs for the guarantees.
pub struct Consumer {
    config: ConsumerConfig,
    pool: PgPool,
    inbox_sql: String,
    handler: Arc<dyn EventHandler>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

enum Applied {
    Done,
    Duplicate,
}

/// What became of a delivery, for logs and metrics.
enum Disposition {
    Applied,
    Duplicate,
    Retried,
    DeadLettered,
}

/// One live connection's channels and the delay queues already declared on it.
struct Session {
    publisher: Channel,
    declared: Mutex<HashSet<String>>,
}

impl Consumer {
    /// A consumer whose inbox is `<inbox_schema>.inbox` on `pool` (see
    /// [`crate::ensure_tables`]).
    pub fn new(
        config: ConsumerConfig,
        pool: PgPool,
        inbox_schema: &str,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Self> {
        config.validate()?;
        validate_identifier("schema", inbox_schema)?;
        Ok(Self {
            inbox_sql: format!(
                "INSERT INTO {}.inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                quoted(inbox_schema)
            ),
            config,
            pool,
            handler,
        })
    }

    /// The consumer's settings.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Consumes until `shutdown` is cancelled, reconnecting (capped, jittered exponential
    /// backoff) whenever the connection or channel is lost; unacknowledged deliveries then go
    /// back to the queue. On shutdown the consumer is cancelled, in-flight deliveries finish
    /// and the connection is closed.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let mut backoff = Backoff::new(
            self.config.min_reconnect_backoff,
            self.config.max_reconnect_backoff,
        );
        tracing::info!(queue = %self.config.queue, consumer = %self.config.consumer_name, "event consumer starting");
        while !shutdown.is_cancelled() {
            match self.session(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(queue = %self.config.queue, error = %e, ?delay, "event consumer lost its connection; reconnecting");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::info!(queue = %self.config.queue, "event consumer stopped");
        Ok(())
    }

    /// Declares the exchange, the queue with its bindings and the dead-letter queue.
    async fn declare_topology(&self, channel: &Channel) -> Result<()> {
        channel
            .exchange_declare(
                short(&self.config.exchange)?,
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let durable = QueueDeclareOptions::durable();
        channel
            .queue_declare(short(&self.config.queue)?, durable, FieldTable::default())
            .await?;
        for key in &self.config.binding_keys {
            channel
                .queue_bind(
                    short(&self.config.queue)?,
                    short(&self.config.exchange)?,
                    short(key)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        channel
            .queue_declare(
                short(&self.config.dlq_name())?,
                durable,
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// One connection's lifetime. `Ok` only on shutdown.
    async fn session(&self, shutdown: &CancellationToken, backoff: &mut Backoff) -> Result<()> {
        let name = format!("cos-consumer:{}", self.config.queue);
        let conn = amqp::connect(&self.config.amqp_url, &name, self.config.connect_timeout).await?;
        let result = async {
            let publisher = conn.create_channel().await?;
            self.declare_topology(&publisher).await?;
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let channel = conn.create_channel().await?;
            channel
                .basic_qos(self.config.prefetch, BasicQosOptions::default())
                .await?;
            let tag = format!("{}:{}", self.config.consumer_name, Uuid::new_v4().simple());
            let mut deliveries = channel
                .basic_consume(
                    short(&self.config.queue)?,
                    short(&tag)?,
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            tracing::info!(queue = %self.config.queue, url = %redact_url(&self.config.amqp_url), "event consumer connected");
            backoff.reset();

            let session = Session {
                publisher,
                declared: Mutex::new(HashSet::new()),
            };
            let limit = usize::from(self.config.prefetch);
            let mut in_flight = FuturesUnordered::new();
            let outcome: Result<()> = loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break Ok(()),
                    Some(res) = in_flight.next(), if !in_flight.is_empty() => {
                        if let Err(e) = res {
                            break Err(e);
                        }
                    }
                    next = deliveries.next(), if in_flight.len() < limit => match next {
                        Some(Ok(delivery)) => in_flight.push(self.process(&session, delivery)),
                        Some(Err(e)) => break Err(e.into()),
                        None => break Err(Error::ConsumerClosed),
                    },
                }
            };
            if outcome.is_ok() {
                // Stop new deliveries; prefetched ones not yet taken return to the queue when
                // the channel closes.
                let _ = channel
                    .basic_cancel(short(&tag)?, BasicCancelOptions::default())
                    .await;
            }
            while let Some(res) = in_flight.next().await {
                if let Err(e) = res {
                    tracing::warn!(queue = %self.config.queue, error = %e, "delivery not settled; it will be redelivered");
                }
            }
            outcome
        }
        .await;
        amqp::close(&conn).await;
        result
    }

    /// Handles one delivery end to end. An `Err` means the AMQP side is broken (the delivery
    /// is left unacked, to be redelivered after reconnecting).
    async fn process(&self, session: &Session, delivery: Delivery) -> Result<()> {
        let headers = delivery.properties.headers().as_ref();
        let attempt = header_int(headers, ATTEMPT_HEADER)
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(1)
            .max(1);
        let queue = self.config.queue.clone();

        let envelope = match EventEnvelope::decode(delivery.data.as_slice()) {
            Ok(env) => env,
            Err(e) => {
                let msg = format!("undecodable envelope: {e}");
                tracing::warn!(%queue, error = %msg, "dead-lettering message");
                self.dead_letter(session, &delivery, attempt, &msg).await?;
                delivery.acker.ack(BasicAckOptions::default()).await?;
                metrics::counter!("cos_events_dead_lettered_total", "queue" => queue).increment(1);
                return Ok(());
            }
        };
        let span = tracing::info_span!(
            "event.handle",
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.destination.name = %queue,
            event.id = %envelope.id,
            "event.type" = %envelope.r#type,
            consumer = %self.config.consumer_name,
            attempt,
        );
        if !envelope.traceparent.is_empty() {
            let _ = span.set_parent(parent_context(&envelope.traceparent));
        }
        let disposition = self
            .settle(session, &delivery, &envelope, attempt)
            .instrument(span)
            .await?;
        let name = match disposition {
            Disposition::Applied => "cos_events_processed_total",
            Disposition::Duplicate => "cos_events_duplicates_total",
            Disposition::Retried => "cos_events_retried_total",
            Disposition::DeadLettered => "cos_events_dead_lettered_total",
        };
        metrics::counter!(name, "queue" => queue).increment(1);
        Ok(())
    }

    async fn settle(
        &self,
        session: &Session,
        delivery: &Delivery,
        envelope: &EventEnvelope,
        attempt: u32,
    ) -> Result<Disposition> {
        let outcome = match Uuid::parse_str(&envelope.id) {
            Ok(id) => self.apply(envelope, id).await,
            Err(e) => Err(HandlerError::Permanent(format!(
                "envelope id {:?} is not a uuid: {e}",
                envelope.id
            ))),
        };
        let disposition = match outcome {
            Ok(Applied::Done) => {
                tracing::debug!("event applied");
                Disposition::Applied
            }
            Ok(Applied::Duplicate) => {
                tracing::debug!("event already applied; acknowledging duplicate");
                Disposition::Duplicate
            }
            Err(HandlerError::Transient(msg)) if attempt < self.config.max_attempts => {
                let delay = self.config.retry_delay(attempt);
                tracing::warn!(error = %msg, ?delay, "event handler failed transiently; retrying");
                self.retry(session, delivery, attempt, delay, &msg).await?;
                Disposition::Retried
            }
            Err(err) => {
                let msg = err.to_string();
                tracing::error!(error = %msg, "dead-lettering event");
                self.dead_letter(session, delivery, attempt, &msg).await?;
                Disposition::DeadLettered
            }
        };
        delivery.acker.ack(BasicAckOptions::default()).await?;
        Ok(disposition)
    }

    /// Inbox insert + handler + commit in one transaction.
    async fn apply(&self, envelope: &EventEnvelope, id: Uuid) -> Result<Applied, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(AssertSqlSafe(self.inbox_sql.as_str()))
            .bind(&self.config.consumer_name)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            tx.commit().await?;
            return Ok(Applied::Duplicate);
        }
        // A panicking handler must not take the consumer down: the event is dead-lettered.
        let handled = AssertUnwindSafe(self.handler.handle(envelope, &mut tx))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                Err(HandlerError::Permanent(format!("handler panicked: {msg}")))
            });
        match handled {
            Ok(()) => {
                tx.commit().await?;
                Ok(Applied::Done)
            }
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::debug!(error = %rb, "rollback failed; the connection is discarded");
                }
                Err(e)
            }
        }
    }

    /// Sends the message to `<queue>.retry.<delay_ms>`, from where it dead-letters back to the
    /// main queue after the delay.
    async fn retry(
        &self,
        session: &Session,
        delivery: &Delivery,
        failed_attempt: u32,
        delay: Duration,
        error: &str,
    ) -> Result<()> {
        let queue = self.config.retry_queue_name(delay);
        let known = session
            .declared
            .lock()
            .map(|d| d.contains(&queue))
            .unwrap_or(false);
        if !known {
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            let mut args = FieldTable::default();
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            args.insert("x-dead-letter-exchange".into(), long_str(""));
            args.insert(
                "x-dead-letter-routing-key".into(),
                long_str(&self.config.queue),
            );
            session
                .publisher
                .queue_declare(short(&queue)?, QueueDeclareOptions::durable(), args)
                .await?;
            if let Ok(mut d) = session.declared.lock() {
                d.insert(queue.clone());
            }
        }
        let next = i64::from(failed_attempt.saturating_add(1));
        let extra = [
            (ATTEMPT_HEADER, AMQPValue::LongLongInt(next)),
            (ERROR_HEADER, long_str(&truncate(error, 4096))),
        ];
        self.publish_copy(session, delivery, &queue, &extra).await
    }

    /// Sends the message to `<queue>.dlq` with the error and attempt headers.
    async fn dead_letter(
        &self,
        session: &Session,
        delivery: &Delivery,
        attempt: u32,
        error: &str,
    ) -> Result<()> {
        let extra = [
            (ATTEMPT_HEADER, AMQPValue::LongLongInt(i64::from(attempt))),
            (ERROR_HEADER, long_str(&truncate(error, 4096))),
            (CONSUMER_HEADER, long_str(&self.config.consumer_name)),
        ];
        self.publish_copy(session, delivery, &self.config.dlq_name(), &extra)
            .await
    }

    /// Publishes a persistent copy of `delivery` to `queue` through the default exchange and
    /// waits for the broker's confirm.
    async fn publish_copy(
        &self,
        session: &Session,
        delivery: &Delivery,
        queue: &str,
        extra: &[(&str, AMQPValue)],
    ) -> Result<()> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        for (k, v) in extra {
            headers.insert((*k).into(), v.clone());
        }
        let props: BasicProperties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2);
        let confirm = session
            .publisher
            .basic_publish(
                "".into(),
                short(queue)?,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &delivery.data,
                props,
            )
            .await?;
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        match tokio::time::timeout(self.config.confirm_timeout, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(Error::Rejected {
                message_id,
                reason: format!("returned: {}", returned.reply_text),
            }),
            Ok(Ok(Confirmation::Nack(_))) => Err(Error::Rejected {
                message_id,
                reason: "nack".into(),
            }),
            Ok(Ok(Confirmation::NotRequested)) => Err(Error::Rejected {
                message_id,
                reason: "publisher confirms are not enabled on the channel".into(),
            }),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Error::ConfirmTimeout(self.config.confirm_timeout)),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_and_cap() {
        let mut c = ConsumerConfig::new("amqp://x", "q", ["a.b.c"], "c");
        c.base_backoff = Duration::from_millis(200);
        c.max_backoff = Duration::from_secs(1);
        assert_eq!(c.retry_delay(1), Duration::from_millis(200));
        assert_eq!(c.retry_delay(2), Duration::from_millis(400));
        assert_eq!(c.retry_delay(3), Duration::from_millis(800));
        assert_eq!(c.retry_delay(4), Duration::from_secs(1));
        assert_eq!(c.retry_delay(100), Duration::from_secs(1));
        assert_eq!(c.retry_queue_name(c.retry_delay(2)), "q.retry.400");
        assert_eq!(c.dlq_name(), "q.dlq");
    }

    #[test]
    fn config_validation() {
        let ok = ConsumerConfig::new("amqp://x", "svc.purpose", ["a.#"], "svc.purpose");
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.binding_keys.clear();
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.queue = "amq.x".into();
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.queue = "q".repeat(201);
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.max_attempts = 0;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
