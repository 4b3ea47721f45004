//! Identity through the gateway's HTTP API, as a frontend uses it.

mod common;

use common::{access_token, assert_problem, spawn_mesh};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn registering_returns_tokens_and_me_shows_the_owner() {
    let t = spawn_mesh().await;
    let auth = t.register("Ada@Example.com", "Ada's Studio").await;
    assert_eq!(auth["tokens"]["token_type"], "Bearer");
    assert!(auth["tokens"]["expires_in"].as_u64().unwrap() > 0);
    assert!(
        auth["tokens"]["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("rt_")
    );
    assert_eq!(auth["role"], "owner");
    let (status, me) = t.get("/v1/me", Some(&access_token(&auth))).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["email"], "Ada@Example.com");
    assert_eq!(me["tenant"]["name"], "Ada's Studio");
    assert_eq!(me["tenant"]["id"], auth["tenant"]["id"]);
    assert_eq!(me["role"], "owner");
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "api_keys.write")
    );
    // The same email (any case) cannot register twice.
    let (status, body) = t
        .post("/v1/auth/register", None, json!({"email": "ada@example.com", "password": "another password", "display_name": "X", "tenant_name": "Y"}))
        .await;
    assert_problem(status, &body, 409, Some("email"));
    // Without a token, /v1/me is 401 problem+json.
    let (status, body) = t.get("/v1/me", None).await;
    assert_problem(status, &body, 401, None);
    t.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let t = spawn_mesh().await;
    t.register("grace@example.com", "Grace Co").await;
    let (s1, wrong) = t
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "grace@example.com", "password": "not the password"}),
        )
        .await;
    let (s2, unknown) = t
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "nobody@example.com", "password": "not the password"}),
        )
        .await;
    assert_problem(s1, &wrong, 401, None);
    assert_problem(s2, &unknown, 401, None);
    assert_eq!(wrong["detail"], unknown["detail"]);
    assert_eq!(wrong["title"], unknown["title"]);
    let ok = t.login("GRACE@example.com", None).await;
    assert_eq!(ok["user"]["email"], "grace@example.com");
    t.stop().await;
}

#[tokio::test]
async fn refresh_rotates_and_reusing_a_rotated_token_revokes_the_session() {
    let t = spawn_mesh().await;
    let auth = t.register("rot@example.com", "Rotation").await;
    let first = auth["tokens"]["refresh_token"].as_str().unwrap().to_owned();
    let (status, r1) = t
        .post("/v1/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_eq!(status, 200, "{r1}");
    let second = r1["tokens"]["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let (status, me) = t
        .get(
            "/v1/me",
            Some(r1["tokens"]["access_token"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    // The first token again: reuse. The whole family goes, including the fresh second token.
    let (status, body) = t
        .post("/v1/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_problem(status, &body, 401, None);
    let (status, body) = t
        .post("/v1/auth/refresh", None, json!({"refresh_token": second}))
        .await;
    assert_problem(status, &body, 401, None);
    // A new login starts a new, working session.
    let again = t.login("rot@example.com", None).await;
    let (status, _) = t
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": again["tokens"]["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200);
    // Logout revokes that session.
    let third = t.login("rot@example.com", None).await;
    let rt = third["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, _) = t
        .call(
            Method::POST,
            "/v1/auth/logout",
            None,
            Some(json!({"refresh_token": rt})),
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = t
        .post("/v1/auth/refresh", None, json!({"refresh_token": rt}))
        .await;
    assert_problem(status, &body, 401, None);
    assert_eq!(
        t.count("SELECT count(*) FROM identity.audit_log WHERE action = 'session.reuse_detected'")
            .await,
        1
    );
    t.stop().await;
}

#[tokio::test]
async fn an_api_key_authenticates_until_it_is_revoked() {
    let t = spawn_mesh().await;
    let auth = t.register("keys@example.com", "Keys Inc").await;
    let owner = access_token(&auth);
    let (status, created) = t
        .post(
            "/v1/api-keys",
            Some(&owner),
            json!({"name": "n8n", "scopes": ["members.read", "profile.read"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("cos_"));
    let key_id = created["api_key"]["id"].as_str().unwrap().to_owned();
    // The list never shows the secret again.
    let (status, list) = t.get("/v1/api-keys", Some(&owner)).await;
    assert_eq!(status, 200);
    let listed = list.to_string();
    assert!(!listed.contains(&secret), "secret leaked in list: {listed}");
    assert!(
        list["api_keys"][0]["masked_key"]
            .as_str()
            .unwrap()
            .contains('…')
    );
    // The key works for what it is scoped to...
    let (status, members) = t.get("/v1/members", Some(&secret)).await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(members["members"][0]["email"], "keys@example.com");
    // ...and not beyond it.
    let (status, body) = t.get("/v1/audit-log", Some(&secret)).await;
    assert_problem(status, &body, 403, None);
    // Revoked: stops working at once.
    let (status, _, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{key_id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = t.get("/v1/members", Some(&secret)).await;
    assert_problem(status, &body, 401, None);
    // A made-up key is refused the same way.
    let (status, body) = t
        .get("/v1/members", Some("cos_not-a-real-key-at-all-123456789"))
        .await;
    assert_problem(status, &body, 401, None);
    let (status, audit) = t.get("/v1/audit-log", Some(&owner)).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"api_key.created") && actions.contains(&"api_key.revoked"),
        "{actions:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_viewer_cannot_create_api_keys_or_manage_members() {
    let t = spawn_mesh().await;
    let owner = t.register("owner@example.com", "Owned").await;
    let owner_token = access_token(&owner);
    let tenant_id = owner["tenant"]["id"].as_str().unwrap().to_owned();
    t.register("viewer@example.com", "Viewer's own").await;
    let (status, member) = t
        .post(
            "/v1/members",
            Some(&owner_token),
            json!({"email": "viewer@example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{member}");
    assert_eq!(member["role"], "viewer");
    let viewer = t.login("viewer@example.com", Some(&tenant_id)).await;
    assert_eq!(viewer["role"], "viewer");
    let vt = access_token(&viewer);
    let (status, body) = t
        .post("/v1/api-keys", Some(&vt), json!({"name": "sneaky"}))
        .await;
    assert_problem(status, &body, 403, None);
    let (status, body) = t
        .post(
            "/v1/members",
            Some(&vt),
            json!({"email": "owner@example.com", "role": "admin"}),
        )
        .await;
    assert_problem(status, &body, 403, None);
    assert_eq!(t.count("SELECT count(*) FROM identity.api_keys").await, 0);
    // Viewers may read members.
    let (status, members) = t.get("/v1/members", Some(&vt)).await;
    assert_eq!(status, 200);
    assert_eq!(members["members"].as_array().unwrap().len(), 2);
    // Switching back to their own tenant makes them owner there.
    let (status, tenants) = t.get("/v1/tenants", Some(&vt)).await;
    assert_eq!(status, 200);
    assert_eq!(tenants["tenants"].as_array().unwrap().len(), 2);
    let own = tenants["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "owner")
        .unwrap();
    let own_id = own["tenant"]["id"].as_str().unwrap();
    let (status, switched) = t
        .post(
            &format!("/v1/tenants/{own_id}/switch"),
            Some(&vt),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{switched}");
    let (status, _) = t
        .post(
            "/v1/api-keys",
            Some(switched["tokens"]["access_token"].as_str().unwrap()),
            json!({"name": "mine"}),
        )
        .await;
    assert_eq!(status, 201);
    t.stop().await;
}

#[tokio::test]
async fn another_tenants_ids_are_404() {
    let t = spawn_mesh().await;
    let a = t.register("a@example.com", "Tenant A").await;
    let b = t.register("b@example.com", "Tenant B").await;
    let (at, bt) = (access_token(&a), access_token(&b));
    let b_user = b["user"]["id"].as_str().unwrap();
    let (status, key) = t
        .post("/v1/api-keys", Some(&bt), json!({"name": "b-key"}))
        .await;
    assert_eq!(status, 201);
    let b_key = key["api_key"]["id"].as_str().unwrap();
    let b_tenant = b["tenant"]["id"].as_str().unwrap();

    let (status, body, _) = t
        .call(
            Method::PATCH,
            &format!("/v1/members/{b_user}"),
            Some(&at),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_problem(status, &body, 404, None);
    let (status, body, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/members/{b_user}"),
            Some(&at),
            None,
        )
        .await;
    assert_problem(status, &body, 404, None);
    let (status, body, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{b_key}"),
            Some(&at),
            None,
        )
        .await;
    assert_problem(status, &body, 404, None);
    let (status, body) = t
        .post(
            &format!("/v1/tenants/{b_tenant}/switch"),
            Some(&at),
            json!({}),
        )
        .await;
    assert_problem(status, &body, 404, None);
    // Nothing of B changed.
    let (_, keys) = t.get("/v1/api-keys", Some(&bt)).await;
    assert!(keys["api_keys"][0]["revoked_at"].is_null(), "{keys}");
    let (_, members) = t.get("/v1/members", Some(&bt)).await;
    assert_eq!(members["members"][0]["role"], "owner");
    let (_, a_members) = t.get("/v1/members", Some(&at)).await;
    assert_eq!(a_members["members"].as_array().unwrap().len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn the_last_owner_cannot_be_demoted_or_removed() {
    let t = spawn_mesh().await;
    let owner = t.register("solo@example.com", "Solo").await;
    let token = access_token(&owner);
    let me = owner["user"]["id"].as_str().unwrap();
    let (status, body, _) = t
        .call(
            Method::PATCH,
            &format!("/v1/members/{me}"),
            Some(&token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_problem(status, &body, 409, None);
    assert_eq!(body["code"], "failed_precondition");
    let (status, body, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/members/{me}"),
            Some(&token),
            None,
        )
        .await;
    assert_problem(status, &body, 409, None);
    // With a second owner, demotion is fine.
    t.register("second@example.com", "Second's").await;
    let (status, _) = t
        .post(
            "/v1/members",
            Some(&token),
            json!({"email": "second@example.com", "role": "owner"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, member, _) = t
        .call(
            Method::PATCH,
            &format!("/v1/members/{me}"),
            Some(&token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["role"], "admin");
    // An admin cannot touch the remaining owner.
    let (_, members) = t.get("/v1/members", Some(&token)).await;
    let other = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "owner")
        .unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin = t
        .login(
            "solo@example.com",
            Some(owner["tenant"]["id"].as_str().unwrap()),
        )
        .await;
    let (status, body, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/members/{other}"),
            Some(&access_token(&admin)),
            None,
        )
        .await;
    assert_problem(status, &body, 403, None);
    let (_, audit) = t.get("/v1/audit-log", Some(&access_token(&admin))).await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "member.role_changed")
    );
    t.stop().await;
}

#[tokio::test]
async fn platform_admins_list_every_tenant_and_others_are_refused() {
    let t = spawn_mesh().await;
    let user = t.register("user@example.com", "Ordinary").await;
    // Registering an address grants nothing; only an operator makes a platform admin.
    let early = t.register("root@platform.test", "Platform").await;
    let (status, body) = t
        .get("/v1/admin/tenants", Some(&access_token(&early)))
        .await;
    assert_problem(status, &body, 403, None);
    t.grant_platform_admin("root@platform.test").await;
    let root = t.login("root@platform.test", None).await;
    assert_eq!(root["user"]["platform_admin"], true);
    let (status, body) = t.get("/v1/admin/tenants", Some(&access_token(&user))).await;
    assert_problem(status, &body, 403, None);
    let (status, list) = t
        .get("/v1/admin/tenants?page_size=1", Some(&access_token(&root)))
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1);
    let token = list["next_page_token"].as_str().unwrap().to_owned();
    assert!(!token.is_empty());
    let (status, page2) = t
        .get(
            &format!("/v1/admin/tenants?page_size=1&page_token={token}"),
            Some(&access_token(&root)),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page2["tenants"].as_array().unwrap().len(), 1);
    assert_ne!(
        page2["tenants"][0]["tenant"]["id"],
        list["tenants"][0]["tenant"]["id"]
    );
    let (status, body) = t
        .get(
            "/v1/admin/tenants?page_size=5000",
            Some(&access_token(&root)),
        )
        .await;
    assert_problem(status, &body, 422, Some("page_size"));
    let (status, body) = t
        .get(
            "/v1/admin/tenants?page_size=abc",
            Some(&access_token(&root)),
        )
        .await;
    assert_problem(status, &body, 400, Some("page_size"));
    assert_eq!(
        t.count("SELECT count(*) FROM identity.platform_audit_log WHERE action = 'tenants.listed'")
            .await,
        2
    );
    t.stop().await;
}

#[tokio::test]
async fn jwks_and_openapi_are_served() {
    let t = spawn_mesh().await;
    let (status, jwks) = t.get("/.well-known/jwks.json", None).await;
    assert_eq!(status, 200);
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
    let (status, doc) = t.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/auth/register",
        "/v1/members/{user_id}",
        "/v1/api-keys/{api_key_id}",
        "/v1/tenants/{tenant_id}/switch",
        "/v1/audit-log",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    let (status, body, headers) = t.call(Method::PUT, "/v1/me", None, None).await;
    assert_problem(status, &body, 405, None);
    assert_eq!(headers.get("allow").unwrap(), "GET");
    let (status, body) = t.get("/v1/no-such-thing", None).await;
    assert_problem(status, &body, 404, None);
    let (_, _, headers) = t.call(Method::GET, "/v1/me", None, None).await;
    assert!(headers.get("x-request-id").is_some());
    t.stop().await;
}

#[tokio::test]
async fn an_api_key_never_outranks_its_creator_and_dies_with_their_membership() {
    let t = spawn_mesh().await;
    let owner = t.register("boss@example.com", "Boss Co").await;
    let ot = access_token(&owner);
    let tenant = owner["tenant"]["id"].as_str().unwrap().to_owned();
    let x = t.register("x@example.com", "X's own").await;
    let x_id = x["user"]["id"].as_str().unwrap().to_owned();
    let (s, _) = t
        .post(
            "/v1/members",
            Some(&ot),
            json!({"email": "x@example.com", "role": "admin"}),
        )
        .await;
    assert_eq!(s, 201);
    let x_admin = t.login("x@example.com", Some(&tenant)).await;
    let (s, key) = t
        .post(
            "/v1/api-keys",
            Some(&access_token(&x_admin)),
            json!({"name": "x-key", "scopes": ["members.read", "audit.read"]}),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let secret = key["secret"].as_str().unwrap().to_owned();
    let (s, _) = t.get("/v1/audit-log", Some(&secret)).await;
    assert_eq!(s, 200);
    // Creator demoted to viewer: the key keeps only what a viewer may do.
    let (s, _, _) = t
        .call(
            Method::PATCH,
            &format!("/v1/members/{x_id}"),
            Some(&ot),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, body) = t.get("/v1/audit-log", Some(&secret)).await;
    assert_problem(s, &body, 403, None);
    let (s, _) = t.get("/v1/members", Some(&secret)).await;
    assert_eq!(s, 200);
    // Creator removed: the key stops working.
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/members/{x_id}"),
            Some(&ot),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, body) = t.get("/v1/members", Some(&secret)).await;
    assert_problem(s, &body, 401, None);
    t.stop().await;
}

#[tokio::test]
async fn a_demoted_or_removed_members_still_valid_token_cannot_change_anything() {
    let t = spawn_mesh().await;
    let owner = t.register("chief@example.com", "Chief").await;
    let ot = access_token(&owner);
    let tenant = owner["tenant"]["id"].as_str().unwrap().to_owned();
    let b = t.register("second-owner@example.com", "B's").await;
    let b_id = b["user"]["id"].as_str().unwrap().to_owned();
    let (s, _) = t
        .post(
            "/v1/members",
            Some(&ot),
            json!({"email": "second-owner@example.com", "role": "owner"}),
        )
        .await;
    assert_eq!(s, 201);
    let b_owner_token = access_token(&t.login("second-owner@example.com", Some(&tenant)).await);
    // B is demoted to viewer; B's access token still says owner.
    let (s, _, _) = t
        .call(
            Method::PATCH,
            &format!("/v1/members/{b_id}"),
            Some(&ot),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, body, _) = t
        .call(
            Method::PATCH,
            &format!("/v1/members/{b_id}"),
            Some(&b_owner_token),
            Some(json!({"role": "owner"})),
        )
        .await;
    assert_problem(s, &body, 403, None);
    let (s, body) = t
        .post(
            "/v1/api-keys",
            Some(&b_owner_token),
            json!({"name": "backdoor"}),
        )
        .await;
    assert_problem(s, &body, 403, None);
    // Removed entirely: the old token cannot re-add its owner.
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/members/{b_id}"),
            Some(&ot),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, body) = t
        .post(
            "/v1/members",
            Some(&b_owner_token),
            json!({"email": "second-owner@example.com", "role": "owner"}),
        )
        .await;
    assert_problem(s, &body, 403, None);
    let (_, members) = t.get("/v1/members", Some(&ot)).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
    assert_eq!(t.count("SELECT count(*) FROM identity.api_keys").await, 0);
    t.stop().await;
}

#[tokio::test]
async fn a_login_email_with_control_characters_is_a_clear_422_not_a_500() {
    let t = spawn_mesh().await;
    let (s, body) = t
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "a\u{0}@example.com", "password": "whatever password"}),
        )
        .await;
    assert_problem(s, &body, 422, Some("email"));
    t.stop().await;
}
