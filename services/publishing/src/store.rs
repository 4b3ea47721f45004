//! Publishing's SQL. Every function runs on the caller's transaction: a tenant transaction
//! (row-level security on) for API paths, a system transaction only where a worker must cross
//! tenants (claiming due retries and stale claims), and says so.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;

// ---- channel connections ----------------------------------------------------------------

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectionRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub name: String,
    pub kind: String,
    pub channels: Vec<String>,
    pub is_default: bool,
    pub rate_per_second: i32,
    pub settings: serde_json::Value,
    pub secret: Option<Vec<u8>>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const CONNECTION_COLUMNS: &str = "tenant_id, id, name, kind, channels, is_default, rate_per_second, \
     settings, secret, version, created_at, updated_at";

pub struct NewConnection<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub kind: &'a str,
    pub channels: &'a [String],
    pub is_default: bool,
    pub rate_per_second: i32,
    pub settings: &'a serde_json::Value,
    pub secret: Option<&'a [u8]>,
}

/// Serialises changes of one tenant's connections (default flags, name checks).
pub async fn lock_connections(conn: &mut PgConnection, tenant: Uuid) -> Result<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('publishing.connections:' || $1::text, 0))",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn count_connections(conn: &mut PgConnection, tenant: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM publishing.channel_connections WHERE tenant_id = $1 AND deleted_at IS NULL",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await?)
}

pub async fn insert_connection(
    conn: &mut PgConnection,
    tenant: Uuid,
    c: &NewConnection<'_>,
) -> Result<ConnectionRow> {
    let sql = format!(
        "INSERT INTO publishing.channel_connections
             (tenant_id, id, name, kind, channels, is_default, rate_per_second, settings, secret)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         RETURNING {CONNECTION_COLUMNS}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(c.id)
        .bind(c.name)
        .bind(c.kind)
        .bind(c.channels)
        .bind(c.is_default)
        .bind(c.rate_per_second)
        .bind(c.settings)
        .bind(c.secret)
        .fetch_one(conn)
        .await?)
}

/// Clears the default flag of the tenant's other connections serving any of `channels`.
pub async fn clear_defaults(
    conn: &mut PgConnection,
    tenant: Uuid,
    except: Uuid,
    channels: &[String],
) -> Result<()> {
    sqlx::query(
        "UPDATE publishing.channel_connections SET is_default = false, updated_at = now(),
                version = version + 1
          WHERE tenant_id = $1 AND id <> $2 AND is_default AND deleted_at IS NULL
            AND channels && $3",
    )
    .bind(tenant)
    .bind(except)
    .bind(channels)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_connection(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<ConnectionRow>> {
    let sql = format!(
        "SELECT {CONNECTION_COLUMNS} FROM publishing.channel_connections
          WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// Including deleted ones: a running job keeps using the connection it was launched with.
pub async fn get_connection_any(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<ConnectionRow>> {
    let sql = format!(
        "SELECT {CONNECTION_COLUMNS} FROM publishing.channel_connections
          WHERE tenant_id = $1 AND id = $2"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

pub async fn list_connections(
    conn: &mut PgConnection,
    tenant: Uuid,
    kind: Option<&str>,
) -> Result<Vec<ConnectionRow>> {
    let sql = format!(
        "SELECT {CONNECTION_COLUMNS} FROM publishing.channel_connections
          WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR kind = $2)
          ORDER BY created_at, id"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(kind)
        .fetch_all(conn)
        .await?)
}

/// The tenant's default connection for `channel`, if any.
pub async fn default_connection(
    conn: &mut PgConnection,
    tenant: Uuid,
    channel: &str,
) -> Result<Option<ConnectionRow>> {
    let sql = format!(
        "SELECT {CONNECTION_COLUMNS} FROM publishing.channel_connections
          WHERE tenant_id = $1 AND deleted_at IS NULL AND is_default AND $2 = ANY(channels)
          ORDER BY created_at LIMIT 1"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(channel)
        .fetch_optional(conn)
        .await?)
}

pub struct ConnectionUpdate<'a> {
    pub name: &'a str,
    pub is_default: bool,
    pub rate_per_second: i32,
    pub settings: &'a serde_json::Value,
    pub secret: Option<&'a [u8]>,
}

pub async fn update_connection(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    u: &ConnectionUpdate<'_>,
) -> Result<ConnectionRow> {
    let sql = format!(
        "UPDATE publishing.channel_connections
            SET name = $3, is_default = $4, rate_per_second = $5, settings = $6,
                secret = $7, version = version + 1, updated_at = now()
          WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
          RETURNING {CONNECTION_COLUMNS}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .bind(u.name)
        .bind(u.is_default)
        .bind(u.rate_per_second)
        .bind(u.settings)
        .bind(u.secret)
        .fetch_one(conn)
        .await?)
}

/// Whether an open job (active or paused) sends through the connection.
pub async fn connection_in_use(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM publishing.delivery_jobs
                         WHERE tenant_id = $1 AND state IN ('active', 'paused')
                           AND channels @> jsonb_build_array(jsonb_build_object('connection_id', $2::text)))",
    )
    .bind(tenant)
    .bind(id)
    .fetch_one(conn)
    .await?)
}

pub async fn delete_connection(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE publishing.channel_connections SET deleted_at = now(), is_default = false,
                version = version + 1, updated_at = now()
          WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind(tenant)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Every stored secret (key rotation), across tenants: system transaction.
pub async fn all_secrets(conn: &mut PgConnection) -> Result<Vec<(Uuid, Uuid, Vec<u8>)>> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, id, secret FROM publishing.channel_connections WHERE secret IS NOT NULL",
    )
    .fetch_all(conn)
    .await?)
}

pub async fn replace_secret(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    old: &[u8],
    new: &[u8],
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE publishing.channel_connections SET secret = $4
          WHERE tenant_id = $1 AND id = $2 AND secret = $3",
    )
    .bind(tenant)
    .bind(id)
    .bind(old)
    .bind(new)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

// ---- delivery jobs ----------------------------------------------------------------------

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub tenant_id: Uuid,
    pub run_id: Uuid,
    pub campaign_id: Uuid,
    pub campaign_name: String,
    pub channels: serde_json::Value,
    pub content: serde_json::Value,
    pub state: String,
    pub sealed: bool,
    pub batches_total: i64,
    pub recipients_total: i64,
    pub batches_done: i64,
    pub sent: i64,
    pub failed: i64,
    pub retrying: i64,
    pub skipped: serde_json::Value,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The job with its counters: the row's own (SMTP/webhook outcomes) plus the sandbox batches'.
const JOB_COLUMNS: &str = "j.tenant_id, j.run_id, j.campaign_id, j.campaign_name, j.channels, j.content, \
     j.state, j.sealed, j.batches_total, j.recipients_total, \
     (SELECT count(*) FROM publishing.job_batches b WHERE b.tenant_id = j.tenant_id AND b.run_id = j.run_id) AS batches_done, \
     j.sent + coalesce((SELECT sum(c.sent) FROM publishing.batch_counts c WHERE c.tenant_id = j.tenant_id AND c.run_id = j.run_id), 0)::bigint AS sent, \
     j.failed + coalesce((SELECT sum(c.failed) FROM publishing.batch_counts c WHERE c.tenant_id = j.tenant_id AND c.run_id = j.run_id), 0)::bigint AS failed, \
     j.retrying, j.skipped, j.completed_at";

/// Creates the job of a run, or returns the existing one (idempotent on run_id).
pub async fn insert_job(
    conn: &mut PgConnection,
    tenant: Uuid,
    run_id: Uuid,
    campaign_id: Uuid,
    campaign_name: &str,
    channels: &serde_json::Value,
    content: &serde_json::Value,
) -> Result<JobRow> {
    sqlx::query(
        "INSERT INTO publishing.delivery_jobs
             (tenant_id, run_id, campaign_id, campaign_name, channels, content)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, run_id) DO NOTHING",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(campaign_id)
    .bind(campaign_name)
    .bind(channels)
    .bind(content)
    .execute(&mut *conn)
    .await?;
    get_job(conn, tenant, run_id, false)
        .await?
        .ok_or_else(|| crate::error::Error::Internal("job vanished after insert".into()))
}

pub async fn get_job(
    conn: &mut PgConnection,
    tenant: Uuid,
    run_id: Uuid,
    for_update: bool,
) -> Result<Option<JobRow>> {
    let lock = if for_update { " FOR UPDATE OF j" } else { "" };
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM publishing.delivery_jobs j WHERE j.tenant_id = $1 AND j.run_id = $2{lock}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(run_id)
        .fetch_optional(conn)
        .await?)
}

pub async fn seal_job(
    conn: &mut PgConnection,
    tenant: Uuid,
    run_id: Uuid,
    batches_total: i64,
    recipients_total: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE publishing.delivery_jobs SET sealed = true, batches_total = $3,
                recipients_total = $4, updated_at = now()
          WHERE tenant_id = $1 AND run_id = $2",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(batches_total)
    .bind(recipients_total)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_job_state(
    conn: &mut PgConnection,
    tenant: Uuid,
    run_id: Uuid,
    state: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE publishing.delivery_jobs SET state = $3, updated_at = now()
          WHERE tenant_id = $1 AND run_id = $2",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(state)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn job_state(
    conn: &mut PgConnection,
    tenant: Uuid,
    run_id: Uuid,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT state FROM publishing.delivery_jobs WHERE tenant_id = $1 AND run_id = $2",
    )
    .bind(tenant)
    .bind(run_id)
    .fetch_optional(conn)
    .await?)
}

/// Adds to a job's counters (in the transaction that changed the deliveries counted).
pub async fn bump_counters(
    conn: &mut PgConnection,
    tenant: Uuid,
    run_id: Uuid,
    sent: i64,
    failed: i64,
    retrying: i64,
    skipped: &[(String, i64)],
) -> Result<()> {
    if sent == 0 && failed == 0 && retrying == 0 && skipped.is_empty() {
        return Ok(());
    }
    let reasons: Vec<&str> = skipped.iter().map(|(r, _)| r.as_str()).collect();
    let counts: Vec<i64> = skipped.iter().map(|(_, c)| *c).collect();
    sqlx::query(
        "UPDATE publishing.delivery_jobs j
            SET sent = sent + $3, failed = failed + $4, retrying = retrying + $5,
                skipped = CASE WHEN cardinality($6::text[]) = 0 THEN skipped ELSE (
                    SELECT coalesce(jsonb_object_agg(k, v), '{}'::jsonb) FROM (
                        SELECT k, sum(v)::bigint AS v FROM (
                            SELECT key AS k, value::bigint AS v FROM jsonb_each_text(j.skipped)
                            UNION ALL
                            SELECT * FROM unnest($6::text[], $7::bigint[])
                        ) s GROUP BY k) t) END,
                updated_at = now()
          WHERE tenant_id = $1 AND run_id = $2",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(sent)
    .bind(failed)
    .bind(retrying)
    .bind(&reasons)
    .bind(&counts)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records batch `seq` of the run as processed; true the first time.
pub async fn batch_done(
    conn: &mut PgConnection,
    tenant: Uuid,
    run_id: Uuid,
    seq: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO publishing.job_batches (tenant_id, run_id, seq) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(seq)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Adds a sandbox batch's recorded deliveries to the run's counters (insert-only: no lock on
/// the job row, so parallel workers do not queue on it).
#[allow(clippy::too_many_arguments)]
pub async fn add_batch_counts(
    conn: &mut PgConnection,
    tenant: Uuid,
    run_id: Uuid,
    seq: i64,
    channel: &str,
    sent: i64,
    failed: i64,
) -> Result<()> {
    if sent == 0 && failed == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO publishing.batch_counts (tenant_id, run_id, seq, channel, sent, failed)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, run_id, seq, channel)
         DO UPDATE SET sent = batch_counts.sent + excluded.sent,
                       failed = batch_counts.failed + excluded.failed",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(seq)
    .bind(channel)
    .bind(sent)
    .bind(failed)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the job completed when it is sealed, every batch is processed and no delivery waits
/// (pending or retrying). Returns whether it completed now.
pub async fn maybe_complete(conn: &mut PgConnection, tenant: Uuid, run_id: Uuid) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE publishing.delivery_jobs j SET state = 'completed', completed_at = now(), updated_at = now()
          WHERE tenant_id = $1 AND run_id = $2 AND state = 'active' AND sealed
            AND (SELECT count(*) FROM publishing.job_batches b
                  WHERE b.tenant_id = $1 AND b.run_id = $2) >= batches_total
            AND NOT EXISTS (SELECT 1 FROM publishing.parked_batches p
                             WHERE p.tenant_id = $1 AND p.run_id = $2)
            AND NOT EXISTS (SELECT 1 FROM publishing.deliveries d
                             WHERE d.run_id = $2 AND d.status IN ('pending', 'retrying'))",
    )
    .bind(tenant)
    .bind(run_id)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn park_batch(
    conn: &mut PgConnection,
    tenant: Uuid,
    run_id: Uuid,
    seq: i64,
    payload: &[u8],
) -> Result<()> {
    sqlx::query(
        "INSERT INTO publishing.parked_batches (tenant_id, run_id, seq, payload)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, run_id, seq) DO UPDATE SET payload = excluded.payload, parked_at = now()",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(seq)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn parked_count(conn: &mut PgConnection, tenant: Uuid, run_id: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM publishing.parked_batches WHERE tenant_id = $1 AND run_id = $2",
    )
    .bind(tenant)
    .bind(run_id)
    .fetch_one(conn)
    .await?)
}

/// Parked batches of active jobs, any tenant (system transaction), locked for the caller.
pub async fn claim_parked(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid, i64, Vec<u8>)>> {
    Ok(sqlx::query_as(
        "SELECT p.tenant_id, p.run_id, p.seq, p.payload FROM publishing.parked_batches p
           JOIN publishing.delivery_jobs j ON j.tenant_id = p.tenant_id AND j.run_id = p.run_id
          WHERE j.state IN ('active', 'cancelled')
          ORDER BY p.parked_at LIMIT $1 FOR UPDATE OF p SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

pub async fn delete_parked(
    conn: &mut PgConnection,
    tenant: Uuid,
    run_id: Uuid,
    seq: i64,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM publishing.parked_batches WHERE tenant_id = $1 AND run_id = $2 AND seq = $3",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(seq)
    .execute(conn)
    .await?;
    Ok(())
}

/// Active sealed jobs that may have finished (any tenant; system transaction).
pub async fn open_sealed_jobs(conn: &mut PgConnection, limit: i64) -> Result<Vec<(Uuid, Uuid)>> {
    Ok(sqlx::query_as(
        "SELECT j.tenant_id, j.run_id FROM publishing.delivery_jobs j
          WHERE j.state = 'active' AND j.sealed
            AND (SELECT count(*) FROM publishing.job_batches b
                  WHERE b.tenant_id = j.tenant_id AND b.run_id = j.run_id) >= j.batches_total
          ORDER BY j.updated_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

// ---- deliveries -------------------------------------------------------------------------

/// One recipient's delivery row to insert.
pub struct NewDelivery {
    pub id: Uuid,
    pub contact_id: Uuid,
    pub variant: String,
    pub recipient: String,
    pub status: &'static str,
    pub error: String,
    pub payload: Option<Vec<u8>>,
    pub rendered: Option<serde_json::Value>,
}

pub struct DeliveryScope {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub campaign_id: Uuid,
    pub channel: String,
    pub connection_id: Option<Uuid>,
    pub batch_seq: i64,
}

/// Inserts final rows (sandbox: sent or failed in this transaction); rows that already exist
/// are left alone. Returns the ids actually inserted.
pub async fn insert_final(
    conn: &mut PgConnection,
    scope: &DeliveryScope,
    rows: &[NewDelivery],
) -> Result<Vec<Uuid>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let contacts: Vec<Uuid> = rows.iter().map(|r| r.contact_id).collect();
    let variants: Vec<&str> = rows.iter().map(|r| r.variant.as_str()).collect();
    let recipients: Vec<&str> = rows.iter().map(|r| r.recipient.as_str()).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status).collect();
    let errors: Vec<&str> = rows.iter().map(|r| r.error.as_str()).collect();
    let rendered: Vec<Option<serde_json::Value>> =
        rows.iter().map(|r| r.rendered.clone()).collect();
    Ok(sqlx::query_scalar(
        "INSERT INTO publishing.deliveries
             (tenant_id, id, run_id, campaign_id, contact_id, channel, variant, connection_id,
              batch_seq, status, attempts, recipient, error, rendered, sent_at)
         SELECT $1, u.id, $2, $3, u.contact, $4, u.variant, $5, $6, u.status, 1, u.recipient,
                u.error, u.rendered, CASE WHEN u.status = 'sent' THEN now() END
           FROM unnest($7::uuid[], $8::uuid[], $9::text[], $10::text[], $11::text[], $12::text[],
                       $13::jsonb[])
                AS u(id, contact, variant, recipient, status, error, rendered)
         ON CONFLICT (campaign_id, variant, contact_id, channel) WHERE NOT is_test DO NOTHING
         RETURNING id",
    )
    .bind(scope.tenant)
    .bind(scope.run_id)
    .bind(scope.campaign_id)
    .bind(&scope.channel)
    .bind(scope.connection_id)
    .bind(scope.batch_seq)
    .bind(&ids)
    .bind(&contacts)
    .bind(&variants)
    .bind(&recipients)
    .bind(&statuses)
    .bind(&errors)
    .bind(&rendered)
    .fetch_all(conn)
    .await?)
}

/// Claims rows to send (SMTP, webhook) under `token`: inserts `pending` rows, and takes over
/// existing `pending` rows whose claim is older than `lease` (a crashed worker's). Returns
/// (id, contact_id) of the rows this call owns now. Nothing is sent on a claim alone: each
/// send first renews it with [`touch_claim`].
pub async fn claim_pending(
    conn: &mut PgConnection,
    scope: &DeliveryScope,
    rows: &[NewDelivery],
    lease_secs: f64,
    token: Uuid,
) -> Result<Vec<(Uuid, Uuid)>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let contacts: Vec<Uuid> = rows.iter().map(|r| r.contact_id).collect();
    let variants: Vec<&str> = rows.iter().map(|r| r.variant.as_str()).collect();
    let recipients: Vec<&str> = rows.iter().map(|r| r.recipient.as_str()).collect();
    let payloads: Vec<Option<Vec<u8>>> = rows.iter().map(|r| r.payload.clone()).collect();
    Ok(sqlx::query_as(
        "INSERT INTO publishing.deliveries AS d
             (tenant_id, id, run_id, campaign_id, contact_id, channel, variant, connection_id,
              batch_seq, status, attempts, recipient, payload, claim_token)
         SELECT $1, u.id, $2, $3, u.contact, $4, u.variant, $5, $6, 'pending', 0, u.recipient,
                u.payload, $13
           FROM unnest($7::uuid[], $8::uuid[], $9::text[], $10::text[], $11::bytea[])
                AS u(id, contact, variant, recipient, payload)
         ON CONFLICT (campaign_id, variant, contact_id, channel) WHERE NOT is_test
         DO UPDATE SET claimed_at = now(), claim_token = $13
               WHERE d.status = 'pending' AND d.claimed_at < now() - make_interval(secs => $12)
         RETURNING d.id, d.contact_id",
    )
    .bind(scope.tenant)
    .bind(scope.run_id)
    .bind(scope.campaign_id)
    .bind(&scope.channel)
    .bind(scope.connection_id)
    .bind(scope.batch_seq)
    .bind(&ids)
    .bind(&contacts)
    .bind(&variants)
    .bind(&recipients)
    .bind(&payloads)
    .bind(lease_secs)
    .bind(token)
    .fetch_all(conn)
    .await?)
}

/// Right before a send: renews the claim (`claimed_at`) and counts the attempt, only while the
/// row is still `pending` under `token`. Returns the attempt number, or `None` when another
/// worker took the row over (then this one must not send).
pub async fn touch_claim(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    token: Uuid,
) -> Result<Option<i32>> {
    Ok(sqlx::query_scalar(
        "UPDATE publishing.deliveries SET claimed_at = now(), attempts = attempts + 1
          WHERE tenant_id = $1 AND id = $2 AND status = 'pending' AND claim_token = $3
          RETURNING attempts",
    )
    .bind(tenant)
    .bind(id)
    .bind(token)
    .fetch_optional(conn)
    .await?)
}

/// Gives back claims that were not attempted (the job was paused mid-batch): they stay
/// `pending` with their id (the Message-ID / Idempotency-Key) and become immediately
/// reclaimable.
pub async fn release_claims(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
    token: Uuid,
) -> Result<()> {
    sqlx::query(
        "UPDATE publishing.deliveries SET claimed_at = '-infinity', claim_token = NULL
          WHERE tenant_id = $1 AND id = ANY($2) AND status = 'pending' AND claim_token = $3",
    )
    .bind(tenant)
    .bind(ids)
    .bind(token)
    .execute(conn)
    .await?;
    Ok(())
}

/// The outcome of one send, written with the job's counters.
pub enum Outcome<'a> {
    Sent { provider_message_id: &'a str },
    Retry { error: &'a str, at: DateTime<Utc> },
    Failed { error: &'a str },
}

/// Records the outcome of an attempt on a row still `pending` under `token` (`None`: test
/// sends, which have none). Returns `None` when the row was not ours any more.
pub async fn record_outcome(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    token: Option<Uuid>,
    outcome: &Outcome<'_>,
) -> Result<Option<Option<Uuid>>> {
    let (status, pmid, error, next): (&str, &str, &str, Option<DateTime<Utc>>) = match outcome {
        Outcome::Sent {
            provider_message_id,
        } => ("sent", provider_message_id, "", None),
        Outcome::Retry { error, at } => ("retrying", "", error, Some(*at)),
        Outcome::Failed { error } => ("failed", "", error, None),
    };
    let run: Option<Option<Uuid>> = sqlx::query_scalar(
        "UPDATE publishing.deliveries
            SET status = $3, provider_message_id = $4, error = $5, next_attempt_at = $6,
                sent_at = CASE WHEN $3 = 'sent' THEN now() END,
                payload = CASE WHEN $3 = 'retrying' THEN payload END,
                claim_token = NULL
          WHERE tenant_id = $1 AND id = $2 AND status = 'pending'
            AND claim_token IS NOT DISTINCT FROM $7
          RETURNING run_id",
    )
    .bind(tenant)
    .bind(id)
    .bind(status)
    .bind(pmid)
    .bind(error)
    .bind(next)
    .bind(token)
    .fetch_optional(conn)
    .await?;
    Ok(run)
}

/// One due retry or abandoned claim, re-claimed for this worker.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub run_id: Option<Uuid>,
    pub channel: String,
    pub payload: Option<Vec<u8>>,
    pub was_retrying: bool,
}

/// Due retries and abandoned claims of active jobs, any tenant (system transaction): claimed
/// as `pending` under `token`, with the jobs' `retrying` counters moved in the same
/// transaction. Paused and cancelled jobs' rows wait (see [`fail_open_deliveries`]).
pub async fn claim_due_retries(
    conn: &mut PgConnection,
    lease_secs: f64,
    limit: i64,
    token: Uuid,
) -> Result<Vec<DueDelivery>> {
    let due: Vec<DueDelivery> = sqlx::query_as(
        "WITH due AS (
             SELECT d.tenant_id, d.id, d.status FROM publishing.deliveries d
               JOIN publishing.delivery_jobs j ON j.tenant_id = d.tenant_id AND j.run_id = d.run_id
              WHERE j.state IN ('active', 'completed')
                AND ((d.status = 'retrying' AND d.next_attempt_at <= now())
                     OR (d.status = 'pending' AND NOT d.is_test
                         AND d.claimed_at < now() - make_interval(secs => $1)))
              LIMIT $2 FOR UPDATE OF d SKIP LOCKED)
         UPDATE publishing.deliveries d
            SET status = 'pending', claimed_at = now(), claim_token = $3, next_attempt_at = NULL
           FROM due
          WHERE d.tenant_id = due.tenant_id AND d.id = due.id
          RETURNING d.tenant_id, d.id, d.run_id, d.channel, d.payload,
                    due.status = 'retrying' AS was_retrying",
    )
    .bind(lease_secs)
    .bind(limit)
    .bind(token)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_run: std::collections::HashMap<(Uuid, Uuid), i64> = std::collections::HashMap::new();
    for d in due.iter().filter(|d| d.was_retrying) {
        if let Some(run) = d.run_id {
            *by_run.entry((d.tenant_id, run)).or_default() += 1;
        }
    }
    for ((tenant, run), n) in by_run {
        sqlx::query(
            "UPDATE publishing.delivery_jobs SET retrying = retrying - $3, updated_at = now()
              WHERE tenant_id = $1 AND run_id = $2",
        )
        .bind(tenant)
        .bind(run)
        .bind(n)
        .execute(&mut *conn)
        .await?;
    }
    Ok(due)
}

/// A cancelled job's deliveries waiting for a retry fail (with the counters moved).
pub async fn fail_open_deliveries(
    conn: &mut PgConnection,
    tenant: Uuid,
    run_id: Uuid,
    reason: &str,
) -> Result<i64> {
    let n: i64 = sqlx::query_scalar(
        "WITH failed AS (
             UPDATE publishing.deliveries SET status = 'failed', error = $3, next_attempt_at = NULL,
                    payload = NULL
              WHERE tenant_id = $1 AND run_id = $2 AND status = 'retrying'
              RETURNING 1)
         SELECT count(*) FROM failed",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(reason)
    .fetch_one(&mut *conn)
    .await?;
    if n > 0 {
        bump_counters(conn, tenant, run_id, 0, n, -n, &[]).await?;
    }
    Ok(n)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub run_id: Option<Uuid>,
    pub campaign_id: Uuid,
    pub contact_id: Option<Uuid>,
    pub channel: String,
    pub variant: String,
    pub connection_id: Option<Uuid>,
    pub status: String,
    pub attempts: i32,
    pub recipient: String,
    pub provider_message_id: String,
    pub error: String,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

pub struct DeliveryFilter<'a> {
    pub campaign_id: Uuid,
    pub statuses: &'a [String],
    pub channel: Option<&'a str>,
    pub contact_id: Option<Uuid>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

pub async fn list_deliveries(
    conn: &mut PgConnection,
    tenant: Uuid,
    f: &DeliveryFilter<'_>,
) -> Result<Vec<DeliveryRow>> {
    Ok(sqlx::query_as(
        "SELECT id, run_id, campaign_id, contact_id, channel, variant, connection_id, status,
                attempts, recipient, provider_message_id, error, created_at, sent_at, next_attempt_at
           FROM publishing.deliveries
          WHERE tenant_id = $1 AND campaign_id = $2
            AND (cardinality($3::text[]) = 0 OR status = ANY($3))
            AND ($4::text IS NULL OR channel = $4)
            AND ($5::uuid IS NULL OR contact_id = $5)
            AND ($6::uuid IS NULL OR id < $6)
          ORDER BY id DESC LIMIT $7",
    )
    .bind(tenant)
    .bind(f.campaign_id)
    .bind(f.statuses)
    .bind(f.channel)
    .bind(f.contact_id)
    .bind(f.after)
    .bind(f.limit)
    .fetch_all(conn)
    .await?)
}

/// A test send's row (outside the once-per-recipient rule).
#[allow(clippy::too_many_arguments)]
pub async fn insert_test_delivery(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    campaign_id: Uuid,
    contact_id: Option<Uuid>,
    channel: &str,
    connection_id: Option<Uuid>,
    recipient: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO publishing.deliveries
             (tenant_id, id, campaign_id, contact_id, channel, connection_id, status, attempts,
              recipient, is_test)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 1, $7, true)",
    )
    .bind(tenant)
    .bind(id)
    .bind(campaign_id)
    .bind(contact_id)
    .bind(channel)
    .bind(connection_id)
    .bind(recipient)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_unsubscribe(
    conn: &mut PgConnection,
    tenant: Uuid,
    contact_id: Uuid,
    campaign_id: Uuid,
    channel: &str,
    changed: bool,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO publishing.unsubscribes (tenant_id, id, contact_id, campaign_id, channel, changed)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(contact_id)
    .bind(campaign_id)
    .bind(channel)
    .bind(changed)
    .execute(conn)
    .await?;
    Ok(())
}
