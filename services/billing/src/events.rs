//! What billing emits, always through the outbox inside the transaction that made the change.

use chrono::{DateTime, Utc};
use cos_events::NewEvent;
use cos_proto::billing::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

pub const SCHEMA: &str = crate::SCHEMA;
pub const SOURCE: &str = "billing";

/// A tenant's subscription changed (created, purchased, extended, overridden, comped,
/// suspended, unsuspended).
pub const SUBSCRIPTION_CHANGED: &str = "billing.subscription.changed";

#[allow(clippy::too_many_arguments)]
pub async fn subscription_changed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    action: &str,
    plan: &str,
    previous_plan: &str,
    status: &str,
    period_end: DateTime<Utc>,
) -> Result<Uuid, cos_events::Error> {
    let payload = pb::SubscriptionChanged {
        tenant_id: tenant_id.to_string(),
        plan: plan.to_owned(),
        previous_plan: previous_plan.to_owned(),
        status: status.to_owned(),
        period_end: Some(cos_entitlements::convert::ts(period_end)),
        action: action.to_owned(),
    };
    cos_events::enqueue(
        conn,
        SCHEMA,
        SOURCE,
        NewEvent::new(SUBSCRIPTION_CHANGED, Some(tenant_id), &payload),
    )
    .await
}
