//! W3C trace-context (and baggage) propagation across gRPC metadata, HTTP headers and
//! message envelopes.
//!
//! These helpers use their own W3C `traceparent`/`tracestate` + `baggage` propagator, so they
//! work whether or not [`crate::init`] ran (it also installs the same propagator globally for
//! libraries that use `opentelemetry::global`).
//!
//! Attaching an extracted context to a span: `span.set_parent(cx)` from
//! [`OpenTelemetrySpanExt`] (re-exported at the crate root), before the span is first entered.
//!
//! For AMQP and other message envelopes, put [`current_traceparent`] in a header and rebuild the
//! parent on the consumer side with [`context_from_traceparent`].

use std::collections::HashMap;
use std::sync::LazyLock;

use opentelemetry::Context;
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";

static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(propagator);
static TRACE_CONTEXT: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

/// A fresh W3C trace-context + baggage propagator (what [`crate::init`] installs globally).
pub fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// The OpenTelemetry context of the current tracing span, or OpenTelemetry's own current
/// context when the span is not traced (no OpenTelemetry layer, or no span).
pub fn current_context() -> Context {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        cx
    } else {
        Context::current()
    }
}

/// Write the current span's trace context into outgoing gRPC metadata.
pub fn inject_context(metadata: &mut MetadataMap) {
    inject_context_from(&current_context(), metadata);
}

/// Write `cx` into outgoing gRPC metadata.
pub fn inject_context_from(cx: &Context, metadata: &mut MetadataMap) {
    PROPAGATOR.inject_context(cx, &mut MetadataInjector(metadata));
}

/// Read a remote trace context from incoming gRPC metadata (empty context when absent/invalid).
pub fn extract_context(metadata: &MetadataMap) -> Context {
    PROPAGATOR.extract(&MetadataExtractor(metadata))
}

/// Write the current span's trace context into outgoing HTTP headers.
pub fn inject_http_context(headers: &mut http::HeaderMap) {
    inject_http_context_from(&current_context(), headers);
}

/// Write `cx` into outgoing HTTP headers.
pub fn inject_http_context_from(cx: &Context, headers: &mut http::HeaderMap) {
    PROPAGATOR.inject_context(cx, &mut HeaderInjector(headers));
}

/// Read a remote trace context from incoming HTTP headers (empty context when absent/invalid).
pub fn extract_http_context(headers: &http::HeaderMap) -> Context {
    PROPAGATOR.extract(&HeaderExtractor(headers))
}

/// The W3C `traceparent` value (`00-<trace id>-<span id>-<flags>`) of the current span, for
/// event envelopes; `None` when there is no valid trace context.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&current_context())
}

/// The W3C `traceparent` value of `cx`, if it holds a valid span context.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TRACE_CONTEXT.inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// A remote parent context from a `traceparent` value (empty context when it does not parse).
pub fn context_from_traceparent(traceparent: &str) -> Context {
    let mut carrier = HashMap::with_capacity(1);
    carrier.insert(TRACEPARENT.to_owned(), traceparent.trim().to_owned());
    TRACE_CONTEXT.extract(&carrier)
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                KeyRef::Ascii(k) => Some(k.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
