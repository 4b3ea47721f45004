//! The gateway's Redis rate limits: login attempts per IP, and requests per tenant.

mod common;

use common::{access_token, assert_problem, spawn_mesh_with};
use serde_json::json;

#[tokio::test]
async fn the_login_attempt_past_the_limit_gets_429_with_retry_after() {
    let limit = 5;
    let t = spawn_mesh_with(&[("COS_GATEWAY__RATE_LIMIT__AUTH_PER_IP_PER_MINUTE", "5")]).await;
    for i in 0..limit {
        let (status, body) = t
            .post(
                "/v1/auth/login",
                None,
                json!({"email": "who@example.com", "password": "guess guess guess"}),
            )
            .await;
        assert_eq!(status, 401, "attempt {i}: {body}");
    }
    let (status, body, headers) = t
        .call(
            reqwest::Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": "who@example.com", "password": "guess guess guess"})),
        )
        .await;
    assert_problem(status, &body, 429, None);
    assert_eq!(body["code"], "rate_limited");
    let retry: u64 = headers
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Other routes from the same IP are still served (the auth class is separate).
    let (status, _) = t.get("/.well-known/jwks.json", None).await;
    assert_eq!(status, 200);
    t.stop().await;
}

#[tokio::test]
async fn a_tenant_over_its_per_minute_budget_gets_429() {
    let t = spawn_mesh_with(&[("COS_GATEWAY__RATE_LIMIT__PER_TENANT_PER_MINUTE", "3")]).await;
    let a = t.register("busy@example.com", "Busy").await;
    let b = t.register("calm@example.com", "Calm").await;
    for _ in 0..3 {
        let (status, _) = t.get("/v1/me", Some(&access_token(&a))).await;
        assert_eq!(status, 200);
    }
    let (status, body) = t.get("/v1/me", Some(&access_token(&a))).await;
    assert_problem(status, &body, 429, None);
    assert_eq!(body["metadata"]["scope"], "tenant");
    // Another tenant is unaffected.
    let (status, _) = t.get("/v1/me", Some(&access_token(&b))).await;
    assert_eq!(status, 200);
    t.stop().await;
}
