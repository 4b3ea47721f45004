//! Campaign OS telemetry (DESIGN.md §9): structured JSON logs with secret redaction and trace /
//! tenant / request ids, OpenTelemetry traces over OTLP, W3C trace-context propagation across
//! gRPC, HTTP and message envelopes, Prometheus metrics, the admin endpoint (`/healthz`,
//! `/readyz`, `/metrics`) and gRPC server middleware.
//!
//! Typical process start-up:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use cos_telemetry::{AdminServer, TelemetryConfig};
//! let mut telemetry = cos_telemetry::init(&TelemetryConfig::new("identity"))?;
//! let metrics = cos_telemetry::install_metrics();
//! let admin = AdminServer::new("identity", metrics, vec![]);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:9090").await?;
//! tokio::spawn(admin.serve(listener, shutdown.clone()));
//! // tonic::transport::Server::builder()
//! //     .layer(cos_telemetry::GrpcServerTelemetryLayer::new("identity")) ...
//! shutdown.cancel();
//! telemetry.shutdown();
//! # Ok(()) }
//! ```

mod admin;
mod capture;
mod config;
mod grpc;
mod init;
mod logging;
mod prom;
mod propagation;
mod redact;

pub use admin::{AdminServer, DEFAULT_CHECK_TIMEOUT, ReadinessCheck, readiness_check};
pub use capture::CapturedLogs;
pub use config::{LogFormat, TelemetryConfig, UnknownLogFormat};
pub use grpc::{
    GrpcResponseBody, GrpcResponseFuture, GrpcServerTelemetry, GrpcServerTelemetryLayer,
    REQUEST_ID_HEADER, RequestId, traced_request,
};
pub use init::{TelemetryGuard, build_dispatch, init, init_with_writer};
pub use logging::{LogLayer, json_layer};
pub use prom::{
    GRPC_SERVER_DURATION_SECONDS, GRPC_SERVER_REQUESTS_TOTAL, LATENCY_BUCKETS, install_metrics,
};
pub use propagation::{
    TRACEPARENT, context_from_traceparent, current_context, current_traceparent, extract_context,
    extract_http_context, inject_context, inject_context_from, inject_http_context,
    inject_http_context_from, propagator, traceparent_of,
};
pub use redact::{REDACTED, is_sensitive_field, redact};

/// Re-exported so callers need not depend on the exporter crate to name the handle type.
pub use metrics_exporter_prometheus::PrometheusHandle;
/// Re-exported so callers can attach an extracted context: `span.set_parent(cx)`.
pub use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `request_id` recorded on the current span or one of its parents (as the gRPC layer
/// does), if the log layer of this crate is installed.
pub fn current_request_id() -> Option<String> {
    current_span_field("request_id")
}

/// The value (as a string) of field `name` recorded on the current span or its nearest
/// parent that has it. Sensitive fields read back as `[REDACTED]`.
pub fn current_span_field(name: &str) -> Option<String> {
    use tracing_subscriber::registry::LookupSpan as _;

    let mut found = None;
    tracing::Span::current().with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() else {
            return;
        };
        let Some(span) = registry.span(id) else {
            return;
        };
        for span in span.scope() {
            if let Some(fields) = span.extensions().get::<logging::SpanFields>()
                && let Some(value) = fields.0.get(name)
            {
                found = Some(match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                return;
            }
        }
    });
    found
}
