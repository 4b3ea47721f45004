//! Consumer: inbox de-duplication, retries through delay queues, dead-lettering; and the full
//! outbox → relay → consumer path with trace propagation. Real PostgreSQL and RabbitMQ.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{Greeting, TestBroker, TestDb, amqp_url, eventually, metrics};
use cos_events::{
    ATTEMPT_HEADER, CONSUMER_HEADER, Consumer, ConsumerConfig, ERROR_HEADER, EventEnvelope,
    EventHandler, HandlerError, NewEvent, OutboxRelay, RelayConfig, decode_payload, enqueue,
};
use futures::future::BoxFuture;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use prost::{Message, Name};
use sqlx::{AssertSqlSafe, PgConnection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

const EVENT_TYPE: &str = "test.greeting.sent";

#[derive(Clone, Copy)]
enum Behavior {
    Succeed,
    FailTransiently(u32),
    FailPermanently,
    AlwaysTransient,
    Panic,
}

/// Inserts into `<schema>.applied` in the consumer's transaction, then succeeds or fails as
/// told (so a failure proves the rollback of its own write).
struct TestHandler {
    schema: String,
    behavior: Behavior,
    calls: AtomicU32,
    trace_ids: Mutex<Vec<String>>,
}

impl EventHandler for TestHandler {
    fn handle<'a>(
        &'a self,
        envelope: &'a EventEnvelope,
        tx: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.trace_ids
                .lock()
                .expect("lock")
                .push(common::current_trace_id());
            let id = Uuid::parse_str(&envelope.id).map_err(HandlerError::permanent)?;
            let greeting: Greeting = decode_payload(envelope)?;
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {}.applied (event_id, note) VALUES ($1, $2)",
                self.schema
            )))
            .bind(id)
            .bind(greeting.text)
            .execute(&mut *tx)
            .await?;
            match self.behavior {
                Behavior::Succeed => Ok(()),
                Behavior::FailTransiently(times) if call <= times => Err(HandlerError::Transient(
                    format!("flaky dependency (call {call})"),
                )),
                Behavior::FailTransiently(_) => Ok(()),
                Behavior::FailPermanently => {
                    Err(HandlerError::Permanent("boom: greeting rejected".into()))
                }
                Behavior::AlwaysTransient => Err(HandlerError::Transient("still down".into())),
                Behavior::Panic => panic!("handler bug"),
            }
        })
    }
}

struct Harness {
    db: TestDb,
    broker: TestBroker,
    config: ConsumerConfig,
    handler: Arc<TestHandler>,
    shutdown: CancellationToken,
    task: JoinHandle<cos_events::Result<()>>,
}

impl Harness {
    async fn start(
        behavior: Behavior,
        tweak: impl FnOnce(&mut ConsumerConfig),
    ) -> anyhow::Result<Self> {
        metrics();
        let db = TestDb::new().await?;
        let broker = TestBroker::new().await?;
        let queue = common::unique("cos.test.q.");
        let mut config = ConsumerConfig::new(amqp_url(), &queue, ["test.#"], "tests.consumer")
            .with_exchange(&broker.exchange);
        config.base_backoff = Duration::from_millis(200);
        tweak(&mut config);
        // Declared up front (as the consumer declares them) so that nothing published before
        // the consumer is up is dropped and the dead-letter queue can be polled at once.
        broker.durable_queue(&queue, Some("test.#")).await?;
        broker.durable_queue(&config.dlq_name(), None).await?;
        for attempt in 1..=config.max_attempts {
            broker.track(config.retry_queue_name(config.retry_delay(attempt)));
        }
        let handler = Arc::new(TestHandler {
            schema: db.schema.clone(),
            behavior,
            calls: AtomicU32::new(0),
            trace_ids: Mutex::new(Vec::new()),
        });
        let consumer = Consumer::new(config.clone(), db.pool.clone(), &db.schema, handler.clone())?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(consumer.run(shutdown.clone()));
        Ok(Self {
            db,
            broker,
            config,
            handler,
            shutdown,
            task,
        })
    }

    fn queue(&self) -> &str {
        &self.config.queue
    }

    fn counter(&self, name: &str) -> u64 {
        metrics().counter(name, &[("queue", self.queue())])
    }

    fn calls(&self) -> u32 {
        self.handler.calls.load(Ordering::SeqCst)
    }

    async fn publish_raw(&self, body: &[u8]) -> anyhow::Result<()> {
        self.broker
            .channel
            .basic_publish(
                self.broker.exchange.as_str().into(),
                EVENT_TYPE.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await???;
        self.broker.cleanup().await;
        drop(self.db);
        Ok(())
    }
}

fn envelope(text: &str) -> EventEnvelope {
    EventEnvelope {
        id: Uuid::now_v7().to_string(),
        r#type: EVENT_TYPE.into(),
        tenant_id: Uuid::new_v4().to_string(),
        occurred_at: Some(SystemTime::now().into()),
        traceparent: String::new(),
        payload: Greeting {
            text: text.into(),
            n: 1,
        }
        .encode_to_vec(),
        payload_type: Greeting::full_name(),
        source: "tests".into(),
    }
}

#[tokio::test]
async fn redelivered_event_is_applied_once() -> anyhow::Result<()> {
    let h = Harness::start(Behavior::Succeed, |_| {}).await?;
    let env = envelope("twice");
    let body = env.encode_to_vec();
    h.publish_raw(&body).await?;
    h.publish_raw(&body).await?;

    let hr = &h;
    let settled = eventually(Duration::from_secs(15), || async move {
        hr.counter("cos_events_processed_total") == 1
            && hr.counter("cos_events_duplicates_total") == 1
    })
    .await;
    assert!(settled, "both deliveries are settled");
    assert_eq!(h.db.count("applied").await, 1);
    assert_eq!(h.db.count("inbox").await, 1);
    assert_eq!(h.calls(), 1);

    // A third copy, much later, is still recognised.
    h.publish_raw(&body).await?;
    let hr = &h;
    assert!(
        eventually(Duration::from_secs(10), || async move {
            hr.counter("cos_events_duplicates_total") == 2
        })
        .await
    );
    assert_eq!(h.db.count("applied").await, 1);
    h.stop().await
}

#[tokio::test]
async fn transient_failure_is_retried_then_succeeds() -> anyhow::Result<()> {
    let h = Harness::start(Behavior::FailTransiently(2), |_| {}).await?;
    let env = envelope("flaky");
    h.publish_raw(&env.encode_to_vec()).await?;

    let hr = &h;
    let applied = eventually(Duration::from_secs(20), || async move {
        hr.counter("cos_events_processed_total") == 1
    })
    .await;
    assert!(applied, "the third attempt succeeds");
    assert_eq!(h.calls(), 3);
    assert_eq!(h.counter("cos_events_retried_total"), 2);
    // The failed attempts' writes were rolled back with their transactions.
    assert_eq!(h.db.count("applied").await, 1);
    assert_eq!(h.db.count("inbox").await, 1);
    assert!(
        h.broker
            .get(&h.config.dlq_name(), Duration::from_millis(300))
            .await
            .is_none()
    );
    h.stop().await
}

#[tokio::test]
async fn permanent_failure_is_dead_lettered_with_the_error() -> anyhow::Result<()> {
    let h = Harness::start(Behavior::FailPermanently, |_| {}).await?;
    let env = envelope("rejected");
    h.publish_raw(&env.encode_to_vec()).await?;

    let dead = h
        .broker
        .get(&h.config.dlq_name(), Duration::from_secs(10))
        .await
        .expect("dead-lettered");
    let error = common::header_string(&dead, ERROR_HEADER).unwrap_or_default();
    assert!(error.contains("boom: greeting rejected"), "{error}");
    assert_eq!(common::header_i64(&dead, ATTEMPT_HEADER), Some(1));
    assert_eq!(
        common::header_string(&dead, CONSUMER_HEADER).as_deref(),
        Some("tests.consumer")
    );
    assert_eq!(EventEnvelope::decode(dead.data.as_slice())?.id, env.id);

    let hr = &h;
    assert!(
        eventually(Duration::from_secs(5), || async move {
            hr.counter("cos_events_dead_lettered_total") == 1
        })
        .await
    );
    assert_eq!(h.calls(), 1);
    assert_eq!(h.db.count("applied").await, 0);
    assert_eq!(h.db.count("inbox").await, 0);
    h.stop().await
}

#[tokio::test]
async fn exhausted_retries_are_dead_lettered() -> anyhow::Result<()> {
    let h = Harness::start(Behavior::AlwaysTransient, |c| {
        c.max_attempts = 3;
        c.base_backoff = Duration::from_millis(100);
    })
    .await?;
    let env = envelope("never");
    h.publish_raw(&env.encode_to_vec()).await?;

    let dead = h
        .broker
        .get(&h.config.dlq_name(), Duration::from_secs(15))
        .await
        .expect("dead-lettered after max_attempts");
    assert_eq!(common::header_i64(&dead, ATTEMPT_HEADER), Some(3));
    let error = common::header_string(&dead, ERROR_HEADER).unwrap_or_default();
    assert!(error.contains("still down"), "{error}");
    assert_eq!(h.calls(), 3);
    assert_eq!(h.counter("cos_events_retried_total"), 2);
    assert_eq!(h.db.count("applied").await, 0);
    assert_eq!(h.db.count("inbox").await, 0);
    h.stop().await
}

#[tokio::test]
async fn undecodable_messages_are_dead_lettered_at_once() -> anyhow::Result<()> {
    let h = Harness::start(Behavior::Succeed, |_| {}).await?;
    // Field 1 claims 5 bytes but only 2 follow.
    h.publish_raw(b"\x0a\x05ab").await?;
    let mut bad_id = envelope("bad id");
    bad_id.id = "not-a-uuid".into();
    h.publish_raw(&bad_id.encode_to_vec()).await?;

    let mut errors = Vec::new();
    for _ in 0..2 {
        let dead = h
            .broker
            .get(&h.config.dlq_name(), Duration::from_secs(10))
            .await
            .expect("dead-lettered");
        assert_eq!(common::header_i64(&dead, ATTEMPT_HEADER), Some(1));
        errors.push(common::header_string(&dead, ERROR_HEADER).unwrap_or_default());
    }
    errors.sort();
    assert!(errors[0].contains("envelope id"), "{errors:?}");
    assert!(errors[1].contains("undecodable envelope"), "{errors:?}");
    assert_eq!(h.calls(), 0);
    h.stop().await
}

#[tokio::test]
async fn panicking_handler_is_dead_lettered_and_consumer_keeps_running() -> anyhow::Result<()> {
    let h = Harness::start(Behavior::Panic, |_| {}).await?;
    for text in ["first", "second"] {
        h.publish_raw(&envelope(text).encode_to_vec()).await?;
    }
    for _ in 0..2 {
        let dead = h
            .broker
            .get(&h.config.dlq_name(), Duration::from_secs(10))
            .await
            .expect("dead-lettered");
        let error = common::header_string(&dead, ERROR_HEADER).unwrap_or_default();
        assert!(error.contains("handler panicked: handler bug"), "{error}");
    }
    assert_eq!(h.calls(), 2);
    assert_eq!(h.db.count("applied").await, 0);
    assert!(
        !h.task.is_finished(),
        "the consumer survives handler panics"
    );
    h.stop().await
}

#[tokio::test(flavor = "current_thread")]
async fn outbox_to_consumer_end_to_end_with_trace_propagation() -> anyhow::Result<()> {
    let h = Harness::start(Behavior::Succeed, |_| {}).await?;
    let relay_config = RelayConfig::new(&h.db.schema, amqp_url()).with_exchange(&h.broker.exchange);
    let relay = OutboxRelay::new(h.db.pool.clone(), relay_config)?;
    let relay_task = tokio::spawn(relay.run(h.shutdown.clone()));

    let span = tracing::info_span!("request");
    let (id, trace_id) = async {
        let trace_id = common::current_trace_id();
        let mut tx = h.db.pool.begin().await?;
        let id = enqueue(
            &mut tx,
            &h.db.schema,
            "tests",
            NewEvent::new(
                EVENT_TYPE,
                Some(Uuid::new_v4()),
                &Greeting {
                    text: "e2e".into(),
                    n: 3,
                },
            ),
        )
        .await?;
        tx.commit().await?;
        anyhow::Ok((id, trace_id))
    }
    .instrument(span)
    .await?;

    let hr = &h;
    let applied = eventually(Duration::from_secs(15), || async move {
        hr.counter("cos_events_processed_total") == 1
    })
    .await;
    assert!(applied, "event flows from the outbox to the handler");
    let applied_id: Uuid = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT event_id FROM {}.applied",
        h.db.schema
    )))
    .fetch_one(&h.db.pool)
    .await?;
    assert_eq!(applied_id, id);
    // The handler ran in a span continuing the producer's trace.
    let seen = h.handler.trace_ids.lock().expect("lock").clone();
    assert_eq!(seen, vec![trace_id]);

    h.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), relay_task).await???;
    h.stop().await
}
