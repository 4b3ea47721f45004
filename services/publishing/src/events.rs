//! What publishing emits on `cos.events` (through its outbox, in the transaction of the change).
//!
//! | routing key | payload |
//! |---|---|
//! | `publishing.delivery.sent` / `publishing.delivery.failed` | `DeliveriesRecorded`: one event per batch, channel and outcome (sandbox) or per delivery (SMTP, webhook), listing each delivery |
//! | `publishing.unsubscribe.recorded` | `UnsubscribeRecorded` |

use cos_proto::publishing::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::SCHEMA;
use crate::error::Result;
use crate::jobs::Job;
use crate::store::NewDelivery;

pub const SOURCE: &str = "publishing";
pub const DELIVERY_SENT: &str = "publishing.delivery.sent";
pub const DELIVERY_FAILED: &str = "publishing.delivery.failed";
pub const UNSUBSCRIBED: &str = "publishing.unsubscribe.recorded";

/// Enqueues one `DeliveriesRecorded` for `rows` (nothing when empty).
pub async fn recorded(
    conn: &mut PgConnection,
    job: &Job,
    channel: &str,
    status: &str,
    rows: &[&NewDelivery],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let at = Some(crate::convert::ts(chrono::Utc::now()));
    let payload = pb::DeliveriesRecorded {
        campaign_id: job.campaign_id.to_string(),
        run_id: job.run_id.to_string(),
        channel: channel.to_owned(),
        status: status.to_owned(),
        deliveries: rows
            .iter()
            .map(|r| pb::DeliveryOutcome {
                delivery_id: r.id.to_string(),
                contact_id: r.contact_id.to_string(),
                variant: r.variant.clone(),
                error: r.error.clone(),
                at,
            })
            .collect(),
    };
    let event_type = if status == "sent" {
        DELIVERY_SENT
    } else {
        DELIVERY_FAILED
    };
    cos_events::enqueue_many(
        conn,
        SCHEMA,
        SOURCE,
        event_type,
        Some(job.tenant),
        &[payload],
    )
    .await?;
    Ok(())
}

pub async fn unsubscribed(
    conn: &mut PgConnection,
    tenant: Uuid,
    contact: Uuid,
    campaign: Uuid,
    channel: &str,
) -> Result<()> {
    let payload = pb::UnsubscribeRecorded {
        contact_id: contact.to_string(),
        campaign_id: campaign.to_string(),
        channel: channel.to_owned(),
    };
    cos_events::enqueue_many(conn, SCHEMA, SOURCE, UNSUBSCRIBED, Some(tenant), &[payload]).await?;
    Ok(())
}
