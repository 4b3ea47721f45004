//! PostgreSQL access for every service: the pool, per-service schema migrations, and the two
//! kinds of transaction: tenant-scoped (non-superuser role, row-level security on
//! `app.tenant_id`) and system (the owner role; only for explicit cross-tenant paths).

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

pub use sqlx;

/// A transaction; for tenant transactions every row it sees belongs to one tenant.
pub type Tx = Transaction<'static, Postgres>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration of schema {schema} failed: {source}")]
    Migrate {
        schema: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("invalid identifier {0:?}")]
    InvalidIdentifier(String),
    #[error(
        "database role {0:?} is neither superuser nor BYPASSRLS; system transactions need one of them (ALTER ROLE {0} BYPASSRLS)"
    )]
    OwnerCannotBypassRls(String),
}

/// Pool settings (a subset of the common config, so this crate doesn't depend on it).
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub url: String,
    pub max_connections: u32,
    pub app_role: String,
    pub acquire_timeout: Duration,
}

/// The service's handle on its database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    app_role: String,
}

impl Db {
    pub async fn connect(settings: &PoolSettings) -> Result<Self, DbError> {
        check_identifier(&settings.app_role)?;
        let options: PgConnectOptions = settings.url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.application_name("campaign-os"))
            .await?;
        Ok(Self {
            pool,
            app_role: settings.app_role.clone(),
        })
    }

    pub fn from_pool(pool: PgPool, app_role: &str) -> Result<Self, DbError> {
        check_identifier(app_role)?;
        Ok(Self {
            pool,
            app_role: app_role.to_owned(),
        })
    }

    /// System transactions run as the session user and must see every tenant's rows, so that role
    /// needs SUPERUSER or BYPASSRLS. Without it logins would silently find no tenant: fail at start.
    pub async fn check_owner_bypasses_rls(&self) -> Result<(), DbError> {
        let (user, ok): (String, bool) = sqlx::query_as(
            "SELECT rolname::text, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = session_user",
        )
        .fetch_one(&self.pool)
        .await?;
        if ok {
            Ok(())
        } else {
            Err(DbError::OwnerCannotBypassRls(user))
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn app_role(&self) -> &str {
        &self.app_role
    }

    /// A transaction that runs as the non-superuser app role with `app.tenant_id` set, so row-level
    /// security limits every statement to that tenant's rows. Both settings are transaction-local
    /// and vanish at commit/rollback, so a pooled connection never carries them over.
    pub async fn tenant_tx(&self, tenant_id: Uuid) -> Result<Tx, DbError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('role', $1, true), set_config('app.tenant_id', $2, true)")
            .bind(&self.app_role)
            .bind(tenant_id.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A transaction as the app role with no tenant: tenant-owned tables show no rows. For global
    /// tables (users) and for proving isolation.
    pub async fn app_tx(&self) -> Result<Tx, DbError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('role', $1, true)")
            .bind(&self.app_role)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A transaction as the owner role, which bypasses row-level security. Only for the explicit
    /// cross-tenant paths (authentication before a tenant is known, platform admin, outbox relay);
    /// `purpose` is logged so these paths stay visible.
    pub async fn system_tx(&self, purpose: &'static str) -> Result<Tx, DbError> {
        tracing::debug!(purpose, "system transaction (row-level security bypassed)");
        Ok(self.pool.begin().await?)
    }
}

/// Runs DDL built from identifiers that `check_identifier` accepted (DDL takes no bind
/// parameters for names).
async fn exec_ddl(conn: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .map(|_| ())
}

fn check_identifier(s: &str) -> Result<(), DbError> {
    let mut chars = s.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DbError::InvalidIdentifier(s.to_owned()))
    }
}

/// Creates the database named in `url` if it does not exist (connects to `postgres` to do so).
pub async fn ensure_database(url: &str) -> Result<(), DbError> {
    let options: PgConnectOptions = url.parse()?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    check_identifier(&name)?;
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        match exec_ddl(&mut admin, format!("CREATE DATABASE {name}")).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

/// Cluster- and database-wide prerequisites of every service schema: the app role and the
/// `cos_current_tenant()` function the row-level-security policies call.
pub async fn bootstrap(conn: &mut PgConnection, app_role: &str) -> Result<(), DbError> {
    check_identifier(app_role)?;
    // Serialise bootstrap across processes: CREATE ROLE races otherwise.
    sqlx::query("SELECT pg_advisory_lock(7263001)")
        .execute(&mut *conn)
        .await?;
    let result = async {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(app_role)
                .fetch_one(&mut *conn)
                .await?;
        if !exists {
            exec_ddl(
                &mut *conn,
                format!("CREATE ROLE {app_role} NOLOGIN NOSUPERUSER NOBYPASSRLS"),
            )
            .await?;
        }
        // The connecting (owner) role must be able to SET ROLE to the app role.
        exec_ddl(&mut *conn, format!("GRANT {app_role} TO CURRENT_USER")).await?;
        conn.execute(
            "CREATE OR REPLACE FUNCTION public.cos_current_tenant() RETURNS uuid \
             LANGUAGE sql STABLE PARALLEL SAFE AS \
             $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$",
        )
        .await?;
        Ok::<_, DbError>(())
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock(7263001)")
        .execute(&mut *conn)
        .await?;
    result
}

/// Runs one service's embedded migrations inside its own schema (the migration history table
/// lives there too), then grants the app role what it needs on that schema.
pub async fn migrate_schema(
    conn: &mut PgConnection,
    schema: &str,
    migrator: &Migrator,
    app_role: &str,
    system_only_tables: &[&str],
) -> Result<(), DbError> {
    check_identifier(schema)?;
    check_identifier(app_role)?;
    exec_ddl(&mut *conn, format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await?;
    exec_ddl(&mut *conn, format!("SET search_path TO {schema}, public")).await?;
    let outcome = migrator
        .run(&mut *conn)
        .await
        .map_err(|source| DbError::Migrate {
            schema: schema.to_owned(),
            source,
        });
    conn.execute("SET search_path TO DEFAULT").await?;
    outcome?;
    exec_ddl(
        &mut *conn,
        format!(
            "GRANT USAGE ON SCHEMA {schema} TO {app_role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {app_role};
             REVOKE ALL ON {schema}._sqlx_migrations FROM {app_role};"
        ),
    )
    .await?;
    // Views are read with their owner's rights (which bypass RLS): the app role may read them,
    // never write through them (a simple view is auto-updatable).
    let views: Vec<String> =
        sqlx::query_scalar("SELECT viewname::text FROM pg_views WHERE schemaname = $1")
            .bind(schema)
            .fetch_all(&mut *conn)
            .await?;
    for view in &views {
        check_identifier(view)?;
        exec_ddl(
            &mut *conn,
            format!("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.{view} FROM {app_role}"),
        )
        .await?;
    }
    // Tables only the owner role touches (signing keys, platform audit): the app role gets nothing.
    for table in system_only_tables {
        check_identifier(table)?;
        exec_ddl(
            &mut *conn,
            format!("REVOKE ALL ON {schema}.{table} FROM {app_role}"),
        )
        .await?;
    }
    Ok(())
}

/// Bump when `bootstrap` or the grants in `migrate_schema` change: test templates are keyed on it.
pub const BOOTSTRAP_REVISION: &str = "bootstrap-3";

/// Short SHA-256 fingerprint of some texts.
pub fn text_fingerprint(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for p in parts {
        hash.update(p.as_bytes());
        hash.update([0]);
    }
    hash.finalize()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fingerprint of a set of migrations (names + checksums), used to key test template databases.
pub fn migrations_fingerprint<'a>(
    migrators: impl IntoIterator<Item = (&'a str, &'a Migrator)>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for (schema, m) in migrators {
        hash.update(schema.as_bytes());
        for mig in m.iter() {
            hash.update(mig.version.to_le_bytes());
            hash.update(&mig.checksum);
        }
    }
    hash.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Maps a unique-violation on a named constraint to `Some(constraint)`, for turning database
/// conflicts into client errors.
pub fn unique_violation(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(e) if e.code().as_deref() == Some("23505") => e.constraint(),
        _ => None,
    }
}

impl DbError {
    pub fn unique_violation(&self) -> Option<&str> {
        match self {
            DbError::Sqlx(e) => unique_violation(e),
            _ => None,
        }
    }
}
