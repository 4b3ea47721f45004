//! Plan gating for every service of the mesh: the entitlement types ([`Entitlements`],
//! [`Limit`], [`SubscriptionStatus`]) with the checks a service runs before creating or sending,
//! and [`EntitlementClient`], which asks billing (`CheckEntitlement`, cached in Redis; and
//! `ConsumeQuota` for per-cycle quotas, atomic in billing's database).
//!
//! ```no_run
//! # async fn add_member(client: &cos_entitlements::EntitlementClient, tenant: uuid::Uuid,
//! #     token: String, members_now: i64) -> Result<(), cos_errors::ServiceError> {
//! use cos_entitlements::{CallAuth, Limit};
//! let auth = CallAuth::Bearer(token);
//! let plan = client.get(tenant, &auth).await?;       // fails closed if billing is unknown
//! plan.check_limit(Limit::Seats, members_now, 1)?;   // 402 naming the limit, value and usage
//! # Ok(()) }
//! ```

mod client;
pub mod convert;
mod types;

pub use client::{
    CallAuth, DEFAULT_STALE_FOR, EntitlementClient, cache_key, cache_key_stem, cache_ttl_for,
};
pub use types::{Entitlements, Limit, QuotaGrant, SubscriptionStatus, plan_limit_error};
