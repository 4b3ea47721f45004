//! Campaign OS as a library: settings, migrations and the in-process mesh that `campaign-os up`
//! runs and the end-to-end tests start on random ports.

pub mod mesh;

use std::path::Path;

use cos_billing::BillingConfig;
use cos_campaigns::CampaignsConfig;
use cos_config::{CommonConfig, ConfigError, Environment, Source};
use cos_crypto::KeyRing;
use cos_gateway::GatewayConfig;
use cos_identity::IdentityConfig;
use cos_publishing::PublishingConfig;
use cos_segmentation::SegmentationConfig;
use sqlx::Connection;

pub use mesh::{Mesh, MeshListeners};

/// Every setting of every service this binary can run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonConfig,
    pub identity: IdentityConfig,
    pub billing: BillingConfig,
    pub segmentation: SegmentationConfig,
    pub campaigns: CampaignsConfig,
    pub publishing: PublishingConfig,
    pub gateway: GatewayConfig,
}

impl Settings {
    pub fn load(source: &Source) -> Result<Self, ConfigError> {
        let mut r = source.reader();
        let common = CommonConfig::read(&mut r);
        let identity = IdentityConfig::read(&mut r);
        let billing = BillingConfig::read(&mut r);
        let segmentation = SegmentationConfig::read(&mut r);
        let campaigns = CampaignsConfig::read(&mut r);
        let publishing = PublishingConfig::read(&mut r);
        let gateway = GatewayConfig::read(&mut r);
        r.finish()?;
        Ok(Self {
            common,
            identity,
            billing,
            segmentation,
            campaigns,
            publishing,
            gateway,
        })
    }

    /// Database pool settings from the configuration; tools pass a small `max_connections`.
    pub fn pool_settings(&self, max_connections: Option<u32>) -> cos_db::PoolSettings {
        let d = &self.common.database;
        cos_db::PoolSettings {
            url: d.url.clone(),
            max_connections: max_connections.unwrap_or(d.max_connections),
            app_role: d.app_role.clone(),
            acquire_timeout: d.acquire_timeout,
        }
    }
}

/// Schemas and their migrations, in dependency order.
pub fn migrators() -> Vec<(&'static str, &'static sqlx::migrate::Migrator)> {
    vec![
        (cos_identity::SCHEMA, &cos_identity::MIGRATOR),
        (cos_billing::SCHEMA, &cos_billing::MIGRATOR),
        (cos_segmentation::SCHEMA, &cos_segmentation::MIGRATOR),
        (cos_campaigns::SCHEMA, &cos_campaigns::MIGRATOR),
        (cos_publishing::SCHEMA, &cos_publishing::MIGRATOR),
    ]
}

/// Identifies the current schema shape: every service's migrations, the shared outbox/inbox DDL
/// and the role bootstrap (test template databases are keyed by it, so changing any of them
/// builds a fresh template).
pub fn migrations_fingerprint() -> String {
    format!(
        "{}_{}",
        cos_db::migrations_fingerprint(migrators()),
        cos_db::text_fingerprint(&[
            &cos_events::tables_ddl("s", "r"),
            &cos_integrations::tables_ddl("s", "r"),
            cos_db::BOOTSTRAP_REVISION
        ])
    )
}

/// Creates the database if needed, bootstraps roles, and migrates every service's schema.
pub async fn migrate(database_url: &str, app_role: &str) -> anyhow::Result<()> {
    cos_db::ensure_database(database_url).await?;
    let mut conn = sqlx::PgConnection::connect(database_url).await?;
    cos_db::bootstrap(&mut conn, app_role).await?;
    cos_identity::migrate(&mut conn, app_role).await?;
    cos_billing::migrate(&mut conn, app_role).await?;
    cos_segmentation::migrate(&mut conn, app_role).await?;
    cos_campaigns::migrate(&mut conn, app_role).await?;
    cos_publishing::migrate(&mut conn, app_role).await?;
    conn.close().await?;
    Ok(())
}

/// Re-encrypts every secret stored by any service under the key ring's active key; returns what
/// was changed per store. Idempotent: values already under the active key are left alone.
pub async fn reencrypt_secrets(
    settings: &Settings,
    keyring: &KeyRing,
) -> anyhow::Result<Vec<(&'static str, usize)>> {
    let db = cos_db::Db::connect(&settings.pool_settings(Some(2))).await?;
    let signing = cos_identity::keys::reencrypt_all(&db, keyring).await?;
    let billing = cos_billing::reencrypt_secrets(&db, keyring).await?;
    let publishing = cos_publishing::reencrypt_secrets(&db, keyring).await?;
    db.pool().close().await;
    Ok(vec![
        ("identity.signing_keys", signing),
        ("billing.integration_configs", billing),
        ("publishing.channel_connections", publishing),
    ])
}

/// The key ring from configuration. In dev, without configured keys, a ring is generated once
/// and kept in `dev_keyring_file` (mode 0600), so secrets stay readable across restarts.
pub fn load_keyring(
    common: &CommonConfig,
    dev_keyring_file: Option<&Path>,
) -> anyhow::Result<KeyRing> {
    if let (Some(keys), Some(active)) = (&common.crypto.keys, &common.crypto.active_key_id) {
        return KeyRing::parse(keys, active)
            .map_err(|e| anyhow::anyhow!("COS_CRYPTO__KEYS / COS_CRYPTO__ACTIVE_KEY_ID: {e}"));
    }
    if common.crypto.keys.is_some() {
        anyhow::bail!("COS_CRYPTO__ACTIVE_KEY_ID is required when COS_CRYPTO__KEYS is set");
    }
    let (Some(path), true) = (
        dev_keyring_file,
        common.environment != Environment::Production,
    ) else {
        anyhow::bail!(
            "COS_CRYPTO__KEYS and COS_CRYPTO__ACTIVE_KEY_ID are required (kid:base64-32-byte-key,...)"
        );
    };
    if let Ok(text) = std::fs::read_to_string(path) {
        let (active, keys) = text
            .trim()
            .split_once('|')
            .ok_or_else(|| anyhow::anyhow!("{} is not a key-ring file", path.display()))?;
        return KeyRing::parse(keys, active)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    let ring = KeyRing::generate("dev1")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_private(
        path,
        &format!(
            "{}|{}\n",
            ring.active_kid(),
            ring.to_config_string().expose_secret()
        ),
    )?;
    tracing::warn!(path = %path.display(), "generated a development key ring; set COS_CRYPTO__KEYS in any real deployment");
    Ok(ring)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
