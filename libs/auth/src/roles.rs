//! The role/permission matrix: the only place that says what an owner, admin, editor or viewer
//! may do. Method policies in the protos name permissions; this table grants them to roles.

use std::fmt;
use std::str::FromStr;

/// A member's role in a tenant, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Owner,
    Admin,
    Editor,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Editor, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "editor" => Ok(Role::Editor),
            "viewer" => Ok(Role::Viewer),
            _ => Err("must be one of owner, admin, editor, viewer".to_owned()),
        }
    }
}

/// A permission name as it appears in method policies (`"members.write"`).
pub type Permission = &'static str;

/// (permission, lowest role that holds it, whether an API key may be granted it).
/// Roles are ordered, so "lowest role" reads as "this role and every role above it".
const MATRIX: &[(Permission, Role, bool)] = &[
    ("profile.read", Role::Viewer, true),
    ("tenants.list", Role::Viewer, false),
    ("tenants.create", Role::Viewer, false),
    ("tenants.switch", Role::Viewer, false),
    ("members.read", Role::Viewer, true),
    ("members.write", Role::Admin, false),
    ("api_keys.read", Role::Admin, true),
    ("api_keys.write", Role::Admin, false),
    ("audit.read", Role::Admin, true),
    ("contacts.read", Role::Viewer, true),
    ("contacts.write", Role::Editor, true),
    ("contacts.export", Role::Editor, true),
    ("contacts.erase", Role::Admin, true),
    ("contact_attributes.write", Role::Admin, true),
    ("segments.read", Role::Viewer, true),
    ("segments.write", Role::Editor, true),
    ("campaigns.read", Role::Viewer, true),
    ("campaigns.write", Role::Editor, true),
    ("campaigns.launch", Role::Editor, true),
    ("channels.read", Role::Viewer, true),
    ("channels.write", Role::Admin, false),
    ("analytics.read", Role::Viewer, true),
    ("analytics.ingest", Role::Editor, true),
    ("plan.read", Role::Viewer, true),
    ("billing.read", Role::Admin, true),
    ("billing.manage", Role::Owner, false),
];

/// Every permission the matrix knows.
pub const ALL_PERMISSIONS: fn() -> Vec<Permission> = || MATRIX.iter().map(|(p, _, _)| *p).collect();

/// Permissions a role holds.
pub fn permissions_of(role: Role) -> Vec<Permission> {
    MATRIX
        .iter()
        .filter(|(_, min, _)| role <= *min)
        .map(|(p, _, _)| *p)
        .collect()
}

pub(crate) fn role_has(role: Role, permission: &str) -> bool {
    MATRIX
        .iter()
        .any(|(p, min, _)| *p == permission && role <= *min)
}

/// Whether an API key may carry this permission (tenant management and key minting stay
/// with people).
pub fn api_key_grantable(permission: &str) -> bool {
    MATRIX
        .iter()
        .any(|(p, _, grantable)| *p == permission && *grantable)
}

#[cfg(test)]
fn known(permission: &str) -> bool {
    MATRIX.iter().any(|(p, _, _)| *p == permission)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_nested() {
        for pair in Role::ALL.windows(2) {
            let (higher, lower) = (pair[0], pair[1]);
            for p in permissions_of(lower) {
                assert!(role_has(higher, p), "{higher} lacks {p} that {lower} has");
            }
        }
    }

    #[test]
    fn the_matrix_says_what_the_product_promises() {
        assert!(role_has(Role::Owner, "billing.manage"));
        assert!(role_has(Role::Viewer, "plan.read"));
        assert!(!role_has(Role::Editor, "billing.read"));
        assert!(role_has(Role::Admin, "billing.read"));
        assert!(!role_has(Role::Admin, "billing.manage"));
        assert!(role_has(Role::Admin, "api_keys.write"));
        assert!(!role_has(Role::Editor, "api_keys.write"));
        assert!(!role_has(Role::Viewer, "api_keys.write"));
        assert!(role_has(Role::Viewer, "members.read"));
        assert!(!role_has(Role::Viewer, "members.write"));
        assert!(role_has(Role::Editor, "campaigns.launch"));
        assert!(!role_has(Role::Viewer, "campaigns.write"));
        assert!(!api_key_grantable("api_keys.write"));
        assert!(!api_key_grantable("tenants.create"));
        assert!(api_key_grantable("contacts.write"));
        assert!(!role_has(Role::Owner, "no.such.permission"));
    }

    #[test]
    fn every_permission_in_the_protos_is_in_the_matrix() {
        let pool = cos_proto::descriptor_pool();
        for service in pool
            .services()
            .filter(|s| s.package_name().starts_with("campaignos."))
        {
            for method in service.methods() {
                let policy = cos_proto::method_policy(&method);
                if !policy.permission.is_empty() {
                    assert!(
                        known(&policy.permission),
                        "{} names unknown permission {}",
                        method.full_name(),
                        policy.permission
                    );
                }
            }
        }
    }
}
