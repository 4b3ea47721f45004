//! Crash: a 20,000-recipient launch whose delivery consumer is killed part way (its task
//! aborted: connections dropped mid-batch, transactions rolled back, unacknowledged batches
//! handed back by RabbitMQ) and started again. Every consenting recipient ends with exactly one
//! delivery, none missing, and the campaign completes.

mod common;

use std::time::Duration;

use common::{access_token, spawn_mesh_with};
use serde_json::json;

const SECRET: &str = "crash-test-service-secret-0123456789abcdef";

#[tokio::test]
async fn killed_consumer_restarts_and_every_recipient_gets_exactly_one() {
    // The mesh runs no delivery consumer: this test runs (and kills) its own.
    let t = spawn_mesh_with(&[
        ("COS_PUBLISHING__WORKERS", "0"),
        ("COS_AUTH__SERVICE_SECRET", SECRET),
    ])
    .await;
    let auth = t.register("crash@delivery.example", "Crash Co").await;
    let tok = access_token(&auth);
    t.comp_plan(&tok, auth["tenant"]["id"].as_str().unwrap(), "enterprise")
        .await;
    let n: u32 = 20_000;
    let mut csv = String::from("email,first_name,tags,consent.email\n");
    let mut consenting = 0;
    for i in 0..n {
        let consent = if i.is_multiple_of(40) {
            "unsubscribed"
        } else {
            consenting += 1;
            "subscribed"
        };
        csv.push_str(&format!("r{i}@crash.example,R{i},all,{consent}\n"));
    }
    let resp = t
        .http
        .post(t.url("/v1/contact-imports?file_name=crash.csv"))
        .bearer_auth(&tok)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let job: serde_json::Value = resp.json().await.unwrap();
    let import = job["id"].as_str().unwrap().to_owned();
    cos_testkit::eventually(Duration::from_secs(180), || async {
        let (_, j) = t
            .get(&format!("/v1/contact-imports/{import}"), Some(&tok))
            .await;
        (j["status"] == "completed").then_some(())
    })
    .await
    .expect("import completes");
    let (s, seg) = t
        .post("/v1/segments", Some(&tok), json!({"name": "All", "kind": "dynamic", "criteria": {"op": "has_tag", "value": "all"}}))
        .await;
    assert_eq!(s, 201, "{seg}");
    let (s, c) = t
        .post(
            "/v1/channel-connections",
            Some(&tok),
            json!({"name": "Sink", "kind": "sandbox", "is_default": true}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let (s, c) = t
        .post(
            "/v1/campaigns",
            Some(&tok),
            json!({"name": "Crash", "channels": ["email"], "target_segment_ids": [seg["id"]],
                   "content": {"email": {"subject": "Hi {{ contact.first_name }}", "text_body": "Hello {{ contact.first_name }}"}}}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    let (s, b) = t
        .post(&format!("/v1/campaigns/{id}:launch"), Some(&tok), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");

    let db = cos_db::Db::connect(&t.settings.pool_settings(Some(6)))
        .await
        .unwrap();
    let start_worker = || {
        let engine = cos_publishing::Publishing::engine(
            db.clone(),
            &t.settings.publishing,
            t.keyring.clone(),
            SECRET,
        )
        .unwrap();
        let worker = cos_publishing::worker::DeliveryWorker {
            engine: std::sync::Arc::new(engine),
            amqp_url: t.settings.common.amqp.url.clone(),
            queue: t.settings.common.amqp.delivery_queue.clone(),
            concurrency: 4,
        };
        tokio::spawn(worker.run(tokio_util::sync::CancellationToken::new()))
    };
    let count = |sql: &'static str| {
        let pool = db.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };

    // Part way through, the consumer dies without any chance to clean up.
    let first = start_worker();
    cos_testkit::eventually(Duration::from_secs(120), || async {
        (count("SELECT count(*) FROM publishing.deliveries").await >= 4_000).then_some(())
    })
    .await
    .expect("the first consumer makes progress");
    first.abort();
    let _ = first.await;
    let at_crash = count("SELECT count(*) FROM publishing.deliveries").await;
    assert!(at_crash < consenting, "killed before the end ({at_crash})");

    // A new consumer finishes the run.
    let second = start_worker();
    cos_testkit::eventually(Duration::from_secs(180), || async {
        let (_, c) = t.get(&format!("/v1/campaigns/{id}"), Some(&tok)).await;
        (c["status"] == "completed").then_some(())
    })
    .await
    .expect("the campaign completes after the restart");
    second.abort();

    assert_eq!(
        count("SELECT count(*) FROM publishing.deliveries WHERE status = 'sent'").await,
        consenting,
        "every consenting recipient"
    );
    assert_eq!(
        count("SELECT count(DISTINCT contact_id) FROM publishing.deliveries").await,
        consenting,
        "each exactly once"
    );
    assert_eq!(
        count("SELECT count(*) FROM publishing.deliveries d JOIN segmentation.contacts c ON c.id = d.contact_id WHERE c.email LIKE 'r%@crash.example' AND c.email_consent = 'unsubscribed'").await,
        0,
        "nobody who unsubscribed"
    );
    let (_, p) = t
        .get(&format!("/v1/campaigns/{id}/progress"), Some(&tok))
        .await;
    assert_eq!(
        p["sent"].as_str().unwrap_or_default(),
        consenting.to_string(),
        "{p}"
    );
    assert_eq!(p["queued"].as_str().unwrap_or("0"), "0", "{p}");
    t.stop().await;
}
