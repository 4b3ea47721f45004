//! The client other services use to ask billing what a tenant may do and to take quota.
//!
//! Failure policy (documented in docs/architecture.md, "Plan gating"):
//! - `get`: Redis cache first (short TTL, deleted by billing on every change), then billing.
//!   When billing cannot be reached, the last answer this process saw for the tenant is used if
//!   it is younger than `stale_for` (default 5 min); otherwise the call fails with UNAVAILABLE.
//!   Callers that create or send must propagate that error (fail closed: nothing is created
//!   without knowing the plan); reads never need entitlements.
//! - `consume`: always billing (atomic in its database). Unreachable billing = UNAVAILABLE, and
//!   the caller sends nothing.
//! - Redis trouble never fails a call: the cache is skipped for 2 s after an error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use cos_auth::{SERVICE_AUTH_HEADER, ServiceCredential};
use cos_errors::{ErrorCode, ServiceError};
use cos_proto::billing::v1 as pb;
use cos_proto::billing::v1::billing_service_client::BillingServiceClient;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::convert::{from_setting, from_ts};
use crate::types::{Entitlements, Limit, QuotaGrant, SubscriptionStatus};

const SERVICE: &str = "/campaignos.billing.v1.BillingService";
const BREAKER_OPEN: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a last-known answer may stand in for an unreachable billing.
pub const DEFAULT_STALE_FOR: Duration = Duration::from_secs(300);
const STALE_ENTRIES_MAX: usize = 10_000;
/// Without Redis (not configured, or failing) answers are reused in-process for this long, so
/// a Redis outage does not turn every check into a call to billing.
const LOCAL_TTL: Duration = Duration::from_secs(5);

/// The Redis key under which entitlements of `tenant_id` are cached.
pub fn cache_key(prefix: &str, tenant_id: Uuid) -> String {
    format!("{prefix}{}{tenant_id}", cache_key_stem())
}

/// The part of every entitlement cache key after the deployment prefix (for SCAN patterns).
pub fn cache_key_stem() -> &'static str {
    "billing:ent:v1:"
}

/// How a call to billing is authorised.
#[derive(Clone)]
pub enum CallAuth {
    /// The end user's access token, forwarded from the incoming request: billing answers for
    /// that token's tenant only.
    Bearer(String),
    /// A background job acting for the tenant, with the mesh's service credential (see
    /// [`EntitlementClient::with_service_credential`]).
    Service,
}

impl std::fmt::Debug for CallAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallAuth::Bearer(_) => f.write_str("Bearer([REDACTED])"),
            CallAuth::Service => f.write_str("Service"),
        }
    }
}

impl CallAuth {
    /// The bearer token of an incoming gRPC request, to forward.
    pub fn from_metadata(md: &tonic::metadata::MetadataMap) -> Option<Self> {
        let h = md.get("authorization")?.to_str().ok()?;
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))?
            .trim();
        (!token.is_empty()).then(|| CallAuth::Bearer(token.to_owned()))
    }
}

/// Client of billing's entitlement RPCs, with the Redis cache. Cheap to clone.
#[derive(Clone)]
pub struct EntitlementClient {
    grpc: BillingServiceClient<Channel>,
    redis: Option<ConnectionManager>,
    prefix: String,
    ttl: Duration,
    stale_for: Duration,
    service: Option<ServiceCredential>,
    skip_redis_until_ms: Arc<AtomicU64>,
    epoch: Instant,
    last_known: Arc<Mutex<HashMap<Uuid, (Instant, Entitlements)>>>,
}

impl EntitlementClient {
    /// Lazy connections to billing at `billing_url` (`http://host:port`) and Redis at
    /// `redis_url` (empty: no cache); cache entries live `cache_ttl` at most.
    pub fn new(
        billing_url: &str,
        redis_url: &str,
        key_prefix: &str,
        cache_ttl: Duration,
    ) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(billing_url.to_owned())
            .map_err(|e| anyhow::anyhow!("billing URL {billing_url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect_lazy();
        Self::from_channel(channel, redis_url, key_prefix, cache_ttl)
    }

    /// Like [`EntitlementClient::new`] on an existing channel to billing.
    pub fn from_channel(
        channel: Channel,
        redis_url: &str,
        key_prefix: &str,
        cache_ttl: Duration,
    ) -> anyhow::Result<Self> {
        let redis = if redis_url.is_empty() {
            None
        } else {
            let client =
                redis::Client::open(redis_url).map_err(|e| anyhow::anyhow!("Redis URL: {e}"))?;
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(Some(Duration::from_millis(500)))
                .set_response_timeout(Some(Duration::from_millis(500)));
            Some(ConnectionManager::new_lazy_with_config(client, config)?)
        };
        Ok(Self {
            grpc: BillingServiceClient::new(channel),
            redis,
            prefix: key_prefix.to_owned(),
            ttl: cache_ttl.max(Duration::from_secs(1)),
            stale_for: DEFAULT_STALE_FOR,
            service: None,
            skip_redis_until_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            last_known: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Enables [`CallAuth::Service`] (background jobs).
    pub fn with_service_credential(mut self, credential: Option<ServiceCredential>) -> Self {
        self.service = credential;
        self
    }

    /// How old a last-known answer may be when billing is unreachable (0 disables).
    pub fn with_stale_for(mut self, stale_for: Duration) -> Self {
        self.stale_for = stale_for;
        self
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn redis(&self) -> Option<ConnectionManager> {
        if self.now_ms() < self.skip_redis_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        self.redis.clone()
    }

    fn redis_failed(&self, e: &redis::RedisError) {
        let until = self.now_ms() + u64::try_from(BREAKER_OPEN.as_millis()).unwrap_or(2000);
        self.skip_redis_until_ms.store(until, Ordering::Relaxed);
        metrics::counter!("cos_entitlements_cache_errors_total").increment(1);
        tracing::warn!(error = %e, "entitlement cache (Redis) unavailable; asking billing directly for 2 s");
    }

    fn request<T>(
        &self,
        msg: T,
        method: &str,
        tenant_id: Uuid,
        auth: &CallAuth,
    ) -> Result<tonic::Request<T>, ServiceError> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(CALL_TIMEOUT);
        cos_telemetry::inject_context(req.metadata_mut());
        if let Some(rid) = cos_telemetry::current_request_id()
            && let Ok(v) = rid.parse()
        {
            req.metadata_mut().insert("x-request-id", v);
        }
        match auth {
            CallAuth::Bearer(token) => {
                let v = format!("Bearer {token}")
                    .parse()
                    .map_err(|_| ServiceError::unauthenticated("malformed access token"))?;
                req.metadata_mut().insert("authorization", v);
            }
            CallAuth::Service => {
                let cred = self.service.as_ref().ok_or_else(|| {
                    tracing::error!("a service call to billing needs COS_AUTH__SERVICE_SECRET");
                    ServiceError::new(
                        ErrorCode::Unavailable,
                        "plan limits cannot be checked: service credential not configured",
                    )
                })?;
                let v = cred
                    .header_value(&format!("{SERVICE}/{method}"), tenant_id)
                    .parse()
                    .map_err(|_| ServiceError::internal())?;
                req.metadata_mut().insert(SERVICE_AUTH_HEADER, v);
            }
        }
        Ok(req)
    }

    /// The tenant's entitlements (cached). See the module docs for the failure policy.
    pub async fn get(
        &self,
        tenant_id: Uuid,
        auth: &CallAuth,
    ) -> Result<Entitlements, ServiceError> {
        let key = cache_key(&self.prefix, tenant_id);
        let redis = self.redis();
        if redis.is_none()
            && let Some(e) = self.known(tenant_id, LOCAL_TTL.min(self.ttl))
        {
            return Ok(e);
        }
        if let Some(mut conn) = redis {
            match conn.get::<_, Option<String>>(&key).await {
                Ok(Some(json)) => match serde_json::from_str::<Entitlements>(&json) {
                    Ok(e) if e.tenant_id == tenant_id => {
                        metrics::counter!("cos_entitlements_cache_hits_total").increment(1);
                        return Ok(e);
                    }
                    _ => {
                        tracing::warn!(%tenant_id, "unreadable entitlement cache entry; ignoring it")
                    }
                },
                Ok(None) => {}
                Err(e) => self.redis_failed(&e),
            }
        }
        metrics::counter!("cos_entitlements_cache_misses_total").increment(1);
        let req = self.request(
            pb::CheckEntitlementRequest {
                tenant_id: tenant_id.to_string(),
            },
            "CheckEntitlement",
            tenant_id,
            auth,
        )?;
        let fetched = match self.grpc.clone().check_entitlement(req).await {
            Ok(resp) => Entitlements::from_proto(resp.get_ref()).map_err(|e| {
                tracing::error!(error = %e, "billing sent unreadable entitlements");
                ServiceError::internal()
            })?,
            Err(status) => return self.fallback(tenant_id, &status),
        };
        if fetched.tenant_id != tenant_id {
            tracing::error!(%tenant_id, answered = %fetched.tenant_id, "billing answered for another tenant");
            return Err(ServiceError::internal());
        }
        self.remember(&fetched);
        if let Some(mut conn) = self.redis()
            && let Ok(json) = serde_json::to_string(&fetched)
        {
            let ttl = cache_ttl_for(&fetched, self.ttl);
            if let Err(e) = conn
                .pset_ex::<_, _, ()>(&key, json, u64::try_from(ttl.as_millis()).unwrap_or(1000))
                .await
            {
                self.redis_failed(&e);
            }
        }
        Ok(fetched)
    }

    fn remember(&self, e: &Entitlements) {
        let mut map = self.last_known.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= STALE_ENTRIES_MAX {
            let cutoff = self.stale_for;
            map.retain(|_, (at, _)| at.elapsed() < cutoff);
            if map.len() >= STALE_ENTRIES_MAX {
                map.clear();
            }
        }
        map.insert(e.tenant_id, (Instant::now(), e.clone()));
    }

    fn known(&self, tenant_id: Uuid, max_age: Duration) -> Option<Entitlements> {
        self.last_known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&tenant_id)
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, e)| e.clone())
    }

    fn fallback(
        &self,
        tenant_id: Uuid,
        status: &tonic::Status,
    ) -> Result<Entitlements, ServiceError> {
        let err = ServiceError::from_status(status);
        let unreachable = matches!(
            err.code,
            ErrorCode::Unavailable | ErrorCode::DeadlineExceeded | ErrorCode::Internal
        );
        if !unreachable {
            return Err(err);
        }
        match self.known(tenant_id, self.stale_for) {
            Some(e) => {
                metrics::counter!("cos_entitlements_stale_answers_total").increment(1);
                tracing::warn!(%tenant_id, error = %status.message(), "billing unreachable; using the last known entitlements");
                Ok(e)
            }
            None => {
                metrics::counter!("cos_entitlements_unavailable_total").increment(1);
                tracing::warn!(%tenant_id, code = ?status.code(), error = %status.message(), "billing unreachable; entitlements unknown");
                Err(ServiceError::new(
                    ErrorCode::Unavailable,
                    "plan limits cannot be checked right now; nothing was changed, retry shortly",
                ))
            }
        }
    }

    /// Takes `amount` of a per-cycle quota, all or nothing. Same `idempotency_key`, same grant.
    pub async fn consume(
        &self,
        tenant_id: Uuid,
        quota: Limit,
        amount: i64,
        idempotency_key: &str,
        auth: &CallAuth,
    ) -> Result<QuotaGrant, ServiceError> {
        self.consume_inner(tenant_id, quota, amount, idempotency_key, false, auth)
            .await
    }

    /// Takes up to `amount` (at least 1) of a per-cycle quota: what is left when less remains.
    pub async fn consume_up_to(
        &self,
        tenant_id: Uuid,
        quota: Limit,
        amount: i64,
        idempotency_key: &str,
        auth: &CallAuth,
    ) -> Result<QuotaGrant, ServiceError> {
        self.consume_inner(tenant_id, quota, amount, idempotency_key, true, auth)
            .await
    }

    async fn consume_inner(
        &self,
        tenant_id: Uuid,
        quota: Limit,
        amount: i64,
        idempotency_key: &str,
        allow_partial: bool,
        auth: &CallAuth,
    ) -> Result<QuotaGrant, ServiceError> {
        let req = self.request(
            pb::ConsumeQuotaRequest {
                tenant_id: tenant_id.to_string(),
                quota: quota.as_str().to_owned(),
                amount,
                idempotency_key: idempotency_key.to_owned(),
                allow_partial,
            },
            "ConsumeQuota",
            tenant_id,
            auth,
        )?;
        let r = self
            .grpc
            .clone()
            .consume_quota(req)
            .await
            .map_err(|s| {
                unreachable_is_unavailable(
                    &s,
                    "quota cannot be checked right now; nothing was sent or created, retry shortly",
                )
            })?
            .into_inner();
        Ok(QuotaGrant {
            granted: r.granted,
            used: r.used,
            limit: from_setting(r.limit.as_ref()),
            cycle_start: r.cycle_start.as_ref().and_then(from_ts),
            cycle_end: r.cycle_end.as_ref().and_then(from_ts),
            replayed: r.replayed,
        })
    }

    /// Gives back up to `amount` of the grant made under `idempotency_key`; returns how much
    /// was released.
    pub async fn release(
        &self,
        tenant_id: Uuid,
        idempotency_key: &str,
        amount: i64,
        auth: &CallAuth,
    ) -> Result<i64, ServiceError> {
        let req = self.request(
            pb::ReleaseQuotaRequest {
                tenant_id: tenant_id.to_string(),
                idempotency_key: idempotency_key.to_owned(),
                amount,
            },
            "ReleaseQuota",
            tenant_id,
            auth,
        )?;
        let r =
            self.grpc.clone().release_quota(req).await.map_err(|s| {
                unreachable_is_unavailable(&s, "billing is unreachable; retry shortly")
            })?;
        Ok(r.into_inner().released)
    }

    /// Reports a gauge (seats, contacts, API keys, storage) for usage pages. Best effort:
    /// callers log a failure and carry on.
    pub async fn report_usage(
        &self,
        tenant_id: Uuid,
        metric: Limit,
        value: i64,
        auth: &CallAuth,
    ) -> Result<(), ServiceError> {
        let req = self.request(
            pb::ReportUsageRequest {
                tenant_id: tenant_id.to_string(),
                metric: metric.as_str().to_owned(),
                value,
            },
            "ReportUsage",
            tenant_id,
            auth,
        )?;
        self.grpc
            .clone()
            .report_usage(req)
            .await
            .map(|_| ())
            .map_err(|s| ServiceError::from_status(&s))
    }

    /// Drops the cached entitlements of a tenant (billing does this on every change).
    pub async fn invalidate(&self, tenant_id: Uuid) {
        if let Some(mut conn) = self.redis()
            && let Err(e) = conn.del::<_, ()>(cache_key(&self.prefix, tenant_id)).await
        {
            self.redis_failed(&e);
        }
        self.last_known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&tenant_id);
    }
}

fn unreachable_is_unavailable(status: &tonic::Status, message: &str) -> ServiceError {
    let err = ServiceError::from_status(status);
    if matches!(
        err.code,
        ErrorCode::Unavailable | ErrorCode::DeadlineExceeded
    ) {
        tracing::warn!(code = ?status.code(), error = %status.message(), "billing unreachable");
        ServiceError::new(ErrorCode::Unavailable, message)
    } else {
        err
    }
}

/// Cached no longer than `ttl`, nor past the next status change (period end, grace end), so a
/// lapse shows up on time.
pub fn cache_ttl_for(e: &Entitlements, ttl: Duration) -> Duration {
    let next = match e.status {
        SubscriptionStatus::Trialing | SubscriptionStatus::Active => e.period_end,
        SubscriptionStatus::Grace => e.grace_end,
        SubscriptionStatus::Expired | SubscriptionStatus::Suspended => None,
    };
    let until_change = next
        .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
        .unwrap_or(ttl);
    ttl.min(until_change).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_cache_never_outlives_the_next_status_change() {
        let e = Entitlements {
            tenant_id: Uuid::nil(),
            plan: "starter".into(),
            status: SubscriptionStatus::Active,
            period_end: Some(Utc::now() + chrono::Duration::seconds(5)),
            grace_end: None,
            limits: BTreeMap::new(),
            channels: vec![],
            automation: false,
        };
        assert!(cache_ttl_for(&e, Duration::from_secs(60)) <= Duration::from_secs(5));
        let far = Entitlements {
            period_end: Some(Utc::now() + chrono::Duration::days(5)),
            ..e.clone()
        };
        assert_eq!(
            cache_ttl_for(&far, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        let past = Entitlements {
            period_end: Some(Utc::now() - chrono::Duration::days(5)),
            ..e
        };
        assert_eq!(
            cache_ttl_for(&past, Duration::from_secs(60)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_metadata_and_never_printed() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("authorization", "Bearer abc.def".parse().unwrap());
        let auth = CallAuth::from_metadata(&md).unwrap();
        assert!(matches!(&auth, CallAuth::Bearer(t) if t == "abc.def"));
        assert!(!format!("{auth:?}").contains("abc"));
        assert!(CallAuth::from_metadata(&tonic::metadata::MetadataMap::new()).is_none());
    }
}
