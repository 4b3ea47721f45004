//! SmtpSender against the testkit's SMTP sink.

use std::time::Duration;

use cos_channels::SendError;
use cos_channels::email::OutgoingEmail;
use cos_channels::smtp::{SmtpConfig, SmtpSender, SmtpTls};
use cos_testkit::smtp::SmtpSink;

fn config(sink: &SmtpSink) -> SmtpConfig {
    SmtpConfig {
        host: sink.host(),
        port: sink.port(),
        tls: SmtpTls::None,
        username: None,
        password: None,
        timeout: Duration::from_secs(5),
        pool_max: 2,
    }
}

fn email(to: &str, n: u32) -> OutgoingEmail {
    OutgoingEmail {
        from: "Acme <news@acme.example>".into(),
        reply_to: None,
        to: to.into(),
        subject: format!("Hello n°{n}"),
        preheader: "Preview text".into(),
        html_body: format!("<html><body><p>Hi Zoë, offer {n}</p>\n<p>.dot</p></body></html>"),
        text_body: format!("Hi Zoë, offer {n}\n.dot line"),
        message_id: format!("delivery-{n}@campaignos.local"),
        list_unsubscribe_url: Some(format!("https://u.acme.example/u/tok{n}")),
        list_unsubscribe_mailto: None,
        extra_headers: vec![("X-Campaign-Id".into(), "camp-1".into())],
    }
}

#[tokio::test]
async fn delivers_rendered_message() {
    let sink = SmtpSink::start().await.unwrap();
    let sender = SmtpSender::new(&config(&sink)).unwrap();
    let receipt = sender.send(&email("jane@example.com", 1)).await.unwrap();
    assert_eq!(receipt.provider_message_id, "SINK000001");
    assert!(
        receipt
            .detail
            .starts_with("250 2.0.0 Ok: queued as SINK000001"),
        "{receipt:?}"
    );

    assert_eq!(sink.count(), 1);
    let m = &sink.messages()[0];
    assert_eq!(m.mail_from, "news@acme.example");
    assert_eq!(m.rcpt_to, vec!["jane@example.com"]);
    assert_eq!(m.authenticated_as, None);
    assert_eq!(m.header_decoded("Subject").as_deref(), Some("Hello n°1"));
    assert_eq!(
        m.header("Message-ID").as_deref(),
        Some("<delivery-1@campaignos.local>")
    );
    assert_eq!(m.header("X-Campaign-Id").as_deref(), Some("camp-1"));
    assert_eq!(
        m.header("List-Unsubscribe").as_deref(),
        Some("<https://u.acme.example/u/tok1>")
    );
    let html = m.decoded_html().unwrap();
    assert!(html.contains("<p>Hi Zoë, offer 1</p>"), "{html}");
    assert!(html.contains("Preview text</div>"), "{html}");
    assert!(html.contains("\n<p>.dot</p>"), "{html}");
    let text = m.decoded_text().unwrap();
    assert!(text.contains("Hi Zoë, offer 1"), "{text}");
    assert!(text.contains("\n.dot line"), "dot-unstuffed: {text}");
}

#[tokio::test]
async fn many_messages_over_pooled_connections() {
    let sink = SmtpSink::start().await.unwrap();
    let sender = SmtpSender::new(&config(&sink)).unwrap();
    let mut tasks = Vec::new();
    for n in 0..12 {
        let sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            sender
                .send(&email(&format!("user{n}@example.com"), n))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(sink.wait_for(12, Duration::from_secs(5)).await);
    let mut to: Vec<String> = sink
        .messages()
        .into_iter()
        .flat_map(|m| m.rcpt_to)
        .collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), 12);
    assert!(
        sink.connections() < 12,
        "connections are reused: {}",
        sink.connections()
    );
}

#[tokio::test]
async fn temporary_rejection_is_transient_then_retry_succeeds() {
    let sink = SmtpSink::start().await.unwrap();
    sink.fail_next_rcpt(1, "450 4.2.1 try later");
    let sender = SmtpSender::new(&config(&sink)).unwrap();
    let err = sender
        .send(&email("jane@example.com", 1))
        .await
        .unwrap_err();
    match &err {
        SendError::Transient { reason, .. } => {
            assert!(reason.starts_with("450"), "{reason}");
            assert!(reason.contains("4.2.1 try later"), "{reason}");
        }
        other => panic!("expected Transient, got {other:?}"),
    }
    assert_eq!(sink.count(), 0);
    sender.send(&email("jane@example.com", 1)).await.unwrap();
    assert_eq!(sink.count(), 1);
}

#[tokio::test]
async fn unknown_mailbox_is_permanent_with_server_text() {
    let sink = SmtpSink::start().await.unwrap();
    sink.reject_rcpt_matching("ghost", "550 5.1.1 no such user");
    let sender = SmtpSender::new(&config(&sink)).unwrap();
    let err = sender
        .send(&email("ghost@example.com", 1))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SendError::Permanent {
            reason: "550 5.1.1 no such user".into()
        }
    );
    // Other recipients are unaffected, on the same sender.
    sender.send(&email("jane@example.com", 2)).await.unwrap();
    assert_eq!(sink.count(), 1);
}

#[tokio::test]
async fn invalid_message_is_permanent_without_connecting() {
    let sink = SmtpSink::start().await.unwrap();
    let sender = SmtpSender::new(&config(&sink)).unwrap();
    let err = sender.send(&email("not-an-address", 1)).await.unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    assert!(err.reason().contains("to"), "{err:?}");
    assert_eq!(sink.connections(), 0);
}

#[tokio::test]
async fn authenticates_with_credentials() {
    let sink = SmtpSink::start()
        .await
        .unwrap()
        .with_credentials("mailer", "s3cret-pass");
    let mut cfg = config(&sink);

    // Without credentials the sink refuses MAIL: configuration problem, transient.
    let err = SmtpSender::new(&cfg)
        .unwrap()
        .send(&email("jane@example.com", 1))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.reason().contains("530"), "{err:?}");

    cfg.username = Some("mailer".into());
    cfg.password = Some("wrong".into());
    let err = SmtpSender::new(&cfg)
        .unwrap()
        .send(&email("jane@example.com", 2))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.reason().contains("535"), "{err:?}");
    assert!(!err.reason().contains("wrong"), "no secrets: {err:?}");

    cfg.password = Some("s3cret-pass".into());
    let sender = SmtpSender::new(&cfg).unwrap();
    sender.send(&email("jane@example.com", 3)).await.unwrap();
    sender.send(&email("joe@example.com", 4)).await.unwrap();
    let got = sink.messages();
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|m| m.authenticated_as.as_deref() == Some("mailer"))
    );
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        tls: SmtpTls::None,
        username: None,
        password: None,
        timeout: Duration::from_secs(5),
        pool_max: 1,
    };
    let err = SmtpSender::new(&cfg)
        .unwrap()
        .send(&email("jane@example.com", 1))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn silent_server_times_out_as_transient() {
    // Accepts TCP but never greets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let cfg = SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        tls: SmtpTls::None,
        username: None,
        password: None,
        timeout: Duration::from_millis(300),
        pool_max: 1,
    };
    let err = SmtpSender::new(&cfg)
        .unwrap()
        .send(&email("jane@example.com", 1))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    hold.abort();
}

#[tokio::test]
async fn hung_server_times_out_and_the_pool_recovers() {
    let sink = SmtpSink::start().await.unwrap();
    let mut cfg = config(&sink);
    cfg.timeout = Duration::from_millis(250);
    cfg.pool_max = 1;
    let sender = SmtpSender::new(&cfg).unwrap();
    // Warm the pool: one idle connection (parked by a task lettre spawns: let it run).
    sender.send(&email("first@example.com", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    sink.stall_next_data(1);
    let err = sender
        .send(&email("stalled@example.com", 2))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.reason().contains("timeout"), "{err:?}");

    // lettre hands the abandoned connection back to its pool from a spawned task: let it run,
    // so the next send would pick that connection if it were still pooled.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The connection left mid-DATA must not be reused: the next send works at once.
    let receipt = sender.send(&email("after@example.com", 3)).await.unwrap();
    assert!(receipt.detail.starts_with("250"), "{receipt:?}");
    let to: Vec<Vec<String>> = sink.messages().into_iter().map(|m| m.rcpt_to).collect();
    assert_eq!(
        to,
        vec![
            vec!["first@example.com".to_owned()],
            vec!["after@example.com".to_owned()]
        ]
    );
    // The stalled send reused the warm connection; the last one needed a new connection.
    assert_eq!(sink.connections(), 2);
}
