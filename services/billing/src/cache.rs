//! Billing's side of the entitlement cache: it deletes a tenant's cached entitlements after
//! every change (and all of them after a plan edit), so clients see changes at once rather than
//! after the TTL. Best effort: when Redis is unreachable the entries expire by their TTL.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

#[derive(Clone)]
pub struct EntitlementCache {
    conn: Option<ConnectionManager>,
    prefix: String,
}

impl EntitlementCache {
    pub fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let conn = if url.is_empty() {
            None
        } else {
            let client =
                redis::Client::open(url).map_err(|e| anyhow::anyhow!("COS_REDIS__URL: {e}"))?;
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(Some(Duration::from_millis(500)))
                .set_response_timeout(Some(Duration::from_millis(500)));
            Some(ConnectionManager::new_lazy_with_config(client, config)?)
        };
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    pub async fn invalidate(&self, tenant_id: Uuid) {
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        let key = cos_entitlements::cache_key(&self.prefix, tenant_id);
        if let Err(e) = conn.del::<_, ()>(&key).await {
            metrics::counter!("cos_billing_cache_invalidation_errors_total").increment(1);
            tracing::warn!(error = %e, %tenant_id, "could not drop cached entitlements; they expire by TTL");
        }
    }

    /// After a plan edit: every cached tenant (SCAN, so Redis is never blocked).
    pub async fn invalidate_all(&self) {
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        let pattern = format!("{}{}*", self.prefix, cos_entitlements::cache_key_stem());
        let mut cursor: u64 = 0;
        loop {
            let step: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await;
            match step {
                Ok((next, keys)) => {
                    if !keys.is_empty()
                        && let Err(e) = conn.del::<_, ()>(keys).await
                    {
                        tracing::warn!(error = %e, "could not drop cached entitlements; they expire by TTL");
                        return;
                    }
                    if next == 0 {
                        return;
                    }
                    cursor = next;
                }
                Err(e) => {
                    metrics::counter!("cos_billing_cache_invalidation_errors_total").increment(1);
                    tracing::warn!(error = %e, "could not drop cached entitlements; they expire by TTL");
                    return;
                }
            }
        }
    }
}
