//! The campaigns service: campaigns (channels, target segments, templated content, budget,
//! variants), their lifecycle state machine, their schedule, and launches: the audience
//! snapshot fanned out to publishing's work queue (see [`launch`]).

mod audience;
pub mod config;
mod convert;
mod delivery;
pub mod domain;
mod error;
pub mod events;
mod grpc;
pub mod launch;
mod segments;
mod store;

use std::sync::Arc;

use cos_auth::{AuthLayer, MethodPolicies, ServiceCredential, TokenVerifier};
use cos_db::Db;
use cos_proto::campaigns::v1::campaigns_service_server::CampaignsServiceServer;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::CampaignsConfig;

/// Campaigns' migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");
/// The PostgreSQL schema campaigns owns.
pub const SCHEMA: &str = "campaigns";
/// The gRPC service it hosts.
pub const GRPC_SERVICE: &str = "campaignos.campaigns.v1.CampaignsService";

/// Applies campaigns' migrations and its outbox/inbox tables.
pub async fn migrate(conn: &mut sqlx::PgConnection, app_role: &str) -> anyhow::Result<()> {
    cos_db::migrate_schema(conn, SCHEMA, &MIGRATOR, app_role, &[]).await?;
    cos_events::ensure_tables(conn, SCHEMA, app_role).await?;
    Ok(())
}

/// A built campaigns service.
pub struct Campaigns {
    api: Arc<grpc::CampaignsApi>,
    verifier: TokenVerifier,
    run_workers: bool,
}

/// What launching needs besides the database: the mesh's service credential (audiences,
/// delivery jobs, quotas for the scheduler), billing, and the work queue.
pub struct LaunchDeps {
    pub credential: Option<ServiceCredential>,
    /// `None`: no quota checks (billing not deployed).
    pub entitlements: Option<cos_entitlements::EntitlementClient>,
    pub amqp_url: String,
    pub delivery_queue: String,
    /// Run the scheduler and fan-out runner in this process.
    pub run_workers: bool,
}

fn lazy_channel(url: &str, what: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| anyhow::anyhow!("{what} URL {url:?}: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .connect_lazy())
}

impl Campaigns {
    pub async fn build(
        db: Db,
        config: &CampaignsConfig,
        verifier: TokenVerifier,
        deps: LaunchDeps,
    ) -> anyhow::Result<Self> {
        db.check_owner_bypasses_rls().await?;
        // One HTTP/2 connection to segmentation for segment checks, previews and audiences.
        let segmentation = lazy_channel(&config.segmentation_url, "segmentation")?;
        let segments = segments::Segments::new(segmentation.clone(), config.segmentation_timeout);
        let audience = audience::AudienceSource::new(segmentation, deps.credential.clone());
        let publishing = delivery::Publishing::new(
            lazy_channel(&config.publishing_url, "publishing")?,
            deps.credential.clone(),
            config.publishing_timeout,
        );
        let queue = Arc::new(cos_events::WorkQueuePublisher::new(
            &deps.amqp_url,
            &deps.delivery_queue,
            "cos-campaigns:fan-out",
        )?);
        Ok(Self {
            api: Arc::new(grpc::CampaignsApi {
                db,
                config: config.clone(),
                segments,
                renderer: domain::template::Renderer::new(domain::template::Limits::default()),
                audience,
                publishing,
                entitlements: deps.entitlements,
                queue,
                wake_runner: Arc::new(tokio::sync::Notify::new()),
                replica: format!("campaigns-{}", uuid::Uuid::new_v4().simple()),
            }),
            verifier,
            run_workers: deps.run_workers,
        })
    }

    /// Serves gRPC (campaigns, health, reflection) until `shutdown` fires.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<CampaignsServiceServer<grpc::CampaignsGrpc>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cos_proto::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let policies = MethodPolicies::for_services(&[GRPC_SERVICE]);
        tracing::info!(addr = %listener.local_addr()?, "campaigns gRPC listening");
        let service = CampaignsServiceServer::new(grpc::CampaignsGrpc(self.api.clone()));
        let runner = self
            .run_workers
            .then(|| tokio::spawn(launch::run(self.api.clone(), shutdown.clone())));
        let served = tonic::transport::Server::builder()
            .layer(cos_telemetry::GrpcServerTelemetryLayer::new("campaigns"))
            .layer(AuthLayer::new(self.verifier.clone(), policies))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(std::time::Duration::from_secs(60))),
                shutdown.clone().cancelled_owned(),
            )
            .await;
        shutdown.cancel();
        if let Some(runner) = runner {
            match runner.await {
                Ok(Err(e)) => tracing::error!(error = %e, "campaign runner failed"),
                Err(e) => tracing::error!(error = %e, "campaign runner panicked"),
                Ok(Ok(())) => {}
            }
        }
        self.api.queue.close().await;
        served?;
        tracing::info!("campaigns gRPC stopped");
        Ok(())
    }
}
