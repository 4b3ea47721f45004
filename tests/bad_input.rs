//! Bad input gets a problem+json that names the field, and nothing is written.

mod common;

use common::{assert_problem, spawn_mesh};
use serde_json::json;

#[tokio::test]
async fn bad_registrations_name_the_field_and_write_nothing() {
    let t = spawn_mesh().await;
    let register = |body: String, content_type: &'static str| {
        let http = t.http.clone();
        let url = t.url("/v1/auth/register");
        async move {
            let resp = http
                .post(url)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            assert_eq!(
                resp.headers().get("content-type").unwrap(),
                "application/problem+json"
            );
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let valid = json!({"email": "ok@example.com", "password": "correct horse battery", "display_name": "Ok", "tenant_name": "Ok"});

    // Truncated JSON: the problem names the field the body broke off in.
    let (s, b) = register(
        r#"{"email": "x@example.com", "password": "#.into(),
        "application/json",
    )
    .await;
    assert_problem(s, &b, 400, Some("password"));
    assert_eq!(b["code"], "malformed_request");
    let (s, b) = register("this is not json".into(), "application/json").await;
    assert_problem(s, &b, 400, Some("body"));

    let mut wrong_type = valid.clone();
    wrong_type["email"] = json!(5);
    let (s, b) = register(wrong_type.to_string(), "application/json").await;
    assert_problem(s, &b, 400, Some("email"));

    let mut unknown = valid.clone();
    unknown["is_admin"] = json!(true);
    let (s, b) = register(unknown.to_string(), "application/json").await;
    assert_problem(s, &b, 400, None);
    assert!(b["detail"].as_str().unwrap().contains("is_admin"), "{b}");

    let (s, b) = register("{}".into(), "application/json").await;
    for field in ["email", "password", "display_name", "tenant_name"] {
        assert_problem(s, &b, 422, Some(field));
    }

    let mut bad_email = valid.clone();
    bad_email["email"] = json!("not-an-email");
    let (s, b) = register(bad_email.to_string(), "application/json").await;
    assert_problem(s, &b, 422, Some("email"));

    let mut short = valid.clone();
    short["password"] = json!("short");
    let (s, b) = register(short.to_string(), "application/json").await;
    assert_problem(s, &b, 422, Some("password"));

    let mut huge_name = valid.clone();
    huge_name["display_name"] = json!("x".repeat(100 * 1024));
    let (s, b) = register(huge_name.to_string(), "application/json").await;
    assert_problem(s, &b, 422, Some("display_name"));

    let mut over_limit = valid.clone();
    over_limit["display_name"] = json!("y".repeat(2 * 1024 * 1024));
    let (s, b) = register(over_limit.to_string(), "application/json").await;
    assert_problem(s, &b, 413, None);

    let (s, b) = register(valid.to_string(), "text/plain").await;
    assert_problem(s, &b, 415, None);

    for table in [
        "identity.users",
        "identity.tenants",
        "identity.memberships",
        "identity.refresh_tokens",
        "identity.audit_log",
        "identity.outbox",
    ] {
        let n: i64 = {
            let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
            let n =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            pool.close().await;
            n
        };
        assert_eq!(n, 0, "{table} has rows after rejected requests");
    }
    // And the valid body does go through.
    let (s, _) = t.post("/v1/auth/register", None, valid).await;
    assert_eq!(s, 201);
    t.stop().await;
}

#[tokio::test]
async fn bad_ids_and_roles_in_member_and_key_routes_are_named() {
    let t = spawn_mesh().await;
    let auth = t.register("ids@example.com", "Ids").await;
    let token = common::access_token(&auth);
    let (s, b, _) = t
        .call(
            reqwest::Method::PATCH,
            "/v1/members/not-a-uuid",
            Some(&token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_problem(s, &b, 422, Some("user_id"));
    let me = auth["user"]["id"].as_str().unwrap();
    let (s, b, _) = t
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/members/{me}"),
            Some(&token),
            Some(json!({"role": "superuser"})),
        )
        .await;
    assert_problem(s, &b, 422, Some("role"));
    let (s, b) = t
        .post(
            "/v1/members",
            Some(&token),
            json!({"email": "ghost@example.com", "role": "editor"}),
        )
        .await;
    assert_problem(s, &b, 404, Some("email"));
    let (s, b) = t
        .post(
            "/v1/api-keys",
            Some(&token),
            json!({"name": "k", "scopes": ["api_keys.write"]}),
        )
        .await;
    assert_problem(s, &b, 422, Some("scopes[0]"));
    let (s, b) = t
        .post(
            "/v1/api-keys",
            Some(&token),
            json!({"name": "", "scopes": ["nope"]}),
        )
        .await;
    assert_problem(s, &b, 422, Some("name"));
    assert_problem(s, &b, 422, Some("scopes[0]"));
    let (s, b, _) = t
        .call(
            reqwest::Method::DELETE,
            "/v1/api-keys/0193a3b0-0000-7000-8000-000000000000",
            Some(&token),
            None,
        )
        .await;
    assert_problem(s, &b, 404, None);
    assert_eq!(t.count("SELECT count(*) FROM identity.api_keys").await, 0);
    assert_eq!(
        t.count("SELECT count(*) FROM identity.memberships").await,
        1
    );
    t.stop().await;
}
