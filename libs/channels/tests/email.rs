//! The MIME message: headers, parts, preheader, header-injection safety.

use cos_channels::SendError;
use cos_channels::email::{OutgoingEmail, build_message, preheader_html};
use cos_testkit::smtp::ReceivedMail;

fn sample() -> OutgoingEmail {
    OutgoingEmail {
        from: "Acme News <news@acme.example>".into(),
        reply_to: Some("support@acme.example".into()),
        to: "Jane Doe <jane@example.com>".into(),
        subject: "Spring sale: 20% off".into(),
        preheader: "Only this week & only for <you>".into(),
        html_body: "<html><body><h1>Sale</h1><p>Hello Jane</p></body></html>".into(),
        text_body: "Sale\n\nHello Jane".into(),
        message_id: "0190f3a4-7b1c-7d2e-9f00-000000000001@campaignos.local".into(),
        list_unsubscribe_url: Some("https://u.acme.example/u/v1.abc_DEF-123".into()),
        list_unsubscribe_mailto: Some("mailto:unsub@acme.example?subject=unsubscribe".into()),
        extra_headers: vec![
            ("X-Campaign-Id".into(), "c-42".into()),
            ("X-Tenant-Id".into(), "t-7".into()),
        ],
    }
}

fn parsed(e: &OutgoingEmail) -> ReceivedMail {
    let msg = build_message(e).expect("builds");
    ReceivedMail {
        mail_from: String::new(),
        rcpt_to: Vec::new(),
        data: String::from_utf8(msg.formatted()).expect("utf-8"),
        authenticated_as: None,
    }
}

fn permanent_reason(r: Result<lettre::Message, SendError>) -> String {
    match r {
        Err(SendError::Permanent { reason }) => reason,
        other => panic!("expected Permanent, got {other:?}"),
    }
}

#[test]
fn headers_of_a_campaign_email() {
    let m = parsed(&sample());
    assert_eq!(
        m.header("List-Unsubscribe").as_deref(),
        Some(
            "<https://u.acme.example/u/v1.abc_DEF-123>, \
             <mailto:unsub@acme.example?subject=unsubscribe>"
        )
    );
    assert_eq!(
        m.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert_eq!(
        m.header("Message-ID").as_deref(),
        Some("<0190f3a4-7b1c-7d2e-9f00-000000000001@campaignos.local>")
    );
    assert_eq!(
        m.header("From").as_deref(),
        Some("\"Acme News\" <news@acme.example>")
    );
    assert_eq!(
        m.header("To").as_deref(),
        Some("\"Jane Doe\" <jane@example.com>")
    );
    assert_eq!(
        m.header("Reply-To").as_deref(),
        Some("support@acme.example")
    );
    assert_eq!(
        m.header_decoded("Subject").as_deref(),
        Some("Spring sale: 20% off")
    );
    assert_eq!(m.header("X-Campaign-Id").as_deref(), Some("c-42"));
    assert_eq!(m.header("X-Tenant-Id").as_deref(), Some("t-7"));
    assert!(m.header("Date").is_some());
    assert_eq!(m.header("MIME-Version").as_deref(), Some("1.0"));
    let ctype = m.header("Content-Type").unwrap();
    assert!(ctype.starts_with("multipart/alternative"), "{ctype}");
}

#[test]
fn bodies_and_hidden_preheader() {
    let m = parsed(&sample());
    let html = m.decoded_html().expect("html part");
    let block = preheader_html("Only this week & only for <you>");
    assert!(block.contains("Only this week &amp; only for &lt;you&gt;"));
    assert!(
        block.starts_with("<div style=\"display:none;max-height:0;overflow:hidden;mso-hide:all\">")
    );
    assert_eq!(
        html,
        format!("<html><body>{block}<h1>Sale</h1><p>Hello Jane</p></body></html>")
    );
    let text = m.decoded_text().expect("text part");
    assert_eq!(text.replace("\r\n", "\n"), "Sale\n\nHello Jane");
    // The preheader is not added to the text part.
    assert!(!text.contains("Only this week"));
}

#[test]
fn single_part_messages() {
    let mut e = sample();
    e.html_body.clear();
    let m = parsed(&e);
    assert!(m.header("Content-Type").unwrap().starts_with("text/plain"));
    assert!(m.decoded_html().is_none());
    assert!(m.decoded_text().unwrap().contains("Hello Jane"));

    let mut e = sample();
    e.text_body.clear();
    let m = parsed(&e);
    assert!(m.header("Content-Type").unwrap().starts_with("text/html"));
    assert!(m.decoded_text().is_none());
    assert!(m.decoded_html().unwrap().contains("display:none"));

    let mut e = sample();
    e.text_body.clear();
    e.html_body.clear();
    assert!(permanent_reason(build_message(&e)).contains("body"));
}

#[test]
fn non_ascii_content_survives_encoding() {
    let mut e = sample();
    e.subject = "Été — 50 % de réduction 🎉".into();
    e.html_body = format!("<p>Bonjour Zoë, {}</p>", "très long texte ".repeat(20));
    e.text_body = "Bonjour Zoë\n.leading dot line".into();
    let m = parsed(&e);
    assert_eq!(
        m.header_decoded("Subject").as_deref(),
        Some("Été — 50 % de réduction 🎉")
    );
    assert!(
        m.decoded_html()
            .unwrap()
            .contains("Bonjour Zoë, très long texte")
    );
    assert!(m.decoded_text().unwrap().contains(".leading dot line"));
}

#[test]
fn unsubscribe_post_only_with_a_url() {
    let mut e = sample();
    e.list_unsubscribe_url = None;
    let m = parsed(&e);
    assert_eq!(
        m.header("List-Unsubscribe").as_deref(),
        Some("<mailto:unsub@acme.example?subject=unsubscribe>")
    );
    assert_eq!(m.header("List-Unsubscribe-Post"), None);

    e.list_unsubscribe_mailto = None;
    let m = parsed(&e);
    assert_eq!(m.header("List-Unsubscribe"), None);
}

#[test]
fn crlf_in_headers_never_creates_headers() {
    let mut e = sample();
    e.subject = "Hello\r\nBcc: victim@evil.example\r\n\r\n<script>".into();
    e.extra_headers = vec![(
        "X-Campaign-Name".into(),
        "spring\r\nBcc: victim2@evil.example\nX-Evil: 1".into(),
    )];
    e.preheader = "pre\r\nBcc: x@evil.example".into();
    let m = parsed(&e);
    let names: Vec<String> = m
        .header_names()
        .iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    assert!(!names.contains(&"bcc".to_owned()), "{names:?}");
    assert!(!names.contains(&"x-evil".to_owned()), "{names:?}");
    assert!(!m.data.contains("\r\nBcc:"), "{}", m.data);
    assert!(!m.data.contains("\nX-Evil:"), "{}", m.data);
    let subject = m.header_decoded("Subject").unwrap();
    assert!(subject.starts_with("Hello"), "{subject}");
    assert!(!subject.contains('\r') && !subject.contains('\n'));
    // Only the intended header, one line.
    assert_eq!(
        m.header("X-Campaign-Name").as_deref(),
        Some("spring  Bcc: victim2@evil.example X-Evil: 1")
    );
}

#[test]
fn injected_addresses_and_header_names_are_refused() {
    for (field, value) in [
        ("from", "Evil\r\nBcc: x@evil.example <news@acme.example>"),
        ("to", "jane@example.com\r\nBcc: x@evil.example"),
        ("to", "not an address"),
        ("from", ""),
    ] {
        let mut e = sample();
        match field {
            "from" => e.from = value.into(),
            _ => e.to = value.into(),
        }
        let reason = permanent_reason(build_message(&e));
        assert!(reason.contains(field), "{field}: {reason}");
    }

    let mut e = sample();
    e.reply_to = Some("nope".into());
    assert!(permanent_reason(build_message(&e)).contains("reply_to"));

    for name in [
        "X-A\r\nBcc",
        "X A",
        "X:A",
        "",
        "Bcc",
        "content-type",
        "Message-ID",
    ] {
        let mut e = sample();
        e.extra_headers = vec![(name.into(), "v".into())];
        let reason = permanent_reason(build_message(&e));
        assert!(reason.contains("extra header"), "{name:?}: {reason}");
    }
}

#[test]
fn unsafe_unsubscribe_uris_and_message_ids_are_refused() {
    for url in [
        "javascript:alert(1)",
        "https://u.example/a>, <https://evil.example",
        "https://u.example/a b",
        "https://u.example/\r\nBcc: x",
    ] {
        let mut e = sample();
        e.list_unsubscribe_url = Some(url.into());
        assert!(
            permanent_reason(build_message(&e)).contains("list_unsubscribe_url"),
            "{url}"
        );
    }
    let mut e = sample();
    e.list_unsubscribe_mailto = Some("https://not-mailto.example".into());
    assert!(permanent_reason(build_message(&e)).contains("list_unsubscribe_mailto"));

    let mut e = sample();
    e.message_id = "no-at-sign".into();
    assert!(permanent_reason(build_message(&e)).contains("message_id"));
    // Brackets are tolerated.
    let mut e = sample();
    e.message_id = "<a.b@campaignos.local>".into();
    assert_eq!(
        parsed(&e).header("Message-ID").as_deref(),
        Some("<a.b@campaignos.local>")
    );
}

#[test]
fn same_input_same_message_id() {
    let a = parsed(&sample());
    let b = parsed(&sample());
    assert_eq!(a.header("Message-ID"), b.header("Message-ID"));
}
