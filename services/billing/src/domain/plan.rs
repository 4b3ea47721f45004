//! Plans: prices per currency and entitlements.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cos_entitlements::Limit;

/// Delivery channels a plan may include.
pub const CHANNELS: &[&str] = &["email", "sms", "push", "webhook", "social", "sandbox"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub code: String,
    pub name: String,
    pub description: String,
    pub trial: bool,
    pub purchasable: bool,
    pub sort_order: i32,
    /// `None` = unlimited.
    pub limits: BTreeMap<Limit, Option<i64>>,
    pub channels: Vec<String>,
    pub automation: bool,
    /// Monthly price in minor units, by lower-case ISO currency.
    pub prices: BTreeMap<String, i64>,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

impl Plan {
    pub fn limit(&self, l: Limit) -> Option<i64> {
        self.limits.get(&l).copied().unwrap_or(Some(0))
    }

    pub fn monthly_price(&self, currency: &str) -> Option<i64> {
        self.prices.get(currency).copied()
    }

    /// Price of `months` months in `currency`, or why it cannot be sold that way (a message for
    /// the named field).
    pub fn quote(&self, currency: &str, months: i32) -> Result<(i64, i64), (&'static str, String)> {
        if !self.purchasable {
            return Err(("plan", format!("the {} plan cannot be bought", self.code)));
        }
        let Some(unit) = self.monthly_price(currency) else {
            let known: Vec<&str> = self.prices.keys().map(String::as_str).collect();
            return Err((
                "currency",
                format!(
                    "the {} plan has no price in {currency} (available: {})",
                    self.code,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        let total = unit
            .checked_mul(i64::from(months))
            .ok_or(("months", "makes the total too large".to_owned()))?;
        Ok((unit, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            code: "starter".into(),
            name: "Starter".into(),
            description: String::new(),
            trial: false,
            purchasable: true,
            sort_order: 0,
            limits: BTreeMap::new(),
            channels: vec![],
            automation: false,
            prices: [("usd".to_owned(), 2900), ("eur".to_owned(), 2700)].into(),
            version: 1,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn quotes_multiply_the_monthly_price() {
        assert_eq!(plan().quote("usd", 3), Ok((2900, 8700)));
        let err = plan().quote("jpy", 1).unwrap_err();
        assert_eq!(err.0, "currency");
        assert!(err.1.contains("eur, usd"), "{}", err.1);
        let mut trial = plan();
        trial.purchasable = false;
        assert_eq!(trial.quote("usd", 1).unwrap_err().0, "plan");
        let mut huge = plan();
        huge.prices.insert("usd".into(), i64::MAX / 2);
        assert_eq!(huge.quote("usd", 3).unwrap_err().0, "months");
    }

    #[test]
    fn a_limit_missing_from_a_plan_is_zero() {
        assert_eq!(plan().limit(Limit::Seats), Some(0));
    }
}
