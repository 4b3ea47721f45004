//! The Stripe settings through billing's API: masked reads, versions, history without values,
//! validation, and key rotation re-encrypting them.

mod common;

use common::{Harness, STRIPE_KEY};
use cos_crypto::KeyRing;
use cos_errors::{ErrorCode, ServiceError};
use cos_proto::billing::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_masked_versioned_and_audited_without_values() {
    let h = Harness::start().await;
    let admin = h.admin_token();
    let empty = h
        .c()
        .get_integration(h.req(
            pb::GetIntegrationRequest {
                provider: "stripe".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((empty.version, empty.source.as_str()), (0, "none"));
    assert_eq!(empty.secret_fields, ["secret_key", "webhook_secret"]);

    let saved = h.configure_stripe(STRIPE_KEY).await;
    assert_eq!(saved.version, 1);
    assert_eq!(saved.source, "stored");
    assert_eq!(saved.values["secret_key"], "sk_test_…WXYZ");
    let shown = format!("{saved:?}");
    assert!(!shown.contains(STRIPE_KEY), "{shown}");

    // A stale version is refused; a bad key names its field without echoing it.
    let put = |values: Vec<(&str, &str)>, clear: Vec<&str>, expected: i64| {
        let mut c = h.c();
        let req = h.req(
            pb::PutIntegrationRequest {
                provider: "stripe".into(),
                values: values
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                clear: clear.into_iter().map(str::to_owned).collect(),
                reason: "test".into(),
                expected_version: expected,
            },
            &admin,
        );
        async move {
            c.put_integration(req)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| ServiceError::from_status(&s))
        }
    };
    let err = put(vec![("publishable_key", "pk_test_abc")], vec![], 7)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::VersionConflict);
    let err = put(
        vec![("secret_key", "sk_prod_TOPSECRETVALUE1234")],
        vec![],
        1,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(err.violations[0].field, "values.secret_key");
    assert!(!format!("{err:?}").contains("TOPSECRET"));
    let err = put(vec![], vec!["secret_key"], 1).await.unwrap_err();
    assert_eq!(err.violations[0].field, "values.secret_key");
    let err = put(vec![("colour", "blue")], vec![], 1).await.unwrap_err();
    assert_eq!(err.violations[0].field, "values.colour");

    let v2 = put(vec![("publishable_key", "pk_test_abc123")], vec![], 1)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.values["publishable_key"], "pk_test_abc123");
    assert_eq!(
        v2.values["secret_key"], "sk_test_…WXYZ",
        "the secret was kept"
    );

    let history = h
        .c()
        .list_integration_history(h.req(
            pb::ListIntegrationHistoryRequest {
                provider: "stripe".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let versions: Vec<(i64, Vec<String>)> = history
        .changes
        .iter()
        .map(|c| (c.version, c.changed_fields.clone()))
        .collect();
    assert_eq!(
        versions,
        [
            (2, vec!["publishable_key".to_owned()]),
            (1, vec!["secret_key".to_owned()])
        ]
    );
    assert!(!format!("{history:?}").contains(STRIPE_KEY));

    // Only Stripe lives here.
    let err = h
        .c()
        .get_integration(h.req(
            pb::GetIntegrationRequest {
                provider: "ayrshare".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_file_key_is_a_fallback_shown_masked() {
    let h = Harness::start_with(&[("COS_BILLING__STRIPE_SECRET_KEY", STRIPE_KEY)]).await;
    let admin = h.admin_token();
    let shown = h
        .c()
        .get_integration(h.req(
            pb::GetIntegrationRequest {
                provider: "stripe".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.source, "config_file");
    assert_eq!(shown.values["secret_key"], "sk_test_…WXYZ");
    let (_, owner) = h.owner();
    h.checkout(&owner, "starter", 1, "usd").await;
    assert_eq!(h.stripe.requests()[0].api_key.as_deref(), Some(STRIPE_KEY));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reencrypts_every_secret_and_they_stay_usable() {
    let mut h = Harness::start().await;
    h.configure_stripe(STRIPE_KEY).await;
    let old_kid = h.keyring.active_kid().to_owned();
    let mut rotated = h.keyring.clone();
    rotated.rotate_to_generated("test2").unwrap();
    let changed = cos_billing::reencrypt_secrets(&h.db, &rotated)
        .await
        .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(
        cos_billing::reencrypt_secrets(&h.db, &rotated)
            .await
            .unwrap(),
        0,
        "idempotent"
    );

    // A ring without the old key reads everything.
    let config = rotated.to_config_string();
    let only_new: Vec<&str> = config
        .expose_secret()
        .split(',')
        .filter(|k| !k.starts_with(&format!("{old_kid}:")))
        .collect();
    let new_only = KeyRing::parse(&only_new.join(","), "test2").unwrap();
    assert!(!new_only.contains(&old_kid));
    h.stop_server().await;
    let h2 = Harness::start_on(
        h.database.clone(),
        h.stripe.clone(),
        new_only,
        &[("COS_BILLING__STRIPE_API_BASE", h.stripe.url.as_str())],
    )
    .await;
    let (_, owner) = h2.owner();
    h2.checkout(&owner, "starter", 1, "usd").await;
    let last = h2.stripe.requests().pop().unwrap();
    assert_eq!(last.api_key.as_deref(), Some(STRIPE_KEY));
    h2.stop().await;
}
