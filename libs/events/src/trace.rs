//! W3C trace-context propagation between the producing request and the consuming handler.

use std::collections::HashMap;

use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of the current tracing span's OpenTelemetry context, rendered by the
/// global text-map propagator; empty when there is no sampled/valid context or no propagator
/// (the default global propagator is a no-op).
pub fn current_traceparent() -> String {
    let cx = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent").unwrap_or_default()
}

/// The OpenTelemetry context described by a `traceparent` (as extracted by the global
/// propagator); the empty context for an empty or malformed value.
pub fn parent_context(traceparent: &str) -> Context {
    if traceparent.is_empty() {
        return Context::new();
    }
    let mut carrier: HashMap<String, String> = HashMap::with_capacity(1);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
}
