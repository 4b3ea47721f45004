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

#[tokio::test]
async fn rejected_and_unknown_requests_still_spend_the_ip_budget() {
    let t = spawn_mesh_with(&[("COS_GATEWAY__RATE_LIMIT__PER_IP_PER_MINUTE", "4")]).await;
    let (s1, _) = t.get("/v1/me", None).await;
    let (s2, _) = t.get("/v1/me", Some("forged.token.here")).await;
    let (s3, _) = t.get("/v1/does-not-exist", None).await;
    let (s4, _, _) = t.call(reqwest::Method::DELETE, "/v1/me", None, None).await;
    assert_eq!((s1, s2, s3, s4), (401, 401, 404, 405));
    let (status, body) = t.get("/v1/me", None).await;
    assert_problem(status, &body, 429, None);
    assert_eq!(body["metadata"]["scope"], "ip");
    t.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_last_forwarded_hop_is_the_client() {
    let t = spawn_mesh_with(&[
        ("COS_GATEWAY__RATE_LIMIT__PER_IP_PER_MINUTE", "2"),
        ("COS_GATEWAY__TRUST_FORWARDED_FOR", "true"),
    ])
    .await;
    let send = |xff: &'static str| {
        t.http
            .get(t.url("/.well-known/jwks.json"))
            .header("x-forwarded-for", xff)
            .send()
    };
    // A client forging the first hop does not get a fresh budget: the proxy's hop decides.
    for forged in ["1.1.1.1, 203.0.113.7", "2.2.2.2, 203.0.113.7"] {
        assert_eq!(send(forged).await.unwrap().status(), 200);
    }
    assert_eq!(send("3.3.3.3, 203.0.113.7").await.unwrap().status(), 429);
    // Another real client behind the same proxy has its own budget.
    assert_eq!(send("198.51.100.9").await.unwrap().status(), 200);
    t.stop().await;
}

#[tokio::test]
async fn without_redis_the_gateway_still_serves_unlimited() {
    let t = spawn_mesh_with(&[
        ("COS_REDIS__URL", "redis://127.0.0.1:1"),
        ("COS_GATEWAY__RATE_LIMIT__AUTH_PER_IP_PER_MINUTE", "1"),
    ])
    .await;
    let a = t.register("noredis@example.com", "No Redis").await;
    let (status, _) = t.get("/v1/me", Some(&access_token(&a))).await;
    assert_eq!(status, 200);
    // The limiter fails open: a second auth call is not refused.
    t.login("noredis@example.com", None).await;
    let admin = t.mesh.as_ref().unwrap().gateway_admin_addr.unwrap();
    let ready = t
        .http
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // After the first failure the breaker opens: later requests do not even try Redis.
    let metrics = t
        .http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cos_gateway_rate_limiter_errors_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cos_gateway_rate_limiter_skipped_total"),
        "{metrics}"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_unusable_last_forwarded_hop_falls_back_to_the_peer_not_to_a_forged_one() {
    let t = spawn_mesh_with(&[
        ("COS_GATEWAY__RATE_LIMIT__PER_IP_PER_MINUTE", "1"),
        ("COS_GATEWAY__TRUST_FORWARDED_FOR", "true"),
    ])
    .await;
    let send = |xff: &'static str| {
        t.http
            .get(t.url("/.well-known/jwks.json"))
            .header("x-forwarded-for", xff)
            .send()
    };
    assert_eq!(send("5.5.5.5, unknown").await.unwrap().status(), 200);
    assert_eq!(send("6.6.6.6, unknown").await.unwrap().status(), 429);
    // `ip:port` from the proxy is understood.
    assert_eq!(
        send("7.7.7.7, 198.51.100.20:41234").await.unwrap().status(),
        200
    );
    t.stop().await;
}
