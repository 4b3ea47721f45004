//! The integration store against a real PostgreSQL: encryption at rest, masking, versions, the
//! audit trail, tenant isolation under row-level security and key rotation.

use cos_crypto::KeyRing;
use cos_db::Db;
use cos_errors::{ErrorCode, ServiceError};
use cos_integrations::{
    Actor, ChangeKind, ConfigUpdate, IntegrationError, IntegrationStore, MaskedConfig, Scope,
    ensure_tables, providers::STRIPE, tables_ddl,
};
use cos_testkit::TestDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const SCHEMA: &str = "integ_test";
const APP_ROLE: &str = "cos_app";
const STORE: IntegrationStore = IntegrationStore::new(SCHEMA);

const LIVE_KEY: &str = "sk_live_51HqLyjWDarjtT1zdp7dcLIVEkey0001";
const TEST_KEY: &str = "sk_test_4eC39HqLyjWDarjtT1zdp7dcTESTkey2";
const WEBHOOK: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Harness {
    db: Db,
    database: TestDatabase,
}

impl Harness {
    async fn new() -> Self {
        let fingerprint = format!(
            "integ_{}",
            cos_db::text_fingerprint(&[cos_db::BOOTSTRAP_REVISION, &tables_ddl(SCHEMA, APP_ROLE)])
        );
        let database = TestDatabase::create(&fingerprint, |url| async move {
            let mut conn = PgConnection::connect(&url).await?;
            cos_db::bootstrap(&mut conn, APP_ROLE).await?;
            ensure_tables(&mut conn, SCHEMA, APP_ROLE).await?;
            conn.close().await?;
            Ok(())
        })
        .await
        .expect("test database");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&database.url)
            .await
            .expect("pool");
        let db = Db::from_pool(pool, APP_ROLE).expect("db");
        Self { db, database }
    }

    async fn finish(self) {
        self.db.pool().close().await;
        self.database.drop_database().await.expect("drop database");
    }

    /// Runs a scalar query as the owner (no row-level security).
    async fn scalar<T>(&self, sql: &str) -> T
    where
        T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(self.db.pool())
            .await
            .expect(sql)
    }

    async fn rows(&self) -> i64 {
        self.scalar("SELECT count(*) FROM integ_test.integration_configs")
            .await
    }

    async fn audits(&self) -> i64 {
        self.scalar("SELECT count(*) FROM integ_test.integration_config_audit")
            .await
    }

    /// Everything stored, as text: what a database dump would reveal.
    async fn dump(&self) -> String {
        self.scalar(
            "SELECT coalesce((SELECT string_agg(c::text, ' ') FROM integ_test.integration_configs c), '') \
             || coalesce((SELECT string_agg(a::text, ' ') FROM integ_test.integration_config_audit a), '')",
        )
        .await
    }

    async fn put(
        &self,
        ring: &KeyRing,
        scope: Scope,
        update: ConfigUpdate,
        expected: Option<i64>,
    ) -> Result<MaskedConfig, IntegrationError> {
        STORE
            .put(&self.db, ring, scope, &STRIPE, update, &admin(), expected)
            .await
    }
}

fn admin() -> Actor {
    Actor {
        user_id: Uuid::from_u128(0xad),
        request_id: "req-admin".into(),
        platform_admin: true,
    }
}

fn tenant_user(n: u128) -> Actor {
    Actor {
        user_id: Uuid::from_u128(n),
        request_id: format!("req-{n}"),
        platform_admin: false,
    }
}

fn ring(kid: &str) -> KeyRing {
    KeyRing::generate(kid).expect("ring")
}

fn stripe(key: &str) -> ConfigUpdate {
    ConfigUpdate::new("initial setup")
        .set("secret_key", key)
        .set("publishable_key", "pk_live_abc123")
        .set("api_base", "https://api.stripe.com")
}

#[tokio::test]
async fn settings_round_trip_encrypted_at_rest_and_masked_on_read() {
    let h = Harness::new().await;
    let ring = ring("k1");

    let written = h
        .put(
            &ring,
            Scope::Platform,
            stripe(LIVE_KEY).set("webhook_secret", WEBHOOK),
            Some(0),
        )
        .await
        .unwrap();
    assert_eq!(written.version, 1);
    assert_eq!(written.secrets["secret_key"], "sk_live_…0001");
    assert_eq!(written.secrets["webhook_secret"], "whsec_…LaSw");
    assert_eq!(written.settings["api_base"], "https://api.stripe.com");
    assert_eq!(written.updated_by, admin().user_id);

    let shown = STORE
        .get_masked(&h.db, Scope::Platform, "stripe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown, written);
    let shown_text = format!("{shown:?}");
    assert!(!shown_text.contains(LIVE_KEY) && !shown_text.contains(WEBHOOK));

    let loaded = STORE
        .load(&h.db, &ring, Scope::Platform, "stripe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.version, 1);
    assert_eq!(
        loaded.secret("secret_key").unwrap().expose_secret(),
        LIVE_KEY
    );
    assert_eq!(
        loaded.secret("webhook_secret").unwrap().expose_secret(),
        WEBHOOK
    );
    assert_eq!(loaded.setting("publishable_key"), Some("pk_live_abc123"));
    let loaded_text = format!("{loaded:?}");
    assert!(!loaded_text.contains(LIVE_KEY), "{loaded_text}");

    // Nowhere in the tables, not in the config row and not in the audit trail.
    let dump = h.dump().await;
    assert!(dump.contains("sk_live_…0001"));
    assert!(!dump.contains(LIVE_KEY) && !dump.contains("HqLyjWDarjtT1zdp7dc"));
    assert!(!dump.contains(WEBHOOK));

    assert!(
        STORE
            .get_masked(&h.db, Scope::Platform, "ayrshare")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        STORE
            .load(&h.db, &ring, Scope::Tenant(Uuid::now_v7()), "stripe")
            .await
            .unwrap()
            .is_none()
    );
    h.finish().await;
}

#[tokio::test]
async fn a_partial_update_keeps_unchanged_secrets_and_removal_clears_a_field() {
    let h = Harness::new().await;
    let ring = ring("k1");
    h.put(
        &ring,
        Scope::Platform,
        stripe(LIVE_KEY).set("webhook_secret", WEBHOOK),
        None,
    )
    .await
    .unwrap();

    // Only a setting changes; the secret, left out, stays.
    let v2 = h
        .put(
            &ring,
            Scope::Platform,
            ConfigUpdate::new("use the stub").set("api_base", "http://127.0.0.1:12111"),
            Some(1),
        )
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.secrets["secret_key"], "sk_live_…0001");
    let loaded = STORE
        .load(&h.db, &ring, Scope::Platform, "stripe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        loaded.secret("secret_key").unwrap().expose_secret(),
        LIVE_KEY
    );
    assert_eq!(loaded.setting("api_base"), Some("http://127.0.0.1:12111"));

    // A form that sends back the masked value it was shown changes nothing.
    let same = h
        .put(
            &ring,
            Scope::Platform,
            ConfigUpdate::new("resubmit form")
                .set("secret_key", "sk_live_…0001")
                .set("api_base", "http://127.0.0.1:12111"),
            Some(2),
        )
        .await
        .unwrap();
    assert_eq!(same.version, 2);
    assert_eq!(h.audits().await, 2);

    // Removal of an optional secret and a setting.
    let v3 = h
        .put(
            &ring,
            Scope::Platform,
            ConfigUpdate::new("no webhooks")
                .remove("webhook_secret")
                .remove("api_base"),
            Some(2),
        )
        .await
        .unwrap();
    assert_eq!(v3.version, 3);
    assert!(!v3.secrets.contains_key("webhook_secret"));
    assert!(!v3.settings.contains_key("api_base"));
    let loaded = STORE
        .load(&h.db, &ring, Scope::Platform, "stripe")
        .await
        .unwrap()
        .unwrap();
    assert!(loaded.secret("webhook_secret").is_none());
    assert_eq!(
        loaded.secret("secret_key").unwrap().expose_secret(),
        LIVE_KEY
    );

    // Replacing the secret takes effect on the next load.
    h.put(
        &ring,
        Scope::Platform,
        ConfigUpdate::new("test mode").set("secret_key", TEST_KEY),
        Some(3),
    )
    .await
    .unwrap();
    let loaded = STORE
        .load(&h.db, &ring, Scope::Platform, "stripe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.version, 4);
    assert_eq!(
        loaded.secret("secret_key").unwrap().expose_secret(),
        TEST_KEY
    );
    h.finish().await;
}

#[tokio::test]
async fn a_stale_version_is_a_conflict_and_writes_nothing() {
    let h = Harness::new().await;
    let ring = ring("k1");
    h.put(&ring, Scope::Platform, stripe(LIVE_KEY), Some(0))
        .await
        .unwrap();
    h.put(
        &ring,
        Scope::Platform,
        ConfigUpdate::new("a").set("api_base", "https://a.test"),
        Some(1),
    )
    .await
    .unwrap();

    let err = h
        .put(
            &ring,
            Scope::Platform,
            ConfigUpdate::new("b").set("secret_key", TEST_KEY),
            Some(1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IntegrationError::VersionConflict {
                expected: 1,
                current: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let service = ServiceError::from(err);
    assert_eq!(service.code, ErrorCode::VersionConflict);
    assert_eq!(service.code.http_status().as_u16(), 409);

    // "Create" when it already exists is a conflict too.
    let err = h
        .put(&ring, Scope::Platform, stripe(TEST_KEY), Some(0))
        .await
        .unwrap_err();
    assert!(matches!(err, IntegrationError::VersionConflict { .. }));

    let loaded = STORE
        .load(&h.db, &ring, Scope::Platform, "stripe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(
        loaded.secret("secret_key").unwrap().expose_secret(),
        LIVE_KEY
    );
    assert_eq!(h.audits().await, 2);
    h.finish().await;
}

#[tokio::test]
async fn invalid_input_names_the_field_never_echoes_the_secret_and_writes_nothing() {
    let h = Harness::new().await;
    let ring = ring("k1");
    let tenant = Scope::Tenant(Uuid::now_v7());

    let err = h
        .put(
            &ring,
            tenant,
            ConfigUpdate::new("x")
                .set("secret_key", LIVE_KEY)
                .set("colour", "blue"),
            None,
        )
        .await
        .unwrap_err();
    let IntegrationError::Invalid(violations) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "values.colour");

    let bad_secret = "sk_prod_51HtopSECRETvalue99";
    let err = h
        .put(
            &ring,
            tenant,
            ConfigUpdate::new("x").set("secret_key", bad_secret),
            None,
        )
        .await
        .unwrap_err();
    let service = ServiceError::from(err);
    assert_eq!(service.code, ErrorCode::InvalidArgument);
    assert_eq!(service.violations[0].field, "values.secret_key");
    assert!(!format!("{service:?}").contains("topSECRET"));

    let err = h
        .put(
            &ring,
            tenant,
            ConfigUpdate::new("x").set("api_base", "https://x.test"),
            None,
        )
        .await
        .unwrap_err();
    let IntegrationError::Invalid(violations) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(violations[0].field, "values.secret_key");
    assert_eq!(violations[0].message, "is required");

    assert_eq!(h.rows().await, 0);
    assert_eq!(h.audits().await, 0);

    // On an existing config: a refused update leaves version and audit as they were.
    h.put(&ring, tenant, stripe(LIVE_KEY), None).await.unwrap();
    let err = h
        .put(
            &ring,
            tenant,
            ConfigUpdate::new("x")
                .set("publishable_key", "pk_live_new")
                .set("api_base", "ftp://nope"),
            Some(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, IntegrationError::Invalid(_)));
    let shown = STORE
        .get_masked(&h.db, tenant, "stripe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown.version, 1);
    assert_eq!(shown.settings["publishable_key"], "pk_live_abc123");
    assert_eq!(h.audits().await, 1);

    let err = STORE
        .get_masked(&h.db, tenant, "Stripe; --")
        .await
        .unwrap_err();
    assert!(matches!(err, IntegrationError::Invalid(_)));
    h.finish().await;
}

#[tokio::test]
async fn only_platform_admins_write_platform_settings() {
    let h = Harness::new().await;
    let ring = ring("k1");
    let err = STORE
        .put(
            &h.db,
            &ring,
            Scope::Platform,
            &STRIPE,
            stripe(LIVE_KEY),
            &tenant_user(7),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, IntegrationError::PermissionDenied));
    assert_eq!(ServiceError::from(err).code, ErrorCode::PermissionDenied);
    assert_eq!(h.rows().await, 0);
    h.finish().await;
}

#[tokio::test]
async fn the_audit_trail_records_who_why_and_which_fields_without_secrets() {
    let h = Harness::new().await;
    let ring = ring("k1");
    let tenant = Scope::Tenant(Uuid::now_v7());
    let alice = tenant_user(1);
    let bob = tenant_user(2);
    STORE
        .put(
            &h.db,
            &ring,
            tenant,
            &STRIPE,
            stripe(LIVE_KEY),
            &alice,
            Some(0),
        )
        .await
        .unwrap();
    STORE
        .put(
            &h.db,
            &ring,
            tenant,
            &STRIPE,
            ConfigUpdate::new("rotated after leak")
                .set("secret_key", TEST_KEY)
                .set("api_base", "https://b.test")
                .remove("publishable_key"),
            &bob,
            Some(1),
        )
        .await
        .unwrap();

    let history = STORE.history(&h.db, tenant, "stripe", 10).await.unwrap();
    assert_eq!(history.len(), 2);
    let latest = &history[0];
    assert_eq!(latest.version, 2);
    assert_eq!(latest.actor_user_id, bob.user_id);
    assert_eq!(latest.actor_kind, "tenant_user");
    assert_eq!(latest.request_id, "req-2");
    assert_eq!(latest.reason, "rotated after leak");
    assert_eq!(latest.scope, tenant);
    assert_eq!(
        latest.changed_fields,
        ["api_base", "publishable_key", "secret_key"]
    );
    let secret = latest
        .changes
        .iter()
        .find(|c| c.field == "secret_key")
        .unwrap();
    assert!(secret.secret);
    assert_eq!(secret.change, ChangeKind::Set);
    assert_eq!(secret.old.as_deref(), Some("sk_live_…0001"));
    assert_eq!(secret.new.as_deref(), Some("sk_test_…key2"));
    let base = latest
        .changes
        .iter()
        .find(|c| c.field == "api_base")
        .unwrap();
    assert_eq!(base.old.as_deref(), Some("https://api.stripe.com"));
    assert_eq!(base.new.as_deref(), Some("https://b.test"));
    let removed = latest
        .changes
        .iter()
        .find(|c| c.field == "publishable_key")
        .unwrap();
    assert_eq!(removed.change, ChangeKind::Removed);
    assert_eq!(removed.new, None);

    assert_eq!(history[1].actor_user_id, alice.user_id);
    assert_eq!(history[1].reason, "initial setup");
    let text = format!("{history:?}");
    assert!(
        !text.contains(LIVE_KEY) && !text.contains(TEST_KEY),
        "{text}"
    );
    assert_eq!(
        STORE
            .history(&h.db, tenant, "stripe", 1)
            .await
            .unwrap()
            .len(),
        1
    );
    h.finish().await;
}

#[tokio::test]
async fn tenants_see_only_their_own_settings_and_never_the_platform_ones() {
    let h = Harness::new().await;
    let ring = ring("k1");
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    h.put(&ring, Scope::Platform, stripe(LIVE_KEY), None)
        .await
        .unwrap();
    h.put(&ring, Scope::Tenant(a), stripe(TEST_KEY), None)
        .await
        .unwrap();
    h.put(
        &ring,
        Scope::Tenant(b),
        stripe("sk_test_BBBBBBBBBBBBBBBBbbbb"),
        None,
    )
    .await
    .unwrap();

    let loaded_a = STORE
        .load(&h.db, &ring, Scope::Tenant(a), "stripe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        loaded_a.secret("secret_key").unwrap().expose_secret(),
        TEST_KEY
    );

    // Row-level security, not just the WHERE clause: a tenant transaction sees one row.
    let mut tx = h.db.tenant_tx(a).await.unwrap();
    let visible: Vec<Option<Uuid>> =
        sqlx::query_scalar("SELECT tenant_id FROM integ_test.integration_configs")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(visible, [Some(a)]);
    let audits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM integ_test.integration_config_audit")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(audits, 1);
    tx.rollback().await.unwrap();

    // Nor can it write another tenant's or a platform row.
    for tenant_id in [Some(b), None] {
        let mut tx = h.db.tenant_tx(a).await.unwrap();
        let scope = if tenant_id.is_some() {
            "tenant"
        } else {
            "platform"
        };
        let err = sqlx::query(
            "INSERT INTO integ_test.integration_configs (id, scope, tenant_id, provider, version, updated_by) \
             VALUES ($1, $2, $3, 'gemini', 1, $1)",
        )
        .bind(Uuid::now_v7())
        .bind(scope)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await
        .unwrap_err();
        assert!(err.to_string().contains("row-level security"), "{err}");
    }
    let mut tx = h.db.tenant_tx(a).await.unwrap();
    let updated = sqlx::query("UPDATE integ_test.integration_configs SET version = 99")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(updated, 1);
    tx.rollback().await.unwrap();

    // A transaction without a tenant sees nothing at all.
    let mut tx = h.db.app_tx().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM integ_test.integration_configs")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
    tx.rollback().await.unwrap();

    // The app role may not erase audit entries, even its own tenant's.
    let mut tx = h.db.tenant_tx(a).await.unwrap();
    let err = sqlx::query("DELETE FROM integ_test.integration_config_audit")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    tx.rollback().await.unwrap();
    h.finish().await;
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_or_field_does_not_decrypt() {
    let h = Harness::new().await;
    let ring = ring("k1");
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    h.put(&ring, Scope::Tenant(a), stripe(TEST_KEY), None)
        .await
        .unwrap();
    h.put(
        &ring,
        Scope::Tenant(b),
        stripe(LIVE_KEY).set("webhook_secret", WEBHOOK),
        None,
    )
    .await
    .unwrap();

    // Someone with database access copies B's live key into A's row.
    sqlx::query(
        "UPDATE integ_test.integration_configs dst \
         SET secrets = jsonb_set(dst.secrets, '{secret_key}', src.secrets->'secret_key') \
         FROM integ_test.integration_configs src \
         WHERE dst.tenant_id = $1 AND src.tenant_id = $2",
    )
    .bind(a)
    .bind(b)
    .execute(h.db.pool())
    .await
    .unwrap();
    let err = STORE
        .load(&h.db, &ring, Scope::Tenant(a), "stripe")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IntegrationError::Decrypt { field, .. } if field == "secret_key"),
        "{err:?}"
    );
    assert!(!err.to_string().contains(LIVE_KEY));
    assert_eq!(ServiceError::from(err).code, ErrorCode::Internal);

    // ... or swaps fields within B's own row.
    sqlx::query(
        "UPDATE integ_test.integration_configs \
         SET secrets = jsonb_set(secrets, '{secret_key}', secrets->'webhook_secret') \
         WHERE tenant_id = $1",
    )
    .bind(b)
    .execute(h.db.pool())
    .await
    .unwrap();
    assert!(matches!(
        STORE.load(&h.db, &ring, Scope::Tenant(b), "stripe").await,
        Err(IntegrationError::Decrypt { .. })
    ));
    h.finish().await;
}

#[tokio::test]
async fn reencrypt_all_moves_every_secret_to_the_active_key_once() {
    let h = Harness::new().await;
    let k1 = ring("k1");
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    h.put(
        &k1,
        Scope::Platform,
        stripe(LIVE_KEY).set("webhook_secret", WEBHOOK),
        None,
    )
    .await
    .unwrap();
    h.put(&k1, Scope::Tenant(a), stripe(TEST_KEY), None)
        .await
        .unwrap();
    h.put(
        &k1,
        Scope::Tenant(b),
        stripe("sk_test_BBBBBBBBBBBBBBBBbbbb"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(STORE.reencrypt_all(&h.db, &k1).await.unwrap(), 0);

    let mut k1_k2 = k1.clone();
    k1_k2.rotate_to_generated("k2").unwrap();
    // A secret written after the rotation is already under k2 and must not be counted.
    h.put(
        &k1_k2,
        Scope::Tenant(b),
        ConfigUpdate::new("webhooks").set("webhook_secret", WEBHOOK),
        None,
    )
    .await
    .unwrap();
    let before = h.dump().await;

    assert_eq!(STORE.reencrypt_all(&h.db, &k1_k2).await.unwrap(), 4);
    assert_eq!(STORE.reencrypt_all(&h.db, &k1_k2).await.unwrap(), 0);
    // Values, versions and the audit trail are untouched by rotation.
    assert_eq!(h.audits().await, 4);
    assert_ne!(h.dump().await, before);

    // A ring that no longer holds k1 reads everything.
    let config = k1_k2.to_config_string();
    let k2_entry = config
        .expose_secret()
        .split(',')
        .find(|entry| entry.starts_with("k2:"))
        .unwrap()
        .to_owned();
    let k2_only = KeyRing::parse(&k2_entry, "k2").unwrap();
    let expected = [
        (Scope::Platform, LIVE_KEY, Some(WEBHOOK), 1),
        (Scope::Tenant(a), TEST_KEY, None, 1),
        (
            Scope::Tenant(b),
            "sk_test_BBBBBBBBBBBBBBBBbbbb",
            Some(WEBHOOK),
            2,
        ),
    ];
    for (scope, key, webhook, version) in expected {
        let loaded = STORE
            .load(&h.db, &k2_only, scope, "stripe")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(loaded.version, version);
        assert_eq!(loaded.secret("secret_key").unwrap().expose_secret(), key);
        assert_eq!(
            loaded
                .secret("webhook_secret")
                .map(|s| s.expose_secret().to_owned()),
            webhook.map(str::to_owned)
        );
    }
    // And the old ring alone no longer can.
    assert!(matches!(
        STORE.load(&h.db, &k1, Scope::Platform, "stripe").await,
        Err(IntegrationError::Decrypt { .. })
    ));

    // A ring missing the key a secret is under fails as a whole and changes nothing.
    let k3_only = ring("k3");
    assert!(matches!(
        STORE.reencrypt_all(&h.db, &k3_only).await,
        Err(IntegrationError::Decrypt { .. })
    ));
    assert_eq!(STORE.reencrypt_all(&h.db, &k2_only).await.unwrap(), 0);
    h.finish().await;
}

#[tokio::test]
async fn ensure_tables_is_idempotent_and_keeps_data() {
    let h = Harness::new().await;
    let ring = ring("k1");
    h.put(&ring, Scope::Platform, stripe(LIVE_KEY), None)
        .await
        .unwrap();
    let mut conn = h.db.pool().acquire().await.unwrap();
    ensure_tables(&mut conn, SCHEMA, APP_ROLE).await.unwrap();
    ensure_tables(&mut conn, SCHEMA, APP_ROLE).await.unwrap();
    assert!(matches!(
        ensure_tables(&mut conn, "bad-schema", APP_ROLE).await,
        Err(IntegrationError::Misconfigured { .. })
    ));
    drop(conn);
    assert_eq!(h.rows().await, 1);
    let loaded = STORE
        .load(&h.db, &ring, Scope::Platform, "stripe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        loaded.secret("secret_key").unwrap().expose_secret(),
        LIVE_KEY
    );
    h.finish().await;
}
