//! Campaign rows. Every function runs inside the caller's tenant transaction (RLS applies) and
//! also filters on `tenant_id`, so a query is correct even where RLS is bypassed.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::Result;

const COLUMNS: &str = "id, name, description, goal, kind, status, channels, platforms,
    target_segment_ids, exclusion_segment_ids, content, budget_amount_minor, budget_currency,
    send_at, time_zone, local_send_at, ambiguous_local_time, variants, owner_user_id,
    duplicated_from, version, created_at, updated_at, last_error";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CampaignRow {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub goal: String,
    pub kind: String,
    pub status: String,
    pub channels: Vec<String>,
    pub platforms: Vec<String>,
    pub target_segment_ids: Vec<Uuid>,
    pub exclusion_segment_ids: Vec<Uuid>,
    pub content: Json<Value>,
    pub budget_amount_minor: Option<i64>,
    pub budget_currency: Option<String>,
    pub send_at: Option<DateTime<Utc>>,
    pub time_zone: Option<String>,
    pub local_send_at: Option<NaiveDateTime>,
    pub ambiguous_local_time: bool,
    pub variants: Json<Value>,
    pub owner_user_id: Uuid,
    pub duplicated_from: Option<Uuid>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why the last scheduled launch was refused (empty otherwise).
    pub last_error: String,
}

/// The editable part of a campaign, already validated.
#[derive(Debug, Clone)]
pub struct Fields {
    pub name: String,
    pub description: String,
    pub goal: String,
    pub kind: String,
    pub channels: Vec<String>,
    pub platforms: Vec<String>,
    pub targets: Vec<Uuid>,
    pub exclusions: Vec<Uuid>,
    /// `{"email": {...}, "sms": {...}, "webhook": {...}}`, absent channels left out.
    pub content: Value,
    pub budget: Option<(i64, String)>,
    /// `[{"key", "name", "weight"}]`.
    pub variants: Value,
}

/// When a scheduled campaign starts.
#[derive(Debug, Clone)]
pub struct ScheduleFields {
    pub send_at: DateTime<Utc>,
    pub time_zone: String,
    pub local_send_at: NaiveDateTime,
    pub ambiguous: bool,
}

type CampaignQuery<'q> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, CampaignRow, sqlx::postgres::PgArguments>;

/// Binds the editable fields as parameters $3..$14, in the order of [`Fields`].
fn bind_fields<'q>(q: CampaignQuery<'q>, f: &'q Fields) -> CampaignQuery<'q> {
    q.bind(&f.name)
        .bind(&f.description)
        .bind(&f.goal)
        .bind(&f.kind)
        .bind(&f.channels)
        .bind(&f.platforms)
        .bind(&f.targets)
        .bind(&f.exclusions)
        .bind(Json(&f.content))
        .bind(f.budget.as_ref().map(|b| b.0))
        .bind(f.budget.as_ref().map(|b| b.1.as_str()))
        .bind(Json(&f.variants))
}

pub async fn insert(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    owner: Uuid,
    duplicated_from: Option<Uuid>,
    f: &Fields,
) -> Result<CampaignRow> {
    let query = sqlx::query_as::<_, CampaignRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO campaigns.campaigns (tenant_id, id, name, description, goal, kind, channels,
             platforms, target_segment_ids, exclusion_segment_ids, content, budget_amount_minor,
             budget_currency, variants, owner_user_id, duplicated_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(id);
    let row = bind_fields(query, f)
        .bind(owner)
        .bind(duplicated_from)
        .fetch_one(conn)
        .await?;
    Ok(row)
}

/// A live (not deleted) campaign; `lock` takes its row lock for a change.
pub async fn get(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<CampaignRow>> {
    let sql = if lock {
        format!(
            "SELECT {COLUMNS} FROM campaigns.campaigns
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL FOR UPDATE"
        )
    } else {
        format!(
            "SELECT {COLUMNS} FROM campaigns.campaigns
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
        )
    };
    Ok(sqlx::query_as::<_, CampaignRow>(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// Filters of a campaign list; `None` means "any".
#[derive(Debug, Default)]
pub struct ListFilter {
    /// Without it, archived campaigns are left out.
    pub statuses: Option<Vec<String>>,
    pub channel: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Matched case-insensitively anywhere in name, description or goal.
    pub query: Option<String>,
}

/// `%`, `_` and `\` taken literally in an ILIKE pattern.
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

/// Newest first, `limit` rows after the keyset `before` (an id; ids are UUIDv7).
pub async fn list(
    conn: &mut PgConnection,
    tenant: Uuid,
    filter: &ListFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<CampaignRow>> {
    let rows = sqlx::query_as::<_, CampaignRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM campaigns.campaigns
         WHERE tenant_id = $1 AND deleted_at IS NULL AND id < $2
           AND (($3::text[] IS NULL AND status <> 'archived') OR status = ANY($3::text[]))
           AND ($4::text IS NULL OR $4::text = ANY(channels))
           AND ($5::timestamptz IS NULL OR created_at >= $5::timestamptz)
           AND ($6::timestamptz IS NULL OR created_at < $6::timestamptz)
           AND ($7::text IS NULL OR name ILIKE $7::text OR description ILIKE $7::text
                OR goal ILIKE $7::text)
         ORDER BY id DESC
         LIMIT $8"
    )))
    .bind(tenant)
    .bind(before.unwrap_or(Uuid::max()))
    .bind(filter.statuses.as_ref())
    .bind(filter.channel.as_deref())
    .bind(filter.created_after)
    .bind(filter.created_before)
    .bind(filter.query.as_deref().map(like_pattern))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// Writes every editable field and bumps the version.
pub async fn update(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    f: &Fields,
) -> Result<CampaignRow> {
    let query = sqlx::query_as::<_, CampaignRow>(sqlx::AssertSqlSafe(format!(
        "UPDATE campaigns.campaigns SET name = $3, description = $4, goal = $5, kind = $6,
             channels = $7, platforms = $8, target_segment_ids = $9, exclusion_segment_ids = $10,
             content = $11, budget_amount_minor = $12, budget_currency = $13, variants = $14,
             version = version + 1, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
         RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(id);
    let row = bind_fields(query, f).fetch_one(conn).await?;
    Ok(row)
}

/// What a status change does to the schedule.
pub enum ScheduleChange {
    Keep,
    Clear,
    Set(ScheduleFields),
}

/// Moves the campaign to `status` (already checked against the state machine) and bumps the
/// version.
pub async fn set_status(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    status: &str,
    schedule: ScheduleChange,
) -> Result<CampaignRow> {
    let (touch, send_at, tz, local, ambiguous) = match schedule {
        ScheduleChange::Keep => (false, None, None, None, false),
        ScheduleChange::Clear => (true, None, None, None, false),
        ScheduleChange::Set(s) => (
            true,
            Some(s.send_at),
            Some(s.time_zone),
            Some(s.local_send_at),
            s.ambiguous,
        ),
    };
    let row = sqlx::query_as::<_, CampaignRow>(sqlx::AssertSqlSafe(format!(
        "UPDATE campaigns.campaigns SET status = $3,
             send_at = CASE WHEN $4 THEN $5 ELSE send_at END,
             time_zone = CASE WHEN $4 THEN $6 ELSE time_zone END,
             local_send_at = CASE WHEN $4 THEN $7 ELSE local_send_at END,
             ambiguous_local_time = CASE WHEN $4 THEN $8 ELSE ambiguous_local_time END,
             version = version + 1, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
         RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(id)
    .bind(status)
    .bind(touch)
    .bind(send_at)
    .bind(tz)
    .bind(local)
    .bind(ambiguous)
    .fetch_one(conn)
    .await?;
    Ok(row)
}

/// Soft delete; returns the new version.
pub async fn soft_delete(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<i64> {
    let version: i64 = sqlx::query_scalar(
        "UPDATE campaigns.campaigns SET deleted_at = now(), updated_at = now(),
             version = version + 1
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
         RETURNING version",
    )
    .bind(tenant)
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_pattern_takes_wildcards_literally() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(like_pattern("spring"), "%spring%");
    }
}

// ---- workspace templates -------------------------------------------------------------------

const TEMPLATE_COLUMNS: &str =
    "id, name, description, goal, niche, kind, channels, platforms, content, variants, created_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TemplateRow {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub goal: String,
    pub niche: String,
    pub kind: String,
    pub channels: Vec<String>,
    pub platforms: Vec<String>,
    pub content: Json<Value>,
    pub variants: Json<Value>,
    pub created_at: DateTime<Utc>,
}

/// A template saved from `source`; `None` when the name is taken in the workspace.
pub async fn insert_template(
    conn: &mut PgConnection,
    tenant: Uuid,
    created_by: Uuid,
    source: &CampaignRow,
    name: &str,
    description: &str,
    niche: &str,
) -> Result<Option<TemplateRow>> {
    let inserted = sqlx::query_as::<_, TemplateRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO campaigns.campaign_templates (tenant_id, id, name, description, goal, niche,
             kind, channels, platforms, content, variants, source_campaign_id, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (tenant_id, lower(name)) DO NOTHING
         RETURNING {TEMPLATE_COLUMNS}"
    )))
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(description)
    .bind(&source.goal)
    .bind(niche)
    .bind(&source.kind)
    .bind(&source.channels)
    .bind(&source.platforms)
    .bind(&source.content)
    .bind(&source.variants)
    .bind(source.id)
    .bind(created_by)
    .fetch_optional(conn)
    .await?;
    Ok(inserted)
}

/// The workspace's template count, serialised per workspace until the transaction ends (so
/// two concurrent saves cannot both pass the cap).
pub async fn count_templates(conn: &mut PgConnection, tenant: Uuid) -> Result<i64> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('campaigns.campaign_templates:' || $1::text, 0))")
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    Ok(
        sqlx::query_scalar(
            "SELECT count(*) FROM campaigns.campaign_templates WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(conn)
        .await?,
    )
}

/// The workspace's templates by name, optionally of one niche and matching `query`.
pub async fn list_templates(
    conn: &mut PgConnection,
    tenant: Uuid,
    niche: Option<&str>,
    query: Option<&str>,
) -> Result<Vec<TemplateRow>> {
    Ok(
        sqlx::query_as::<_, TemplateRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {TEMPLATE_COLUMNS} FROM campaigns.campaign_templates
         WHERE tenant_id = $1 AND ($2::text IS NULL OR niche = $2::text)
           AND ($3::text IS NULL OR name ILIKE $3::text OR description ILIKE $3::text)
         ORDER BY lower(name)"
        )))
        .bind(tenant)
        .bind(niche)
        .bind(query.map(like_pattern))
        .fetch_all(conn)
        .await?,
    )
}

pub async fn get_template(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<TemplateRow>> {
    Ok(
        sqlx::query_as::<_, TemplateRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {TEMPLATE_COLUMNS} FROM campaigns.campaign_templates
         WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?,
    )
}

/// Whether a template was deleted.
pub async fn delete_template(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<bool> {
    let done =
        sqlx::query("DELETE FROM campaigns.campaign_templates WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}
