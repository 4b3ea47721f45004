//! Identity's events reach RabbitMQ through the outbox, also when RabbitMQ was down at the time.

mod common;

use std::time::Duration;

use common::{spawn_mesh, start, test_database, test_settings};
use cos_proto::common::v1::EventEnvelope;
use cos_proto::identity::v1::{TenantCreated, UserRegistered};
use cos_testkit::{TestAmqp, ToggleProxy};
use futures::StreamExt;
use prost::Message;

async fn next_event(
    consumer: &mut lapin::Consumer,
    within: Duration,
) -> Option<(String, EventEnvelope)> {
    let delivery = tokio::time::timeout(within, consumer.next())
        .await
        .ok()??
        .ok()?;
    let envelope = EventEnvelope::decode(delivery.data.as_slice()).expect("protobuf envelope");
    Some((delivery.routing_key.to_string(), envelope))
}

#[tokio::test]
async fn registering_publishes_user_registered_tenant_created_and_member_added() {
    let t = spawn_mesh().await;
    let (_conn, mut consumer) = t.amqp.subscribe("identity.#").await.unwrap();
    let auth = t.register("events@example.com", "Evented").await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (key, env) = next_event(&mut consumer, Duration::from_secs(15))
            .await
            .expect("events arrive");
        seen.push((key, env));
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let (key, member_env) = &seen[0];
    assert_eq!(key, "identity.member.added");
    let member: cos_proto::identity::v1::MemberChanged =
        cos_events::decode_payload(member_env).unwrap();
    assert_eq!(member.role, "owner");
    assert_eq!(member.user_id, auth["user"]["id"].as_str().unwrap());
    let (key, tenant_env) = &seen[1];
    assert_eq!(key, "identity.tenant.created");
    let tenant: TenantCreated = cos_events::decode_payload(tenant_env).unwrap();
    assert_eq!(tenant.name, "Evented");
    let (key, user_env) = &seen[2];
    assert_eq!(key, "identity.user.registered");
    assert_eq!(user_env.r#type, "identity.user.registered");
    assert_eq!(user_env.source, "identity");
    assert_eq!(
        user_env.payload_type,
        "campaignos.identity.v1.UserRegistered"
    );
    assert_eq!(user_env.tenant_id, auth["tenant"]["id"].as_str().unwrap());
    let user: UserRegistered = cos_events::decode_payload(user_env).unwrap();
    assert_eq!(user.email, "events@example.com");
    assert_eq!(user.user_id, auth["user"]["id"].as_str().unwrap());
    // Nothing more: each event once.
    assert!(
        next_event(&mut consumer, Duration::from_millis(800))
            .await
            .is_none()
    );
    t.stop().await;
}

#[tokio::test]
async fn with_rabbitmq_down_registration_succeeds_and_the_event_arrives_once_it_is_back() {
    let proxy = ToggleProxy::start("127.0.0.1:5672".parse().unwrap())
        .await
        .unwrap();
    proxy.down();
    let db = test_database().await;
    let amqp = TestAmqp::new();
    let mut settings = test_settings(&db, &amqp, &[]);
    settings.common.amqp.url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let t = start(db, amqp, settings).await;
    // The observer talks to the real broker, not through the proxy.
    let (_conn, mut consumer) = t.amqp.subscribe("identity.user.registered").await.unwrap();

    let auth = t.register("outage@example.com", "Outage").await;
    assert!(auth["tokens"]["access_token"].is_string());
    assert!(
        next_event(&mut consumer, Duration::from_secs(2))
            .await
            .is_none(),
        "nothing can be published while RabbitMQ is down"
    );
    assert!(
        t.count("SELECT count(*) FROM identity.outbox WHERE published_at IS NULL")
            .await
            >= 2
    );

    proxy.up();
    let (key, env) = next_event(&mut consumer, Duration::from_secs(30))
        .await
        .expect("event delivered after recovery");
    assert_eq!(key, "identity.user.registered");
    let user: UserRegistered = cos_events::decode_payload(&env).unwrap();
    assert_eq!(user.email, "outage@example.com");
    assert!(
        next_event(&mut consumer, Duration::from_secs(2))
            .await
            .is_none(),
        "delivered exactly once"
    );
    cos_testkit::eventually(Duration::from_secs(10), || async {
        (t.count("SELECT count(*) FROM identity.outbox WHERE published_at IS NULL")
            .await
            == 0)
            .then_some(())
    })
    .await
    .unwrap();
    t.stop().await;
}
