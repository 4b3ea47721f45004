//! The JWKS of identity, fetched over gRPC and kept fresh: how every service other than identity
//! verifies access tokens locally.

use std::time::Duration;

use cos_proto::identity::v1::GetJwksRequest;
use cos_proto::identity::v1::identity_service_client::IdentityServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::{Jwk, KeySet, TokenVerifier};

/// A verifier whose keys come from identity's `GetJwks`.
#[derive(Clone)]
pub struct RemoteJwks {
    verifier: TokenVerifier,
    client: IdentityServiceClient<Channel>,
}

impl RemoteJwks {
    /// Connects lazily to identity at `identity_url` (`http://host:port`).
    pub fn new(identity_url: &str, issuer: &str, audience: &str) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(identity_url.to_owned())
            .map_err(|e| anyhow::anyhow!("identity URL {identity_url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            verifier: TokenVerifier::new(KeySet::new(), issuer, audience),
            client: IdentityServiceClient::new(channel),
        })
    }

    pub fn verifier(&self) -> TokenVerifier {
        self.verifier.clone()
    }

    /// Fetches the JWKS now; returns how many keys it holds.
    pub async fn refresh(&self) -> anyhow::Result<usize> {
        let jwks = self
            .client
            .clone()
            .get_jwks(GetJwksRequest {})
            .await?
            .into_inner();
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
        self.verifier.keys().replace(&keys)?;
        Ok(keys.len())
    }

    /// Tries for up to `wait` to load the keys (start-up: identity may still be starting);
    /// logs and carries on if it cannot, the refresher keeps trying.
    pub async fn load(&self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.refresh().await {
                Ok(_) => return,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(error = %e, "identity JWKS not available yet; continuing");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Re-fetches every `every` (with backoff after failures) until shutdown.
    pub fn spawn_refresher(
        &self,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let wait = match this.refresh().await {
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
}
