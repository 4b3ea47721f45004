//! Authentication and authorization shared by every service: EdDSA access tokens with `kid`,
//! the principal they carry, the role/permission matrix, and the tower layer that enforces each
//! RPC's `(campaignos.common.v1.policy)` before a handler runs.

mod jwt;
mod layer;
mod principal;
mod remote;
mod roles;
mod service;

pub use jwt::{
    AccessClaims, Jwk, KeySet, SigningKey, TokenError, TokenIssuer, TokenVerifier, random_token,
    sha256_hex,
};
pub use layer::{AuthLayer, AuthService, MethodPolicies, principal_of};
pub use principal::{Principal, PrincipalKind};
pub use remote::RemoteJwks;
pub use roles::{ALL_PERMISSIONS, Permission, Role, api_key_grantable, permissions_of};
pub use service::{
    MAX_SKEW_SECS, MIN_SERVICE_SECRET_LEN, SERVICE_AUTH_HEADER, ServiceAuthError,
    ServiceCredential, ServicePrincipal, service_principal_of,
};
