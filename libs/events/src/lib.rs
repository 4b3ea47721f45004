//! Campaign OS events: the transactional outbox, the relay that publishes it to RabbitMQ, and
//! idempotent consumers with delayed retries and a dead-letter queue.
//!
//! Design (DESIGN.md §7):
//!
//! - A service writes its events with [`enqueue`] into `<schema>.outbox` in the same transaction
//!   as the state change, so an event exists if and only if the change committed.
//! - [`OutboxRelay`] publishes pending rows to the topic exchange (`cos.events` by default) with
//!   publisher confirms and marks them published. Several replicas may run: rows are claimed
//!   with `FOR UPDATE SKIP LOCKED`. Delivery is at-least-once.
//! - [`Consumer`] reads one durable queue, records every event id in `<schema>.inbox` in the same
//!   transaction as the handler's work (a redelivered event is applied once), acks after the
//!   commit, retries transient failures through per-delay TTL queues and dead-letters the rest to
//!   `<queue>.dlq`.
//!
//! Tables are created by [`ensure_tables`].

mod amqp;
mod consumer;
mod error;
mod ident;
mod outbox;
mod relay;
mod schema;
mod trace;
mod work_queue;

pub use consumer::{
    ATTEMPT_HEADER, CONSUMER_HEADER, Consumer, ConsumerConfig, ERROR_HEADER, EventHandler,
    HandlerError,
};
pub use cos_proto::common::v1::EventEnvelope;
pub use error::{Error, Result};
pub use ident::validate_identifier;
pub use outbox::{NOTIFY_CHANNEL, NewEvent, enqueue, enqueue_many, enqueue_with_type};
pub use relay::{DEFAULT_EXCHANGE, OutboxRelay, RelayConfig};
pub use schema::{ensure_tables, tables_ddl};
pub use trace::{current_traceparent, parent_context};
pub use work_queue::{WorkQueuePublisher, connect_work_queue, declare_work_queue};

/// AMQP content type of every envelope published by this crate.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// Message header carrying the W3C `traceparent` of the event (also inside the envelope).
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Message header carrying the tenant id of the event (empty for platform-level events).
pub const TENANT_HEADER: &str = "tenant_id";

/// Registers descriptions (HELP texts) of this crate's metrics with the installed recorder.
/// Optional; call once after installing the recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "cos_outbox_published_total",
        "Outbox events published and confirmed by the broker, per schema"
    );
    metrics::describe_counter!(
        "cos_outbox_publish_failures_total",
        "Outbox events whose publish attempt failed (they stay pending), per schema"
    );
    metrics::describe_gauge!(
        "cos_outbox_pending",
        "Outbox events not yet published, per schema"
    );
    metrics::describe_counter!(
        "cos_events_processed_total",
        "Events applied by a consumer, per queue"
    );
    metrics::describe_counter!(
        "cos_events_duplicates_total",
        "Redelivered events recognised by the inbox and acknowledged without re-applying, per queue"
    );
    metrics::describe_counter!(
        "cos_events_retried_total",
        "Events sent to a delay queue after a transient handler failure, per queue"
    );
    metrics::describe_counter!(
        "cos_events_dead_lettered_total",
        "Events moved to the dead-letter queue, per queue"
    );
}

/// Decodes the payload of an envelope into `M`. The envelope's `payload_type` is not checked;
/// use [`decode_payload_checked`] when `M` implements [`prost::Name`].
pub fn decode_payload<M: prost::Message + Default>(env: &EventEnvelope) -> Result<M> {
    Ok(M::decode(env.payload.as_slice())?)
}

/// Like [`decode_payload`], but first checks that the envelope's `payload_type` names `M`
/// (either the full name `pkg.Msg` or the type URL `type.googleapis.com/pkg.Msg`).
pub fn decode_payload_checked<M: prost::Message + prost::Name + Default>(
    env: &EventEnvelope,
) -> Result<M> {
    let expected = M::full_name();
    if env.payload_type != expected && env.payload_type != M::type_url() {
        return Err(Error::PayloadType {
            expected,
            actual: env.payload_type.clone(),
        });
    }
    decode_payload(env)
}
