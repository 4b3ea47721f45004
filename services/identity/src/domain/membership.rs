//! Who may change whose role, and the invariant that a tenant always keeps an owner.

use cos_auth::Role;

/// A requested change to one membership.
#[derive(Debug, Clone, Copy)]
pub enum MembershipChange {
    Add { role: Role },
    SetRole { current: Role, new: Role },
    Remove { current: Role },
}

/// Checks a change requested by `actor` (already known to hold `members.write`).
/// `owner_count` is the number of owners the tenant has now.
pub fn check_membership_change(
    actor: Role,
    change: MembershipChange,
    owner_count: usize,
) -> Result<(), String> {
    let touches_owner = match change {
        MembershipChange::Add { role } => role == Role::Owner,
        MembershipChange::SetRole { current, new } => current == Role::Owner || new == Role::Owner,
        MembershipChange::Remove { current } => current == Role::Owner,
    };
    if touches_owner && actor != Role::Owner {
        return Err("only an owner can grant, change or remove the owner role".into());
    }
    let loses_an_owner = matches!(
        change,
        MembershipChange::SetRole { current: Role::Owner, new } if new != Role::Owner
    ) || matches!(
        change,
        MembershipChange::Remove {
            current: Role::Owner
        }
    );
    if loses_an_owner && owner_count <= 1 {
        return Err(
            "the last owner cannot be removed or demoted; make someone else owner first".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_owner_is_protected() {
        let demote = MembershipChange::SetRole {
            current: Role::Owner,
            new: Role::Admin,
        };
        assert!(check_membership_change(Role::Owner, demote, 1).is_err());
        assert!(check_membership_change(Role::Owner, demote, 2).is_ok());
        let remove = MembershipChange::Remove {
            current: Role::Owner,
        };
        assert!(check_membership_change(Role::Owner, remove, 1).is_err());
        assert!(check_membership_change(Role::Owner, remove, 2).is_ok());
    }

    #[test]
    fn admins_cannot_touch_owners() {
        assert!(
            check_membership_change(Role::Admin, MembershipChange::Add { role: Role::Owner }, 1)
                .is_err()
        );
        assert!(
            check_membership_change(Role::Admin, MembershipChange::Add { role: Role::Editor }, 1)
                .is_ok()
        );
        let promote = MembershipChange::SetRole {
            current: Role::Viewer,
            new: Role::Owner,
        };
        assert!(check_membership_change(Role::Admin, promote, 1).is_err());
        assert!(check_membership_change(Role::Owner, promote, 1).is_ok());
        assert!(
            check_membership_change(
                Role::Admin,
                MembershipChange::Remove {
                    current: Role::Owner
                },
                3
            )
            .is_err()
        );
    }
}
