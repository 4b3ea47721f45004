//! What identity emits, always through the outbox inside the transaction that made the change.

use cos_events::NewEvent;
use sqlx::PgConnection;
use uuid::Uuid;

pub const SCHEMA: &str = "identity";
pub const SOURCE: &str = "identity";

pub const USER_REGISTERED: &str = "identity.user.registered";
pub const TENANT_CREATED: &str = "identity.tenant.created";
pub const MEMBER_ADDED: &str = "identity.member.added";
pub const MEMBER_ROLE_CHANGED: &str = "identity.member.role_changed";
pub const MEMBER_REMOVED: &str = "identity.member.removed";
pub const API_KEY_CREATED: &str = "identity.api_key.created";
pub const API_KEY_REVOKED: &str = "identity.api_key.revoked";

pub async fn emit<M: prost::Message + prost::Name>(
    conn: &mut PgConnection,
    event_type: &str,
    tenant_id: Uuid,
    payload: &M,
) -> Result<Uuid, cos_events::Error> {
    cos_events::enqueue(
        conn,
        SCHEMA,
        SOURCE,
        NewEvent::new(event_type, Some(tenant_id), payload),
    )
    .await
}
