//! Gateway settings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cos_config::Reader;

#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Requests per minute from one client IP (all routes).
    pub per_ip_per_minute: u32,
    /// Requests per minute for one tenant (authenticated routes).
    pub per_tenant_per_minute: u32,
    /// Requests per minute from one IP to the `auth` class (login, register, refresh).
    pub auth_per_ip_per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// gRPC endpoint of each service, by proto service full name.
    pub upstreams: BTreeMap<String, String>,
    pub body_limit_bytes: usize,
    /// Body limit of CSV uploads (`POST /v1/contact-imports`); JSON bodies keep `body_limit_bytes`.
    pub import_max_bytes: usize,
    /// Allowed browser origins; `*` allows any; empty disables CORS.
    pub cors_origins: Vec<String>,
    pub rate_limit: RateLimits,
    /// Use the first `X-Forwarded-For` hop as the client IP (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    pub upstream_timeout: Duration,
    /// Base URL clients reach the gateway at (for links and the OpenAPI `servers` entry).
    pub public_url: Option<String>,
}

impl GatewayConfig {
    pub fn read(r: &mut Reader<'_>) -> Self {
        let identity_url: String =
            r.get("gateway.identity_url", "http://127.0.0.1:50051".to_owned());
        let mut upstreams = BTreeMap::new();
        upstreams.insert(
            "campaignos.identity.v1.IdentityService".to_owned(),
            identity_url,
        );
        upstreams.insert(
            "campaignos.segmentation.v1.SegmentationService".to_owned(),
            r.get(
                "gateway.segmentation_url",
                "http://127.0.0.1:50053".to_owned(),
            ),
        );
        upstreams.insert(
            "campaignos.billing.v1.BillingService".to_owned(),
            r.get("gateway.billing_url", "http://127.0.0.1:50052".to_owned()),
        );
        upstreams.insert(
            "campaignos.campaigns.v1.CampaignsService".to_owned(),
            r.get("gateway.campaigns_url", "http://127.0.0.1:50054".to_owned()),
        );
        upstreams.insert(
            "campaignos.publishing.v1.PublishingService".to_owned(),
            r.get(
                "gateway.publishing_url",
                "http://127.0.0.1:50055".to_owned(),
            ),
        );
        let cfg = Self {
            http_addr: r.get(
                "gateway.http_addr",
                SocketAddr::from(([127, 0, 0, 1], 8080)),
            ),
            admin_addr: r.get(
                "gateway.admin_addr",
                SocketAddr::from(([127, 0, 0, 1], 9100)),
            ),
            upstreams,
            body_limit_bytes: r.get("gateway.body_limit_bytes", 1024 * 1024),
            import_max_bytes: r.get("gateway.import_max_bytes", 64 * 1024 * 1024),
            cors_origins: r.list("gateway.cors_origins", &[]),
            rate_limit: RateLimits {
                per_ip_per_minute: r.get("gateway.rate_limit.per_ip_per_minute", 1200),
                per_tenant_per_minute: r.get("gateway.rate_limit.per_tenant_per_minute", 6000),
                auth_per_ip_per_minute: r.get("gateway.rate_limit.auth_per_ip_per_minute", 20),
            },
            trust_forwarded_for: r.get("gateway.trust_forwarded_for", false),
            upstream_timeout: r.seconds("gateway.upstream_timeout_secs", 30),
            public_url: r.optional("gateway.public_url"),
        };
        if cfg.body_limit_bytes < 1024 {
            r.invalid("gateway.body_limit_bytes", "must be at least 1024");
        }
        // Bounded so the gRPC message carrying the file stays far below protobuf's 2 GiB limit.
        if !(1024..=1024 * 1024 * 1024).contains(&cfg.import_max_bytes) {
            r.invalid(
                "gateway.import_max_bytes",
                "must be between 1024 and 1073741824",
            );
        }
        cfg
    }
}
