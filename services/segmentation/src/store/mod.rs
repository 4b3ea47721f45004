//! sqlx queries. Every function runs on a transaction the caller opened with
//! `Db::tenant_tx` (RLS scopes it to one tenant) unless its name says otherwise; tenant ids are
//! still passed and filtered on explicitly so that the planner can use the (tenant_id, ...) indexes.

pub mod attributes;
pub mod contacts;
pub mod imports;
pub mod segments;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;

/// NOTIFY channel that wakes the membership worker (changed contacts to re-evaluate).
pub const DIRTY_CHANNEL: &str = "cos_segmentation_dirty";
/// NOTIFY channel that wakes the import worker.
pub const IMPORT_CHANNEL: &str = "cos_segmentation_import";

/// Marks contacts for re-evaluation against the tenant's dynamic segments (drained by the
/// membership worker) and wakes the worker on commit.
pub async fn mark_dirty(conn: &mut PgConnection, tenant: Uuid, contacts: &[Uuid]) -> Result<()> {
    if contacts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH ins AS (
             INSERT INTO segmentation.dirty_contacts (tenant_id, contact_id)
             SELECT $1, unnest($2::uuid[])
             ON CONFLICT (tenant_id, contact_id) DO UPDATE SET marked_at = now())
         SELECT pg_notify($3, '')",
    )
    .bind(tenant)
    .bind(contacts)
    .bind(DIRTY_CHANNEL)
    .execute(conn)
    .await?;
    Ok(())
}
