//! The BillingService gRPC implementation: maps protobuf to domain types, runs each change in
//! one transaction with its history, audit and outbox rows, and talks to the payment provider
//! outside of any transaction. Permission checks happen before this code, in the auth layer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cos_auth::{Principal, principal_of, service_principal_of};
use cos_crypto::KeyRing;
use cos_db::Db;
use cos_entitlements::convert::{limits_to_proto, proto_slot, setting, ts};
use cos_entitlements::{Entitlements, Limit, SubscriptionStatus, plan_limit_error};
use cos_errors::{ErrorCode, FieldViolation, ServiceError};
use cos_integrations::{ConfigUpdate, Scope, providers::STRIPE};
use cos_proto::billing::v1 as pb;
use cos_proto::billing::v1::billing_service_server::BillingService;
use sqlx::PgConnection;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::cache::EntitlementCache;
use crate::config::BillingConfig;
use crate::domain::{
    CHANNELS, CheckoutRecord, Override, Plan, Refusal, Subscription, input, verify_paid,
};
use crate::error::{Error, Result};
use crate::events;
use crate::payments::{INTEGRATIONS, NewCheckout, PaymentProvider, ProviderError, STRIPE_PROVIDER};
use crate::store::{self, CheckoutRow, Consumed, NewAdminAudit, NewHistory};

/// Everything the handlers need.
pub struct BillingApi {
    pub(crate) db: Db,
    pub(crate) keyring: KeyRing,
    pub(crate) config: BillingConfig,
    pub(crate) payments: Arc<dyn PaymentProvider>,
    pub(crate) cache: EntitlementCache,
}

const MAX_PAGE: i32 = 200;
const MAX_AMOUNT: i64 = 1_000_000_000_000;

fn request_id<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn parse_uuid(field: &str, raw: &str) -> Result<Uuid> {
    if raw.trim().is_empty() {
        return Err(ServiceError::invalid(field, "is required").into());
    }
    Uuid::parse_str(raw.trim())
        .map_err(|_| ServiceError::invalid(field, "is not a valid id").into())
}

fn page_size(raw: i32) -> Result<i64> {
    match raw {
        0 => Ok(50),
        1..=MAX_PAGE => Ok(i64::from(raw)),
        _ => Err(
            ServiceError::invalid("page_size", format!("must be between 1 and {MAX_PAGE}")).into(),
        ),
    }
}

fn page_token(raw: &str) -> Result<Option<Uuid>> {
    if raw.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(raw)
        .map(Some)
        .map_err(|_| ServiceError::invalid("page_token", "is not a token this API issued").into())
}

fn violation(field: &str, message: impl Into<String>) -> FieldViolation {
    FieldViolation {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn collect<T>(
    field: &str,
    r: std::result::Result<T, String>,
    errs: &mut Vec<FieldViolation>,
) -> Option<T> {
    r.map_err(|m| errs.push(violation(field, m))).ok()
}

fn plan_pb(p: &Plan) -> pb::Plan {
    pb::Plan {
        code: p.code.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        trial: p.trial,
        purchasable: p.purchasable,
        prices: p
            .prices
            .iter()
            .map(|(c, a)| pb::PlanPrice {
                currency: c.clone(),
                monthly_amount_minor: *a,
            })
            .collect(),
        entitlements: Some(limits_to_proto(&p.limits, &p.channels, p.automation)),
        sort_order: p.sort_order,
        version: p.version,
        updated_at: Some(ts(p.updated_at)),
    }
}

fn checkout_pb(c: &CheckoutRow) -> pb::CheckoutSession {
    pb::CheckoutSession {
        session_id: c.id.clone(),
        url: c.url.clone(),
        plan: c.plan_code.clone(),
        months: c.months,
        amount_minor: c.amount_minor,
        currency: c.currency.clone(),
        status: c.status.clone(),
        created_at: Some(ts(c.created_at)),
        expires_at: c.expires_at.map(ts),
        completed_at: c.completed_at.map(ts),
    }
}

fn history_pb(h: store::HistoryRow) -> pb::SubscriptionHistoryEntry {
    pb::SubscriptionHistoryEntry {
        id: h.id.to_string(),
        action: h.action,
        plan: h.plan_code,
        previous_plan: h.previous_plan_code.unwrap_or_default(),
        period_start: Some(ts(h.period_start)),
        period_end: Some(ts(h.period_end)),
        previous_period_end: h.previous_period_end.map(ts),
        actor_user_id: h.actor_user_id.map(|u| u.to_string()).unwrap_or_default(),
        reason: h.reason,
        checkout_session_id: h.checkout_session_id.unwrap_or_default(),
        occurred_at: Some(ts(h.occurred_at)),
    }
}

fn sub_json(s: &Subscription) -> serde_json::Value {
    serde_json::json!({
        "plan": s.plan_code,
        "base_status": s.base.as_str(),
        "period_start": s.period_start,
        "period_end": s.period_end,
        "comped": s.comped,
        "suspended_at": s.suspended_at,
        "suspended_reason": s.suspended_reason,
        "version": s.version,
    })
}

/// Usage of one tenant: the cycle's counters and the gauges, against the plan.
fn usage_pb(
    sub: &Subscription,
    plan: &Plan,
    now: DateTime<Utc>,
    counters: &HashMap<String, i64>,
    gauges: &HashMap<String, (i64, DateTime<Utc>)>,
) -> pb::Usage {
    let (start, end) = sub.cycle(now);
    let items = Limit::ALL
        .into_iter()
        .map(|l| {
            let (used, reported_at) = if l.per_cycle() {
                (counters.get(l.as_str()).copied().unwrap_or(0), None)
            } else {
                gauges
                    .get(l.as_str())
                    .map_or((0, None), |(v, at)| (*v, Some(ts(*at))))
            };
            pb::UsageItem {
                limit: l.as_str().to_owned(),
                allowed: Some(setting(plan.limit(l))),
                used,
                per_cycle: l.per_cycle(),
                reported_at,
            }
        })
        .collect();
    pb::Usage {
        tenant_id: sub.tenant_id.to_string(),
        cycle_start: Some(ts(start)),
        cycle_end: Some(ts(end)),
        items,
    }
}

fn refusal_error(r: Refusal, session_id: &str, tenant_id: Uuid) -> ServiceError {
    match r {
        Refusal::Unpaid => ServiceError::failed_precondition(
            "this checkout session is not paid: finish the payment on the Stripe page, then verify again; nothing was changed",
        )
        .with_metadata("reason", "unpaid"),
        Refusal::Expired => ServiceError::failed_precondition(
            "this checkout session expired without payment; start a new checkout; nothing was changed",
        )
        .with_metadata("reason", "expired"),
        Refusal::ForeignTenant => {
            tracing::error!(%tenant_id, session_id, "checkout session metadata names another tenant");
            ServiceError::permission_denied(
                "this checkout session belongs to another workspace; nothing was changed",
            )
            .with_metadata("reason", "foreign_tenant")
        }
        Refusal::AmountMismatch {
            expected,
            expected_currency,
            actual,
            actual_currency,
        } => {
            metrics::counter!("cos_billing_checkout_amount_mismatch_total").increment(1);
            tracing::error!(%tenant_id, session_id, expected, %expected_currency, ?actual, ?actual_currency,
                "checkout amount does not match the quote; not applied (needs a human)");
            ServiceError::failed_precondition(format!(
                "the amount paid ({} {}) does not match the quoted {expected} {expected_currency}; the subscription was not changed — contact support",
                actual.map_or_else(|| "none".to_owned(), |a| a.to_string()),
                actual_currency.as_deref().unwrap_or("?"),
            ))
            .with_metadata("reason", "amount_mismatch")
            .with_metadata("expected_amount_minor", expected)
            .with_metadata("expected_currency", expected_currency)
        }
        Refusal::Mismatch(what) => {
            tracing::error!(%tenant_id, session_id, what, "checkout session does not match its record");
            ServiceError::failed_precondition(format!(
                "the checkout session's {what} does not match what was ordered; nothing was changed"
            ))
            .with_metadata("reason", "mismatch")
        }
    }
}

fn provider_status(e: ProviderError) -> ServiceError {
    match e {
        ProviderError::NotConfigured => ServiceError::new(
            ErrorCode::Unavailable,
            "payments are not configured yet: a platform administrator must set the Stripe keys (PUT /v1/admin/integrations/stripe)",
        ),
        ProviderError::NotFound => ServiceError::not_found("checkout session at Stripe"),
        ProviderError::Rejected(m) | ProviderError::Unavailable(m) => {
            tracing::warn!(error = %m, "payment provider call failed");
            ServiceError::new(
                ErrorCode::Unavailable,
                "the payment provider is unavailable right now; nothing was changed, retry shortly",
            )
        }
    }
}

impl BillingApi {
    fn grace(&self) -> chrono::Duration {
        self.config.grace()
    }

    fn subscription_pb(
        &self,
        s: &Subscription,
        plan_name: &str,
        now: DateTime<Utc>,
    ) -> pb::Subscription {
        let status = s.status(now, self.grace());
        pb::Subscription {
            tenant_id: s.tenant_id.to_string(),
            plan: s.plan_code.clone(),
            plan_name: plan_name.to_owned(),
            status: status.as_str().to_owned(),
            current_period_start: Some(ts(s.period_start)),
            current_period_end: Some(ts(s.period_end)),
            grace_ends_at: Some(ts(s.grace_end(self.grace()))),
            comped: s.comped,
            suspended_at: s.suspended_at.map(ts),
            suspended_reason: s.suspended_reason.clone().unwrap_or_default(),
            read_only: status == SubscriptionStatus::Expired,
            version: s.version,
            updated_at: Some(ts(s.updated_at)),
        }
    }

    fn entitlements(&self, s: &Subscription, plan: &Plan, now: DateTime<Utc>) -> Entitlements {
        Entitlements {
            tenant_id: s.tenant_id,
            plan: plan.code.clone(),
            status: s.status(now, self.grace()),
            period_end: Some(s.period_end),
            grace_end: Some(s.grace_end(self.grace())),
            limits: plan.limits.clone(),
            channels: plan.channels.clone(),
            automation: plan.automation,
        }
    }

    /// The tenant's subscription; a tenant billing has never seen starts its trial now.
    async fn ensure_subscription(
        &self,
        conn: &mut PgConnection,
        tenant_id: Uuid,
        for_update: bool,
    ) -> Result<Subscription> {
        if let Some(s) = store::subscription(conn, tenant_id, for_update).await? {
            return Ok(s);
        }
        let trial = store::trial_plan_code(conn)
            .await?
            .ok_or_else(|| Error::Internal("no trial plan in billing.plans".into()))?;
        let now = Utc::now();
        let s = Subscription::trial(tenant_id, &trial, now, self.config.trial_days);
        if store::insert_subscription_if_absent(conn, &s).await? {
            store::insert_history(
                conn,
                NewHistory {
                    tenant_id,
                    action: "created",
                    plan_code: &trial,
                    previous_plan_code: None,
                    period_start: s.period_start,
                    period_end: s.period_end,
                    previous_period_end: None,
                    actor_user_id: None,
                    reason: "trial started",
                    checkout_session_id: None,
                    request_id: None,
                },
            )
            .await?;
            events::subscription_changed(
                conn,
                tenant_id,
                "created",
                &trial,
                "",
                SubscriptionStatus::Trialing.as_str(),
                s.period_end,
            )
            .await?;
            tracing::info!(%tenant_id, plan = %trial, period_end = %s.period_end, "trial started");
        }
        store::subscription(conn, tenant_id, for_update)
            .await?
            .ok_or_else(|| Error::Internal("subscription vanished".into()))
    }

    async fn plan_of(conn: &mut PgConnection, code: &str) -> Result<Plan> {
        store::plan(conn, code)
            .await?
            .ok_or_else(|| Error::Internal(format!("subscription names unknown plan {code:?}")))
    }

    /// The tenant an internal call acts for: a service credential's (signed) tenant, or the
    /// caller's own tenant for a user token — never another one.
    fn acting_tenant<T>(req: &Request<T>, requested: &str) -> Result<Uuid> {
        let requested = if requested.trim().is_empty() {
            None
        } else {
            Some(parse_uuid("tenant_id", requested)?)
        };
        if let Some(sp) = service_principal_of(req) {
            if requested.is_some_and(|t| t != sp.tenant_id) {
                return Err(ServiceError::permission_denied(
                    "the service credential was issued for another tenant",
                )
                .into());
            }
            return Ok(sp.tenant_id);
        }
        let p = principal_of(req)?;
        if requested.is_some_and(|t| t != p.tenant_id) {
            return Err(ServiceError::permission_denied(
                "an access token may only act for its own tenant",
            )
            .into());
        }
        Ok(p.tenant_id)
    }

    async fn entitlements_for(&self, tenant_id: Uuid) -> Result<pb::Entitlements> {
        let mut tx = self.db.tenant_tx(tenant_id).await?;
        let s = self.ensure_subscription(&mut tx, tenant_id, false).await?;
        let plan = Self::plan_of(&mut tx, &s.plan_code).await?;
        tx.commit().await?;
        Ok(self
            .entitlements(&s, &plan, Utc::now())
            .to_proto(&plan.name))
    }

    async fn list_plans(&self) -> Result<pb::ListPlansResponse> {
        let mut tx = self.db.app_tx().await?;
        let plans = store::plans(&mut tx).await?;
        tx.commit().await?;
        Ok(pb::ListPlansResponse {
            plans: plans.iter().map(plan_pb).collect(),
        })
    }

    async fn get_subscription(&self, p: &Principal) -> Result<pb::Subscription> {
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let s = self
            .ensure_subscription(&mut tx, p.tenant_id, false)
            .await?;
        let plan = Self::plan_of(&mut tx, &s.plan_code).await?;
        tx.commit().await?;
        Ok(self.subscription_pb(&s, &plan.name, Utc::now()))
    }

    async fn list_history(
        &self,
        p: &Principal,
        r: &pb::ListSubscriptionHistoryRequest,
    ) -> Result<pb::ListSubscriptionHistoryResponse> {
        let limit = page_size(r.page_size)?;
        let before = page_token(&r.page_token)?;
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        self.ensure_subscription(&mut tx, p.tenant_id, false)
            .await?;
        let rows = store::history_page(&mut tx, p.tenant_id, before, limit + 1).await?;
        tx.commit().await?;
        let more = rows.len() as i64 > limit;
        let rows: Vec<_> = rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(50))
            .collect();
        let next = if more {
            rows.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListSubscriptionHistoryResponse {
            entries: rows.into_iter().map(history_pb).collect(),
            next_page_token: next,
        })
    }

    async fn get_usage(&self, p: &Principal) -> Result<pb::Usage> {
        let now = Utc::now();
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let s = self
            .ensure_subscription(&mut tx, p.tenant_id, false)
            .await?;
        let plan = Self::plan_of(&mut tx, &s.plan_code).await?;
        let (cycle_start, _) = s.cycle(now);
        let counters: HashMap<String, i64> = store::cycle_usage(&mut tx, p.tenant_id, cycle_start)
            .await?
            .into_iter()
            .collect();
        let gauges: HashMap<String, (i64, DateTime<Utc>)> = store::gauges(&mut tx, p.tenant_id)
            .await?
            .into_iter()
            .map(|(m, v, at)| (m, (v, at)))
            .collect();
        tx.commit().await?;
        Ok(usage_pb(&s, &plan, now, &counters, &gauges))
    }

    async fn create_checkout(
        &self,
        p: &Principal,
        r: pb::CreateCheckoutRequest,
    ) -> Result<pb::CheckoutSession> {
        let mut errs = Vec::new();
        let plan_code = collect("plan", input::plan_code(&r.plan), &mut errs);
        let months = collect("months", input::months(r.months), &mut errs);
        let currency = collect("currency", input::currency(&r.currency), &mut errs);
        let (Some(plan_code), Some(months), Some(currency)) = (plan_code, months, currency) else {
            return Err(ServiceError::invalid_fields(errs).into());
        };
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        self.ensure_subscription(&mut tx, p.tenant_id, false)
            .await?;
        let plan = store::plan(&mut tx, &plan_code).await?.ok_or_else(|| {
            ServiceError::invalid(
                "plan",
                format!("{plan_code} is not a plan (see GET /v1/billing/plans)"),
            )
        })?;
        tx.commit().await?;
        let (unit, total) = plan
            .quote(&currency, months)
            .map_err(|(field, m)| ServiceError::invalid(field, m))?;
        let now = Utc::now();
        let expiry = chrono::Duration::from_std(self.config.checkout_expiry)
            .unwrap_or(chrono::Duration::hours(1));
        let new = NewCheckout {
            tenant_id: p.tenant_id,
            plan_code: plan.code.clone(),
            plan_name: plan.name.clone(),
            months,
            currency: currency.clone(),
            unit_amount_minor: unit,
            amount_minor: total,
            success_url: self.config.success_url(),
            cancel_url: self.config.cancel_url(),
            expires_at: (now + expiry).timestamp(),
            idempotency_key: format!("cos-checkout-{}", Uuid::now_v7()),
        };
        let session = self
            .payments
            .create_checkout(&new)
            .await
            .map_err(provider_status)?;
        let url = session.url.clone().unwrap_or_default();
        if input::session_id(&session.id).is_err() || url.is_empty() {
            return Err(Error::Internal(
                "payment provider returned a session without a usable id or URL".into(),
            ));
        }
        if session.amount_total != Some(total) {
            return Err(Error::Internal(format!(
                "payment provider quoted {:?} instead of {total}",
                session.amount_total
            )));
        }
        let row = CheckoutRow {
            id: session.id.clone(),
            tenant_id: p.tenant_id,
            plan_code: plan.code.clone(),
            months,
            currency,
            unit_amount_minor: unit,
            amount_minor: total,
            url,
            status: "open".into(),
            created_by: p.user_id,
            created_at: now,
            expires_at: DateTime::from_timestamp(session.expires_at, 0),
            completed_at: None,
        };
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        store::insert_checkout(&mut tx, &row).await?;
        tx.commit().await?;
        tracing::info!(tenant_id = %p.tenant_id, session_id = %row.id, plan = %row.plan_code,
            months, amount_minor = total, currency = %row.currency, "checkout session created");
        metrics::counter!("cos_billing_checkouts_created_total").increment(1);
        Ok(checkout_pb(&row))
    }

    async fn get_checkout(&self, p: &Principal, id: &str) -> Result<pb::CheckoutSession> {
        let id = input::session_id(id).map_err(|m| ServiceError::invalid("session_id", m))?;
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let row = store::checkout(&mut tx, &id, false).await?;
        tx.commit().await?;
        let row =
            row.ok_or_else(|| ServiceError::not_found("checkout session in this workspace"))?;
        Ok(checkout_pb(&row))
    }

    async fn list_checkouts(
        &self,
        p: &Principal,
        r: &pb::ListCheckoutsRequest,
    ) -> Result<pb::ListCheckoutsResponse> {
        let limit = page_size(r.page_size)?;
        let status = match r.status.as_str() {
            "" => None,
            s @ ("open" | "completed") => Some(s),
            _ => {
                return Err(ServiceError::invalid("status", "must be open or completed").into());
            }
        };
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let rows = store::recent_checkouts(&mut tx, p.tenant_id, status, limit).await?;
        tx.commit().await?;
        Ok(pb::ListCheckoutsResponse {
            checkouts: rows.iter().map(checkout_pb).collect(),
        })
    }

    async fn verify_checkout(
        &self,
        p: &Principal,
        raw_id: &str,
        rid: Option<&str>,
    ) -> Result<pb::VerifyCheckoutResponse> {
        let id = input::session_id(raw_id).map_err(|m| ServiceError::invalid("session_id", m))?;
        let not_found = || {
            ServiceError::not_found("checkout session in this workspace").with_violation(
                "session_id",
                "no checkout session with this id was started in this workspace",
            )
        };
        // 1. Ours, in this tenant (row-level security hides every other tenant's sessions).
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let row = store::checkout(&mut tx, &id, false)
            .await?
            .ok_or_else(not_found)?;
        if row.status == "completed" {
            let s = self
                .ensure_subscription(&mut tx, p.tenant_id, false)
                .await?;
            let plan = Self::plan_of(&mut tx, &s.plan_code).await?;
            tx.commit().await?;
            return Ok(pb::VerifyCheckoutResponse {
                subscription: Some(self.subscription_pb(&s, &plan.name, Utc::now())),
                checkout: Some(checkout_pb(&row)),
                already_applied: true,
            });
        }
        tx.commit().await?;

        // 2. What Stripe says, outside any transaction.
        let state = self
            .payments
            .retrieve_checkout(&id)
            .await
            .map_err(|e| match e {
                ProviderError::NotFound => not_found(),
                other => provider_status(other),
            })?;
        let record = CheckoutRecord {
            id: row.id.clone(),
            tenant_id: row.tenant_id,
            plan_code: row.plan_code.clone(),
            months: row.months,
            currency: row.currency.clone(),
            amount_minor: row.amount_minor,
        };
        if let Err(refusal) = verify_paid(&record, &state) {
            metrics::counter!("cos_billing_checkout_refused_total").increment(1);
            return Err(refusal_error(refusal, &id, p.tenant_id).into());
        }

        // 3. Apply once: the session row is locked, so a concurrent verify waits here and then
        // finds it completed.
        let now = Utc::now();
        let mut tx = self.db.tenant_tx(p.tenant_id).await?;
        let row = store::checkout(&mut tx, &id, true)
            .await?
            .ok_or_else(not_found)?;
        if row.status == "completed" {
            let s = self
                .ensure_subscription(&mut tx, p.tenant_id, false)
                .await?;
            let plan = Self::plan_of(&mut tx, &s.plan_code).await?;
            tx.commit().await?;
            return Ok(pb::VerifyCheckoutResponse {
                subscription: Some(self.subscription_pb(&s, &plan.name, now)),
                checkout: Some(checkout_pb(&row)),
                already_applied: true,
            });
        }
        let before = self.ensure_subscription(&mut tx, p.tenant_id, true).await?;
        let old_plan = Self::plan_of(&mut tx, &before.plan_code).await?;
        let new_plan = Self::plan_of(&mut tx, &row.plan_code).await?;
        let months = u32::try_from(row.months).unwrap_or(1);
        let purchase = before.purchase(
            &row.plan_code,
            months,
            now,
            old_plan.monthly_price(&row.currency),
            Some(row.unit_amount_minor),
        );
        let next = Subscription {
            plan_code: row.plan_code.clone(),
            base: crate::domain::BaseStatus::Active,
            period_start: purchase.period_start,
            period_end: purchase.period_end,
            comped: false,
            ..before.clone()
        };
        let saved = store::save_subscription(&mut tx, &next)
            .await?
            .ok_or_else(|| Error::Internal("subscription changed under a row lock".into()))?;
        store::complete_checkout(&mut tx, &id, saved.period_start, saved.period_end).await?;
        store::insert_history(
            &mut tx,
            NewHistory {
                tenant_id: p.tenant_id,
                action: purchase.action.as_str(),
                plan_code: &saved.plan_code,
                previous_plan_code: Some(&before.plan_code),
                period_start: saved.period_start,
                period_end: saved.period_end,
                previous_period_end: Some(before.period_end),
                actor_user_id: Some(p.user_id),
                reason: &format!(
                    "paid {} {} for {} month(s) via Stripe Checkout",
                    row.amount_minor, row.currency, row.months
                ),
                checkout_session_id: Some(&id),
                request_id: rid,
            },
        )
        .await?;
        let status = saved.status(now, self.grace());
        events::subscription_changed(
            &mut tx,
            p.tenant_id,
            purchase.action.as_str(),
            &saved.plan_code,
            &before.plan_code,
            status.as_str(),
            saved.period_end,
        )
        .await?;
        let row = store::checkout(&mut tx, &id, false)
            .await?
            .ok_or_else(not_found)?;
        tx.commit().await?;
        self.cache.invalidate(p.tenant_id).await;
        metrics::counter!("cos_billing_checkouts_applied_total").increment(1);
        tracing::info!(tenant_id = %p.tenant_id, session_id = %id, action = purchase.action.as_str(),
            plan = %saved.plan_code, period_end = %saved.period_end, "checkout applied");
        Ok(pb::VerifyCheckoutResponse {
            subscription: Some(self.subscription_pb(&saved, &new_plan.name, now)),
            checkout: Some(checkout_pb(&row)),
            already_applied: false,
        })
    }

    async fn consume_quota(
        &self,
        tenant_id: Uuid,
        r: pb::ConsumeQuotaRequest,
    ) -> Result<pb::ConsumeQuotaResponse> {
        let mut errs = Vec::new();
        let quota = collect("quota", input::quota(&r.quota), &mut errs);
        let key = collect(
            "idempotency_key",
            input::idempotency_key(&r.idempotency_key),
            &mut errs,
        );
        if !(1..=MAX_AMOUNT).contains(&r.amount) {
            errs.push(violation(
                "amount",
                format!("must be between 1 and {MAX_AMOUNT}"),
            ));
        }
        let (Some(quota), Some(key), true) = (quota, key, errs.is_empty()) else {
            return Err(ServiceError::invalid_fields(errs).into());
        };
        let now = Utc::now();
        let mut tx = self.db.tenant_tx(tenant_id).await?;
        let s = self.ensure_subscription(&mut tx, tenant_id, false).await?;
        let plan = Self::plan_of(&mut tx, &s.plan_code).await?;
        let ent = self.entitlements(&s, &plan, now);
        if let Err(e) = ent.ensure_can_send() {
            tx.commit().await?;
            return Err(e.into());
        }
        let limit = plan.limit(quota);
        let (cycle_start, cycle_end) = s.cycle(now);
        let outcome = store::consume(
            &mut tx,
            tenant_id,
            quota,
            cycle_start,
            &key,
            r.amount,
            limit,
            r.allow_partial,
        )
        .await?;
        let resp = |granted, used, cs: DateTime<Utc>, replayed| {
            let (start, end) = if cs == cycle_start {
                (cycle_start, cycle_end)
            } else {
                (cs, crate::domain::add_months(cs, 1))
            };
            pb::ConsumeQuotaResponse {
                granted,
                used,
                limit: Some(setting(limit)),
                cycle_start: Some(ts(start)),
                cycle_end: Some(ts(end)),
                replayed,
            }
        };
        match outcome {
            Consumed::Granted { granted, used } => {
                tx.commit().await?;
                metrics::counter!("cos_billing_quota_granted_total", "quota" => quota.as_str())
                    .increment(u64::try_from(granted).unwrap_or(0));
                Ok(resp(granted, used, cycle_start, false))
            }
            Consumed::Replayed {
                metric,
                cycle_start: cs,
                granted,
                used,
            } => {
                tx.rollback().await?;
                if metric != quota.as_str() {
                    return Err(ServiceError::invalid(
                        "idempotency_key",
                        format!("was already used for {metric}"),
                    )
                    .into());
                }
                Ok(resp(granted, used, cs, true))
            }
            Consumed::Refused { used } => {
                tx.rollback().await?;
                metrics::counter!("cos_billing_quota_refused_total", "quota" => quota.as_str())
                    .increment(1);
                Err(plan_limit_error(&plan.code, quota, limit.unwrap_or(0), used, r.amount).into())
            }
        }
    }

    async fn release_quota(
        &self,
        tenant_id: Uuid,
        r: pb::ReleaseQuotaRequest,
    ) -> Result<pb::ReleaseQuotaResponse> {
        let key = input::idempotency_key(&r.idempotency_key)
            .map_err(|m| ServiceError::invalid("idempotency_key", m))?;
        if !(1..=MAX_AMOUNT).contains(&r.amount) {
            return Err(ServiceError::invalid(
                "amount",
                format!("must be between 1 and {MAX_AMOUNT}"),
            )
            .into());
        }
        let mut tx = self.db.tenant_tx(tenant_id).await?;
        let Some((released, used)) = store::release(&mut tx, tenant_id, &key, r.amount).await?
        else {
            return Err(ServiceError::not_found("quota grant with this idempotency key").into());
        };
        tx.commit().await?;
        Ok(pb::ReleaseQuotaResponse { released, used })
    }

    async fn report_usage(
        &self,
        tenant_id: Uuid,
        r: pb::ReportUsageRequest,
    ) -> Result<pb::ReportUsageResponse> {
        let metric = input::gauge(&r.metric).map_err(|m| ServiceError::invalid("metric", m))?;
        if r.value < 0 {
            return Err(ServiceError::invalid("value", "must not be negative").into());
        }
        let mut tx = self.db.tenant_tx(tenant_id).await?;
        store::set_gauge(&mut tx, tenant_id, metric, r.value).await?;
        tx.commit().await?;
        Ok(pb::ReportUsageResponse {})
    }

    async fn admin_usage(
        conn: &mut PgConnection,
        subs: &[Subscription],
        now: DateTime<Utc>,
    ) -> Result<(
        HashMap<Uuid, HashMap<String, i64>>,
        HashMap<Uuid, HashMap<String, (i64, DateTime<Utc>)>>,
    )> {
        let ids: Vec<Uuid> = subs.iter().map(|s| s.tenant_id).collect();
        let cycles: HashMap<Uuid, DateTime<Utc>> =
            subs.iter().map(|s| (s.tenant_id, s.cycle(now).0)).collect();
        let mut counters: HashMap<Uuid, HashMap<String, i64>> = HashMap::new();
        for (t, m, cs, used) in store::counters_of(conn, &ids).await? {
            if cycles.get(&t) == Some(&cs) {
                counters.entry(t).or_default().insert(m, used);
            }
        }
        let mut gauges: HashMap<Uuid, HashMap<String, (i64, DateTime<Utc>)>> = HashMap::new();
        for (t, m, v, at) in store::gauges_of(conn, &ids).await? {
            gauges.entry(t).or_default().insert(m, (v, at));
        }
        Ok((counters, gauges))
    }

    async fn admin_list_tenants(
        &self,
        p: &Principal,
        r: &pb::AdminListTenantsRequest,
        rid: Option<&str>,
    ) -> Result<pb::AdminListTenantsResponse> {
        let limit = page_size(r.page_size)?;
        let after = page_token(&r.page_token)?;
        let status = if r.status.is_empty() {
            None
        } else {
            Some(
                r.status
                    .parse::<SubscriptionStatus>()
                    .map_err(|m| ServiceError::invalid("status", m))?,
            )
        };
        let plan = if r.plan.is_empty() {
            None
        } else {
            Some(input::plan_code(&r.plan).map_err(|m| ServiceError::invalid("plan", m))?)
        };
        let now = Utc::now();
        let mut tx = self
            .db
            .system_tx("platform admin: list tenant subscriptions")
            .await?;
        store::insert_admin_audit(
            &mut tx,
            NewAdminAudit {
                tenant_id: None,
                actor_user_id: p.user_id,
                action: "tenants.listed",
                reason: "",
                before: None,
                after: Some(
                    serde_json::json!({"after": after, "status": r.status, "plan": r.plan}),
                ),
                request_id: rid,
            },
        )
        .await?;
        let subs = store::all_subscriptions_page(
            &mut tx,
            after,
            limit + 1,
            status.map(SubscriptionStatus::as_str),
            plan.as_deref(),
            i32::try_from(self.config.grace_days).unwrap_or(7),
        )
        .await?;
        let more = subs.len() as i64 > limit;
        let subs: Vec<_> = subs
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(50))
            .collect();
        let plans: HashMap<String, Plan> = store::plans(&mut tx)
            .await?
            .into_iter()
            .map(|p| (p.code.clone(), p))
            .collect();
        let (counters, gauges) = Self::admin_usage(&mut tx, &subs, now).await?;
        tx.commit().await?;
        let empty_c = HashMap::new();
        let empty_g = HashMap::new();
        let mut tenants = Vec::with_capacity(subs.len());
        for s in &subs {
            let plan = plans
                .get(&s.plan_code)
                .ok_or_else(|| Error::Internal(format!("unknown plan {}", s.plan_code)))?;
            tenants.push(pb::AdminTenantBilling {
                subscription: Some(self.subscription_pb(s, &plan.name, now)),
                usage: Some(usage_pb(
                    s,
                    plan,
                    now,
                    counters.get(&s.tenant_id).unwrap_or(&empty_c),
                    gauges.get(&s.tenant_id).unwrap_or(&empty_g),
                )),
            });
        }
        let next = if more {
            subs.last()
                .map(|s| s.tenant_id.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::AdminListTenantsResponse {
            tenants,
            next_page_token: next,
        })
    }

    async fn admin_get_tenant(
        &self,
        p: &Principal,
        tenant: &str,
        rid: Option<&str>,
    ) -> Result<pb::AdminTenantBilling> {
        let tenant_id = parse_uuid("tenant_id", tenant)?;
        let now = Utc::now();
        let mut tx = self
            .db
            .system_tx("platform admin: read a tenant's billing")
            .await?;
        let s = store::subscription(&mut tx, tenant_id, false)
            .await?
            .ok_or_else(unknown_tenant)?;
        store::insert_admin_audit(
            &mut tx,
            NewAdminAudit {
                tenant_id: Some(tenant_id),
                actor_user_id: p.user_id,
                action: "tenant.billing_read",
                reason: "",
                before: None,
                after: None,
                request_id: rid,
            },
        )
        .await?;
        let plan = Self::plan_of(&mut tx, &s.plan_code).await?;
        let (counters, gauges) = Self::admin_usage(&mut tx, std::slice::from_ref(&s), now).await?;
        tx.commit().await?;
        Ok(pb::AdminTenantBilling {
            subscription: Some(self.subscription_pb(&s, &plan.name, now)),
            usage: Some(usage_pb(
                &s,
                &plan,
                now,
                counters.get(&tenant_id).unwrap_or(&HashMap::new()),
                gauges.get(&tenant_id).unwrap_or(&HashMap::new()),
            )),
        })
    }

    /// One administrative change of a tenant's subscription: locked, applied, recorded in the
    /// history, the admin audit and the outbox, in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn admin_change(
        &self,
        p: &Principal,
        tenant_id: Uuid,
        action: &str,
        reason: &str,
        expected_version: Option<i64>,
        rid: Option<&str>,
        change: impl FnOnce(&Subscription, DateTime<Utc>) -> Result<Subscription>,
    ) -> Result<pb::Subscription> {
        let now = Utc::now();
        let mut tx = self
            .db
            .system_tx("platform admin: change a tenant's subscription")
            .await?;
        let before = store::subscription(&mut tx, tenant_id, true)
            .await?
            .ok_or_else(unknown_tenant)?;
        if let Some(v) = expected_version
            && v != before.version
        {
            return Err(ServiceError::new(
                ErrorCode::VersionConflict,
                format!(
                    "the subscription was changed by someone else (expected version {v}, current version {})",
                    before.version
                ),
            )
            .with_metadata("current_version", before.version)
            .into());
        }
        let next = change(&before, now)?;
        let saved = store::save_subscription(&mut tx, &next)
            .await?
            .ok_or_else(|| Error::Internal("subscription changed under a row lock".into()))?;
        let plan = Self::plan_of(&mut tx, &saved.plan_code).await?;
        store::insert_history(
            &mut tx,
            NewHistory {
                tenant_id,
                action,
                plan_code: &saved.plan_code,
                previous_plan_code: Some(&before.plan_code),
                period_start: saved.period_start,
                period_end: saved.period_end,
                previous_period_end: Some(before.period_end),
                actor_user_id: Some(p.user_id),
                reason,
                checkout_session_id: None,
                request_id: rid,
            },
        )
        .await?;
        store::insert_admin_audit(
            &mut tx,
            NewAdminAudit {
                tenant_id: Some(tenant_id),
                actor_user_id: p.user_id,
                action,
                reason,
                before: Some(sub_json(&before)),
                after: Some(sub_json(&saved)),
                request_id: rid,
            },
        )
        .await?;
        let status = saved.status(now, self.grace());
        events::subscription_changed(
            &mut tx,
            tenant_id,
            action,
            &saved.plan_code,
            &before.plan_code,
            status.as_str(),
            saved.period_end,
        )
        .await?;
        tx.commit().await?;
        self.cache.invalidate(tenant_id).await;
        tracing::info!(%tenant_id, admin = %p.user_id, action, status = status.as_str(),
            plan = %saved.plan_code, period_end = %saved.period_end, "subscription changed by a platform administrator");
        Ok(self.subscription_pb(&saved, &plan.name, now))
    }

    async fn admin_override(
        &self,
        p: &Principal,
        r: pb::AdminOverrideSubscriptionRequest,
        rid: Option<&str>,
    ) -> Result<pb::Subscription> {
        let mut errs = Vec::new();
        let tenant_id = match parse_uuid("tenant_id", &r.tenant_id) {
            Ok(t) => Some(t),
            Err(Error::Client(e)) => {
                errs.extend(e.violations);
                None
            }
            Err(e) => return Err(e),
        };
        let reason = collect("reason", input::reason(&r.reason), &mut errs);
        let plan = if r.plan.is_empty() {
            None
        } else {
            collect("plan", input::plan_code(&r.plan), &mut errs)
        };
        let period_end = match &r.period_end {
            Some(t) => match cos_entitlements::convert::from_ts(t) {
                Some(t) => Some(t),
                None => {
                    errs.push(violation("period_end", "is not a valid timestamp"));
                    None
                }
            },
            None => None,
        };
        let (Some(tenant_id), Some(reason), true) = (tenant_id, reason, errs.is_empty()) else {
            return Err(ServiceError::invalid_fields(errs).into());
        };
        if let Some(code) = &plan {
            let mut tx = self.db.app_tx().await?;
            let exists = store::plan(&mut tx, code).await?.is_some();
            tx.commit().await?;
            if !exists {
                return Err(ServiceError::invalid("plan", format!("{code} is not a plan")).into());
            }
        }
        let o = Override {
            plan_code: plan,
            period_end,
            extend_days: (r.extend_days != 0).then_some(r.extend_days),
            comp: r.comp,
        };
        let action = if o.comp { "comped" } else { "overridden" };
        let expected = (r.expected_version > 0).then_some(r.expected_version);
        self.admin_change(
            p,
            tenant_id,
            action,
            &reason,
            expected,
            rid,
            |before, now| {
                before
                    .apply_override(&o, now)
                    .map_err(|(field, m)| ServiceError::invalid(field, m).into())
            },
        )
        .await
    }

    async fn admin_suspend(
        &self,
        p: &Principal,
        tenant: &str,
        reason: &str,
        suspend: bool,
        rid: Option<&str>,
    ) -> Result<pb::Subscription> {
        let mut errs = Vec::new();
        let tenant_id = match parse_uuid("tenant_id", tenant) {
            Ok(t) => Some(t),
            Err(Error::Client(e)) => {
                errs.extend(e.violations);
                None
            }
            Err(e) => return Err(e),
        };
        let reason = collect("reason", input::reason(reason), &mut errs);
        let (Some(tenant_id), Some(reason)) = (tenant_id, reason) else {
            return Err(ServiceError::invalid_fields(errs).into());
        };
        let action = if suspend { "suspended" } else { "unsuspended" };
        let why = reason.clone();
        self.admin_change(
            p,
            tenant_id,
            action,
            &reason,
            None,
            rid,
            move |before, now| match (suspend, before.suspended_at.is_some()) {
                (true, true) => {
                    Err(ServiceError::failed_precondition("the tenant is already suspended").into())
                }
                (false, false) => {
                    Err(ServiceError::failed_precondition("the tenant is not suspended").into())
                }
                (true, false) => Ok(Subscription {
                    suspended_at: Some(now),
                    suspended_reason: Some(why),
                    ..before.clone()
                }),
                (false, true) => Ok(Subscription {
                    suspended_at: None,
                    suspended_reason: None,
                    ..before.clone()
                }),
            },
        )
        .await
    }

    async fn admin_list_audit(
        &self,
        r: &pb::AdminListAuditRequest,
    ) -> Result<pb::AdminListAuditResponse> {
        let tenant_id = parse_uuid("tenant_id", &r.tenant_id)?;
        let limit = page_size(r.page_size)?;
        let before = page_token(&r.page_token)?;
        let mut tx = self
            .db
            .system_tx("platform admin: read billing audit")
            .await?;
        let rows = store::admin_audit_page(&mut tx, tenant_id, before, limit + 1).await?;
        tx.commit().await?;
        let more = rows.len() as i64 > limit;
        let rows: Vec<_> = rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(50))
            .collect();
        let next = if more {
            rows.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::AdminListAuditResponse {
            entries: rows
                .into_iter()
                .map(|a| pb::AdminAuditEntry {
                    id: a.id.to_string(),
                    tenant_id: a.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
                    actor_user_id: a.actor_user_id.to_string(),
                    action: a.action,
                    reason: a.reason,
                    before_json: a.before.map(|v| v.to_string()).unwrap_or_default(),
                    after_json: a.after.map(|v| v.to_string()).unwrap_or_default(),
                    request_id: a.request_id.unwrap_or_default(),
                    occurred_at: Some(ts(a.occurred_at)),
                })
                .collect(),
            next_page_token: next,
        })
    }

    async fn admin_update_plan(
        &self,
        p: &Principal,
        r: pb::AdminUpdatePlanRequest,
        rid: Option<&str>,
    ) -> Result<pb::Plan> {
        let code = input::plan_code(&r.code).map_err(|m| ServiceError::invalid("code", m))?;
        let mut errs = Vec::new();
        let name = r.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 80 {
            errs.push(violation("name", "must be 1 to 80 characters"));
        }
        let description = r.description.trim().to_owned();
        if description.chars().count() > 500 {
            errs.push(violation("description", "must be at most 500 characters"));
        }
        if r.version <= 0 {
            errs.push(violation("version", "is required: the version you read"));
        }
        let reason = collect("reason", input::reason(&r.reason), &mut errs);
        let mut prices = BTreeMap::new();
        for (i, price) in r.prices.iter().enumerate() {
            match input::currency(&price.currency) {
                Ok(c) if prices.contains_key(&c) => {
                    errs.push(violation(
                        &format!("prices[{i}].currency"),
                        format!("{c} is listed twice"),
                    ));
                }
                Ok(c) => {
                    if !(1..=1_000_000_000).contains(&price.monthly_amount_minor) {
                        errs.push(violation(
                            &format!("prices[{i}].monthly_amount_minor"),
                            "must be between 1 and 1000000000",
                        ));
                    }
                    prices.insert(c, price.monthly_amount_minor);
                }
                Err(m) => errs.push(violation(&format!("prices[{i}].currency"), m)),
            }
        }
        let mut limits = BTreeMap::new();
        let mut channels = Vec::new();
        let mut automation = false;
        match &r.entitlements {
            None => errs.push(violation("entitlements", "is required")),
            Some(e) => {
                for l in Limit::ALL {
                    let field = format!("entitlements.{}", l.as_str());
                    match proto_slot(e, l) {
                        None => errs.push(violation(
                            &field,
                            "is required (a value or unlimited: true)",
                        )),
                        Some(s) if s.unlimited => {
                            limits.insert(l, None);
                        }
                        Some(s) if s.value < 0 => {
                            errs.push(violation(&field, "must not be negative"))
                        }
                        Some(s) => {
                            limits.insert(l, Some(s.value));
                        }
                    }
                }
                let mut seen = BTreeSet::new();
                for (i, c) in e.channels.iter().enumerate() {
                    let c = c.trim().to_ascii_lowercase();
                    if !CHANNELS.contains(&c.as_str()) {
                        errs.push(violation(
                            &format!("entitlements.channels[{i}]"),
                            format!("must be one of {}", CHANNELS.join(", ")),
                        ));
                    } else if seen.insert(c.clone()) {
                        channels.push(c);
                    }
                }
                automation = e.automation;
            }
        }
        let mut tx = self.db.system_tx("platform admin: edit a plan").await?;
        let current = store::plan(&mut tx, &code)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("plan {code}")))?;
        if current.trial && r.purchasable {
            errs.push(violation("purchasable", "the trial plan cannot be sold"));
        }
        if r.purchasable && prices.is_empty() {
            errs.push(violation(
                "prices",
                "a purchasable plan needs at least one price",
            ));
        }
        let Some(reason) = reason.filter(|_| errs.is_empty()) else {
            return Err(ServiceError::invalid_fields(errs).into());
        };
        let next = Plan {
            name,
            description,
            purchasable: r.purchasable,
            sort_order: r.sort_order,
            limits,
            channels,
            automation,
            prices,
            ..current.clone()
        };
        if !store::update_plan(&mut tx, &next, r.version, p.user_id).await? {
            return Err(ServiceError::new(
                ErrorCode::VersionConflict,
                format!(
                    "the plan was changed by someone else (expected version {}, current version {})",
                    r.version, current.version
                ),
            )
            .with_metadata("current_version", current.version)
            .into());
        }
        let saved = store::plan(&mut tx, &code)
            .await?
            .ok_or_else(|| Error::Internal("plan vanished".into()))?;
        let plan_json = |p: &Plan| {
            serde_json::json!({
                "name": p.name, "purchasable": p.purchasable, "prices": p.prices,
                "limits": p.limits.iter().map(|(l, v)| (l.as_str(), *v)).collect::<BTreeMap<_, _>>(),
                "channels": p.channels, "automation": p.automation, "version": p.version,
            })
        };
        store::insert_admin_audit(
            &mut tx,
            NewAdminAudit {
                tenant_id: None,
                actor_user_id: p.user_id,
                action: "plan.updated",
                reason: &reason,
                before: Some(plan_json(&current)),
                after: Some(plan_json(&saved)),
                request_id: rid,
            },
        )
        .await?;
        tx.commit().await?;
        self.cache.invalidate_all().await;
        tracing::info!(plan = %code, admin = %p.user_id, version = saved.version, "plan edited");
        Ok(plan_pb(&saved))
    }

    fn check_provider(provider: &str) -> Result<()> {
        if provider == STRIPE_PROVIDER {
            Ok(())
        } else {
            Err(
                ServiceError::not_found(format!("integration provider {provider:?} in billing"))
                    .into(),
            )
        }
    }

    async fn get_integration(&self, provider: &str) -> Result<pb::IntegrationConfig> {
        Self::check_provider(provider)?;
        let stored = INTEGRATIONS
            .get_masked(&self.db, Scope::Platform, STRIPE_PROVIDER)
            .await?;
        let secret_fields: Vec<String> = STRIPE
            .fields
            .iter()
            .filter(|f| f.secret)
            .map(|f| f.name.to_owned())
            .collect();
        Ok(match stored {
            Some(m) => {
                let mut values: HashMap<String, String> = m.settings.into_iter().collect();
                values.extend(m.secrets);
                pb::IntegrationConfig {
                    provider: STRIPE_PROVIDER.into(),
                    version: m.version,
                    values,
                    secret_fields,
                    updated_at: Some(ts(m.updated_at)),
                    updated_by: m.updated_by.to_string(),
                    source: "stored".into(),
                }
            }
            None => {
                let mut values = HashMap::new();
                let source = match &self.config.stripe_secret_key {
                    Some(k) => {
                        values.insert("secret_key".to_owned(), cos_crypto::mask(k));
                        values.insert("api_base".to_owned(), self.config.stripe_api_base.clone());
                        "config_file"
                    }
                    None => "none",
                };
                pb::IntegrationConfig {
                    provider: STRIPE_PROVIDER.into(),
                    version: 0,
                    values,
                    secret_fields,
                    updated_at: None,
                    updated_by: String::new(),
                    source: source.into(),
                }
            }
        })
    }

    async fn put_integration(
        &self,
        p: &Principal,
        r: pb::PutIntegrationRequest,
        rid: Option<String>,
    ) -> Result<pb::IntegrationConfig> {
        Self::check_provider(&r.provider)?;
        let mut values: BTreeMap<String, Option<String>> = BTreeMap::new();
        for (k, v) in r.values {
            values.insert(k, Some(v));
        }
        for (i, k) in r.clear.into_iter().enumerate() {
            if values.contains_key(&k) {
                return Err(ServiceError::invalid(
                    format!("clear[{i}]"),
                    "is also given a value in values",
                )
                .into());
            }
            values.insert(k, None);
        }
        // The stored key is sent to whatever host api_base names: moving it must come with the
        // key itself, or a stolen admin session could redirect the live key to its own server.
        if values.contains_key("api_base") && !matches!(values.get("secret_key"), Some(Some(_))) {
            return Err(ServiceError::invalid(
                "values.secret_key",
                "must be sent again whenever api_base changes (the key is sent to that host)",
            )
            .into());
        }
        let update = ConfigUpdate {
            values,
            reason: r.reason,
        };
        let actor = cos_integrations::Actor {
            user_id: p.user_id,
            request_id: rid.unwrap_or_default(),
            platform_admin: p.platform_admin,
        };
        let expected = (r.expected_version > 0).then_some(r.expected_version);
        let saved = INTEGRATIONS
            .put(
                &self.db,
                &self.keyring,
                Scope::Platform,
                &STRIPE,
                update,
                &actor,
                expected,
            )
            .await?;
        tracing::info!(admin = %p.user_id, version = saved.version, "Stripe integration settings changed");
        self.get_integration(STRIPE_PROVIDER).await
    }

    async fn integration_history(
        &self,
        provider: &str,
    ) -> Result<pb::ListIntegrationHistoryResponse> {
        Self::check_provider(provider)?;
        let entries = INTEGRATIONS
            .history(&self.db, Scope::Platform, STRIPE_PROVIDER, 100)
            .await?;
        Ok(pb::ListIntegrationHistoryResponse {
            changes: entries
                .into_iter()
                .map(|e| pb::IntegrationChange {
                    version: e.version,
                    changed_fields: e.changed_fields,
                    actor_user_id: e.actor_user_id.to_string(),
                    reason: e.reason,
                    request_id: e.request_id,
                    changed_at: Some(ts(e.at)),
                })
                .collect(),
        })
    }
}

fn unknown_tenant() -> ServiceError {
    ServiceError::not_found("tenant in billing").with_violation(
        "tenant_id",
        "billing has no subscription for this tenant yet (it starts with the tenant's first request)",
    )
}

/// The tonic service.
#[derive(Clone)]
pub struct BillingGrpc(pub Arc<BillingApi>);

type Reply<T> = std::result::Result<Response<T>, Status>;

fn reply<T>(r: Result<T>) -> Reply<T> {
    r.map(Response::new).map_err(Into::into)
}

#[tonic::async_trait]
impl BillingService for BillingGrpc {
    async fn list_plans(
        &self,
        _req: Request<pb::ListPlansRequest>,
    ) -> Reply<pb::ListPlansResponse> {
        reply(self.0.list_plans().await)
    }
    async fn get_entitlements(
        &self,
        req: Request<pb::GetEntitlementsRequest>,
    ) -> Reply<pb::Entitlements> {
        let p = principal_of(&req)?.clone();
        reply(self.0.entitlements_for(p.tenant_id).await)
    }
    async fn get_subscription(
        &self,
        req: Request<pb::GetSubscriptionRequest>,
    ) -> Reply<pb::Subscription> {
        let p = principal_of(&req)?.clone();
        reply(self.0.get_subscription(&p).await)
    }
    async fn list_subscription_history(
        &self,
        req: Request<pb::ListSubscriptionHistoryRequest>,
    ) -> Reply<pb::ListSubscriptionHistoryResponse> {
        let p = principal_of(&req)?.clone();
        reply(self.0.list_history(&p, req.get_ref()).await)
    }
    async fn get_usage(&self, req: Request<pb::GetUsageRequest>) -> Reply<pb::Usage> {
        let p = principal_of(&req)?.clone();
        reply(self.0.get_usage(&p).await)
    }
    async fn create_checkout(
        &self,
        req: Request<pb::CreateCheckoutRequest>,
    ) -> Reply<pb::CheckoutSession> {
        let p = principal_of(&req)?.clone();
        reply(self.0.create_checkout(&p, req.into_inner()).await)
    }
    async fn verify_checkout(
        &self,
        req: Request<pb::VerifyCheckoutRequest>,
    ) -> Reply<pb::VerifyCheckoutResponse> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        reply(
            self.0
                .verify_checkout(&p, &req.get_ref().session_id, rid.as_deref())
                .await,
        )
    }
    async fn get_checkout(
        &self,
        req: Request<pb::GetCheckoutRequest>,
    ) -> Reply<pb::CheckoutSession> {
        let p = principal_of(&req)?.clone();
        reply(self.0.get_checkout(&p, &req.get_ref().session_id).await)
    }
    async fn list_checkouts(
        &self,
        req: Request<pb::ListCheckoutsRequest>,
    ) -> Reply<pb::ListCheckoutsResponse> {
        let p = principal_of(&req)?.clone();
        reply(self.0.list_checkouts(&p, req.get_ref()).await)
    }
    async fn check_entitlement(
        &self,
        req: Request<pb::CheckEntitlementRequest>,
    ) -> Reply<pb::Entitlements> {
        let tenant = BillingApi::acting_tenant(&req, &req.get_ref().tenant_id)?;
        reply(self.0.entitlements_for(tenant).await)
    }
    async fn consume_quota(
        &self,
        req: Request<pb::ConsumeQuotaRequest>,
    ) -> Reply<pb::ConsumeQuotaResponse> {
        let tenant = BillingApi::acting_tenant(&req, &req.get_ref().tenant_id)?;
        reply(self.0.consume_quota(tenant, req.into_inner()).await)
    }
    async fn release_quota(
        &self,
        req: Request<pb::ReleaseQuotaRequest>,
    ) -> Reply<pb::ReleaseQuotaResponse> {
        let tenant = BillingApi::acting_tenant(&req, &req.get_ref().tenant_id)?;
        reply(self.0.release_quota(tenant, req.into_inner()).await)
    }
    async fn report_usage(
        &self,
        req: Request<pb::ReportUsageRequest>,
    ) -> Reply<pb::ReportUsageResponse> {
        let tenant = BillingApi::acting_tenant(&req, &req.get_ref().tenant_id)?;
        reply(self.0.report_usage(tenant, req.into_inner()).await)
    }
    async fn admin_list_tenants(
        &self,
        req: Request<pb::AdminListTenantsRequest>,
    ) -> Reply<pb::AdminListTenantsResponse> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        reply(
            self.0
                .admin_list_tenants(&p, req.get_ref(), rid.as_deref())
                .await,
        )
    }
    async fn admin_get_tenant(
        &self,
        req: Request<pb::AdminGetTenantRequest>,
    ) -> Reply<pb::AdminTenantBilling> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        reply(
            self.0
                .admin_get_tenant(&p, &req.get_ref().tenant_id, rid.as_deref())
                .await,
        )
    }
    async fn admin_override_subscription(
        &self,
        req: Request<pb::AdminOverrideSubscriptionRequest>,
    ) -> Reply<pb::Subscription> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        reply(
            self.0
                .admin_override(&p, req.into_inner(), rid.as_deref())
                .await,
        )
    }
    async fn admin_suspend_tenant(
        &self,
        req: Request<pb::AdminSuspendTenantRequest>,
    ) -> Reply<pb::Subscription> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        let r = req.into_inner();
        reply(
            self.0
                .admin_suspend(&p, &r.tenant_id, &r.reason, true, rid.as_deref())
                .await,
        )
    }
    async fn admin_unsuspend_tenant(
        &self,
        req: Request<pb::AdminUnsuspendTenantRequest>,
    ) -> Reply<pb::Subscription> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        let r = req.into_inner();
        reply(
            self.0
                .admin_suspend(&p, &r.tenant_id, &r.reason, false, rid.as_deref())
                .await,
        )
    }
    async fn admin_list_audit(
        &self,
        req: Request<pb::AdminListAuditRequest>,
    ) -> Reply<pb::AdminListAuditResponse> {
        reply(self.0.admin_list_audit(req.get_ref()).await)
    }
    async fn admin_update_plan(&self, req: Request<pb::AdminUpdatePlanRequest>) -> Reply<pb::Plan> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        reply(
            self.0
                .admin_update_plan(&p, req.into_inner(), rid.as_deref())
                .await,
        )
    }
    async fn get_integration(
        &self,
        req: Request<pb::GetIntegrationRequest>,
    ) -> Reply<pb::IntegrationConfig> {
        reply(self.0.get_integration(&req.get_ref().provider).await)
    }
    async fn put_integration(
        &self,
        req: Request<pb::PutIntegrationRequest>,
    ) -> Reply<pb::IntegrationConfig> {
        let p = principal_of(&req)?.clone();
        let rid = request_id(&req);
        reply(self.0.put_integration(&p, req.into_inner(), rid).await)
    }
    async fn list_integration_history(
        &self,
        req: Request<pb::ListIntegrationHistoryRequest>,
    ) -> Reply<pb::ListIntegrationHistoryResponse> {
        reply(self.0.integration_history(&req.get_ref().provider).await)
    }
}
