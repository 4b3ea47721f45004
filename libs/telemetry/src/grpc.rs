//! gRPC server middleware (a tower [`Layer`] for `tonic::transport::Server::layer`) and a
//! client-side helper that propagates the trace context and request id.
//!
//! For every request [`GrpcServerTelemetryLayer`]:
//!
//! * opens `info_span!("grpc.request", otel.kind = "server", rpc.service, rpc.method,
//!   request_id, tenant_id = Empty, user_id = Empty, ...)` whose parent is the remote context
//!   extracted from the `traceparent` metadata. Auth code running inside the request (an
//!   interceptor or the handler) fills in the identity with
//!   `tracing::Span::current().record("tenant_id", ...)`, after which every log line of the
//!   request carries it;
//! * takes the request id from `x-request-id` (when it is a sane token, up to 128 visible ASCII
//!   chars) or makes a new one (UUID v7), puts it in the request extensions as [`RequestId`]
//!   and echoes it in the `x-request-id` response header;
//! * records `cos_grpc_server_requests_total{service,method,code}` and
//!   `cos_grpc_server_duration_seconds{service,method}`, and logs one "grpc request completed"
//!   line (at DEBUG for `grpc.health.v1`, INFO otherwise).
//!
//! ## Status code and duration
//!
//! The response body is wrapped so the trailers are inspected: `code` is the `grpc-status` of
//! the trailers when the body completes, else the `grpc-status` response header (trailers-only
//! responses, which is how tonic answers most errors), else derived from a non-200 HTTP status,
//! else `OK` if the body ended without trailers. Duration is measured until the response body
//! completes, so for server-streaming RPCs it covers the whole stream. Limitations: if the
//! client goes away (or the deadline passes) before the response completes, the request is
//! counted as `CANCELLED` whatever the handler would have returned; a request whose handler
//! future fails with a transport-level error (not a `Status`) is counted as `UNKNOWN`.
//!
//! `method` is `package.Service/Method`; a path that does not have that shape (scanners) is
//! counted under `method="unknown"` to keep label cardinality bounded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::prom::{GRPC_SERVER_DURATION_SECONDS, GRPC_SERVER_REQUESTS_TOTAL};
use crate::propagation::{extract_http_context, inject_context};

/// The request id header (gRPC metadata key).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest accepted incoming request id.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request id of a gRPC request, in its `http`/tonic request extensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(pub String);

/// Tower layer adding tracing, request ids and RED metrics to a tonic server.
///
/// ```no_run
/// # async fn run(svc: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>) -> anyhow::Result<()> {
/// tonic::transport::Server::builder()
///     .layer(cos_telemetry::GrpcServerTelemetryLayer::new("identity"))
///     .add_service(svc)
///     .serve("127.0.0.1:50051".parse()?)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct GrpcServerTelemetryLayer {
    service: Arc<str>,
}

impl GrpcServerTelemetryLayer {
    /// `service_name` is the `service` label of the metrics (e.g. `"identity"`).
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service: Arc::from(service_name.into()),
        }
    }
}

impl<S> Layer<S> for GrpcServerTelemetryLayer {
    type Service = GrpcServerTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerTelemetry {
            inner,
            service: Arc::clone(&self.service),
        }
    }
}

/// The service produced by [`GrpcServerTelemetryLayer`].
#[derive(Debug, Clone)]
pub struct GrpcServerTelemetry<S> {
    inner: S,
    service: Arc<str>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcServerTelemetry<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<GrpcResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = GrpcResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        let method_label = method_label(path);
        let (rpc_service, rpc_method) = method_label.split_once('/').unwrap_or(("unknown", ""));
        let request_id = incoming_request_id(req.headers()).unwrap_or_else(new_request_id);

        let span = tracing::info_span!(
            "grpc.request",
            otel.kind = "server",
            otel.name = %method_label,
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %rpc_service,
            rpc.method = %rpc_method,
            rpc.grpc.status_code = Empty,
            request_id = %request_id,
            tenant_id = Empty,
            user_id = Empty,
        );
        let parent = extract_http_context(req.headers());
        if opentelemetry::trace::TraceContextExt::span(&parent)
            .span_context()
            .is_valid()
        {
            // Fails only without an OpenTelemetry layer, when there is nothing to parent.
            let _ = span.set_parent(parent);
        }

        let header_value = http::HeaderValue::from_str(&request_id).ok();
        req.extensions_mut().insert(RequestId(request_id));
        let completion = Completion {
            service: Arc::clone(&self.service),
            method: method_label,
            start: Instant::now(),
            span: span.clone(),
            header_code: None,
            trailer_code: None,
            done: false,
        };
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        GrpcResponseFuture {
            inner,
            span,
            completion: Some(completion),
            request_id: header_value,
        }
    }
}

pin_project! {
    /// Response future of [`GrpcServerTelemetry`].
    pub struct GrpcResponseFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        completion: Option<Completion>,
        request_id: Option<http::HeaderValue>,
    }
}

impl<F, B, E> Future for GrpcResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<GrpcResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        let mut completion = this.completion.take();
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                if let Some(c) = completion.as_mut() {
                    c.header_code =
                        header_code(&parts.headers).or_else(|| code_from_http_status(parts.status));
                }
                if let Some(id) = this.request_id.take() {
                    parts.headers.insert(REQUEST_ID_HEADER, id);
                }
                let body = GrpcResponseBody {
                    inner: body,
                    span: this.span.clone(),
                    completion,
                };
                Poll::Ready(Ok(http::Response::from_parts(parts, body)))
            }
            Err(err) => {
                if let Some(mut c) = completion {
                    c.finish(Code::Unknown);
                }
                Poll::Ready(Err(err))
            }
        }
    }
}

pin_project! {
    /// Response body of [`GrpcServerTelemetry`]: the inner body, polled inside the request
    /// span, reporting the status from the trailers when it completes.
    pub struct GrpcResponseBody<B> {
        #[pin]
        inner: B,
        span: Span,
        completion: Option<Completion>,
    }
}

impl<B> std::fmt::Debug for GrpcResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcResponseBody").finish_non_exhaustive()
    }
}

impl<B: Body> Body for GrpcResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        let polled = ready!(this.inner.poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(c) = this.completion.as_mut()
                {
                    // Trailers are the last frame of an HTTP/2 response.
                    c.trailer_code = header_code(trailers);
                    c.finish(Code::Ok);
                }
            }
            Some(Err(_)) => {
                if let Some(c) = this.completion.as_mut() {
                    c.finish(Code::Unknown);
                }
            }
            None => {
                if let Some(c) = this.completion.as_mut() {
                    c.finish(Code::Ok);
                }
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Records metrics, span status and the completion log line exactly once: when the response
/// completes, or on drop (client went away) with `CANCELLED` unless a status is known.
struct Completion {
    service: Arc<str>,
    method: String,
    start: Instant,
    span: Span,
    header_code: Option<Code>,
    trailer_code: Option<Code>,
    done: bool,
}

impl Completion {
    fn finish(&mut self, fallback: Code) {
        if self.done {
            return;
        }
        self.done = true;
        let code = self.trailer_code.or(self.header_code).unwrap_or(fallback);
        let elapsed = self.start.elapsed();
        let code_name = code_name(code);

        metrics::counter!(
            GRPC_SERVER_REQUESTS_TOTAL,
            "service" => self.service.to_string(),
            "method" => self.method.clone(),
            "code" => code_name,
        )
        .increment(1);
        metrics::histogram!(
            GRPC_SERVER_DURATION_SECONDS,
            "service" => self.service.to_string(),
            "method" => self.method.clone(),
        )
        .record(elapsed.as_secs_f64());

        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        if self.method.starts_with("grpc.health.") {
            tracing::debug!(parent: &self.span, grpc.code = code_name, duration_ms, "grpc request completed");
        } else {
            tracing::info!(parent: &self.span, grpc.code = code_name, duration_ms, "grpc request completed");
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// Statuses that mean the server failed (OpenTelemetry gRPC semantic conventions).
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// `grpc-status` of a header/trailer map.
fn header_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    let n: i32 = value.trim().parse().ok()?;
    Some(Code::from_i32(n))
}

/// gRPC status for a non-200 HTTP response (per the gRPC HTTP/2 protocol mapping).
fn code_from_http_status(status: http::StatusCode) -> Option<Code> {
    Some(match status.as_u16() {
        200 => return None,
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    })
}

/// Canonical upper-case status name, as used by other gRPC metric libraries.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `package.Service/Method` for a well-formed gRPC path, else `"unknown"`.
fn method_label(path: &str) -> String {
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    };
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method))
            if path.len() <= 256 && valid(service) && valid(method) && !method.contains('.') =>
        {
            format!("{service}/{method}")
        }
        _ => "unknown/unknown".to_owned(),
    }
}

fn incoming_request_id(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?.trim();
    let ok = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| value.to_owned())
}

fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A tonic request carrying the current trace context (`traceparent`) and, when the current
/// span belongs to a request, its `x-request-id`, for calls to other services.
pub fn traced_request<T>(msg: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    inject_context(request.metadata_mut());
    if let Some(id) = crate::current_request_id()
        && let Ok(value) = tonic::metadata::MetadataValue::try_from(id.as_str())
    {
        request.metadata_mut().insert(REQUEST_ID_HEADER, value);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels() {
        assert_eq!(
            method_label("/cos.identity.v1.IdentityService/Login"),
            "cos.identity.v1.IdentityService/Login"
        );
        assert_eq!(method_label("/"), "unknown/unknown");
        assert_eq!(method_label("/wp-admin/setup.php"), "unknown/unknown");
        assert_eq!(method_label("/a/b/c"), "unknown/unknown");
    }

    #[test]
    fn request_ids() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(incoming_request_id(&headers), None);
        headers.insert(REQUEST_ID_HEADER, http::HeaderValue::from_static("abc-123"));
        assert_eq!(incoming_request_id(&headers).as_deref(), Some("abc-123"));
        headers.insert(
            REQUEST_ID_HEADER,
            http::HeaderValue::from_static("has space"),
        );
        assert_eq!(incoming_request_id(&headers), None);
    }

    #[test]
    fn codes() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(header_code(&headers), Some(Code::NotFound));
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
        assert_eq!(
            code_from_http_status(http::StatusCode::SERVICE_UNAVAILABLE),
            Some(Code::Unavailable)
        );
        assert_eq!(code_from_http_status(http::StatusCode::OK), None);
    }
}
