//! Row-level security: a tenant transaction sees only its own billing rows, a transaction
//! without a tenant sees none, and the app role cannot touch the catalogue or the admin audit.

mod common;

use common::{Harness, STRIPE_KEY};
use cos_proto::billing::v1 as pb;

const TENANT_TABLES: &[&str] = &[
    "subscriptions",
    "subscription_history",
    "checkout_sessions",
    "usage_counters",
    "quota_grants",
    "usage_gauges",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_rows() {
    let h = Harness::start().await;
    h.configure_stripe(STRIPE_KEY).await;
    let (a, a_token) = h.owner();
    let (b, b_token) = h.owner();
    for token in [&a_token, &b_token] {
        h.checkout(token, "starter", 1, "usd").await;
        h.c()
            .consume_quota(h.req(
                pb::ConsumeQuotaRequest {
                    tenant_id: String::new(),
                    quota: "messages_per_month".into(),
                    amount: 1,
                    idempotency_key: "k".into(),
                    allow_partial: false,
                },
                token,
            ))
            .await
            .unwrap();
        h.c()
            .report_usage(h.req(
                pb::ReportUsageRequest {
                    tenant_id: String::new(),
                    metric: "contacts".into(),
                    value: 3,
                },
                token,
            ))
            .await
            .unwrap();
    }
    for table in TENANT_TABLES {
        let mut tx = h.db.tenant_tx(a).await.unwrap();
        let rows: Vec<uuid::Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT tenant_id FROM billing.{table}"
        )))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        assert_eq!(rows, [a], "{table}");
        // Writing a row for another tenant is refused by the policy.
        let other: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM billing.{table} WHERE tenant_id = $1"
        )))
        .bind(b)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(other, 0, "{table}");
        tx.rollback().await.unwrap();

        let mut tx = h.db.app_tx().await.unwrap();
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM billing.{table}"
        )))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(n, 0, "{table} without a tenant");
        tx.rollback().await.unwrap();
    }
    let mut tx = h.db.tenant_tx(a).await.unwrap();
    let err = sqlx::query(
        "INSERT INTO billing.usage_gauges (tenant_id, metric, value) VALUES ($1, 'seats', 1)",
    )
    .bind(b)
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();

    // The app role reads the catalogue but cannot change it, and never sees the admin audit.
    let mut tx = h.db.app_tx().await.unwrap();
    let plans: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.plans")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(plans, 4);
    let err = sqlx::query("UPDATE billing.plan_prices SET monthly_amount_minor = 1")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    tx.rollback().await.unwrap();
    let mut tx = h.db.app_tx().await.unwrap();
    let err = sqlx::query("SELECT count(*) FROM billing.admin_audit")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    tx.rollback().await.unwrap();
    h.stop().await;
}
