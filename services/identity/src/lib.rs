//! The identity service: users, tenants, memberships and roles, sessions (refresh-token families),
//! API keys, the JWKS that verifies access tokens everywhere, and the audit log.

pub mod config;
pub mod domain;
mod error;
pub mod events;
mod grpc;
pub mod keys;
mod store;

use std::sync::Arc;

use argon2::password_hash::PasswordHasher;
use cos_auth::{AuthLayer, KeySet, MethodPolicies, TokenIssuer, TokenVerifier};
use cos_config::CommonConfig;
use cos_crypto::KeyRing;
use cos_db::Db;
use cos_proto::identity::v1::identity_service_server::IdentityServiceServer;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::IdentityConfig;
pub use grpc::IdentityGrpc;

/// Identity's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");
/// The PostgreSQL schema identity owns.
pub const SCHEMA: &str = "identity";
/// The gRPC service it hosts.
pub const GRPC_SERVICE: &str = "campaignos.identity.v1.IdentityService";
/// Tables the app role never touches: only the owner role (system transactions) does.
const SYSTEM_ONLY_TABLES: &[&str] = &["signing_keys", "platform_audit_log"];

/// Applies identity's migrations and its outbox/inbox tables. Safe to run on every start: the
/// grants come out the same each time (outbox/inbox grants are set last, exactly).
pub async fn migrate(conn: &mut sqlx::PgConnection, app_role: &str) -> anyhow::Result<()> {
    cos_db::migrate_schema(conn, SCHEMA, &MIGRATOR, app_role, SYSTEM_ONLY_TABLES).await?;
    cos_events::ensure_tables(conn, SCHEMA, app_role).await?;
    Ok(())
}

/// Grants or revokes platform administration for the account with this email (an operator
/// action from the CLI, recorded in the platform audit log). Returns false if no account uses it.
pub async fn set_platform_admin(db: &Db, email: &str, admin: bool) -> anyhow::Result<bool> {
    let email = domain::Email::parse(email).map_err(|m| anyhow::anyhow!("email {m}"))?;
    let mut tx = db.system_tx("operator: set platform administrator").await?;
    let user: Option<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE identity.users SET platform_admin = $2, updated_at = now() WHERE email_normalized = $1 RETURNING id",
    )
    .bind(email.normalized())
    .bind(admin)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user) = user else { return Ok(false) };
    let action = if admin {
        "platform_admin.granted"
    } else {
        "platform_admin.revoked"
    };
    sqlx::query(
        "INSERT INTO identity.platform_audit_log (id, actor_user_id, action, details) VALUES ($1, $2, $3, $4)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(uuid::Uuid::nil())
    .bind(action)
    .bind(serde_json::json!({"user_id": user, "email": email.as_str(), "via": "cli"}))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// A built identity service, ready to serve.
pub struct Identity {
    api: Arc<grpc::IdentityApi>,
    verifier: TokenVerifier,
}

impl Identity {
    /// Loads (or on first start creates) the signing key and prepares the handlers.
    pub async fn build(
        db: Db,
        keyring: &KeyRing,
        common: &CommonConfig,
        config: &IdentityConfig,
    ) -> anyhow::Result<Self> {
        db.check_owner_bypasses_rls().await?;
        let signing = keys::load_or_create(&db, keyring).await?;
        let keyset = KeySet::new();
        keyset.replace(&signing.published)?;
        let verifier = TokenVerifier::new(keyset, &common.auth.issuer, &common.auth.audience);
        let issuer = TokenIssuer::new(
            signing.active,
            &common.auth.issuer,
            &common.auth.audience,
            common.auth.access_ttl,
        );
        let dummy_hash = tokio::task::spawn_blocking(|| {
            argon2::Argon2::default()
                .hash_password(cos_auth::random_token(24).as_bytes())
                .map(|h| h.to_string())
        })
        .await?
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        let entitlements = match &config.billing_url {
            Some(url) => Some(
                cos_entitlements::EntitlementClient::new(
                    url,
                    &common.redis.url,
                    &common.redis.key_prefix,
                    std::time::Duration::from_secs(config.entitlements_cache_ttl_secs),
                )
                .map_err(|e| anyhow::anyhow!("COS_IDENTITY__BILLING_URL: {e}"))?,
            ),
            None => {
                tracing::warn!(
                    "COS_IDENTITY__BILLING_URL is not set: plan limits on seats and API keys are NOT enforced"
                );
                None
            }
        };
        let api = grpc::IdentityApi {
            entitlements,
            db,
            issuer,
            jwks: signing.published,
            refresh_ttl: common.auth.refresh_ttl,
            api_key_token_ttl: std::time::Duration::from_secs(config.api_key_token_ttl_secs),
            dummy_hash,
            password_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            )),
        };
        Ok(Self {
            api: Arc::new(api),
            verifier,
        })
    }

    /// The verifier for tokens this identity issues (in-process callers share it).
    pub fn verifier(&self) -> TokenVerifier {
        self.verifier.clone()
    }

    /// Serves gRPC (identity, health, reflection) on `listener` until `shutdown` fires; in-flight
    /// calls finish first.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<IdentityServiceServer<IdentityGrpc>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cos_proto::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let policies = MethodPolicies::for_services(&[GRPC_SERVICE]);
        tracing::info!(addr = %listener.local_addr()?, "identity gRPC listening");
        tonic::transport::Server::builder()
            .layer(cos_telemetry::GrpcServerTelemetryLayer::new("identity"))
            .layer(AuthLayer::new(self.verifier.clone(), policies))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(IdentityServiceServer::new(IdentityGrpc(self.api)))
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY small responses wait for the peer's delayed ACK (~40 ms per
                // call at low concurrency).
                tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(std::time::Duration::from_secs(60))),
                shutdown.cancelled_owned(),
            )
            .await?;
        tracing::info!("identity gRPC stopped");
        Ok(())
    }
}
