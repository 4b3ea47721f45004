//! Billing end to end through the gateway: a platform admin stores the Stripe keys, an owner
//! buys months of a plan with Stripe Checkout (a local Stripe stand-in), comes back and verifies
//! the session by id; replays, races, unpaid, expired, foreign and wrong-amount sessions.

mod common;

use common::{TestMesh, access_token, assert_problem, spawn_mesh_with};
use cos_testkit::stripe::FakeStripe;
use serde_json::{Value, json};

const STRIPE_KEY: &str = "sk_test_51E2eCheckoutKey0123456789abcdefWXYZ";

async fn mesh_with_stripe() -> (TestMesh, FakeStripe) {
    let stripe = FakeStripe::start(&[STRIPE_KEY]).await.expect("fake stripe");
    let t = spawn_mesh_with(&[("COS_BILLING__STRIPE_API_BASE", stripe.url.as_str())]).await;
    (t, stripe)
}

/// A platform administrator's token (registered, granted by the operator, signed in again).
async fn platform_admin(t: &TestMesh) -> String {
    let email = format!("ops-{}@platform.example", uuid::Uuid::new_v4().simple());
    t.register(&email, "Platform Ops").await;
    t.grant_platform_admin(&email).await;
    access_token(&t.login(&email, None).await)
}

async fn configure_stripe(t: &TestMesh, admin: &str) {
    let (s, _, _) = t
        .call(
            reqwest::Method::PUT,
            "/v1/admin/integrations/stripe",
            Some(admin),
            Some(json!({"values": {"secret_key": STRIPE_KEY}, "reason": "launch payments"})),
        )
        .await;
    assert_eq!(s, 200);
}

fn int(v: &Value) -> i64 {
    v.as_str()
        .map(|s| s.parse().expect("int64 string"))
        .or_else(|| v.as_i64())
        .unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn secs(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("timestamp"))
        .expect("rfc3339")
        .timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_buys_months_and_verifies_the_session_once() {
    let (t, stripe) = mesh_with_stripe().await;
    let admin = platform_admin(&t).await;
    let owner = t.register("buyer@example.com", "Buyer Co").await;
    let token = access_token(&owner);
    let tenant = owner["tenant"]["id"].as_str().unwrap().to_owned();

    // Plans are public to members; the tenant starts on the trial.
    let (s, plans) = t.get("/v1/billing/plans", Some(&token)).await;
    assert_eq!(s, 200, "{plans}");
    let starter = plans["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["code"] == "starter")
        .unwrap();
    assert!(
        starter["prices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["currency"] == "usd")
    );
    let (s, sub) = t.get("/v1/billing/subscription", Some(&token)).await;
    assert_eq!(s, 200, "{sub}");
    assert_eq!(sub["plan"], "trial");
    assert_eq!(sub["status"], "trialing");

    // Without keys, payments are clearly unavailable; the admin stores the key (masked back).
    let (s, body) = t
        .post(
            "/v1/billing/checkout",
            Some(&token),
            json!({"plan": "starter", "months": 2, "currency": "usd"}),
        )
        .await;
    assert_problem(s, &body, 503, None);
    let (s, shown, _) = t
        .call(
            reqwest::Method::PUT,
            "/v1/admin/integrations/stripe",
            Some(&admin),
            Some(json!({"values": {"secret_key": STRIPE_KEY}, "reason": "launch payments"})),
        )
        .await;
    assert_eq!(s, 200, "{shown}");
    assert_eq!(shown["values"]["secret_key"], "sk_test_…WXYZ");
    assert!(!shown.to_string().contains(STRIPE_KEY));
    let (s, shown) = t.get("/v1/admin/integrations/stripe", Some(&admin)).await;
    assert_eq!(s, 200);
    assert!(!shown.to_string().contains(STRIPE_KEY));
    // Members cannot read or change platform settings.
    let (s, body) = t.get("/v1/admin/integrations/stripe", Some(&token)).await;
    assert_problem(s, &body, 403, None);

    let (s, co) = t
        .post(
            "/v1/billing/checkout",
            Some(&token),
            json!({"plan": "starter", "months": 2, "currency": "usd"}),
        )
        .await;
    assert_eq!(s, 201, "{co}");
    assert_eq!(int(&co["amount_minor"]), 5800);
    let session = co["session_id"].as_str().unwrap().to_owned();
    assert!(co["url"].as_str().unwrap().contains(&session));
    let create = stripe
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(create.api_key.as_deref(), Some(STRIPE_KEY));
    assert!(
        create
            .form
            .iter()
            .any(|(k, v)| k == "metadata[tenant_id]" && *v == tenant)
    );

    // The buyer pays on Stripe and comes back with the session id.
    stripe.pay(&session);
    let (s, v) = t
        .post(
            &format!("/v1/billing/checkout/{session}/verify"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["already_applied"], false);
    assert_eq!(v["subscription"]["plan"], "starter");
    assert_eq!(v["subscription"]["status"], "active");
    let end = secs(&v["subscription"]["current_period_end"]);
    let trial_end = secs(&sub["current_period_end"]);
    assert!(
        end >= trial_end + 58 * 86_400 && end <= trial_end + 63 * 86_400,
        "{end} vs {trial_end}"
    );

    // A reload of the return page verifies again: nothing more happens.
    let (s, again) = t
        .post(
            &format!("/v1/billing/checkout/{session}/verify"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(again["already_applied"], true);
    assert_eq!(secs(&again["subscription"]["current_period_end"]), end);

    let (s, history) = t
        .get("/v1/billing/subscription/history", Some(&token))
        .await;
    assert_eq!(s, 200);
    let actions: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["purchased", "created"]);
    let (s, ent) = t.get("/v1/billing/entitlements", Some(&token)).await;
    assert_eq!(s, 200);
    assert_eq!(ent["plan"], "starter");
    assert_eq!(int(&ent["limits"]["seats"]["value"]), 3);
    let (s, usage) = t.get("/v1/billing/usage", Some(&token)).await;
    assert_eq!(s, 200, "{usage}");
    assert_eq!(usage["items"].as_array().unwrap().len(), 7);

    // The platform admin sees the tenant with its plan.
    let (s, list) = t
        .get("/v1/admin/billing/tenants?status=active", Some(&admin))
        .await;
    assert_eq!(s, 200, "{list}");
    assert!(
        list["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["subscription"]["tenant_id"] == tenant.as_str()
                && row["subscription"]["plan"] == "starter")
    );
    stripe.stop();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_verifies_through_the_gateway_extend_once() {
    let (t, stripe) = mesh_with_stripe().await;
    let admin = platform_admin(&t).await;
    configure_stripe(&t, &admin).await;
    let owner = t.register("racer@example.com", "Racer Co").await;
    let token = access_token(&owner);
    let (s, co) = t
        .post(
            "/v1/billing/checkout",
            Some(&token),
            json!({"plan": "growth", "months": 1, "currency": "eur"}),
        )
        .await;
    assert_eq!(s, 201, "{co}");
    let session = co["session_id"].as_str().unwrap().to_owned();
    stripe.pay(&session);
    let path = format!("/v1/billing/checkout/{session}/verify");
    let calls = (0..6).map(|_| t.post(&path, Some(&token), json!({})));
    let results = futures::future::join_all(calls).await;
    let fresh = results
        .iter()
        .inspect(|(s, b)| assert_eq!(*s, 200, "{b}"))
        .filter(|(_, b)| b["already_applied"] == false)
        .count();
    assert_eq!(fresh, 1);
    let ends: std::collections::BTreeSet<i64> = results
        .iter()
        .map(|(_, b)| secs(&b["subscription"]["current_period_end"]))
        .collect();
    assert_eq!(ends.len(), 1);
    let applied = t
        .count("SELECT count(*) FROM billing.subscription_history WHERE checkout_session_id IS NOT NULL")
        .await;
    assert_eq!(applied, 1);
    stripe.stop();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sessions_are_refused_with_problems_and_change_nothing() {
    let (t, stripe) = mesh_with_stripe().await;
    let admin = platform_admin(&t).await;
    configure_stripe(&t, &admin).await;
    let owner = t.register("careful@example.com", "Careful Co").await;
    let token = access_token(&owner);
    let other = access_token(&t.register("other@example.com", "Other Co").await);
    let checkout = |tok: String, plan: &'static str| {
        let t = &t;
        async move {
            let (s, co) = t
                .post(
                    "/v1/billing/checkout",
                    Some(&tok),
                    json!({"plan": plan, "months": 1, "currency": "usd"}),
                )
                .await;
            assert_eq!(s, 201, "{co}");
            co["session_id"].as_str().unwrap().to_owned()
        }
    };
    let verify = |tok: String, session: String| {
        let t = &t;
        async move {
            t.post(
                &format!("/v1/billing/checkout/{session}/verify"),
                Some(&tok),
                json!({}),
            )
            .await
        }
    };
    let (_, before) = t.get("/v1/billing/subscription", Some(&token)).await;

    let unpaid = checkout(token.clone(), "starter").await;
    let (s, body) = verify(token.clone(), unpaid).await;
    assert_problem(s, &body, 409, None);
    assert_eq!(body["metadata"]["reason"], "unpaid");

    let expired = checkout(token.clone(), "starter").await;
    stripe.expire(&expired);
    let (s, body) = verify(token.clone(), expired).await;
    assert_problem(s, &body, 409, None);
    assert_eq!(body["metadata"]["reason"], "expired");

    let cheap = checkout(token.clone(), "growth").await;
    stripe.pay(&cheap);
    stripe.update(&cheap, |s| s["amount_total"] = json!(1));
    let (s, body) = verify(token.clone(), cheap).await;
    assert_problem(s, &body, 409, None);
    assert_eq!(body["metadata"]["reason"], "amount_mismatch");

    let theirs = checkout(other.clone(), "starter").await;
    stripe.pay(&theirs);
    let (s, body) = verify(token.clone(), theirs.clone()).await;
    assert_problem(s, &body, 404, Some("session_id"));

    let (s, body) = verify(token.clone(), "not-a-session".into()).await;
    assert_problem(s, &body, 422, Some("session_id"));
    let (s, body) = t
        .post(
            "/v1/billing/checkout",
            Some(&token),
            json!({"plan": "starter", "months": 0, "currency": "usd"}),
        )
        .await;
    assert_problem(s, &body, 422, Some("months"));

    let (_, after) = t.get("/v1/billing/subscription", Some(&token)).await;
    assert_eq!(before["version"], after["version"]);
    assert_eq!(after["plan"], "trial");
    assert_eq!(
        t.count("SELECT count(*) FROM billing.checkout_sessions WHERE status = 'completed'")
            .await,
        0
    );
    // The rightful owner can still use theirs.
    let (s, body) = verify(other, theirs).await;
    assert_eq!(s, 200, "{body}");
    stripe.stop();
    t.stop().await;
}
