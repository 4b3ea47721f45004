//! The publishing service, delivery half: channel connections (SMTP, signed webhooks, sandbox),
//! delivery jobs of campaign runs, the consumer of the `publishing.deliveries` work queue that
//! renders and sends each recipient's message once, retries with backoff, and one-click
//! unsubscribe. Social platforms (the other half) come later.

pub mod config;
mod convert;
pub mod engine;
mod error;
pub mod events;
mod grpc;
pub mod jobs;
mod store;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use cos_auth::{AuthLayer, MethodPolicies, ServiceCredential, TokenVerifier};
use cos_channels::ratelimit::RateLimiter;
use cos_channels::unsubscribe::UnsubscribeSigner;
use cos_channels::webhook::WebhookSender;
use cos_crypto::KeyRing;
use cos_db::Db;
use cos_proto::publishing::v1::publishing_service_server::PublishingServiceServer;
use cos_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::PublishingConfig;

/// Publishing's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");
/// The PostgreSQL schema publishing owns.
pub const SCHEMA: &str = "publishing";
/// The gRPC service it hosts.
pub const GRPC_SERVICE: &str = "campaignos.publishing.v1.PublishingService";

/// Applies publishing's migrations and its outbox/inbox tables.
pub async fn migrate(conn: &mut sqlx::PgConnection, app_role: &str) -> anyhow::Result<()> {
    cos_db::migrate_schema(conn, SCHEMA, &MIGRATOR, app_role, &[]).await?;
    cos_events::ensure_tables(conn, SCHEMA, app_role).await?;
    Ok(())
}

/// The unsubscribe-link key: derived from the mesh's service secret, so every replica (and the
/// gateway's links from any replica) agree without another secret to deploy. Rotating the
/// service secret invalidates links in emails already sent.
pub fn unsubscribe_signer(service_secret: &str) -> anyhow::Result<UnsubscribeSigner> {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, service_secret.as_bytes());
    let derived = hmac::sign(&key, b"campaignos/unsubscribe-links/v1");
    UnsubscribeSigner::new(derived.as_ref()).map_err(|e| anyhow::anyhow!("unsubscribe key: {e}"))
}

/// Re-encrypts every connection secret under the key ring's active key (key rotation).
pub async fn reencrypt_secrets(db: &Db, keyring: &KeyRing) -> anyhow::Result<usize> {
    let mut tx = db
        .system_tx("re-encrypt channel connection secrets")
        .await?;
    let rows = store::all_secrets(&mut tx).await?;
    let mut changed = 0;
    for (tenant, id, blob) in rows {
        if !keyring.needs_rotation(&blob) {
            continue;
        }
        let new = keyring.reencrypt(&blob, &jobs::secret_aad(tenant, id))?;
        if store::replace_secret(&mut tx, tenant, id, &blob, &new).await? {
            changed += 1;
        }
    }
    tx.commit().await?;
    Ok(changed)
}

/// A built publishing service.
pub struct Publishing {
    api: Arc<grpc::PublishingApi>,
    verifier: TokenVerifier,
    amqp_url: String,
    queue: String,
    workers: u16,
    publisher: Arc<cos_events::WorkQueuePublisher>,
}

impl Publishing {
    /// `delivery_queue` is the durable work queue campaigns publishes batches to.
    pub async fn build(
        db: Db,
        config: &PublishingConfig,
        verifier: TokenVerifier,
        keyring: KeyRing,
        service_secret: Option<&str>,
        amqp_url: &str,
        delivery_queue: &str,
    ) -> anyhow::Result<Self> {
        db.check_owner_bypasses_rls().await?;
        let secret = service_secret.ok_or_else(|| {
            anyhow::anyhow!(
                "publishing needs COS_AUTH__SERVICE_SECRET (unsubscribe links, calls from campaigns)"
            )
        })?;
        let credential = Some(
            ServiceCredential::new("publishing", secret)
                .map_err(|e| anyhow::anyhow!("COS_AUTH__SERVICE_SECRET: {e}"))?,
        );
        let engine = Arc::new(Self::engine(db, config, keyring.clone(), secret)?);
        let channel = tonic::transport::Endpoint::from_shared(config.segmentation_url.clone())
            .map_err(|e| anyhow::anyhow!("segmentation URL {:?}: {e}", config.segmentation_url))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        let publisher = Arc::new(cos_events::WorkQueuePublisher::new(
            amqp_url,
            delivery_queue,
            "cos-publishing:republish",
        )?);
        Ok(Self {
            api: Arc::new(grpc::PublishingApi {
                engine,
                keyring,
                segmentation: SegmentationServiceClient::new(channel),
                credential,
                wake_maintenance: Arc::new(tokio::sync::Notify::new()),
            }),
            verifier,
            amqp_url: amqp_url.to_owned(),
            queue: delivery_queue.to_owned(),
            workers: config.workers,
            publisher,
        })
    }

    /// The delivery engine on its own (tests and benchmarks run workers with it), with the
    /// unsubscribe key derived from `service_secret`.
    pub fn engine(
        db: Db,
        config: &PublishingConfig,
        keyring: KeyRing,
        service_secret: &str,
    ) -> anyhow::Result<engine::Engine> {
        Ok(engine::Engine {
            jobs: jobs::JobCache::new(
                db.clone(),
                keyring,
                config.default_rate_per_second,
                config.send_timeout,
            ),
            db,
            signer: unsubscribe_signer(service_secret)?,
            webhook: WebhookSender::new(config.send_timeout, config.allow_private_webhook_targets)
                .map_err(|e| anyhow::anyhow!("webhook client: {e}"))?,
            limiter: RateLimiter::new(),
            config: config.clone(),
        })
    }

    /// Serves gRPC (publishing, health, reflection) and runs the delivery workers and the
    /// maintenance loop until `shutdown` fires.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<PublishingServiceServer<grpc::PublishingGrpc>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cos_proto::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let policies = MethodPolicies::for_services(&[GRPC_SERVICE]);
        let mut tasks = tokio::task::JoinSet::new();
        if self.workers > 0 {
            let worker = worker::DeliveryWorker {
                engine: self.api.engine.clone(),
                amqp_url: self.amqp_url.clone(),
                queue: self.queue.clone(),
                concurrency: self.workers,
            };
            tasks.spawn(worker.run(shutdown.clone()));
        }
        tasks.spawn(worker::maintenance(
            self.api.engine.clone(),
            self.publisher.clone(),
            self.api.wake_maintenance.clone(),
            shutdown.clone(),
        ));
        tracing::info!(addr = %listener.local_addr()?, "publishing gRPC listening");
        let service = PublishingServiceServer::new(grpc::PublishingGrpc(self.api.clone()));
        let credential = self.api.credential.clone();
        let served = tonic::transport::Server::builder()
            .layer(cos_telemetry::GrpcServerTelemetryLayer::new("publishing"))
            .layer(
                AuthLayer::new(self.verifier.clone(), policies).with_service_credential(credential),
            )
            .add_service(health_service)
            .add_service(reflection)
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(Duration::from_secs(60))),
                shutdown.clone().cancelled_owned(),
            )
            .await;
        shutdown.cancel();
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Err(e)) => tracing::error!(error = %e, "publishing background task failed"),
                Err(e) if e.is_panic() => {
                    tracing::error!(error = %e, "publishing background task panicked")
                }
                _ => {}
            }
        }
        served?;
        tracing::info!("publishing gRPC stopped");
        Ok(())
    }
}
