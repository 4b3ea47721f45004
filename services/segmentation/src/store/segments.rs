//! Segments, their materialised membership, refresh (full and per changed contact), counts and
//! member paging/streaming.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::criteria::{CompiledSql, SqlParam};
use crate::error::Result;
use crate::store::contacts::{COLUMNS as CONTACT_COLUMNS, ContactRow};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SegmentRow {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub criteria: Option<sqlx::types::Json<Value>>,
    pub depends_on: Vec<Uuid>,
    pub member_count: i64,
    pub refreshed_at: Option<DateTime<Utc>>,
    pub refresh_interval_secs: i32,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, description, kind, criteria, depends_on, member_count, refreshed_at, \
    refresh_interval_secs, version, created_at, updated_at";

/// Adds the compiled criteria's parameters to a query, in order.
macro_rules! bind_params_as {
    ($q:expr, $params:expr) => {{
        let mut q = $q;
        for p in $params {
            q = match p {
                SqlParam::Text(v) => q.bind(v),
                SqlParam::TextArray(v) => q.bind(v),
                SqlParam::Float(v) => q.bind(v),
                SqlParam::Bool(v) => q.bind(v),
                SqlParam::Date(v) => q.bind(v),
                SqlParam::Timestamp(v) => q.bind(v),
                SqlParam::Uuid(v) => q.bind(v),
                SqlParam::Json(v) => q.bind(sqlx::types::Json(v)),
            };
        }
        q
    }};
}

pub struct NewSegment<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub description: &'a str,
    pub kind: &'a str,
    pub criteria: Option<&'a Value>,
    pub depends_on: &'a [Uuid],
    pub refresh_interval_secs: i32,
}

fn name_taken(e: sqlx::Error, name: &str) -> crate::error::Error {
    if cos_db::unique_violation(&e).is_some() {
        cos_errors::ServiceError::already_exists(format!("a segment named '{name}' already exists"))
            .with_violation("name", "is already used by another segment")
            .into()
    } else {
        e.into()
    }
}

pub async fn create(
    conn: &mut PgConnection,
    tenant: Uuid,
    s: &NewSegment<'_>,
) -> Result<SegmentRow> {
    sqlx::query_as::<_, SegmentRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO segmentation.segments (tenant_id, id, name, description, kind, criteria, depends_on,
             refresh_interval_secs, refresh_due_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $5 = 'dynamic' THEN now() END)
         RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(s.id)
    .bind(s.name)
    .bind(s.description)
    .bind(s.kind)
    .bind(s.criteria.map(sqlx::types::Json))
    .bind(s.depends_on)
    .bind(s.refresh_interval_secs)
    .fetch_one(conn)
    .await
    .map_err(|e| name_taken(e, s.name))
}

pub async fn get(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    for_update: bool,
) -> Result<Option<SegmentRow>> {
    Ok(sqlx::query_as::<_, SegmentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM segmentation.segments
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL{}",
        if for_update { " FOR UPDATE" } else { "" }
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

pub async fn list(
    conn: &mut PgConnection,
    tenant: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<SegmentRow>> {
    Ok(sqlx::query_as::<_, SegmentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM segmentation.segments
         WHERE tenant_id = $1 AND deleted_at IS NULL AND id > $2
         ORDER BY id LIMIT $3"
    )))
    .bind(tenant)
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Every live segment of the tenant (criteria resolution, cycle checks, membership worker).
pub async fn all_live(conn: &mut PgConnection, tenant: Uuid) -> Result<Vec<SegmentRow>> {
    Ok(sqlx::query_as::<_, SegmentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM segmentation.segments WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id"
    )))
    .bind(tenant)
    .fetch_all(conn)
    .await?)
}

pub struct SegmentChange<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub criteria: Option<&'a Value>,
    pub depends_on: &'a [Uuid],
    pub refresh_interval_secs: i32,
    pub criteria_changed: bool,
}

pub async fn update(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    c: &SegmentChange<'_>,
) -> Result<SegmentRow> {
    sqlx::query_as::<_, SegmentRow>(sqlx::AssertSqlSafe(format!(
        "UPDATE segmentation.segments SET name = $3, description = $4, criteria = $5, depends_on = $6,
             refresh_interval_secs = $7, version = version + 1, updated_at = now(),
             refresh_due_at = CASE WHEN $8 THEN now() ELSE refresh_due_at END
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(id)
    .bind(c.name)
    .bind(c.description)
    .bind(c.criteria.map(sqlx::types::Json))
    .bind(c.depends_on)
    .bind(c.refresh_interval_secs)
    .bind(c.criteria_changed)
    .fetch_one(conn)
    .await
    .map_err(|e| name_taken(e, c.name))
}

/// Schedules an immediate refresh of every live segment whose criteria reference `id` (they
/// inline its criteria, so a redefinition changes them too).
pub async fn refresh_dependents_now(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE segmentation.segments SET refresh_due_at = now()
         WHERE tenant_id = $1 AND deleted_at IS NULL AND kind = 'dynamic' AND $2 = ANY(depends_on)",
    )
    .bind(tenant)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Names of live segments whose criteria reference `id`.
pub async fn referenced_by(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT name FROM segmentation.segments
         WHERE tenant_id = $1 AND deleted_at IS NULL AND $2 = ANY(depends_on) ORDER BY name",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(conn)
    .await?)
}

/// Soft delete; the membership rows go (the segment can't be listed or streamed any more).
pub async fn soft_delete(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE segmentation.segments SET deleted_at = now(), updated_at = now(), version = version + 1,
             member_count = 0, refresh_due_at = NULL
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind(tenant)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "DELETE FROM segmentation.segment_members WHERE tenant_id = $1 AND segment_id = $2",
    )
    .bind(tenant)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(true)
}

/// Adds live contacts to a (static) segment; returns the ids that were not members before.
/// Ids that are not live contacts of this tenant are ignored (the caller checks them first).
pub async fn add_members(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    contacts: &[Uuid],
) -> Result<Vec<Uuid>> {
    let added: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO segmentation.segment_members (tenant_id, segment_id, contact_id)
         SELECT $1, $2, c.id FROM segmentation.contacts c
         WHERE c.tenant_id = $1 AND c.id = ANY($3) AND c.deleted_at IS NULL
         ON CONFLICT DO NOTHING RETURNING contact_id",
    )
    .bind(tenant)
    .bind(segment)
    .bind(contacts)
    .fetch_all(&mut *conn)
    .await?;
    adjust_count(conn, tenant, segment, added.len() as i64).await?;
    Ok(added)
}

pub async fn remove_members(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    contacts: &[Uuid],
) -> Result<Vec<Uuid>> {
    let removed: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM segmentation.segment_members
         WHERE tenant_id = $1 AND segment_id = $2 AND contact_id = ANY($3) RETURNING contact_id",
    )
    .bind(tenant)
    .bind(segment)
    .bind(contacts)
    .fetch_all(&mut *conn)
    .await?;
    adjust_count(conn, tenant, segment, -(removed.len() as i64)).await?;
    Ok(removed)
}

async fn adjust_count(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    delta: i64,
) -> Result<()> {
    if delta != 0 {
        sqlx::query(
            "UPDATE segmentation.segments SET member_count = member_count + $3
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(segment)
        .bind(delta)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Which of `ids` are live contacts of the tenant.
pub async fn existing_contacts(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM segmentation.contacts WHERE tenant_id = $1 AND id = ANY($2) AND deleted_at IS NULL",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// Re-evaluates a dynamic segment. `only` restricts the evaluation to those contacts (the
/// membership worker); `None` evaluates everyone. Returns (entered, exited) contact ids and keeps
/// member_count right. The caller holds the segment row lock.
pub async fn apply_criteria(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    compiled: &CompiledSql,
    only: Option<&[Uuid]>,
) -> Result<(Vec<Uuid>, Vec<Uuid>)> {
    // $1 tenant, $2 segment, $3 contact filter (NULL = all); criteria parameters from $4.
    // Two texts rather than `($3 IS NULL OR c.id = ANY($3))`: a generic plan of the OR form
    // cannot use the filter as an index condition and scans the whole tenant per batch.
    // Contacts are read through `contacts_of_tenant` so the GIN indexes serve the criteria
    // (see the migration that creates it).
    let only_contacts = if only.is_some() {
        "c.id = ANY($3)"
    } else {
        "$3::uuid[] IS NULL"
    };
    let only_members = if only.is_some() {
        "m.contact_id = ANY($3)"
    } else {
        "$3::uuid[] IS NULL"
    };
    let sql = format!(
        "WITH target AS (
             SELECT c.id FROM segmentation.contacts_of_tenant c
             WHERE c.tenant_id = $1 AND c.deleted_at IS NULL
               AND {only_contacts} AND ({expr})),
         entered AS (
             INSERT INTO segmentation.segment_members (tenant_id, segment_id, contact_id)
             SELECT $1, $2, t.id FROM target t
             ON CONFLICT DO NOTHING RETURNING contact_id),
         exited AS (
             DELETE FROM segmentation.segment_members m
             WHERE m.tenant_id = $1 AND m.segment_id = $2 AND {only_members}
               AND NOT EXISTS (SELECT 1 FROM target t WHERE t.id = m.contact_id)
             RETURNING contact_id)
         SELECT true, contact_id FROM entered UNION ALL SELECT false, contact_id FROM exited",
        expr = compiled.sql
    );
    let q = sqlx::query_as::<_, (bool, Uuid)>(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(segment)
        .bind(only);
    let rows = bind_params_as!(q, &compiled.params)
        .fetch_all(&mut *conn)
        .await?;
    let mut entered = Vec::new();
    let mut exited = Vec::new();
    for (is_entered, id) in rows {
        if is_entered {
            entered.push(id)
        } else {
            exited.push(id)
        }
    }
    sqlx::query(
        "UPDATE segmentation.segments SET member_count = member_count + $3,
             refreshed_at = CASE WHEN $4 THEN now() ELSE refreshed_at END,
             refresh_due_at = CASE WHEN $4 THEN now() + make_interval(secs => refresh_interval_secs) ELSE refresh_due_at END
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(segment)
    .bind(entered.len() as i64 - exited.len() as i64)
    .bind(only.is_none())
    .execute(conn)
    .await?;
    Ok((entered, exited))
}

/// Contacts matching ad-hoc criteria: the count and the first `sample` of them. Read through
/// `contacts_of_tenant` so that the GIN indexes serve has_tag and attribute equality.
pub async fn preview(
    conn: &mut PgConnection,
    tenant: Uuid,
    compiled: &CompiledSql,
    sample: i64,
) -> Result<(i64, Vec<ContactRow>)> {
    let count_sql = format!(
        "SELECT count(*) FROM segmentation.contacts_of_tenant c
         WHERE c.tenant_id = $1 AND c.deleted_at IS NULL AND ({})",
        compiled.sql
    );
    // Criteria parameters start at $2 in both statements.
    let q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count_sql)).bind(tenant);
    let count = bind_params_as!(q, &compiled.params)
        .fetch_one(&mut *conn)
        .await?;
    let rows_sql = format!(
        "SELECT {CONTACT_COLUMNS} FROM segmentation.contacts_of_tenant c
         WHERE c.tenant_id = $1 AND c.deleted_at IS NULL AND ({}) ORDER BY c.id LIMIT {sample}",
        compiled.sql
    );
    let q = sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(rows_sql)).bind(tenant);
    let rows = bind_params_as!(q, &compiled.params).fetch_all(conn).await?;
    Ok((count, rows))
}

/// A page of a segment's members (live contacts) in contact-id order after `after`.
pub async fn members_page(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ContactRow>> {
    Ok(sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {CONTACT_COLUMNS} FROM segmentation.segment_members m
         JOIN segmentation.contacts c ON c.tenant_id = m.tenant_id AND c.id = m.contact_id
         WHERE m.tenant_id = $1 AND m.segment_id = $2 AND m.contact_id > $3
           AND c.deleted_at IS NULL
         ORDER BY m.contact_id LIMIT $4"
    )))
    .bind(tenant)
    .bind(segment)
    // The nil uuid sorts first; a plain bound stays an index condition in a generic plan,
    // where `($3 IS NULL OR m.contact_id > $3)` degrades every page to a scan from the start.
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Dynamic segments whose periodic refresh is due, oldest first, claimed with SKIP LOCKED so
/// that replicas share the work (system transaction: spans tenants). Returns (tenant, segment).
pub async fn claim_due(conn: &mut PgConnection, limit: i64) -> Result<Vec<(Uuid, Uuid)>> {
    Ok(sqlx::query_as(
        "UPDATE segmentation.segments s SET refresh_due_at = now() + interval '5 minutes'
         WHERE (s.tenant_id, s.id) IN (
             SELECT tenant_id, id FROM segmentation.segments
             WHERE deleted_at IS NULL AND kind = 'dynamic' AND refresh_due_at <= now()
             ORDER BY refresh_due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING s.tenant_id, s.id",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?)
}
