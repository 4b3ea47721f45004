//! Platform administration: listing tenants with plan, status and usage; overrides (plan,
//! extend, shorten, comp), suspension, plan edits — each audited with who and why; grace and
//! read-only behaviour as seen through entitlements.

mod common;

use common::{Harness, assert_code, ts_secs};
use cos_entitlements::convert::ts;
use cos_errors::{ErrorCode, ServiceError};
use cos_proto::billing::v1 as pb;

async fn entitlements(h: &Harness, token: &str) -> pb::Entitlements {
    h.c()
        .get_entitlements(h.req(pb::GetEntitlementsRequest {}, token))
        .await
        .expect("entitlements")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_platform_admins_reach_admin_methods() {
    let h = Harness::start().await;
    let (tenant, owner) = h.owner();
    let err = h
        .c()
        .admin_list_tenants(h.req(pb::AdminListTenantsRequest::default(), &owner))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = h
        .c()
        .admin_suspend_tenant(h.req(
            pb::AdminSuspendTenantRequest {
                tenant_id: tenant.to_string(),
                reason: "self-suspend".into(),
            },
            &owner,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = h
        .c()
        .put_integration(h.req(
            pb::PutIntegrationRequest {
                provider: "stripe".into(),
                values: [("secret_key".to_owned(), "sk_test_stolen123".to_owned())].into(),
                ..Default::default()
            },
            &owner,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_then_read_only_then_comp_and_every_override_is_audited() {
    let h = Harness::start().await;
    let (tenant, owner) = h.owner();
    let start = h.subscription(&owner).await;
    assert_eq!(start.status, "trialing");
    let e = entitlements(&h, &owner).await;
    assert!(e.can_create && e.can_send);

    // Period ended yesterday: grace, everything still works.
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    let s = h
        .admin_override(
            tenant,
            pb::AdminOverrideSubscriptionRequest {
                period_end: Some(ts(yesterday)),
                reason: "test: end the trial".into(),
                expected_version: start.version,
                ..Default::default()
            },
        )
        .await
        .expect("override");
    assert_eq!(s.status, "grace");
    assert!(!s.read_only);
    let e = entitlements(&h, &owner).await;
    assert_eq!(e.status, "grace");
    assert!(e.can_create && e.can_send);

    // A stale version is refused.
    let err = h
        .admin_override(
            tenant,
            pb::AdminOverrideSubscriptionRequest {
                extend_days: 3,
                reason: "stale".into(),
                expected_version: start.version,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::VersionConflict);

    // Shortened by another ten days: past grace, read-only; reads still work.
    let s = h
        .admin_override(
            tenant,
            pb::AdminOverrideSubscriptionRequest {
                extend_days: -10,
                reason: "test: lapse past grace".into(),
                ..Default::default()
            },
        )
        .await
        .expect("shorten");
    assert_eq!(s.status, "expired");
    assert!(s.read_only);
    let e = entitlements(&h, &owner).await;
    assert_eq!(e.status, "expired");
    assert!(!e.can_create && !e.can_send);
    let usage = h.c().get_usage(h.req(pb::GetUsageRequest {}, &owner)).await;
    assert!(usage.is_ok(), "reads keep working when expired");

    // Comped onto growth for 30 days.
    let s = h
        .admin_override(
            tenant,
            pb::AdminOverrideSubscriptionRequest {
                plan: "growth".into(),
                period_end: Some(ts(chrono::Utc::now() + chrono::Duration::days(30))),
                comp: true,
                reason: "partner programme".into(),
                ..Default::default()
            },
        )
        .await
        .expect("comp");
    assert_eq!(
        (s.plan.as_str(), s.status.as_str(), s.comped),
        ("growth", "active", true)
    );
    let e = entitlements(&h, &owner).await;
    assert!(e.limits.expect("limits").automation);

    // Missing reason, both period_end and extend_days, unknown plan: refused, nothing written.
    let before = h.subscription(&owner).await.version;
    let err = h
        .admin_override(
            tenant,
            pb::AdminOverrideSubscriptionRequest {
                plan: "platinum".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::InvalidArgument);
    assert_eq!(err.violations[0].field, "reason");
    let err = h
        .admin_override(
            tenant,
            pb::AdminOverrideSubscriptionRequest {
                plan: "platinum".into(),
                reason: "x".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.violations[0].field, "plan");
    let err = h
        .admin_override(
            tenant,
            pb::AdminOverrideSubscriptionRequest {
                period_end: Some(ts(chrono::Utc::now())),
                extend_days: 2,
                reason: "x".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.violations[0].field, "extend_days");
    assert_eq!(h.subscription(&owner).await.version, before);

    // The audit trail: who, why, before and after, newest first.
    let admin = h.admin_token();
    let audit = h
        .c()
        .admin_list_audit(h.req(
            pb::AdminListAuditRequest {
                tenant_id: tenant.to_string(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("audit")
        .into_inner();
    let got: Vec<(&str, &str)> = audit
        .entries
        .iter()
        .map(|a| (a.action.as_str(), a.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("comped", "partner programme"),
            ("overridden", "test: lapse past grace"),
            ("overridden", "test: end the trial"),
        ]
    );
    for a in &audit.entries {
        assert!(!a.actor_user_id.is_empty());
        let before: serde_json::Value = serde_json::from_str(&a.before_json).expect("json");
        let after: serde_json::Value = serde_json::from_str(&a.after_json).expect("json");
        assert_ne!(before, after);
    }
    // The tenant sees the changes in its own history too.
    let history = h
        .c()
        .list_subscription_history(h.req(pb::ListSubscriptionHistoryRequest::default(), &owner))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.entries[0].action, "comped");
    assert_eq!(history.entries[0].reason, "partner programme");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_is_reflected_and_reversible_with_reasons() {
    let h = Harness::start().await;
    let (tenant, owner) = h.owner();
    h.subscription(&owner).await;
    let admin = h.admin_token();
    let suspend = |reason: &str| {
        let mut c = h.c();
        let req = h.req(
            pb::AdminSuspendTenantRequest {
                tenant_id: tenant.to_string(),
                reason: reason.into(),
            },
            &admin,
        );
        async move {
            c.admin_suspend_tenant(req)
                .await
                .map_err(|s| ServiceError::from_status(&s))
        }
    };
    let err = suspend("  ").await.unwrap_err();
    assert_eq!(err.violations[0].field, "reason");
    let s = suspend("chargeback fraud")
        .await
        .expect("suspended")
        .into_inner();
    assert_eq!(s.status, "suspended");
    assert_eq!(s.suspended_reason, "chargeback fraud");
    let e = entitlements(&h, &owner).await;
    assert_eq!(e.status, "suspended");
    assert!(!e.can_create);
    let err = suspend("again").await.unwrap_err();
    assert_code(&err, ErrorCode::FailedPrecondition);
    let s = h
        .c()
        .admin_unsuspend_tenant(h.req(
            pb::AdminUnsuspendTenantRequest {
                tenant_id: tenant.to_string(),
                reason: "resolved with the customer".into(),
            },
            &admin,
        ))
        .await
        .expect("unsuspended")
        .into_inner();
    assert_eq!(s.status, "trialing");
    // Unknown tenants are a clear 404.
    let err = h
        .c()
        .admin_get_tenant(h.req(
            pb::AdminGetTenantRequest {
                tenant_id: uuid::Uuid::now_v7().to_string(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_tenants_with_plan_status_and_usage() {
    let h = Harness::start().await;
    let (a, a_token) = h.owner();
    let (b, b_token) = h.owner();
    h.subscription(&a_token).await;
    h.subscription(&b_token).await;
    h.c()
        .consume_quota(h.req(
            pb::ConsumeQuotaRequest {
                tenant_id: String::new(),
                quota: "messages_per_month".into(),
                amount: 42,
                idempotency_key: "k".into(),
                allow_partial: false,
            },
            &a_token,
        ))
        .await
        .expect("consume");
    h.c()
        .report_usage(h.req(
            pb::ReportUsageRequest {
                tenant_id: String::new(),
                metric: "seats".into(),
                value: 2,
            },
            &a_token,
        ))
        .await
        .expect("report");
    h.admin_override(
        b,
        pb::AdminOverrideSubscriptionRequest {
            period_end: Some(ts(chrono::Utc::now() - chrono::Duration::days(60))),
            reason: "test".into(),
            ..Default::default()
        },
    )
    .await
    .expect("expire b");
    let admin = h.admin_token();
    let all = h
        .c()
        .admin_list_tenants(h.req(pb::AdminListTenantsRequest::default(), &admin))
        .await
        .expect("list")
        .into_inner();
    let row = all
        .tenants
        .iter()
        .find(|t| t.subscription.as_ref().unwrap().tenant_id == a.to_string())
        .expect("a listed");
    assert_eq!(row.subscription.as_ref().unwrap().plan, "trial");
    let usage = row.usage.as_ref().unwrap();
    let get = |l: &str| usage.items.iter().find(|i| i.limit == l).unwrap().clone();
    assert_eq!(get("messages_per_month").used, 42);
    assert_eq!(get("messages_per_month").allowed.unwrap().value, 1000);
    assert_eq!(get("seats").used, 2);
    assert!(get("seats").reported_at.is_some());

    let expired = h
        .c()
        .admin_list_tenants(h.req(
            pb::AdminListTenantsRequest {
                status: "expired".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("filtered")
        .into_inner();
    let ids: Vec<String> = expired
        .tenants
        .iter()
        .map(|t| t.subscription.as_ref().unwrap().tenant_id.clone())
        .collect();
    assert_eq!(ids, [b.to_string()]);
    // Paging: one per page walks both.
    let p1 = h
        .c()
        .admin_list_tenants(h.req(
            pb::AdminListTenantsRequest {
                page_size: 1,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.tenants.len(), 1);
    assert!(!p1.next_page_token.is_empty());
    let err = h
        .c()
        .admin_list_tenants(h.req(
            pb::AdminListTenantsRequest {
                status: "zombie".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        ServiceError::from_status(&err).violations[0].field,
        "status"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_edits_are_versioned_validated_and_apply_to_tenants_at_once() {
    let h = Harness::start().await;
    let (_, owner) = h.owner();
    let admin = h.admin_token();
    let plans = h
        .c()
        .list_plans(h.req(pb::ListPlansRequest {}, &owner))
        .await
        .expect("plans")
        .into_inner()
        .plans;
    let codes: Vec<&str> = plans.iter().map(|p| p.code.as_str()).collect();
    assert_eq!(codes, ["trial", "starter", "growth", "enterprise"]);
    let trial = plans[0].clone();
    let ent = trial.entitlements.clone().unwrap();
    assert_eq!(
        entitlements(&h, &owner)
            .await
            .limits
            .unwrap()
            .seats
            .unwrap()
            .value,
        2
    );

    let mut edit = pb::AdminUpdatePlanRequest {
        code: "trial".into(),
        name: "Free trial".into(),
        description: trial.description.clone(),
        purchasable: false,
        prices: vec![],
        entitlements: Some(pb::PlanEntitlements {
            seats: Some(pb::LimitSetting {
                value: 4,
                unlimited: false,
            }),
            ..ent.clone()
        }),
        sort_order: 0,
        version: trial.version,
        reason: "more seats for trials".into(),
    };
    let saved = h
        .c()
        .admin_update_plan(h.req(edit.clone(), &admin))
        .await
        .expect("edited")
        .into_inner();
    assert_eq!(saved.version, trial.version + 1);
    // The tenant's entitlements follow the plan at once.
    assert_eq!(
        entitlements(&h, &owner)
            .await
            .limits
            .unwrap()
            .seats
            .unwrap()
            .value,
        4
    );

    // Stale version.
    let err = ServiceError::from_status(
        &h.c()
            .admin_update_plan(h.req(edit.clone(), &admin))
            .await
            .unwrap_err(),
    );
    assert_code(&err, ErrorCode::VersionConflict);
    // Validation names every bad field.
    edit.version = saved.version;
    edit.purchasable = true;
    edit.prices = vec![pb::PlanPrice {
        currency: "usdollar".into(),
        monthly_amount_minor: 0,
    }];
    edit.entitlements = Some(pb::PlanEntitlements {
        contacts: None,
        channels: vec!["fax".into()],
        ..ent
    });
    let err = ServiceError::from_status(
        &h.c()
            .admin_update_plan(h.req(edit, &admin))
            .await
            .unwrap_err(),
    );
    let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();
    assert!(fields.contains(&"prices[0].currency"), "{fields:?}");
    assert!(fields.contains(&"entitlements.contacts"), "{fields:?}");
    assert!(fields.contains(&"entitlements.channels[0]"), "{fields:?}");
    assert!(fields.contains(&"purchasable"), "{fields:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_after_lapse_starts_a_fresh_period_and_cycle() {
    let h = Harness::start().await;
    h.configure_stripe(common::STRIPE_KEY).await;
    let (tenant, owner) = h.owner();
    h.subscription(&owner).await;
    h.admin_override(
        tenant,
        pb::AdminOverrideSubscriptionRequest {
            period_end: Some(ts(chrono::Utc::now() - chrono::Duration::days(40))),
            reason: "test: long lapse".into(),
            ..Default::default()
        },
    )
    .await
    .expect("lapse");
    let co = h.checkout(&owner, "starter", 1, "gbp").await;
    h.stripe.pay(&co.session_id);
    let v = h.verify(&owner, &co.session_id).await.expect("verified");
    let sub = v.subscription.unwrap();
    assert_eq!(sub.status, "active");
    let now = chrono::Utc::now().timestamp();
    assert!((ts_secs(&sub.current_period_start) - now).abs() < 60);
    let e = entitlements(&h, &owner).await;
    assert!(e.can_create);
    h.stop().await;
}
