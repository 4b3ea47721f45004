//! What a Checkout session must look like, as Stripe reports it, before it may extend a
//! subscription.

use std::collections::HashMap;

use uuid::Uuid;

/// Stripe's `status` of a Checkout session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    Open,
    Complete,
    Expired,
    Other(String),
}

/// Stripe's `payment_status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentState {
    Paid,
    Unpaid,
    NoPaymentRequired,
    Other(String),
}

/// A Checkout session as the payment provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutState {
    pub id: String,
    pub url: Option<String>,
    pub status: SessionState,
    pub payment_status: PaymentState,
    pub amount_total: Option<i64>,
    /// Lower-case ISO currency.
    pub currency: Option<String>,
    pub client_reference_id: Option<String>,
    pub metadata: HashMap<String, String>,
    /// `payment`, `subscription` or `setup`.
    pub mode: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// What we quoted when we created the session (our own record, found under row-level security
/// in the caller's tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRecord {
    pub id: String,
    pub tenant_id: Uuid,
    pub plan_code: String,
    pub months: i32,
    pub currency: String,
    pub amount_minor: i64,
}

/// Why a session may not extend anything. Each maps to a clear client error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Still open: the buyer has not paid (yet).
    Unpaid,
    /// Stripe expired the session unpaid.
    Expired,
    /// The session says it belongs to another tenant (or was tampered with).
    ForeignTenant,
    /// Amount or currency differ from what was quoted.
    AmountMismatch {
        expected: i64,
        expected_currency: String,
        actual: Option<i64>,
        actual_currency: Option<String>,
    },
    /// Plan or months in the session differ from our record, or the mode is not `payment`.
    Mismatch(&'static str),
}

/// Checks, in order: the session is ours (same id, tenant in metadata and client reference, a
/// one-time payment for the plan and months we recorded), it is complete and paid, and it
/// charged exactly the quoted amount in the quoted currency.
pub fn verify_paid(record: &CheckoutRecord, state: &CheckoutState) -> Result<(), Refusal> {
    if state.id != record.id {
        return Err(Refusal::Mismatch("session id"));
    }
    let tenant = record.tenant_id.to_string();
    if state.metadata.get("tenant_id") != Some(&tenant)
        || state.client_reference_id.as_deref() != Some(tenant.as_str())
    {
        return Err(Refusal::ForeignTenant);
    }
    if state.mode != "payment" {
        return Err(Refusal::Mismatch("mode"));
    }
    if state.metadata.get("plan") != Some(&record.plan_code) {
        return Err(Refusal::Mismatch("plan"));
    }
    if state.metadata.get("months") != Some(&record.months.to_string()) {
        return Err(Refusal::Mismatch("months"));
    }
    match (&state.status, &state.payment_status) {
        (SessionState::Expired, _) => return Err(Refusal::Expired),
        (SessionState::Complete, PaymentState::Paid) => {}
        _ => return Err(Refusal::Unpaid),
    }
    let currency = state.currency.as_deref().map(str::to_ascii_lowercase);
    if state.amount_total != Some(record.amount_minor)
        || currency.as_deref() != Some(record.currency.as_str())
    {
        return Err(Refusal::AmountMismatch {
            expected: record.amount_minor,
            expected_currency: record.currency.clone(),
            actual: state.amount_total,
            actual_currency: currency,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CheckoutRecord {
        CheckoutRecord {
            id: "cs_test_abc".into(),
            tenant_id: Uuid::from_u128(7),
            plan_code: "starter".into(),
            months: 3,
            currency: "usd".into(),
            amount_minor: 8700,
        }
    }

    fn paid() -> CheckoutState {
        let tenant = Uuid::from_u128(7).to_string();
        CheckoutState {
            id: "cs_test_abc".into(),
            url: None,
            status: SessionState::Complete,
            payment_status: PaymentState::Paid,
            amount_total: Some(8700),
            currency: Some("usd".into()),
            client_reference_id: Some(tenant.clone()),
            metadata: [
                ("tenant_id".to_owned(), tenant),
                ("plan".to_owned(), "starter".to_owned()),
                ("months".to_owned(), "3".to_owned()),
            ]
            .into(),
            mode: "payment".into(),
            expires_at: 0,
        }
    }

    #[test]
    fn a_paid_session_for_the_quote_passes() {
        assert_eq!(verify_paid(&record(), &paid()), Ok(()));
        let mut upper = paid();
        upper.currency = Some("USD".into());
        assert_eq!(verify_paid(&record(), &upper), Ok(()));
    }

    #[test]
    fn unpaid_and_expired_sessions_are_refused() {
        let mut open = paid();
        open.status = SessionState::Open;
        open.payment_status = PaymentState::Unpaid;
        assert_eq!(verify_paid(&record(), &open), Err(Refusal::Unpaid));
        let mut complete_unpaid = paid();
        complete_unpaid.payment_status = PaymentState::Unpaid;
        assert_eq!(
            verify_paid(&record(), &complete_unpaid),
            Err(Refusal::Unpaid)
        );
        let mut free = paid();
        free.payment_status = PaymentState::NoPaymentRequired;
        assert_eq!(verify_paid(&record(), &free), Err(Refusal::Unpaid));
        let mut expired = paid();
        expired.status = SessionState::Expired;
        expired.payment_status = PaymentState::Unpaid;
        assert_eq!(verify_paid(&record(), &expired), Err(Refusal::Expired));
    }

    #[test]
    fn another_tenants_session_is_refused() {
        let mut foreign = paid();
        foreign
            .metadata
            .insert("tenant_id".into(), Uuid::from_u128(8).to_string());
        assert_eq!(
            verify_paid(&record(), &foreign),
            Err(Refusal::ForeignTenant)
        );
        let mut no_ref = paid();
        no_ref.client_reference_id = None;
        assert_eq!(verify_paid(&record(), &no_ref), Err(Refusal::ForeignTenant));
    }

    #[test]
    fn a_different_amount_currency_plan_or_mode_is_refused() {
        let mut cheaper = paid();
        cheaper.amount_total = Some(2900);
        assert!(matches!(
            verify_paid(&record(), &cheaper),
            Err(Refusal::AmountMismatch {
                expected: 8700,
                actual: Some(2900),
                ..
            })
        ));
        let mut euro = paid();
        euro.currency = Some("eur".into());
        assert!(matches!(
            verify_paid(&record(), &euro),
            Err(Refusal::AmountMismatch { .. })
        ));
        let mut plan = paid();
        plan.metadata.insert("plan".into(), "enterprise".into());
        assert_eq!(
            verify_paid(&record(), &plan),
            Err(Refusal::Mismatch("plan"))
        );
        let mut months = paid();
        months.metadata.insert("months".into(), "36".into());
        assert_eq!(
            verify_paid(&record(), &months),
            Err(Refusal::Mismatch("months"))
        );
        let mut sub = paid();
        sub.mode = "subscription".into();
        assert_eq!(verify_paid(&record(), &sub), Err(Refusal::Mismatch("mode")));
    }
}
