//! The campaigns service: campaigns (channels, target segments, templated content, budget,
//! variants), their lifecycle state machine and their schedule.
//!
//! Launch, pause and resume (the fan-out of a campaign's audience to publishing) are not built
//! yet; the state machine already knows them.

pub mod config;
mod convert;
pub mod domain;
mod error;
pub mod events;
mod grpc;
mod segments;
mod store;

use std::sync::Arc;

use cos_auth::{AuthLayer, MethodPolicies, TokenVerifier};
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
}

impl Campaigns {
    pub async fn build(
        db: Db,
        config: &CampaignsConfig,
        verifier: TokenVerifier,
    ) -> anyhow::Result<Self> {
        db.check_owner_bypasses_rls().await?;
        let segments =
            segments::Segments::new(&config.segmentation_url, config.segmentation_timeout)?;
        Ok(Self {
            api: Arc::new(grpc::CampaignsApi {
                db,
                config: config.clone(),
                segments,
                renderer: domain::template::Renderer::new(domain::template::Limits::default()),
            }),
            verifier,
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
        served?;
        tracing::info!("campaigns gRPC stopped");
        Ok(())
    }
}
