//! Plan gating end to end through the gateway: seats and API keys (identity), contacts
//! (segmentation) refused at the limit with 402 problem+json naming the limit, its value and the
//! usage, with nothing written; grace, then read-only after expiry; suspension (403 on
//! everything but billing and export).

mod common;

use common::{TestMesh, access_token, assert_problem};
use cos_testkit::stripe::FakeStripe;
use serde_json::{Value, json};

/// The mesh with identity pointed at billing (seat and API-key limits enforced).
async fn spawn_mesh_with(extra: &[(&str, &str)]) -> TestMesh {
    let db = common::test_database().await;
    let amqp = cos_testkit::TestAmqp::new();
    let mut settings = common::test_settings(&db, &amqp, extra);
    let keyring = cos_crypto::KeyRing::generate("test1").expect("key ring");
    let listeners = campaign_os::MeshListeners::ephemeral()
        .await
        .expect("listeners");
    let billing = listeners.billing.local_addr().expect("billing addr");
    settings.identity.billing_url = Some(format!("http://127.0.0.1:{}", billing.port()));
    let mesh = campaign_os::Mesh::start(settings.clone(), keyring.clone(), listeners)
        .await
        .expect("mesh starts");
    TestMesh {
        url: mesh.gateway_url(),
        mesh: Some(mesh),
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("client"),
        db,
        amqp,
        keyring,
        settings,
    }
}

async fn spawn_mesh() -> TestMesh {
    spawn_mesh_with(&[]).await
}

async fn platform_admin(t: &TestMesh) -> String {
    let email = format!("ops-{}@platform.example", uuid::Uuid::new_v4().simple());
    t.register(&email, "Platform Ops").await;
    t.grant_platform_admin(&email).await;
    access_token(&t.login(&email, None).await)
}

fn tenant_of(auth: &Value) -> String {
    auth["tenant"]["id"].as_str().expect("tenant id").to_owned()
}

fn assert_plan_limit(status: u16, body: &Value, limit: &str, value: &str, usage: &str) {
    assert_problem(status, body, 402, None);
    assert_eq!(body["code"], "plan_limit", "{body}");
    assert_eq!(body["metadata"]["limit"], limit, "{body}");
    assert_eq!(body["metadata"]["value"], value, "{body}");
    assert_eq!(body["metadata"]["usage"], usage, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(value),
        "the message names the limit's value: {detail}"
    );
}

async fn override_sub(t: &TestMesh, admin: &str, tenant: &str, body: Value) -> Value {
    let (s, b) = t
        .post(
            &format!("/v1/admin/tenants/{tenant}/subscription:override"),
            Some(admin),
            body,
        )
        .await;
    assert_eq!(s, 200, "override: {b}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_and_api_keys_stop_at_the_plan_limit_and_write_nothing() {
    let t = spawn_mesh().await;
    let owner = t.register("owner@limits.example", "Limits Co").await;
    let token = access_token(&owner);
    let tenant = tenant_of(&owner);
    for who in ["second@limits.example", "third@limits.example"] {
        t.register(who, "Elsewhere").await;
    }
    // The trial has 2 seats: the owner and one more.
    let (s, b) = t
        .post(
            "/v1/members",
            Some(&token),
            json!({"email": "second@limits.example", "role": "editor"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = t
        .post(
            "/v1/members",
            Some(&token),
            json!({"email": "third@limits.example", "role": "viewer"}),
        )
        .await;
    assert_plan_limit(s, &b, "seats", "2", "2");
    let (_, members) = t.get("/v1/members", Some(&token)).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 2);

    // One API key on the trial.
    let (s, b) = t
        .post("/v1/api-keys", Some(&token), json!({"name": "n8n"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = t
        .post("/v1/api-keys", Some(&token), json!({"name": "zapier"}))
        .await;
    assert_plan_limit(s, &b, "api_keys", "1", "1");
    assert_eq!(
        t.count("SELECT count(*) FROM identity.api_keys WHERE revoked_at IS NULL")
            .await,
        1
    );
    let (_, audit) = t.get("/v1/audit-log", Some(&token)).await;
    assert!(
        !audit.to_string().contains("zapier"),
        "a refused creation leaves no audit entry"
    );
    // Usage pages see what identity reported.
    cos_testkit::eventually(std::time::Duration::from_secs(10), || async {
        let (_, u) = t.get("/v1/billing/usage", Some(&token)).await;
        let seats = u["items"]
            .as_array()?
            .iter()
            .find(|i| i["limit"] == "seats")?
            .clone();
        (seats["used"] == "2").then_some(())
    })
    .await
    .expect("seats reported to billing");

    // A bigger plan applies at once (billing drops the cached entitlements).
    let admin = platform_admin(&t).await;
    override_sub(
        &t,
        &admin,
        &tenant,
        json!({"plan": "growth", "comp": true, "extend_days": 30, "reason": "upgrade"}),
    )
    .await;
    let (s, b) = t
        .post(
            "/v1/members",
            Some(&token),
            json!({"email": "third@limits.example", "role": "viewer"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    t.stop().await;
}

/// The contacts gauge on the usage page, once segmentation has reported it.
async fn contacts_used(t: &TestMesh, token: &str) -> Option<String> {
    let (_, u) = t.get("/v1/billing/usage", Some(token)).await;
    let item = u["items"]
        .as_array()?
        .iter()
        .find(|i| i["limit"] == "contacts")?
        .clone();
    item["reported_at"].as_str()?;
    item["used"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_stop_at_the_plan_limit() {
    let t = spawn_mesh().await;
    let admin = platform_admin(&t).await;
    let owner = t.register("contacts@limits.example", "Contacts Co").await;
    let token = access_token(&owner);
    // Shrink the trial's contact limit to 2 (platform admin plan edit).
    let (_, plans) = t.get("/v1/billing/plans", Some(&token)).await;
    let trial = plans["plans"].as_array().unwrap()[0].clone();
    assert_eq!(trial["code"], "trial");
    let mut ent = trial["entitlements"].clone();
    ent["contacts"] = json!({"value": "2", "unlimited": false});
    let (s, b, _) = t
        .call(
            reqwest::Method::PUT,
            "/v1/admin/billing/plans/trial",
            Some(&admin),
            Some(json!({
                "name": trial["name"], "description": trial["description"], "purchasable": false,
                "prices": [], "entitlements": ent, "sort_order": 0, "version": trial["version"],
                "reason": "test: tiny contact limit",
            })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    for i in 0..2 {
        let (s, b) = t
            .post(
                "/v1/contacts",
                Some(&token),
                json!({"contact": {"email": format!("c{i}@x.example")}}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = t
        .post(
            "/v1/contacts",
            Some(&token),
            json!({"contact": {"email": "c2@x.example"}}),
        )
        .await;
    assert_plan_limit(s, &b, "contacts", "2", "2");
    assert_eq!(
        t.count("SELECT count(*) FROM segmentation.contacts WHERE deleted_at IS NULL")
            .await,
        2
    );
    // The usage page shows the count segmentation reported (its usage worker), and follows a
    // delete.
    let wait = std::time::Duration::from_secs(30);
    cos_testkit::eventually(wait, || async {
        (contacts_used(&t, &token).await.as_deref() == Some("2")).then_some(())
    })
    .await
    .expect("contacts reported to billing");
    let (_, list) = t.get("/v1/contacts", Some(&token)).await;
    let id = list["contacts"][0]["id"].as_str().unwrap().to_owned();
    let (s, b, _) = t
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/contacts/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert!(s == 200 || s == 204, "{s} {b}");
    cos_testkit::eventually(wait, || async {
        (contacts_used(&t, &token).await.as_deref() == Some("1")).then_some(())
    })
    .await
    .expect("the delete reported to billing");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_subscription_has_grace_then_becomes_read_only_until_renewed() {
    let stripe = FakeStripe::start(&["sk_test_renewal0000000000000000"])
        .await
        .unwrap();
    let t = spawn_mesh_with(&[("COS_BILLING__STRIPE_API_BASE", stripe.url.as_str())]).await;
    let admin = platform_admin(&t).await;
    let (s, _, _) = t
        .call(
            reqwest::Method::PUT,
            "/v1/admin/integrations/stripe",
            Some(&admin),
            Some(json!({"values": {"secret_key": "sk_test_renewal0000000000000000"}})),
        )
        .await;
    assert_eq!(s, 200);
    let owner = t.register("lapse@limits.example", "Lapse Co").await;
    let token = access_token(&owner);
    let tenant = tenant_of(&owner);
    t.get("/v1/billing/subscription", Some(&token)).await;

    // The period ended yesterday: grace, everything still works.
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let sub = override_sub(
        &t,
        &admin,
        &tenant,
        json!({"period_end": yesterday, "reason": "test: lapse"}),
    )
    .await;
    assert_eq!(sub["status"], "grace");
    let (s, b) = t
        .post(
            "/v1/contacts",
            Some(&token),
            json!({"contact": {"email": "grace@x.example"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");

    // Ten days later (past the 7-day grace): read-only.
    let sub = override_sub(
        &t,
        &admin,
        &tenant,
        json!({"extend_days": -10, "reason": "test: past grace"}),
    )
    .await;
    assert_eq!(sub["status"], "expired");
    assert_eq!(sub["read_only"], true);
    let writes = [
        (
            "/v1/contacts",
            json!({"contact": {"email": "late@x.example"}}),
        ),
        ("/v1/api-keys", json!({"name": "late"})),
        (
            "/v1/members",
            json!({"email": "lapse@limits.example", "role": "viewer"}),
        ),
    ];
    for (path, body) in &writes {
        let (s, b) = t.post(path, Some(&token), body.clone()).await;
        assert_problem(s, &b, 402, None);
        assert_eq!(b["metadata"]["status"], "expired", "{path}: {b}");
    }
    assert_eq!(t.count("SELECT count(*) FROM identity.api_keys").await, 0);
    assert_eq!(
        t.count("SELECT count(*) FROM segmentation.contacts WHERE email = 'late@x.example'")
            .await,
        0
    );
    // Existing contacts still take changes (an unsubscribe must always be recordable).
    let (s, b) = t
        .post(
            "/v1/contacts:upsert",
            Some(&token),
            json!({"contact": {"email": "grace@x.example",
                "consent": [{"channel": "email", "state": "unsubscribed", "source": "link"}]}}),
        )
        .await;
    assert_eq!((s, b["outcome"].as_str()), (200, Some("updated")), "{b}");
    // Reads and export keep working.
    for path in [
        "/v1/contacts",
        "/v1/members",
        "/v1/billing/subscription",
        "/v1/billing/usage",
    ] {
        let (s, b) = t.get(path, Some(&token)).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
    let (s, _, _) = t
        .call(
            reqwest::Method::GET,
            "/v1/contacts:export",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 200);

    // Renewing through Checkout lifts it.
    let (s, co) = t
        .post(
            "/v1/billing/checkout",
            Some(&token),
            json!({"plan": "starter", "months": 1, "currency": "usd"}),
        )
        .await;
    assert_eq!(s, 201, "{co}");
    let session = co["session_id"].as_str().unwrap().to_owned();
    stripe.pay(&session);
    let (s, v) = t
        .post(
            &format!("/v1/billing/checkout/{session}/verify"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["subscription"]["status"], "active");
    let (s, b) = t
        .post("/v1/api-keys", Some(&token), json!({"name": "renewed"}))
        .await;
    assert_eq!(s, 201, "{b}");
    stripe.stop();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_tenant_keeps_only_billing_and_export() {
    let t = spawn_mesh().await;
    let admin = platform_admin(&t).await;
    let owner = t.register("suspended@limits.example", "Suspended Co").await;
    let token = access_token(&owner);
    let tenant = tenant_of(&owner);
    let (s, key) = t
        .post("/v1/api-keys", Some(&token), json!({"name": "script"}))
        .await;
    assert_eq!(s, 201, "{key}");
    let api_key = key["secret"].as_str().unwrap().to_owned();

    let (s, b) = t
        .post(
            &format!("/v1/admin/tenants/{tenant}:suspend"),
            Some(&admin),
            json!({"reason": "chargeback"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "suspended");
    for path in [
        "/v1/members",
        "/v1/contacts",
        "/v1/api-keys",
        "/v1/audit-log",
    ] {
        let (s, b) = t.get(path, Some(&token)).await;
        assert_problem(s, &b, 403, None);
        assert_eq!(b["metadata"]["status"], "suspended", "{path}: {b}");
    }
    let (s, b) = t
        .post(
            "/v1/contacts",
            Some(&token),
            json!({"contact": {"email": "x@x.example"}}),
        )
        .await;
    assert_problem(s, &b, 403, None);
    // API keys of the tenant are suspended too.
    let (s, b) = t.get("/v1/contacts", Some(&api_key)).await;
    assert_problem(s, &b, 403, None);
    // Billing, export and the caller's own profile stay available.
    for path in [
        "/v1/billing/subscription",
        "/v1/billing/usage",
        "/v1/billing/plans",
        "/v1/me",
        "/v1/tenants",
    ] {
        let (s, b) = t.get(path, Some(&token)).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
    let (s, _, _) = t
        .call(
            reqwest::Method::GET,
            "/v1/contacts:export",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 200);
    // The audit names who and why.
    let (s, audit) = t
        .get(
            &format!("/v1/admin/tenants/{tenant}/billing/audit"),
            Some(&admin),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(audit["entries"][0]["action"], "suspended");
    assert_eq!(audit["entries"][0]["reason"], "chargeback");
    assert!(
        !audit["entries"][0]["actor_user_id"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    let (s, b) = t
        .post(
            &format!("/v1/admin/tenants/{tenant}:unsuspend"),
            Some(&admin),
            json!({"reason": "paid"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = t.get("/v1/members", Some(&token)).await;
    assert_eq!(s, 200, "{b}");
    t.stop().await;
}
