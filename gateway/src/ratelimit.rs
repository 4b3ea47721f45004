//! Fixed-window rate limits in Redis, shared by every gateway replica. One script call checks
//! every window a request counts against (client IP, tenant), so a request costs one round trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

const WINDOW: Duration = Duration::from_secs(60);

/// INCR each key, start its window on first use, and report count and remaining window.
const SCRIPT: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then redis.call('PEXPIRE', key, ARGV[1]); ttl = tonumber(ARGV[1]) end
  out[#out + 1] = n
  out[#out + 1] = ttl
end
return out
";

#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    prefix: String,
    script: redis::Script,
    /// Circuit breaker: until this instant (ms since `epoch`) Redis is not asked at all.
    skip_until_ms: Arc<AtomicU64>,
    epoch: Instant,
}

/// After a Redis failure, requests skip the limiter for this long instead of each paying for a
/// reconnect attempt (which made every request hundreds of milliseconds slower during an outage).
const BREAKER_OPEN: Duration = Duration::from_secs(2);

/// One window a request counts against.
pub struct Limit {
    pub scope: &'static str,
    pub key: String,
    pub per_minute: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited {
        scope: &'static str,
        limit: u32,
        retry_after_secs: u64,
    },
}

impl RateLimiter {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Connects on first use (and reconnects after failures), so the gateway starts and serves
    /// without Redis.
    pub fn connect(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            script: redis::Script::new(SCRIPT),
            skip_until_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        })
    }

    /// Counts the request against every limit. Fails open (allows) when Redis is unreachable: a
    /// limiter outage must not become an API outage; the failure is logged and counted.
    pub async fn check(&self, limits: &[Limit]) -> Verdict {
        if limits.is_empty() {
            return Verdict::Allowed;
        }
        let now_ms = self.now_ms();
        if now_ms < self.skip_until_ms.load(Ordering::Relaxed) {
            metrics::counter!("cos_gateway_rate_limiter_skipped_total").increment(1);
            return Verdict::Allowed;
        }
        let mut inv = self.script.prepare_invoke();
        for l in limits {
            inv.key(format!("{}rl:{}:{}", self.prefix, l.scope, l.key));
        }
        inv.arg(u64::try_from(WINDOW.as_millis()).unwrap_or(60_000));
        let mut conn = self.conn.clone();
        let counts: Vec<i64> = match inv.invoke_async(&mut conn).await {
            Ok(v) => v,
            Err(e) => {
                let reopen =
                    self.now_ms() + u64::try_from(BREAKER_OPEN.as_millis()).unwrap_or(2000);
                self.skip_until_ms.store(reopen, Ordering::Relaxed);
                tracing::warn!(error = %e, "rate limiter unavailable; allowing requests unlimited for 2 s");
                metrics::counter!("cos_gateway_rate_limiter_errors_total").increment(1);
                return Verdict::Allowed;
            }
        };
        for (l, pair) in limits.iter().zip(counts.chunks(2)) {
            let (n, ttl_ms) = (pair[0], pair.get(1).copied().unwrap_or(60_000));
            if n > i64::from(l.per_minute) {
                metrics::counter!("cos_gateway_rate_limited_total", "scope" => l.scope)
                    .increment(1);
                let retry = u64::try_from(ttl_ms.max(1)).unwrap_or(1).div_ceil(1000);
                return Verdict::Limited {
                    scope: l.scope,
                    limit: l.per_minute,
                    retry_after_secs: retry.max(1),
                };
            }
        }
        Verdict::Allowed
    }
}
