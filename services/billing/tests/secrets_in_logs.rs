//! Secrets never reach the logs: every log line billing writes while a platform admin stores
//! Stripe keys (good and bad), buyers check out and verify, is captured and searched.

mod common;

use common::Harness;
use cos_proto::billing::v1 as pb;
use cos_telemetry::{CapturedLogs, TelemetryConfig};

const KEY: &str = "sk_live_51LogProbeSecretValue9876543210QRST";
const BAD_KEY: &str = "sk_prod_AnotherSecretThatIsInvalid1234567";
const WEBHOOK: &str = "whsec_LogProbeWebhookSecret000000000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_ever_logged_in_clear() {
    let logs = CapturedLogs::new();
    let mut cfg = TelemetryConfig::new("billing");
    cfg.log_filter = "debug,h2=info,hyper=info,hyper_util=info,tower=info,sqlx=info".into();
    let _guard = cos_telemetry::init_with_writer(&cfg, logs.clone()).expect("telemetry");

    let h = Harness::start().await;
    h.stripe.set_keys(&[KEY]);
    let admin = h.admin_token();
    let bad = h
        .c()
        .put_integration(h.req(
            pb::PutIntegrationRequest {
                provider: "stripe".into(),
                values: [("secret_key".to_owned(), BAD_KEY.to_owned())].into(),
                ..Default::default()
            },
            &admin,
        ))
        .await;
    assert!(bad.is_err());
    let saved = h
        .c()
        .put_integration(
            h.req(
                pb::PutIntegrationRequest {
                    provider: "stripe".into(),
                    values: [
                        ("secret_key".to_owned(), KEY.to_owned()),
                        ("webhook_secret".to_owned(), WEBHOOK.to_owned()),
                    ]
                    .into(),
                    reason: "go live".into(),
                    ..Default::default()
                },
                &admin,
            ),
        )
        .await
        .expect("stored")
        .into_inner();
    assert_eq!(saved.values["secret_key"], "sk_live_…QRST");
    let (_, owner) = h.owner();
    let co = h.checkout(&owner, "growth", 2, "usd").await;
    h.stripe.pay(&co.session_id);
    h.verify(&owner, &co.session_id).await.expect("verified");
    // A Stripe-side rejection of the key goes through the error paths too.
    h.stripe.set_keys(&["sk_live_somethingelse000000"]);
    let _ = h
        .c()
        .create_checkout(h.req(
            pb::CreateCheckoutRequest {
                plan: "starter".into(),
                months: 1,
                currency: "usd".into(),
            },
            &owner,
        ))
        .await;
    // The key really was used (so the paths that handle it did run).
    assert!(
        h.stripe
            .requests()
            .iter()
            .any(|r| r.api_key.as_deref() == Some(KEY))
    );
    h.stop().await;

    let text = logs.contents();
    assert!(
        text.contains("checkout applied"),
        "the capture works: {} bytes",
        text.len()
    );
    assert!(
        text.contains("Stripe refused a request"),
        "the rejection was logged: {}",
        text.lines()
            .filter(|l| l.contains("tripe") || l.contains("WARN") || l.contains("warn"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for secret in [
        KEY,
        BAD_KEY,
        WEBHOOK,
        "LogProbeSecretValue",
        "AnotherSecretThatIsInvalid",
        "LogProbeWebhook",
    ] {
        assert!(!text.contains(secret), "{secret} appears in the logs");
    }
    // Tokens stay out of the logs too.
    assert!(
        !text.contains(&owner),
        "an access token appears in the logs"
    );
}
