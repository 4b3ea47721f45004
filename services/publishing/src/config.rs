//! Publishing's own settings (the shared ones are in `cos_config::CommonConfig`).

use std::net::SocketAddr;
use std::time::Duration;

use cos_config::Reader;

/// Where unsubscribe links point unless configured (the gateway of `campaign-os up`).
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Clone)]
pub struct PublishingConfig {
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where /healthz, /readyz and /metrics listen.
    pub admin_addr: SocketAddr,
    /// Identity's gRPC endpoint (JWKS for verifying access tokens).
    pub identity_url: String,
    /// Segmentation's gRPC endpoint (unsubscribe flips consent there).
    pub segmentation_url: String,
    /// Public base URL of the gateway, for unsubscribe links in emails
    /// (`<public_url>/u/<token>`).
    pub public_url: String,
    /// Delivery batches processed at once by this replica (0 = no consumer: a replica that only
    /// serves the API).
    pub workers: u16,
    /// Recipients of one batch sent at once (SMTP and webhook connections).
    pub send_concurrency: usize,
    /// Messages per second per connection when the connection does not set its own rate.
    pub default_rate_per_second: u32,
    /// Attempts of a transiently failing delivery before it is marked failed.
    pub max_attempts: u32,
    /// First retry delay (doubles per attempt, full jitter).
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
    /// A `pending` delivery older than this is considered abandoned by a crashed worker and is
    /// attempted again when its batch is redelivered.
    pub claim_lease: Duration,
    /// Timeout of one SMTP or webhook send.
    pub send_timeout: Duration,
    /// Webhooks may target loopback/private addresses (development and tests only).
    pub allow_private_webhook_targets: bool,
}

impl PublishingConfig {
    pub fn read(r: &mut Reader<'_>) -> Self {
        let cfg = Self {
            grpc_addr: r.get(
                "publishing.grpc_addr",
                SocketAddr::from(([127, 0, 0, 1], 50055)),
            ),
            admin_addr: r.get(
                "publishing.admin_addr",
                SocketAddr::from(([127, 0, 0, 1], 9105)),
            ),
            identity_url: r.get(
                "publishing.identity_url",
                "http://127.0.0.1:50051".to_owned(),
            ),
            segmentation_url: r.get(
                "publishing.segmentation_url",
                "http://127.0.0.1:50053".to_owned(),
            ),
            public_url: r.get("publishing.public_url", DEFAULT_PUBLIC_URL.to_owned()),
            workers: r.get("publishing.workers", 8),
            send_concurrency: r.get("publishing.send_concurrency", 16),
            default_rate_per_second: r.get("publishing.default_rate_per_second", 100),
            max_attempts: r.get("publishing.max_attempts", 6),
            retry_base: Duration::from_millis(r.get("publishing.retry_base_ms", 1000)),
            retry_cap: r.seconds("publishing.retry_cap_secs", 900),
            claim_lease: r.seconds("publishing.claim_lease_secs", 120),
            send_timeout: r.seconds("publishing.send_timeout_secs", 30),
            allow_private_webhook_targets: r.get("publishing.allow_private_webhook_targets", false),
        };
        if !(cfg.public_url.starts_with("https://") || cfg.public_url.starts_with("http://")) {
            r.invalid("publishing.public_url", "must be an http(s) URL");
        }
        if cfg.workers > 64 {
            r.invalid("publishing.workers", "must be at most 64");
        }
        if !(1..=256).contains(&cfg.send_concurrency) {
            r.invalid("publishing.send_concurrency", "must be between 1 and 256");
        }
        if cfg.default_rate_per_second == 0 || cfg.default_rate_per_second > 10_000 {
            r.invalid(
                "publishing.default_rate_per_second",
                "must be between 1 and 10000",
            );
        }
        if !(1..=20).contains(&cfg.max_attempts) {
            r.invalid("publishing.max_attempts", "must be between 1 and 20");
        }
        if cfg.retry_base < Duration::from_millis(10) || cfg.retry_base > cfg.retry_cap {
            r.invalid(
                "publishing.retry_base_ms",
                "must be at least 10 and not above retry_cap_secs",
            );
        }
        if cfg.claim_lease < Duration::from_secs(5) {
            r.invalid("publishing.claim_lease_secs", "must be at least 5");
        }
        cfg
    }
}
