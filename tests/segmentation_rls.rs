//! Row-level security on every segmentation table: inside tenant A's transaction only A's rows
//! exist; with no tenant set, none do; A cannot write rows for B.

mod common;

use std::time::Duration;

use common::{access_token, spawn_mesh};
use cos_db::{Db, PoolSettings};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn every_segmentation_table_is_tenant_isolated() {
    // (outbox/inbox rows carry a tenant too, but the app role may only INSERT into the outbox.)
    let t = spawn_mesh().await;
    let mut tenants = Vec::new();
    for (email, name) in [
        ("seg-rls-a@example.com", "A"),
        ("seg-rls-b@example.com", "B"),
    ] {
        let auth = t.register(email, name).await;
        let tok = access_token(&auth);
        let (s, b) = t
            .post(
                "/v1/contact-attributes",
                Some(&tok),
                json!({"key": "plan", "type": "string"}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let (_, c) = t.post("/v1/contacts", Some(&tok), json!({"contact": {"email": format!("x@{name}.example"), "attributes": {"plan": "pro"}}})).await;
        let (_, c2) = t
            .post(
                "/v1/contacts",
                Some(&tok),
                json!({"contact": {"email": format!("y@{name}.example")}}),
            )
            .await;
        let (_, seg) = t
            .post(
                "/v1/segments",
                Some(&tok),
                json!({"name": "S", "kind": "static"}),
            )
            .await;
        let (s, _) = t
            .post(
                &format!("/v1/segments/{}/members:add", seg["id"].as_str().unwrap()),
                Some(&tok),
                json!({"contact_ids": [c["id"]]}),
            )
            .await;
        assert_eq!(s, 200);
        let (s, _) = t
            .post(
                &format!("/v1/contacts/{}:erase", c2["id"].as_str().unwrap()),
                Some(&tok),
                json!({"reason": "test"}),
            )
            .await;
        assert_eq!(s, 200);
        let resp = reqwest::Client::new()
            .post(t.url("/v1/contact-imports?file_name=r.csv"))
            .bearer_auth(&tok)
            .header("content-type", "text/csv")
            .body("email\nnot-an-email\n")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        tenants.push(
            auth["tenant"]["id"]
                .as_str()
                .unwrap()
                .parse::<Uuid>()
                .unwrap(),
        );
    }
    // Let the import jobs finish (rejections rows exist then).
    cos_testkit::eventually(Duration::from_secs(30), || async {
        (t.count("SELECT count(*) FROM segmentation.import_rejections")
            .await
            == 2)
            .then_some(())
    })
    .await
    .unwrap();
    let db = Db::connect(&PoolSettings {
        url: t.db.url.clone(),
        max_connections: 2,
        app_role: "cos_app".into(),
        acquire_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let mut sys = db.system_tx("test: list tables").await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'segmentation' AND c.relkind = 'r'
           AND c.relname NOT IN ('outbox', 'inbox')
           AND EXISTS (SELECT 1 FROM information_schema.columns col WHERE col.table_schema = 'segmentation'
                       AND col.table_name = c.relname AND col.column_name = 'tenant_id')
         ORDER BY 1",
    )
    .fetch_all(&mut *sys)
    .await
    .unwrap();
    let unforced: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'segmentation' AND c.relkind = 'r' AND c.relname = ANY($1)
           AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
    )
    .bind(&tables)
    .fetch_all(&mut *sys)
    .await
    .unwrap();
    sys.rollback().await.unwrap();
    assert!(
        unforced.is_empty(),
        "tables without forced RLS: {unforced:?}"
    );
    for must in [
        "contacts",
        "segments",
        "segment_members",
        "import_jobs",
        "import_rejections",
        "erasure_log",
        "attribute_definitions",
        "tenant_stats",
    ] {
        assert!(
            tables.iter().any(|t| t == must),
            "{must} missing from {tables:?}"
        );
    }
    for table in &tables {
        for (me, other) in [(tenants[0], tenants[1]), (tenants[1], tenants[0])] {
            let mut tx = db.tenant_tx(me).await.unwrap();
            let (mine, foreign): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id <> $1) FROM segmentation.{table}"
            )))
            .bind(me)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            // Work queues (changed contacts, pending upload files) may be drained already.
            if !matches!(table.as_str(), "dirty_contacts" | "import_files") {
                assert!(mine > 0, "{table}: tenant sees its own rows");
            }
            assert_eq!(foreign, 0, "{table}: tenant sees another tenant's rows");
            // Writing a row for the other tenant is refused by the policy.
            let err = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE segmentation.{table} SET tenant_id = $2 WHERE tenant_id = $1"
            )))
            .bind(me)
            .bind(other)
            .execute(&mut *tx)
            .await;
            if mine > 0 {
                assert!(
                    err.is_err(),
                    "{table}: moving rows to another tenant must fail"
                );
            }
            tx.rollback().await.unwrap();
        }
        let mut tx = db.app_tx().await.unwrap();
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM segmentation.{table}"
        )))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(n, 0, "{table}: no tenant set, no rows");
        tx.rollback().await.unwrap();
    }

    // The criteria view (read with its owner's rights, so that the GIN indexes serve criteria)
    // carries the same isolation: each tenant sees only its own contacts, no tenant sees none,
    // and the app role can read it but never write through it.
    let views: Vec<String> = sqlx::query_scalar(
        "SELECT viewname::text FROM pg_views WHERE schemaname = 'segmentation' ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        views,
        ["contacts_of_tenant"],
        "review every new view's isolation"
    );
    for (me, other) in [(tenants[0], tenants[1]), (tenants[1], tenants[0])] {
        let mut tx = db.tenant_tx(me).await.unwrap();
        let (mine, foreign): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id <> $1)
             FROM segmentation.contacts_of_tenant",
        )
        .bind(me)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert!(mine > 0, "contacts_of_tenant: tenant sees its own rows");
        assert_eq!(
            foreign, 0,
            "contacts_of_tenant: tenant sees another tenant's rows"
        );
        tx.rollback().await.unwrap();
        for write in [
            "UPDATE segmentation.contacts_of_tenant SET tenant_id = $2 WHERE tenant_id = $1",
            "DELETE FROM segmentation.contacts_of_tenant WHERE tenant_id = $1 OR tenant_id = $2",
            "INSERT INTO segmentation.contacts_of_tenant (tenant_id, id, email) SELECT $2, gen_random_uuid(), 'x@' || $1::text",
        ] {
            let mut tx = db.tenant_tx(me).await.unwrap();
            let err = sqlx::query(write)
                .bind(me)
                .bind(other)
                .execute(&mut *tx)
                .await
                .expect_err(write);
            assert!(
                err.to_string().contains("permission denied"),
                "{write}: {err}"
            );
            tx.rollback().await.unwrap();
        }
    }
    let mut tx = db.app_tx().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM segmentation.contacts_of_tenant")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0, "contacts_of_tenant: no tenant set, no rows");
    tx.rollback().await.unwrap();
    db.pool().close().await;
    t.stop().await;
}
