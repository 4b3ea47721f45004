//! What segmentation emits on `cos.events` (through its outbox, in the transaction of the change).
//!
//! | routing key | payload |
//! |---|---|
//! | `segmentation.contact.created` / `.updated` / `.deleted` | `ContactChanged` |
//! | `segmentation.consent.changed` | `ConsentChanged` |
//! | `segmentation.segment.entered` / `.exited` | `SegmentMembershipChanged` |
//!
//! The first materialisation of a new (or re-defined) dynamic segment is its baseline and emits
//! no entered events; every later change of membership does, exactly once per change.

use cos_proto::segmentation::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::SCHEMA;
use crate::domain::attributes::{Channel, ConsentState};
use crate::error::Result;

pub const SOURCE: &str = "segmentation";
pub const CONTACT_CREATED: &str = "segmentation.contact.created";
pub const CONTACT_UPDATED: &str = "segmentation.contact.updated";
pub const CONTACT_DELETED: &str = "segmentation.contact.deleted";
pub const CONSENT_CHANGED: &str = "segmentation.consent.changed";
pub const SEGMENT_ENTERED: &str = "segmentation.segment.entered";
pub const SEGMENT_EXITED: &str = "segmentation.segment.exited";

pub fn contact_changed(
    id: Uuid,
    change: &str,
    version: i64,
    fields: &[&str],
) -> pb::ContactChanged {
    pb::ContactChanged {
        contact_id: id.to_string(),
        change: change.to_owned(),
        version,
        changed_fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

pub fn consent_changed(
    id: Uuid,
    channel: Channel,
    before: ConsentState,
    after: ConsentState,
    source: &str,
) -> pb::ConsentChanged {
    pb::ConsentChanged {
        contact_id: id.to_string(),
        channel: channel.as_str().to_owned(),
        previous_state: before.as_str().to_owned(),
        state: after.as_str().to_owned(),
        source: source.to_owned(),
    }
}

/// Emits one event per contact of a type.
pub async fn emit<M: prost::Message + prost::Name>(
    conn: &mut PgConnection,
    tenant: Uuid,
    event_type: &str,
    payloads: &[M],
) -> Result<()> {
    cos_events::enqueue_many(conn, SCHEMA, SOURCE, event_type, Some(tenant), payloads).await?;
    Ok(())
}

/// Entered/exited events for a membership diff.
pub async fn membership(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    entered: &[Uuid],
    exited: &[Uuid],
) -> Result<()> {
    let make = |ids: &[Uuid], change: &str| -> Vec<pb::SegmentMembershipChanged> {
        ids.iter()
            .map(|c| pb::SegmentMembershipChanged {
                segment_id: segment.to_string(),
                contact_id: c.to_string(),
                change: change.to_owned(),
            })
            .collect()
    };
    emit(conn, tenant, SEGMENT_ENTERED, &make(entered, "entered")).await?;
    emit(conn, tenant, SEGMENT_EXITED, &make(exited, "exited")).await?;
    Ok(())
}
