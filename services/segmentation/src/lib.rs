//! The segmentation service: the audience. Contacts with typed attributes, tags and consent; CSV
//! import jobs; dynamic and static segments whose membership is materialised and streamed to
//! campaign fan-out.

pub mod config;
mod convert;
pub mod domain;
mod error;
pub mod events;
mod export;
mod grpc;
mod import;
mod ops;
mod plan;
mod segments_ops;
mod store;
mod workers;

use std::sync::Arc;

use cos_auth::{AuthLayer, MethodPolicies, TokenVerifier};
use cos_db::Db;
use cos_entitlements::EntitlementClient;
use cos_proto::segmentation::v1::segmentation_service_server::SegmentationServiceServer;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::SegmentationConfig;

/// Segmentation's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");
/// The PostgreSQL schema segmentation owns.
pub const SCHEMA: &str = "segmentation";
/// The gRPC service it hosts.
pub const GRPC_SERVICE: &str = "campaignos.segmentation.v1.SegmentationService";

/// Applies segmentation's migrations and its outbox/inbox tables.
pub async fn migrate(conn: &mut sqlx::PgConnection, app_role: &str) -> anyhow::Result<()> {
    cos_db::migrate_schema(conn, SCHEMA, &MIGRATOR, app_role, &[]).await?;
    cos_events::ensure_tables(conn, SCHEMA, app_role).await?;
    Ok(())
}

/// A built segmentation service.
pub struct Segmentation {
    api: Arc<grpc::SegmentationApi>,
    verifier: TokenVerifier,
    service_credential: Option<cos_auth::ServiceCredential>,
}

impl Segmentation {
    pub async fn build(
        db: Db,
        config: &SegmentationConfig,
        verifier: TokenVerifier,
        entitlements: EntitlementClient,
    ) -> anyhow::Result<Self> {
        db.check_owner_bypasses_rls().await?;
        Ok(Self {
            api: Arc::new(grpc::SegmentationApi {
                db,
                config: config.clone(),
                plan: plan::Plan::new(entitlements),
            }),
            verifier,
            service_credential: None,
        })
    }

    /// Accepts the mesh's service credential on internal RPCs (campaigns' audience stream,
    /// publishing's unsubscribe).
    pub fn with_service_credential(
        mut self,
        credential: Option<cos_auth::ServiceCredential>,
    ) -> Self {
        self.service_credential = credential;
        self
    }

    /// Serves gRPC (segmentation, health, reflection) and runs the background workers until
    /// `shutdown` fires.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<SegmentationServiceServer<grpc::SegmentationGrpc>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cos_proto::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let policies = MethodPolicies::for_services(&[GRPC_SERVICE]);
        let mut workers = tokio::task::JoinSet::new();
        workers.spawn(workers::imports(self.api.clone(), shutdown.clone()));
        workers.spawn(workers::membership(self.api.clone(), shutdown.clone()));
        workers.spawn(workers::refresh(self.api.clone(), shutdown.clone()));
        workers.spawn(workers::usage(self.api.clone(), shutdown.clone()));
        tracing::info!(addr = %listener.local_addr()?, "segmentation gRPC listening");
        // CSV uploads arrive in one message: room for the largest file plus the envelope.
        let max_message = self.api.config.import_max_bytes + 1024 * 1024;
        let service = SegmentationServiceServer::new(grpc::SegmentationGrpc(self.api.clone()))
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        let served = tonic::transport::Server::builder()
            .layer(cos_telemetry::GrpcServerTelemetryLayer::new("segmentation"))
            .layer(
                AuthLayer::new(self.verifier.clone(), policies)
                    .with_service_credential(self.service_credential.clone()),
            )
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
        while let Some(done) = workers.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!(error = %e, "segmentation worker failed");
            }
        }
        served?;
        tracing::info!("segmentation gRPC stopped");
        Ok(())
    }
}
