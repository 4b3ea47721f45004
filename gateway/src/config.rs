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
        cfg
    }
}
