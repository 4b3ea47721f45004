//! Launch and delivery end to end, through the gateway only: a scheduled email campaign reaches
//! every consenting member exactly once through a local SMTP server, with progress, delivery
//! records and a working unsubscribe link; pause and resume mid-run; signed webhooks retried on
//! 500 and not on 410; quota, illegal moves, tenant isolation and bad input on the new routes.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{TestMesh, access_token, assert_problem, spawn_mesh};
use cos_testkit::smtp::SmtpSink;
use cos_testkit::webhook::WebhookReceiver;
use reqwest::Method;
use serde_json::{Value, json};

fn num(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// A tenant on the enterprise plan (no message quota in the way); returns its token.
async fn big_tenant(t: &TestMesh, email: &str) -> String {
    let auth = t.register(email, "Delivery Co").await;
    let tok = access_token(&auth);
    t.comp_plan(&tok, auth["tenant"]["id"].as_str().unwrap(), "enterprise")
        .await;
    tok
}

/// Imports `n` contacts `c{i}@list.example` with first names, a `plan` attribute, tag `all`;
/// every `unsub_every`-th one has email consent unsubscribed, every `unknown_every`-th unknown
/// (none), the rest subscribed. Returns how many are subscribed.
async fn import(
    t: &TestMesh,
    tok: &str,
    n: usize,
    unsub_every: usize,
    unknown_every: usize,
) -> usize {
    let (s, b) = t
        .post(
            "/v1/contact-attributes",
            Some(tok),
            json!({"key": "plan", "type": "string"}),
        )
        .await;
    assert!(s == 201 || s == 409, "{b}");
    let mut csv = String::from("email,first_name,tags,plan,consent.email\n");
    let mut subscribed = 0;
    for i in 0..n {
        let consent = if i.is_multiple_of(unsub_every) {
            "unsubscribed"
        } else if unknown_every > 0 && i % unknown_every == 1 {
            ""
        } else {
            subscribed += 1;
            "subscribed"
        };
        csv.push_str(&format!("c{i}@list.example,Name{i},all,pro,{consent}\n"));
    }
    let resp = t
        .http
        .post(t.url("/v1/contact-imports?file_name=list.csv"))
        .bearer_auth(tok)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    cos_testkit::eventually(Duration::from_secs(120), || async {
        let (_, j) = t.get(&format!("/v1/contact-imports/{id}"), Some(tok)).await;
        (j["status"] == "completed").then_some(())
    })
    .await
    .expect("import completes");
    subscribed
}

async fn dynamic_segment(t: &TestMesh, tok: &str) -> String {
    let (s, seg) = t
        .post(
            "/v1/segments",
            Some(tok),
            json!({"name": format!("All {}", uuid::Uuid::new_v4().simple()), "kind": "dynamic",
                   "criteria": {"op": "has_tag", "value": "all"}}),
        )
        .await;
    assert_eq!(s, 201, "{seg}");
    seg["id"].as_str().unwrap().to_owned()
}

async fn smtp_connection(t: &TestMesh, tok: &str, sink: &SmtpSink, rate: u32) -> String {
    let (s, c) = t
        .post(
            "/v1/channel-connections",
            Some(tok),
            json!({"name": format!("Relay {}", sink.port()), "kind": "smtp", "is_default": true,
                   "rate_per_second": rate,
                   "smtp": {"host": sink.host(), "port": sink.port(), "tls": "none",
                            "username": "relay", "password": "relay-secret",
                            "from": "News <news@brand.example>"}}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert!(
        c["smtp"]["password"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "password never returned: {c}"
    );
    assert_eq!(c["has_secret"], true);
    c["id"].as_str().unwrap().to_owned()
}

fn email_campaign(name: &str, segment: &str) -> Value {
    json!({
        "name": name,
        "channels": ["email"],
        "target_segment_ids": [segment],
        "content": {"email": {
            "subject": "Hi {{ contact.first_name }}",
            "preheader": "Your {{ contact.attributes.plan }} news",
            "html_body": "<p>Hello {{ contact.first_name }} on {{ contact.attributes.plan }}</p>",
            "text_body": "Hello {{ contact.first_name }}"
        }},
    })
}

async fn wait_status(t: &TestMesh, tok: &str, id: &str, status: &str, timeout: Duration) -> Value {
    cos_testkit::eventually(timeout, || async {
        let (_, c) = t.get(&format!("/v1/campaigns/{id}"), Some(tok)).await;
        (c["status"] == status).then_some(c)
    })
    .await
    .unwrap_or_else(|_| panic!("campaign {id} did not become {status}"))
}

async fn all_deliveries(t: &TestMesh, tok: &str, id: &str, status: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut page = String::new();
    loop {
        let (s, b) = t
            .get(
                &format!(
                    "/v1/campaigns/{id}/deliveries?status={status}&page_size=500&page_token={page}"
                ),
                Some(tok),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        out.extend(b["deliveries"].as_array().cloned().unwrap_or_default());
        match b["next_page_token"].as_str() {
            Some(p) if !p.is_empty() => page = p.to_owned(),
            _ => break,
        }
    }
    out
}

fn in_seconds(s: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(s)).to_rfc3339()
}

#[tokio::test]
async fn scheduled_email_reaches_each_consenting_member_once_and_unsubscribe_sticks() {
    let t = spawn_mesh().await;
    let tok = big_tenant(&t, "owner@delivery.example").await;
    let subscribed = import(&t, &tok, 1000, 10, 7).await;
    let seg = dynamic_segment(&t, &tok).await;
    let sink = SmtpSink::start()
        .await
        .unwrap()
        .with_credentials("relay", "relay-secret");
    smtp_connection(&t, &tok, &sink, 0).await;
    let (s, c) = t
        .post(
            "/v1/campaigns",
            Some(&tok),
            email_campaign("Winter news", &seg),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();

    // Scheduled two seconds ahead; the scheduler launches it.
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{id}:schedule"),
            Some(&tok),
            json!({"send_at": in_seconds(2), "time_zone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    wait_status(&t, &tok, &id, "completed", Duration::from_secs(120)).await;

    let mails = sink.messages();
    assert_eq!(mails.len(), subscribed, "one message per consenting member");
    let mut to: Vec<String> = mails.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    to.sort();
    let before = to.len();
    to.dedup();
    assert_eq!(to.len(), before, "nobody got two");
    for m in &mails {
        let rcpt = &m.rcpt_to[0];
        let i: usize = rcpt
            .trim_start_matches('<')
            .trim_start_matches('c')
            .split('@')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            !i.is_multiple_of(10) && i % 7 != 1,
            "{rcpt} did not consent"
        );
        assert_eq!(m.header_decoded("Subject").unwrap(), format!("Hi Name{i}"));
        let html = m.decoded_html().unwrap();
        assert!(html.contains(&format!("Hello Name{i} on pro")), "{html}");
        assert!(html.contains("/u/"), "unsubscribe link in the body: {html}");
        assert!(
            m.decoded_text()
                .unwrap()
                .contains(&format!("Hello Name{i}"))
        );
        let lu = m.header("List-Unsubscribe").unwrap();
        assert!(lu.contains("/u/"), "{lu}");
        assert_eq!(
            m.header("List-Unsubscribe-Post").unwrap(),
            "List-Unsubscribe=One-Click"
        );
    }

    let (s, p) = t
        .get(&format!("/v1/campaigns/{id}/progress"), Some(&tok))
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(num(&p["sent"]), subscribed as i64, "{p}");
    assert_eq!(num(&p["audience"]), subscribed as i64, "{p}");
    assert_eq!(num(&p["failed"]), 0);
    assert_eq!(num(&p["queued"]), 0);
    assert_eq!(p["fan_out_done"], true);
    let skipped: BTreeMap<String, i64> = p["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["reason"].as_str().unwrap().to_owned(), num(&s["count"])))
        .collect();
    assert_eq!(skipped["unsubscribed"], 100, "{p}");
    assert_eq!(
        skipped.values().sum::<i64>(),
        1000 - subscribed as i64,
        "{p}"
    );
    assert_eq!(num(&p["skipped_total"]), 1000 - subscribed as i64);

    let sent = all_deliveries(&t, &tok, &id, "sent").await;
    assert_eq!(sent.len(), subscribed);
    let sent_to: HashSet<String> = sent
        .iter()
        .map(|d| d["recipient"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent_to.len(), subscribed);
    assert!(
        all_deliveries(&t, &tok, &id, "failed,retrying,pending")
            .await
            .is_empty()
    );

    // The recipient clicks the link: a plain page, and consent flips.
    let m = &mails[0];
    let link = m.header("List-Unsubscribe").unwrap();
    let link = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    let resp = reqwest::get(&link).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(resp.text().await.unwrap().contains("You are unsubscribed"));
    // A tampered link is refused with a page, not JSON.
    let bad = format!("{}x", &link[..link.len() - 1]);
    let resp = reqwest::get(&bad).await.unwrap();
    assert_eq!(resp.status(), 400);
    // RFC 8058 one-click POST works too (already unsubscribed: still a 200 page).
    let resp = reqwest::Client::new()
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let gone = m.rcpt_to[0]
        .trim_matches(|c| c == '<' || c == '>')
        .to_owned();

    // The next launch (a duplicate, launched now) leaves that contact out.
    let (s, dup) = t
        .post(
            &format!("/v1/campaigns/{id}:duplicate"),
            Some(&tok),
            json!({"name": "Winter news 2"}),
        )
        .await;
    assert_eq!(s, 201, "{dup}");
    let dup_id = dup["id"].as_str().unwrap().to_owned();
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{dup_id}:launch"),
            Some(&tok),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "running");
    wait_status(&t, &tok, &dup_id, "completed", Duration::from_secs(120)).await;
    let second: Vec<_> = sink.messages().into_iter().skip(subscribed).collect();
    assert_eq!(second.len(), subscribed - 1);
    assert!(
        second.iter().all(|m| !m.rcpt_to[0].contains(&gone)),
        "{gone} unsubscribed"
    );
    t.stop().await;
}

#[tokio::test]
async fn pause_stops_sending_and_resume_finishes_without_duplicates() {
    let t = spawn_mesh().await;
    let tok = big_tenant(&t, "pause@delivery.example").await;
    let subscribed = import(&t, &tok, 300, 1000, 0).await;
    let seg = dynamic_segment(&t, &tok).await;
    let sink = SmtpSink::start().await.unwrap();
    // 40 messages a second: the run takes several seconds, long enough to pause it.
    smtp_connection(&t, &tok, &sink, 40).await;
    let (_, c) = t
        .post("/v1/campaigns", Some(&tok), email_campaign("Slow", &seg))
        .await;
    let id = c["id"].as_str().unwrap().to_owned();

    // Illegal moves name both states.
    let (s, b) = t
        .post(&format!("/v1/campaigns/{id}:pause"), Some(&tok), json!({}))
        .await;
    assert_problem(s, &b, 409, None);
    assert!(b["detail"].as_str().unwrap().contains("draft"), "{b}");
    let (s, b) = t
        .post(&format!("/v1/campaigns/{id}:resume"), Some(&tok), json!({}))
        .await;
    assert_problem(s, &b, 409, None);

    let (s, b) = t
        .post(&format!("/v1/campaigns/{id}:launch"), Some(&tok), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(sink.wait_for(40, Duration::from_secs(60)).await);
    let (s, b) = t
        .post(&format!("/v1/campaigns/{id}:pause"), Some(&tok), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "paused");
    // Within seconds nothing more goes out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_pause = sink.count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.count(), at_pause, "no sends while paused");
    assert!(at_pause < subscribed, "paused before the end ({at_pause})");
    let (_, p) = t
        .get(&format!("/v1/campaigns/{id}/progress"), Some(&tok))
        .await;
    assert_eq!(p["status"], "paused");
    assert_eq!(num(&p["sent"]), at_pause as i64, "{p}");
    let (s, b) = t
        .post(&format!("/v1/campaigns/{id}:launch"), Some(&tok), json!({}))
        .await;
    assert_problem(s, &b, 409, None);

    let (s, b) = t
        .post(&format!("/v1/campaigns/{id}:resume"), Some(&tok), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    wait_status(&t, &tok, &id, "completed", Duration::from_secs(120)).await;
    let mails = sink.messages();
    assert_eq!(mails.len(), subscribed);
    let distinct: HashSet<String> = mails.iter().map(|m| m.rcpt_to[0].clone()).collect();
    assert_eq!(
        distinct.len(),
        subscribed,
        "each once across pause and resume"
    );
    let (_, p) = t
        .get(&format!("/v1/campaigns/{id}/progress"), Some(&tok))
        .await;
    assert_eq!(num(&p["sent"]), subscribed as i64, "{p}");
    t.stop().await;
}

#[tokio::test]
async fn signed_webhooks_retry_a_500_and_not_a_410() {
    let t = spawn_mesh().await;
    let tok = big_tenant(&t, "hooks@delivery.example").await;
    import(&t, &tok, 3, 1000, 0).await;
    let seg = dynamic_segment(&t, &tok).await;
    let secret = "whsec_test_0123456789abcdef";
    let hook = WebhookReceiver::start(secret.as_bytes()).await.unwrap();
    let (s, c) = t
        .post(
            "/v1/channel-connections",
            Some(&tok),
            json!({"name": "CRM hook", "kind": "webhook", "is_default": true,
                   "webhook": {"url": hook.url(), "signing_secret": secret}}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let campaign = |name: &str| {
        json!({"name": name, "channels": ["webhook"], "target_segment_ids": [seg],
               "content": {"webhook": {"json_template": "{\"email\": {{ contact.email }}, \"plan\": {{ contact.attributes.plan }}}"}}})
    };
    // A 500 is retried (with backoff) and then delivered.
    hook.respond_with(500, 2);
    let (_, c1) = t
        .post("/v1/campaigns", Some(&tok), campaign("Hook 1"))
        .await;
    let id1 = c1["id"].as_str().unwrap().to_owned();
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{id1}:launch"),
            Some(&tok),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    wait_status(&t, &tok, &id1, "completed", Duration::from_secs(60)).await;
    let got = hook.received();
    assert_eq!(got.len(), 5, "3 recipients + 2 retried attempts");
    assert!(
        got.iter().all(|r| r.signature_valid),
        "every request verifies"
    );
    assert!(got.iter().all(|r| r.idempotency_key.is_some()));
    assert_eq!(got.iter().filter(|r| r.responded == 200).count(), 3);
    let ok: HashSet<String> = got
        .iter()
        .filter(|r| r.responded == 200)
        .map(|r| r.body["email"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ok.len(), 3);
    assert!(got.iter().all(|r| r.body["plan"] == "pro"));
    let sent = all_deliveries(&t, &tok, &id1, "sent").await;
    assert_eq!(sent.len(), 3);
    assert_eq!(
        sent.iter()
            .map(|d| d["attempts"].as_i64().unwrap())
            .sum::<i64>(),
        5
    );

    // A 410 is final: marked failed with the receiver's reason, never retried.
    hook.always(410);
    let (_, c2) = t
        .post("/v1/campaigns", Some(&tok), campaign("Hook 2"))
        .await;
    let id2 = c2["id"].as_str().unwrap().to_owned();
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{id2}:launch"),
            Some(&tok),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    wait_status(&t, &tok, &id2, "completed", Duration::from_secs(60)).await;
    assert_eq!(hook.received().len(), 8, "one attempt each");
    let failed = all_deliveries(&t, &tok, &id2, "failed").await;
    assert_eq!(failed.len(), 3);
    assert!(
        failed
            .iter()
            .all(|d| d["error"].as_str().unwrap().contains("410") && d["attempts"] == 1),
        "{failed:?}"
    );
    let (_, p) = t
        .get(&format!("/v1/campaigns/{id2}/progress"), Some(&tok))
        .await;
    assert_eq!(num(&p["failed"]), 3, "{p}");
    t.stop().await;
}

#[tokio::test]
async fn launch_guards_quota_connections_isolation_and_bad_input() {
    let t = spawn_mesh().await;
    // A trial tenant: 1000 messages a month.
    let auth = t.register("trial@delivery.example", "Trial Co").await;
    let tok = access_token(&auth);
    let subscribed = import(&t, &tok, 450, 1000, 0).await;
    assert_eq!(subscribed, 449);
    let seg = dynamic_segment(&t, &tok).await;
    let (_, c) = t
        .post("/v1/campaigns", Some(&tok), email_campaign("Q1", &seg))
        .await;
    let id = c["id"].as_str().unwrap().to_owned();

    // No connection for email yet: refused, naming the channel, nothing sent or taken.
    let (s, b) = t
        .post(&format!("/v1/campaigns/{id}:launch"), Some(&tok), json!({}))
        .await;
    assert_eq!(s, 409, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("email"), "{b}");
    let (_, got) = t.get(&format!("/v1/campaigns/{id}"), Some(&tok)).await;
    assert_eq!(got["status"], "draft");

    // Bad connection input names the field and writes nothing.
    for (body, field) in [
        (
            json!({"name": "x", "kind": "smtp", "smtp": {"port": 25, "from": "a@b.example"}}),
            "smtp.host",
        ),
        (
            json!({"name": "x", "kind": "smtp", "smtp": {"host": "h", "from": "not-an-address"}}),
            "smtp.from",
        ),
        (
            json!({"name": "x", "kind": "smtp", "smtp": {"host": "h", "port": 70000, "from": "a@b.example"}}),
            "smtp.port",
        ),
        (json!({"name": "x", "kind": "fax"}), "kind"),
        (json!({"name": "", "kind": "sandbox"}), "name"),
        (
            json!({"name": "x", "kind": "webhook", "webhook": {"url": "ftp://x.example/h"}}),
            "webhook.url",
        ),
        (
            json!({"name": "x", "kind": "webhook", "webhook": {"url": "https://x.example/h", "signing_secret": "short"}}),
            "webhook.signing_secret",
        ),
    ] {
        let (s, b) = t.post("/v1/channel-connections", Some(&tok), body).await;
        assert_problem(s, &b, 422, Some(field));
    }
    assert_eq!(
        t.count("SELECT count(*) FROM publishing.channel_connections")
            .await,
        0
    );

    // A sandbox connection for email: it records instead of sending, and counts toward quota.
    let (s, sb) = t
        .post(
            "/v1/channel-connections",
            Some(&tok),
            json!({"name": "Sandbox", "kind": "sandbox", "is_default": true}),
        )
        .await;
    assert_eq!(s, 201, "{sb}");
    let sandbox_id = sb["id"].as_str().unwrap().to_owned();
    let (s, dup) = t
        .post(
            "/v1/channel-connections",
            Some(&tok),
            json!({"name": "sandbox", "kind": "sandbox"}),
        )
        .await;
    assert_problem(s, &dup, 409, Some("name"));

    let (s, b) = t
        .post(&format!("/v1/campaigns/{id}:launch"), Some(&tok), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    wait_status(&t, &tok, &id, "completed", Duration::from_secs(60)).await;
    let (_, p) = t
        .get(&format!("/v1/campaigns/{id}/progress"), Some(&tok))
        .await;
    assert_eq!(num(&p["sent"]), 449, "{p}");
    assert_eq!(num(&p["quota_granted"]), 449, "{p}");
    // Completed: no more launches, pauses or resumes.
    for verb in ["launch", "pause", "resume"] {
        let (s, b) = t
            .post(&format!("/v1/campaigns/{id}:{verb}"), Some(&tok), json!({}))
            .await;
        assert_problem(s, &b, 409, None);
        assert!(b["detail"].as_str().unwrap().contains("completed"), "{b}");
    }
    // Second launch: 449 + 449 = 898 of 1000. Third: over the quota -> 402, nothing sent.
    let (_, c2) = t
        .post(
            &format!("/v1/campaigns/{id}:duplicate"),
            Some(&tok),
            json!({"name": "Q2"}),
        )
        .await;
    let id2 = c2["id"].as_str().unwrap().to_owned();
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{id2}:launch"),
            Some(&tok),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    wait_status(&t, &tok, &id2, "completed", Duration::from_secs(60)).await;
    let (_, c3) = t
        .post(
            &format!("/v1/campaigns/{id}:duplicate"),
            Some(&tok),
            json!({"name": "Q3"}),
        )
        .await;
    let id3 = c3["id"].as_str().unwrap().to_owned();
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{id3}:launch"),
            Some(&tok),
            json!({}),
        )
        .await;
    assert_eq!(s, 402, "{b}");
    let (_, got) = t.get(&format!("/v1/campaigns/{id3}"), Some(&tok)).await;
    assert_eq!(got["status"], "draft");
    let (_, p3) = t
        .get(&format!("/v1/campaigns/{id3}/progress"), Some(&tok))
        .await;
    assert_eq!(num(&p3["sent"]), 0);
    // Scheduled, the same refusal sends it back to draft with the reason, for the marketer.
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{id3}:schedule"),
            Some(&tok),
            json!({"send_at": in_seconds(2), "time_zone": "UTC"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let back = wait_status(&t, &tok, &id3, "draft", Duration::from_secs(60)).await;
    assert!(
        back["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("messages"),
        "{back}"
    );
    assert!(back.get("schedule").is_none_or(Value::is_null), "{back}");
    let sandbox_rows = t
        .count("SELECT count(*) FROM publishing.deliveries WHERE rendered IS NOT NULL")
        .await;
    assert_eq!(
        sandbox_rows, 898,
        "the sandbox recorded each rendered message"
    );

    // Another tenant sees none of it.
    let other = access_token(&t.register("other@delivery.example", "Other Co").await);
    for path in [
        format!("/v1/campaigns/{id}/progress"),
        format!("/v1/channel-connections/{sandbox_id}"),
    ] {
        let (s, b) = t.get(&path, Some(&other)).await;
        assert_problem(s, &b, 404, None);
    }
    let (s, b) = t
        .get(&format!("/v1/campaigns/{id}/deliveries"), Some(&other))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["deliveries"]
            .as_array()
            .map(Vec::is_empty)
            .unwrap_or(true),
        "{b}"
    );
    for verb in ["launch", "pause", "resume", "testSend"] {
        let body = if verb == "testSend" {
            json!({"channel": "email", "to": "x@y.example"})
        } else {
            json!({})
        };
        let (s, b) = t
            .post(&format!("/v1/campaigns/{id3}:{verb}"), Some(&other), body)
            .await;
        assert_problem(s, &b, 404, None);
    }
    let (s, b, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/channel-connections/{sandbox_id}"),
            Some(&other),
            None,
        )
        .await;
    assert_problem(s, &b, 404, None);
    let (s, b, _) = t
        .call(
            Method::PATCH,
            &format!("/v1/channel-connections/{sandbox_id}"),
            Some(&other),
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_problem(s, &b, 404, None);

    // Bad filters name their field.
    let (s, b) = t
        .get(
            &format!("/v1/campaigns/{id}/deliveries?status=lost"),
            Some(&tok),
        )
        .await;
    assert_problem(s, &b, 422, Some("status"));
    let (s, b) = t
        .get(
            &format!("/v1/campaigns/{id}/deliveries?page_size=9999"),
            Some(&tok),
        )
        .await;
    assert_problem(s, &b, 422, Some("page_size"));

    // Test send through the sandbox: recorded, not counted in any run.
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{id3}:testSend"),
            Some(&tok),
            json!({"channel": "email", "to": "me@brand.example"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "sent", "{b}");
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{id3}:testSend"),
            Some(&tok),
            json!({"channel": "email", "to": "nope"}),
        )
        .await;
    assert_problem(s, &b, 422, Some("to"));
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{id3}:testSend"),
            Some(&tok),
            json!({"channel": "sms", "to": "+4915112345678"}),
        )
        .await;
    assert_problem(s, &b, 422, Some("channel"));
    t.stop().await;
}

#[tokio::test]
async fn a_rate_limited_batch_outlasting_the_claim_lease_still_sends_each_once() {
    // 24 recipients at 3 messages/s take 8 s, longer than the 5 s claim lease: the sweeper must
    // not take over claims whose sends are merely waiting for the rate limiter.
    let t = common::spawn_mesh_with(&[("COS_PUBLISHING__CLAIM_LEASE_SECS", "5")]).await;
    let tok = big_tenant(&t, "lease@delivery.example").await;
    let subscribed = import(&t, &tok, 24, 1000, 0).await;
    let seg = dynamic_segment(&t, &tok).await;
    let sink = SmtpSink::start().await.unwrap();
    smtp_connection(&t, &tok, &sink, 3).await;
    let (_, c) = t
        .post(
            "/v1/campaigns",
            Some(&tok),
            email_campaign("Slow lease", &seg),
        )
        .await;
    let id = c["id"].as_str().unwrap().to_owned();
    let (s, b) = t
        .post(&format!("/v1/campaigns/{id}:launch"), Some(&tok), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    wait_status(&t, &tok, &id, "completed", Duration::from_secs(120)).await;
    // Give a wrongly taken-over claim time to show up as a second message.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = sink.messages();
    let distinct: HashSet<String> = mails.iter().map(|m| m.rcpt_to[0].clone()).collect();
    assert_eq!(distinct.len(), subscribed);
    assert_eq!(mails.len(), subscribed, "nobody twice");
    let sent = all_deliveries(&t, &tok, &id, "sent").await;
    assert!(sent.iter().all(|d| d["attempts"] == 1), "{sent:?}");
    t.stop().await;
}

#[tokio::test]
async fn connection_updates_check_versions_and_fields_and_bad_ids_are_named() {
    let t = spawn_mesh().await;
    let tok = big_tenant(&t, "patch@delivery.example").await;
    let sink = SmtpSink::start().await.unwrap();
    let id = smtp_connection(&t, &tok, &sink, 0).await;
    let (_, before) = t
        .get(&format!("/v1/channel-connections/{id}"), Some(&tok))
        .await;
    let version = num(&before["version"]);

    // A stale version is a conflict that says the current one; nothing changes.
    let (s, b, _) = t
        .call(
            Method::PATCH,
            &format!("/v1/channel-connections/{id}"),
            Some(&tok),
            Some(json!({"version": version + 5, "name": "Renamed"})),
        )
        .await;
    assert_problem(s, &b, 409, None);
    assert_eq!(b["metadata"]["current_version"], version.to_string(), "{b}");
    // Bad fields are named; nothing changes.
    for (body, field) in [
        (json!({"smtp": {"port": 70000}}), "smtp.port"),
        (json!({"smtp": {"tls": "ssl3"}}), "smtp.tls"),
        (json!({"smtp": {"from": "nobody"}}), "smtp.from"),
        (json!({"name": ""}), "name"),
        (json!({"rate_per_second": 20000}), "rate_per_second"),
        (
            json!({"webhook": {"url": "https://x.example/h"}}),
            "webhook",
        ),
    ] {
        let (s, b, _) = t
            .call(
                Method::PATCH,
                &format!("/v1/channel-connections/{id}"),
                Some(&tok),
                Some(body),
            )
            .await;
        assert_problem(s, &b, 422, Some(field));
    }
    let (_, after) = t
        .get(&format!("/v1/channel-connections/{id}"), Some(&tok))
        .await;
    assert_eq!(after, before, "nothing was written");

    // A good update keeps the stored password unless a new one is given.
    let (s, b, _) = t
        .call(
            Method::PATCH,
            &format!("/v1/channel-connections/{id}"),
            Some(&tok),
            Some(json!({"version": version, "name": "Renamed", "smtp": {"port": 2525}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["name"], "Renamed");
    assert_eq!(b["smtp"]["port"], 2525);
    assert_eq!(b["has_secret"], true);

    // Ids that are not ids are named; unknown ones are 404.
    let (s, b) = t
        .post("/v1/campaigns/not-an-id:launch", Some(&tok), json!({}))
        .await;
    assert_problem(s, &b, 422, Some("campaign_id"));
    let (s, b) = t
        .get("/v1/campaigns/not-an-id/deliveries", Some(&tok))
        .await;
    assert_problem(s, &b, 422, Some("campaign_id"));
    let (s, b) = t.get("/v1/channel-connections/nope", Some(&tok)).await;
    assert_problem(s, &b, 422, Some("connection_id"));
    let unknown = uuid::Uuid::new_v4();
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{unknown}:launch"),
            Some(&tok),
            json!({}),
        )
        .await;
    assert_problem(s, &b, 404, None);
    // A wrong type is a 400 naming the body.
    let (s, b) = t
        .post(
            "/v1/channel-connections",
            Some(&tok),
            json!({"name": "x", "kind": "sandbox", "rate_per_second": "fast"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    t.stop().await;
}
