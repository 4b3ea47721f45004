//! Attribute definitions.

use chrono::{DateTime, Utc};
use cos_errors::ServiceError;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::attributes::{AttributeCatalog, AttributeType};
use crate::error::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttributeRow {
    pub key: String,
    pub label: String,
    pub r#type: String,
    pub description: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "key, label, type, description, version, created_at, updated_at";

pub async fn list(conn: &mut PgConnection, tenant: Uuid) -> Result<Vec<AttributeRow>> {
    Ok(sqlx::query_as::<_, AttributeRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM segmentation.attribute_definitions WHERE tenant_id = $1 ORDER BY key"
    )))
    .bind(tenant)
    .fetch_all(conn)
    .await?)
}

/// The tenant's attribute catalog (key → type).
pub async fn catalog(conn: &mut PgConnection, tenant: Uuid) -> Result<AttributeCatalog> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT key, type FROM segmentation.attribute_definitions WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(k, t)| AttributeType::parse(&t).map(|t| (k, t)))
        .collect())
}

pub async fn create(
    conn: &mut PgConnection,
    tenant: Uuid,
    key: &str,
    label: &str,
    ty: AttributeType,
    description: &str,
) -> Result<AttributeRow> {
    sqlx::query_as::<_, AttributeRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO segmentation.attribute_definitions (tenant_id, key, label, type, description)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(key)
    .bind(label)
    .bind(ty.as_str())
    .bind(description)
    .fetch_one(conn)
    .await
    .map_err(|e| {
        if cos_db::unique_violation(&e).is_some() {
            ServiceError::already_exists(format!("attribute '{key}' is already defined"))
                .with_violation("key", "is already defined")
                .into()
        } else {
            e.into()
        }
    })
}

pub async fn get(conn: &mut PgConnection, tenant: Uuid, key: &str) -> Result<Option<AttributeRow>> {
    Ok(sqlx::query_as::<_, AttributeRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM segmentation.attribute_definitions WHERE tenant_id = $1 AND key = $2 FOR UPDATE"
    )))
    .bind(tenant)
    .bind(key)
    .fetch_optional(conn)
    .await?)
}

pub async fn update(
    conn: &mut PgConnection,
    tenant: Uuid,
    key: &str,
    label: &str,
    description: &str,
) -> Result<AttributeRow> {
    Ok(
        sqlx::query_as::<_, AttributeRow>(sqlx::AssertSqlSafe(format!(
            "UPDATE segmentation.attribute_definitions SET label = $3, description = $4,
             version = version + 1, updated_at = now()
         WHERE tenant_id = $1 AND key = $2 RETURNING {COLUMNS}"
        )))
        .bind(tenant)
        .bind(key)
        .bind(label)
        .bind(description)
        .fetch_one(conn)
        .await?,
    )
}

/// Deletes the definition and removes its values from every contact; returns how many contacts
/// held a value.
pub async fn delete(conn: &mut PgConnection, tenant: Uuid, key: &str) -> Result<u64> {
    sqlx::query("DELETE FROM segmentation.attribute_definitions WHERE tenant_id = $1 AND key = $2")
        .bind(tenant)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query(
        "UPDATE segmentation.contacts SET attributes = attributes - $2, version = version + 1, updated_at = now()
         WHERE tenant_id = $1 AND attributes ? $2",
    )
    .bind(tenant)
    .bind(key)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
