//! W3C trace-context propagation between the producing request and the consuming handler; the
//! encoding itself lives in `cos-telemetry`, shared with gRPC and HTTP propagation.

use opentelemetry::Context;

/// The `traceparent` of the current span's OpenTelemetry context; empty when there is none.
pub fn current_traceparent() -> String {
    cos_telemetry::current_traceparent().unwrap_or_default()
}

/// The OpenTelemetry context described by a `traceparent`; the empty context for an empty or
/// malformed value.
pub fn parent_context(traceparent: &str) -> Context {
    if traceparent.is_empty() {
        return Context::new();
    }
    cos_telemetry::context_from_traceparent(traceparent)
}
