//! Campaign OS integration configs: provider settings stored encrypted, masked on read, versioned
//! and audited.
//!
//! Each owning service keeps two tables in its own schema, created by [`ensure_tables`]:
//! `integration_configs` (one row per scope, tenant and provider) and `integration_config_audit`
//! (who changed which fields, when and why). A provider is described by a [`ProviderSpec`];
//! its secret fields are sealed with the key ring (DESIGN.md §8), bound by associated data to
//! schema, scope, tenant, provider and field, and stored with a masked display computed at write
//! time, so showing settings never decrypts. Tenant configs live under forced row-level security;
//! platform configs have no tenant and are reached only through system transactions.
//!
//! ```no_run
//! # async fn example(db: &cos_db::Db, ring: &cos_crypto::KeyRing, actor: &cos_integrations::Actor)
//! # -> Result<(), cos_integrations::IntegrationError> {
//! use cos_integrations::{ConfigUpdate, IntegrationStore, Scope, providers::STRIPE};
//!
//! const STORE: IntegrationStore = IntegrationStore::new("billing");
//! let update = ConfigUpdate::new("switch to live mode").set("secret_key", "sk_live_...");
//! let shown = STORE.put(db, ring, Scope::Platform, &STRIPE, update, actor, Some(3)).await?;
//! println!("{:?}", shown.secrets); // {"secret_key": "sk_live_…abcd"}
//!
//! // Per use, so a change applies without a restart:
//! if let Some(stripe) = STORE.load(db, ring, Scope::Platform, "stripe").await? {
//!     let _key = stripe.secret("secret_key").map(|s| s.expose_secret());
//! }
//! # Ok(()) }
//! ```

mod error;
mod schema;
mod spec;
mod store;
mod update;

pub use error::IntegrationError;
pub use schema::{ensure_tables, tables_ddl};
pub use spec::{FieldSpec, ProviderSpec, Validator, providers};
pub use store::{
    Actor, AuditEntry, ConfigUpdate, IntegrationStore, MAX_HISTORY, MaskedConfig, ProviderConfig,
    Scope,
};
pub use update::{ChangeKind, FieldChange, MAX_REASON_CHARS, MAX_VALUE_BYTES};
