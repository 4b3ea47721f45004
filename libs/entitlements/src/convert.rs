//! Protobuf <-> entitlement types, shared by billing (which answers) and its clients.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cos_proto::billing::v1 as pb;
use uuid::Uuid;

use crate::types::{Entitlements, Limit, SubscriptionStatus};

pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn from_ts(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// `None` (unlimited) <-> `{unlimited: true}`.
pub fn setting(v: Option<i64>) -> pb::LimitSetting {
    match v {
        Some(value) => pb::LimitSetting {
            value,
            unlimited: false,
        },
        None => pb::LimitSetting {
            value: 0,
            unlimited: true,
        },
    }
}

/// A missing setting reads as 0 (closed), never as unlimited.
pub fn from_setting(s: Option<&pb::LimitSetting>) -> Option<i64> {
    match s {
        Some(s) if s.unlimited => None,
        Some(s) => Some(s.value),
        None => Some(0),
    }
}

fn slot(e: &pb::PlanEntitlements, l: Limit) -> Option<&pb::LimitSetting> {
    match l {
        Limit::Seats => e.seats.as_ref(),
        Limit::Contacts => e.contacts.as_ref(),
        Limit::CampaignsPerMonth => e.campaigns_per_month.as_ref(),
        Limit::MessagesPerMonth => e.messages_per_month.as_ref(),
        Limit::ApiKeys => e.api_keys.as_ref(),
        Limit::StorageBytes => e.storage_bytes.as_ref(),
        Limit::AiBudgetMinorPerMonth => e.ai_budget_minor_per_month.as_ref(),
    }
}

/// The setting of `l` in a proto (absent when the client left it out).
pub fn proto_slot(e: &pb::PlanEntitlements, l: Limit) -> Option<&pb::LimitSetting> {
    slot(e, l)
}

pub fn limits_from_proto(e: &pb::PlanEntitlements) -> BTreeMap<Limit, Option<i64>> {
    Limit::ALL
        .into_iter()
        .map(|l| (l, from_setting(slot(e, l))))
        .collect()
}

pub fn limits_to_proto(
    limits: &BTreeMap<Limit, Option<i64>>,
    channels: &[String],
    automation: bool,
) -> pb::PlanEntitlements {
    let get = |l: Limit| Some(setting(limits.get(&l).copied().unwrap_or(Some(0))));
    pb::PlanEntitlements {
        seats: get(Limit::Seats),
        contacts: get(Limit::Contacts),
        campaigns_per_month: get(Limit::CampaignsPerMonth),
        messages_per_month: get(Limit::MessagesPerMonth),
        ai_budget_minor_per_month: get(Limit::AiBudgetMinorPerMonth),
        storage_bytes: get(Limit::StorageBytes),
        api_keys: get(Limit::ApiKeys),
        channels: channels.to_vec(),
        automation,
    }
}

impl Entitlements {
    pub fn to_proto(&self, plan_name: &str) -> pb::Entitlements {
        pb::Entitlements {
            tenant_id: self.tenant_id.to_string(),
            plan: self.plan.clone(),
            status: self.status.as_str().to_owned(),
            current_period_end: self.period_end.map(ts),
            grace_ends_at: self.grace_end.map(ts),
            limits: Some(limits_to_proto(
                &self.limits,
                &self.channels,
                self.automation,
            )),
            can_create: self.status.can_create(),
            can_send: self.status.can_send(),
            plan_name: plan_name.to_owned(),
        }
    }

    pub fn from_proto(p: &pb::Entitlements) -> Result<Self, String> {
        let tenant_id =
            Uuid::parse_str(&p.tenant_id).map_err(|_| "tenant_id is not a UUID".to_owned())?;
        let status = p
            .status
            .parse::<SubscriptionStatus>()
            .map_err(|e| format!("status {e}"))?;
        let limits = p.limits.as_ref().ok_or("limits missing")?;
        Ok(Self {
            tenant_id,
            plan: p.plan.clone(),
            status,
            period_end: p.current_period_end.as_ref().and_then(from_ts),
            grace_end: p.grace_ends_at.as_ref().and_then(from_ts),
            limits: limits_from_proto(limits),
            channels: limits.channels.clone(),
            automation: limits.automation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entitlements_round_trip_through_the_proto() {
        let mut limits = BTreeMap::new();
        for (i, l) in Limit::ALL.into_iter().enumerate() {
            limits.insert(l, Some(i as i64 * 3));
        }
        limits.insert(Limit::StorageBytes, None);
        let e = Entitlements {
            tenant_id: Uuid::now_v7(),
            plan: "growth".into(),
            status: SubscriptionStatus::Grace,
            period_end: DateTime::from_timestamp(1_800_000_000, 0),
            grace_end: DateTime::from_timestamp(1_800_600_000, 0),
            limits,
            channels: vec!["email".into()],
            automation: true,
        };
        let p = e.to_proto("Growth");
        assert!(p.can_create);
        assert!(
            p.limits
                .as_ref()
                .unwrap()
                .storage_bytes
                .as_ref()
                .unwrap()
                .unlimited
        );
        assert_eq!(Entitlements::from_proto(&p).unwrap(), e);
    }

    #[test]
    fn a_missing_setting_is_zero() {
        assert_eq!(from_setting(None), Some(0));
        let e = pb::PlanEntitlements::default();
        assert!(limits_from_proto(&e).values().all(|v| *v == Some(0)));
    }
}
