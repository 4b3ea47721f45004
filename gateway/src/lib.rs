//! The REST/JSON edge of the mesh. Every route comes from a `google.api.http` annotation in the
//! descriptor set and is transcoded generically to its gRPC method: no handler per route. Here
//! also: authentication (JWT verified locally, API keys exchanged with identity), Redis rate
//! limits, body limits, request ids, CORS, problem+json errors and the generated OpenAPI.

mod codec;
pub mod config;
mod contact_files;
pub mod openapi;
mod ratelimit;
pub mod routes;
mod transcode;
mod unsubscribe;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cos_auth::{Jwk, KeySet, Principal, TokenError, TokenVerifier};
use cos_config::CommonConfig;
use cos_errors::{ErrorCode, PROBLEM_CONTENT_TYPE, ServiceError};
use cos_proto::identity::v1::identity_service_client::IdentityServiceClient;
use cos_proto::identity::v1::{AuthenticateApiKeyRequest, GetJwksRequest};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::Instrument;

pub use config::GatewayConfig;
use ratelimit::{Limit, RateLimiter, Verdict};
use routes::{Lookup, Route, RouteTable};

const REQUEST_ID: &str = "x-request-id";
const BILLING_SERVICE: &str = "campaignos.billing.v1.BillingService";
/// How long the gateway's view of a tenant's status may be cached (billing drops the entry on
/// every change, so a suspension applies at once; the TTL only bounds a missed invalidation).
const SUSPENSION_CACHE_TTL: Duration = Duration::from_secs(30);

struct AppState {
    routes: RouteTable,
    upstreams: HashMap<String, Channel>,
    identity: IdentityServiceClient<Channel>,
    verifier: TokenVerifier,
    limiter: RateLimiter,
    openapi: Bytes,
    config: GatewayConfig,
    /// When an unknown `kid` last triggered a JWKS fetch (rate-limits those fetches).
    last_jwks_attempt: Mutex<Option<Instant>>,
    jwks_refresh_flight: tokio::sync::Mutex<()>,
    /// Billing's view of tenants (suspension), when billing is an upstream.
    entitlements: Option<cos_entitlements::EntitlementClient>,
}

/// A built gateway.
#[derive(Clone)]
pub struct Gateway {
    state: Arc<AppState>,
}

impl Gateway {
    pub async fn build(common: &CommonConfig, config: GatewayConfig) -> anyhow::Result<Self> {
        let routes = RouteTable::from_pool(cos_proto::descriptor_pool())?;
        let mut upstreams = HashMap::new();
        for (service, url) in &config.upstreams {
            // Lazy: the gateway may start before the services; calls fail with 503 until they are up.
            let channel = Channel::from_shared(url.clone())?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .connect_lazy();
            upstreams.insert(service.clone(), channel);
        }
        let identity_channel = upstreams
            .get("campaignos.identity.v1.IdentityService")
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no upstream for the identity service"))?;
        // Redis is a soft dependency: the limiter connects lazily and fails open, so the API
        // keeps serving (unlimited, counted in cos_gateway_rate_limiter_errors_total) while Redis
        // is away. Only a malformed URL stops start-up.
        let limiter = RateLimiter::connect(&common.redis.url, &common.redis.key_prefix)
            .map_err(|e| anyhow::anyhow!("COS_REDIS__URL: {e}"))?;
        let mut doc = openapi::document(&routes, "Campaign OS API", env!("CARGO_PKG_VERSION"));
        if let Some(url) = &config.public_url {
            doc["servers"] = serde_json::json!([{ "url": url }]);
        }
        let openapi = Bytes::from(serde_json::to_vec_pretty(&doc)?);
        let verifier =
            TokenVerifier::new(KeySet::new(), &common.auth.issuer, &common.auth.audience);
        let entitlements = upstreams
            .get(BILLING_SERVICE)
            .map(|channel| {
                cos_entitlements::EntitlementClient::from_channel(
                    channel.clone(),
                    &common.redis.url,
                    &common.redis.key_prefix,
                    SUSPENSION_CACHE_TTL,
                )
            })
            .transpose()
            .map_err(|e| anyhow::anyhow!("COS_REDIS__URL: {e}"))?;
        let state = AppState {
            routes,
            upstreams,
            identity: IdentityServiceClient::new(identity_channel),
            verifier,
            limiter,
            openapi,
            config,
            last_jwks_attempt: Mutex::new(None),
            jwks_refresh_flight: tokio::sync::Mutex::new(()),
            entitlements,
        };
        Ok(Self {
            state: Arc::new(state),
        })
    }

    /// Fetches the JWKS from identity now (at start, and whenever a token names an unknown key).
    pub async fn refresh_jwks(&self) -> anyhow::Result<usize> {
        refresh_jwks(&self.state).await
    }

    /// Keeps the JWKS fresh until shutdown.
    pub fn spawn_jwks_refresher(
        &self,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let gw = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let wait = match gw.refresh_jwks().await {
                    Ok(_) => {
                        backoff = Duration::from_millis(200);
                        every
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "fetching JWKS from identity failed; retrying");
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        backoff
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        })
    }

    /// Readiness: the JWKS is loaded (without it every authenticated call would be refused).
    /// Redis is deliberately not a readiness condition: the limiter fails open, and taking every
    /// gateway pod out of the load balancer over a limiter outage would turn it into an API
    /// outage.
    pub fn readiness_checks(&self) -> Vec<Arc<dyn cos_telemetry::ReadinessCheck>> {
        let keys = self.state.verifier.keys().clone();
        vec![cos_telemetry::readiness_check("jwks", move || {
            let loaded = !keys.is_empty();
            async move {
                if loaded {
                    Ok(())
                } else {
                    Err("no signing keys loaded from identity yet".to_owned())
                }
            }
        })]
    }

    pub fn router(&self) -> axum::Router {
        let cors = cors_layer(&self.state.config.cors_origins);
        axum::Router::new()
            .route("/openapi.json", axum::routing::get(serve_openapi))
            .route(
                "/u/{token}",
                axum::routing::get(unsubscribe::handle).post(unsubscribe::handle),
            )
            .fallback(handle)
            .layer(cors)
            .with_state(self.state.clone())
    }

    /// Serves HTTP until `shutdown`; in-flight requests finish first.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %listener.local_addr()?, "gateway listening");
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

async fn refresh_jwks(state: &AppState) -> anyhow::Result<usize> {
    let mut client = state.identity.clone();
    let jwks = client.get_jwks(GetJwksRequest {}).await?.into_inner();
    let keys: Vec<Jwk> = jwks
        .keys
        .into_iter()
        .map(|k| Jwk {
            kty: k.kty,
            crv: k.crv,
            x: k.x,
            kid: k.kid,
            alg: k.alg,
            use_: k.r#use,
        })
        .collect();
    state.verifier.keys().replace(&keys)?;
    Ok(keys.len())
}

fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static(REQUEST_ID),
            header::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            header::HeaderName::from_static(REQUEST_ID),
            header::RETRY_AFTER,
            // The CSV import's job URL and the export's file name.
            header::LOCATION,
            header::CONTENT_DISPOSITION,
        ])
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

async fn serve_openapi(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
        .into_response()
}

/// A client-supplied request id is kept if it is short and plain; otherwise we mint one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

pub(crate) fn client_ip(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    // Behind a trusted proxy the client is the hop that proxy appended: the last one. Earlier
    // hops come from the client and can be forged.
    if state.config.trust_forwarded_for
        && let Some(last) = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
    {
        // Only the proxy's own entry counts; if it is unusable we fall back to the peer rather
        // than to a hop the client wrote. Some proxies append `ip:port`.
        let last = last.trim();
        if let Ok(ip) = last.parse::<IpAddr>() {
            return ip;
        }
        if let Ok(addr) = last.parse::<SocketAddr>() {
            return addr.ip();
        }
    }
    peer.ip()
}

/// The rate-limit key of a client address. An IPv6 client usually controls a whole /64, so
/// limiting single addresses would hand it 2^64 fresh budgets: IPv6 is keyed by its /64.
pub(crate) fn rate_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// A failed request: the error and, for rate limits, when to retry.
struct Failure {
    error: ServiceError,
    allow: Option<String>,
}

impl From<ServiceError> for Failure {
    fn from(error: ServiceError) -> Self {
        Self { error, allow: None }
    }
}

fn problem_response(f: &Failure, instance: &str, request_id: &str) -> Response {
    let problem = f.error.to_problem(instance, Some(request_id));
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = f.error.code.http_status();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    if let Some(secs) = f.error.metadata_value("retry_after_secs")
        && let Ok(v) = HeaderValue::from_str(secs)
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if let Some(allow) = &f.allow
        && let Ok(v) = HeaderValue::from_str(allow)
    {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    if f.error.code == ErrorCode::Unauthenticated {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

async fn handle(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
) -> Response {
    let started = Instant::now();
    let rid = request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        http.method = %method,
        http.path = %path,
        request_id = %rid,
        tenant_id = tracing::field::Empty,
        user_id = tracing::field::Empty,
    );
    let (route_label, result) = process(&state, peer, req, &rid)
        .instrument(span.clone())
        .await;
    let mut resp = match result {
        Ok(r) => r,
        Err(f) => problem_response(&f, &path, &rid),
    };
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    metrics::counter!("cos_http_requests_total", "route" => route_label.clone(), "method" => method.to_string(), "status" => status.to_string()).increment(1);
    metrics::histogram!("cos_http_request_duration_seconds", "route" => route_label.clone(), "method" => method.to_string()).record(elapsed.as_secs_f64());
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(status, route = %route_label, latency_ms = elapsed.as_secs_f64() * 1000.0, "request failed");
        } else {
            tracing::info!(status, route = %route_label, latency_ms = elapsed.as_secs_f64() * 1000.0, "request");
        }
    });
    resp
}

/// Verifies a JWT; an unknown `kid` triggers one JWKS refresh (at most every 5 s) and a retry,
/// so a key rotated in identity is picked up without waiting for the periodic refresh.
async fn verify(state: &AppState, token: &str) -> Result<Principal, TokenError> {
    match state.verifier.verify(token) {
        Err(TokenError::UnknownKey) => {
            // Single flight, and at most one attempt (successful or not) per 5 s: forged tokens
            // with made-up kids must not turn into a stream of calls to identity.
            let Ok(_guard) = state.jwks_refresh_flight.try_lock() else {
                return Err(TokenError::UnknownKey);
            };
            let due = {
                let mut last = state
                    .last_jwks_attempt
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let due = last.is_none_or(|t| t.elapsed() > Duration::from_secs(5));
                if due {
                    *last = Some(Instant::now());
                }
                due
            };
            if due && refresh_jwks(state).await.is_ok() {
                state.verifier.verify(token)
            } else {
                Err(TokenError::UnknownKey)
            }
        }
        other => other,
    }
}

fn rate_limited(scope: &str, limit: u32, retry_after_secs: u64) -> Failure {
    ServiceError::new(ErrorCode::RateLimited, format!("rate limit of {limit} requests per minute ({scope}) exceeded; retry in {retry_after_secs} s"))
        .with_metadata("retry_after_secs", retry_after_secs)
        .with_metadata("limit", limit)
        .with_metadata("scope", scope)
        .into()
}

pub(crate) async fn enforce(state: &AppState, limits: &[Limit]) -> Result<(), Failure> {
    match state.limiter.check(limits).await {
        Verdict::Allowed => Ok(()),
        Verdict::Limited {
            scope,
            limit,
            retry_after_secs,
        } => Err(rate_limited(scope, limit, retry_after_secs)),
    }
}

pub(crate) fn ip_limit(state: &AppState, ip: IpAddr) -> Limit {
    Limit {
        scope: "ip",
        key: rate_key(ip),
        per_minute: state.config.rate_limit.per_ip_per_minute,
    }
}

fn tenant_limit(state: &AppState, p: &Principal) -> Limit {
    Limit {
        scope: "tenant",
        key: p.tenant_id.to_string(),
        per_minute: state.config.rate_limit.per_tenant_per_minute,
    }
}

async fn process(
    state: &AppState,
    peer: SocketAddr,
    req: axum::extract::Request,
    rid: &str,
) -> (String, Result<Response, Failure>) {
    // The hand-written routes (CSV import, contact export) first, then the transcoded table.
    let lookup = contact_files::lookup(&state.routes, req.method(), req.uri().path());
    if !matches!(lookup, Lookup::Found(..)) {
        // Probing unknown paths still costs the client its per-IP budget.
        let ip = client_ip(state, req.headers(), peer);
        if let Err(limited) = enforce(state, &[ip_limit(state, ip)]).await {
            return ("unmatched".into(), Err(limited));
        }
    }
    let (route, vars) = match lookup {
        Lookup::Found(route, vars) => (route, vars),
        Lookup::MethodNotAllowed(allowed) => {
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let error = ServiceError::new(
                ErrorCode::MethodNotAllowed,
                format!("{} is not allowed here; use {allow}", req.method()),
            );
            return (
                "unmatched".into(),
                Err(Failure {
                    error,
                    allow: Some(allow),
                }),
            );
        }
        Lookup::NotFound => {
            return (
                "unmatched".into(),
                Err(ServiceError::not_found(format!("route {}", req.uri().path())).into()),
            );
        }
    };
    let label = route.pattern.clone();
    (label, call_route(state, peer, req, route, vars, rid).await)
}

async fn call_route(
    state: &AppState,
    peer: SocketAddr,
    req: axum::extract::Request,
    route: &Route,
    vars: Vec<(String, String)>,
    rid: &str,
) -> Result<Response, Failure> {
    let (parts, body) = req.into_parts();
    let ip = client_ip(state, &parts.headers, peer);
    let mut limits = vec![ip_limit(state, ip)];
    if route.policy.rate_limit == "auth" {
        limits.push(Limit {
            scope: "auth",
            key: rate_key(ip),
            per_minute: state.config.rate_limit.auth_per_ip_per_minute,
        });
    }

    // Authentication. JWTs are verified here too (services verify again): the gateway needs the
    // tenant for its rate limit and rejects forgeries before they cost an upstream call.
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let unauthenticated = |m: &str| Failure::from(ServiceError::unauthenticated(m));
    let mut forward: Option<String> = None;
    let mut principal: Option<Principal> = None;
    match bearer {
        Some(key) if key.starts_with("cos_") => {
            // API key: limit by IP before asking identity, so keys cannot be guessed at speed.
            enforce(state, &limits).await?;
            limits.clear();
            let mut client = state.identity.clone();
            let mut request = tonic::Request::new(AuthenticateApiKeyRequest {
                api_key: key.to_owned(),
            });
            set_request_metadata(request.metadata_mut(), rid, ip);
            match client.authenticate_api_key(request).await {
                Ok(r) => {
                    let token = r.into_inner().access_token;
                    principal = verify(state, &token).await.ok();
                    forward = Some(token);
                }
                Err(status) if status.code() == tonic::Code::Unauthenticated => {
                    return Err(unauthenticated("invalid or revoked API key"));
                }
                Err(status) => return Err(ServiceError::from_status(&status).into()),
            }
        }
        Some(token) => match verify(state, token).await {
            Ok(p) => {
                principal = Some(p);
                forward = Some(token.to_owned());
            }
            Err(e) if !route.policy.public => {
                tracing::debug!(error = %e, "access token rejected at the gateway");
                // Rejected requests count against the IP budget too (token guessing, floods).
                enforce(state, &limits).await?;
                return Err(unauthenticated("invalid or expired access token"));
            }
            Err(_) => {}
        },
        None if !route.policy.public => {
            enforce(state, &limits).await?;
            return Err(unauthenticated("missing bearer token"));
        }
        None => {}
    }
    if let Some(p) = &principal {
        let span = tracing::Span::current();
        span.record("tenant_id", tracing::field::display(p.tenant_id));
        span.record("user_id", tracing::field::display(p.user_id));
        limits.push(tenant_limit(state, p));
    }
    enforce(state, &limits).await?;
    if let (Some(p), Some(token)) = (&principal, &forward) {
        refuse_suspended(state, route, p, token).await?;
    }

    // Hand-written routes read their own bodies and call their RPCs themselves.
    if let Some(hand) = contact_files::HandRoute::of(route) {
        let caller = contact_files::Caller {
            rid,
            ip,
            bearer: forward.as_deref(),
        };
        return hand
            .serve(state, route, parts, body, caller)
            .await
            .map_err(Failure::from);
    }

    // Body: size first (before reading it), then type, then JSON.
    let limit = state.config.body_limit_bytes;
    let too_large = || {
        Failure::from(ServiceError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body exceeds the limit of {limit} bytes"),
        ))
    };
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    if !body.is_empty() {
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ServiceError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "expected Content-Type: application/json, got {:?}",
                    if ct.is_empty() { "(none)" } else { ct }
                ),
            )
            .into());
        }
    }
    let message = transcode::request_message(route, &body, &vars, parts.uri.query())?;

    // The upstream call.
    let service = route.method.parent_service().full_name().to_owned();
    let channel = state.upstreams.get(&service).cloned().ok_or_else(|| {
        ServiceError::new(
            ErrorCode::Unavailable,
            format!("no upstream configured for {service}"),
        )
    })?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| {
        tracing::warn!(error = %e, service = %service, "upstream not ready");
        ServiceError::new(
            ErrorCode::Unavailable,
            "the service is temporarily unavailable",
        )
    })?;
    let mut request = tonic::Request::new(message);
    request.set_timeout(state.config.upstream_timeout);
    set_request_metadata(request.metadata_mut(), rid, ip);
    if let Some(token) = &forward
        && let Ok(v) = format!("Bearer {token}").parse()
    {
        request.metadata_mut().insert("authorization", v);
    }
    let path = http::uri::PathAndQuery::try_from(route.grpc_path.as_str())
        .map_err(|_| ServiceError::internal())?;
    let response = grpc
        .unary(request, path, codec::DynamicCodec::new(route.method.output()))
        .await
        .map_err(|status| {
            if status.code() == tonic::Code::Internal || status.code() == tonic::Code::Unknown {
                tracing::error!(code = ?status.code(), message = status.message(), "upstream error");
            }
            ServiceError::from_status(&status)
        })?
        .into_inner();

    if route.success_status == StatusCode::NO_CONTENT {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let json = transcode::response_json(route, &response)?;
    let mut resp = Response::new(Body::from(json));
    *resp.status_mut() = route.success_status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Routes a suspended tenant keeps: billing (to see why and to pay), data export, sign-in and
/// session routes, the caller's profile and tenant list (to switch to another workspace), and
/// platform administration.
fn allowed_while_suspended(route: &Route) -> bool {
    let service = route.method.parent_service().full_name();
    let name = route.method.name();
    route.policy.public
        || route.policy.platform_admin
        || service == BILLING_SERVICE
        || name.starts_with("Export")
        || route.pattern.contains("export")
        || (service == "campaignos.identity.v1.IdentityService"
            && matches!(name, "GetMe" | "ListMyTenants" | "SwitchTenant"))
}

/// 403 for a suspended tenant on everything but [`allowed_while_suspended`]. Fails open when
/// billing and its cache are both unreachable (reads must keep working; every service still
/// refuses creating and sending without knowing the plan).
async fn refuse_suspended(
    state: &AppState,
    route: &Route,
    p: &Principal,
    token: &str,
) -> Result<(), Failure> {
    let Some(client) = &state.entitlements else {
        return Ok(());
    };
    if allowed_while_suspended(route) {
        return Ok(());
    }
    match client
        .get(
            p.tenant_id,
            &cos_entitlements::CallAuth::Bearer(token.to_owned()),
        )
        .await
    {
        Ok(e) if e.status == cos_entitlements::SubscriptionStatus::Suspended => {
            metrics::counter!("cos_gateway_suspended_refusals_total").increment(1);
            Err(ServiceError::permission_denied(
                "this workspace is suspended: only billing and data export are available; contact support",
            )
            .with_metadata("status", "suspended")
            .into())
        }
        Ok(_) => Ok(()),
        Err(e) if e.code == ErrorCode::Unavailable => {
            metrics::counter!("cos_gateway_suspension_check_errors_total").increment(1);
            tracing::warn!(error = %e, "tenant status unknown (billing unreachable); letting the request through");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn set_request_metadata(md: &mut tonic::metadata::MetadataMap, rid: &str, ip: IpAddr) {
    if let Ok(v) = rid.parse() {
        md.insert(REQUEST_ID, v);
    }
    if let Ok(v) = ip.to_string().parse() {
        md.insert("x-forwarded-for", v);
    }
    cos_telemetry::inject_context(md);
}

#[cfg(test)]
mod tests {
    use super::rate_key;

    #[test]
    fn ipv6_clients_share_a_budget_per_64_and_ipv4_per_address() {
        let a = rate_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = rate_key("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap());
        let other = rate_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(rate_key("203.0.113.7".parse().unwrap()), "203.0.113.7");
        // An IPv4-mapped IPv6 address is the IPv4 client.
        assert_eq!(
            rate_key("::ffff:203.0.113.7".parse().unwrap()),
            "203.0.113.7"
        );
    }
}
