//! Stripe Checkout against the fake Stripe: creating sessions, and verifying them by id —
//! paid, replayed, concurrent, unpaid, expired, foreign, tampered, and Stripe outages.

mod common;

use common::{Harness, STRIPE_KEY, assert_code, ts_secs};
use cos_errors::ErrorCode;
use cos_proto::billing::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_session_extends_the_subscription_once() {
    let h = Harness::start().await;
    h.configure_stripe(STRIPE_KEY).await;
    let (tenant, token) = h.owner();
    let before = h.subscription(&token).await;
    assert_eq!(before.plan, "trial");
    assert_eq!(before.status, "trialing");

    let co = h.checkout(&token, "starter", 3, "USD").await;
    assert!(co.session_id.starts_with("cs_test_"), "{co:?}");
    assert_eq!(co.amount_minor, 3 * 2900);
    assert_eq!(co.currency, "usd");
    assert_eq!(co.status, "open");
    assert!(
        co.url.starts_with("https://checkout.stripe.test/"),
        "{}",
        co.url
    );

    // What reached Stripe: a one-time payment, form-encoded, with our key and metadata.
    let sent = h.stripe.requests();
    let create = sent
        .iter()
        .find(|r| r.method == "POST" && r.path == "/v1/checkout/sessions")
        .expect("create request");
    assert_eq!(create.api_key.as_deref(), Some(STRIPE_KEY));
    assert!(create.idempotency_key.is_some());
    let field = |k: &str| {
        create
            .form
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("form field {k} missing: {:?}", create.form))
    };
    assert_eq!(field("mode"), "payment");
    assert_eq!(field("line_items[0][price_data][currency]"), "usd");
    assert_eq!(field("line_items[0][price_data][unit_amount]"), "2900");
    assert_eq!(field("line_items[0][quantity]"), "3");
    assert_eq!(field("metadata[tenant_id]"), tenant.to_string());
    assert_eq!(field("metadata[plan]"), "starter");
    assert_eq!(field("metadata[months]"), "3");
    assert_eq!(field("client_reference_id"), tenant.to_string());
    assert!(
        field("success_url").ends_with("session_id={CHECKOUT_SESSION_ID}"),
        "{}",
        field("success_url")
    );

    // A buyer who paid but never came back leaves an open session the billing page can find.
    let open = h
        .c()
        .list_checkouts(h.req(
            pb::ListCheckoutsRequest {
                page_size: 0,
                status: "open".into(),
            },
            &token,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(open.checkouts.len(), 1);
    assert_eq!(open.checkouts[0].session_id, co.session_id);

    h.stripe.pay(&co.session_id);
    let v = h.verify(&token, &co.session_id).await.expect("verified");
    assert!(!v.already_applied);
    let sub = v.subscription.expect("subscription");
    assert_eq!(sub.plan, "starter");
    assert_eq!(sub.status, "active");
    // Bought during the trial: the trial's remaining days are kept, three months on top.
    let trial_end = ts_secs(&before.current_period_end);
    let new_end = ts_secs(&sub.current_period_end);
    let three_months_min = 89 * 86_400;
    let three_months_max = 92 * 86_400;
    assert!(
        (trial_end + three_months_min..=trial_end + three_months_max).contains(&new_end),
        "trial end {trial_end}, new end {new_end}"
    );
    assert_eq!(v.checkout.expect("checkout").status, "completed");

    // Replays change nothing.
    for _ in 0..2 {
        let again = h
            .verify(&token, &co.session_id)
            .await
            .expect("replay is fine");
        assert!(again.already_applied);
        assert_eq!(
            ts_secs(&again.subscription.expect("sub").current_period_end),
            new_end
        );
    }
    let applied = h
        .scalar(
            "SELECT count(*) FROM billing.subscription_history WHERE tenant_id = $1 AND checkout_session_id IS NOT NULL",
            tenant,
        )
        .await;
    assert_eq!(applied, 1);
    let history = h
        .c()
        .list_subscription_history(h.req(pb::ListSubscriptionHistoryRequest::default(), &token))
        .await
        .expect("history")
        .into_inner();
    let actions: Vec<&str> = history.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["purchased", "created"]);
    assert_eq!(history.entries[0].checkout_session_id, co.session_id);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_verifies_extend_exactly_once() {
    let h = Harness::start().await;
    h.configure_stripe(STRIPE_KEY).await;
    let (tenant, token) = h.owner();
    let co = h.checkout(&token, "growth", 1, "eur").await;
    h.stripe.pay(&co.session_id);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = h.c();
        let req = h.req(
            pb::VerifyCheckoutRequest {
                session_id: co.session_id.clone(),
            },
            &token,
        );
        tasks.push(tokio::spawn(async move {
            let mut c = client;
            c.verify_checkout(req).await.map(|r| r.into_inner())
        }));
    }
    let mut fresh = 0;
    let mut ends = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.expect("join").expect("every verify succeeds");
        if !r.already_applied {
            fresh += 1;
        }
        ends.insert(ts_secs(&r.subscription.expect("sub").current_period_end));
    }
    assert_eq!(fresh, 1, "exactly one verify applies the payment");
    assert_eq!(
        ends.len(),
        1,
        "every caller sees the same period end: {ends:?}"
    );
    assert_eq!(
        h.scalar(
            "SELECT count(*) FROM billing.subscription_history WHERE tenant_id = $1 AND action <> 'created'",
            tenant
        )
        .await,
        1
    );
    h.stop().await;
}

/// Subscription version and checkout status, to show a refusal changed nothing.
async fn snapshot(h: &Harness, tenant: uuid::Uuid) -> (i64, i64, i64) {
    (
        h.scalar("SELECT version FROM billing.subscriptions WHERE tenant_id = $1", tenant)
            .await,
        h.scalar(
            "SELECT count(*) FROM billing.checkout_sessions WHERE tenant_id = $1 AND status = 'completed'",
            tenant,
        )
        .await,
        h.scalar(
            "SELECT count(*) FROM billing.subscription_history WHERE tenant_id = $1",
            tenant,
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_expired_foreign_and_wrong_amount_sessions_are_refused_and_change_nothing() {
    let h = Harness::start().await;
    h.configure_stripe(STRIPE_KEY).await;
    let (tenant, token) = h.owner();

    // Unpaid (the buyer came back without paying).
    let unpaid = h.checkout(&token, "starter", 1, "usd").await;
    let start = snapshot(&h, tenant).await;
    let err = h.verify(&token, &unpaid.session_id).await.unwrap_err();
    assert_code(&err, ErrorCode::FailedPrecondition);
    assert_eq!(err.metadata_value("reason"), Some("unpaid"));
    assert!(err.message.contains("not paid"), "{}", err.message);
    assert_eq!(snapshot(&h, tenant).await, start);

    // Expired unpaid.
    let expired = h.checkout(&token, "starter", 1, "usd").await;
    h.stripe.expire(&expired.session_id);
    let err = h.verify(&token, &expired.session_id).await.unwrap_err();
    assert_code(&err, ErrorCode::FailedPrecondition);
    assert_eq!(err.metadata_value("reason"), Some("expired"));
    assert_eq!(snapshot(&h, tenant).await, start);

    // Paid, but a different amount than quoted (e.g. a price edited at Stripe).
    let cheap = h.checkout(&token, "growth", 2, "usd").await;
    h.stripe.pay(&cheap.session_id);
    h.stripe.update(&cheap.session_id, |s| {
        s["amount_total"] = serde_json::json!(100)
    });
    let err = h.verify(&token, &cheap.session_id).await.unwrap_err();
    assert_code(&err, ErrorCode::FailedPrecondition);
    assert_eq!(err.metadata_value("reason"), Some("amount_mismatch"));
    assert_eq!(err.metadata_value("expected_amount_minor"), Some("19800"));
    assert_eq!(snapshot(&h, tenant).await, start);

    // Paid in another currency than quoted.
    let other_currency = h.checkout(&token, "growth", 1, "usd").await;
    h.stripe.pay(&other_currency.session_id);
    h.stripe.update(&other_currency.session_id, |s| {
        s["currency"] = serde_json::json!("eur")
    });
    let err = h
        .verify(&token, &other_currency.session_id)
        .await
        .unwrap_err();
    assert_eq!(err.metadata_value("reason"), Some("amount_mismatch"));
    assert_eq!(snapshot(&h, tenant).await, start);

    // Another tenant's paid session: not found in this workspace, for either side.
    let (other, other_token) = h.owner();
    let theirs = h.checkout(&other_token, "starter", 1, "usd").await;
    h.stripe.pay(&theirs.session_id);
    let err = h.verify(&token, &theirs.session_id).await.unwrap_err();
    assert_code(&err, ErrorCode::NotFound);
    assert_eq!(err.violations[0].field, "session_id");
    assert_eq!(snapshot(&h, tenant).await, start);
    assert_eq!(
        h.scalar("SELECT count(*) FROM billing.checkout_sessions WHERE tenant_id = $1 AND status = 'completed'", other).await,
        0
    );

    // Our session whose Stripe metadata was rewritten to another tenant: refused.
    let tampered = h.checkout(&token, "starter", 1, "usd").await;
    h.stripe.pay(&tampered.session_id);
    h.stripe.update(&tampered.session_id, |s| {
        s["metadata"]["tenant_id"] = serde_json::json!(other.to_string())
    });
    let err = h.verify(&token, &tampered.session_id).await.unwrap_err();
    assert_code(&err, ErrorCode::PermissionDenied);
    assert_eq!(snapshot(&h, tenant).await, start);

    // Made-up and malformed ids.
    let err = h.verify(&token, "cs_test_doesnotexist").await.unwrap_err();
    assert_code(&err, ErrorCode::NotFound);
    let err = h
        .verify(&token, "pi_123/../../v1/charges")
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::InvalidArgument);
    assert_eq!(err.violations[0].field, "session_id");

    // The owner of the paid session can still verify it.
    let ok = h
        .verify(&other_token, &theirs.session_id)
        .await
        .expect("theirs verifies");
    assert_eq!(ok.subscription.expect("sub").plan, "starter");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_outages_and_missing_keys_are_clear_and_change_nothing() {
    let h = Harness::start().await;
    let (tenant, token) = h.owner();
    // No key stored and none in the configuration.
    let err = h
        .c()
        .create_checkout(h.req(
            pb::CreateCheckoutRequest {
                plan: "starter".into(),
                months: 1,
                currency: "usd".into(),
            },
            &token,
        ))
        .await
        .map_err(|s| cos_errors::ServiceError::from_status(&s))
        .unwrap_err();
    assert_code(&err, ErrorCode::Unavailable);
    assert!(
        err.message.contains("/v1/admin/integrations/stripe"),
        "{}",
        err.message
    );

    h.configure_stripe(STRIPE_KEY).await;
    let co = h.checkout(&token, "starter", 1, "usd").await;
    h.stripe.pay(&co.session_id);
    let start = snapshot(&h, tenant).await;
    h.stripe.fail_next(&[500, 500, 500, 500]);
    let err = h.verify(&token, &co.session_id).await.unwrap_err();
    assert_code(&err, ErrorCode::Unavailable);
    assert_eq!(snapshot(&h, tenant).await, start);
    // Once Stripe is back, the same session verifies.
    let ok = h
        .verify(&token, &co.session_id)
        .await
        .expect("verifies after the outage");
    assert!(!ok.already_applied);

    // Stripe rejects the key (revoked there): a clear 503, nothing created locally.
    h.stripe.set_keys(&["sk_test_someotherkey000000"]);
    let before = h
        .scalar(
            "SELECT count(*) FROM billing.checkout_sessions WHERE tenant_id = $1",
            tenant,
        )
        .await;
    let err = h
        .c()
        .create_checkout(h.req(
            pb::CreateCheckoutRequest {
                plan: "starter".into(),
                months: 1,
                currency: "usd".into(),
            },
            &token,
        ))
        .await
        .map_err(|s| cos_errors::ServiceError::from_status(&s))
        .unwrap_err();
    assert_code(&err, ErrorCode::Unavailable);
    assert_eq!(
        h.scalar(
            "SELECT count(*) FROM billing.checkout_sessions WHERE tenant_id = $1",
            tenant
        )
        .await,
        before
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_checkout_requests_name_their_fields() {
    let h = Harness::start().await;
    h.configure_stripe(STRIPE_KEY).await;
    let (tenant, token) = h.owner();
    let create = |plan: &str, months: i32, currency: &str| {
        let mut c = h.c();
        let req = h.req(
            pb::CreateCheckoutRequest {
                plan: plan.into(),
                months,
                currency: currency.into(),
            },
            &token,
        );
        async move {
            c.create_checkout(req)
                .await
                .map_err(|s| cos_errors::ServiceError::from_status(&s))
        }
    };
    let err = create("", 0, "dollars").await.unwrap_err();
    assert_code(&err, ErrorCode::InvalidArgument);
    let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["plan", "months", "currency"]);
    let err = create("starter", 37, "usd").await.unwrap_err();
    assert_eq!(err.violations[0].field, "months");
    let err = create("platinum", 1, "usd").await.unwrap_err();
    assert_eq!(err.violations[0].field, "plan");
    let err = create("trial", 1, "usd").await.unwrap_err();
    assert_eq!(err.violations[0].field, "plan");
    let err = create("starter", 1, "jpy").await.unwrap_err();
    assert_eq!(err.violations[0].field, "currency");
    assert!(err.message.contains("eur, gbp, usd"), "{}", err.message);
    assert_eq!(
        h.scalar(
            "SELECT count(*) FROM billing.checkout_sessions WHERE tenant_id = $1",
            tenant
        )
        .await,
        0
    );
    assert!(h.stripe.session_ids().is_empty(), "nothing reached Stripe");

    // Viewers and admins may not buy; only owners (billing.manage).
    let admin = h.token_for(&h.principal(tenant, cos_auth::Role::Admin, false));
    let err = h
        .c()
        .create_checkout(h.req(
            pb::CreateCheckoutRequest {
                plan: "starter".into(),
                months: 1,
                currency: "usd".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_stripe_key_applies_without_a_restart() {
    let h = Harness::start().await;
    let second = "sk_test_51SecondKeyAfterRotation0000abcd";
    h.stripe.set_keys(&[STRIPE_KEY, second]);
    h.configure_stripe(STRIPE_KEY).await;
    let (_, token) = h.owner();
    h.checkout(&token, "starter", 1, "usd").await;
    h.configure_stripe(second).await;
    h.checkout(&token, "starter", 1, "usd").await;
    let keys: Vec<Option<String>> = h
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.api_key)
        .collect();
    assert_eq!(keys, [Some(STRIPE_KEY.to_owned()), Some(second.to_owned())]);
    h.stop().await;
}
