//! Test isolation on the machine's real PostgreSQL, RabbitMQ and Redis: a database per test
//! cloned from a migrated template, unique exchange/queue names, a unique Redis key prefix, and a
//! TCP proxy that can take a dependency "down" to test outages.

mod proxy;
pub mod smtp;
pub mod stripe;
pub mod webhook;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};

pub use proxy::ToggleProxy;

/// Administrative connection for creating databases; override with `COS_TEST_DATABASE_URL`.
pub fn admin_url() -> String {
    std::env::var("COS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

pub fn amqp_url() -> String {
    std::env::var("COS_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn redis_url() -> String {
    std::env::var("COS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A short random suffix for names owned by one test.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

fn url_with_database(base: &str, db: &str) -> String {
    match base.rsplit_once('/') {
        Some((head, tail)) => {
            let query = tail
                .split_once('?')
                .map(|(_, q)| format!("?{q}"))
                .unwrap_or_default();
            format!("{head}/{db}{query}")
        }
        None => format!("{base}/{db}"),
    }
}

async fn exec(conn: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .map(|_| ())
}

/// A database that belongs to one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// Clones a template database keyed by `fingerprint` (build it with `migrate` the first time
    /// any test process needs it; a PostgreSQL advisory lock makes that happen once across
    /// concurrent test processes). Cloning a migrated template takes milliseconds; migrating
    /// each test's database would take seconds.
    pub async fn create<F, Fut>(fingerprint: &str, migrate: F) -> anyhow::Result<Self>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let admin = admin_url();
        let template = format!("cos_tpl_{fingerprint}");
        let mut conn = PgConnection::connect(&admin).await?;
        sqlx::query("SELECT pg_advisory_lock(7263100)")
            .execute(&mut conn)
            .await?;
        let result = async {
            let ready: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&template)
                    .fetch_one(&mut conn)
                    .await?;
            if !ready {
                // Build under a temporary name and rename at the end, so a crash mid-build never
                // leaves a half-migrated template behind.
                let building = format!("{template}_building");
                exec(
                    &mut conn,
                    format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
                )
                .await?;
                exec(&mut conn, format!("CREATE DATABASE {building}")).await?;
                migrate(url_with_database(&admin, &building)).await?;
                exec(
                    &mut conn,
                    format!("ALTER DATABASE {building} RENAME TO {template}"),
                )
                .await?;
                drop_stale_databases(&mut conn).await;
            }
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let name = format!("cos_test_{secs}_{}", unique_suffix());
            exec(
                &mut conn,
                format!("CREATE DATABASE {name} TEMPLATE {template}"),
            )
            .await?;
            Ok::<_, anyhow::Error>(name)
        }
        .await;
        sqlx::query("SELECT pg_advisory_unlock(7263100)")
            .execute(&mut conn)
            .await?;
        let name = result?;
        conn.close().await?;
        Ok(Self {
            url: url_with_database(&admin, &name),
            name,
        })
    }

    /// Drops the database (tests call it at the end; leftovers are swept after a few hours).
    pub async fn drop_database(self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&admin_url()).await?;
        exec(
            &mut conn,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await?;
        Ok(())
    }
}

/// Best effort: removes test databases older than three hours and templates of old migrations
/// are left alone (cheap, and another checkout may still use them).
async fn drop_stale_databases(conn: &mut PgConnection) {
    let cutoff = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .saturating_sub(3 * 3600);
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'cos\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let created = name
            .split('_')
            .nth(2)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        if created < cutoff {
            let _ = exec(conn, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        }
    }
}

/// RabbitMQ names owned by one test: its own topic exchange, so its events never reach another
/// test's queues.
#[derive(Debug, Clone)]
pub struct TestAmqp {
    pub url: String,
    pub exchange: String,
    pub suffix: String,
}

impl TestAmqp {
    pub fn new() -> Self {
        let suffix = unique_suffix();
        Self {
            url: amqp_url(),
            exchange: format!("cos.events.test.{suffix}"),
            suffix,
        }
    }

    /// A queue name unique to this test.
    pub fn queue(&self, purpose: &str) -> String {
        format!("test.{}.{purpose}", self.suffix)
    }

    /// Declares a temporary queue bound to this test's exchange with `binding` and returns a
    /// consumer on it: what a test uses to see which events were published.
    pub async fn subscribe(
        &self,
        binding: &str,
    ) -> anyhow::Result<(lapin::Connection, lapin::Consumer)> {
        use lapin::options::{
            BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
        };
        use lapin::types::FieldTable;
        let conn =
            lapin::Connection::connect(&self.url, lapin::ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        ch.exchange_declare(
            self.exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        let queue = self.queue(&format!("observer.{}", unique_suffix()));
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        ch.queue_bind(
            queue.as_str().into(),
            self.exchange.as_str().into(),
            binding.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let consumer = ch
            .basic_consume(
                queue.as_str().into(),
                "observer".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok((conn, consumer))
    }
}

impl Default for TestAmqp {
    fn default() -> Self {
        Self::new()
    }
}

/// A Redis key prefix unique to one test.
pub fn redis_prefix() -> String {
    format!("cos:test:{}:", unique_suffix())
}

/// Polls `check` until it returns `Some`, or fails after `timeout` (for eventually-consistent
/// effects such as an event arriving; not a timing assertion).
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
