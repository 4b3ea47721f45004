//! The admin HTTP endpoint every process serves on its admin port:
//!
//! * `GET /healthz`: `200 {"status":"ok","service":...}` while the process serves requests;
//! * `GET /readyz`: runs every [`ReadinessCheck`] concurrently, each with a timeout (2 s by
//!   default); `200` when all pass, else `503`, with per-check status and, for failures, the
//!   (redacted) error, plus a `failing` list of check names;
//! * `GET /metrics`: the Prometheus text exposition of the process's recorder.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::FutureExt as _;
use futures::future::{BoxFuture, join_all};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::redact::redact;

/// Default time limit of one readiness check.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A dependency the process needs before it can take traffic (database, broker, cache...).
pub trait ReadinessCheck: Send + Sync {
    /// Short name shown in `/readyz`, e.g. `"postgres"`.
    fn name(&self) -> &str;
    /// `Ok(())` when ready, else a human-readable reason (redacted before it is shown).
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// A [`ReadinessCheck`] from a name and an async closure.
///
/// ```
/// let check = cos_telemetry::readiness_check("always", || async { Ok(()) });
/// assert_eq!(check.name(), "always");
/// ```
pub fn readiness_check<F, Fut>(name: impl Into<String>, f: F) -> Arc<dyn ReadinessCheck>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(FnCheck {
        name: name.into(),
        f,
    })
}

struct FnCheck<F> {
    name: String,
    f: F,
}

impl<F, Fut> ReadinessCheck for FnCheck<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        (self.f)().boxed()
    }
}

/// The admin HTTP server (`/healthz`, `/readyz`, `/metrics`).
#[derive(Clone)]
pub struct AdminServer {
    inner: Inner,
}

#[derive(Clone)]
struct Inner {
    service_name: String,
    metrics: PrometheusHandle,
    checks: Vec<Arc<dyn ReadinessCheck>>,
    check_timeout: Duration,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("service_name", &self.inner.service_name)
            .field(
                "checks",
                &self
                    .inner
                    .checks
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>(),
            )
            .field("check_timeout", &self.inner.check_timeout)
            .finish()
    }
}

impl AdminServer {
    /// An admin server for `service_name`, rendering `metrics`, with these readiness checks.
    pub fn new(
        service_name: impl Into<String>,
        metrics: PrometheusHandle,
        checks: Vec<Arc<dyn ReadinessCheck>>,
    ) -> Self {
        Self {
            inner: Inner {
                service_name: service_name.into(),
                metrics,
                checks,
                check_timeout: DEFAULT_CHECK_TIMEOUT,
            },
        }
    }

    /// Add one more readiness check.
    #[must_use]
    pub fn with_check(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.inner.checks.push(check);
        self
    }

    /// Change the per-check time limit (default 2 s).
    #[must_use]
    pub fn with_check_timeout(mut self, timeout: Duration) -> Self {
        self.inner.check_timeout = timeout;
        self
    }

    /// The routes, to serve yourself or to merge into another router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(Arc::new(self.inner.clone()))
    }

    /// Serve on `listener` until `shutdown` is cancelled, then finish in-flight requests.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, service = %self.inner.service_name, "admin server listening");
        }
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'static str,
    service: &'a str,
}

async fn healthz(State(inner): State<Arc<Inner>>) -> Response {
    axum::Json(Health {
        status: "ok",
        service: &inner.service_name,
    })
    .into_response()
}

#[derive(Serialize)]
struct CheckReport {
    name: String,
    status: &'static str,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Readiness<'a> {
    status: &'static str,
    service: &'a str,
    checks: Vec<CheckReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failing: Vec<String>,
}

async fn readyz(State(inner): State<Arc<Inner>>) -> Response {
    let timeout = inner.check_timeout;
    let reports = join_all(inner.checks.iter().map(|check| async move {
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(timeout, AssertUnwindSafe(check.check()).catch_unwind()).await;
        let error = match outcome {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(reason))) => Some(redact(&reason).into_owned()),
            Ok(Err(_panic)) => Some("check panicked".to_owned()),
            Err(_elapsed) => Some(format!("timed out after {} ms", timeout.as_millis())),
        };
        CheckReport {
            name: check.name().to_owned(),
            status: if error.is_none() { "ok" } else { "failing" },
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error,
        }
    }))
    .await;

    let failing: Vec<String> = reports
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.name.clone())
        .collect();
    let code = if failing.is_empty() {
        StatusCode::OK
    } else {
        for report in reports.iter().filter(|r| r.error.is_some()) {
            tracing::warn!(
                check = %report.name,
                error = report.error.as_deref().unwrap_or_default(),
                "readiness check failing"
            );
        }
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if failing.is_empty() {
            "ready"
        } else {
            "not_ready"
        },
        service: &inner.service_name,
        checks: reports,
        failing,
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(inner): State<Arc<Inner>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        inner.metrics.render(),
    )
        .into_response()
}
