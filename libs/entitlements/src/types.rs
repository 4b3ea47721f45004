//! What a tenant's plan allows, and the checks every service runs before creating or sending.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use cos_errors::{ErrorCode, ServiceError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A numeric limit of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Members of the tenant (identity).
    Seats,
    /// Contacts stored (segmentation).
    Contacts,
    /// Campaigns launched per monthly cycle (campaigns).
    CampaignsPerMonth,
    /// Messages sent per monthly cycle (campaigns, automation).
    MessagesPerMonth,
    /// Active API keys (identity).
    ApiKeys,
    /// Bytes of assets stored (storage).
    StorageBytes,
    /// AI spend per monthly cycle, minor units of USD (engines).
    AiBudgetMinorPerMonth,
}

impl Limit {
    pub const ALL: [Limit; 7] = [
        Limit::Seats,
        Limit::Contacts,
        Limit::CampaignsPerMonth,
        Limit::MessagesPerMonth,
        Limit::ApiKeys,
        Limit::StorageBytes,
        Limit::AiBudgetMinorPerMonth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Seats => "seats",
            Limit::Contacts => "contacts",
            Limit::CampaignsPerMonth => "campaigns_per_month",
            Limit::MessagesPerMonth => "messages_per_month",
            Limit::ApiKeys => "api_keys",
            Limit::StorageBytes => "storage_bytes",
            Limit::AiBudgetMinorPerMonth => "ai_budget_minor_per_month",
        }
    }

    /// Words for messages: "seats", "messages per month".
    pub fn label(self) -> &'static str {
        match self {
            Limit::Seats => "seats",
            Limit::Contacts => "contacts",
            Limit::CampaignsPerMonth => "campaigns per month",
            Limit::MessagesPerMonth => "messages per month",
            Limit::ApiKeys => "API keys",
            Limit::StorageBytes => "bytes of storage",
            Limit::AiBudgetMinorPerMonth => "cents of AI spend per month",
        }
    }

    /// Counters that billing keeps per monthly cycle and hands out with `ConsumeQuota`; the
    /// others are gauges whose owning service counts them (and enforces with `check_limit`).
    pub fn per_cycle(self) -> bool {
        matches!(
            self,
            Limit::CampaignsPerMonth | Limit::MessagesPerMonth | Limit::AiBudgetMinorPerMonth
        )
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Limit::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "must be one of {}",
                    Limit::ALL.map(Limit::as_str).join(", ")
                )
            })
    }
}

/// Where a tenant's subscription stands. `Grace` follows the end of a paid (or trial) period
/// for a few days with everything still allowed; `Expired` is read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Trialing,
    Active,
    Grace,
    Expired,
    Suspended,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Grace => "grace",
            SubscriptionStatus::Expired => "expired",
            SubscriptionStatus::Suspended => "suspended",
        }
    }

    /// Creating things (members, keys, contacts, campaigns) is allowed.
    pub fn can_create(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Trialing | SubscriptionStatus::Active | SubscriptionStatus::Grace
        )
    }

    /// Sending (launches, deliveries, automation actions) is allowed.
    pub fn can_send(self) -> bool {
        self.can_create()
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubscriptionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "trialing" => Ok(Self::Trialing),
            "active" => Ok(Self::Active),
            "grace" => Ok(Self::Grace),
            "expired" => Ok(Self::Expired),
            "suspended" => Ok(Self::Suspended),
            _ => Err("must be one of trialing, active, grace, expired, suspended".to_owned()),
        }
    }
}

/// What a tenant may do now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlements {
    pub tenant_id: Uuid,
    /// Plan code: trial, starter, growth, enterprise.
    pub plan: String,
    pub status: SubscriptionStatus,
    pub period_end: Option<DateTime<Utc>>,
    /// When a lapsed subscription becomes read-only.
    #[serde(default)]
    pub grace_end: Option<DateTime<Utc>>,
    /// Every limit; `None` = unlimited. A limit missing from the map counts as 0 (closed).
    pub limits: BTreeMap<Limit, Option<i64>>,
    /// Delivery channels allowed: email, sms, push, webhook, social, sandbox.
    pub channels: Vec<String>,
    pub automation: bool,
}

impl Entitlements {
    /// The limit's value; `None` = unlimited.
    pub fn limit(&self, l: Limit) -> Option<i64> {
        self.limits.get(&l).copied().unwrap_or(Some(0))
    }

    /// How many more fit, given `usage`; `None` = unlimited.
    pub fn remaining(&self, l: Limit, usage: i64) -> Option<i64> {
        self.limit(l).map(|max| (max - usage).max(0))
    }

    fn state_error(&self, doing: &str) -> ServiceError {
        match self.status {
            SubscriptionStatus::Suspended => ServiceError::permission_denied(
                "this workspace is suspended; only billing and data export are available — contact support",
            )
            .with_metadata("status", "suspended"),
            _ => {
                let since = self
                    .grace_end
                    .or(self.period_end)
                    .map(|t| format!(" on {}", t.format("%Y-%m-%d")))
                    .unwrap_or_default();
                ServiceError::new(
                    ErrorCode::PlanLimit,
                    format!(
                        "your subscription expired{since}: the workspace is read-only (data stays readable and exportable); renew the {} plan to resume {doing}",
                        self.plan
                    ),
                )
                .with_metadata("limit", "subscription")
                .with_metadata("status", self.status.as_str())
                .with_metadata("plan", &self.plan)
            }
        }
    }

    /// Refuses when the workspace is read-only (expired) or suspended; grace still creates.
    pub fn ensure_can_create(&self) -> Result<(), ServiceError> {
        if self.status.can_create() {
            Ok(())
        } else {
            Err(self.state_error("creating"))
        }
    }

    /// Refuses sending when expired or suspended.
    pub fn ensure_can_send(&self) -> Result<(), ServiceError> {
        if self.status.can_send() {
            Ok(())
        } else {
            Err(self.state_error("sending"))
        }
    }

    /// Refuses adding `adding` to `usage` past the limit: RESOURCE_EXHAUSTED (HTTP 402) naming
    /// the limit, its value and the usage (metadata `limit`, `value`, `usage`, `requested`,
    /// `plan`). Also refuses when creating is not allowed at all.
    pub fn check_limit(&self, l: Limit, usage: i64, adding: i64) -> Result<(), ServiceError> {
        self.ensure_can_create()?;
        match self.limit(l) {
            None => Ok(()),
            Some(max) if usage.saturating_add(adding) <= max => Ok(()),
            Some(max) => Err(plan_limit_error(&self.plan, l, max, usage, adding)),
        }
    }

    /// Refuses a channel the plan does not include.
    pub fn ensure_channel(&self, channel: &str) -> Result<(), ServiceError> {
        if self.channels.iter().any(|c| c == channel) {
            return Ok(());
        }
        Err(ServiceError::new(
            ErrorCode::PlanLimit,
            format!(
                "the {} plan does not include the {channel} channel (included: {})",
                self.plan,
                if self.channels.is_empty() {
                    "none".to_owned()
                } else {
                    self.channels.join(", ")
                }
            ),
        )
        .with_metadata("limit", "channels")
        .with_metadata("value", self.channels.join(","))
        .with_metadata("channel", channel)
        .with_metadata("plan", &self.plan))
    }

    /// Refuses automation on plans without it.
    pub fn ensure_automation(&self) -> Result<(), ServiceError> {
        if self.automation {
            return Ok(());
        }
        Err(ServiceError::new(
            ErrorCode::PlanLimit,
            format!("the {} plan does not include automation", self.plan),
        )
        .with_metadata("limit", "automation")
        .with_metadata("value", "false")
        .with_metadata("plan", &self.plan))
    }
}

/// The PlanLimit error for `limit` (shared by the client-side checks and billing's quotas, so
/// both read the same).
pub fn plan_limit_error(plan: &str, l: Limit, max: i64, usage: i64, adding: i64) -> ServiceError {
    let left = (max - usage).max(0);
    ServiceError::new(
        ErrorCode::PlanLimit,
        format!(
            "plan limit reached: the {plan} plan allows {max} {}; {usage} used, {adding} more requested ({left} left)",
            l.label()
        ),
    )
    .with_metadata("limit", l.as_str())
    .with_metadata("value", max)
    .with_metadata("usage", usage)
    .with_metadata("requested", adding)
    .with_metadata("plan", plan)
}

/// A grant from `ConsumeQuota`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaGrant {
    pub granted: i64,
    /// Used in the cycle after this grant.
    pub used: i64,
    /// `None` = unlimited.
    pub limit: Option<i64>,
    pub cycle_start: Option<DateTime<Utc>>,
    pub cycle_end: Option<DateTime<Utc>>,
    /// The idempotency key had been used: this is the earlier grant, nothing new was taken.
    pub replayed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(status: SubscriptionStatus) -> Entitlements {
        let mut limits = BTreeMap::new();
        for l in Limit::ALL {
            limits.insert(l, Some(10));
        }
        limits.insert(Limit::StorageBytes, None);
        Entitlements {
            tenant_id: Uuid::nil(),
            plan: "starter".into(),
            status,
            period_end: None,
            grace_end: None,
            limits,
            channels: vec!["email".into(), "sandbox".into()],
            automation: false,
        }
    }

    #[test]
    fn names_round_trip() {
        for l in Limit::ALL {
            assert_eq!(l.as_str().parse::<Limit>(), Ok(l));
        }
        assert!("bogus".parse::<Limit>().unwrap_err().contains("seats"));
        for s in ["trialing", "active", "grace", "expired", "suspended"] {
            assert_eq!(s.parse::<SubscriptionStatus>().unwrap().as_str(), s);
        }
    }

    #[test]
    fn limits_allow_up_to_and_including_the_value() {
        let e = ent(SubscriptionStatus::Active);
        assert!(e.check_limit(Limit::Seats, 9, 1).is_ok());
        let err = e.check_limit(Limit::Seats, 10, 1).unwrap_err();
        assert_eq!(err.code, ErrorCode::PlanLimit);
        assert_eq!(err.code.http_status().as_u16(), 402);
        assert_eq!(err.metadata_value("limit"), Some("seats"));
        assert_eq!(err.metadata_value("value"), Some("10"));
        assert_eq!(err.metadata_value("usage"), Some("10"));
        assert!(err.message.contains("10 seats"), "{}", err.message);
        assert!(e.check_limit(Limit::StorageBytes, i64::MAX, 1).is_ok());
        assert_eq!(e.remaining(Limit::Seats, 7), Some(3));
        assert_eq!(e.remaining(Limit::Seats, 70), Some(0));
        assert_eq!(e.remaining(Limit::StorageBytes, 7), None);
    }

    #[test]
    fn a_missing_limit_is_closed_not_open() {
        let mut e = ent(SubscriptionStatus::Active);
        e.limits.remove(&Limit::Contacts);
        assert_eq!(e.limit(Limit::Contacts), Some(0));
        assert!(e.check_limit(Limit::Contacts, 0, 1).is_err());
    }

    #[test]
    fn grace_still_works_expired_is_read_only_suspended_is_forbidden() {
        assert!(ent(SubscriptionStatus::Grace).ensure_can_create().is_ok());
        assert!(ent(SubscriptionStatus::Grace).ensure_can_send().is_ok());
        let expired = ent(SubscriptionStatus::Expired);
        let err = expired.ensure_can_create().unwrap_err();
        assert_eq!(err.code, ErrorCode::PlanLimit);
        assert_eq!(err.metadata_value("status"), Some("expired"));
        assert!(expired.check_limit(Limit::Seats, 0, 1).is_err());
        let err = ent(SubscriptionStatus::Suspended)
            .ensure_can_send()
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied);
    }

    #[test]
    fn channels_and_automation() {
        let e = ent(SubscriptionStatus::Active);
        assert!(e.ensure_channel("email").is_ok());
        let err = e.ensure_channel("sms").unwrap_err();
        assert_eq!(err.code, ErrorCode::PlanLimit);
        assert_eq!(err.metadata_value("limit"), Some("channels"));
        assert_eq!(err.metadata_value("channel"), Some("sms"));
        assert!(e.ensure_automation().is_err());
    }

    #[test]
    fn entitlements_survive_the_cache_encoding() {
        let e = ent(SubscriptionStatus::Trialing);
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"messages_per_month\":10"), "{json}");
        let back: Entitlements = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
