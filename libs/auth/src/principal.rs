//! Who is calling: a user acting in a tenant, or an API key of a tenant.

use uuid::Uuid;

use crate::roles::{Role, role_has};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    User,
    ApiKey,
}

/// The authenticated caller, put in request extensions by the auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// The user (for API keys: the user who created the key).
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub role: Role,
    pub api_key_id: Option<Uuid>,
    /// API keys: the permissions granted to the key (further limited by `role`).
    pub scopes: Vec<String>,
    pub platform_admin: bool,
    /// Refresh-token family (login session) of user tokens.
    pub session_id: Option<Uuid>,
}

impl Principal {
    /// Whether the caller holds `permission` in its tenant: the role must grant it, and an API key
    /// must also have it among its scopes.
    pub fn has(&self, permission: &str) -> bool {
        if !role_has(self.role, permission) {
            return false;
        }
        match self.kind {
            PrincipalKind::User => true,
            PrincipalKind::ApiKey => {
                crate::roles::api_key_grantable(permission)
                    && self.scopes.iter().any(|s| s == permission)
            }
        }
    }
}
