//! The store: writes, masked and decrypted reads, audit history and key rotation of integration
//! configs in one service's schema.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use cos_crypto::{KeyRing, Secret};
use cos_db::{Db, Tx};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, FromRow, Postgres, Row};
use uuid::Uuid;

use crate::IntegrationError;
use crate::schema::is_identifier;
use crate::spec::{ProviderSpec, is_name};
use crate::update::{self, FieldChange, Stored, check_reason};

/// Longest request id kept in the audit trail (it comes from a header; longer ones are cut).
const MAX_REQUEST_ID_CHARS: usize = 200;
/// Field name → value (clear setting, ciphertext or masked display), as stored in a jsonb column.
type Fields = BTreeMap<String, String>;

/// Most audit entries [`IntegrationStore::history`] returns at once.
pub const MAX_HISTORY: u32 = 1000;

/// Whose settings: the platform's (one per provider, platform admins only) or a tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Platform,
    Tenant(Uuid),
}

impl Scope {
    /// The tenant, for tenant scope.
    #[must_use]
    pub fn tenant_id(self) -> Option<Uuid> {
        match self {
            Self::Platform => None,
            Self::Tenant(id) => Some(id),
        }
    }

    /// `platform` or `tenant`, as stored in the `scope` column.
    #[must_use]
    pub fn kind(self) -> &'static str {
        match self {
            Self::Platform => "platform",
            Self::Tenant(_) => "tenant",
        }
    }

    fn from_tenant(tenant_id: Option<Uuid>) -> Self {
        tenant_id.map_or(Self::Platform, Self::Tenant)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform => f.write_str("platform"),
            Self::Tenant(id) => write!(f, "tenant/{id}"),
        }
    }
}

/// Who makes a change, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: Uuid,
    pub request_id: String,
    /// Required for platform scope; recorded as the actor kind.
    pub platform_admin: bool,
}

impl Actor {
    fn kind(&self) -> &'static str {
        if self.platform_admin {
            "platform_admin"
        } else {
            "tenant_user"
        }
    }
}

/// A change to a provider's settings.
///
/// `values` maps field names to a new value, or to `None` to remove the field's value. Fields
/// left out keep their current value: in particular a secret the client did not resend stays as
/// it is, so a UI can send only what changed. A secret sent back as exactly its current masked
/// display counts as left out. Values are trimmed.
///
/// `Debug` shows field names only, never values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigUpdate {
    pub values: BTreeMap<String, Option<String>>,
    /// Why: kept in the audit trail (at most 1000 characters; may be empty).
    pub reason: String,
}

impl ConfigUpdate {
    /// An empty update with a reason.
    #[must_use]
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            values: BTreeMap::new(),
            reason: reason.into(),
        }
    }

    /// Sets `field` to `value`.
    #[must_use]
    pub fn set(mut self, field: impl Into<String>, value: impl Into<String>) -> Self {
        self.values.insert(field.into(), Some(value.into()));
        self
    }

    /// Removes `field`'s value.
    #[must_use]
    pub fn remove(mut self, field: impl Into<String>) -> Self {
        self.values.insert(field.into(), None);
        self
    }
}

impl fmt::Debug for ConfigUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values: BTreeMap<&str, &str> = self
            .values
            .iter()
            .map(|(k, v)| (k.as_str(), if v.is_some() { "<set>" } else { "<remove>" }))
            .collect();
        f.debug_struct("ConfigUpdate")
            .field("values", &values)
            .field("reason", &self.reason)
            .finish()
    }
}

/// A config as it may be shown: settings in clear, secrets masked (`sk_live_…abcd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedConfig {
    pub provider: String,
    pub scope: Scope,
    pub version: i64,
    pub settings: BTreeMap<String, String>,
    /// Field → masked display of the secret.
    pub secrets: BTreeMap<String, String>,
    pub updated_by: Uuid,
    pub updated_at: DateTime<Utc>,
}

/// A config ready for use: settings and decrypted secrets. `Debug` redacts the secrets.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub version: i64,
    pub settings: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, Secret>,
}

impl ProviderConfig {
    /// The value of a non-secret field.
    #[must_use]
    pub fn setting(&self, field: &str) -> Option<&str> {
        self.settings.get(field).map(String::as_str)
    }

    /// The value of a secret field.
    #[must_use]
    pub fn secret(&self, field: &str) -> Option<&Secret> {
        self.secrets.get(field)
    }
}

/// One change in a config's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: Uuid,
    pub scope: Scope,
    pub provider: String,
    /// The version the change produced.
    pub version: i64,
    pub actor_user_id: Uuid,
    /// `platform_admin` or `tenant_user`.
    pub actor_kind: String,
    pub request_id: String,
    pub reason: String,
    pub changed_fields: Vec<String>,
    pub changes: Vec<FieldChange>,
    pub at: DateTime<Utc>,
}

/// Integration configs in one service's schema (tables from [`crate::ensure_tables`]).
///
/// Tenant-scope access runs in tenant transactions (row-level security); platform scope runs in
/// system transactions. Reads are a single-row query, cheap enough to do per use, which is how a
/// change takes effect everywhere without a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntegrationStore {
    schema: &'static str,
}

/// A stored row, as read for a write or a masked read.
struct ConfigRow {
    id: Uuid,
    version: i64,
    stored: Stored,
    updated_by: Uuid,
    updated_at: DateTime<Utc>,
}

impl<'r> FromRow<'r, PgRow> for ConfigRow {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        let Json(settings) = row.try_get("settings")?;
        let Json(secrets) = row.try_get("secrets")?;
        let Json(masked) = row.try_get("masked")?;
        Ok(Self {
            id: row.try_get("id")?,
            version: row.try_get("version")?,
            stored: Stored {
                settings,
                secrets,
                masked,
            },
            updated_by: row.try_get("updated_by")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

#[derive(FromRow)]
struct AuditRow {
    id: Uuid,
    version: i64,
    actor_user_id: Uuid,
    actor_kind: String,
    request_id: String,
    reason: String,
    changed_fields: Vec<String>,
    changes: Json<Vec<FieldChange>>,
    at: DateTime<Utc>,
}

impl ConfigRow {
    fn into_masked(self, provider: &str, scope: Scope) -> MaskedConfig {
        MaskedConfig {
            provider: provider.to_owned(),
            scope,
            version: self.version,
            settings: self.stored.settings,
            secrets: self.stored.masked,
            updated_by: self.updated_by,
            updated_at: self.updated_at,
        }
    }
}

impl IntegrationStore {
    /// A store on `<schema>.integration_configs`.
    ///
    /// # Panics
    /// If `schema` is not a plain identifier (`[a-z_][a-z0-9_]{0,62}`); in a `const` this is a
    /// compile error.
    #[must_use]
    pub const fn new(schema: &'static str) -> Self {
        assert!(
            is_identifier(schema),
            "IntegrationStore schema must be a plain identifier"
        );
        Self { schema }
    }

    /// The schema holding the tables.
    #[must_use]
    pub const fn schema(&self) -> &'static str {
        self.schema
    }

    /// Applies `update` to the config of `spec.provider` in `scope` and returns the new config,
    /// masked. The config row and its audit entry are written in one transaction; on any error
    /// nothing is written. An update that changes nothing writes nothing and returns the
    /// current config.
    ///
    /// `expected_version`: `None` writes unconditionally; `Some(v)` requires the current version
    /// to be `v` (0 = the config must not exist yet).
    ///
    /// # Errors
    /// [`IntegrationError::Invalid`] naming each bad field (`values.<field>`, `reason`),
    /// [`IntegrationError::VersionConflict`], [`IntegrationError::PermissionDenied`] for platform
    /// scope without a platform admin, and internal errors.
    #[allow(clippy::too_many_arguments)]
    pub async fn put(
        &self,
        db: &Db,
        keyring: &KeyRing,
        scope: Scope,
        spec: &ProviderSpec,
        update: ConfigUpdate,
        actor: &Actor,
        expected_version: Option<i64>,
    ) -> Result<MaskedConfig, IntegrationError> {
        spec.check()
            .map_err(|detail| IntegrationError::Misconfigured {
                kind: "provider spec",
                detail,
            })?;
        if scope == Scope::Platform && !actor.platform_admin {
            return Err(IntegrationError::PermissionDenied);
        }
        let provider = spec.provider;
        let ConfigUpdate { values, reason } = update;
        let reason = check_reason(&reason).map_err(|v| IntegrationError::Invalid(vec![v]))?;
        let request_id: String = actor
            .request_id
            .chars()
            .take(MAX_REQUEST_ID_CHARS)
            .collect();

        let mut tx = self
            .begin(db, scope, "write platform integration settings")
            .await?;
        let current = self.fetch(&mut tx, scope, provider, true).await?;
        let current_version = current.as_ref().map_or(0, |c| c.version);
        if let Some(expected) = expected_version
            && expected != current_version
        {
            return Err(IntegrationError::VersionConflict {
                provider: provider.to_owned(),
                expected,
                current: current_version,
            });
        }

        let stored = current
            .as_ref()
            .map(|c| c.stored.clone())
            .unwrap_or_default();
        let applied = update::apply(spec, &stored, values, |field, clear| {
            keyring.encrypt_to_string(clear.as_bytes(), &self.aad(scope, provider, field.name))
        })
        .map_err(IntegrationError::Invalid)?;

        let s = self.quoted();
        let (config_id, version, updated_at) = match current {
            Some(current) if applied.changes.is_empty() => {
                tx.commit().await?;
                return Ok(current.into_masked(provider, scope));
            }
            Some(current) => {
                let version = current.version + 1;
                let sql = format!(
                    "UPDATE {s}.integration_configs \
                     SET version = $2, settings = $3, secrets = $4, masked = $5, \
                         updated_by = $6, updated_at = now() \
                     WHERE id = $1 RETURNING updated_at"
                );
                let updated_at: DateTime<Utc> = sqlx::query_scalar(AssertSqlSafe(sql))
                    .bind(current.id)
                    .bind(version)
                    .bind(Json(&applied.stored.settings))
                    .bind(Json(&applied.stored.secrets))
                    .bind(Json(&applied.stored.masked))
                    .bind(actor.user_id)
                    .fetch_one(&mut *tx)
                    .await?;
                (current.id, version, updated_at)
            }
            None => {
                let id = Uuid::now_v7();
                let sql = format!(
                    "INSERT INTO {s}.integration_configs \
                     (id, scope, tenant_id, provider, version, settings, secrets, masked, updated_by) \
                     VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8) RETURNING updated_at"
                );
                let inserted = sqlx::query_scalar(AssertSqlSafe(sql))
                    .bind(id)
                    .bind(scope.kind())
                    .bind(scope.tenant_id())
                    .bind(provider)
                    .bind(Json(&applied.stored.settings))
                    .bind(Json(&applied.stored.secrets))
                    .bind(Json(&applied.stored.masked))
                    .bind(actor.user_id)
                    .fetch_one(&mut *tx)
                    .await;
                match inserted {
                    Ok(updated_at) => (id, 1, updated_at),
                    // Created by a concurrent writer after our read: its version is 1.
                    Err(err) if cos_db::unique_violation(&err).is_some() => {
                        return Err(IntegrationError::VersionConflict {
                            provider: provider.to_owned(),
                            expected: expected_version.unwrap_or(0),
                            current: 1,
                        });
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        };

        let changed_fields: Vec<String> = applied.changes.iter().map(|c| c.field.clone()).collect();
        let sql = format!(
            "INSERT INTO {s}.integration_config_audit \
             (id, config_id, scope, tenant_id, provider, version, actor_user_id, actor_kind, \
              request_id, reason, changed_fields, changes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(Uuid::now_v7())
            .bind(config_id)
            .bind(scope.kind())
            .bind(scope.tenant_id())
            .bind(provider)
            .bind(version)
            .bind(actor.user_id)
            .bind(actor.kind())
            .bind(&request_id)
            .bind(reason)
            .bind(&changed_fields)
            .bind(Json(&applied.changes))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;

        tracing::info!(
            schema = self.schema,
            provider,
            scope = %scope,
            version,
            changed = ?changed_fields,
            actor = %actor.user_id,
            request_id,
            "integration settings changed"
        );
        Ok(MaskedConfig {
            provider: provider.to_owned(),
            scope,
            version,
            settings: applied.stored.settings,
            secrets: applied.stored.masked,
            updated_by: actor.user_id,
            updated_at,
        })
    }

    /// The config with secrets masked, or `None` if there is none. Never decrypts.
    ///
    /// # Errors
    /// [`IntegrationError::Invalid`] for a malformed provider name; database errors.
    pub async fn get_masked(
        &self,
        db: &Db,
        scope: Scope,
        provider: &str,
    ) -> Result<Option<MaskedConfig>, IntegrationError> {
        check_provider(provider)?;
        let mut tx = self
            .begin(db, scope, "read platform integration settings")
            .await?;
        let row = self.fetch(&mut tx, scope, provider, false).await?;
        tx.commit().await?;
        Ok(row.map(|row| row.into_masked(provider, scope)))
    }

    /// The config with secrets decrypted, for calling the provider, or `None` if there is none.
    /// Read it per use (one indexed single-row query) rather than caching it, so changes apply
    /// without a restart.
    ///
    /// # Errors
    /// [`IntegrationError::Decrypt`] if a secret does not decrypt (key missing from the ring,
    /// ciphertext moved or modified); [`IntegrationError::Invalid`] for a malformed provider
    /// name; database errors.
    pub async fn load(
        &self,
        db: &Db,
        keyring: &KeyRing,
        scope: Scope,
        provider: &str,
    ) -> Result<Option<ProviderConfig>, IntegrationError> {
        check_provider(provider)?;
        let mut tx = self
            .begin(db, scope, "load platform integration settings")
            .await?;
        let sql = format!(
            "SELECT version, settings, secrets FROM {}.integration_configs WHERE {}",
            self.quoted(),
            key_filter(scope)
        );
        let row: Option<(i64, Json<Fields>, Json<Fields>)> =
            bind_key(sqlx::query_as(AssertSqlSafe(sql)), scope, provider)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        let Some((version, Json(settings), Json(sealed))) = row else {
            return Ok(None);
        };
        let mut secrets = BTreeMap::new();
        for (field, ciphertext) in sealed {
            let secret = keyring
                .decrypt_secret(&ciphertext, &self.aad(scope, provider, &field))
                .map_err(|source| IntegrationError::Decrypt {
                    scope: scope.to_string(),
                    provider: provider.to_owned(),
                    field: field.clone(),
                    source,
                })?;
            secrets.insert(field, secret);
        }
        Ok(Some(ProviderConfig {
            version,
            settings,
            secrets,
        }))
    }

    /// The newest `limit` (at most [`MAX_HISTORY`]) changes of a config, newest first.
    ///
    /// # Errors
    /// [`IntegrationError::Invalid`] for a malformed provider name; database errors.
    pub async fn history(
        &self,
        db: &Db,
        scope: Scope,
        provider: &str,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, IntegrationError> {
        check_provider(provider)?;
        let limit = limit.min(MAX_HISTORY);
        let mut tx = self
            .begin(db, scope, "read platform integration audit")
            .await?;
        // `limit` is an integer, safe to format.
        let sql = format!(
            "SELECT id, version, actor_user_id, actor_kind, request_id, reason, changed_fields, \
                    changes, at \
             FROM {}.integration_config_audit WHERE {} \
             ORDER BY version DESC, at DESC, id DESC LIMIT {limit}",
            self.quoted(),
            key_filter(scope)
        );
        let rows: Vec<AuditRow> = bind_key(sqlx::query_as(AssertSqlSafe(sql)), scope, provider)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|row| AuditEntry {
                id: row.id,
                scope,
                provider: provider.to_owned(),
                version: row.version,
                actor_user_id: row.actor_user_id,
                actor_kind: row.actor_kind,
                request_id: row.request_id,
                reason: row.reason,
                changed_fields: row.changed_fields,
                changes: row.changes.0,
                at: row.at,
            })
            .collect())
    }

    /// Re-encrypts every stored secret (every scope and tenant) that is not under the key ring's
    /// active key, in one transaction, and returns how many secrets changed. Idempotent: secrets
    /// already under the active key are left alone. Versions and the audit trail are unchanged
    /// (no value changes).
    ///
    /// # Errors
    /// [`IntegrationError::Decrypt`] naming the row and field if a secret cannot be decrypted
    /// (e.g. the ring lacks its old key); nothing is changed then. Database errors.
    pub async fn reencrypt_all(
        &self,
        db: &Db,
        keyring: &KeyRing,
    ) -> Result<usize, IntegrationError> {
        let s = self.quoted();
        let mut tx = db.system_tx("re-encrypt integration secrets").await?;
        let sql = format!(
            "SELECT id, tenant_id, provider, secrets FROM {s}.integration_configs ORDER BY id FOR UPDATE"
        );
        let rows: Vec<(Uuid, Option<Uuid>, String, Json<Fields>)> =
            sqlx::query_as(AssertSqlSafe(sql))
                .fetch_all(&mut *tx)
                .await?;
        let update_sql = format!("UPDATE {s}.integration_configs SET secrets = $2 WHERE id = $1");
        let mut changed = 0;
        for (id, tenant_id, provider, Json(mut secrets)) in rows {
            let scope = Scope::from_tenant(tenant_id);
            let mut row_changed = false;
            for (field, ciphertext) in &mut secrets {
                if !keyring.needs_rotation_str(ciphertext) {
                    continue;
                }
                *ciphertext = keyring
                    .reencrypt_str(ciphertext, &self.aad(scope, &provider, field))
                    .map_err(|source| IntegrationError::Decrypt {
                        scope: scope.to_string(),
                        provider: provider.clone(),
                        field: field.clone(),
                        source,
                    })?;
                row_changed = true;
                changed += 1;
            }
            if row_changed {
                sqlx::query(AssertSqlSafe(update_sql.as_str()))
                    .bind(id)
                    .bind(Json(&secrets))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        if changed > 0 {
            tracing::info!(
                schema = self.schema,
                changed,
                active_kid = keyring.active_kid(),
                "re-encrypted integration secrets"
            );
        }
        Ok(changed)
    }

    /// Associated data binding a ciphertext to its schema, scope, tenant, provider and field, so
    /// a ciphertext copied to another row or field does not decrypt. Every part is a name, a
    /// UUID or a constant, none containing `:`, so the encoding is unambiguous.
    fn aad(&self, scope: Scope, provider: &str, field: &str) -> Vec<u8> {
        format!(
            "{}.integration_configs:{scope}:{provider}:{field}",
            self.schema
        )
        .into_bytes()
    }

    fn quoted(&self) -> String {
        format!("\"{}\"", self.schema)
    }

    /// Tenant scope: a tenant transaction (row-level security). Platform scope: a system
    /// transaction, the only way to reach rows without a tenant.
    async fn begin(
        &self,
        db: &Db,
        scope: Scope,
        purpose: &'static str,
    ) -> Result<Tx, IntegrationError> {
        Ok(match scope {
            Scope::Platform => db.system_tx(purpose).await?,
            Scope::Tenant(tenant_id) => db.tenant_tx(tenant_id).await?,
        })
    }

    async fn fetch(
        &self,
        tx: &mut Tx,
        scope: Scope,
        provider: &str,
        for_update: bool,
    ) -> Result<Option<ConfigRow>, IntegrationError> {
        let sql = format!(
            "SELECT id, version, settings, secrets, masked, updated_by, updated_at \
             FROM {}.integration_configs WHERE {}{}",
            self.quoted(),
            key_filter(scope),
            if for_update { " FOR UPDATE" } else { "" }
        );
        Ok(
            bind_key(sqlx::query_as(AssertSqlSafe(sql)), scope, provider)
                .fetch_optional(&mut **tx)
                .await?,
        )
    }
}

/// The row key: `$1` is the provider, `$2` the tenant (tenant scope only). Explicit even under
/// row-level security, and the only filter in system transactions.
fn key_filter(scope: Scope) -> &'static str {
    match scope {
        Scope::Platform => "tenant_id IS NULL AND provider = $1",
        Scope::Tenant(_) => "tenant_id = $2 AND provider = $1",
    }
}

fn bind_key<'q, O>(
    query: QueryAs<'q, Postgres, O, PgArguments>,
    scope: Scope,
    provider: &str,
) -> QueryAs<'q, Postgres, O, PgArguments> {
    let query = query.bind(provider.to_owned());
    match scope {
        Scope::Platform => query,
        Scope::Tenant(tenant_id) => query.bind(tenant_id),
    }
}

fn check_provider(provider: &str) -> Result<(), IntegrationError> {
    if is_name(provider) {
        Ok(())
    } else {
        Err(IntegrationError::Invalid(vec![
            cos_errors::FieldViolation {
                field: "provider".to_owned(),
                message: "must be a provider name ([a-z][a-z0-9_]*)".to_owned(),
            },
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_update_never_prints_its_values() {
        let update = ConfigUpdate::new("rotate")
            .set("secret_key", "sk_live_51Hsupersecretvalue")
            .remove("webhook_secret");
        let debug = format!("{update:?}");
        assert!(!debug.contains("supersecret"), "{debug}");
        assert!(
            debug.contains("secret_key") && debug.contains("<remove>"),
            "{debug}"
        );
    }

    #[test]
    fn aad_binds_schema_scope_provider_and_field() {
        let store = IntegrationStore::new("billing");
        let tenant = Uuid::nil();
        assert_eq!(
            store.aad(Scope::Platform, "stripe", "secret_key"),
            b"billing.integration_configs:platform:stripe:secret_key"
        );
        assert_eq!(
            String::from_utf8(store.aad(Scope::Tenant(tenant), "stripe", "secret_key")).unwrap(),
            format!("billing.integration_configs:tenant/{tenant}:stripe:secret_key")
        );
    }

    #[test]
    #[should_panic(expected = "plain identifier")]
    fn a_store_needs_a_plain_schema_name() {
        let _ = IntegrationStore::new("Billing; DROP");
    }
}
