//! Idempotent DDL for the per-service `outbox` and `inbox` tables.

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::Result;
use crate::ident::{quoted, validate_identifier};

/// Creates `<schema>.outbox` and `<schema>.inbox` (and the schema) if they do not exist, and
/// grants the application role what [`crate::enqueue`] needs: `USAGE` on the schema and `INSERT`
/// on the outbox. Safe to run concurrently from several replicas (serialised by an advisory
/// lock) and on every start-up.
///
/// `schema` and `app_role` must be plain identifiers (`[a-z_][a-z0-9_]{0,62}`); the role must
/// already exist. Runs in a transaction of its own (a savepoint if `conn` is already in one).
pub async fn ensure_tables(conn: &mut PgConnection, schema: &str, app_role: &str) -> Result<()> {
    validate_identifier("schema", schema)?;
    validate_identifier("role", app_role)?;
    let s = quoted(schema);
    let role = quoted(app_role);

    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('cos_events.ensure_tables:' || $1))")
        .bind(schema)
        .execute(&mut *tx)
        .await?;
    let ddl = tables_ddl(&s, &role);
    sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The DDL `ensure_tables` runs, for already-quoted identifiers. Public so that whoever keys
/// things on the schema's shape (test template databases) can include it in a fingerprint.
pub fn tables_ddl(s: &str, role: &str) -> String {
    format!(
        r#"
CREATE SCHEMA IF NOT EXISTS {s};

CREATE TABLE IF NOT EXISTS {s}.outbox (
    id           uuid        PRIMARY KEY,
    event_type   text        NOT NULL CHECK (octet_length(event_type) BETWEEN 1 AND 255),
    tenant_id    uuid        NULL,
    envelope     bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz NULL,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text        NULL
);

CREATE INDEX IF NOT EXISTS outbox_unpublished_idx
    ON {s}.outbox (created_at, id) WHERE published_at IS NULL;

CREATE INDEX IF NOT EXISTS outbox_published_at_idx
    ON {s}.outbox (published_at) WHERE published_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS {s}.inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX IF NOT EXISTS inbox_processed_at_idx ON {s}.inbox (processed_at);

-- Exact grants on every run: a service's own schema-wide grants must not widen these. The app
-- role writes events inside its transactions and reads nothing; the inbox is the consumers' own.
GRANT USAGE ON SCHEMA {s} TO {role};
REVOKE ALL ON {s}.outbox, {s}.inbox FROM {role};
GRANT INSERT ON {s}.outbox TO {role};
"#
    )
}
