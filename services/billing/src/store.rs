//! Billing's SQL. Every function runs on a connection the caller got from a tenant or system
//! transaction; row-level security decides what a tenant transaction can see.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cos_entitlements::Limit;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::domain::{BaseStatus, Plan, Subscription};

pub type Result<T> = std::result::Result<T, sqlx::Error>;

const PLAN_COLUMNS: &str = "code, name, description, trial, purchasable, sort_order, seats, contacts, \
     campaigns_per_month, messages_per_month, ai_budget_minor_per_month, storage_bytes, api_keys, \
     channels, automation, version, updated_at";

#[derive(Debug, FromRow)]
struct PlanRow {
    code: String,
    name: String,
    description: String,
    trial: bool,
    purchasable: bool,
    sort_order: i32,
    seats: Option<i64>,
    contacts: Option<i64>,
    campaigns_per_month: Option<i64>,
    messages_per_month: Option<i64>,
    ai_budget_minor_per_month: Option<i64>,
    storage_bytes: Option<i64>,
    api_keys: Option<i64>,
    channels: Vec<String>,
    automation: bool,
    version: i64,
    updated_at: DateTime<Utc>,
}

impl PlanRow {
    fn into_plan(self, prices: BTreeMap<String, i64>) -> Plan {
        let limits = BTreeMap::from([
            (Limit::Seats, self.seats),
            (Limit::Contacts, self.contacts),
            (Limit::CampaignsPerMonth, self.campaigns_per_month),
            (Limit::MessagesPerMonth, self.messages_per_month),
            (Limit::AiBudgetMinorPerMonth, self.ai_budget_minor_per_month),
            (Limit::StorageBytes, self.storage_bytes),
            (Limit::ApiKeys, self.api_keys),
        ]);
        Plan {
            code: self.code,
            name: self.name,
            description: self.description,
            trial: self.trial,
            purchasable: self.purchasable,
            sort_order: self.sort_order,
            limits,
            channels: self.channels,
            automation: self.automation,
            prices,
            version: self.version,
            updated_at: self.updated_at,
        }
    }
}

async fn prices(conn: &mut PgConnection, codes: &[String]) -> Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT plan_code, currency, monthly_amount_minor FROM billing.plan_prices \
         WHERE plan_code = ANY($1) ORDER BY plan_code, currency",
    )
    .bind(codes)
    .fetch_all(conn)
    .await
}

pub async fn plans(conn: &mut PgConnection) -> Result<Vec<Plan>> {
    let rows: Vec<PlanRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PLAN_COLUMNS} FROM billing.plans ORDER BY sort_order, code"
    )))
    .fetch_all(&mut *conn)
    .await?;
    let codes: Vec<String> = rows.iter().map(|r| r.code.clone()).collect();
    let mut by_plan: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (plan, currency, amount) in prices(conn, &codes).await? {
        by_plan.entry(plan).or_default().insert(currency, amount);
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let p = by_plan.remove(&r.code).unwrap_or_default();
            r.into_plan(p)
        })
        .collect())
}

pub async fn plan(conn: &mut PgConnection, code: &str) -> Result<Option<Plan>> {
    let row: Option<PlanRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PLAN_COLUMNS} FROM billing.plans WHERE code = $1"
    )))
    .bind(code)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let p = prices(conn, std::slice::from_ref(&row.code))
        .await?
        .into_iter()
        .map(|(_, c, a)| (c, a))
        .collect();
    Ok(Some(row.into_plan(p)))
}

pub async fn trial_plan_code(conn: &mut PgConnection) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT code FROM billing.plans WHERE trial")
        .fetch_optional(conn)
        .await
}

/// Replaces a plan's editable fields and prices if its version is still `expected_version`.
/// Returns false on a version conflict (or an unknown plan).
pub async fn update_plan(
    conn: &mut PgConnection,
    p: &Plan,
    expected_version: i64,
    actor: Uuid,
) -> Result<bool> {
    let l = |x: Limit| p.limits.get(&x).copied().unwrap_or(Some(0));
    let updated = sqlx::query(
        "UPDATE billing.plans SET name = $3, description = $4, purchasable = $5, sort_order = $6, \
         seats = $7, contacts = $8, campaigns_per_month = $9, messages_per_month = $10, \
         ai_budget_minor_per_month = $11, storage_bytes = $12, api_keys = $13, channels = $14, \
         automation = $15, version = version + 1, updated_at = now(), updated_by = $16 \
         WHERE code = $1 AND version = $2",
    )
    .bind(&p.code)
    .bind(expected_version)
    .bind(&p.name)
    .bind(&p.description)
    .bind(p.purchasable)
    .bind(p.sort_order)
    .bind(l(Limit::Seats))
    .bind(l(Limit::Contacts))
    .bind(l(Limit::CampaignsPerMonth))
    .bind(l(Limit::MessagesPerMonth))
    .bind(l(Limit::AiBudgetMinorPerMonth))
    .bind(l(Limit::StorageBytes))
    .bind(l(Limit::ApiKeys))
    .bind(&p.channels)
    .bind(p.automation)
    .bind(actor)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM billing.plan_prices WHERE plan_code = $1")
        .bind(&p.code)
        .execute(&mut *conn)
        .await?;
    for (currency, amount) in &p.prices {
        sqlx::query(
            "INSERT INTO billing.plan_prices (plan_code, currency, monthly_amount_minor) VALUES ($1, $2, $3)",
        )
        .bind(&p.code)
        .bind(currency)
        .bind(amount)
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

#[derive(Debug, FromRow)]
struct SubscriptionRow {
    tenant_id: Uuid,
    plan_code: String,
    base_status: String,
    current_period_start: DateTime<Utc>,
    current_period_end: DateTime<Utc>,
    comped: bool,
    suspended_at: Option<DateTime<Utc>>,
    suspended_reason: Option<String>,
    version: i64,
    updated_at: DateTime<Utc>,
}

impl SubscriptionRow {
    fn into_domain(self) -> Result<Subscription> {
        let base = BaseStatus::parse(&self.base_status).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown base status {:?}", self.base_status).into())
        })?;
        Ok(Subscription {
            tenant_id: self.tenant_id,
            plan_code: self.plan_code,
            base,
            period_start: self.current_period_start,
            period_end: self.current_period_end,
            comped: self.comped,
            suspended_at: self.suspended_at,
            suspended_reason: self.suspended_reason,
            version: self.version,
            updated_at: self.updated_at,
        })
    }
}

const SUB_COLUMNS: &str = "tenant_id, plan_code, base_status, current_period_start, current_period_end, \
     comped, suspended_at, suspended_reason, version, updated_at";

pub async fn subscription(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    for_update: bool,
) -> Result<Option<Subscription>> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let row: Option<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUB_COLUMNS} FROM billing.subscriptions WHERE tenant_id = $1{lock}"
    )))
    .bind(tenant_id)
    .fetch_optional(conn)
    .await?;
    row.map(SubscriptionRow::into_domain).transpose()
}

/// Inserts the subscription unless the tenant has one; returns whether it was inserted.
pub async fn insert_subscription_if_absent(
    conn: &mut PgConnection,
    s: &Subscription,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO billing.subscriptions (tenant_id, plan_code, base_status, current_period_start, \
         current_period_end, comped, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(s.tenant_id)
    .bind(&s.plan_code)
    .bind(s.base.as_str())
    .bind(s.period_start)
    .bind(s.period_end)
    .bind(s.comped)
    .bind(s.updated_at)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Writes `s` over the row at version `s.version`; returns the stored row (version + 1), or
/// None if someone else changed it first.
pub async fn save_subscription(
    conn: &mut PgConnection,
    s: &Subscription,
) -> Result<Option<Subscription>> {
    let row: Option<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE billing.subscriptions SET plan_code = $3, base_status = $4, current_period_start = $5, \
         current_period_end = $6, comped = $7, suspended_at = $8, suspended_reason = $9, \
         version = version + 1, updated_at = now() \
         WHERE tenant_id = $1 AND version = $2 RETURNING {SUB_COLUMNS}"
    )))
    .bind(s.tenant_id)
    .bind(s.version)
    .bind(&s.plan_code)
    .bind(s.base.as_str())
    .bind(s.period_start)
    .bind(s.period_end)
    .bind(s.comped)
    .bind(s.suspended_at)
    .bind(&s.suspended_reason)
    .fetch_optional(conn)
    .await?;
    row.map(SubscriptionRow::into_domain).transpose()
}

#[derive(Debug, Clone)]
pub struct NewHistory<'a> {
    pub tenant_id: Uuid,
    pub action: &'a str,
    pub plan_code: &'a str,
    pub previous_plan_code: Option<&'a str>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub previous_period_end: Option<DateTime<Utc>>,
    pub actor_user_id: Option<Uuid>,
    pub reason: &'a str,
    pub checkout_session_id: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

pub async fn insert_history(conn: &mut PgConnection, h: NewHistory<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO billing.subscription_history (id, tenant_id, action, plan_code, previous_plan_code, \
         period_start, period_end, previous_period_end, actor_user_id, reason, checkout_session_id, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(Uuid::now_v7())
    .bind(h.tenant_id)
    .bind(h.action)
    .bind(h.plan_code)
    .bind(h.previous_plan_code)
    .bind(h.period_start)
    .bind(h.period_end)
    .bind(h.previous_period_end)
    .bind(h.actor_user_id)
    .bind(h.reason)
    .bind(h.checkout_session_id)
    .bind(h.request_id)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct HistoryRow {
    pub id: Uuid,
    pub action: String,
    pub plan_code: String,
    pub previous_plan_code: Option<String>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub previous_period_end: Option<DateTime<Utc>>,
    pub actor_user_id: Option<Uuid>,
    pub reason: String,
    pub checkout_session_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

pub async fn history_page(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<HistoryRow>> {
    sqlx::query_as(
        "SELECT id, action, plan_code, previous_plan_code, period_start, period_end, previous_period_end, \
         actor_user_id, reason, checkout_session_id, occurred_at FROM billing.subscription_history \
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(tenant_id)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await
}

#[derive(Debug, Clone, FromRow)]
pub struct CheckoutRow {
    pub id: String,
    pub tenant_id: Uuid,
    pub plan_code: String,
    pub months: i32,
    pub currency: String,
    pub unit_amount_minor: i64,
    pub amount_minor: i64,
    pub url: String,
    pub status: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

pub async fn insert_checkout(conn: &mut PgConnection, c: &CheckoutRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO billing.checkout_sessions (id, tenant_id, plan_code, months, currency, unit_amount_minor, \
         amount_minor, url, status, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&c.id)
    .bind(c.tenant_id)
    .bind(&c.plan_code)
    .bind(c.months)
    .bind(&c.currency)
    .bind(c.unit_amount_minor)
    .bind(c.amount_minor)
    .bind(&c.url)
    .bind(&c.status)
    .bind(c.created_by)
    .bind(c.created_at)
    .bind(c.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn checkout(
    conn: &mut PgConnection,
    id: &str,
    for_update: bool,
) -> Result<Option<CheckoutRow>> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, tenant_id, plan_code, months, currency, unit_amount_minor, amount_minor, url, status, \
         created_by, created_at, expires_at, completed_at \
         FROM billing.checkout_sessions WHERE id = $1{lock}"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn recent_checkouts(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<CheckoutRow>> {
    sqlx::query_as(
        "SELECT id, tenant_id, plan_code, months, currency, unit_amount_minor, amount_minor, url, status, \
         created_by, created_at, expires_at, completed_at FROM billing.checkout_sessions \
         WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, id LIMIT $3",
    )
    .bind(tenant_id)
    .bind(status)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn complete_checkout(
    conn: &mut PgConnection,
    id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE billing.checkout_sessions SET status = 'completed', completed_at = now(), \
         applied_period_start = $2, applied_period_end = $3 WHERE id = $1 AND status = 'open'",
    )
    .bind(id)
    .bind(start)
    .bind(end)
    .execute(conn)
    .await?;
    Ok(())
}

/// What ConsumeQuota did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    Granted {
        granted: i64,
        used: i64,
    },
    /// The key had been used: the earlier grant (for `metric`, in `cycle_start`).
    Replayed {
        metric: String,
        cycle_start: DateTime<Utc>,
        granted: i64,
        used: i64,
    },
    /// Not enough left (nothing was taken; the caller rolls back).
    Refused {
        used: i64,
    },
}

/// Takes `amount` of `metric` in the cycle starting `cycle_start`, atomically: the grant row
/// claims the idempotency key first (a concurrent call with the same key waits on it and then
/// replays), then the counter row is locked, checked against `limit` (None = unlimited) and
/// bumped. Concurrent consumers of one counter serialise on its row lock, so together they never
/// get more than the limit.
#[allow(clippy::too_many_arguments)]
pub async fn consume(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    metric: Limit,
    cycle_start: DateTime<Utc>,
    key: &str,
    amount: i64,
    limit: Option<i64>,
    allow_partial: bool,
) -> Result<Consumed> {
    let claimed: Option<i32> = sqlx::query_scalar(
        "INSERT INTO billing.quota_grants (tenant_id, idempotency_key, metric, cycle_start, requested, granted) \
         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING 1",
    )
    .bind(tenant_id)
    .bind(key)
    .bind(metric.as_str())
    .bind(cycle_start)
    .bind(amount)
    .fetch_optional(&mut *conn)
    .await?;
    if claimed.is_none() {
        let (m, cs, granted, released): (String, DateTime<Utc>, i64, i64) = sqlx::query_as(
            "SELECT metric, cycle_start, granted, released FROM billing.quota_grants \
             WHERE tenant_id = $1 AND idempotency_key = $2",
        )
        .bind(tenant_id)
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
        let used = counter(conn, tenant_id, &m, cs).await?;
        return Ok(Consumed::Replayed {
            metric: m,
            cycle_start: cs,
            granted: granted - released,
            used,
        });
    }
    sqlx::query(
        "INSERT INTO billing.usage_counters (tenant_id, metric, cycle_start) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(metric.as_str())
    .bind(cycle_start)
    .execute(&mut *conn)
    .await?;
    let used: i64 = sqlx::query_scalar(
        "SELECT used FROM billing.usage_counters WHERE tenant_id = $1 AND metric = $2 AND cycle_start = $3 FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(metric.as_str())
    .bind(cycle_start)
    .fetch_one(&mut *conn)
    .await?;
    let left = limit.map_or(i64::MAX, |l| (l - used).max(0));
    let granted = if amount <= left {
        amount
    } else if allow_partial && left > 0 {
        left
    } else {
        return Ok(Consumed::Refused { used });
    };
    let used: i64 = sqlx::query_scalar(
        "UPDATE billing.usage_counters SET used = used + $4, updated_at = now() \
         WHERE tenant_id = $1 AND metric = $2 AND cycle_start = $3 RETURNING used",
    )
    .bind(tenant_id)
    .bind(metric.as_str())
    .bind(cycle_start)
    .bind(granted)
    .fetch_one(&mut *conn)
    .await?;
    if granted != amount {
        sqlx::query(
            "UPDATE billing.quota_grants SET granted = $3 WHERE tenant_id = $1 AND idempotency_key = $2",
        )
        .bind(tenant_id)
        .bind(key)
        .bind(granted)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Consumed::Granted { granted, used })
}

async fn counter(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    metric: &str,
    cycle_start: DateTime<Utc>,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT used FROM billing.usage_counters WHERE tenant_id = $1 AND metric = $2 AND cycle_start = $3",
    )
    .bind(tenant_id)
    .bind(metric)
    .bind(cycle_start)
    .fetch_optional(conn)
    .await?
    .unwrap_or(0))
}

/// Gives back up to `amount` of a grant. None: no grant under that key.
pub async fn release(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    key: &str,
    amount: i64,
) -> Result<Option<(i64, i64)>> {
    let grant: Option<(String, DateTime<Utc>, i64, i64)> = sqlx::query_as(
        "SELECT metric, cycle_start, granted, released FROM billing.quota_grants \
         WHERE tenant_id = $1 AND idempotency_key = $2 FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((metric, cycle_start, granted, released)) = grant else {
        return Ok(None);
    };
    let give = amount.min(granted - released).max(0);
    if give > 0 {
        sqlx::query(
            "UPDATE billing.quota_grants SET released = released + $3 WHERE tenant_id = $1 AND idempotency_key = $2",
        )
        .bind(tenant_id)
        .bind(key)
        .bind(give)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE billing.usage_counters SET used = GREATEST(used - $4, 0), updated_at = now() \
             WHERE tenant_id = $1 AND metric = $2 AND cycle_start = $3",
        )
        .bind(tenant_id)
        .bind(&metric)
        .bind(cycle_start)
        .bind(give)
        .execute(&mut *conn)
        .await?;
    }
    let used = counter(conn, tenant_id, &metric, cycle_start).await?;
    Ok(Some((give, used)))
}

/// (metric, used) of every counter of the cycle.
pub async fn cycle_usage(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cycle_start: DateTime<Utc>,
) -> Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT metric, used FROM billing.usage_counters WHERE tenant_id = $1 AND cycle_start = $2",
    )
    .bind(tenant_id)
    .bind(cycle_start)
    .fetch_all(conn)
    .await
}

/// (metric, value, reported_at) of every gauge.
pub async fn gauges(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<(String, i64, DateTime<Utc>)>> {
    sqlx::query_as(
        "SELECT metric, value, reported_at FROM billing.usage_gauges WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}

pub async fn set_gauge(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    metric: Limit,
    value: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO billing.usage_gauges (tenant_id, metric, value, reported_at) VALUES ($1, $2, $3, now()) \
         ON CONFLICT (tenant_id, metric) DO UPDATE SET value = EXCLUDED.value, reported_at = now()",
    )
    .bind(tenant_id)
    .bind(metric.as_str())
    .bind(value)
    .execute(conn)
    .await?;
    Ok(())
}

/// Platform admin (system transaction): subscriptions across tenants, by tenant id, with a
/// status filter evaluated like `Subscription::status`.
pub async fn all_subscriptions_page(
    conn: &mut PgConnection,
    after: Option<Uuid>,
    limit: i64,
    status: Option<&str>,
    plan: Option<&str>,
    grace_days: i32,
) -> Result<Vec<Subscription>> {
    let rows: Vec<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUB_COLUMNS} FROM billing.subscriptions \
         WHERE ($1::uuid IS NULL OR tenant_id > $1) AND ($3::text IS NULL OR plan_code = $3) \
         AND ($4::text IS NULL OR $4 = CASE WHEN suspended_at IS NOT NULL THEN 'suspended' \
              WHEN now() < current_period_end THEN base_status \
              WHEN now() < current_period_end + make_interval(days => $5) THEN 'grace' \
              ELSE 'expired' END) \
         ORDER BY tenant_id LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .bind(plan)
    .bind(status)
    .bind(grace_days)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(SubscriptionRow::into_domain).collect()
}

/// Platform admin (system transaction): counters of many tenants.
pub async fn counters_of(
    conn: &mut PgConnection,
    tenants: &[Uuid],
) -> Result<Vec<(Uuid, String, DateTime<Utc>, i64)>> {
    sqlx::query_as(
        "SELECT tenant_id, metric, cycle_start, used FROM billing.usage_counters WHERE tenant_id = ANY($1)",
    )
    .bind(tenants)
    .fetch_all(conn)
    .await
}

/// Platform admin (system transaction): gauges of many tenants.
pub async fn gauges_of(
    conn: &mut PgConnection,
    tenants: &[Uuid],
) -> Result<Vec<(Uuid, String, i64, DateTime<Utc>)>> {
    sqlx::query_as(
        "SELECT tenant_id, metric, value, reported_at FROM billing.usage_gauges WHERE tenant_id = ANY($1)",
    )
    .bind(tenants)
    .fetch_all(conn)
    .await
}

#[derive(Debug, Clone)]
pub struct NewAdminAudit<'a> {
    pub tenant_id: Option<Uuid>,
    pub actor_user_id: Uuid,
    pub action: &'a str,
    pub reason: &'a str,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub request_id: Option<&'a str>,
}

pub async fn insert_admin_audit(conn: &mut PgConnection, a: NewAdminAudit<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO billing.admin_audit (id, tenant_id, actor_user_id, action, reason, before, after, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::now_v7())
    .bind(a.tenant_id)
    .bind(a.actor_user_id)
    .bind(a.action)
    .bind(a.reason)
    .bind(a.before)
    .bind(a.after)
    .bind(a.request_id)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct AdminAuditRow {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub actor_user_id: Uuid,
    pub action: String,
    pub reason: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

pub async fn admin_audit_page(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AdminAuditRow>> {
    sqlx::query_as(
        "SELECT id, tenant_id, actor_user_id, action, reason, before, after, request_id, occurred_at \
         FROM billing.admin_audit WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind(tenant_id)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await
}
