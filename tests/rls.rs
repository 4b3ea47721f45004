//! Row-level security on every identity table that holds tenant data: inside tenant A's
//! transaction only A's rows exist; with no tenant set, none do; A cannot write B's rows.

mod common;

use std::time::Duration;

use common::{access_token, spawn_mesh};
use cos_db::{Db, PoolSettings};
use serde_json::json;
use uuid::Uuid;

/// Every tenant-owned table and the column that names the tenant.
const TENANT_TABLES: &[(&str, &str)] = &[
    ("identity.tenants", "id"),
    ("identity.memberships", "tenant_id"),
    ("identity.refresh_tokens", "tenant_id"),
    ("identity.api_keys", "tenant_id"),
    ("identity.audit_log", "tenant_id"),
];

async fn count(tx: &mut cos_db::Tx, sql: String) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut **tx)
        .await
}

#[tokio::test]
async fn tenant_transactions_see_only_their_tenant_on_every_table() {
    let t = spawn_mesh().await;
    let a = t.register("rls-a@example.com", "A").await;
    let b = t.register("rls-b@example.com", "B").await;
    for auth in [&a, &b] {
        let (s, _) = t
            .post(
                "/v1/api-keys",
                Some(&access_token(auth)),
                json!({"name": "k"}),
            )
            .await;
        assert_eq!(s, 201);
    }
    let ta: Uuid = a["tenant"]["id"].as_str().unwrap().parse().unwrap();
    let tb: Uuid = b["tenant"]["id"].as_str().unwrap().parse().unwrap();
    let db = Db::connect(&PoolSettings {
        url: t.db.url.clone(),
        max_connections: 4,
        app_role: "cos_app".into(),
        acquire_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();

    // The policy must be enabled and forced on every tenant table the schema has.
    let mut sys = db.system_tx("test: inspect policies").await.unwrap();
    let unprotected: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'identity' AND c.relkind = 'r'
           AND EXISTS (SELECT 1 FROM information_schema.columns col WHERE col.table_schema = 'identity' AND col.table_name = c.relname AND col.column_name = 'tenant_id')
           AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
    )
    .fetch_all(&mut *sys)
    .await
    .unwrap();
    // The outbox carries tenant ids but the app role may only INSERT into it (checked below).
    assert_eq!(
        unprotected,
        vec!["outbox".to_owned()],
        "tables with tenant_id but without forced RLS"
    );
    let mut totals = Vec::new();
    for (table, col) in TENANT_TABLES {
        let all_a = count(
            &mut sys,
            format!("SELECT count(*) FROM {table} WHERE {col} = '{ta}'"),
        )
        .await
        .unwrap();
        let all_b = count(
            &mut sys,
            format!("SELECT count(*) FROM {table} WHERE {col} = '{tb}'"),
        )
        .await
        .unwrap();
        assert!(
            all_a > 0 && all_b > 0,
            "{table} should hold rows of both tenants for this proof"
        );
        totals.push((all_a, all_b));
    }
    sys.rollback().await.unwrap();

    for ((table, col), (all_a, _)) in TENANT_TABLES.iter().zip(&totals) {
        let mut tx = db.tenant_tx(ta).await.unwrap();
        assert_eq!(
            count(&mut tx, format!("SELECT count(*) FROM {table}"))
                .await
                .unwrap(),
            *all_a,
            "{table}: A sees all of its rows"
        );
        assert_eq!(
            count(
                &mut tx,
                format!("SELECT count(*) FROM {table} WHERE {col} = '{tb}'")
            )
            .await
            .unwrap(),
            0,
            "{table}: A sees none of B's"
        );
        tx.rollback().await.unwrap();

        let mut none = db.app_tx().await.unwrap();
        assert_eq!(
            count(&mut none, format!("SELECT count(*) FROM {table}"))
                .await
                .unwrap(),
            0,
            "{table}: no tenant, no rows"
        );
        none.rollback().await.unwrap();
    }

    // Writing a row for B from A's transaction is refused by the policy's WITH CHECK.
    let mut tx = db.tenant_tx(ta).await.unwrap();
    let user_b: Uuid = b["user"]["id"].as_str().unwrap().parse().unwrap();
    let err = sqlx::query(
        "INSERT INTO identity.memberships (tenant_id, user_id, role) VALUES ($1, $2, 'viewer')",
    )
    .bind(tb)
    .bind(user_b)
    .execute(&mut *tx)
    .await
    .expect_err("cross-tenant insert must fail");
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();

    // Updates and deletes from A's transaction cannot reach B's rows either.
    let mut tx = db.tenant_tx(ta).await.unwrap();
    let touched = sqlx::query("UPDATE identity.api_keys SET name = 'pwned' WHERE tenant_id = $1")
        .bind(tb)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(touched.rows_affected(), 0);
    let deleted = sqlx::query("DELETE FROM identity.audit_log")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        deleted.rows_affected(),
        totals[4].0 as u64,
        "only A's audit rows are reachable"
    );
    tx.rollback().await.unwrap();

    // Tables only the owner role may touch: the app role cannot even read them.
    for table in [
        "identity.signing_keys",
        "identity.platform_audit_log",
        "identity.outbox",
        "identity.inbox",
    ] {
        let mut tx = db.tenant_tx(ta).await.unwrap();
        let err = count(&mut tx, format!("SELECT count(*) FROM {table}"))
            .await
            .expect_err(table);
        assert!(
            err.to_string().contains("permission denied"),
            "{table}: {err}"
        );
        tx.rollback().await.unwrap();
    }
    // And the app role is not a superuser and cannot bypass RLS.
    let mut tx = db.app_tx().await.unwrap();
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert!(!superuser && !bypass);
    tx.rollback().await.unwrap();
    t.stop().await;
}
