//! Starting services: one (`campaign-os serve <service>`, a Kubernetes Deployment) or the whole
//! mesh in one process (`campaign-os up`, and the end-to-end tests), each service on its own
//! port and talking real gRPC and RabbitMQ even when they share a process.

use std::net::SocketAddr;
use std::time::Duration;

use cos_crypto::KeyRing;
use cos_db::Db;
use cos_events::{OutboxRelay, RelayConfig};
use cos_gateway::Gateway;
use cos_identity::Identity;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Settings;

type Tasks = JoinSet<(&'static str, anyhow::Result<()>)>;

/// Sockets the mesh serves on. Binding happens before start, so callers (tests) can use port 0
/// and learn the real ports.
pub struct MeshListeners {
    pub identity: TcpListener,
    pub gateway: TcpListener,
    pub identity_admin: Option<TcpListener>,
    pub gateway_admin: Option<TcpListener>,
    pub segmentation: TcpListener,
    pub segmentation_admin: Option<TcpListener>,
    pub billing: TcpListener,
    pub billing_admin: Option<TcpListener>,
    pub campaigns: TcpListener,
    pub campaigns_admin: Option<TcpListener>,
    pub publishing: TcpListener,
    pub publishing_admin: Option<TcpListener>,
}

impl MeshListeners {
    /// The configured addresses.
    pub async fn bind(settings: &Settings) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}"))
        };
        Ok(Self {
            identity: bind(
                settings.identity.grpc_addr,
                "identity gRPC, COS_IDENTITY__GRPC_ADDR",
            )
            .await?,
            gateway: bind(
                settings.gateway.http_addr,
                "gateway HTTP, COS_GATEWAY__HTTP_ADDR",
            )
            .await?,
            identity_admin: Some(
                bind(
                    settings.identity.admin_addr,
                    "identity admin, COS_IDENTITY__ADMIN_ADDR",
                )
                .await?,
            ),
            gateway_admin: Some(
                bind(
                    settings.gateway.admin_addr,
                    "gateway admin, COS_GATEWAY__ADMIN_ADDR",
                )
                .await?,
            ),
            segmentation: bind(
                settings.segmentation.grpc_addr,
                "segmentation gRPC, COS_SEGMENTATION__GRPC_ADDR",
            )
            .await?,
            segmentation_admin: Some(
                bind(
                    settings.segmentation.admin_addr,
                    "segmentation admin, COS_SEGMENTATION__ADMIN_ADDR",
                )
                .await?,
            ),
            billing: bind(
                settings.billing.grpc_addr,
                "billing gRPC, COS_BILLING__GRPC_ADDR",
            )
            .await?,
            billing_admin: Some(
                bind(
                    settings.billing.admin_addr,
                    "billing admin, COS_BILLING__ADMIN_ADDR",
                )
                .await?,
            ),
            campaigns: bind(
                settings.campaigns.grpc_addr,
                "campaigns gRPC, COS_CAMPAIGNS__GRPC_ADDR",
            )
            .await?,
            campaigns_admin: Some(
                bind(
                    settings.campaigns.admin_addr,
                    "campaigns admin, COS_CAMPAIGNS__ADMIN_ADDR",
                )
                .await?,
            ),
            publishing: bind(
                settings.publishing.grpc_addr,
                "publishing gRPC, COS_PUBLISHING__GRPC_ADDR",
            )
            .await?,
            publishing_admin: Some(
                bind(
                    settings.publishing.admin_addr,
                    "publishing admin, COS_PUBLISHING__ADMIN_ADDR",
                )
                .await?,
            ),
        })
    }

    /// Random free ports on 127.0.0.1 (tests, benchmarks).
    pub async fn ephemeral() -> anyhow::Result<Self> {
        let any = || TcpListener::bind("127.0.0.1:0");
        Ok(Self {
            identity: any().await?,
            gateway: any().await?,
            identity_admin: Some(any().await?),
            gateway_admin: Some(any().await?),
            segmentation: any().await?,
            segmentation_admin: Some(any().await?),
            billing: any().await?,
            billing_admin: Some(any().await?),
            campaigns: any().await?,
            campaigns_admin: Some(any().await?),
            publishing: any().await?,
            publishing_admin: Some(any().await?),
        })
    }
}

fn spawn_admin(
    tasks: &mut Tasks,
    name: &'static str,
    listener: Option<TcpListener>,
    checks: Vec<std::sync::Arc<dyn cos_telemetry::ReadinessCheck>>,
    shutdown: &CancellationToken,
) {
    if let Some(listener) = listener {
        let server =
            cos_telemetry::AdminServer::new(name, cos_telemetry::install_metrics(), checks);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            (
                name,
                server.serve(listener, shutdown).await.map_err(Into::into),
            )
        });
    }
}

/// Starts identity (gRPC server, outbox relay, admin endpoint) on `tasks`.
pub async fn start_identity(
    settings: &Settings,
    keyring: &KeyRing,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let db = Db::connect(&settings.pool_settings(None))
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL (COS_DATABASE__URL): {e}"))?;
    let identity =
        Identity::build(db.clone(), keyring, &settings.common, &settings.identity).await?;
    let relay = OutboxRelay::new(
        db.pool().clone(),
        RelayConfig::new(cos_identity::SCHEMA, settings.common.amqp.url.clone())
            .with_exchange(settings.common.amqp.exchange.clone()),
    )?;
    let pool = db.pool().clone();
    let checks = vec![cos_telemetry::readiness_check("postgres", move || {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })];
    spawn_admin(tasks, "identity-admin", admin, checks, shutdown);
    let token = shutdown.clone();
    tasks.spawn(async move {
        (
            "identity-outbox-relay",
            relay.run(token).await.map_err(Into::into),
        )
    });
    let token = shutdown.clone();
    tasks.spawn(async move { ("identity", identity.serve(listener, token).await) });
    Ok(())
}

fn postgres_check(pool: sqlx::PgPool) -> std::sync::Arc<dyn cos_telemetry::ReadinessCheck> {
    cos_telemetry::readiness_check("postgres", move || {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
}

/// What a service behind the gateway starts from: its pool and identity's signing keys.
async fn connect(
    settings: &Settings,
    identity_url: &str,
) -> anyhow::Result<(Db, cos_auth::RemoteJwks)> {
    let db = Db::connect(&settings.pool_settings(None))
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL (COS_DATABASE__URL): {e}"))?;
    let jwks = cos_auth::RemoteJwks::new(
        identity_url,
        &settings.common.auth.issuer,
        &settings.common.auth.audience,
    )?;
    jwks.load(Duration::from_secs(5)).await;
    Ok((db, jwks))
}

/// Task names of one service (they appear in logs when a task ends).
struct TaskNames {
    grpc: &'static str,
    admin: &'static str,
    relay: &'static str,
}

/// Runs a built service on `tasks`: its outbox relay for `schema`, the admin endpoint, the JWKS
/// refresher (stopped when the server stops) and the gRPC server `serve` builds.
#[allow(clippy::too_many_arguments)]
fn spawn_service<F>(
    tasks: &mut Tasks,
    names: TaskNames,
    settings: &Settings,
    schema: &str,
    db: &Db,
    jwks: &cos_auth::RemoteJwks,
    admin: Option<TcpListener>,
    shutdown: &CancellationToken,
    serve: impl FnOnce(CancellationToken) -> F,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let relay = OutboxRelay::new(
        db.pool().clone(),
        RelayConfig::new(schema, settings.common.amqp.url.clone())
            .with_exchange(settings.common.amqp.exchange.clone()),
    )?;
    spawn_admin(
        tasks,
        names.admin,
        admin,
        vec![postgres_check(db.pool().clone())],
        shutdown,
    );
    let refresher = jwks.spawn_refresher(settings.common.auth.jwks_refresh, shutdown.clone());
    let token = shutdown.clone();
    let relay_name = names.relay;
    tasks.spawn(async move { (relay_name, relay.run(token).await.map_err(Into::into)) });
    let server = serve(shutdown.clone());
    let grpc_name = names.grpc;
    tasks.spawn(async move {
        let result = server.await;
        refresher.abort();
        (grpc_name, result)
    });
    Ok(())
}

/// Starts billing (gRPC server, outbox relay, JWKS refresher, admin endpoint) on `tasks`.
pub async fn start_billing(
    settings: &Settings,
    keyring: &KeyRing,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let cfg = &settings.billing;
    let (db, jwks) = connect(settings, &cfg.identity_url).await?;
    let service = cos_billing::Billing::build(
        db.clone(),
        keyring.clone(),
        &settings.common,
        cfg,
        jwks.verifier(),
    )
    .await?;
    let names = TaskNames {
        grpc: "billing",
        admin: "billing-admin",
        relay: "billing-outbox-relay",
    };
    spawn_service(
        tasks,
        names,
        settings,
        cos_billing::SCHEMA,
        &db,
        &jwks,
        admin,
        shutdown,
        |token| service.serve(listener, token),
    )
}

/// Starts segmentation (gRPC server with its workers, outbox relay, JWKS refresher, admin
/// endpoint) on `tasks`.
pub async fn start_segmentation(
    settings: &Settings,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let cfg = &settings.segmentation;
    let (db, jwks) = connect(settings, &cfg.identity_url).await?;
    let entitlements = cos_entitlements::EntitlementClient::new(
        &cfg.billing_url,
        &settings.common.redis.url,
        &settings.common.redis.key_prefix,
        Duration::from_secs(30),
    )?
    .with_service_credential(cos_billing::service_credential(
        &settings.common,
        "segmentation",
    )?);
    let service =
        cos_segmentation::Segmentation::build(db.clone(), cfg, jwks.verifier(), entitlements)
            .await?
            .with_service_credential(cos_billing::service_credential(
                &settings.common,
                "segmentation",
            )?);
    let names = TaskNames {
        grpc: "segmentation",
        admin: "segmentation-admin",
        relay: "segmentation-outbox-relay",
    };
    spawn_service(
        tasks,
        names,
        settings,
        cos_segmentation::SCHEMA,
        &db,
        &jwks,
        admin,
        shutdown,
        |token| service.serve(listener, token),
    )
}

/// Starts campaigns (gRPC server, outbox relay, JWKS refresher, admin endpoint) on `tasks`.
pub async fn start_campaigns(
    settings: &Settings,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let cfg = &settings.campaigns;
    let (db, jwks) = connect(settings, &cfg.identity_url).await?;
    let credential = cos_billing::service_credential(&settings.common, "campaigns")?;
    let entitlements = if cfg.billing_url.is_empty() {
        None
    } else {
        Some(
            cos_entitlements::EntitlementClient::new(
                &cfg.billing_url,
                &settings.common.redis.url,
                &settings.common.redis.key_prefix,
                Duration::from_secs(30),
            )?
            .with_service_credential(credential.clone()),
        )
    };
    let deps = cos_campaigns::LaunchDeps {
        credential,
        entitlements,
        amqp_url: settings.common.amqp.url.clone(),
        delivery_queue: settings.common.amqp.delivery_queue.clone(),
        run_workers: true,
    };
    let service = cos_campaigns::Campaigns::build(db.clone(), cfg, jwks.verifier(), deps).await?;
    let names = TaskNames {
        grpc: "campaigns",
        admin: "campaigns-admin",
        relay: "campaigns-outbox-relay",
    };
    spawn_service(
        tasks,
        names,
        settings,
        cos_campaigns::SCHEMA,
        &db,
        &jwks,
        admin,
        shutdown,
        |token| service.serve(listener, token),
    )
}

/// Starts publishing (gRPC server, delivery workers, maintenance loop, outbox relay, JWKS
/// refresher, admin endpoint) on `tasks`.
pub async fn start_publishing(
    settings: &Settings,
    keyring: &KeyRing,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let cfg = &settings.publishing;
    let (db, jwks) = connect(settings, &cfg.identity_url).await?;
    let service = cos_publishing::Publishing::build(
        db.clone(),
        cfg,
        jwks.verifier(),
        keyring.clone(),
        settings.common.auth.service_secret.as_deref(),
        &settings.common.amqp.url,
        &settings.common.amqp.delivery_queue,
    )
    .await?;
    let names = TaskNames {
        grpc: "publishing",
        admin: "publishing-admin",
        relay: "publishing-outbox-relay",
    };
    spawn_service(
        tasks,
        names,
        settings,
        cos_publishing::SCHEMA,
        &db,
        &jwks,
        admin,
        shutdown,
        |token| service.serve(listener, token),
    )
}

/// Starts the gateway (HTTP server, JWKS refresher, admin endpoint) on `tasks`.
pub async fn start_gateway(
    settings: &Settings,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let gateway = Gateway::build(&settings.common, settings.gateway.clone()).await?;
    // Wait (briefly) for identity's keys so the first requests don't bounce; the refresher keeps
    // trying in the background if identity is slower than this.
    for attempt in 0..50 {
        match gateway.refresh_jwks().await {
            Ok(_) => break,
            Err(e) if attempt == 49 => {
                tracing::warn!(error = %e, "identity JWKS not available yet; continuing")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    spawn_admin(
        tasks,
        "gateway-admin",
        admin,
        gateway.readiness_checks(),
        shutdown,
    );
    let refresher =
        gateway.spawn_jwks_refresher(settings.common.auth.jwks_refresh, shutdown.clone());
    let token = shutdown.clone();
    tasks.spawn(async move {
        let result = gateway.serve(listener, token).await;
        refresher.abort();
        ("gateway", result)
    });
    Ok(())
}

/// The whole mesh in this process.
pub struct Mesh {
    pub gateway_addr: SocketAddr,
    pub identity_addr: SocketAddr,
    pub segmentation_addr: SocketAddr,
    pub billing_addr: SocketAddr,
    pub campaigns_addr: SocketAddr,
    pub publishing_addr: SocketAddr,
    pub gateway_admin_addr: Option<SocketAddr>,
    pub identity_admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: Tasks,
}

impl Mesh {
    /// Starts identity and the gateway; the gateway reaches identity over gRPC on its real port.
    pub async fn start(
        mut settings: Settings,
        keyring: KeyRing,
        listeners: MeshListeners,
    ) -> anyhow::Result<Self> {
        // One process-wide TLS provider (aws-lc-rs, as sqlx and the Stripe client use): HTTP
        // clients in this process then never have to guess.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        // Background jobs call billing's internal RPCs with the mesh service credential. In one
        // process every service shares it, so outside production a missing one is generated.
        if settings.common.auth.service_secret.is_none()
            && settings.common.environment != cos_config::Environment::Production
        {
            settings.common.auth.service_secret = Some(cos_auth::random_token(32));
        }
        let identity_addr = listeners.identity.local_addr()?;
        let gateway_addr = listeners.gateway.local_addr()?;
        let segmentation_addr = listeners.segmentation.local_addr()?;
        let billing_addr = listeners.billing.local_addr()?;
        let campaigns_addr = listeners.campaigns.local_addr()?;
        let publishing_addr = listeners.publishing.local_addr()?;
        let identity_admin_addr = listeners
            .identity_admin
            .as_ref()
            .and_then(|l| l.local_addr().ok());
        let gateway_admin_addr = listeners
            .gateway_admin
            .as_ref()
            .and_then(|l| l.local_addr().ok());
        // Each service reaches the others on the ports actually bound.
        let url = |addr: SocketAddr| {
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                addr.ip().to_string()
            };
            format!("http://{host}:{}", addr.port())
        };
        settings
            .gateway
            .upstreams
            .insert(cos_identity::GRPC_SERVICE.to_owned(), url(identity_addr));
        settings.gateway.upstreams.insert(
            cos_segmentation::GRPC_SERVICE.to_owned(),
            url(segmentation_addr),
        );
        settings
            .gateway
            .upstreams
            .insert(cos_billing::GRPC_SERVICE.to_owned(), url(billing_addr));
        settings
            .gateway
            .upstreams
            .insert(cos_campaigns::GRPC_SERVICE.to_owned(), url(campaigns_addr));
        settings.segmentation.identity_url = url(identity_addr);
        settings.campaigns.identity_url = url(identity_addr);
        settings.campaigns.segmentation_url = url(segmentation_addr);
        settings.campaigns.billing_url = url(billing_addr);
        settings.campaigns.publishing_url = url(publishing_addr);
        settings.publishing.identity_url = url(identity_addr);
        settings.publishing.segmentation_url = url(segmentation_addr);
        // Unsubscribe links point at this gateway unless a public URL was configured.
        if settings.publishing.public_url == cos_publishing::config::DEFAULT_PUBLIC_URL {
            settings.publishing.public_url = url(gateway_addr);
        }
        settings.gateway.upstreams.insert(
            cos_publishing::GRPC_SERVICE.to_owned(),
            url(publishing_addr),
        );
        settings.segmentation.billing_url = url(billing_addr);
        settings.identity.billing_url = Some(url(billing_addr));
        settings.billing.identity_url = url(identity_addr);
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let started = async {
            start_identity(
                &settings,
                &keyring,
                listeners.identity,
                listeners.identity_admin,
                &shutdown,
                &mut tasks,
            )
            .await?;
            start_billing(
                &settings,
                &keyring,
                listeners.billing,
                listeners.billing_admin,
                &shutdown,
                &mut tasks,
            )
            .await?;
            start_segmentation(
                &settings,
                listeners.segmentation,
                listeners.segmentation_admin,
                &shutdown,
                &mut tasks,
            )
            .await?;
            start_publishing(
                &settings,
                &keyring,
                listeners.publishing,
                listeners.publishing_admin,
                &shutdown,
                &mut tasks,
            )
            .await?;
            start_campaigns(
                &settings,
                listeners.campaigns,
                listeners.campaigns_admin,
                &shutdown,
                &mut tasks,
            )
            .await?;
            start_gateway(
                &settings,
                listeners.gateway,
                listeners.gateway_admin,
                &shutdown,
                &mut tasks,
            )
            .await
        }
        .await;
        if let Err(e) = started {
            shutdown.cancel();
            while tasks.join_next().await.is_some() {}
            return Err(e);
        }
        Ok(Self {
            gateway_addr,
            identity_addr,
            segmentation_addr,
            billing_addr,
            campaigns_addr,
            publishing_addr,
            gateway_admin_addr,
            identity_admin_addr,
            shutdown,
            tasks,
        })
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway_addr)
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until `signal` resolves or a component fails, then shuts everything down gracefully.
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::select! {
            _ = signal => tracing::info!("shutdown requested"),
            Some(done) = self.tasks.join_next() => {
                match done {
                    Ok((name, Ok(()))) => tracing::warn!(component = name, "component stopped unexpectedly"),
                    Ok((name, Err(e))) => tracing::error!(component = name, error = %e, "component failed"),
                    Err(e) => tracing::error!(error = %e, "component panicked"),
                }
            }
        }
        self.stop().await
    }

    /// Graceful stop: servers stop accepting, in-flight requests finish, the relay finishes its
    /// batch; anything still running after 30 s is abandoned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let drain = async {
            let mut first_error = None;
            while let Some(done) = self.tasks.join_next().await {
                match done {
                    Ok((_, Ok(()))) => {}
                    Ok((name, Err(e))) => {
                        tracing::error!(component = name, error = %e, "component failed during shutdown");
                        first_error.get_or_insert(e);
                    }
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => {
                        first_error.get_or_insert(anyhow::anyhow!("component panicked: {e}"));
                    }
                }
            }
            first_error
        };
        match tokio::time::timeout(Duration::from_secs(30), drain).await {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(e),
            Err(_) => {
                self.tasks.abort_all();
                anyhow::bail!("shutdown did not finish within 30 s")
            }
        }
    }
}
