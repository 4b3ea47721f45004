//! Pure identity rules: input types that can only hold valid values, and the membership rules
//! (who may grant which role, the last owner). No I/O here.

mod input;
mod membership;

pub use input::{DisplayName, Email, Password, TenantName, slug_base};
pub use membership::{MembershipChange, check_membership_change};
