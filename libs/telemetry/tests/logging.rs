//! Log lines: JSON shape, span-field flattening, trace ids, redaction (JSON, pretty, files).

use cos_telemetry::{CapturedLogs, LogFormat, TelemetryConfig, build_dispatch};
use serde_json::Value;
use tracing::field::Empty;

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTEiLCJ0ZW5hbnQiOiJ0LTEifQ.dGhpc2lzYXNpZ25hdHVyZXZhbHVl";
const API_KEY: &str = "cos_live_AbCdEfGhIjKlMnOpQrStUv";
const STRIPE: &str = "sk_live_51HxYzAbCdEfGhIjKl";

fn capture(
    format: LogFormat,
) -> (
    tracing::Dispatch,
    cos_telemetry::TelemetryGuard,
    CapturedLogs,
) {
    let logs = CapturedLogs::new();
    let mut cfg = TelemetryConfig::new("test-svc");
    cfg.log_filter = "debug".to_owned();
    cfg.log_format = format;
    let (dispatch, guard) = build_dispatch(&cfg, logs.clone()).expect("build dispatch");
    (dispatch, guard, logs)
}

fn emit_request_with_secrets() {
    let span = tracing::info_span!(
        "grpc.request",
        otel.kind = "server",
        request_id = "req-123",
        tenant_id = Empty,
        user_id = Empty
    );
    let _entered = span.enter();
    span.record("tenant_id", "tenant-42");
    span.record("user_id", "user-7");
    let inner = tracing::info_span!("db.query", table = "users");
    let _inner = inner.enter();
    tracing::info!(
        password = "hunter2",
        refresh_token = "opaque-refresh-value",
        authorization = "Bearer opaque-bearer-value",
        note = format!("got {JWT} from client").as_str(),
        input_tokens = 1234_u64,
        "login with key {API_KEY} and stripe {STRIPE}"
    );
}

fn assert_no_secrets(text: &str) {
    for secret in [
        "hunter2",
        "opaque-refresh-value",
        "opaque-bearer-value",
        JWT,
        "eyJhbGci",
        API_KEY,
        STRIPE,
    ] {
        assert!(
            !text.contains(secret),
            "secret {secret:?} leaked in:\n{text}"
        );
    }
}

#[test]
fn json_line_has_span_fields_trace_ids_and_no_secrets() {
    let (dispatch, _guard, logs) = capture(LogFormat::Json);
    tracing::dispatcher::with_default(&dispatch, emit_request_with_secrets);

    let text = logs.contents();
    assert_no_secrets(&text);
    let lines = logs.json_lines();
    assert_eq!(lines.len(), 1, "{text}");
    let line = &lines[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["service"], "test-svc");
    assert_eq!(line["target"], "logging");
    assert_eq!(line["tenant_id"], "tenant-42");
    assert_eq!(line["user_id"], "user-7");
    assert_eq!(line["request_id"], "req-123");
    assert_eq!(line["table"], "users");
    assert_eq!(line["span"], "db.query");
    assert_eq!(line["password"], "[REDACTED]");
    assert_eq!(line["refresh_token"], "[REDACTED]");
    assert_eq!(line["authorization"], "[REDACTED]");
    assert_eq!(line["input_tokens"], 1234);
    assert_eq!(line["note"], "got [REDACTED] from client");
    assert_eq!(
        line["message"],
        "login with key [REDACTED] and stripe [REDACTED]"
    );
    assert!(
        line.get("otel.kind").is_none(),
        "otel.* fields are not logged"
    );
    let trace_id = line["trace_id"].as_str().expect("trace_id");
    assert_eq!(trace_id.len(), 32);
    assert!(trace_id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16));
    let ts = line["timestamp"].as_str().expect("timestamp");
    assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
    // Fixed keys come first.
    assert!(text.starts_with(r#"{"timestamp":"#), "{text}");
}

#[test]
fn event_outside_spans_has_no_trace_id() {
    let (dispatch, _guard, logs) = capture(LogFormat::Json);
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::warn!(count = 3, ok = true, ratio = 0.5, "plain event");
    });
    let lines = logs.json_lines();
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["message"], "plain event");
    assert_eq!(line["count"], 3);
    assert_eq!(line["ok"], true);
    assert_eq!(line["ratio"], 0.5);
    assert!(line.get("trace_id").is_none());
    assert!(line.get("span").is_none());
}

#[test]
fn filter_drops_lower_levels() {
    let logs = CapturedLogs::new();
    let mut cfg = TelemetryConfig::new("test-svc");
    cfg.log_filter = "warn".to_owned();
    let (dispatch, _guard) = build_dispatch(&cfg, logs.clone()).expect("build");
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!("hidden");
        tracing::error!("shown");
    });
    let lines = logs.json_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["message"], "shown");
}

#[test]
fn invalid_filter_is_an_error() {
    let mut cfg = TelemetryConfig::new("test-svc");
    cfg.log_filter = "info,[[[".to_owned();
    assert!(build_dispatch(&cfg, CapturedLogs::new()).is_err());
}

#[test]
fn reserved_key_collision_is_prefixed() {
    let (dispatch, _guard, logs) = capture(LogFormat::Json);
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!(level = "custom", "collide");
    });
    let line = &logs.json_lines()[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields.level"], "custom");
}

#[test]
fn pretty_format_is_redacted_too() {
    let (dispatch, _guard, logs) = capture(LogFormat::Pretty);
    tracing::dispatcher::with_default(&dispatch, emit_request_with_secrets);
    let text = logs.contents();
    assert_no_secrets(&text);
    assert!(text.contains("tenant_id=\"tenant-42\""), "{text}");
    assert!(text.contains("INFO"), "{text}");
    assert!(text.contains("trace_id="), "{text}");
}

#[test]
fn log_dir_gets_redacted_json_files() {
    let dir = std::env::temp_dir().join(format!(
        "cos-telemetry-logs-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    let logs = CapturedLogs::new();
    let mut cfg = TelemetryConfig::new("filesvc");
    cfg.log_dir = Some(dir.clone());
    let (dispatch, mut guard) = build_dispatch(&cfg, logs.clone()).expect("build");
    tracing::dispatcher::with_default(&dispatch, emit_request_with_secrets);
    guard.shutdown(); // flushes the non-blocking file writer
    drop(dispatch);

    let mut file_text = String::new();
    for entry in std::fs::read_dir(&dir).expect("log dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        assert!(
            name.starts_with("filesvc.") && name.ends_with(".log"),
            "{name}"
        );
        file_text.push_str(&std::fs::read_to_string(&path).expect("read log file"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_no_secrets(&file_text);
    let line: Value =
        serde_json::from_str(file_text.lines().next().expect("a line")).expect("json");
    assert_eq!(line["tenant_id"], "tenant-42");
    // stdout (the injected writer) got the same line.
    assert_eq!(logs.json_lines().len(), 1);
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

#[test]
fn current_request_id_reads_span_fields() {
    let (dispatch, _guard, _logs) = capture(LogFormat::Json);
    tracing::dispatcher::with_default(&dispatch, || {
        assert_eq!(cos_telemetry::current_request_id(), None);
        let span = tracing::info_span!("grpc.request", request_id = "rid-9", tenant_id = Empty);
        let _e = span.enter();
        let child = tracing::info_span!("child");
        let _c = child.enter();
        assert_eq!(
            cos_telemetry::current_request_id().as_deref(),
            Some("rid-9")
        );
        let req = cos_telemetry::traced_request(());
        assert_eq!(
            req.metadata()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            Some("rid-9")
        );
        assert!(req.metadata().get("traceparent").is_some());
    });
}
