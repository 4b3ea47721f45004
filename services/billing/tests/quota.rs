//! Per-cycle quotas: atomic under concurrency, idempotent per key, partial grants, releases,
//! and who may consume for which tenant (user tokens vs. service credentials).

mod common;

use common::{Harness, assert_code};
use cos_errors::{ErrorCode, ServiceError};
use cos_proto::billing::v1 as pb;
use uuid::Uuid;

fn consume(tenant: Uuid, quota: &str, amount: i64, key: &str) -> pb::ConsumeQuotaRequest {
    pb::ConsumeQuotaRequest {
        tenant_id: tenant.to_string(),
        quota: quota.into(),
        amount,
        idempotency_key: key.into(),
        allow_partial: false,
    }
}

async fn used(h: &Harness, token: &str, limit: &str) -> i64 {
    let usage = h
        .c()
        .get_usage(h.req(pb::GetUsageRequest {}, token))
        .await
        .expect("usage")
        .into_inner();
    usage
        .items
        .iter()
        .find(|i| i.limit == limit)
        .map(|i| i.used)
        .expect("item")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_get_exactly_the_allowed_amount() {
    let h = Harness::start().await;
    let (tenant, token) = h.owner();
    // The trial allows 1000 messages per cycle: 25 launches of 100 race for them.
    let mut tasks = Vec::new();
    for i in 0..25 {
        let mut c = h.c();
        let req = h.service_req(
            consume(tenant, "messages_per_month", 100, &format!("launch-{i}")),
            "ConsumeQuota",
            tenant,
        );
        tasks.push(tokio::spawn(async move { c.consume_quota(req).await }));
    }
    let (mut granted, mut refused) = (0, 0);
    for t in tasks {
        match t.await.expect("join") {
            Ok(r) => {
                assert_eq!(r.get_ref().granted, 100);
                granted += 1;
            }
            Err(status) => {
                let e = ServiceError::from_status(&status);
                assert_code(&e, ErrorCode::PlanLimit);
                assert_eq!(e.metadata_value("limit"), Some("messages_per_month"));
                assert_eq!(e.metadata_value("value"), Some("1000"));
                refused += 1;
            }
        }
    }
    assert_eq!((granted, refused), (10, 15));
    assert_eq!(used(&h, &token, "messages_per_month").await, 1000);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_launches_racing_for_the_last_hundred_cannot_both_get_them() {
    let h = Harness::start().await;
    let (tenant, token) = h.owner();
    h.c()
        .consume_quota(h.req(consume(tenant, "messages_per_month", 900, "first"), &token))
        .await
        .expect("900 fit");
    for round in 0..5 {
        let mut a = h.c();
        let mut b = h.c();
        let ra = h.req(
            consume(tenant, "messages_per_month", 100, &format!("a{round}")),
            &token,
        );
        let rb = h.req(
            consume(tenant, "messages_per_month", 100, &format!("b{round}")),
            &token,
        );
        let (x, y) = tokio::join!(a.consume_quota(ra), b.consume_quota(rb));
        let wins = usize::from(x.is_ok()) + usize::from(y.is_ok());
        assert_eq!(wins, usize::from(round == 0), "round {round}");
        let loser = match (x, y) {
            (Err(e), _) | (_, Err(e)) => e,
            (Ok(_), Ok(_)) => unreachable!("both won"),
        };
        let e = ServiceError::from_status(&loser);
        assert_code(&e, ErrorCode::PlanLimit);
        assert_eq!(e.metadata_value("usage"), Some("1000"));
    }
    assert_eq!(used(&h, &token, "messages_per_month").await, 1000);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_key_is_granted_once_even_concurrently() {
    let h = Harness::start().await;
    let (tenant, token) = h.owner();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut c = h.c();
        let req = h.req(
            consume(tenant, "campaigns_per_month", 2, "launch-c1"),
            &token,
        );
        tasks.push(tokio::spawn(async move { c.consume_quota(req).await }));
    }
    let mut replays = 0;
    for t in tasks {
        let r = t
            .await
            .expect("join")
            .expect("granted or replayed")
            .into_inner();
        assert_eq!(r.granted, 2);
        replays += usize::from(r.replayed);
    }
    assert_eq!(replays, 9);
    assert_eq!(used(&h, &token, "campaigns_per_month").await, 2);
    // The same key for another quota is a client bug.
    let err = h
        .c()
        .consume_quota(h.req(
            consume(tenant, "messages_per_month", 1, "launch-c1"),
            &token,
        ))
        .await
        .unwrap_err();
    let e = ServiceError::from_status(&err);
    assert_eq!(e.violations[0].field, "idempotency_key");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_grants_and_releases() {
    let h = Harness::start().await;
    let (tenant, token) = h.owner();
    h.c()
        .consume_quota(h.req(consume(tenant, "campaigns_per_month", 3, "k1"), &token))
        .await
        .expect("3 of 5");
    let mut partial = consume(tenant, "campaigns_per_month", 4, "k2");
    partial.allow_partial = true;
    let r = h
        .c()
        .consume_quota(h.req(partial, &token))
        .await
        .expect("partial")
        .into_inner();
    assert_eq!((r.granted, r.used), (2, 5));
    assert_eq!(r.limit.expect("limit").value, 5);
    // Nothing left: even a partial request is refused.
    let mut more = consume(tenant, "campaigns_per_month", 1, "k3");
    more.allow_partial = true;
    let e = ServiceError::from_status(&h.c().consume_quota(h.req(more, &token)).await.unwrap_err());
    assert_code(&e, ErrorCode::PlanLimit);
    // Giving back more than was granted releases only what the grant holds.
    let rel = h
        .c()
        .release_quota(h.req(
            pb::ReleaseQuotaRequest {
                tenant_id: String::new(),
                idempotency_key: "k2".into(),
                amount: 10,
            },
            &token,
        ))
        .await
        .expect("released")
        .into_inner();
    assert_eq!((rel.released, rel.used), (2, 3));
    let again = h
        .c()
        .release_quota(h.req(
            pb::ReleaseQuotaRequest {
                tenant_id: String::new(),
                idempotency_key: "k2".into(),
                amount: 1,
            },
            &token,
        ))
        .await
        .expect("released")
        .into_inner();
    assert_eq!((again.released, again.used), (0, 3));
    let e = ServiceError::from_status(
        &h.c()
            .release_quota(h.req(
                pb::ReleaseQuotaRequest {
                    tenant_id: String::new(),
                    idempotency_key: "never".into(),
                    amount: 1,
                },
                &token,
            ))
            .await
            .unwrap_err(),
    );
    assert_code(&e, ErrorCode::NotFound);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_quota_requests_name_their_fields() {
    let h = Harness::start().await;
    let (tenant, token) = h.owner();
    let err = h
        .c()
        .consume_quota(h.req(consume(tenant, "seats", 0, ""), &token))
        .await
        .unwrap_err();
    let e = ServiceError::from_status(&err);
    let fields: Vec<&str> = e.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["quota", "idempotency_key", "amount"]);
    assert_eq!(
        h.scalar(
            "SELECT count(*) FROM billing.quota_grants WHERE tenant_id = $1",
            tenant
        )
        .await,
        0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_act_only_for_their_tenant_and_service_credentials_only_for_what_they_signed() {
    let h = Harness::start().await;
    let (tenant, token) = h.owner();
    let other = Uuid::now_v7();
    // A user token naming another tenant.
    let err = h
        .c()
        .consume_quota(h.req(consume(other, "messages_per_month", 1, "x"), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = h
        .c()
        .check_entitlement(h.req(
            pb::CheckEntitlementRequest {
                tenant_id: other.to_string(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // A service credential signed for one tenant but naming another in the body.
    let err = h
        .c()
        .consume_quota(h.service_req(
            consume(other, "messages_per_month", 1, "x"),
            "ConsumeQuota",
            tenant,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // Signed for another method.
    let err = h
        .c()
        .consume_quota(h.service_req(
            consume(tenant, "messages_per_month", 1, "x"),
            "ReleaseQuota",
            tenant,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // On a user-facing method service credentials are refused outright.
    let err = h
        .c()
        .get_subscription(h.service_req(pb::GetSubscriptionRequest {}, "GetSubscription", tenant))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // A credential from another mesh (another secret).
    let foreign =
        cos_auth::ServiceCredential::new("evil", "another-secret-0123456789abcdef0123456789")
            .unwrap();
    let mut req = tonic::Request::new(consume(tenant, "messages_per_month", 1, "x"));
    req.metadata_mut().insert(
        cos_auth::SERVICE_AUTH_HEADER,
        foreign
            .header_value("/campaignos.billing.v1.BillingService/ConsumeQuota", tenant)
            .parse()
            .unwrap(),
    );
    let err = h.c().consume_quota(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // Nothing was consumed by any of them.
    assert_eq!(
        h.scalar(
            "SELECT count(*) FROM billing.quota_grants WHERE tenant_id = $1",
            tenant
        )
        .await
            + h.scalar(
                "SELECT count(*) FROM billing.quota_grants WHERE tenant_id = $1",
                other
            )
            .await,
        0
    );
    // The right credential works, for the tenant it names.
    let ok = h
        .c()
        .consume_quota(h.service_req(
            consume(tenant, "messages_per_month", 7, "svc"),
            "ConsumeQuota",
            tenant,
        ))
        .await
        .expect("service call")
        .into_inner();
    assert_eq!(ok.granted, 7);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_suspended_tenants_cannot_consume() {
    let h = Harness::start().await;
    let (tenant, token) = h.owner();
    h.subscription(&token).await;
    // Lapsed beyond grace: read-only.
    let past = chrono::Utc::now() - chrono::Duration::days(30);
    h.admin_override(
        tenant,
        pb::AdminOverrideSubscriptionRequest {
            period_end: Some(cos_entitlements::convert::ts(past)),
            reason: "test: lapse".into(),
            ..Default::default()
        },
    )
    .await
    .expect("override");
    let e = ServiceError::from_status(
        &h.c()
            .consume_quota(h.req(consume(tenant, "messages_per_month", 1, "e1"), &token))
            .await
            .unwrap_err(),
    );
    assert_code(&e, ErrorCode::PlanLimit);
    assert_eq!(e.metadata_value("status"), Some("expired"));
    // Comped back to life, then suspended.
    h.admin_override(
        tenant,
        pb::AdminOverrideSubscriptionRequest {
            extend_days: 60,
            comp: true,
            reason: "test: comp".into(),
            ..Default::default()
        },
    )
    .await
    .expect("comp");
    h.c()
        .consume_quota(h.req(consume(tenant, "messages_per_month", 1, "e2"), &token))
        .await
        .expect("comped tenant sends");
    let admin = h.admin_token();
    h.c()
        .admin_suspend_tenant(h.req(
            pb::AdminSuspendTenantRequest {
                tenant_id: tenant.to_string(),
                reason: "test: abuse".into(),
            },
            &admin,
        ))
        .await
        .expect("suspend");
    let e = ServiceError::from_status(
        &h.c()
            .consume_quota(h.req(consume(tenant, "messages_per_month", 1, "e3"), &token))
            .await
            .unwrap_err(),
    );
    assert_code(&e, ErrorCode::PermissionDenied);
    h.stop().await;
}
