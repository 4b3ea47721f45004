//! Rotating the encryption key ring: after adding a key and re-encrypting, every stored secret
//! is readable with the new key alone, and the service keeps working.

mod common;

use common::{access_token, start, test_database, test_settings};
use cos_crypto::KeyRing;
use cos_testkit::TestAmqp;

#[tokio::test]
async fn reencrypting_moves_every_secret_to_the_new_key() {
    let db = test_database().await;
    let amqp = TestAmqp::new();
    let settings = test_settings(&db, &amqp, &[]);
    // First start: the signing key is created and encrypted under the test ring ("test1").
    let t = start(db.clone(), amqp.clone(), settings.clone()).await;
    let before = t.register("rotate@example.com", "Rotation").await;
    // A platform-level secret in billing's integration settings (the Stripe key).
    t.grant_platform_admin("rotate@example.com").await;
    let admin = access_token(&t.login("rotate@example.com", None).await);
    let (s, b, _) = t
        .call(
            reqwest::Method::PUT,
            "/v1/admin/integrations/stripe",
            Some(&admin),
            Some(serde_json::json!({"values": {"secret_key": "sk_test_rotation0000000000abcd"}, "reason": "rotation test"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // A tenant secret in publishing: an SMTP connection's password.
    let (s, conn) = t
        .post(
            "/v1/channel-connections",
            Some(&access_token(&before)),
            serde_json::json!({"name": "Relay", "kind": "smtp",
                "smtp": {"host": "smtp.example.com", "from": "news@example.com",
                         "username": "u", "password": "smtp-password-rotation"}}),
        )
        .await;
    assert_eq!(s, 201, "{conn}");
    let old_ring = t.keyring.clone();
    let mut t = t;
    t.mesh.take().expect("running mesh").stop().await.unwrap();

    // Add a new key and make it active; re-encrypt.
    let mut both = old_ring.clone();
    both.rotate_to_generated("k2").unwrap();
    assert_eq!(both.active_kid(), "k2");
    let changed = campaign_os::reencrypt_secrets(&settings, &both)
        .await
        .unwrap();
    assert_eq!(
        changed,
        vec![
            ("identity.signing_keys", 1),
            ("billing.integration_configs", 1),
            ("publishing.channel_connections", 1)
        ]
    );
    // Idempotent.
    let again = campaign_os::reencrypt_secrets(&settings, &both)
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![
            ("identity.signing_keys", 0),
            ("billing.integration_configs", 0),
            ("publishing.channel_connections", 0)
        ]
    );

    // The new key alone now reads everything: start the mesh with a ring holding only k2.
    let only_new = KeyRing::parse(
        both.to_config_string()
            .expose_secret()
            .split(',')
            .find(|e| e.trim_start().starts_with("k2:"))
            .unwrap(),
        "k2",
    )
    .unwrap();
    let only_new_copy = only_new.clone();
    let listeners = campaign_os::MeshListeners::ephemeral().await.unwrap();
    let mesh = campaign_os::Mesh::start(settings.clone(), only_new, listeners)
        .await
        .expect("starts with the new key only");
    let url = mesh.gateway_url();
    // Tokens issued before the rotation still verify: the signing key itself did not change.
    let me = t
        .http
        .get(format!("{url}/v1/me"))
        .bearer_auth(access_token(&before))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // The Stripe key still decrypts under the new key alone.
    let db = cos_db::Db::connect(&settings.pool_settings(Some(1)))
        .await
        .unwrap();
    let stripe = cos_integrations::IntegrationStore::new("billing")
        .load(
            &db,
            &only_new_copy,
            cos_integrations::Scope::Platform,
            "stripe",
        )
        .await
        .expect("decrypts with k2 alone")
        .expect("stored");
    assert_eq!(
        stripe
            .secret("secret_key")
            .map(|s| s.expose_secret().to_owned()),
        Some("sk_test_rotation0000000000abcd".to_owned())
    );
    // The SMTP password too.
    let (tenant, id, blob): (uuid::Uuid, uuid::Uuid, Vec<u8>) =
        sqlx::query_as("SELECT tenant_id, id, secret FROM publishing.channel_connections")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(KeyRing::ciphertext_kid(&blob).unwrap(), "k2");
    let password = only_new_copy
        .decrypt(&blob, &cos_publishing::jobs::secret_aad(tenant, id))
        .expect("decrypts with k2 alone");
    assert_eq!(password, b"smtp-password-rotation");
    db.pool().close().await;
    mesh.stop().await.unwrap();

    // And the old key alone no longer can.
    let listeners = campaign_os::MeshListeners::ephemeral().await.unwrap();
    let old_only = KeyRing::parse(
        old_ring.to_config_string().expose_secret(),
        old_ring.active_kid(),
    )
    .unwrap();
    match campaign_os::Mesh::start(settings, old_only, listeners).await {
        Ok(_) => panic!("the retired key must no longer decrypt the signing key"),
        Err(e) => assert!(
            format!("{e:#}").contains("cannot decrypt signing key"),
            "{e:#}"
        ),
    }
    t.stop().await;
}
