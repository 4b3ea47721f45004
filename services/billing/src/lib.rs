//! The billing service: the plan catalogue and its entitlements, prepaid subscription periods
//! bought through Stripe Checkout and verified by session id (no webhooks), plan gating for the
//! other services (`CheckEntitlement`, `ConsumeQuota`), usage counters, platform-admin overrides
//! and the Stripe integration settings.
//!
//! No background worker is needed: a subscription's grace and expiry are derived from its
//! period end and the clock on every read, and new tenants get their trial the first time
//! billing is asked about them.

pub mod cache;
pub mod config;
pub mod domain;
mod error;
pub mod events;
mod grpc;
pub mod payments;
mod store;

use std::sync::Arc;

use cos_auth::{AuthLayer, MethodPolicies, ServiceCredential, TokenVerifier};
use cos_config::CommonConfig;
use cos_crypto::{KeyRing, Secret};
use cos_db::Db;
use cos_proto::billing::v1::billing_service_server::BillingServiceServer;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::BillingConfig;
pub use grpc::BillingGrpc;
pub use payments::{NewCheckout, PaymentProvider, ProviderError, StripeProvider};

/// Billing's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");
/// The PostgreSQL schema billing owns.
pub const SCHEMA: &str = "billing";
/// The gRPC service it hosts.
pub const GRPC_SERVICE: &str = "campaignos.billing.v1.BillingService";
/// Tables the app role never touches: only the owner role (system transactions) does.
const SYSTEM_ONLY_TABLES: &[&str] = &["admin_audit"];

/// Applies billing's migrations, its outbox/inbox tables and the integration-settings tables.
/// Safe to run on every start. The app role may read the plan catalogue but not change it
/// (plan edits are platform-admin system transactions).
pub async fn migrate(conn: &mut sqlx::PgConnection, app_role: &str) -> anyhow::Result<()> {
    cos_db::migrate_schema(conn, SCHEMA, &MIGRATOR, app_role, SYSTEM_ONLY_TABLES).await?;
    cos_integrations::ensure_tables(conn, SCHEMA, app_role).await?;
    cos_events::ensure_tables(conn, SCHEMA, app_role).await?;
    if !cos_config::valid_identifier(app_role) {
        anyhow::bail!("invalid app role {app_role:?}");
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON billing.plans, billing.plan_prices FROM {app_role}"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Re-encrypts every secret billing stores (the Stripe keys) under the key ring's active key;
/// returns how many values changed.
pub async fn reencrypt_secrets(db: &Db, keyring: &KeyRing) -> anyhow::Result<usize> {
    Ok(payments::INTEGRATIONS.reencrypt_all(db, keyring).await?)
}

/// The mesh service credential a service uses (and billing accepts) for internal calls, from
/// `COS_AUTH__SERVICE_SECRET`; None when it is not configured.
pub fn service_credential(
    common: &CommonConfig,
    service: &str,
) -> anyhow::Result<Option<ServiceCredential>> {
    common
        .auth
        .service_secret
        .as_deref()
        .map(|s| {
            ServiceCredential::new(service, s)
                .map_err(|e| anyhow::anyhow!("COS_AUTH__SERVICE_SECRET: {e}"))
        })
        .transpose()
}

/// A built billing service, ready to serve.
pub struct Billing {
    api: Arc<grpc::BillingApi>,
    verifier: TokenVerifier,
    service_credential: Option<ServiceCredential>,
}

impl Billing {
    /// Prepares the handlers with the real Stripe adapter.
    pub async fn build(
        db: Db,
        keyring: KeyRing,
        common: &CommonConfig,
        config: &BillingConfig,
        verifier: TokenVerifier,
    ) -> anyhow::Result<Self> {
        let stripe = StripeProvider::new(
            db.clone(),
            keyring.clone(),
            &config.stripe_api_base,
            config.stripe_secret_key.clone().map(Secret::new),
            config.stripe_timeout,
        );
        Self::build_with_provider(db, keyring, common, config, verifier, stripe).await
    }

    /// Like [`Billing::build`] with another payment provider.
    pub async fn build_with_provider(
        db: Db,
        keyring: KeyRing,
        common: &CommonConfig,
        config: &BillingConfig,
        verifier: TokenVerifier,
        payments: Arc<dyn PaymentProvider>,
    ) -> anyhow::Result<Self> {
        db.check_owner_bypasses_rls().await?;
        let cache = cache::EntitlementCache::connect(&common.redis.url, &common.redis.key_prefix)?;
        let service_credential = service_credential(common, "billing")?;
        if service_credential.is_none() {
            tracing::warn!(
                "COS_AUTH__SERVICE_SECRET is not set: background jobs of other services cannot call billing's internal RPCs"
            );
        }
        let api = grpc::BillingApi {
            db,
            keyring,
            config: config.clone(),
            payments,
            cache,
        };
        Ok(Self {
            api: Arc::new(api),
            verifier,
            service_credential,
        })
    }

    /// Serves gRPC (billing, health, reflection) on `listener` until `shutdown` fires; in-flight
    /// calls finish first.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<BillingServiceServer<BillingGrpc>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cos_proto::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let policies = MethodPolicies::for_services(&[GRPC_SERVICE]);
        tracing::info!(addr = %listener.local_addr()?, "billing gRPC listening");
        tonic::transport::Server::builder()
            .layer(cos_telemetry::GrpcServerTelemetryLayer::new("billing"))
            .layer(
                AuthLayer::new(self.verifier.clone(), policies)
                    .with_service_credential(self.service_credential.clone()),
            )
            .add_service(health_service)
            .add_service(reflection)
            .add_service(BillingServiceServer::new(BillingGrpc(self.api)))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(std::time::Duration::from_secs(60))),
                shutdown.cancelled_owned(),
            )
            .await?;
        tracing::info!("billing gRPC stopped");
        Ok(())
    }
}
