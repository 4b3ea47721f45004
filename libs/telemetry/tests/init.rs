//! Global installation: the first `init_with_writer` installs, later calls are no-ops.

use cos_telemetry::{CapturedLogs, TelemetryConfig, init, init_with_writer};

#[test]
fn init_installs_once_then_noop() {
    let logs = CapturedLogs::new();
    let cfg = TelemetryConfig::new("init-test");
    let mut guard = init_with_writer(&cfg, logs.clone()).expect("first init");
    assert!(guard.is_installed());

    let second = init(&cfg).expect("second init is ok");
    assert!(!second.is_installed());
    drop(second);

    let span = tracing::info_span!("grpc.request", tenant_id = "t-1");
    span.in_scope(|| tracing::info!(secret = "s3cr3t", "hello from the global subscriber"));
    // Other lines (e.g. OpenTelemetry's own "global tracer provider is set") may be present.
    let lines: Vec<_> = logs
        .json_lines()
        .into_iter()
        .filter(|l| l["target"] == "init")
        .collect();
    assert_eq!(lines.len(), 1, "{}", logs.contents());
    assert_eq!(lines[0]["tenant_id"], "t-1");
    assert_eq!(lines[0]["secret"], "[REDACTED]");
    assert!(lines[0]["trace_id"].is_string());
    // The global propagator was installed: other libraries see W3C context.
    let mut carrier = std::collections::HashMap::new();
    span.in_scope(|| {
        let cx = cos_telemetry::current_context();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    });
    assert!(carrier.contains_key("traceparent"));
    guard.shutdown();
    guard.shutdown(); // idempotent
}

#[test]
fn otlp_without_runtime_is_an_error() {
    let mut cfg = TelemetryConfig::new("init-test");
    cfg.otlp_endpoint = Some("http://127.0.0.1:4317".to_owned());
    let err = cos_telemetry::build_dispatch(&cfg, CapturedLogs::new()).expect_err("needs runtime");
    assert!(err.to_string().contains("Tokio runtime"), "{err}");
}

#[test]
fn otlp_exporter_builds_on_multi_thread_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut cfg = TelemetryConfig::new("init-test");
        // Nothing listens there; export fails quietly, shutdown must still return.
        cfg.otlp_endpoint = Some("http://127.0.0.1:9".to_owned());
        let (dispatch, mut guard) =
            cos_telemetry::build_dispatch(&cfg, CapturedLogs::new()).expect("exporter builds");
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!("exported").in_scope(|| tracing::info!("hi"));
        });
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || guard.shutdown())
            .await
            .expect("shutdown task");
        assert!(started.elapsed() < std::time::Duration::from_secs(15));
    });
}
