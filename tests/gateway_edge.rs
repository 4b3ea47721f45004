//! Edge behaviour of the gateway: CORS for browser frontends and request ids that follow a
//! request into the service (and its audit log).

mod common;

use common::{access_token, spawn_mesh_with};
use serde_json::json;

#[tokio::test]
async fn cors_preflight_allows_configured_origins_only() {
    let t = spawn_mesh_with(&[("COS_GATEWAY__CORS_ORIGINS", "https://app.example.com")]).await;
    let preflight = |origin: &'static str| {
        t.http
            .request(reqwest::Method::OPTIONS, t.url("/v1/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        ok.headers().get("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
    let allowed_headers = ok
        .headers()
        .get("access-control-allow-headers")
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    let evil = preflight("https://evil.example.net").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    // Actual responses carry the header for the allowed origin and expose the request id.
    let resp = t
        .http
        .get(t.url("/.well-known/jwks.json"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers().get("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
    let exposed = resp
        .headers()
        .get("access-control-expose-headers")
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    t.stop().await;
}

#[tokio::test]
async fn a_client_request_id_is_echoed_and_recorded_in_the_audit_log() {
    let t = spawn_mesh_with(&[]).await;
    let auth = t.register("rid@example.com", "Request Ids").await;
    let resp = t
        .http
        .post(t.url("/v1/api-keys"))
        .bearer_auth(access_token(&auth))
        .header("x-request-id", "frontend-req-42")
        .json(&json!({"name": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.headers().get("x-request-id").unwrap(),
        "frontend-req-42"
    );
    let (_, audit) = t.get("/v1/audit-log", Some(&access_token(&auth))).await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "api_key.created")
        .unwrap();
    assert_eq!(entry["request_id"], "frontend-req-42");
    // A hostile request id (too long, odd characters) is replaced, not echoed.
    let resp = t
        .http
        .get(t.url("/v1/me"))
        .header("x-request-id", "<script>".repeat(20))
        .send()
        .await
        .unwrap();
    let rid = resp
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(!rid.contains('<') && rid.len() <= 64, "{rid}");
    t.stop().await;
}
