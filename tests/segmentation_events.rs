//! Dynamic membership follows contact changes: an attribute change moves a contact into and out
//! of a segment, and each move is exactly one entered/exited event on RabbitMQ.

mod common;

use std::time::Duration;

use common::{access_token, spawn_mesh};
use cos_proto::common::v1::EventEnvelope;
use cos_proto::segmentation::v1::SegmentMembershipChanged;
use futures::StreamExt;
use prost::Message;
use reqwest::Method;
use serde_json::json;

async fn next(
    consumer: &mut lapin::Consumer,
    within: Duration,
) -> Option<(String, SegmentMembershipChanged)> {
    let d = tokio::time::timeout(within, consumer.next())
        .await
        .ok()??
        .ok()?;
    let env = EventEnvelope::decode(d.data.as_slice()).unwrap();
    Some((
        d.routing_key.to_string(),
        cos_events::decode_payload(&env).unwrap(),
    ))
}

#[tokio::test]
async fn attribute_change_moves_contact_in_and_out_with_one_event_each() {
    let t = spawn_mesh().await;
    let tok = access_token(&t.register("moves@example.com", "Movers").await);
    let (s, _) = t
        .post(
            "/v1/contact-attributes",
            Some(&tok),
            json!({"key": "plan", "type": "string"}),
        )
        .await;
    assert_eq!(s, 201);
    let (_, c) = t
        .post(
            "/v1/contacts",
            Some(&tok),
            json!({"contact": {"email": "m@example.com", "attributes": {"plan": "free"}}}),
        )
        .await;
    let cid = c["id"].as_str().unwrap().to_owned();
    let (s, seg) = t
        .post("/v1/segments", Some(&tok), json!({"name": "Pro", "kind": "dynamic", "criteria": {"field": "attributes.plan", "op": "eq", "value": "pro"}}))
        .await;
    assert_eq!(
        (s, seg["size"].as_str().unwrap_or("0")),
        (201, "0"),
        "{seg}"
    );
    let sid = seg["id"].as_str().unwrap().to_owned();
    let (_conn, mut events) = t.amqp.subscribe("segmentation.segment.#").await.unwrap();

    let (s, c, _) = t
        .call(
            Method::PATCH,
            &format!("/v1/contacts/{cid}"),
            Some(&tok),
            Some(json!({"version": 1, "contact": {"attributes": {"plan": "pro"}}})),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    let (key, e) = next(&mut events, Duration::from_secs(20))
        .await
        .expect("entered event");
    assert_eq!(key, "segmentation.segment.entered");
    assert_eq!(
        (e.segment_id.as_str(), e.contact_id.as_str()),
        (sid.as_str(), cid.as_str())
    );
    let seg_now = cos_testkit::eventually(Duration::from_secs(10), || async {
        let (_, s) = t.get(&format!("/v1/segments/{sid}"), Some(&tok)).await;
        (s["size"] == "1").then_some(s)
    })
    .await
    .unwrap();
    assert_eq!(seg_now["size"], "1");

    // An unrelated change and a manual refresh emit nothing more.
    let (s, _, _) = t
        .call(
            Method::PATCH,
            &format!("/v1/contacts/{cid}"),
            Some(&tok),
            Some(json!({"version": 2, "contact": {"first_name": "Max"}})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, r) = t
        .post(
            &format!("/v1/segments/{sid}:refresh"),
            Some(&tok),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(
        r["entered"].as_str().unwrap_or("0") == "0" && r["exited"].as_str().unwrap_or("0") == "0",
        "{r}"
    );
    assert!(
        next(&mut events, Duration::from_secs(3)).await.is_none(),
        "no duplicate event"
    );

    let (s, _, _) = t
        .call(
            Method::PATCH,
            &format!("/v1/contacts/{cid}"),
            Some(&tok),
            Some(json!({"version": 3, "contact": {"attributes": {"plan": "free"}}})),
        )
        .await;
    assert_eq!(s, 200);
    let (key, e) = next(&mut events, Duration::from_secs(20))
        .await
        .expect("exited event");
    assert_eq!(key, "segmentation.segment.exited");
    assert_eq!(e.contact_id, cid);
    assert!(
        next(&mut events, Duration::from_secs(3)).await.is_none(),
        "exactly one exited event"
    );
    t.stop().await;
}
