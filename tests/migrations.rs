//! Migrations are safe to run on every start: a second run changes nothing and leaves the app
//! role's privileges exactly as narrow as the first.

mod common;

use common::test_database;

async fn privilege(pool: &sqlx::PgPool, table: &str, privilege: &str) -> bool {
    sqlx::query_scalar("SELECT has_table_privilege('cos_app', $1, $2)")
        .bind(table)
        .bind(privilege)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn migrating_again_keeps_the_app_role_narrow() {
    let db = test_database().await;
    // The template was migrated once; run it twice more as `up` does on restarts.
    campaign_os::migrate(&db.url, "cos_app").await.unwrap();
    campaign_os::migrate(&db.url, "cos_app").await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    assert!(privilege(&pool, "identity.outbox", "INSERT").await);
    for p in ["SELECT", "UPDATE", "DELETE"] {
        assert!(!privilege(&pool, "identity.outbox", p).await, "outbox {p}");
    }
    for table in [
        "identity.inbox",
        "identity.signing_keys",
        "identity.platform_audit_log",
        "identity._sqlx_migrations",
    ] {
        for p in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
            assert!(!privilege(&pool, table, p).await, "{table} {p}");
        }
    }
    for table in [
        "identity.memberships",
        "identity.api_keys",
        "identity.audit_log",
        "identity.users",
    ] {
        assert!(privilege(&pool, table, "SELECT").await, "{table}");
    }
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM identity._sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, cos_identity::MIGRATOR.iter().count());
    pool.close().await;
    db.drop_database().await.unwrap();
}
