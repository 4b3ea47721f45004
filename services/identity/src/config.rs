//! Identity's own settings (the shared ones are in `cos_config::CommonConfig`).

use std::net::SocketAddr;

use cos_config::Reader;

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where /healthz, /readyz and /metrics listen.
    pub admin_addr: SocketAddr,
    /// Lifetime of the access tokens minted for API keys (short: revocation takes effect when
    /// the gateway next asks).
    pub api_key_token_ttl_secs: u64,
    /// Billing's gRPC endpoint (`http://host:port`), for plan limits on seats and API keys.
    /// Unset: those limits are not enforced (a warning is logged at start).
    pub billing_url: Option<String>,
    /// How long entitlements stay cached in Redis (billing drops them on every change).
    pub entitlements_cache_ttl_secs: u64,
}

impl IdentityConfig {
    pub fn read(r: &mut Reader<'_>) -> Self {
        let cfg = Self {
            grpc_addr: r.get(
                "identity.grpc_addr",
                SocketAddr::from(([127, 0, 0, 1], 50051)),
            ),
            admin_addr: r.get(
                "identity.admin_addr",
                SocketAddr::from(([127, 0, 0, 1], 9101)),
            ),
            api_key_token_ttl_secs: r.get("identity.api_key_token_ttl_secs", 300),
            billing_url: r.optional("identity.billing_url"),
            entitlements_cache_ttl_secs: r.get("identity.entitlements_cache_ttl_secs", 30),
        };
        if !(1..=600).contains(&cfg.entitlements_cache_ttl_secs) {
            r.invalid(
                "identity.entitlements_cache_ttl_secs",
                "must be between 1 and 600",
            );
        }
        if !(10..=3600).contains(&cfg.api_key_token_ttl_secs) {
            r.invalid(
                "identity.api_key_token_ttl_secs",
                "must be between 10 and 3600",
            );
        }
        cfg
    }
}
