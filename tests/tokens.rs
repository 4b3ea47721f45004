//! Forged, tampered, foreign and expired access tokens are refused by the gateway and by the
//! service itself (services verify tokens too, not only the edge).

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{access_token, assert_problem, spawn_mesh};
use cos_auth::{AccessClaims, SigningKey, TokenIssuer};
use cos_proto::identity::v1::GetMeRequest;
use cos_proto::identity::v1::identity_service_client::IdentityServiceClient;

fn claims_of(token: &str) -> AccessClaims {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn kid_of(token: &str) -> String {
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn forged_tampered_foreign_and_expired_tokens_get_401() {
    let t = spawn_mesh().await;
    let auth = t.register("tok@example.com", "Tokens").await;
    let good = access_token(&auth);
    let (status, _) = t.get("/v1/me", Some(&good)).await;
    assert_eq!(status, 200);
    let parts: Vec<&str> = good.split('.').collect();
    let kid = kid_of(&good);

    // alg: none, with the real kid and real claims.
    let none_header =
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
    let alg_none = format!("{none_header}.{}.", parts[1]);
    // A tampered payload (role escalated to owner of another tenant) with the original signature.
    let mut claims = claims_of(&good);
    claims.tid = uuid::Uuid::now_v7().to_string();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    // A flipped signature bit.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[7] ^= 0x40;
    let bad_sig = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    // Signed by another key that claims the real kid.
    let stranger = TokenIssuer::new(
        Arc::new(SigningKey::generate(kid.clone()).unwrap()),
        "campaign-os",
        "campaign-os",
        Duration::from_secs(600),
    );
    let victim = {
        let db = cos_db::Db::connect(&cos_db::PoolSettings {
            url: t.db.url.clone(),
            max_connections: 2,
            app_role: "cos_app".into(),
            acquire_timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
        let keys = cos_identity::keys::load_or_create(&db, &t.keyring)
            .await
            .unwrap();
        // The real key, for an expired token below.
        keys.active
    };
    let real_claims = claims_of(&good);
    let p = cos_auth::Principal {
        kind: cos_auth::PrincipalKind::User,
        user_id: real_claims.sub.parse().unwrap(),
        tenant_id: real_claims.tid.parse().unwrap(),
        role: cos_auth::Role::Owner,
        api_key_id: None,
        scopes: vec![],
        platform_admin: false,
        session_id: None,
    };
    let foreign = stranger.issue(&p).unwrap().0;
    // Expired: signed with the real key, exp two minutes ago (beyond any leeway).
    let mut expired_claims = claims_of(&good);
    expired_claims.iat -= 3600;
    expired_claims.exp = chrono::Utc::now().timestamp() - 120;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(victim.kid().to_owned());
    let expired = jsonwebtoken::encode(
        &header,
        &expired_claims,
        &jsonwebtoken::EncodingKey::from_ed_der(victim.pkcs8()),
    )
    .unwrap();
    // Sanity: the same claims with a fresh exp are accepted, so only expiry is being tested.
    let mut fresh_claims = expired_claims.clone();
    fresh_claims.exp = chrono::Utc::now().timestamp() + 600;
    let fresh = jsonwebtoken::encode(
        &header,
        &fresh_claims,
        &jsonwebtoken::EncodingKey::from_ed_der(victim.pkcs8()),
    )
    .unwrap();
    let (status, _) = t.get("/v1/me", Some(&fresh)).await;
    assert_eq!(status, 200, "control token must pass");

    let mut identity = IdentityServiceClient::connect(format!(
        "http://{}",
        t.mesh.as_ref().unwrap().identity_addr
    ))
    .await
    .unwrap();
    for (name, token) in [
        ("alg none", &alg_none),
        ("tampered claims", &tampered),
        ("bad signature", &bad_sig),
        ("foreign key", &foreign),
        ("expired", &expired),
        ("garbage", &"not.a.jwt".to_owned()),
    ] {
        let (status, body) = t.get("/v1/me", Some(token)).await;
        assert_problem(status, &body, 401, None);
        assert_eq!(body["code"], "unauthenticated", "{name}");
        // Straight to the service, bypassing the gateway: refused there as well.
        let mut req = tonic::Request::new(GetMeRequest {});
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let err = identity.get_me(req).await.expect_err(name);
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{name}");
    }
    t.stop().await;
}
