//! Key rotation covers billing's Stripe keys: after `reencrypt-secrets` with a new active key,
//! a mesh holding only the new key still pays through Stripe with the stored secret.

mod common;

use common::{access_token, start, test_database, test_settings};
use cos_crypto::KeyRing;
use cos_testkit::TestAmqp;
use cos_testkit::stripe::FakeStripe;
use serde_json::json;

const STRIPE_KEY: &str = "sk_live_51RotationProbeKey000000000000ROTA";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stripe_key_survives_rotation_of_the_key_ring() {
    let stripe = FakeStripe::start(&[STRIPE_KEY]).await.unwrap();
    let db = test_database().await;
    let amqp = TestAmqp::new();
    let settings = test_settings(
        &db,
        &amqp,
        &[("COS_BILLING__STRIPE_API_BASE", stripe.url.as_str())],
    );
    let mut t = start(db.clone(), amqp.clone(), settings.clone()).await;
    let email = "rotation-admin@platform.example";
    t.register(email, "Ops").await;
    t.grant_platform_admin(email).await;
    let admin = access_token(&t.login(email, None).await);
    let (s, b, _) = t
        .call(
            reqwest::Method::PUT,
            "/v1/admin/integrations/stripe",
            Some(&admin),
            Some(json!({"values": {"secret_key": STRIPE_KEY}, "reason": "go live"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let old_ring = t.keyring.clone();
    t.mesh.take().expect("mesh").stop().await.unwrap();

    let mut both = old_ring.clone();
    both.rotate_to_generated("k2").unwrap();
    let changed = campaign_os::reencrypt_secrets(&settings, &both)
        .await
        .unwrap();
    let billing = changed
        .iter()
        .find(|(store, _)| store.starts_with("billing"))
        .map(|(_, n)| *n);
    assert_eq!(billing, Some(1), "{changed:?}");
    let again = campaign_os::reencrypt_secrets(&settings, &both)
        .await
        .unwrap();
    assert!(again.iter().all(|(_, n)| *n == 0), "idempotent: {again:?}");

    let only_new = KeyRing::parse(
        both.to_config_string()
            .expose_secret()
            .split(',')
            .find(|e| e.trim_start().starts_with("k2:"))
            .unwrap(),
        "k2",
    )
    .unwrap();
    let listeners = campaign_os::MeshListeners::ephemeral().await.unwrap();
    let mesh = campaign_os::Mesh::start(settings.clone(), only_new, listeners)
        .await
        .expect("starts with the new key only");
    t.url = mesh.gateway_url();
    t.mesh = Some(mesh);
    let owner = access_token(&t.register("rotation-buyer@example.com", "Buyer").await);
    let (s, co) = t
        .post(
            "/v1/billing/checkout",
            Some(&owner),
            json!({"plan": "starter", "months": 1, "currency": "usd"}),
        )
        .await;
    assert_eq!(s, 201, "{co}");
    let last = stripe.requests().pop().unwrap();
    assert_eq!(last.api_key.as_deref(), Some(STRIPE_KEY));
    stripe.stop();
    t.stop().await;
}
