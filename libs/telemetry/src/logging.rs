//! The log layer: one line per event, JSON (production) or human-readable text (development),
//! with the fields of every enclosing span flattened in, the OpenTelemetry `trace_id`/`span_id`
//! when the span is traced, and secrets redacted (see [`crate::redact`]).
//!
//! A JSON line looks like
//!
//! ```json
//! {"timestamp":"2026-01-02T03:04:05.678Z","level":"INFO","target":"cos_identity::login",
//!  "service":"identity","message":"user logged in","trace_id":"4bf9...","span_id":"00f0...",
//!  "span":"grpc.request","rpc.method":"Login","request_id":"...","tenant_id":"...","user_id":"..."}
//! ```
//!
//! Key order: `timestamp`, `level`, `target`, `service`, `message`, `trace_id`, `span_id`,
//! `span` (innermost span name), then span fields from the outermost span inwards, then the
//! event's own fields (an inner span or the event overrides an outer field of the same name).
//! Fields named `otel.*` (span-kind/status hints for the OpenTelemetry layer) are left out. A
//! field that collides with one of the fixed keys is written as `fields.<name>`.
//!
//! The writer is any [`MakeWriter`], so tests can capture lines (see [`crate::CapturedLogs`]).

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;
use crate::redact::{REDACTED, is_sensitive_field, redact};

/// Keys written by the layer itself; event/span fields with these names get a `fields.` prefix.
const RESERVED_KEYS: &[&str] = &[
    "timestamp",
    "level",
    "target",
    "service",
    "message",
    "trace_id",
    "span_id",
    "span",
];

/// Span fields recorded by [`LogLayer`], already redacted, kept in the span's extensions.
#[derive(Debug, Default, Clone)]
pub(crate) struct SpanFields(pub(crate) Map<String, Value>);

/// The tracing [`Layer`] that writes log lines. Build it with [`json_layer`].
pub struct LogLayer<W> {
    make_writer: W,
    format: LogFormat,
    service_name: Option<String>,
    /// The dispatcher this layer is part of, used to read the OpenTelemetry context of a span.
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> fmt::Debug for LogLayer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogLayer")
            .field("format", &self.format)
            .field("service_name", &self.service_name)
            .finish_non_exhaustive()
    }
}

/// A log layer writing JSON lines (with redaction) to `make_writer`.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt as _;
/// let logs = cos_telemetry::CapturedLogs::new();
/// let subscriber = tracing_subscriber::registry()
///     .with(cos_telemetry::json_layer(logs.clone()).with_service_name("demo"));
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::info!(password = "hunter2", "hello");
/// });
/// assert!(!logs.contents().contains("hunter2"));
/// ```
pub fn json_layer<W>(make_writer: W) -> LogLayer<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    LogLayer {
        make_writer,
        format: LogFormat::Json,
        service_name: None,
        dispatch: OnceLock::new(),
    }
}

impl<W> LogLayer<W> {
    /// Add a `service` key to every line.
    #[must_use]
    pub fn with_service_name(mut self, service_name: impl Into<String>) -> Self {
        self.service_name = Some(service_name.into());
        self
    }

    /// Choose JSON (default) or the human-readable text format.
    #[must_use]
    pub fn with_format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }
}

thread_local! {
    /// Set while this thread formats an event, so an event emitted from inside the
    /// OpenTelemetry lookup cannot re-enter it (and deadlock on the span's data lock).
    static IN_EVENT: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as formatting an event until dropped (also on panic).
struct ReentrancyGuard {
    reentrant: bool,
}

impl ReentrancyGuard {
    fn enter() -> Self {
        Self {
            reentrant: IN_EVENT.with(|flag| flag.replace(true)),
        }
    }
}

impl Drop for ReentrancyGuard {
    fn drop(&mut self) {
        if !self.reentrant {
            IN_EVENT.with(|flag| flag.set(false));
        }
    }
}

impl<S, W> Layer<S> for LogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        // A layer is part of exactly one dispatcher; the first registration wins.
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut visitor = JsonVisitor::default();
        attrs.record(&mut visitor);
        span.extensions_mut().insert(SpanFields(visitor.fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let mut visitor = JsonVisitor::default();
        values.record(&mut visitor);
        match extensions.get_mut::<SpanFields>() {
            Some(fields) => fields.0.extend(visitor.fields),
            None => extensions.insert(SpanFields(visitor.fields)),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let line = {
            let guard = ReentrancyGuard::enter();
            self.format_event(event, &ctx, !guard.reentrant)
        };
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut writer = self.make_writer.make_writer_for(meta);
        // Nowhere to report a failed log write; dropping the line is the only option.
        let _ = writer.write_all(line.as_bytes());
    }
}

/// Everything that goes into one line, before rendering.
struct LineParts {
    level: String,
    target: String,
    message: Option<Value>,
    trace_id: Option<String>,
    span_id: Option<String>,
    span: Option<&'static str>,
    fields: Map<String, Value>,
}

impl<W> LogLayer<W> {
    fn format_event<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, with_otel: bool) -> String
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());

        let mut fields = Map::new();
        // Span ids from the outermost inwards, and the innermost span's name.
        let mut ids: Vec<Id> = Vec::new();
        let mut leaf_name: Option<&'static str> = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &span_fields.0 {
                        fields.insert(k.clone(), v.clone());
                    }
                }
                ids.push(span.id());
                leaf_name = Some(span.name());
            }
        }

        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        let message = visitor.fields.remove("message");
        for (k, v) in visitor.fields {
            // Fields added by tracing-log for `log` records duplicate the normalized metadata.
            if k.starts_with("log.") {
                continue;
            }
            fields.insert(k, v);
        }

        // The innermost span known to OpenTelemetry (spans filtered out of tracing export,
        // e.g. transport internals, have no context of their own).
        let (mut trace_id, mut span_id) = (None, None);
        if with_otel
            && !ids.is_empty()
            && let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade)
        {
            for id in ids.iter().rev() {
                let Some(cx) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
                    continue;
                };
                let span = cx.span();
                let sc = span.span_context();
                if sc.is_valid() {
                    trace_id = Some(sc.trace_id().to_string());
                    span_id = Some(sc.span_id().to_string());
                    break;
                }
            }
        }

        let parts = LineParts {
            level: meta.level().to_string(),
            target: meta.target().to_owned(),
            message,
            trace_id,
            span_id,
            span: leaf_name,
            fields,
        };
        match self.format {
            LogFormat::Json => self.render_json(parts),
            LogFormat::Pretty => self.render_text(parts),
        }
    }

    fn render_json(&self, parts: LineParts) -> String {
        let mut obj = Map::new();
        obj.insert("timestamp".into(), Value::String(timestamp()));
        obj.insert("level".into(), Value::String(parts.level));
        obj.insert("target".into(), Value::String(parts.target));
        if let Some(service) = &self.service_name {
            obj.insert("service".into(), Value::String(service.clone()));
        }
        obj.insert(
            "message".into(),
            parts.message.unwrap_or(Value::String(String::new())),
        );
        if let Some(trace_id) = parts.trace_id {
            obj.insert("trace_id".into(), Value::String(trace_id));
        }
        if let Some(span_id) = parts.span_id {
            obj.insert("span_id".into(), Value::String(span_id));
        }
        if let Some(span) = parts.span {
            obj.insert("span".into(), Value::String(span.to_owned()));
        }
        // serde_json's Map keeps keys sorted unless `preserve_order` is on; write the fixed keys
        // first by hand so lines read well either way.
        let mut out = String::with_capacity(256);
        out.push('{');
        let mut first = true;
        for key in RESERVED_KEYS {
            if let Some(v) = obj.get(*key) {
                push_json_pair(&mut out, &mut first, key, v);
            }
        }
        for (k, v) in &parts.fields {
            if RESERVED_KEYS.contains(&k.as_str()) {
                push_json_pair(&mut out, &mut first, &format!("fields.{k}"), v);
            } else {
                push_json_pair(&mut out, &mut first, k, v);
            }
        }
        out.push_str("}\n");
        out
    }

    fn render_text(&self, parts: LineParts) -> String {
        let mut out = String::with_capacity(160);
        let _ = write!(out, "{} {:>5} {}", timestamp(), parts.level, parts.target);
        if let Some(span) = parts.span {
            let _ = write!(out, " [{span}]");
        }
        out.push_str(": ");
        match parts.message {
            Some(Value::String(s)) => out.push_str(&s),
            Some(other) => out.push_str(&other.to_string()),
            None => {}
        }
        for (k, v) in &parts.fields {
            match v {
                Value::String(s) => {
                    let _ = write!(out, " {k}={s:?}");
                }
                other => {
                    let _ = write!(out, " {k}={other}");
                }
            }
        }
        if let Some(trace_id) = parts.trace_id {
            let _ = write!(out, " trace_id={trace_id}");
        }
        out.push('\n');
        out
    }
}

fn push_json_pair(out: &mut String, first: &mut bool, key: &str, value: &Value) {
    if !*first {
        out.push(',');
    }
    *first = false;
    // Serializing a str or a Value into a String cannot fail.
    out.push_str(&Value::String(key.to_owned()).to_string());
    out.push(':');
    out.push_str(&value.to_string());
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Collects fields as JSON values, redacting by name and by value.
#[derive(Default)]
struct JsonVisitor {
    fields: Map<String, Value>,
}

impl JsonVisitor {
    fn insert(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name.starts_with("otel.") {
            return;
        }
        let value = if is_sensitive_field(name) {
            Value::String(REDACTED.to_owned())
        } else {
            value
        };
        self.fields.insert(name.to_owned(), value);
    }

    fn insert_str(&mut self, field: &Field, s: &str) {
        self.insert(field, Value::String(redact(s).into_owned()));
    }
}

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.insert(field, Value::from(v)),
            Err(_) => self.insert_str(field, &value.to_string()),
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.insert(field, Value::from(v)),
            Err(_) => self.insert_str(field, &value.to_string()),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert_str(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(err) = source {
            let _ = write!(text, ": {err}");
            source = err.source();
        }
        self.insert_str(field, &text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert_str(field, &format!("{value:?}"));
    }
}
