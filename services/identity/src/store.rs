//! Identity's SQL. Every function runs on a connection the caller got from a tenant, app or system
//! transaction; row-level security decides what it can see.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

pub type Result<T> = std::result::Result<T, sqlx::Error>;

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub platform_admin: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct TenantRow {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct MemberRow {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct MembershipOfUser {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub created_at: DateTime<Utc>,
    pub role: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct RefreshRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, FromRow)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub masked_key: String,
    pub role: String,
    pub scopes: Vec<String>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, FromRow)]
pub struct AuditRow {
    pub id: Uuid,
    pub actor_user_id: Option<Uuid>,
    pub actor_api_key_id: Option<Uuid>,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub details: serde_json::Value,
    pub request_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct AdminTenantRow {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub created_at: DateTime<Utc>,
    pub member_count: i64,
    pub owner_emails: Vec<String>,
}

// Users (global: a user may belong to many tenants).

pub async fn insert_user(c: &mut PgConnection, u: &UserRow, email_normalized: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO identity.users (id, email, email_normalized, display_name, password_hash, platform_admin, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(u.id)
    .bind(&u.email)
    .bind(email_normalized)
    .bind(&u.display_name)
    .bind(&u.password_hash)
    .bind(u.platform_admin)
    .bind(u.created_at)
    .execute(c)
    .await?;
    Ok(())
}

const USER_COLS: &str = "id, email, display_name, password_hash, platform_admin, created_at";

pub async fn user_by_email(c: &mut PgConnection, normalized: &str) -> Result<Option<UserRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLS} FROM identity.users WHERE email_normalized = $1"
    )))
    .bind(normalized)
    .fetch_optional(c)
    .await
}

pub async fn user_by_id(c: &mut PgConnection, id: Uuid) -> Result<Option<UserRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLS} FROM identity.users WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(c)
    .await
}

// Tenants and memberships.

pub async fn insert_tenant(c: &mut PgConnection, t: &TenantRow, created_by: Uuid) -> Result<()> {
    sqlx::query("INSERT INTO identity.tenants (id, name, slug, created_by, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(t.id)
        .bind(&t.name)
        .bind(&t.slug)
        .bind(created_by)
        .bind(t.created_at)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn tenant(c: &mut PgConnection, id: Uuid) -> Result<Option<TenantRow>> {
    sqlx::query_as("SELECT id, name, slug, created_at FROM identity.tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(c)
        .await
}

pub async fn insert_membership(
    c: &mut PgConnection,
    tenant_id: Uuid,
    user_id: Uuid,
    role: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO identity.memberships (tenant_id, user_id, role) VALUES ($1, $2, $3)")
        .bind(tenant_id)
        .bind(user_id)
        .bind(role)
        .execute(c)
        .await?;
    Ok(())
}

/// The member's role, locking the row for the rest of the transaction.
pub async fn membership_role_for_update(
    c: &mut PgConnection,
    tenant_id: Uuid,
    user_id: Uuid,
) -> Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT role FROM identity.memberships WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(c)
    .await
}

pub async fn membership_role(
    c: &mut PgConnection,
    tenant_id: Uuid,
    user_id: Uuid,
) -> Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT role FROM identity.memberships WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(c)
    .await
}

/// Locks every owner row of the tenant, so two concurrent demotions cannot both pass the
/// "someone else is still owner" check.
pub async fn lock_owners(c: &mut PgConnection, tenant_id: Uuid) -> Result<usize> {
    let owners: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM identity.memberships WHERE tenant_id = $1 AND role = 'owner' ORDER BY user_id FOR UPDATE",
    )
    .bind(tenant_id)
    .fetch_all(c)
    .await?;
    Ok(owners.len())
}

pub async fn set_role(
    c: &mut PgConnection,
    tenant_id: Uuid,
    user_id: Uuid,
    role: &str,
) -> Result<()> {
    sqlx::query("UPDATE identity.memberships SET role = $3, updated_at = now() WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .bind(role)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn delete_membership(c: &mut PgConnection, tenant_id: Uuid, user_id: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM identity.memberships WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .execute(c)
        .await?;
    Ok(())
}

const MEMBER_SELECT: &str =
    "SELECT m.user_id, u.email, u.display_name, m.role, m.created_at AS joined_at
     FROM identity.memberships m JOIN identity.users u ON u.id = m.user_id";

pub async fn members(c: &mut PgConnection, tenant_id: Uuid) -> Result<Vec<MemberRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{MEMBER_SELECT} WHERE m.tenant_id = $1 ORDER BY m.created_at, m.user_id"
    )))
    .bind(tenant_id)
    .fetch_all(c)
    .await
}

pub async fn member(
    c: &mut PgConnection,
    tenant_id: Uuid,
    user_id: Uuid,
) -> Result<Option<MemberRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{MEMBER_SELECT} WHERE m.tenant_id = $1 AND m.user_id = $2"
    )))
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(c)
    .await
}

/// Every tenant a user belongs to (system transaction: spans tenants by nature).
pub async fn memberships_of_user(
    c: &mut PgConnection,
    user_id: Uuid,
) -> Result<Vec<MembershipOfUser>> {
    sqlx::query_as(
        "SELECT t.id, t.name, t.slug, t.created_at, m.role
         FROM identity.memberships m JOIN identity.tenants t ON t.id = m.tenant_id
         WHERE m.user_id = $1 ORDER BY m.created_at, t.id",
    )
    .bind(user_id)
    .fetch_all(c)
    .await
}

// Refresh tokens.

pub async fn insert_refresh(
    c: &mut PgConnection,
    tenant_id: Uuid,
    family_id: Uuid,
    user_id: Uuid,
    token_hash: &str,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO identity.refresh_tokens (id, tenant_id, family_id, user_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(family_id)
    .bind(user_id)
    .bind(token_hash)
    .bind(expires_at)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn refresh_by_hash_for_update(
    c: &mut PgConnection,
    token_hash: &str,
) -> Result<Option<RefreshRow>> {
    sqlx::query_as(
        "SELECT id, tenant_id, family_id, user_id, expires_at, used_at, revoked_at
         FROM identity.refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(c)
    .await
}

pub async fn mark_refresh_used(c: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query("UPDATE identity.refresh_tokens SET used_at = now() WHERE id = $1")
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// Serialises every change to one session (refresh-token family) until the transaction ends.
pub async fn lock_family(c: &mut PgConnection, family_id: Uuid) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7263003))")
        .bind(family_id)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn family_revoked(c: &mut PgConnection, family_id: Uuid) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM identity.refresh_tokens WHERE family_id = $1 AND revoked_at IS NOT NULL)",
    )
    .bind(family_id)
    .fetch_one(c)
    .await
}

pub async fn revoke_family(c: &mut PgConnection, family_id: Uuid) -> Result<u64> {
    let r = sqlx::query("UPDATE identity.refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL")
        .bind(family_id)
        .execute(c)
        .await?;
    Ok(r.rows_affected())
}

pub async fn revoke_user_sessions(
    c: &mut PgConnection,
    tenant_id: Uuid,
    user_id: Uuid,
) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE identity.refresh_tokens SET revoked_at = now()
         WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(tenant_id)
    .bind(user_id)
    .execute(c)
    .await?;
    Ok(r.rows_affected())
}

// API keys.

pub async fn insert_api_key(c: &mut PgConnection, k: &ApiKeyRow, secret_hash: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO identity.api_keys (id, tenant_id, name, masked_key, secret_hash, role, scopes, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(k.id)
    .bind(k.tenant_id)
    .bind(&k.name)
    .bind(&k.masked_key)
    .bind(secret_hash)
    .bind(&k.role)
    .bind(&k.scopes)
    .bind(k.created_by)
    .bind(k.created_at)
    .execute(c)
    .await?;
    Ok(())
}

const API_KEY_COLS: &str = "id, tenant_id, name, masked_key, role, scopes, created_by, created_at, last_used_at, revoked_at";

pub async fn api_keys(c: &mut PgConnection, tenant_id: Uuid) -> Result<Vec<ApiKeyRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {API_KEY_COLS} FROM identity.api_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC"
    )))
    .bind(tenant_id)
    .fetch_all(c)
    .await
}

pub async fn api_key_for_update(
    c: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<ApiKeyRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {API_KEY_COLS} FROM identity.api_keys WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(c)
    .await
}

pub async fn revoke_api_key(c: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE identity.api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

/// An active key by the hash of its secret (system transaction: the tenant is what we learn).
pub async fn active_api_key_by_hash(
    c: &mut PgConnection,
    secret_hash: &str,
) -> Result<Option<ApiKeyRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {API_KEY_COLS} FROM identity.api_keys WHERE secret_hash = $1 AND revoked_at IS NULL"
    )))
    .bind(secret_hash)
    .fetch_optional(c)
    .await
}

/// Records use at most once a minute per key, so authentication is not a write per request.
pub async fn touch_api_key(c: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE identity.api_keys SET last_used_at = now()
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

// Audit.

pub struct NewAudit<'a> {
    pub tenant_id: Uuid,
    pub actor_user_id: Option<Uuid>,
    pub actor_api_key_id: Option<Uuid>,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: String,
    pub details: serde_json::Value,
    pub request_id: Option<&'a str>,
}

pub async fn insert_audit(c: &mut PgConnection, a: NewAudit<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO identity.audit_log
           (id, tenant_id, actor_user_id, actor_api_key_id, action, target_type, target_id, details, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(Uuid::now_v7())
    .bind(a.tenant_id)
    .bind(a.actor_user_id)
    .bind(a.actor_api_key_id)
    .bind(a.action)
    .bind(a.target_type)
    .bind(&a.target_id)
    .bind(&a.details)
    .bind(a.request_id)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn audit_page(
    c: &mut PgConnection,
    tenant_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AuditRow>> {
    sqlx::query_as(
        "SELECT id, actor_user_id, actor_api_key_id, action, target_type, target_id, details, request_id, occurred_at
         FROM identity.audit_log
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(tenant_id)
    .bind(before)
    .bind(limit)
    .fetch_all(c)
    .await
}

pub async fn insert_platform_audit(
    c: &mut PgConnection,
    actor: Uuid,
    action: &str,
    details: serde_json::Value,
    request_id: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO identity.platform_audit_log (id, actor_user_id, action, details, request_id) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(actor)
    .bind(action)
    .bind(details)
    .bind(request_id)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn all_tenants_page(
    c: &mut PgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AdminTenantRow>> {
    sqlx::query_as(
        "SELECT t.id, t.name, t.slug, t.created_at,
                (SELECT count(*) FROM identity.memberships m WHERE m.tenant_id = t.id) AS member_count,
                COALESCE((SELECT array_agg(u.email ORDER BY u.email) FROM identity.memberships m
                          JOIN identity.users u ON u.id = m.user_id
                          WHERE m.tenant_id = t.id AND m.role = 'owner'), '{}') AS owner_emails
         FROM identity.tenants t
         WHERE $1::uuid IS NULL OR t.id > $1
         ORDER BY t.id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await
}

/// Serialises plan-limited creations (members, API keys) of one tenant: the count that is
/// checked against the limit cannot change until the transaction ends.
pub async fn lock_tenant(c: &mut PgConnection, tenant_id: Uuid) -> Result<()> {
    sqlx::query("SELECT id FROM identity.tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant_id)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn count_members(c: &mut PgConnection, tenant_id: Uuid) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM identity.memberships WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(c)
        .await
}

pub async fn count_active_api_keys(c: &mut PgConnection, tenant_id: Uuid) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM identity.api_keys WHERE tenant_id = $1 AND revoked_at IS NULL",
    )
    .bind(tenant_id)
    .fetch_one(c)
    .await
}
