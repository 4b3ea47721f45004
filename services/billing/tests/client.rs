//! cos-entitlements' client against a running billing: the Redis cache and its invalidation,
//! service credentials, and what happens when Redis or billing is away.

mod common;

use std::time::Duration;

use common::{Harness, SERVICE_SECRET};
use cos_auth::ServiceCredential;
use cos_entitlements::{CallAuth, EntitlementClient, Limit, SubscriptionStatus};
use cos_errors::ErrorCode;
use cos_proto::billing::v1 as pb;
use redis::AsyncCommands;

fn client(h: &Harness, redis_url: &str) -> EntitlementClient {
    EntitlementClient::new(
        &h.grpc_url,
        redis_url,
        &h.common.redis.key_prefix,
        Duration::from_secs(30),
    )
    .expect("client")
    .with_service_credential(Some(
        ServiceCredential::new("segmentation", SERVICE_SECRET).unwrap(),
    ))
}

async fn cached(h: &Harness, tenant: uuid::Uuid) -> bool {
    let mut conn = redis::Client::open(cos_testkit::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = cos_entitlements::cache_key(&h.common.redis.key_prefix, tenant);
    conn.exists::<_, bool>(key).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entitlements_are_cached_and_dropped_on_every_change() {
    let h = Harness::start().await;
    let (tenant, token) = h.owner();
    let c = client(&h, &cos_testkit::redis_url());
    let auth = CallAuth::Bearer(token.clone());
    let e = c.get(tenant, &auth).await.expect("entitlements");
    assert_eq!(e.plan, "trial");
    assert_eq!(e.status, SubscriptionStatus::Trialing);
    assert_eq!(e.limit(Limit::Seats), Some(2));
    assert!(cached(&h, tenant).await, "first answer is cached");
    assert_eq!(c.get(tenant, &auth).await.unwrap(), e);

    // A suspension drops the cached entry: the next check sees it at once.
    let admin = h.admin_token();
    h.c()
        .admin_suspend_tenant(h.req(
            pb::AdminSuspendTenantRequest {
                tenant_id: tenant.to_string(),
                reason: "test".into(),
            },
            &admin,
        ))
        .await
        .unwrap();
    assert!(!cached(&h, tenant).await);
    let e = c
        .get(tenant, &CallAuth::Service)
        .await
        .expect("service call");
    assert_eq!(e.status, SubscriptionStatus::Suspended);
    assert_eq!(
        e.ensure_can_create().unwrap_err().code,
        ErrorCode::PermissionDenied
    );

    // A plan edit drops every cached tenant.
    assert!(cached(&h, tenant).await);
    let trial = h
        .c()
        .list_plans(h.req(pb::ListPlansRequest {}, &token))
        .await
        .unwrap()
        .into_inner()
        .plans
        .remove(0);
    h.c()
        .admin_update_plan(h.req(
            pb::AdminUpdatePlanRequest {
                code: "trial".into(),
                name: trial.name,
                description: trial.description,
                purchasable: false,
                prices: vec![],
                entitlements: trial.entitlements,
                sort_order: trial.sort_order,
                version: trial.version,
                reason: "no-op edit".into(),
            },
            &admin,
        ))
        .await
        .unwrap();
    assert!(!cached(&h, tenant).await);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_through_the_client_and_a_user_token_cannot_reach_another_tenant() {
    let h = Harness::start().await;
    let (tenant, token) = h.owner();
    let c = client(&h, &cos_testkit::redis_url());
    let g = c
        .consume(
            tenant,
            Limit::CampaignsPerMonth,
            5,
            "launch-1",
            &CallAuth::Service,
        )
        .await
        .expect("grant");
    assert_eq!((g.granted, g.used, g.limit), (5, 5, Some(5)));
    let again = c
        .consume(
            tenant,
            Limit::CampaignsPerMonth,
            5,
            "launch-1",
            &CallAuth::Service,
        )
        .await
        .expect("replay");
    assert!(again.replayed);
    let err = c
        .consume(
            tenant,
            Limit::CampaignsPerMonth,
            1,
            "launch-2",
            &CallAuth::Bearer(token.clone()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PlanLimit);
    assert_eq!(err.metadata_value("usage"), Some("5"));
    assert_eq!(
        c.release(tenant, "launch-1", 2, &CallAuth::Service)
            .await
            .unwrap(),
        2
    );
    let (other, _) = h.owner();
    let err = c.get(other, &CallAuth::Bearer(token)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    // Without the mesh secret a service call cannot even be made.
    let bare = EntitlementClient::new(&h.grpc_url, "", "x:", Duration::from_secs(5)).unwrap();
    let err = bare.get(tenant, &CallAuth::Service).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_harmless_and_billing_down_fails_closed_after_the_last_known_answer() {
    let mut h = Harness::start().await;
    let (tenant, token) = h.owner();
    let (stranger, stranger_token) = h.owner();
    // Redis on a closed port: every call still answers, from billing.
    let no_redis = client(&h, "redis://127.0.0.1:1");
    let e = no_redis
        .get(tenant, &CallAuth::Bearer(token.clone()))
        .await
        .expect("works without Redis");
    assert_eq!(e.plan, "trial");
    let c = client(&h, "");
    c.get(tenant, &CallAuth::Bearer(token.clone()))
        .await
        .expect("known");

    h.stop_server().await;
    // The last answer this process saw stands in for a while...
    let stale = c
        .get(tenant, &CallAuth::Bearer(token.clone()))
        .await
        .expect("stale answer");
    assert_eq!(stale.plan, "trial");
    // ...a tenant never seen is unknown: creation must not go ahead.
    let err = c
        .get(stranger, &CallAuth::Bearer(stranger_token))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    // Quotas are never guessed.
    let err = c
        .consume(tenant, Limit::MessagesPerMonth, 1, "k", &CallAuth::Service)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    // With the stale window closed, the known tenant is unknown too.
    let strict = client(&h, "").with_stale_for(Duration::ZERO);
    let err = strict
        .get(tenant, &CallAuth::Bearer(token))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    h.stop().await;
}
