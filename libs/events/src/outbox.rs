//! Outbox writer: events are inserted in the caller's transaction, next to the state change.

use std::time::SystemTime;

use cos_proto::common::v1::EventEnvelope;
use prost::Message;
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::Result;
use crate::ident::{quoted, validate_event_type, validate_identifier};
use crate::trace::current_traceparent;

/// PostgreSQL `NOTIFY` channel the outbox writer signals (payload: the schema name) so that
/// relays wake up without waiting for their poll interval.
pub const NOTIFY_CHANNEL: &str = "cos_outbox";

/// An event to write to the outbox.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a, M> {
    /// Routing key `<service>.<entity>.<verb>`, e.g. `campaigns.campaign.launched`.
    pub event_type: &'a str,
    /// Tenant the event belongs to; `None` for platform-level events.
    pub tenant_id: Option<Uuid>,
    /// The event's own message; encoded into the envelope's `payload`.
    pub payload: &'a M,
}

impl<'a, M> NewEvent<'a, M> {
    /// Shorthand constructor.
    pub fn new(event_type: &'a str, tenant_id: Option<Uuid>, payload: &'a M) -> Self {
        Self {
            event_type,
            tenant_id,
            payload,
        }
    }
}

/// Writes `event` to `<schema>.outbox` on `conn` (normally the caller's transaction, possibly
/// after `SET LOCAL ROLE <app role>`: only `INSERT` on the outbox is needed) and notifies
/// [`NOTIFY_CHANNEL`]; both take effect only if the transaction commits. `source` names the
/// producing service. The envelope's `payload_type` is `M`'s full protobuf name.
///
/// Returns the event id (UUIDv7).
pub async fn enqueue<M: Message + prost::Name>(
    conn: &mut PgConnection,
    schema: &str,
    source: &str,
    event: NewEvent<'_, M>,
) -> Result<Uuid> {
    enqueue_with_type(conn, schema, source, event, &M::full_name()).await
}

/// Like [`enqueue`] for messages that do not implement [`prost::Name`]: the caller names the
/// payload type (its full protobuf name, e.g. `campaignos.identity.v1.UserRegistered`).
pub async fn enqueue_with_type<M: Message>(
    conn: &mut PgConnection,
    schema: &str,
    source: &str,
    event: NewEvent<'_, M>,
    payload_type: &str,
) -> Result<Uuid> {
    validate_identifier("schema", schema)?;
    validate_event_type(event.event_type)?;
    let id = Uuid::now_v7();
    let envelope = EventEnvelope {
        id: id.to_string(),
        r#type: event.event_type.to_owned(),
        tenant_id: event.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
        occurred_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        traceparent: current_traceparent(),
        payload: event.payload.encode_to_vec(),
        payload_type: payload_type.to_owned(),
        source: source.to_owned(),
    };
    // One round trip: a data-modifying CTE always runs, and without RETURNING the app role needs
    // only INSERT on the outbox. The notification is delivered on commit (and dropped on
    // rollback); identical notifications in one transaction are folded into one.
    let sql = format!(
        "WITH ins AS (INSERT INTO {}.outbox (id, event_type, tenant_id, envelope) \
         VALUES ($1, $2, $3, $4)) SELECT pg_notify('{NOTIFY_CHANNEL}', $5)",
        quoted(schema)
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .bind(event.event_type)
        .bind(event.tenant_id)
        .bind(envelope.encode_to_vec())
        .bind(schema)
        .execute(conn)
        .await?;
    tracing::debug!(%id, event_type = event.event_type, schema, "event enqueued");
    Ok(id)
}

/// Writes many events of one type in one statement (bulk paths such as CSV import, segment
/// refresh); otherwise exactly like [`enqueue`]. Returns how many were written.
pub async fn enqueue_many<M: Message + prost::Name>(
    conn: &mut PgConnection,
    schema: &str,
    source: &str,
    event_type: &str,
    tenant_id: Option<Uuid>,
    payloads: &[M],
) -> Result<usize> {
    validate_identifier("schema", schema)?;
    validate_event_type(event_type)?;
    if payloads.is_empty() {
        return Ok(0);
    }
    let traceparent = current_traceparent();
    let occurred_at = Some(prost_types::Timestamp::from(SystemTime::now()));
    let payload_type = M::full_name();
    let mut ids = Vec::with_capacity(payloads.len());
    let mut envelopes = Vec::with_capacity(payloads.len());
    for payload in payloads {
        let id = Uuid::now_v7();
        ids.push(id);
        envelopes.push(
            EventEnvelope {
                id: id.to_string(),
                r#type: event_type.to_owned(),
                tenant_id: tenant_id.map(|t| t.to_string()).unwrap_or_default(),
                occurred_at,
                traceparent: traceparent.clone(),
                payload: payload.encode_to_vec(),
                payload_type: payload_type.clone(),
                source: source.to_owned(),
            }
            .encode_to_vec(),
        );
    }
    let sql = format!(
        "WITH ins AS (INSERT INTO {}.outbox (id, event_type, tenant_id, envelope) \
         SELECT id, $2, $3, envelope FROM unnest($1::uuid[], $4::bytea[]) AS e(id, envelope)) \
         SELECT pg_notify('{NOTIFY_CHANNEL}', $5)",
        quoted(schema)
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&ids)
        .bind(event_type)
        .bind(tenant_id)
        .bind(&envelopes)
        .bind(schema)
        .execute(conn)
        .await?;
    tracing::debug!(count = ids.len(), event_type, schema, "events enqueued");
    Ok(ids.len())
}
