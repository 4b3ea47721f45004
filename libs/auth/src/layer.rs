//! The tower layer every gRPC service runs behind: it verifies the bearer access token and
//! enforces the RPC's `(campaignos.common.v1.policy)` (public, permission, platform admin)
//! before any handler code runs, so a handler cannot forget to check.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use cos_errors::ServiceError;
use cos_proto::common::v1::MethodPolicy;
use futures::future::BoxFuture;

use crate::jwt::TokenVerifier;
use crate::principal::Principal;
use crate::service::{SERVICE_AUTH_HEADER, ServiceCredential, ServicePrincipal};

/// Policies of the methods a server hosts, keyed by gRPC path.
#[derive(Clone, Debug, Default)]
pub struct MethodPolicies {
    by_path: Arc<HashMap<String, MethodPolicy>>,
}

impl MethodPolicies {
    /// Reads the policies of the named services (`campaignos.identity.v1.IdentityService`) from the
    /// embedded descriptor set. Panics on an unknown service name: that is a programming error
    /// caught by the first test that starts the service.
    pub fn for_services(services: &[&str]) -> Self {
        let pool = cos_proto::descriptor_pool();
        let mut by_path = HashMap::new();
        for name in services {
            let service = pool
                .get_service_by_name(name)
                .unwrap_or_else(|| panic!("service {name} is not in the descriptor set"));
            for method in service.methods() {
                by_path.insert(
                    cos_proto::grpc_path(&method),
                    cos_proto::method_policy(&method),
                );
            }
        }
        Self {
            by_path: Arc::new(by_path),
        }
    }

    pub fn get(&self, path: &str) -> Option<&MethodPolicy> {
        self.by_path.get(path)
    }

    /// Decides whether a call may proceed; returns the principal to attach, if any.
    pub fn authorize(
        &self,
        verifier: &TokenVerifier,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<Option<Principal>, ServiceError> {
        let default_policy = MethodPolicy::default();
        let policy = match self.get(path) {
            Some(p) => p,
            // Health checks and reflection are not ours to guard.
            None if !path.starts_with("/campaignos.") => return Ok(None),
            // A campaignos method without a known policy: require authentication at least.
            None => &default_policy,
        };
        let token = authorization.and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
                .map(str::trim)
        });
        if policy.public {
            // A valid token on a public call still identifies the caller (e.g. logout).
            return Ok(token.and_then(|t| verifier.verify(t).ok()));
        }
        let token = token.ok_or_else(|| ServiceError::unauthenticated("missing bearer token"))?;
        let principal = verifier.verify(token).map_err(|e| {
            tracing::debug!(error = %e, "access token rejected");
            ServiceError::unauthenticated("invalid or expired access token")
        })?;
        if policy.platform_admin && !principal.platform_admin {
            return Err(ServiceError::permission_denied(
                "requires platform administrator",
            ));
        }
        if !policy.permission.is_empty() && !principal.has(&policy.permission) {
            return Err(ServiceError::permission_denied(format!(
                "requires permission {}",
                policy.permission
            )));
        }
        Ok(Some(principal))
    }
}

/// Layer for `tonic::transport::Server::layer`.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: TokenVerifier,
    policies: MethodPolicies,
    service: Option<ServiceCredential>,
}

impl AuthLayer {
    pub fn new(verifier: TokenVerifier, policies: MethodPolicies) -> Self {
        Self {
            verifier,
            policies,
            service: None,
        }
    }

    /// Also accept service credentials (see [`crate::ServiceCredential`]) on `internal` methods.
    pub fn with_service_credential(mut self, credential: Option<ServiceCredential>) -> Self {
        self.service = credential;
        self
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            policies: self.policies.clone(),
            service: self.service.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: TokenVerifier,
    policies: MethodPolicies,
    service: Option<ServiceCredential>,
}

impl MethodPolicies {
    /// Decides on a call that carries a service credential: only `internal` methods accept one,
    /// and only when this server has the mesh secret.
    pub fn authorize_service(
        &self,
        credential: Option<&ServiceCredential>,
        path: &str,
        header: &str,
    ) -> Result<ServicePrincipal, ServiceError> {
        if !self.get(path).is_some_and(|p| p.internal) {
            return Err(ServiceError::permission_denied(
                "service credentials are only accepted on internal methods",
            ));
        }
        let Some(credential) = credential else {
            return Err(ServiceError::unauthenticated(
                "this service does not accept service credentials (no service secret configured)",
            ));
        };
        credential.verify(path, header).map_err(|e| {
            tracing::warn!(error = %e, path, "service credential rejected");
            ServiceError::unauthenticated("invalid service credential")
        })
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(header) = req.headers().get(SERVICE_AUTH_HEADER) {
            let verdict = match header.to_str() {
                Ok(h) => {
                    self.policies
                        .authorize_service(self.service.as_ref(), req.uri().path(), h)
                }
                Err(_) => Err(ServiceError::unauthenticated("invalid service credential")),
            };
            return match verdict {
                Ok(principal) => {
                    let span = tracing::Span::current();
                    span.record("tenant_id", tracing::field::display(principal.tenant_id));
                    req.extensions_mut().insert(principal);
                    let clone = self.inner.clone();
                    let mut inner = std::mem::replace(&mut self.inner, clone);
                    Box::pin(inner.call(req))
                }
                Err(err) => {
                    let response = err.to_status().into_http::<RB>();
                    Box::pin(async move { Ok(response) })
                }
            };
        }
        let authorization = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self
            .policies
            .authorize(&self.verifier, req.uri().path(), authorization)
        {
            Ok(principal) => {
                if let Some(p) = principal {
                    let span = tracing::Span::current();
                    span.record("tenant_id", tracing::field::display(p.tenant_id));
                    span.record("user_id", tracing::field::display(p.user_id));
                    req.extensions_mut().insert(p);
                }
                // The clone is ready-polled; take it and leave a fresh clone behind (tower's
                // documented pattern for services that are Clone).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(req))
            }
            Err(err) => {
                let response = err.to_status().into_http::<RB>();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// The principal the auth layer attached; handlers of non-public methods can rely on it.
pub fn principal_of<T>(req: &tonic::Request<T>) -> Result<&Principal, tonic::Status> {
    req.extensions()
        .get::<Principal>()
        .ok_or_else(|| ServiceError::unauthenticated("missing bearer token").to_status())
}
