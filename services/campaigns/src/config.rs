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
    /// Billing's gRPC endpoint (launch takes the campaign and message quotas); empty = no quota
    /// checks (development without billing).
    pub billing_url: String,
    /// Publishing's gRPC endpoint (delivery jobs, test sends).
    pub publishing_url: String,
    /// Deadline of each call to publishing.
    pub publishing_timeout: Duration,
    /// Recipients per delivery batch on the work queue.
    pub fanout_batch_size: usize,
    /// Fan-outs this replica runs at once.
    pub fanout_concurrency: usize,
    /// How often the scheduler/runner looks for due campaigns and finished runs.
    pub runner_interval: Duration,
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
            billing_url: r.get("campaigns.billing_url", "http://127.0.0.1:50052".to_owned()),
            publishing_url: r.get(
                "campaigns.publishing_url",
                "http://127.0.0.1:50055".to_owned(),
            ),
            publishing_timeout: Duration::from_millis(
                r.get("campaigns.publishing_timeout_ms", 10_000),
            ),
            fanout_batch_size: r.get("campaigns.fanout_batch_size", 500),
            fanout_concurrency: r.get("campaigns.fanout_concurrency", 2),
            runner_interval: Duration::from_millis(r.get("campaigns.runner_interval_ms", 1000)),
        };
        if !(1..=5000).contains(&cfg.fanout_batch_size) {
            r.invalid("campaigns.fanout_batch_size", "must be between 1 and 5000");
        }
        if !(1..=32).contains(&cfg.fanout_concurrency) {
            r.invalid("campaigns.fanout_concurrency", "must be between 1 and 32");
        }
        if cfg.runner_interval < Duration::from_millis(50)
            || cfg.runner_interval > Duration::from_secs(60)
        {
            r.invalid(
                "campaigns.runner_interval_ms",
                "must be between 50 and 60000",
            );
        }
        if cfg.publishing_timeout < Duration::from_millis(100) {
            r.invalid("campaigns.publishing_timeout_ms", "must be at least 100");
        }
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
