//! Installing the process-wide tracing subscriber: filter, OpenTelemetry layer (with optional
//! OTLP/gRPC batch export), the redacting log layer writing to stdout (or an injected writer)
//! and optionally to daily-rotating files, the `log` crate bridge and the global W3C
//! propagator.
//!
//! The OpenTelemetry layer is always installed, with or without an OTLP endpoint: spans then
//! still get W3C trace and span ids, so `trace_id` appears in log lines and trace context is
//! propagated between services even where nothing is exported.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Dispatch, Level, Metadata};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_log::AsLog as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt as _};
use tracing_subscriber::layer::SubscriberExt as _;

use crate::config::TelemetryConfig;
use crate::logging::json_layer;

/// How long [`TelemetryGuard::shutdown`] waits for queued spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one OTLP export call.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Daily log files kept under `log_dir`.
const MAX_LOG_FILES: usize = 14;

/// Keeps telemetry running; flushes and shuts down trace export on [`shutdown`](Self::shutdown)
/// or drop, and flushes buffered file logs.
///
/// Keep it alive for the life of the process (`let _telemetry = cos_telemetry::init(&cfg)?;`).
#[must_use = "dropping the guard shuts down trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    file_guard: Option<WorkerGuard>,
    installed: bool,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("installed", &self.installed)
            .field("tracing_provider", &self.provider.is_some())
            .field("file_logs", &self.file_guard.is_some())
            .finish()
    }
}

impl TelemetryGuard {
    fn noop() -> Self {
        Self {
            provider: None,
            file_guard: None,
            installed: false,
        }
    }

    /// Whether this guard's [`init`] call installed the global subscriber (false when one was
    /// already installed, e.g. by another test).
    pub fn is_installed(&self) -> bool {
        self.installed
    }

    /// Export what is queued and stop the tracer provider; flush file logs. Idempotent.
    ///
    /// Blocks for at most a few seconds. With OTLP export, call it while the multi-thread
    /// Tokio runtime is still running (the exporter's channel lives on it).
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            tracing::warn!(error = %err, "trace provider shutdown failed");
        }
        // Dropping the worker guard flushes the non-blocking file writer.
        self.file_guard.take();
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Install global telemetry logging JSON (or pretty) lines to stdout.
///
/// If a global subscriber is already installed, nothing is changed and a guard that does
/// nothing is returned. With `otlp_endpoint` set this must be called inside a multi-thread
/// Tokio runtime (the OTLP exporter opens a tonic channel on it).
pub fn init(cfg: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    init_with_writer(cfg, std::io::stdout)
}

/// Like [`init`], writing log lines to `make_writer` instead of stdout (files under
/// `log_dir` are still written when set).
pub fn init_with_writer<W>(cfg: &TelemetryConfig, make_writer: W) -> anyhow::Result<TelemetryGuard>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    if tracing::dispatcher::has_been_set() {
        return Ok(TelemetryGuard::noop());
    }
    let (dispatch, mut guard, max_level) = build(cfg, make_writer)?;
    if tracing::dispatcher::set_global_default(dispatch).is_err() {
        // Lost a race with another initializer: keep theirs.
        guard.shutdown();
        return Ok(TelemetryGuard::noop());
    }
    guard.installed = true;
    // Bridge `log` records into tracing; fails harmlessly if a logger is already set.
    let _ = tracing_log::LogTracer::builder()
        .with_max_level(max_level.as_log())
        .init();
    opentelemetry::global::set_text_map_propagator(crate::propagation::propagator());
    if let Some(provider) = &guard.provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    Ok(guard)
}

/// Build the same subscriber as [`init_with_writer`] without installing it, e.g. for
/// `tracing::dispatcher::set_default` in a test. The guard owns the tracer provider.
pub fn build_dispatch<W>(
    cfg: &TelemetryConfig,
    make_writer: W,
) -> anyhow::Result<(Dispatch, TelemetryGuard)>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (dispatch, guard, _) = build(cfg, make_writer)?;
    Ok((dispatch, guard))
}

fn build<W>(
    cfg: &TelemetryConfig,
    make_writer: W,
) -> anyhow::Result<(Dispatch, TelemetryGuard, LevelFilter)>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let directives = match cfg.log_filter.trim() {
        "" => "info",
        d => d,
    };
    let filter = EnvFilter::builder()
        .parse(directives)
        .with_context(|| format!("invalid log filter {directives:?}"))?;
    let max_level = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);

    let provider = tracer_provider(cfg)?;
    let tracer = provider.tracer("cos-telemetry");
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(exportable));

    let (writer, file_guard) = match &cfg.log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating log directory {}", dir.display()))?;
            let prefix = if cfg.service_name.is_empty() {
                "campaign-os"
            } else {
                cfg.service_name.as_str()
            };
            let appender = RollingFileAppender::builder()
                .rotation(Rotation::DAILY)
                .filename_prefix(prefix)
                .filename_suffix("log")
                .max_log_files(MAX_LOG_FILES)
                .build(dir)
                .with_context(|| format!("opening log files under {}", dir.display()))?;
            let (file_writer, guard) = tracing_appender::non_blocking(appender);
            (
                BoxMakeWriter::new(make_writer.and(file_writer)),
                Some(guard),
            )
        }
        None => (BoxMakeWriter::new(make_writer), None),
    };
    let log_layer = json_layer(writer)
        .with_format(cfg.log_format)
        .with_service_name(cfg.service_name.clone());

    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(log_layer);
    let guard = TelemetryGuard {
        provider: Some(provider),
        file_guard,
        installed: false,
    };
    Ok((Dispatch::new(subscriber), guard, max_level))
}

fn tracer_provider(cfg: &TelemetryConfig) -> anyhow::Result<SdkTracerProvider> {
    let resource = Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = cfg
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            anyhow!("OTLP export needs a Tokio runtime: call init() inside a multi-thread runtime")
        })?;
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            bail!(
                "OTLP export needs a multi-thread Tokio runtime (flushing on a current-thread \
                 runtime blocks); use #[tokio::main] or flavor = \"multi_thread\""
            );
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .with_context(|| format!("building the OTLP span exporter for {endpoint}"))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Spans and events sent to OpenTelemetry: everything at INFO and above, and debug/trace
/// ones except from the transport crates the exporter itself uses (exporting their spans
/// would produce more of them, a feedback loop).
fn exportable(meta: &Metadata<'_>) -> bool {
    const TRANSPORT: &[&str] = &[
        "h2",
        "hyper",
        "hyper_util",
        "tonic",
        "tower",
        "opentelemetry",
        "opentelemetry_sdk",
        "opentelemetry_otlp",
        "tracing_opentelemetry",
    ];
    if *meta.level() <= Level::INFO {
        return true;
    }
    let target = meta.target();
    !TRANSPORT.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}
