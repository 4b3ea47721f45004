//! Idempotent DDL for `<schema>.integration_configs` and `<schema>.integration_config_audit`.

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::IntegrationError;

/// Creates the two tables (and the schema) if they do not exist, (re)applies their row-level
/// security policy and sets the app role's grants to exactly what tenant transactions need.
/// Safe on every start-up and from several replicas at once (serialised by an advisory lock).
///
/// Run it after the service's own migrations: `cos_db::migrate_schema` grants the app role
/// everything on every table of the schema, and this narrows it again (the audit table is
/// append-only for the app role).
///
/// `schema` and `app_role` must be plain identifiers (`[a-z_][a-z0-9_]{0,62}`); the role and
/// `public.cos_current_tenant()` must exist (`cos_db::bootstrap`). Runs in a transaction of its
/// own (a savepoint if `conn` is already in one).
///
/// # Errors
/// [`IntegrationError::Misconfigured`] for a bad identifier, or the database's error.
pub async fn ensure_tables(
    conn: &mut PgConnection,
    schema: &str,
    app_role: &str,
) -> Result<(), IntegrationError> {
    check_identifier("schema", schema)?;
    check_identifier("role", app_role)?;
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('cos_integrations.ensure_tables:' || $1))")
        .bind(schema)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(tables_ddl(schema, app_role)))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The DDL [`ensure_tables`] runs, for plain identifiers it has checked. Public so that whoever
/// keys things on the schema's shape (test template databases) can include it in a fingerprint.
#[must_use]
pub fn tables_ddl(schema: &str, app_role: &str) -> String {
    let s = format!("\"{schema}\"");
    let role = format!("\"{app_role}\"");
    format!(
        r#"
CREATE SCHEMA IF NOT EXISTS {s};

-- One row per (scope, tenant, provider). Platform rows have no tenant and are reached only by the
-- owner role (system transactions); tenant rows are under forced row-level security.
CREATE TABLE IF NOT EXISTS {s}.integration_configs (
    id         uuid        PRIMARY KEY,
    scope      text        NOT NULL CHECK (scope IN ('platform', 'tenant')),
    tenant_id  uuid        NULL,
    provider   text        NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_]{{0,62}}$'),
    version    bigint      NOT NULL CHECK (version >= 1),
    -- Non-secret values, in clear: field -> value.
    settings   jsonb       NOT NULL DEFAULT '{{}}' CHECK (jsonb_typeof(settings) = 'object'),
    -- Secret values: field -> key-ring ciphertext, bound by its AAD to this row and field.
    secrets    jsonb       NOT NULL DEFAULT '{{}}' CHECK (jsonb_typeof(secrets) = 'object'),
    -- field -> masked display of the secret, computed at write time so reads never decrypt.
    masked     jsonb       NOT NULL DEFAULT '{{}}' CHECK (jsonb_typeof(masked) = 'object'),
    updated_by uuid        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integration_configs_scope_tenant CHECK ((scope = 'platform') = (tenant_id IS NULL))
);

-- unique (scope, tenant_id, provider), written so that it holds for the NULL tenant too.
CREATE UNIQUE INDEX IF NOT EXISTS integration_configs_platform_key
    ON {s}.integration_configs (provider) WHERE tenant_id IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS integration_configs_tenant_key
    ON {s}.integration_configs (tenant_id, provider) WHERE tenant_id IS NOT NULL;

-- Append-only: who changed what, when and why. Never a secret, never a ciphertext: secrets appear
-- as their masked display only.
CREATE TABLE IF NOT EXISTS {s}.integration_config_audit (
    id             uuid        PRIMARY KEY,
    config_id      uuid        NOT NULL,
    scope          text        NOT NULL CHECK (scope IN ('platform', 'tenant')),
    tenant_id      uuid        NULL,
    provider       text        NOT NULL,
    version        bigint      NOT NULL,
    actor_user_id  uuid        NOT NULL,
    actor_kind     text        NOT NULL CHECK (actor_kind IN ('platform_admin', 'tenant_user')),
    request_id     text        NOT NULL,
    reason         text        NOT NULL,
    changed_fields text[]      NOT NULL,
    changes        jsonb       NOT NULL CHECK (jsonb_typeof(changes) = 'array'),
    at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integration_config_audit_scope_tenant CHECK ((scope = 'platform') = (tenant_id IS NULL))
);

CREATE INDEX IF NOT EXISTS integration_config_audit_lookup_idx
    ON {s}.integration_config_audit (provider, tenant_id, version DESC);

-- Tenant rows are visible to the tenant's own transactions only; platform rows (tenant_id NULL)
-- match no tenant, so no tenant transaction can read or write them. Recreated on every run so
-- the policy is always the current one.
ALTER TABLE {s}.integration_configs ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.integration_configs FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON {s}.integration_configs;
CREATE POLICY tenant_isolation ON {s}.integration_configs
    USING (tenant_id = public.cos_current_tenant())
    WITH CHECK (tenant_id = public.cos_current_tenant());

ALTER TABLE {s}.integration_config_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.integration_config_audit FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON {s}.integration_config_audit;
CREATE POLICY tenant_isolation ON {s}.integration_config_audit
    USING (tenant_id = public.cos_current_tenant())
    WITH CHECK (tenant_id = public.cos_current_tenant());

-- Exact grants on every run: tenant transactions read and write their configs and append audit.
GRANT USAGE ON SCHEMA {s} TO {role};
REVOKE ALL ON {s}.integration_configs, {s}.integration_config_audit FROM {role};
GRANT SELECT, INSERT, UPDATE ON {s}.integration_configs TO {role};
GRANT SELECT, INSERT ON {s}.integration_config_audit TO {role};
"#
    )
}

/// `[a-z_][a-z0-9_]{0,62}`, the only names this crate formats into SQL.
pub(crate) const fn is_identifier(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() > 63 {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_lowercase() || b == b'_' || (i > 0 && b.is_ascii_digit())) {
            return false;
        }
        i += 1;
    }
    true
}

fn check_identifier(kind: &'static str, value: &str) -> Result<(), IntegrationError> {
    if is_identifier(value) {
        Ok(())
    } else {
        Err(IntegrationError::Misconfigured {
            kind,
            detail: format!("{value:?} is not a plain identifier ([a-z_][a-z0-9_]{{0,62}})"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["billing", "_x", "a1_b2", &"a".repeat(63)] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "Billing",
            "a-b",
            "a b",
            "a;drop",
            "a\"b",
            &"a".repeat(64),
        ] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn the_ddl_names_the_schema_and_role() {
        let ddl = tables_ddl("billing", "cos_app");
        assert!(ddl.contains("\"billing\".integration_configs"));
        assert!(ddl.contains("TO \"cos_app\""));
        assert!(ddl.contains("'^[a-z][a-z0-9_]{0,62}$'"));
        assert!(ddl.contains("DEFAULT '{}'"));
    }
}
