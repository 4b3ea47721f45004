//! Campaigns' own settings (the shared ones are in `cos_config::CommonConfig`).

use std::net::SocketAddr;
use std::time::Duration;

use cos_config::Reader;

#[derive(Debug, Clone)]
pub struct CampaignsConfig {
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where /healthz, /readyz and /metrics listen.
    pub admin_addr: SocketAddr,
    /// Identity's gRPC endpoint (JWKS for verifying access tokens).
    pub identity_url: String,
    /// Segmentation's gRPC endpoint (target and exclusion segments must exist).
    pub segmentation_url: String,
    /// How far ahead of now a schedule must be: a campaign scheduled sooner is refused as "in
    /// the past" (the scheduler needs time to claim it).
    pub schedule_min_lead: Duration,
    /// Deadline of each call to segmentation.
    pub segmentation_timeout: Duration,
}

impl CampaignsConfig {
    pub fn read(r: &mut Reader<'_>) -> Self {
        let cfg = Self {
            grpc_addr: r.get(
                "campaigns.grpc_addr",
                SocketAddr::from(([127, 0, 0, 1], 50054)),
            ),
            admin_addr: r.get(
                "campaigns.admin_addr",
                SocketAddr::from(([127, 0, 0, 1], 9104)),
            ),
            identity_url: r.get(
                "campaigns.identity_url",
                "http://127.0.0.1:50051".to_owned(),
            ),
            segmentation_url: r.get(
                "campaigns.segmentation_url",
                "http://127.0.0.1:50053".to_owned(),
            ),
            schedule_min_lead: r.seconds("campaigns.schedule_min_lead_secs", 1),
            segmentation_timeout: Duration::from_millis(
                r.get("campaigns.segmentation_timeout_ms", 5000),
            ),
        };
        if cfg.schedule_min_lead > Duration::from_secs(3600) {
            r.invalid(
                "campaigns.schedule_min_lead_secs",
                "must be at most 3600 (one hour)",
            );
        }
        if cfg.segmentation_timeout < Duration::from_millis(100) {
            r.invalid("campaigns.segmentation_timeout_ms", "must be at least 100");
        }
        cfg
    }
}
