//! Trace-context propagation: traceparent, gRPC metadata and HTTP headers round trips.

use cos_telemetry::{
    CapturedLogs, OpenTelemetrySpanExt as _, TelemetryConfig, build_dispatch,
    context_from_traceparent, current_context, current_traceparent, extract_context,
    extract_http_context, inject_context, inject_http_context, traceparent_of,
};
use opentelemetry::trace::{TraceContextExt as _, TraceId};

fn dispatch() -> (
    tracing::Dispatch,
    cos_telemetry::TelemetryGuard,
    CapturedLogs,
) {
    let logs = CapturedLogs::new();
    let (d, g) = build_dispatch(&TelemetryConfig::new("prop-test"), logs.clone()).expect("build");
    (d, g, logs)
}

fn trace_id_of(cx: &opentelemetry::Context) -> TraceId {
    cx.span().span_context().trace_id()
}

#[test]
fn traceparent_round_trip() {
    let (dispatch, _guard, _logs) = dispatch();
    tracing::dispatcher::with_default(&dispatch, || {
        assert_eq!(current_traceparent(), None, "no span, no traceparent");
        let span = tracing::info_span!("publish");
        let _e = span.enter();
        let tp = current_traceparent().expect("traceparent inside a span");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "01", "sampled");

        let cx = context_from_traceparent(&tp);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(sc.trace_id(), trace_id_of(&current_context()));
        assert_eq!(sc.trace_id().to_string(), parts[1]);
        assert_eq!(sc.span_id().to_string(), parts[2]);
        assert_eq!(traceparent_of(&cx).as_deref(), Some(tp.as_str()));
    });
}

#[test]
fn invalid_traceparent_gives_empty_context() {
    for bad in [
        "",
        "garbage",
        "00-00000000000000000000000000000000-0000000000000000-01",
    ] {
        let cx = context_from_traceparent(bad);
        assert!(!cx.span().span_context().is_valid(), "{bad}");
        assert_eq!(traceparent_of(&cx), None);
    }
}

#[test]
fn consumer_span_continues_the_trace_in_logs() {
    let (dispatch, _guard, logs) = dispatch();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("amqp.consume", otel.kind = "consumer");
        span.set_parent(context_from_traceparent(tp))
            .expect("set parent");
        let _e = span.enter();
        tracing::info!("handling event");
        let child_tp = current_traceparent().expect("traceparent");
        assert!(child_tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!child_tp.contains("00f067aa0ba902b7"), "new span id");
    });
    let line = &logs.json_lines()[0];
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn grpc_metadata_round_trip() {
    let (dispatch, _guard, _logs) = dispatch();
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("client.call");
        let _e = span.enter();
        let mut md = tonic::metadata::MetadataMap::new();
        inject_context(&mut md);
        assert!(md.get("traceparent").is_some());
        let cx = extract_context(&md);
        assert_eq!(trace_id_of(&cx), trace_id_of(&current_context()));

        let req = cos_telemetry::traced_request("payload");
        let cx = extract_context(req.metadata());
        assert_eq!(trace_id_of(&cx), trace_id_of(&current_context()));
    });
    // Empty metadata: empty context.
    let cx = extract_context(&tonic::metadata::MetadataMap::new());
    assert!(!cx.span().span_context().is_valid());
}

#[test]
fn http_headers_round_trip() {
    let (dispatch, _guard, _logs) = dispatch();
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("http.call");
        let _e = span.enter();
        let mut headers = http::HeaderMap::new();
        inject_http_context(&mut headers);
        let tp = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .expect("traceparent header")
            .to_owned();
        assert_eq!(Some(tp), current_traceparent());
        let cx = extract_http_context(&headers);
        assert_eq!(trace_id_of(&cx), trace_id_of(&current_context()));
    });
}
