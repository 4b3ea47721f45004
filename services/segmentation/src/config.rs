//! Segmentation's own settings (the shared ones are in `cos_config::CommonConfig`).

use std::net::SocketAddr;
use std::time::Duration;

use cos_config::Reader;

#[derive(Debug, Clone)]
pub struct SegmentationConfig {
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where /healthz, /readyz and /metrics listen.
    pub admin_addr: SocketAddr,
    /// Identity's gRPC endpoint (JWKS for verifying access tokens).
    pub identity_url: String,
    /// Billing's gRPC endpoint (plan entitlements: the contact limit, read-only tenants).
    pub billing_url: String,
    /// Largest CSV accepted for import.
    pub import_max_bytes: usize,
    /// How often idle workers look for work (imports, refreshes, changed contacts); they are
    /// also woken by NOTIFY, so this is only the fallback.
    pub worker_poll: Duration,
    /// Import jobs whose worker has been silent this long are taken over by another replica.
    pub import_stale_after: Duration,
    /// Changed contacts re-evaluated against dynamic segments per batch.
    pub dirty_batch: i64,
}

impl SegmentationConfig {
    pub fn read(r: &mut Reader<'_>) -> Self {
        let cfg = Self {
            grpc_addr: r.get(
                "segmentation.grpc_addr",
                SocketAddr::from(([127, 0, 0, 1], 50053)),
            ),
            admin_addr: r.get(
                "segmentation.admin_addr",
                SocketAddr::from(([127, 0, 0, 1], 9103)),
            ),
            identity_url: r.get(
                "segmentation.identity_url",
                "http://127.0.0.1:50051".to_owned(),
            ),
            billing_url: r.get(
                "segmentation.billing_url",
                "http://127.0.0.1:50052".to_owned(),
            ),
            import_max_bytes: r.get("segmentation.import_max_bytes", 64 * 1024 * 1024),
            worker_poll: Duration::from_millis(r.get("segmentation.worker_poll_ms", 1000)),
            import_stale_after: r.seconds("segmentation.import_stale_after_secs", 120),
            dirty_batch: r.get("segmentation.dirty_batch", 500),
        };
        if cfg.import_max_bytes < 1024 || cfg.import_max_bytes > 512 * 1024 * 1024 {
            r.invalid(
                "segmentation.import_max_bytes",
                "must be between 1 KiB and 512 MiB",
            );
        }
        if !(1..=10_000).contains(&cfg.dirty_batch) {
            r.invalid("segmentation.dirty_batch", "must be between 1 and 10000");
        }
        if cfg.import_stale_after < Duration::from_secs(30) {
            r.invalid(
                "segmentation.import_stale_after_secs",
                "must be at least 30 (a batch must finish well within it)",
            );
        }
        if cfg.worker_poll < Duration::from_millis(10) {
            r.invalid("segmentation.worker_poll_ms", "must be at least 10");
        }
        cfg
    }
}
