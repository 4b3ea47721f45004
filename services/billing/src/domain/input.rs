//! Parsing of client input; each function returns the message for its field.

use cos_entitlements::Limit;

pub const MAX_MONTHS: i32 = 36;
pub const MAX_REASON: usize = 1000;
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// `usd`, `USD` → `usd`.
pub fn currency(raw: &str) -> Result<String, String> {
    let c = raw.trim().to_ascii_lowercase();
    if c.is_empty() {
        return Err("is required".into());
    }
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_lowercase()) {
        Ok(c)
    } else {
        Err("must be a three-letter ISO 4217 code such as usd".into())
    }
}

pub fn months(raw: i32) -> Result<i32, String> {
    if (1..=MAX_MONTHS).contains(&raw) {
        Ok(raw)
    } else {
        Err(format!("must be between 1 and {MAX_MONTHS}"))
    }
}

pub fn plan_code(raw: &str) -> Result<String, String> {
    let c = raw.trim();
    if c.is_empty() {
        return Err("is required".into());
    }
    let ok = c.len() <= 32
        && c.starts_with(|ch: char| ch.is_ascii_lowercase())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(c.to_owned())
    } else {
        Err("is not a plan code (lower-case letters, digits and _)".into())
    }
}

/// A Stripe Checkout session id: `cs_` then letters, digits and `_`.
pub fn session_id(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("is required".into());
    }
    let ok = s.len() <= 253
        && s.strip_prefix("cs_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
    if ok {
        Ok(s.to_owned())
    } else {
        Err("is not a Checkout session id (cs_...)".into())
    }
}

/// A required reason for an administrative action.
pub fn reason(raw: &str) -> Result<String, String> {
    let r = raw.trim();
    if r.is_empty() {
        return Err("is required: say why, it is kept in the audit trail".into());
    }
    if r.chars().count() > MAX_REASON {
        return Err(format!("must be at most {MAX_REASON} characters"));
    }
    if r.chars().any(|c| c.is_control() && c != '\n') {
        return Err("must not contain control characters".into());
    }
    Ok(r.to_owned())
}

pub fn idempotency_key(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("is required".into());
    }
    if raw.len() > MAX_IDEMPOTENCY_KEY {
        return Err(format!("must be at most {MAX_IDEMPOTENCY_KEY} bytes"));
    }
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(raw.to_owned())
}

/// A per-cycle quota name.
pub fn quota(raw: &str) -> Result<Limit, String> {
    let l: Limit = raw.parse()?;
    if l.per_cycle() {
        Ok(l)
    } else {
        Err(format!(
            "{raw} is not a per-cycle quota (campaigns_per_month, messages_per_month, ai_budget_minor_per_month); gauges are enforced by the service that owns them"
        ))
    }
}

/// A gauge name for ReportUsage.
pub fn gauge(raw: &str) -> Result<Limit, String> {
    let l: Limit = raw.parse()?;
    if l.per_cycle() {
        Err(format!(
            "{raw} is a per-cycle quota; it is counted by ConsumeQuota"
        ))
    } else {
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs() {
        assert_eq!(currency(" USD "), Ok("usd".into()));
        assert!(currency("us").is_err());
        assert!(currency("").unwrap_err().contains("required"));
        assert!(months(0).is_err());
        assert!(months(37).is_err());
        assert_eq!(months(36), Ok(36));
        assert!(plan_code("Starter").is_err());
        assert_eq!(plan_code("growth"), Ok("growth".into()));
        assert!(session_id("cs_test_a1B2").is_ok());
        assert!(session_id("pi_123").is_err());
        assert!(session_id("cs_../../v1/charges").is_err());
        assert!(session_id("cs_").is_err());
        assert!(reason("  ").is_err());
        assert!(reason("a\u{1b}[31m").is_err());
        assert!(idempotency_key(&"k".repeat(201)).is_err());
        assert_eq!(quota("messages_per_month"), Ok(Limit::MessagesPerMonth));
        assert!(quota("seats").is_err());
        assert_eq!(gauge("seats"), Ok(Limit::Seats));
        assert!(gauge("messages_per_month").is_err());
    }
}
