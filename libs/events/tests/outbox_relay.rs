//! Outbox writer and relay against the real PostgreSQL and RabbitMQ.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{APP_ROLE, Greeting, TestBroker, TestDb, amqp_url, closed_port, metrics};
use cos_events::{
    CONTENT_TYPE, EventEnvelope, NewEvent, OutboxRelay, RelayConfig, decode_payload_checked,
    enqueue, ensure_tables,
};
use prost::Message;
use sqlx::AssertSqlSafe;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

const EVENT_TYPE: &str = "test.greeting.sent";

fn relay_config(db: &TestDb, broker: &TestBroker) -> RelayConfig {
    RelayConfig::new(&db.schema, amqp_url()).with_exchange(&broker.exchange)
}

/// Enqueues one event in a transaction running as the RLS app role, then commits or rolls back.
async fn enqueue_as_app(db: &TestDb, tenant: Option<Uuid>, commit: bool) -> anyhow::Result<Uuid> {
    let mut tx = db.pool.begin().await?;
    sqlx::query(AssertSqlSafe(format!("SET LOCAL ROLE {APP_ROLE}")))
        .execute(&mut *tx)
        .await?;
    let payload = Greeting {
        text: "hello".into(),
        n: 7,
    };
    let id = enqueue(
        &mut tx,
        &db.schema,
        "tests",
        NewEvent::new(EVENT_TYPE, tenant, &payload),
    )
    .await?;
    if commit {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(id)
}

#[tokio::test]
async fn ensure_tables_is_idempotent_and_app_role_may_only_insert() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let mut conn = db.pool.acquire().await?;
    ensure_tables(&mut conn, &db.schema, APP_ROLE).await?;
    ensure_tables(&mut conn, &db.schema, APP_ROLE).await?;
    assert!(
        ensure_tables(&mut conn, "bad-schema; drop", APP_ROLE)
            .await
            .is_err()
    );
    assert!(
        ensure_tables(&mut conn, &db.schema, "Robert')--")
            .await
            .is_err()
    );

    let id = enqueue_as_app(&db, None, true).await?;
    // The app role may write the outbox but neither read nor change it.
    let mut tx = db.pool.begin().await?;
    sqlx::query(AssertSqlSafe(format!("SET LOCAL ROLE {APP_ROLE}")))
        .execute(&mut *tx)
        .await?;
    let read = sqlx::query(AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.outbox",
        db.schema
    )))
    .execute(&mut *tx)
    .await;
    assert!(read.is_err(), "app role must not read the outbox");
    tx.rollback().await?;

    let (event_type, attempts, published): (String, i32, Option<Uuid>) =
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT event_type, attempts, CASE WHEN published_at IS NULL THEN NULL ELSE id END \
             FROM {}.outbox WHERE id = $1",
            db.schema
        )))
        .bind(id)
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(event_type, EVENT_TYPE);
    assert_eq!(attempts, 0);
    assert_eq!(published, None);
    Ok(())
}

#[tokio::test]
async fn rolled_back_enqueue_publishes_nothing() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let broker = TestBroker::new().await?;
    let probe = broker.probe("#").await?;
    let relay = OutboxRelay::new(db.pool.clone(), relay_config(&db, &broker))?;

    enqueue_as_app(&db, Some(Uuid::new_v4()), false).await?;

    assert_eq!(db.count("outbox").await, 0);
    assert_eq!(relay.publish_pending_once().await?, 0);
    assert!(
        broker
            .get(&probe, Duration::from_millis(500))
            .await
            .is_none()
    );
    broker.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn committed_event_is_relayed_once_with_headers_and_trace() -> anyhow::Result<()> {
    let m = metrics();
    let db = TestDb::new().await?;
    let broker = TestBroker::new().await?;
    let probe = broker.probe("test.*.sent").await?;
    let relay = OutboxRelay::new(db.pool.clone(), relay_config(&db, &broker))?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));

    let tenant = Uuid::new_v4();
    let span = tracing::info_span!("request");
    let (id, trace_id) = async {
        let trace_id = common::current_trace_id();
        let id = enqueue_as_app(&db, Some(tenant), true).await?;
        anyhow::Ok((id, trace_id))
    }
    .instrument(span)
    .await?;
    assert_ne!(trace_id, "00000000000000000000000000000000");

    let msg = broker
        .get(&probe, Duration::from_secs(10))
        .await
        .expect("the relay publishes the committed event");
    assert_eq!(msg.routing_key.as_str(), EVENT_TYPE);
    let props = &msg.properties;
    assert_eq!(props.delivery_mode(), &Some(2));
    assert_eq!(
        props.message_id().as_ref().map(|s| s.as_str().to_owned()),
        Some(id.to_string())
    );
    assert_eq!(props.kind().as_ref().map(|s| s.as_str()), Some(EVENT_TYPE));
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some(CONTENT_TYPE)
    );
    assert_eq!(
        common::header_string(&msg, "tenant_id"),
        Some(tenant.to_string())
    );

    let env = EventEnvelope::decode(msg.data.as_slice())?;
    assert_eq!(env.id, id.to_string());
    assert_eq!(env.r#type, EVENT_TYPE);
    assert_eq!(env.tenant_id, tenant.to_string());
    assert_eq!(env.source, "tests");
    assert_eq!(env.payload_type, "campaignos.test.v1.Greeting");
    assert!(env.occurred_at.is_some());
    let greeting: Greeting = decode_payload_checked(&env)?;
    assert_eq!(greeting.text, "hello");
    assert_eq!(greeting.n, 7);
    // W3C traceparent of the request span: 00-<trace id>-<span id>-<flags>.
    assert!(
        env.traceparent.starts_with(&format!("00-{trace_id}-")),
        "traceparent {:?} should carry trace {trace_id}",
        env.traceparent
    );
    assert_eq!(
        common::header_string(&msg, "traceparent"),
        Some(env.traceparent.clone())
    );

    // Exactly once, and marked published.
    assert!(
        broker
            .get(&probe, Duration::from_millis(1500))
            .await
            .is_none()
    );
    let published = db.count("outbox WHERE published_at IS NOT NULL").await;
    assert_eq!(published, 1);
    let schema = db.schema.as_str();
    assert_eq!(
        m.counter("cos_outbox_published_total", &[("schema", schema)]),
        1
    );
    assert_eq!(
        m.gauge("cos_outbox_pending", &[("schema", schema)]),
        Some(0.0)
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await???;
    broker.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn unreachable_broker_keeps_rows_pending_then_publishes_once() -> anyhow::Result<()> {
    let m = metrics();
    let db = TestDb::new().await?;
    let broker = TestBroker::new().await?;
    let probe = broker.probe("#").await?;
    let schema = db.schema.clone();

    let id = enqueue_as_app(&db, None, true).await?;

    let mut bad_config = relay_config(&db, &broker);
    bad_config.amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", closed_port());
    bad_config.connect_timeout = Duration::from_secs(2);
    bad_config.poll_interval = Duration::from_millis(100);
    let bad = OutboxRelay::new(db.pool.clone(), bad_config.clone())?;
    for _ in 0..2 {
        let err = bad
            .publish_pending_once()
            .await
            .expect_err("broker is down");
        assert!(err.is_amqp(), "unexpected error kind: {err}");
    }
    let (attempts, last_error, published): (i32, Option<String>, bool) =
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT attempts, last_error, published_at IS NOT NULL FROM {schema}.outbox WHERE id = $1"
        )))
        .bind(id)
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(attempts, 2);
    assert!(last_error.is_some_and(|e| !e.is_empty()));
    assert!(!published);
    assert_eq!(
        m.counter("cos_outbox_publish_failures_total", &[("schema", &schema)]),
        2
    );
    assert_eq!(
        m.gauge("cos_outbox_pending", &[("schema", &schema)]),
        Some(1.0)
    );

    // The run loop keeps retrying with backoff and still stops promptly on shutdown.
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(OutboxRelay::new(db.pool.clone(), bad_config)?.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await???;
    assert_eq!(db.count("outbox WHERE published_at IS NULL").await, 1);

    // With the broker back, the event goes out exactly once.
    let good = OutboxRelay::new(db.pool.clone(), relay_config(&db, &broker))?;
    assert_eq!(good.publish_pending_once().await?, 1);
    assert_eq!(good.publish_pending_once().await?, 0);
    let msg = broker
        .get(&probe, Duration::from_secs(5))
        .await
        .expect("published after recovery");
    let env = EventEnvelope::decode(msg.data.as_slice())?;
    assert_eq!(env.id, id.to_string());
    assert!(
        broker
            .get(&probe, Duration::from_millis(1000))
            .await
            .is_none()
    );
    assert_eq!(db.count("outbox WHERE published_at IS NULL").await, 0);
    assert_eq!(
        m.counter("cos_outbox_published_total", &[("schema", &schema)]),
        1
    );
    assert_eq!(
        m.gauge("cos_outbox_pending", &[("schema", &schema)]),
        Some(0.0)
    );
    broker.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_relays_publish_every_event_once() -> anyhow::Result<()> {
    const EVENTS: usize = 250;
    let db = TestDb::new().await?;
    let broker = TestBroker::new().await?;
    let probe = broker.probe("#").await?;

    let mut tx = db.pool.begin().await?;
    let mut ids = HashSet::new();
    for n in 0..EVENTS {
        let payload = Greeting {
            text: format!("g{n}"),
            n: u32::try_from(n)?,
        };
        let id = enqueue(
            &mut tx,
            &db.schema,
            "tests",
            NewEvent::new(EVENT_TYPE, None, &payload),
        )
        .await?;
        ids.insert(id.to_string());
    }
    tx.commit().await?;

    let mut config = relay_config(&db, &broker);
    config.batch_size = 20;
    let a = OutboxRelay::new(db.pool.clone(), config.clone())?;
    let b = OutboxRelay::new(db.pool.clone(), config)?;
    let drain = |relay: OutboxRelay| async move {
        let mut total = 0;
        loop {
            match relay.publish_pending_once().await? {
                0 => return anyhow::Ok(total),
                n => total += n,
            }
        }
    };
    let (na, nb) = tokio::try_join!(drain(a), drain(b))?;
    assert_eq!(na + nb, EVENTS);

    let mut seen = HashSet::new();
    while let Some(msg) = broker.get(&probe, Duration::from_millis(1000)).await {
        let env = EventEnvelope::decode(msg.data.as_slice())?;
        assert!(seen.insert(env.id), "published twice");
    }
    assert_eq!(seen, ids);
    broker.cleanup().await;
    Ok(())
}
