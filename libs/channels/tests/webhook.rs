//! WebhookSender against the testkit's webhook receiver.

use std::time::Duration;

use cos_channels::SendError;
use cos_channels::webhook::{self, WebhookSender, WebhookTarget};
use cos_testkit::webhook::WebhookReceiver;
use serde_json::json;

const SECRET: &[u8] = b"whsec_0123456789abcdef0123456789";

async fn setup() -> (WebhookReceiver, WebhookSender, WebhookTarget) {
    let receiver = WebhookReceiver::start(SECRET).await.unwrap();
    let sender = WebhookSender::new(Duration::from_secs(5), true).unwrap();
    let target = WebhookTarget {
        url: receiver.url(),
        secret: SECRET.to_vec(),
    };
    (receiver, sender, target)
}

fn payload() -> serde_json::Value {
    json!({"event": "campaign.message", "contact": {"email": "jane@example.com"}, "n": 1})
}

#[tokio::test]
async fn delivers_signed_request() {
    let (receiver, sender, target) = setup().await;
    let receipt = sender
        .send(&target, &payload(), "delivery-1")
        .await
        .unwrap();
    assert_eq!(receipt.detail, "HTTP 200");
    assert_eq!(receipt.provider_message_id, "delivery-1");

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert!(r.signature_valid, "testkit's independent check: {r:?}");
    assert_eq!(r.body, payload());
    assert_eq!(r.idempotency_key.as_deref(), Some("delivery-1"));
    assert_eq!(r.header("user-agent"), Some("CampaignOS-Webhook/1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    // The library's own verifier agrees on what was actually sent.
    let header = r.signature.as_deref().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(webhook::verify(SECRET, header, &r.raw_body, now, 300));
    assert!(!webhook::verify(
        b"another secret",
        header,
        &r.raw_body,
        now,
        300
    ));
}

#[tokio::test]
async fn wrong_secret_is_detected_by_receiver() {
    let (receiver, sender, mut target) = setup().await;
    target.secret = b"not the receiver's secret".to_vec();
    sender.send(&target, &payload(), "k").await.unwrap();
    assert!(!receiver.received()[0].signature_valid);
}

#[tokio::test]
async fn server_error_is_transient_and_retry_reuses_the_key() {
    let (receiver, sender, target) = setup().await;
    receiver.respond_with(500, 1);
    let err = sender.send(&target, &payload(), "k-500").await.unwrap_err();
    match &err {
        SendError::Transient {
            reason,
            retry_after,
        } => {
            assert!(
                reason.starts_with("HTTP 500 Internal Server Error"),
                "{reason}"
            );
            assert_eq!(*retry_after, None);
        }
        other => panic!("expected Transient, got {other:?}"),
    }
    sender.send(&target, &payload(), "k-500").await.unwrap();
    let keys: Vec<_> = receiver
        .received()
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys, vec![Some("k-500".into()), Some("k-500".into())]);
}

#[tokio::test]
async fn gone_is_permanent_with_body_prefix() {
    let (receiver, sender, target) = setup().await;
    let long_body = format!("endpoint removed\r\n{}", "x".repeat(500));
    receiver.respond_with_body(410, &[], &long_body, 1);
    let err = sender.send(&target, &payload(), "k").await.unwrap_err();
    let SendError::Permanent { reason } = err else {
        panic!("expected Permanent, got {err:?}");
    };
    assert!(
        reason.starts_with("HTTP 410 Gone: endpoint removed  xxx"),
        "{reason}"
    );
    let body_part = reason.strip_prefix("HTTP 410 Gone: ").unwrap();
    assert_eq!(body_part.chars().count(), 200, "{reason}");
}

#[tokio::test]
async fn other_client_errors_are_permanent() {
    let (receiver, sender, target) = setup().await;
    for status in [400, 401, 404] {
        receiver.respond_with(status, 1);
        let err = sender.send(&target, &payload(), "k").await.unwrap_err();
        assert!(err.is_permanent(), "{status}: {err:?}");
        assert!(
            err.reason().starts_with(&format!("HTTP {status}")),
            "{err:?}"
        );
    }
    for status in [408, 425, 502, 504] {
        receiver.respond_with(status, 1);
        let err = sender.send(&target, &payload(), "k").await.unwrap_err();
        assert!(err.is_transient(), "{status}: {err:?}");
    }
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let (receiver, sender, target) = setup().await;
    receiver.respond_with_headers(429, &[("Retry-After", "7")], 1);
    let err = sender.send(&target, &payload(), "k").await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(
        err.reason().starts_with("HTTP 429 Too Many Requests"),
        "{err:?}"
    );

    receiver.respond_with_headers(503, &[("Retry-After", "86400")], 1);
    let err = sender.send(&target, &payload(), "k").await.unwrap_err();
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)), "capped");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (receiver, sender, target) = setup().await;
    let elsewhere = WebhookReceiver::start(SECRET).await.unwrap();
    receiver.respond_with_headers(307, &[("Location", &elsewhere.url())], 1);
    let err = sender.send(&target, &payload(), "k").await.unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    assert!(
        err.reason().contains("redirects are not followed"),
        "{err:?}"
    );
    assert_eq!(elsewhere.count(), 0);
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn private_targets_refused_unless_allowed() {
    let (receiver, _, target) = setup().await;
    let strict = WebhookSender::new(Duration::from_secs(5), false).unwrap();
    let err = strict.send(&target, &payload(), "k").await.unwrap_err();
    assert!(err.is_permanent(), "{err:?}");

    // Even over https, a loopback / private / metadata address is refused before connecting.
    let port = receiver.url().split(':').nth(2).unwrap().to_owned();
    for url in [
        format!("https://127.0.0.1:{port}"),
        "https://[::1]/hook".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://10.1.2.3/hook".to_owned(),
        "https://[::ffff:127.0.0.1]/hook".to_owned(),
        "https://localhost/hook".to_owned(),
    ] {
        let t = WebhookTarget {
            url: url.clone(),
            secret: SECRET.to_vec(),
        };
        let err = strict.send(&t, &payload(), "k").await.unwrap_err();
        assert!(err.is_permanent(), "{url}: {err:?}");
    }
    assert_eq!(receiver.count(), 0);

    // Allowed when private targets are (tests, on-prem).
    let lax = WebhookSender::new(Duration::from_secs(5), true).unwrap();
    lax.send(&target, &payload(), "k").await.unwrap();
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn bad_urls_and_keys_are_permanent() {
    let (_receiver, sender, target) = setup().await;
    for url in [
        "ftp://example.com/x".to_owned(),
        "http://user:pw@127.0.0.1/x".to_owned(),
        format!("https://example.com/{}", "a".repeat(2100)),
    ] {
        let t = WebhookTarget {
            url: url.clone(),
            secret: SECRET.to_vec(),
        };
        let err = sender.send(&t, &payload(), "k").await.unwrap_err();
        assert!(err.is_permanent(), "{url}: {err:?}");
        assert!(!err.reason().contains("pw"), "{err:?}");
    }
    let err = sender
        .send(&target, &payload(), "bad\r\nkey")
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
}

#[tokio::test]
async fn connection_refused_and_timeout_are_transient() {
    let sender = WebhookSender::new(Duration::from_millis(300), true).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = WebhookTarget {
        url: format!("http://127.0.0.1:{port}/hook?token=topsecret"),
        secret: SECRET.to_vec(),
    };
    let err = sender.send(&t, &payload(), "k").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        !err.reason().contains("topsecret"),
        "no URL in reasons: {err:?}"
    );

    // Accepts but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let t = WebhookTarget {
        url: format!("http://127.0.0.1:{port}/hook?token=topsecret"),
        secret: SECRET.to_vec(),
    };
    let err = sender.send(&t, &payload(), "k").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.reason().contains("timed out"), "{err:?}");
    assert!(!err.reason().contains("topsecret"), "{err:?}");
    hold.abort();
}
