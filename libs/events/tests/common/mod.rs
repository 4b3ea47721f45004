//! Test harness: a fresh PostgreSQL database and uniquely named RabbitMQ objects per test, an
//! in-process metrics recorder, and small polling helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

pub const APP_ROLE: &str = "cos_app";

pub fn admin_url() -> String {
    std::env::var("COS_TEST_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn amqp_url() -> String {
    std::env::var("COS_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

/// Creates the app role unless it exists; tolerant of other test processes doing the same.
async fn ensure_app_role(admin: &mut PgConnection) -> anyhow::Result<()> {
    let sql = format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
             CREATE ROLE {APP_ROLE} NOLOGIN;
           END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$"
    );
    let mut last = None;
    for _ in 0..10 {
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut *admin)
            .await
        {
            Ok(_) => return Ok(()),
            // e.g. "tuple concurrently updated" when another process races us.
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last.map_or_else(|| anyhow::anyhow!("role creation failed"), Into::into))
}

/// A database of its own, with the outbox/inbox tables in a uniquely named service schema
/// (unique so that metric labels do not collide between tests sharing a process) and an
/// `applied` table for handlers. Dropped (best effort) with the value, even after a panic.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub schema: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> anyhow::Result<Self> {
        init_tracing();
        let name = unique("cos_events_test_");
        let mut admin = PgConnection::connect(&admin_url()).await?;
        ensure_app_role(&mut admin).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let base = admin_url();
        let url = match base.rsplit_once('/') {
            Some((prefix, _)) => format!("{prefix}/{name}"),
            None => anyhow::bail!("admin url without a database: {base}"),
        };
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await?;
        let schema = format!("svc_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let db = Self {
            name,
            url,
            schema,
            pool,
        };
        let mut conn = db.pool.acquire().await?;
        cos_events::ensure_tables(&mut conn, &db.schema, APP_ROLE).await?;
        let s = &db.schema;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {s}.applied (event_id uuid NOT NULL, note text NOT NULL DEFAULT '');"
        )))
        .execute(&mut *conn)
        .await?;
        Ok(db)
    }

    /// `SELECT count(*) FROM <schema>.<rest>`.
    pub async fn count(&self, rest: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {}.{rest}", self.schema);
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .expect("count query")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = admin_url();
        // Async work cannot run in Drop; use a private runtime on a helper thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            // WITH (FORCE) terminates the pool's remaining connections server-side.
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A connection to the broker with a uniquely named durable topic exchange; deletes the
/// exchange and the registered queues in [`TestBroker::cleanup`].
pub struct TestBroker {
    pub conn: Connection,
    pub channel: Channel,
    pub exchange: String,
    queues: Mutex<Vec<String>>,
}

impl TestBroker {
    pub async fn new() -> anyhow::Result<Self> {
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        let exchange = unique("cos.test.");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            conn,
            channel,
            exchange,
            queues: Mutex::new(Vec::new()),
        })
    }

    /// Registers a queue name for deletion at cleanup.
    pub fn track(&self, queue: impl Into<String>) {
        self.queues.lock().expect("lock").push(queue.into());
    }

    /// An exclusive queue (gone with the connection) bound to the exchange with `binding`.
    pub async fn probe(&self, binding: &str) -> anyhow::Result<String> {
        let name = unique("cos.test.probe.");
        self.channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::exclusive(),
                FieldTable::default(),
            )
            .await?;
        self.bind(&name, binding).await?;
        self.track(name.clone());
        Ok(name)
    }

    /// Declares a durable queue as the consumer will, bound with `binding`, so that messages
    /// published before the consumer is up are not dropped.
    pub async fn durable_queue(&self, name: &str, binding: Option<&str>) -> anyhow::Result<()> {
        self.channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await?;
        if let Some(binding) = binding {
            self.bind(name, binding).await?;
        }
        self.track(name);
        Ok(())
    }

    async fn bind(&self, queue: &str, binding: &str) -> anyhow::Result<()> {
        self.channel
            .queue_bind(
                queue.into(),
                self.exchange.as_str().into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Fetches one message (auto-acked), waiting up to `timeout`.
    pub async fn get(&self, queue: &str, timeout: Duration) -> Option<lapin::message::Delivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic_get");
            if let Some(msg) = got {
                return Some(msg.delivery);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Best-effort removal of everything this test created on the broker.
    pub async fn cleanup(self) {
        let Ok(channel) = self.conn.create_channel().await else {
            return;
        };
        let queues = self.queues.lock().expect("lock").clone();
        for q in queues {
            let _ = channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

pub fn header<'a>(delivery: &'a lapin::message::Delivery, key: &str) -> Option<&'a AMQPValue> {
    delivery.properties.headers().as_ref()?.inner().get(key)
}

pub fn header_string(delivery: &lapin::message::Delivery, key: &str) -> Option<String> {
    match header(delivery, key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

pub fn header_i64(delivery: &lapin::message::Delivery, key: &str) -> Option<i64> {
    match header(delivery, key)? {
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        _ => None,
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` elapses.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A closed local TCP port (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// Process-wide metrics recorder that keeps counters and gauges in memory.
#[derive(Default)]
struct Store {
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

#[derive(Clone, Default)]
pub struct TestMetrics(Arc<Store>);

fn key_string(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

impl TestMetrics {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
        let k = key_string(key.name(), &labels);
        Arc::clone(self.0.values.lock().expect("lock").entry(k).or_default())
    }

    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let k = key_string(name, labels);
        self.0
            .values
            .lock()
            .expect("lock")
            .get(&k)
            .map_or(0, |v| v.load(Ordering::SeqCst))
    }

    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let k = key_string(name, labels);
        self.0
            .values
            .lock()
            .expect("lock")
            .get(&k)
            .map(|v| f64::from_bits(v.load(Ordering::SeqCst)))
    }
}

impl Recorder for TestMetrics {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The process-wide recorder (installed on first use). Metric labels in the tests are unique
/// per test, so tests sharing a process do not see each other's values.
pub fn metrics() -> TestMetrics {
    static METRICS: OnceLock<TestMetrics> = OnceLock::new();
    METRICS
        .get_or_init(|| {
            let m = TestMetrics::default();
            let _ = metrics::set_global_recorder(m.clone());
            m
        })
        .clone()
}

/// A small payload message with a protobuf name, as generated code with type names would have.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Greeting {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub n: u32,
}

impl prost::Name for Greeting {
    const NAME: &'static str = "Greeting";
    const PACKAGE: &'static str = "campaignos.test.v1";
}

/// Installs, once per process, a global tracing subscriber with an OpenTelemetry layer (spans
/// get real trace ids; nothing is exported) plus a `RUST_LOG`-filtered fmt layer, and the W3C
/// trace-context propagator as the global propagator.
///
/// Global rather than thread-scoped on purpose: with a single scoped dispatcher, tracing
/// caches callsite interest from whichever thread registers a callsite first, so a test thread
/// without a subscriber could disable the consumer's spans for every test in the process.
pub fn init_tracing() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("cos-events-tests");
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(filter),
            );
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// The trace id of the current tracing span's OpenTelemetry context, as 32 hex digits.
pub fn current_trace_id() -> String {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}
