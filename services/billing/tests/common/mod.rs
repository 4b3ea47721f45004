//! Billing started on its own for a test: a fresh database, a fake Stripe, the real Redis with a
//! unique prefix, tokens minted by a local signing key (what identity would issue).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cos_auth::{
    KeySet, Principal, PrincipalKind, Role, ServiceCredential, SigningKey, TokenIssuer,
    TokenVerifier,
};
use cos_billing::{Billing, BillingConfig};
use cos_config::{CommonConfig, Source};
use cos_crypto::KeyRing;
use cos_db::{Db, PoolSettings};
use cos_errors::{ErrorCode, ServiceError};
use cos_proto::billing::v1 as pb;
use cos_proto::billing::v1::billing_service_client::BillingServiceClient;
use cos_testkit::TestDatabase;
use cos_testkit::stripe::FakeStripe;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

pub const SERVICE_SECRET: &str = "test-mesh-secret-0123456789abcdef0123456789";
pub const STRIPE_KEY: &str = "sk_test_51BillingTestKey0123456789abcdWXYZ";

pub fn fingerprint() -> String {
    format!(
        "billing_{}_{}",
        cos_db::migrations_fingerprint([(cos_billing::SCHEMA, &cos_billing::MIGRATOR)]),
        cos_db::text_fingerprint(&[
            &cos_events::tables_ddl("s", "r"),
            &cos_integrations::tables_ddl("s", "r"),
            cos_db::BOOTSTRAP_REVISION,
            "billing-revoke-1",
        ])
    )
}

pub async fn test_database() -> TestDatabase {
    TestDatabase::create(&fingerprint(), |url| async move {
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        cos_db::bootstrap(&mut conn, "cos_app").await?;
        cos_billing::migrate(&mut conn, "cos_app").await?;
        conn.close().await?;
        Ok(())
    })
    .await
    .expect("test database")
}

pub struct Harness {
    pub database: TestDatabase,
    pub db: Db,
    pub keyring: KeyRing,
    pub stripe: FakeStripe,
    pub grpc_url: String,
    pub client: BillingServiceClient<Channel>,
    pub issuer: TokenIssuer,
    pub common: CommonConfig,
    pub config: BillingConfig,
    pub service: ServiceCredential,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn settings(extra: &[(&str, &str)]) -> (CommonConfig, BillingConfig) {
    let prefix = cos_testkit::redis_prefix();
    let mut vars: Vec<(String, String)> = vec![
        ("COS_ENV".into(), "test".into()),
        ("COS_REDIS__URL".into(), cos_testkit::redis_url()),
        ("COS_REDIS__KEY_PREFIX".into(), prefix),
        ("COS_AUTH__SERVICE_SECRET".into(), SERVICE_SECRET.into()),
    ];
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push(((*k).to_owned(), (*v).to_owned()));
    }
    let source = Source::from_env_pairs(vars);
    let mut r = source.reader();
    let common = CommonConfig::read(&mut r);
    let billing = BillingConfig::read(&mut r);
    r.finish().expect("valid test settings");
    (common, billing)
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        let database = test_database().await;
        let stripe = FakeStripe::start(&[STRIPE_KEY]).await.expect("fake stripe");
        let keyring = KeyRing::generate("test1").expect("key ring");
        let url = stripe.url.clone();
        let mut vars = vec![("COS_BILLING__STRIPE_API_BASE", url.as_str())];
        vars.extend_from_slice(extra);
        Self::start_on(database, stripe, keyring, &vars).await
    }

    pub async fn start_on(
        database: TestDatabase,
        stripe: FakeStripe,
        keyring: KeyRing,
        extra: &[(&str, &str)],
    ) -> Self {
        let (common, config) = settings(extra);
        let db = Db::connect(&PoolSettings {
            url: database.url.clone(),
            max_connections: 16,
            app_role: "cos_app".into(),
            acquire_timeout: Duration::from_secs(10),
        })
        .await
        .expect("db");
        let signing = Arc::new(SigningKey::generate("k1").expect("key"));
        let keys = KeySet::new();
        keys.replace(&[signing.jwk()]).expect("jwks");
        let verifier = TokenVerifier::new(keys, &common.auth.issuer, &common.auth.audience);
        let issuer = TokenIssuer::new(
            signing,
            &common.auth.issuer,
            &common.auth.audience,
            Duration::from_secs(900),
        );
        let billing = Billing::build(db.clone(), keyring.clone(), &common, &config, verifier)
            .await
            .expect("billing builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let grpc_url = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(billing.serve(listener, shutdown.clone()));
        let channel = tonic::transport::Endpoint::from_shared(grpc_url.clone())
            .expect("url")
            .connect_lazy();
        Self {
            database,
            db,
            keyring,
            stripe,
            grpc_url,
            client: BillingServiceClient::new(channel),
            issuer,
            common,
            config,
            service: ServiceCredential::new("testsvc", SERVICE_SECRET).expect("cred"),
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the server, keeping the database (for restarting with other settings).
    pub async fn stop_server(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("billing served");
        }
    }

    pub async fn stop(mut self) {
        self.stop_server().await;
        self.stripe.stop();
        self.db.pool().close().await;
        let _ = self.database.clone().drop_database().await;
    }

    pub fn principal(&self, tenant: Uuid, role: Role, admin: bool) -> Principal {
        Principal {
            kind: PrincipalKind::User,
            user_id: Uuid::now_v7(),
            tenant_id: tenant,
            role,
            api_key_id: None,
            scopes: vec![],
            platform_admin: admin,
            session_id: Some(Uuid::now_v7()),
        }
    }

    pub fn token_for(&self, p: &Principal) -> String {
        self.issuer.issue(p).expect("token").0
    }

    /// An owner token of a fresh tenant.
    pub fn owner(&self) -> (Uuid, String) {
        let tenant = Uuid::now_v7();
        (
            tenant,
            self.token_for(&self.principal(tenant, Role::Owner, false)),
        )
    }

    pub fn admin_token(&self) -> String {
        self.token_for(&self.principal(Uuid::now_v7(), Role::Owner, true))
    }

    pub fn req<T>(&self, msg: T, token: &str) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        r
    }

    pub fn service_req<T>(&self, msg: T, method: &str, tenant: Uuid) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        let value = self.service.header_value(
            &format!("/campaignos.billing.v1.BillingService/{method}"),
            tenant,
        );
        r.metadata_mut().insert(
            cos_auth::SERVICE_AUTH_HEADER,
            value.parse().expect("header"),
        );
        r
    }

    pub fn c(&self) -> BillingServiceClient<Channel> {
        self.client.clone()
    }

    /// Stores the Stripe key as a platform admin would.
    pub async fn configure_stripe(&self, key: &str) -> pb::IntegrationConfig {
        let admin = self.admin_token();
        self.c()
            .put_integration(self.req(
                pb::PutIntegrationRequest {
                    provider: "stripe".into(),
                    values: [("secret_key".to_owned(), key.to_owned())].into(),
                    clear: vec![],
                    reason: "test setup".into(),
                    expected_version: 0,
                },
                &admin,
            ))
            .await
            .expect("stripe configured")
            .into_inner()
    }

    pub async fn subscription(&self, token: &str) -> pb::Subscription {
        self.c()
            .get_subscription(self.req(pb::GetSubscriptionRequest {}, token))
            .await
            .expect("subscription")
            .into_inner()
    }

    pub async fn checkout(
        &self,
        token: &str,
        plan: &str,
        months: i32,
        currency: &str,
    ) -> pb::CheckoutSession {
        self.c()
            .create_checkout(self.req(
                pb::CreateCheckoutRequest {
                    plan: plan.into(),
                    months,
                    currency: currency.into(),
                },
                token,
            ))
            .await
            .expect("checkout created")
            .into_inner()
    }

    pub async fn verify(
        &self,
        token: &str,
        session: &str,
    ) -> Result<pb::VerifyCheckoutResponse, ServiceError> {
        self.c()
            .verify_checkout(self.req(
                pb::VerifyCheckoutRequest {
                    session_id: session.into(),
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ServiceError::from_status(&s))
    }

    /// Direct SQL as the owner role (for "nothing was written" checks).
    pub async fn scalar(&self, sql: &'static str, tenant: Uuid) -> i64 {
        sqlx::query_scalar(sql)
            .bind(tenant)
            .fetch_one(self.db.pool())
            .await
            .expect("query")
    }

    pub async fn admin_override(
        &self,
        tenant: Uuid,
        r: pb::AdminOverrideSubscriptionRequest,
    ) -> Result<pb::Subscription, ServiceError> {
        let admin = self.admin_token();
        self.c()
            .admin_override_subscription(self.req(
                pb::AdminOverrideSubscriptionRequest {
                    tenant_id: tenant.to_string(),
                    ..r
                },
                &admin,
            ))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ServiceError::from_status(&s))
    }
}

pub fn ts_secs(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().expect("timestamp").seconds
}

pub fn assert_code(err: &ServiceError, code: ErrorCode) {
    assert_eq!(err.code, code, "{err:?}");
}
