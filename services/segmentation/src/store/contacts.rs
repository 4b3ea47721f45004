//! Contacts: rows, bulk insert/update (one statement per batch through `jsonb_to_recordset`), the
//! per-tenant live-contact counter that enforces the plan limit, lists, delete and erase.

use chrono::{DateTime, Utc};
use cos_errors::ServiceError;
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::attributes::{Channel, ConsentState};
use crate::domain::state::{ConsentSlot, ContactState};
use crate::error::{Error, Result};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ContactRow {
    pub id: Uuid,
    pub email: Option<String>,
    pub email_normalized: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub locale: String,
    pub time_zone: String,
    pub attributes: sqlx::types::Json<Map<String, Value>>,
    pub tags: Vec<String>,
    pub email_consent: String,
    pub email_consent_at: Option<DateTime<Utc>>,
    pub email_consent_source: String,
    pub sms_consent: String,
    pub sms_consent_at: Option<DateTime<Utc>>,
    pub sms_consent_source: String,
    pub push_consent: String,
    pub push_consent_at: Option<DateTime<Utc>>,
    pub push_consent_source: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_activity_at: Option<DateTime<Utc>>,
}

pub const COLUMNS: &str = "c.id, c.email, c.email_normalized, c.phone, c.external_id, c.first_name, \
    c.last_name, c.locale, c.time_zone, c.attributes, c.tags, c.email_consent, c.email_consent_at, \
    c.email_consent_source, c.sms_consent, c.sms_consent_at, c.sms_consent_source, c.push_consent, \
    c.push_consent_at, c.push_consent_source, c.version, c.created_at, c.updated_at, \
    c.last_activity_at";

fn slot(state: &str, at: Option<DateTime<Utc>>, source: &str) -> ConsentSlot {
    ConsentSlot {
        state: ConsentState::parse(state).unwrap_or_default(),
        at,
        source: source.to_owned(),
    }
}

impl ContactRow {
    pub fn state(&self) -> ContactState {
        ContactState {
            email: self.email.clone(),
            email_normalized: self.email_normalized.clone(),
            phone: self.phone.clone(),
            external_id: self.external_id.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            locale: self.locale.clone(),
            time_zone: self.time_zone.clone(),
            attributes: self.attributes.0.clone(),
            tags: self.tags.clone(),
            email_consent: slot(
                &self.email_consent,
                self.email_consent_at,
                &self.email_consent_source,
            ),
            sms_consent: slot(
                &self.sms_consent,
                self.sms_consent_at,
                &self.sms_consent_source,
            ),
            push_consent: slot(
                &self.push_consent,
                self.push_consent_at,
                &self.push_consent_source,
            ),
            last_activity_at: self.last_activity_at,
        }
    }

    pub fn consent(&self, channel: Channel) -> (&str, Option<DateTime<Utc>>, &str) {
        match channel {
            Channel::Email => (
                &self.email_consent,
                self.email_consent_at,
                &self.email_consent_source,
            ),
            Channel::Sms => (
                &self.sms_consent,
                self.sms_consent_at,
                &self.sms_consent_source,
            ),
            Channel::Push => (
                &self.push_consent,
                self.push_consent_at,
                &self.push_consent_source,
            ),
        }
    }
}

/// One row of a bulk write, as `jsonb_to_recordset` reads it.
#[derive(Serialize)]
struct RecordJson<'a> {
    id: Uuid,
    email: &'a Option<String>,
    email_normalized: &'a Option<String>,
    phone: &'a Option<String>,
    external_id: &'a Option<String>,
    first_name: &'a str,
    last_name: &'a str,
    locale: &'a str,
    time_zone: &'a str,
    attributes: &'a Map<String, Value>,
    tags: &'a [String],
    email_consent: &'static str,
    email_consent_at: Option<DateTime<Utc>>,
    email_consent_source: &'a str,
    sms_consent: &'static str,
    sms_consent_at: Option<DateTime<Utc>>,
    sms_consent_source: &'a str,
    push_consent: &'static str,
    push_consent_at: Option<DateTime<Utc>>,
    push_consent_source: &'a str,
    last_activity_at: Option<DateTime<Utc>>,
    version: Option<i64>,
}

fn records(rows: &[(Uuid, &ContactState, Option<i64>)]) -> Value {
    Value::Array(
        rows.iter()
            .map(|(id, s, version)| {
                serde_json::to_value(RecordJson {
                    id: *id,
                    email: &s.email,
                    email_normalized: &s.email_normalized,
                    phone: &s.phone,
                    external_id: &s.external_id,
                    first_name: &s.first_name,
                    last_name: &s.last_name,
                    locale: &s.locale,
                    time_zone: &s.time_zone,
                    attributes: &s.attributes,
                    tags: &s.tags,
                    email_consent: s.email_consent.state.as_str(),
                    email_consent_at: s.email_consent.at,
                    email_consent_source: &s.email_consent.source,
                    sms_consent: s.sms_consent.state.as_str(),
                    sms_consent_at: s.sms_consent.at,
                    sms_consent_source: &s.sms_consent.source,
                    push_consent: s.push_consent.state.as_str(),
                    push_consent_at: s.push_consent.at,
                    push_consent_source: &s.push_consent.source,
                    last_activity_at: s.last_activity_at,
                    version: *version,
                })
                .unwrap_or(Value::Null)
            })
            .collect(),
    )
}

const RECORD_TYPE: &str = "r(id uuid, email text, email_normalized text, phone text, external_id text, \
    first_name text, last_name text, locale text, time_zone text, attributes jsonb, tags text[], \
    email_consent text, email_consent_at timestamptz, email_consent_source text, sms_consent text, \
    sms_consent_at timestamptz, sms_consent_source text, push_consent text, push_consent_at timestamptz, \
    push_consent_source text, last_activity_at timestamptz, version bigint)";

/// Maps a unique-index violation to the field whose value is taken.
pub fn taken_field(err: &sqlx::Error) -> Option<&'static str> {
    match cos_db::unique_violation(err)? {
        "contacts_email_key" => Some("email"),
        "contacts_phone_key" => Some("phone"),
        "contacts_external_id_key" => Some("external_id"),
        _ => None,
    }
}

fn conflict(err: sqlx::Error) -> Error {
    match taken_field(&err) {
        Some(field) => ServiceError::already_exists(format!(
            "another contact already has this {}",
            field.replace('_', " ")
        ))
        .with_violation(field, "is already used by another contact")
        .into(),
        None => err.into(),
    }
}

/// Inserts new contacts in one statement. A taken identifier fails the whole statement
/// (ALREADY_EXISTS naming the field); callers that want per-row outcomes retry row by row.
pub async fn insert_many(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[(Uuid, &ContactState)],
) -> Result<Vec<ContactRow>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let recs: Vec<_> = rows.iter().map(|(id, s)| (*id, *s, None)).collect();
    let sql = format!(
        "INSERT INTO segmentation.contacts AS c (tenant_id, id, email, email_normalized, phone, external_id,
             first_name, last_name, locale, time_zone, attributes, tags, email_consent, email_consent_at,
             email_consent_source, sms_consent, sms_consent_at, sms_consent_source, push_consent,
             push_consent_at, push_consent_source, last_activity_at)
         SELECT $1, r.id, r.email, r.email_normalized, r.phone, r.external_id, r.first_name, r.last_name,
             r.locale, r.time_zone, r.attributes, r.tags, r.email_consent, r.email_consent_at,
             r.email_consent_source, r.sms_consent, r.sms_consent_at, r.sms_consent_source, r.push_consent,
             r.push_consent_at, r.push_consent_source, r.last_activity_at
         FROM jsonb_to_recordset($2) AS {RECORD_TYPE}
         RETURNING {COLUMNS}"
    );
    sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(records(&recs))
        .fetch_all(conn)
        .await
        .map_err(conflict)
}

/// Writes new states over existing live contacts, bumping their versions. With a version in a
/// row, that row only changes if the stored version matches; rows that did not change are
/// missing from the result.
pub async fn update_many(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[(Uuid, &ContactState, Option<i64>)],
) -> Result<Vec<ContactRow>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE segmentation.contacts AS c SET email = r.email, email_normalized = r.email_normalized,
             phone = r.phone, external_id = r.external_id, first_name = r.first_name,
             last_name = r.last_name, locale = r.locale, time_zone = r.time_zone,
             attributes = r.attributes, tags = r.tags, email_consent = r.email_consent,
             email_consent_at = r.email_consent_at, email_consent_source = r.email_consent_source,
             sms_consent = r.sms_consent, sms_consent_at = r.sms_consent_at,
             sms_consent_source = r.sms_consent_source, push_consent = r.push_consent,
             push_consent_at = r.push_consent_at, push_consent_source = r.push_consent_source,
             last_activity_at = r.last_activity_at, version = c.version + 1, updated_at = now()
         FROM jsonb_to_recordset($2) AS {RECORD_TYPE}
         WHERE c.tenant_id = $1 AND c.id = r.id AND c.deleted_at IS NULL
           AND (r.version IS NULL OR c.version = r.version)
         RETURNING {COLUMNS}"
    );
    sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(records(rows))
        .fetch_all(conn)
        .await
        .map_err(conflict)
}

/// A live contact (or, with `include_deleted`, a soft-deleted one too).
pub async fn get(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    for_update: bool,
) -> Result<Option<ContactRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM segmentation.contacts c
         WHERE c.tenant_id = $1 AND c.id = $2 AND c.deleted_at IS NULL{}",
        if for_update { " FOR UPDATE" } else { "" }
    );
    Ok(sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// Live contacts holding any of these identifiers, locked for update.
pub async fn find_by_identifiers(
    conn: &mut PgConnection,
    tenant: Uuid,
    emails: &[String],
    external_ids: &[String],
    phones: &[String],
) -> Result<Vec<ContactRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM segmentation.contacts c
         WHERE c.tenant_id = $1 AND c.deleted_at IS NULL
           AND (c.email_normalized = ANY($2) OR c.external_id = ANY($3) OR c.phone = ANY($4))
         ORDER BY c.id FOR UPDATE"
    );
    Ok(sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(emails)
        .bind(external_ids)
        .bind(phones)
        .fetch_all(conn)
        .await?)
}

#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub query: Option<String>,
    pub tag: Option<String>,
    pub segment_id: Option<Uuid>,
    pub email_consent: Option<String>,
}

/// A page of live contacts in id (creation) order after `after`.
pub async fn list(
    conn: &mut PgConnection,
    tenant: Uuid,
    filter: &ListFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ContactRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM segmentation.contacts_of_tenant c
         WHERE c.tenant_id = $1 AND c.deleted_at IS NULL
           AND c.id > $2
           AND ($3::text IS NULL OR starts_with(c.email_normalized, $3)
                OR starts_with(lower(c.first_name), $3) OR starts_with(lower(c.last_name), $3))
           AND ($4::text IS NULL OR c.tags @> ARRAY[$4])
           AND ($5::uuid IS NULL OR EXISTS (SELECT 1 FROM segmentation.segment_members m
                WHERE m.tenant_id = c.tenant_id AND m.segment_id = $5 AND m.contact_id = c.id))
           AND ($6::text IS NULL OR c.email_consent = $6)
         ORDER BY c.id LIMIT $7"
    );
    // Through `contacts_of_tenant` so that the tag filter can use the GIN index; the cursor is
    // bound as the nil uuid when absent so a generic plan keeps it as an index condition.
    Ok(sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(after.unwrap_or(Uuid::nil()))
        .bind(filter.query.as_ref().map(|q| q.to_lowercase()))
        .bind(&filter.tag)
        .bind(filter.segment_id)
        .bind(&filter.email_consent)
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

/// Locks the tenant's live-contact counter (creating it on first use) and returns its value.
/// Every transaction that creates or deletes contacts takes this lock first, so counts and
/// limits are exact under concurrency.
pub async fn lock_live_count(conn: &mut PgConnection, tenant: Uuid) -> Result<i64> {
    sqlx::query(
        "INSERT INTO segmentation.tenant_stats (tenant_id, live_contacts)
         SELECT $1, (SELECT count(*) FROM segmentation.contacts WHERE tenant_id = $1 AND deleted_at IS NULL)
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar(
        "SELECT live_contacts FROM segmentation.tenant_stats WHERE tenant_id = $1 FOR UPDATE",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await?)
}

/// Adjusts the live-contact counter (after `lock_live_count` in the same transaction).
pub async fn add_live_count(conn: &mut PgConnection, tenant: Uuid, delta: i64) -> Result<()> {
    if delta != 0 {
        sqlx::query(
            "UPDATE segmentation.tenant_stats SET live_contacts = live_contacts + $2 WHERE tenant_id = $1",
        )
        .bind(tenant)
        .bind(delta)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Soft-deletes a live contact; removes its segment memberships (returned, for exited events).
pub async fn soft_delete(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<(ContactRow, Vec<Uuid>)>> {
    let sql = format!(
        "UPDATE segmentation.contacts c SET deleted_at = now(), updated_at = now(), version = version + 1
         WHERE c.tenant_id = $1 AND c.id = $2 AND c.deleted_at IS NULL RETURNING {COLUMNS}"
    );
    let Some(row) = sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let segments = remove_memberships(conn, tenant, id).await?;
    Ok(Some((row, segments)))
}

/// Removes every membership of a contact, keeping segment sizes right; returns the segments.
pub async fn remove_memberships(
    conn: &mut PgConnection,
    tenant: Uuid,
    contact: Uuid,
) -> Result<Vec<Uuid>> {
    let segments: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM segmentation.segment_members WHERE tenant_id = $1 AND contact_id = $2 RETURNING segment_id",
    )
    .bind(tenant)
    .bind(contact)
    .fetch_all(&mut *conn)
    .await?;
    if !segments.is_empty() {
        sqlx::query(
            "UPDATE segmentation.segments SET member_count = member_count - 1
             WHERE tenant_id = $1 AND id = ANY($2)",
        )
        .bind(tenant)
        .bind(&segments)
        .execute(conn)
        .await?;
    }
    Ok(segments)
}

/// GDPR erasure: deletes the row (live or soft-deleted) and its memberships, import rejections
/// can't name it (they hold line numbers and reasons only), and writes the audit entry.
pub async fn erase(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    erased_by: Uuid,
    request_id: &str,
    reason: &str,
) -> Result<Option<(Uuid, bool, Vec<Uuid>)>> {
    type Identifiers = (Option<String>, Option<String>, Option<String>, bool);
    let row: Option<Identifiers> = sqlx::query_as(
        "SELECT email_normalized, phone, external_id, deleted_at IS NULL FROM segmentation.contacts
         WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((email, phone, external_id, live)) = row else {
        return Ok(None);
    };
    let segments = remove_memberships(conn, tenant, id).await?;
    sqlx::query("DELETE FROM segmentation.dirty_contacts WHERE tenant_id = $1 AND contact_id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM segmentation.contacts WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let hashes: Vec<String> = [
        email.map(|e| format!("email:{e}")),
        phone.map(|p| format!("phone:{p}")),
        external_id.map(|x| format!("external_id:{x}")),
    ]
    .into_iter()
    .flatten()
    .map(|s| {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(s.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect()
    })
    .collect();
    let erasure_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO segmentation.erasure_log (tenant_id, id, contact_id, identifier_hashes, erased_by, request_id, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant)
    .bind(erasure_id)
    .bind(id)
    .bind(&hashes)
    .bind(erased_by)
    .bind(request_id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(Some((erasure_id, live, segments)))
}

/// Workspaces whose live-contact count differs from the one last reported to billing (system
/// transaction: spans tenants).
pub async fn unreported_counts(conn: &mut PgConnection, limit: i64) -> Result<Vec<(Uuid, i64)>> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, live_contacts FROM segmentation.tenant_stats
         WHERE reported_contacts IS DISTINCT FROM live_contacts
         ORDER BY reported_at NULLS FIRST, tenant_id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Records that billing was told `value` for the tenant.
pub async fn mark_reported(conn: &mut PgConnection, tenant: Uuid, value: i64) -> Result<()> {
    sqlx::query(
        "UPDATE segmentation.tenant_stats SET reported_contacts = $2, reported_at = now()
         WHERE tenant_id = $1",
    )
    .bind(tenant)
    .bind(value)
    .execute(conn)
    .await?;
    Ok(())
}
