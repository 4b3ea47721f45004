//! Prometheus metrics: one global `metrics` recorder per process, rendered by the admin
//! server's `/metrics` route (no built-in HTTP listener).
//!
//! Histograms whose name ends in `_duration_seconds` get request-latency buckets (1 ms to
//! 30 s); other histograms are rendered as summaries.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket upper bounds (seconds) for `*_duration_seconds` histograms.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Name of the gRPC server request counter (`service`, `method`, `code` labels).
pub const GRPC_SERVER_REQUESTS_TOTAL: &str = "cos_grpc_server_requests_total";
/// Name of the gRPC server latency histogram (`service`, `method` labels).
pub const GRPC_SERVER_DURATION_SECONDS: &str = "cos_grpc_server_duration_seconds";

/// How often the recorder's upkeep (histogram/summary maintenance) runs.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the global Prometheus recorder (once per process) and return its handle; later
/// calls return a clone of the same handle.
///
/// If some other `metrics` recorder was installed first, a warning is logged and the returned
/// handle renders only an empty registry.
pub fn install_metrics() -> PrometheusHandle {
    HANDLE.get_or_init(install).clone()
}

fn install() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".to_owned()),
            LATENCY_BUCKETS,
        )
        // Only fails for an empty bucket list, which LATENCY_BUCKETS is not.
        .unwrap_or_else(|_| PrometheusBuilder::new());
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if let Err(err) = metrics::set_global_recorder(recorder) {
        tracing::warn!(error = %err, "a metrics recorder was already installed; Prometheus metrics will be empty");
    }
    describe();

    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("cos-metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "could not start the metrics upkeep thread");
    }
    handle
}

fn describe() {
    metrics::describe_counter!(
        GRPC_SERVER_REQUESTS_TOTAL,
        "gRPC requests handled by this server, by service, method and status code"
    );
    metrics::describe_histogram!(
        GRPC_SERVER_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "gRPC server request latency, until the response (stream) completes"
    );
}
