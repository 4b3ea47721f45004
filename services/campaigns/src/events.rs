//! What campaigns emits on `cos.events` (through its outbox, in the transaction of the change).
//!
//! | routing key | payload |
//! |---|---|
//! | `campaigns.campaign.created` (also for duplicates and drafts from templates) / `.updated` / `.deleted` | `CampaignChanged` |
//! | `campaigns.campaign.scheduled` / `.unscheduled` / `.cancelled` / `.archived` | `CampaignChanged` (with `previous_status`) |
//! | `campaigns.campaign.launched` / `.paused` / `.resumed` / `.completed` / `.launch_failed` | `CampaignChanged` (with `previous_status`) |

use chrono::{DateTime, Utc};
use cos_proto::campaigns::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::SCHEMA;
use crate::error::Result;

pub const SOURCE: &str = "campaigns";
pub const CREATED: &str = "campaigns.campaign.created";
pub const UPDATED: &str = "campaigns.campaign.updated";
pub const DELETED: &str = "campaigns.campaign.deleted";
pub const SCHEDULED: &str = "campaigns.campaign.scheduled";
pub const UNSCHEDULED: &str = "campaigns.campaign.unscheduled";
pub const CANCELLED: &str = "campaigns.campaign.cancelled";
pub const ARCHIVED: &str = "campaigns.campaign.archived";
pub const LAUNCHED: &str = "campaigns.campaign.launched";
pub const PAUSED: &str = "campaigns.campaign.paused";
pub const RESUMED: &str = "campaigns.campaign.resumed";
pub const COMPLETED: &str = "campaigns.campaign.completed";
/// A scheduled launch was refused (quota, no connection, ...): back to draft, `last_error` says why.
pub const LAUNCH_FAILED: &str = "campaigns.campaign.launch_failed";

/// One campaign change, as its event payload.
pub struct Change<'a> {
    pub campaign: Uuid,
    pub status: &'a str,
    pub previous_status: Option<&'a str>,
    pub version: i64,
    pub actor: Uuid,
    pub send_at: Option<DateTime<Utc>>,
}

/// Enqueues `event_type` for `change` in the caller's transaction.
pub async fn emit(
    conn: &mut PgConnection,
    tenant: Uuid,
    event_type: &str,
    change: Change<'_>,
) -> Result<()> {
    let payload = pb::CampaignChanged {
        campaign_id: change.campaign.to_string(),
        status: change.status.to_owned(),
        previous_status: change.previous_status.unwrap_or_default().to_owned(),
        version: change.version,
        actor_user_id: change.actor.to_string(),
        send_at: change.send_at.map(crate::convert::ts),
    };
    cos_events::enqueue_many(conn, SCHEMA, SOURCE, event_type, Some(tenant), &[payload]).await?;
    Ok(())
}
