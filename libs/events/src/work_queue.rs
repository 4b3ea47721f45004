//! Durable work queues (as opposed to the `cos.events` topic exchange): one named queue, fed
//! through the default exchange with persistent messages and publisher confirms, consumed with
//! manual acks. Campaign fan-out publishes delivery batches to `publishing.deliveries` with a
//! [`WorkQueuePublisher`]; publishing consumes them.
//!
//! The publisher keeps one connection and one confirm-mode channel, opened lazily and reopened
//! after a failure; a publish returns only once the broker has confirmed every message of the
//! call (the message is then on disk in a durable queue).

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::Mutex;

use crate::amqp::{self, short};
use crate::{Error, Result};

/// Declares `queue` durable (idempotent; both producers and consumers call it).
pub async fn declare_work_queue(channel: &Channel, queue: &str) -> Result<()> {
    channel
        .queue_declare(
            short(queue)?,
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Opens a connection to RabbitMQ for a work-queue consumer or publisher.
pub async fn connect_work_queue(url: &str, name: &str, timeout: Duration) -> Result<Connection> {
    amqp::connect(url, name, timeout).await
}

struct Open {
    conn: Connection,
    channel: Channel,
}

/// Publishes to one durable queue with confirms. Cheap to share behind an `Arc`; publishes are
/// serialised on one channel (a caller publishing many messages should use
/// [`WorkQueuePublisher::publish_all`], which pipelines them).
pub struct WorkQueuePublisher {
    url: String,
    queue: String,
    name: String,
    connect_timeout: Duration,
    confirm_timeout: Duration,
    open: Mutex<Option<Open>>,
}

impl WorkQueuePublisher {
    /// A publisher of `queue` on the broker at `url`; `name` shows in the broker's connection
    /// list. Nothing is opened until the first publish.
    pub fn new(url: &str, queue: &str, name: &str) -> Result<Self> {
        if queue.is_empty() {
            return Err(Error::InvalidName {
                kind: "work queue",
                value: String::new(),
                reason: "must not be empty",
            });
        }
        short(queue)?;
        Ok(Self {
            url: url.to_owned(),
            queue: queue.to_owned(),
            name: name.to_owned(),
            connect_timeout: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(30),
            open: Mutex::new(None),
        })
    }

    /// The queue this publisher feeds.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    async fn channel(&self, slot: &mut Option<Open>) -> Result<Channel> {
        if let Some(open) = slot.as_ref()
            && open.conn.status().connected()
            && open.channel.status().connected()
        {
            return Ok(open.channel.clone());
        }
        if let Some(old) = slot.take() {
            amqp::close(&old.conn).await;
        }
        let conn = amqp::connect(&self.url, &self.name, self.connect_timeout).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        declare_work_queue(&channel, &self.queue).await?;
        *slot = Some(Open {
            conn,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    /// Publishes every payload (persistent, `content_type`) and waits until the broker confirmed
    /// all of them. On error some may have been delivered: callers publish idempotent messages.
    pub async fn publish_all(&self, payloads: &[Vec<u8>], content_type: &str) -> Result<()> {
        if payloads.is_empty() {
            return Ok(());
        }
        let mut slot = self.open.lock().await;
        let result = self.publish_on(&mut slot, payloads, content_type).await;
        if result.is_err()
            && let Some(old) = slot.take()
        {
            amqp::close(&old.conn).await;
        }
        result
    }

    async fn publish_on(
        &self,
        slot: &mut Option<Open>,
        payloads: &[Vec<u8>],
        content_type: &str,
    ) -> Result<()> {
        let channel = self.channel(slot).await?;
        let mut confirms = Vec::with_capacity(payloads.len());
        for p in payloads {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(short(content_type)?);
            confirms.push(
                channel
                    .basic_publish(
                        short("")?,
                        short(&self.queue)?,
                        // Unroutable (the queue was deleted under us) comes back instead of
                        // being confirmed and dropped.
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        p,
                        props,
                    )
                    .await?,
            );
        }
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        for (i, confirm) in confirms.into_iter().enumerate() {
            match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => {}
                Ok(Ok(Confirmation::Ack(Some(_)))) => {
                    return Err(Error::Rejected {
                        message_id: format!("{}#{i}", self.queue),
                        reason: "returned unroutable (the queue does not exist)".into(),
                    });
                }
                Ok(Ok(Confirmation::Nack(_))) => {
                    return Err(Error::Rejected {
                        message_id: format!("{}#{i}", self.queue),
                        reason: "nack".into(),
                    });
                }
                Ok(Ok(Confirmation::NotRequested)) => {
                    return Err(Error::Rejected {
                        message_id: format!("{}#{i}", self.queue),
                        reason: "publisher confirms are not enabled on the channel".into(),
                    });
                }
                Ok(Err(e)) => return Err(Error::Amqp(e)),
                Err(_) => return Err(Error::ConfirmTimeout(self.confirm_timeout)),
            }
        }
        Ok(())
    }

    /// Closes the connection (on shutdown).
    pub async fn close(&self) {
        if let Some(open) = self.open.lock().await.take() {
            amqp::close(&open.conn).await;
        }
    }
}
