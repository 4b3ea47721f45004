//! Subscription periods: status over time (trialing/active → grace → expired; suspended on top),
//! what a purchase does, what an admin override does, and monthly usage cycles.

use chrono::{DateTime, Duration, Months, Utc};
use cos_entitlements::SubscriptionStatus;
use uuid::Uuid;

/// The stored part of the status; grace and expiry follow from the period end and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseStatus {
    Trialing,
    Active,
}

impl BaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BaseStatus::Trialing => "trialing",
            BaseStatus::Active => "active",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "trialing" => Some(BaseStatus::Trialing),
            "active" => Some(BaseStatus::Active),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub tenant_id: Uuid,
    pub plan_code: String,
    pub base: BaseStatus,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub comped: bool,
    pub suspended_at: Option<DateTime<Utc>>,
    pub suspended_reason: Option<String>,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// `t` plus `n` calendar months (the 31st of January plus one month is the last of February).
pub fn add_months(t: DateTime<Utc>, n: u32) -> DateTime<Utc> {
    t.checked_add_months(Months::new(n))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Subscription {
    /// The trial every tenant starts with.
    pub fn trial(tenant_id: Uuid, plan_code: &str, now: DateTime<Utc>, days: u32) -> Self {
        Self {
            tenant_id,
            plan_code: plan_code.to_owned(),
            base: BaseStatus::Trialing,
            period_start: now,
            period_end: now + Duration::days(i64::from(days.max(1))),
            comped: false,
            suspended_at: None,
            suspended_reason: None,
            version: 1,
            updated_at: now,
        }
    }

    pub fn grace_end(&self, grace: Duration) -> DateTime<Utc> {
        self.period_end + grace
    }

    /// The status now: suspended wins; within the period the stored status; then grace; then
    /// expired (read-only).
    pub fn status(&self, now: DateTime<Utc>, grace: Duration) -> SubscriptionStatus {
        if self.suspended_at.is_some() {
            SubscriptionStatus::Suspended
        } else if now < self.period_end {
            match self.base {
                BaseStatus::Trialing => SubscriptionStatus::Trialing,
                BaseStatus::Active => SubscriptionStatus::Active,
            }
        } else if now < self.grace_end(grace) {
            SubscriptionStatus::Grace
        } else {
            SubscriptionStatus::Expired
        }
    }

    /// The monthly usage cycle containing `now`.
    pub fn cycle(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        usage_cycle(self.period_start, now)
    }
}

/// The monthly cycle containing `now`, counted in calendar months from `anchor` (the start of
/// the current subscription period). Before the anchor: the first cycle.
pub fn usage_cycle(anchor: DateTime<Utc>, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    if now < anchor {
        return (anchor, add_months(anchor, 1));
    }
    // Estimate from the month difference, then step to the exact cycle (month lengths vary).
    let approx = u32::try_from((now - anchor).num_days() / 31).unwrap_or(0);
    let mut k = approx;
    while k > 0 && add_months(anchor, k) > now {
        k -= 1;
    }
    while add_months(anchor, k + 1) <= now {
        k += 1;
    }
    (add_months(anchor, k), add_months(anchor, k + 1))
}

/// What a verified payment does to the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseAction {
    /// Same plan with time left: the period end moves out by the months bought.
    Extended,
    /// A period starting now (after a lapse, or a change of plan).
    Purchased,
    /// A different plan, starting now; unused paid time of the old plan is credited at the
    /// ratio of the two monthly prices.
    PlanChanged,
}

impl PurchaseAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PurchaseAction::Extended => "extended",
            PurchaseAction::Purchased => "purchased",
            PurchaseAction::PlanChanged => "plan_changed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    pub action: PurchaseAction,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// Paid time of the old plan converted into time on the new one.
    pub credit: Duration,
}

impl Subscription {
    /// Applies a paid purchase of `months` of `plan_code`.
    ///
    /// - Same plan, time left (trial or paid): extends from the current end; the trial's rest is
    ///   kept, the usage cycle continues.
    /// - Different paid plan with paid time left: starts now, plus the unused time converted by
    ///   `old_monthly / new_monthly` (both in the purchase currency; no credit if either is
    ///   unknown).
    /// - Otherwise (lapsed, or leaving the trial for a plan): starts now; a trial's remaining days
    ///   are added on top, so buying early never loses trial time.
    pub fn purchase(
        &self,
        plan_code: &str,
        months: u32,
        now: DateTime<Utc>,
        old_monthly: Option<i64>,
        new_monthly: Option<i64>,
    ) -> Purchase {
        // Suspension is orthogonal: a suspended tenant that pays keeps its remaining time.
        let left = if self.period_end > now {
            self.period_end - now
        } else {
            Duration::zero()
        };
        if plan_code == self.plan_code && left > Duration::zero() {
            return Purchase {
                action: PurchaseAction::Extended,
                period_start: self.period_start,
                period_end: add_months(self.period_end, months),
                credit: Duration::zero(),
            };
        }
        let credit = match self.base {
            BaseStatus::Trialing => left,
            BaseStatus::Active => match (old_monthly, new_monthly) {
                (Some(old), Some(new)) if old > 0 && new > 0 && left > Duration::zero() => {
                    let secs = i128::from(left.num_seconds()) * i128::from(old) / i128::from(new);
                    Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
                }
                _ => Duration::zero(),
            },
        };
        let action = if plan_code == self.plan_code || self.base == BaseStatus::Trialing {
            PurchaseAction::Purchased
        } else {
            PurchaseAction::PlanChanged
        };
        Purchase {
            action,
            period_start: now,
            period_end: add_months(now, months) + credit,
            credit,
        }
    }
}

/// A platform administrator's change. At most one of `period_end` and `extend_days`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Override {
    pub plan_code: Option<String>,
    pub period_end: Option<DateTime<Utc>>,
    pub extend_days: Option<i32>,
    pub comp: bool,
}

impl Subscription {
    /// The subscription after an override, or a (field, message) explaining why not. A comp makes
    /// the subscription active (a paid status without payment) and marks it comped.
    pub fn apply_override(
        &self,
        o: &Override,
        now: DateTime<Utc>,
    ) -> Result<Subscription, (&'static str, String)> {
        if o.period_end.is_some() && o.extend_days.is_some() {
            return Err((
                "extend_days",
                "give either period_end or extend_days, not both".to_owned(),
            ));
        }
        if o.plan_code.is_none() && o.period_end.is_none() && o.extend_days.is_none() && !o.comp {
            return Err((
                "plan",
                "nothing to change: give plan, period_end, extend_days or comp".to_owned(),
            ));
        }
        let mut next = self.clone();
        if let Some(plan) = &o.plan_code {
            next.plan_code = plan.clone();
        }
        if let Some(end) = o.period_end {
            next.period_end = end;
        }
        if let Some(days) = o.extend_days {
            if days == 0 || days.abs() > 3660 {
                return Err((
                    "extend_days",
                    "must be between -3660 and 3660 and not 0".to_owned(),
                ));
            }
            // Extending a lapsed subscription counts from now: "30 more days" must give 30
            // usable days, not leave it expired.
            let base = if days > 0 && self.period_end < now {
                now
            } else {
                self.period_end
            };
            next.period_end = base + Duration::days(i64::from(days));
        }
        if next.period_end <= next.period_start {
            // Shortening past the start: the period becomes a zero-length one that ended now.
            if next.period_end > now {
                return Err((
                    "period_end",
                    "must be after the current period start".to_owned(),
                ));
            }
            next.period_start = next.period_end - Duration::seconds(1);
        }
        if next.period_end > now + Duration::days(3660 * 2) {
            return Err(("period_end", "must be within 20 years from now".to_owned()));
        }
        if o.comp {
            next.comped = true;
            next.base = BaseStatus::Active;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
    }

    fn sub(base: BaseStatus, start: DateTime<Utc>, end: DateTime<Utc>) -> Subscription {
        Subscription {
            tenant_id: Uuid::nil(),
            plan_code: "starter".into(),
            base,
            period_start: start,
            period_end: end,
            comped: false,
            suspended_at: None,
            suspended_reason: None,
            version: 1,
            updated_at: start,
        }
    }

    #[test]
    fn status_walks_from_active_through_grace_to_expired() {
        let s = sub(BaseStatus::Active, t(2026, 1, 1), t(2026, 2, 1));
        let grace = Duration::days(7);
        assert_eq!(s.status(t(2026, 1, 15), grace), SubscriptionStatus::Active);
        assert_eq!(s.status(t(2026, 2, 1), grace), SubscriptionStatus::Grace);
        assert_eq!(s.status(t(2026, 2, 7), grace), SubscriptionStatus::Grace);
        assert_eq!(s.status(t(2026, 2, 8), grace), SubscriptionStatus::Expired);
        let trial = sub(BaseStatus::Trialing, t(2026, 1, 1), t(2026, 1, 15));
        assert_eq!(
            trial.status(t(2026, 1, 2), grace),
            SubscriptionStatus::Trialing
        );
        assert_eq!(
            trial.status(t(2026, 1, 16), grace),
            SubscriptionStatus::Grace
        );
        let mut suspended = s.clone();
        suspended.suspended_at = Some(t(2026, 1, 2));
        assert_eq!(
            suspended.status(t(2026, 1, 3), grace),
            SubscriptionStatus::Suspended
        );
        assert_eq!(
            suspended.status(t(2027, 1, 3), grace),
            SubscriptionStatus::Suspended
        );
    }

    #[test]
    fn months_are_calendar_months_clamped_at_month_end() {
        assert_eq!(add_months(t(2026, 1, 31), 1), t(2026, 2, 28));
        assert_eq!(add_months(t(2024, 1, 31), 1), t(2024, 2, 29));
        assert_eq!(add_months(t(2026, 11, 15), 3), t(2027, 2, 15));
    }

    #[test]
    fn usage_cycles_are_monthly_from_the_anchor() {
        let anchor = t(2026, 1, 31);
        assert_eq!(
            usage_cycle(anchor, t(2026, 2, 10)),
            (anchor, t(2026, 2, 28))
        );
        assert_eq!(
            usage_cycle(anchor, t(2026, 2, 28)),
            (t(2026, 2, 28), t(2026, 3, 31))
        );
        assert_eq!(
            usage_cycle(anchor, t(2027, 6, 1)),
            (t(2027, 5, 31), t(2027, 6, 30))
        );
        assert_eq!(usage_cycle(anchor, t(2025, 1, 1)), (anchor, t(2026, 2, 28)));
        // Every instant falls in exactly one cycle.
        let mut now = anchor;
        while now < t(2028, 1, 1) {
            let (s, e) = usage_cycle(anchor, now);
            assert!(s <= now && now < e, "{now}: {s}..{e}");
            now += Duration::hours(37);
        }
    }

    #[test]
    fn buying_the_same_plan_extends_from_the_current_end() {
        let s = sub(BaseStatus::Active, t(2026, 1, 1), t(2026, 2, 1));
        let p = s.purchase("starter", 3, t(2026, 1, 20), Some(2900), Some(2900));
        assert_eq!(p.action, PurchaseAction::Extended);
        assert_eq!(p.period_start, t(2026, 1, 1));
        assert_eq!(p.period_end, t(2026, 5, 1));
    }

    #[test]
    fn a_suspended_tenant_that_pays_keeps_its_remaining_time() {
        let mut s = sub(BaseStatus::Active, t(2026, 1, 1), t(2026, 3, 1));
        s.suspended_at = Some(t(2026, 1, 10));
        let p = s.purchase("starter", 1, t(2026, 1, 20), Some(2900), Some(2900));
        assert_eq!(p.action, PurchaseAction::Extended);
        assert_eq!(p.period_end, t(2026, 4, 1));
    }

    #[test]
    fn buying_after_a_lapse_starts_now() {
        let s = sub(BaseStatus::Active, t(2026, 1, 1), t(2026, 2, 1));
        let p = s.purchase("starter", 1, t(2026, 3, 10), Some(2900), Some(2900));
        assert_eq!(p.action, PurchaseAction::Purchased);
        assert_eq!(p.period_start, t(2026, 3, 10));
        assert_eq!(p.period_end, t(2026, 4, 10));
    }

    #[test]
    fn leaving_a_trial_early_keeps_the_trial_days() {
        let mut s = sub(BaseStatus::Trialing, t(2026, 1, 1), t(2026, 1, 15));
        s.plan_code = "trial".into();
        let p = s.purchase("growth", 1, t(2026, 1, 5), None, Some(9900));
        assert_eq!(p.action, PurchaseAction::Purchased);
        assert_eq!(p.period_start, t(2026, 1, 5));
        assert_eq!(p.period_end, t(2026, 2, 15));
    }

    #[test]
    fn changing_paid_plans_credits_unused_time_at_the_price_ratio() {
        let s = sub(BaseStatus::Active, t(2026, 1, 1), t(2026, 1, 21));
        // 10 days of a 2900/month plan are worth 2900/9900 of 10 days on a 9900/month plan.
        let p = s.purchase("growth", 1, t(2026, 1, 11), Some(2900), Some(9900));
        assert_eq!(p.action, PurchaseAction::PlanChanged);
        assert_eq!(p.period_start, t(2026, 1, 11));
        let expected = Duration::seconds(10 * 86_400 * 2900 / 9900);
        assert_eq!(p.credit, expected);
        assert_eq!(p.period_end, t(2026, 2, 11) + expected);
        // Unknown price in that currency: no credit.
        let p = s.purchase("growth", 1, t(2026, 1, 11), None, Some(9900));
        assert_eq!(p.credit, Duration::zero());
    }

    #[test]
    fn overrides_move_the_end_change_plan_and_comp() {
        let s = sub(BaseStatus::Trialing, t(2026, 1, 1), t(2026, 2, 1));
        let now = t(2026, 1, 10);
        let o = Override {
            extend_days: Some(10),
            ..Default::default()
        };
        assert_eq!(
            s.apply_override(&o, now).unwrap().period_end,
            t(2026, 2, 11)
        );
        let o = Override {
            extend_days: Some(-5),
            ..Default::default()
        };
        assert_eq!(
            s.apply_override(&o, now).unwrap().period_end,
            t(2026, 1, 27)
        );
        // Extending a subscription that lapsed 60 days ago counts from now.
        let lapsed = sub(BaseStatus::Active, t(2025, 10, 1), t(2025, 11, 11));
        let o = Override {
            extend_days: Some(30),
            ..Default::default()
        };
        assert_eq!(
            lapsed.apply_override(&o, now).unwrap().period_end,
            t(2026, 2, 9)
        );
        let o = Override {
            plan_code: Some("growth".into()),
            comp: true,
            ..Default::default()
        };
        let c = s.apply_override(&o, now).unwrap();
        assert!(c.comped);
        assert_eq!(c.base, BaseStatus::Active);
        assert_eq!(c.plan_code, "growth");
        // Shortening into the past ends the period now-ish; into the future before start: refused.
        let o = Override {
            period_end: Some(t(2025, 12, 1)),
            ..Default::default()
        };
        let ended = s.apply_override(&o, now).unwrap();
        assert_eq!(
            ended.status(now, Duration::days(7)),
            SubscriptionStatus::Expired
        );
        assert!(ended.period_start < ended.period_end);
        assert_eq!(
            s.apply_override(&Override::default(), now).unwrap_err().0,
            "plan"
        );
        let both = Override {
            period_end: Some(t(2026, 3, 1)),
            extend_days: Some(3),
            ..Default::default()
        };
        assert_eq!(s.apply_override(&both, now).unwrap_err().0, "extend_days");
        let zero = Override {
            extend_days: Some(0),
            ..Default::default()
        };
        assert_eq!(s.apply_override(&zero, now).unwrap_err().0, "extend_days");
    }
}
