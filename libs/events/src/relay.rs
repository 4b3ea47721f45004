//! Outbox relay: publishes pending `<schema>.outbox` rows to the topic exchange with publisher
//! confirms, then marks them published.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cos_proto::common::v1::EventEnvelope;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use prost::Message;
use sqlx::postgres::PgListener;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::amqp::{self, Backoff, long_str, short};
use crate::ident::{quoted, validate_amqp_name, validate_identifier};
use crate::outbox::NOTIFY_CHANNEL;
use crate::{CONTENT_TYPE, Error, Result, TENANT_HEADER, TRACEPARENT_HEADER};

/// The exchange every service publishes its events to (DESIGN.md §7).
pub const DEFAULT_EXCHANGE: &str = "cos.events";

/// Settings of an [`OutboxRelay`].
#[derive(Clone)]
pub struct RelayConfig {
    /// Schema whose `outbox` is relayed (the owning service's schema).
    pub schema: String,
    /// RabbitMQ URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub amqp_url: String,
    /// Topic exchange to publish to (declared durable if missing). Default [`DEFAULT_EXCHANGE`].
    pub exchange: String,
    /// Rows claimed and published per transaction. Default 100.
    pub batch_size: u32,
    /// How often the outbox is polled when no `NOTIFY` arrives. Default 1 s.
    pub poll_interval: Duration,
    /// How long a batch waits for the broker's confirms before counting as failed. Default 10 s.
    pub confirm_timeout: Duration,
    /// Timeout of one connection attempt. Default 5 s.
    pub connect_timeout: Duration,
    /// First delay after a failure; doubles up to `max_backoff` (with jitter). Default 100 ms.
    pub min_backoff: Duration,
    /// Cap of the failure backoff. Default 10 s.
    pub max_backoff: Duration,
}

impl RelayConfig {
    /// Defaults for `schema` publishing to [`DEFAULT_EXCHANGE`] at `amqp_url`.
    pub fn new(schema: impl Into<String>, amqp_url: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            amqp_url: amqp_url.into(),
            exchange: DEFAULT_EXCHANGE.to_owned(),
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }

    /// Replaces the exchange name.
    #[must_use]
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("schema", &self.schema)
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("exchange", &self.exchange)
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

/// Hides the password of `scheme://user:password@host`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

struct Publisher {
    conn: Connection,
    channel: Channel,
}

impl Publisher {
    fn is_healthy(&self) -> bool {
        self.conn.status().connected() && self.channel.status().connected()
    }
}

/// Publishes the rows of one schema's outbox. Any number of replicas may run side by side.
pub struct OutboxRelay {
    pool: PgPool,
    config: RelayConfig,
    select_sql: String,
    mark_sql: String,
    fail_sql: String,
    count_sql: String,
    publisher: Mutex<Option<Publisher>>,
}

impl fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type OutboxRow = (Uuid, String, Option<Uuid>, Vec<u8>);

impl OutboxRelay {
    /// A relay reading `<config.schema>.outbox` through `pool` (whose user must be able to
    /// read and update the outbox, i.e. not the RLS app role). Connects lazily.
    pub fn new(pool: PgPool, config: RelayConfig) -> Result<Self> {
        validate_identifier("schema", &config.schema)?;
        validate_amqp_name("exchange", &config.exchange, 255)?;
        if config.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        let table = format!("{}.outbox", quoted(&config.schema));
        Ok(Self {
            select_sql: format!(
                "SELECT id, event_type, tenant_id, envelope FROM {table} \
                 WHERE published_at IS NULL ORDER BY created_at, id LIMIT $1 \
                 FOR UPDATE SKIP LOCKED"
            ),
            mark_sql: format!("UPDATE {table} SET published_at = now() WHERE id = ANY($1)"),
            fail_sql: format!(
                "UPDATE {table} SET attempts = attempts + 1, last_error = $2 \
                 WHERE id = ANY($1) AND published_at IS NULL"
            ),
            count_sql: format!("SELECT count(*) FROM {table} WHERE published_at IS NULL"),
            pool,
            config,
            publisher: Mutex::new(None),
        })
    }

    /// The relay's settings.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Number of outbox rows not yet published.
    pub async fn pending_count(&self) -> Result<i64> {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(self.count_sql.as_str()))
            .fetch_one(&self.pool)
            .await?;
        metrics::gauge!("cos_outbox_pending", "schema" => self.config.schema.clone()).set(n as f64);
        Ok(n)
    }

    /// Claims up to `batch_size` pending rows (`FOR UPDATE SKIP LOCKED`), publishes them, waits
    /// for every confirm and marks the confirmed rows published, all in one transaction.
    /// Returns how many rows were published.
    ///
    /// On a RabbitMQ failure (unreachable, channel error, nack, confirm timeout) the rows that
    /// were not confirmed stay pending with `attempts` bumped and `last_error` set, the
    /// connection is dropped (the next call reconnects) and the error is returned.
    pub async fn publish_pending_once(&self) -> Result<usize> {
        let mut slot = self.publisher.lock().await;
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(AssertSqlSafe(self.select_sql.as_str()))
            .bind(i64::from(self.config.batch_size))
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.commit().await?;
            self.refresh_pending_gauge().await;
            return Ok(0);
        }

        let (confirmed, failure) = self.publish_rows(&mut slot, &rows).await;

        if !confirmed.is_empty() {
            sqlx::query(AssertSqlSafe(self.mark_sql.as_str()))
                .bind(&confirmed)
                .execute(&mut *tx)
                .await?;
        }
        let schema = self.config.schema.clone();
        let Some(err) = failure else {
            tx.commit().await?;
            metrics::counter!("cos_outbox_published_total", "schema" => schema)
                .increment(confirmed.len() as u64);
            tracing::debug!(schema = %self.config.schema, count = confirmed.len(), "outbox batch published");
            self.refresh_pending_gauge().await;
            return Ok(confirmed.len());
        };

        // Drop the connection: the next attempt starts from a fresh one.
        if let Some(old) = slot.take() {
            amqp::close(&old.conn).await;
        }
        let done: HashSet<Uuid> = confirmed.iter().copied().collect();
        let failed: Vec<Uuid> = rows
            .iter()
            .map(|r| r.0)
            .filter(|id| !done.contains(id))
            .collect();
        sqlx::query(AssertSqlSafe(self.fail_sql.as_str()))
            .bind(&failed)
            .bind(err.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("cos_outbox_published_total", "schema" => schema.clone())
            .increment(confirmed.len() as u64);
        metrics::counter!("cos_outbox_publish_failures_total", "schema" => schema)
            .increment(failed.len() as u64);
        tracing::warn!(
            schema = %self.config.schema,
            published = confirmed.len(),
            failed = failed.len(),
            error = %err,
            "outbox publish failed; rows stay pending"
        );
        self.refresh_pending_gauge().await;
        Err(err)
    }

    /// Publishes and relays until `shutdown` is cancelled: connects (retrying with capped,
    /// jittered exponential backoff), then publishes batches back to back while rows are
    /// pending, otherwise waits for a `NOTIFY` on [`NOTIFY_CHANNEL`] or the poll interval.
    /// A batch in flight when shutdown is requested is finished first.
    ///
    /// The `LISTEN` connection is taken from the pool for the relay's lifetime, so the pool
    /// needs at least two connections. Errors are logged and retried; it returns `Ok` on
    /// shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let wake = Arc::new(Notify::new());
        let listener_stop = shutdown.child_token();
        let listener = tokio::spawn(listen(
            self.pool.clone(),
            self.config.schema.clone(),
            Arc::clone(&wake),
            listener_stop.clone(),
            self.config.poll_interval,
        ));
        let mut backoff = Backoff::new(self.config.min_backoff, self.config.max_backoff);
        tracing::info!(schema = %self.config.schema, exchange = %self.config.exchange, "outbox relay starting");

        // Connect first, so that a missing broker shows up at start-up.
        while !shutdown.is_cancelled() {
            let connected = {
                let mut slot = self.publisher.lock().await;
                self.channel(&mut slot).await
            };
            match connected {
                Ok(_) => {
                    backoff.reset();
                    break;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(schema = %self.config.schema, error = %e, ?delay, "outbox relay cannot connect to RabbitMQ; retrying");
                    sleep_or_shutdown(delay, &shutdown).await;
                }
            }
        }

        while !shutdown.is_cancelled() {
            match self.publish_pending_once().await {
                Ok(n) => {
                    backoff.reset();
                    if n >= self.config.batch_size as usize {
                        continue;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = wake.notified() => {}
                        () = tokio::time::sleep(self.config.poll_interval) => {}
                    }
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    if !e.is_amqp() {
                        tracing::warn!(schema = %self.config.schema, error = %e, ?delay, "outbox relay database error; retrying");
                    }
                    sleep_or_shutdown(delay, &shutdown).await;
                }
            }
        }

        listener_stop.cancel();
        let _ = listener.await;
        if let Some(p) = self.publisher.lock().await.take() {
            amqp::close(&p.conn).await;
        }
        tracing::info!(schema = %self.config.schema, "outbox relay stopped");
        Ok(())
    }

    async fn refresh_pending_gauge(&self) {
        if let Err(e) = self.pending_count().await {
            tracing::debug!(error = %e, "could not count pending outbox rows");
        }
    }

    /// A healthy confirm-mode channel, (re)connecting if needed.
    async fn channel(&self, slot: &mut Option<Publisher>) -> Result<Channel> {
        if let Some(p) = slot.as_ref().filter(|p| p.is_healthy()) {
            return Ok(p.channel.clone());
        }
        if let Some(old) = slot.take() {
            amqp::close(&old.conn).await;
        }
        let name = format!("cos-outbox-relay:{}", self.config.schema);
        let conn = amqp::connect(&self.config.amqp_url, &name, self.config.connect_timeout).await?;
        let channel = conn.create_channel().await?;
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
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        tracing::info!(schema = %self.config.schema, url = %redact_url(&self.config.amqp_url), "outbox relay connected to RabbitMQ");
        let ch = channel.clone();
        *slot = Some(Publisher { conn, channel });
        Ok(ch)
    }

    /// Publishes every row, then awaits the confirms. Returns the confirmed ids and the first
    /// failure, if any.
    async fn publish_rows(
        &self,
        slot: &mut Option<Publisher>,
        rows: &[OutboxRow],
    ) -> (Vec<Uuid>, Option<Error>) {
        let channel = match self.channel(slot).await {
            Ok(c) => c,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut failure = None;
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            match self.publish_row(&channel, row).await {
                Ok(confirm) => pending.push((row.0, confirm)),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.config.confirm_timeout;
        let mut confirmed = Vec::with_capacity(pending.len());
        for (id, confirm) in pending {
            let err = match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(_))) => {
                    confirmed.push(id);
                    continue;
                }
                Ok(Ok(Confirmation::Nack(_))) => Error::Rejected {
                    message_id: id.to_string(),
                    reason: "nack".into(),
                },
                Ok(Ok(Confirmation::NotRequested)) => Error::Rejected {
                    message_id: id.to_string(),
                    reason: "publisher confirms are not enabled on the channel".into(),
                },
                Ok(Err(e)) => Error::Amqp(e),
                Err(_) => {
                    failure.get_or_insert(Error::ConfirmTimeout(self.config.confirm_timeout));
                    break;
                }
            };
            failure.get_or_insert(err);
        }
        (confirmed, failure)
    }

    async fn publish_row(
        &self,
        channel: &Channel,
        (id, event_type, tenant_id, envelope): &OutboxRow,
    ) -> Result<lapin::PublisherConfirm> {
        let decoded = EventEnvelope::decode(envelope.as_slice()).ok();
        let mut headers = FieldTable::default();
        headers.insert(
            TRACEPARENT_HEADER.into(),
            long_str(decoded.as_ref().map_or("", |e| e.traceparent.as_str())),
        );
        let tenant = tenant_id.map(|t| t.to_string()).unwrap_or_default();
        headers.insert(TENANT_HEADER.into(), long_str(&tenant));
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(short(&id.to_string())?)
            .with_type(short(event_type)?)
            .with_content_type(CONTENT_TYPE.into())
            .with_headers(headers);
        if let Some(env) = &decoded {
            if let Some(ts) = env.occurred_at.and_then(|t| u64::try_from(t.seconds).ok()) {
                props = props.with_timestamp(ts);
            }
            if let Ok(app) = short(&env.source) {
                props = props.with_app_id(app);
            }
        }
        Ok(channel
            .basic_publish(
                short(&self.config.exchange)?,
                short(event_type)?,
                BasicPublishOptions::default(),
                envelope,
                props,
            )
            .await?)
    }
}

async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}

/// Forwards `NOTIFY cos_outbox '<schema>'` to `wake`, re-listening after errors.
async fn listen(
    pool: PgPool,
    schema: String,
    wake: Arc<Notify>,
    stop: CancellationToken,
    retry: Duration,
) {
    while !stop.is_cancelled() {
        tokio::select! {
            () = stop.cancelled() => return,
            res = listen_session(&pool, &schema, &wake) => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "outbox LISTEN failed; polling until it is re-established");
                }
            }
        }
        sleep_or_shutdown(retry, &stop).await;
    }
}

async fn listen_session(pool: &PgPool, schema: &str, wake: &Notify) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    // Anything committed while we were not listening is picked up by this extra round.
    wake.notify_one();
    loop {
        let n = listener.recv().await?;
        if n.payload() == schema {
            wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
