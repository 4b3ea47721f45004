//! Import jobs: queueing (with the uploaded file), claiming (SKIP LOCKED, with takeover of jobs
//! whose worker went silent), per-batch progress committed with the batch, rejections, finish.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;
use crate::store::IMPORT_CHANNEL;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImportRow {
    pub id: Uuid,
    pub status: String,
    pub file_name: String,
    pub file_bytes: i64,
    pub mapping: sqlx::types::Json<Value>,
    pub options: sqlx::types::Json<Value>,
    pub contact_limit: Option<i64>,
    pub rows_read: i64,
    pub rows_imported: i64,
    pub rows_updated: i64,
    pub rows_unchanged: i64,
    pub rows_rejected: i64,
    pub rows_over_limit: i64,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, status, file_name, file_sha256, file_bytes, mapping, options, contact_limit, \
    rows_read, rows_imported, rows_updated, rows_unchanged, rows_rejected, rows_over_limit, error, \
    created_by, created_at, started_at, finished_at";

pub struct NewImport<'a> {
    pub id: Uuid,
    pub file_name: &'a str,
    pub file_sha256: &'a str,
    pub content: &'a [u8],
    pub mapping: Value,
    pub options: Value,
    pub contact_limit: Option<i64>,
    pub created_by: Uuid,
}

pub async fn create(conn: &mut PgConnection, tenant: Uuid, n: &NewImport<'_>) -> Result<ImportRow> {
    let row = sqlx::query_as::<_, ImportRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO segmentation.import_jobs (tenant_id, id, status, file_name, file_sha256, file_bytes,
             mapping, options, contact_limit, created_by)
         VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(n.id)
    .bind(n.file_name)
    .bind(n.file_sha256)
    .bind(n.content.len() as i64)
    .bind(sqlx::types::Json(&n.mapping))
    .bind(sqlx::types::Json(&n.options))
    .bind(n.contact_limit)
    .bind(n.created_by)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "WITH ins AS (INSERT INTO segmentation.import_files (tenant_id, job_id, content) VALUES ($1, $2, $3))
         SELECT pg_notify($4, '')",
    )
    .bind(tenant)
    .bind(n.id)
    .bind(n.content)
    .bind(IMPORT_CHANNEL)
    .execute(conn)
    .await?;
    Ok(row)
}

pub async fn get(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    for_update: bool,
) -> Result<Option<ImportRow>> {
    Ok(sqlx::query_as::<_, ImportRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM segmentation.import_jobs WHERE tenant_id = $1 AND id = $2{}",
        if for_update { " FOR UPDATE" } else { "" }
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Newest first.
pub async fn list(
    conn: &mut PgConnection,
    tenant: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ImportRow>> {
    Ok(sqlx::query_as::<_, ImportRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM segmentation.import_jobs
         WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
    )))
    .bind(tenant)
    .bind(before.unwrap_or(Uuid::max()))
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

pub async fn rejections(
    conn: &mut PgConnection,
    tenant: Uuid,
    job: Uuid,
    after_line: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>> {
    Ok(sqlx::query_as(
        "SELECT line, reason FROM segmentation.import_rejections
         WHERE tenant_id = $1 AND job_id = $2 AND line > $3 ORDER BY line LIMIT $4",
    )
    .bind(tenant)
    .bind(job)
    .bind(after_line)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

pub async fn file(conn: &mut PgConnection, tenant: Uuid, job: Uuid) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar(
        "SELECT content FROM segmentation.import_files WHERE tenant_id = $1 AND job_id = $2",
    )
    .bind(tenant)
    .bind(job)
    .fetch_optional(conn)
    .await?)
}

/// Claims the oldest queued job, or a running one whose worker stopped heartbeating (system
/// transaction: spans tenants). Returns (tenant, job).
pub async fn claim(conn: &mut PgConnection, stale_after: Duration) -> Result<Option<(Uuid, Uuid)>> {
    Ok(sqlx::query_as(
        "UPDATE segmentation.import_jobs j SET status = 'running', attempts = attempts + 1,
             started_at = coalesce(started_at, now()), heartbeat_at = now()
         WHERE (j.tenant_id, j.id) = (
             SELECT tenant_id, id FROM segmentation.import_jobs
             WHERE status = 'queued'
                OR (status = 'running' AND attempts < 5
                    AND heartbeat_at < now() - make_interval(secs => $1))
             ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING j.tenant_id, j.id",
    )
    .bind(stale_after.as_secs_f64())
    .fetch_optional(conn)
    .await?)
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    pub read: i64,
    pub imported: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub rejected: i64,
    pub over_limit: i64,
}

/// Adds a batch's counts and rejections, in the batch's transaction; false if the job is no
/// longer running (cancelled): the caller then rolls the batch back.
pub async fn record_batch(
    conn: &mut PgConnection,
    tenant: Uuid,
    job: Uuid,
    p: &Progress,
    rejections: &[(i64, String)],
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE segmentation.import_jobs SET rows_read = rows_read + $3, rows_imported = rows_imported + $4,
             rows_updated = rows_updated + $5, rows_unchanged = rows_unchanged + $6,
             rows_rejected = rows_rejected + $7, rows_over_limit = rows_over_limit + $8, heartbeat_at = now()
         WHERE tenant_id = $1 AND id = $2 AND status = 'running'",
    )
    .bind(tenant)
    .bind(job)
    .bind(p.read)
    .bind(p.imported)
    .bind(p.updated)
    .bind(p.unchanged)
    .bind(p.rejected)
    .bind(p.over_limit)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    if !rejections.is_empty() {
        let (lines, reasons): (Vec<i64>, Vec<String>) = rejections.iter().cloned().unzip();
        sqlx::query(
            "INSERT INTO segmentation.import_rejections (tenant_id, job_id, line, reason)
             SELECT $1, $2, l, r FROM unnest($3::bigint[], $4::text[]) AS x(l, r)
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(job)
        .bind(&lines)
        .bind(&reasons)
        .execute(conn)
        .await?;
    }
    Ok(true)
}

/// Ends a job (completed, failed or cancelled) and drops its file.
pub async fn finish(
    conn: &mut PgConnection,
    tenant: Uuid,
    job: Uuid,
    status: &str,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE segmentation.import_jobs SET status = $3, error = $4, finished_at = now(), heartbeat_at = now()
         WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running')",
    )
    .bind(tenant)
    .bind(job)
    .bind(status)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM segmentation.import_files WHERE tenant_id = $1 AND job_id = $2")
        .bind(tenant)
        .bind(job)
        .execute(conn)
        .await?;
    Ok(())
}

/// Fails jobs whose workers died five times (a file that crashes every worker must not be
/// retried forever); returns how many (system transaction).
pub async fn fail_abandoned(conn: &mut PgConnection, stale_after: Duration) -> Result<u64> {
    let done = sqlx::query(
        "WITH failed AS (
             UPDATE segmentation.import_jobs SET status = 'failed', finished_at = now(),
                 error = 'the import stopped unexpectedly five times; the rows counted so far were saved — contact support'
             WHERE status = 'running' AND attempts >= 5
               AND heartbeat_at < now() - make_interval(secs => $1)
             RETURNING tenant_id, id)
         DELETE FROM segmentation.import_files f USING failed
         WHERE f.tenant_id = failed.tenant_id AND f.job_id = failed.id",
    )
    .bind(stale_after.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
