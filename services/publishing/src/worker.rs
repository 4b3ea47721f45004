//! The work-queue consumer (delivery batches) and the maintenance loop (due retries, abandoned
//! claims, parked batches of resumed jobs, completion of jobs finished by retries).
//!
//! A batch is acknowledged only after its outcome is committed; a worker that dies mid-batch
//! (process killed, task aborted, connection lost) leaves it unacknowledged, RabbitMQ hands it
//! to another consumer, and the delivery rows make the second pass send only what the first
//! did not.

use std::sync::Arc;
use std::time::Duration;

use cos_proto::publishing::v1 as pb;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::engine::{self, BatchOutcome, Engine};

/// Consumes `queue` and hands each batch to the engine, `concurrency` batches at a time.
pub struct DeliveryWorker {
    pub engine: Arc<Engine>,
    pub amqp_url: String,
    pub queue: String,
    pub concurrency: u16,
}

impl DeliveryWorker {
    /// Runs until `shutdown`, reconnecting (with backoff) after broker trouble.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut delay = Duration::from_millis(100);
        tracing::info!(queue = %self.queue, concurrency = self.concurrency, "delivery worker starting");
        while !shutdown.is_cancelled() {
            match self.session(&shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(queue = %self.queue, error = %e, ?delay, "delivery worker lost its connection; reconnecting");
                    engine::pause(delay, &shutdown).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        tracing::info!(queue = %self.queue, "delivery worker stopped");
        Ok(())
    }

    async fn session(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let conn = cos_events::connect_work_queue(
            &self.amqp_url,
            &format!("cos-publishing:{}", self.queue),
            Duration::from_secs(5),
        )
        .await?;
        let channel = conn.create_channel().await?;
        cos_events::declare_work_queue(&channel, &self.queue).await?;
        channel
            .basic_qos(self.concurrency, BasicQosOptions::default())
            .await?;
        let tag = format!("publishing:{}", uuid::Uuid::new_v4().simple());
        let mut deliveries = channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let limit = usize::from(self.concurrency.max(1));
        let mut in_flight = FuturesUnordered::new();
        let outcome: anyhow::Result<()> = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                Some(res) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Err(e) = res {
                        break Err(e);
                    }
                }
                next = deliveries.next(), if in_flight.len() < limit => match next {
                    Some(Ok(delivery)) => in_flight.push(self.handle(delivery)),
                    Some(Err(e)) => break Err(e.into()),
                    None => break Err(anyhow::anyhow!("the broker closed the consumer")),
                },
            }
        };
        while let Some(res) = in_flight.next().await {
            if let Err(e) = res {
                tracing::warn!(error = %e, "delivery batch acknowledgement failed during shutdown");
            }
        }
        let _ = conn.close(200, "shutdown".into()).await;
        outcome
    }

    async fn handle(&self, delivery: lapin::message::Delivery) -> anyhow::Result<()> {
        let batch = match pb::DeliveryBatch::decode(delivery.data.as_slice()) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, bytes = delivery.data.len(), "undecodable delivery batch dropped");
                delivery.ack(BasicAckOptions::default()).await?;
                return Ok(());
            }
        };
        let started = std::time::Instant::now();
        match self.engine.process_batch(&batch, &delivery.data).await {
            Ok(outcome) => {
                delivery.ack(BasicAckOptions::default()).await?;
                let label = match outcome {
                    BatchOutcome::Done => "done",
                    BatchOutcome::Parked => "parked",
                    BatchOutcome::Dropped => "dropped",
                };
                metrics::counter!("cos_publishing_batches_total", "outcome" => label).increment(1);
                metrics::histogram!("cos_publishing_batch_seconds")
                    .record(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                // Database or similar trouble: give the batch back after a pause (the rows
                // already written make the next attempt skip what was done).
                tracing::warn!(run_id = %batch.run_id, seq = batch.seq, error = %e, "delivery batch failed; requeued");
                metrics::counter!("cos_publishing_batches_total", "outcome" => "requeued")
                    .increment(1);
                tokio::time::sleep(Duration::from_secs(1)).await;
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

/// Retries, abandoned claims, parked batches of resumed jobs and job completion, about once a
/// second (sooner when there is more to do).
pub async fn maintenance(
    engine: Arc<Engine>,
    publisher: Arc<cos_events::WorkQueuePublisher>,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    while !shutdown.is_cancelled() {
        let mut busy = false;
        match engine.retry_due().await {
            Ok(n) => busy |= n >= 50,
            Err(e) => tracing::warn!(error = %e, "delivery retries failed; trying again shortly"),
        }
        match engine::republish_parked(&engine.db, &publisher).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(batches = n, "parked delivery batches put back on the queue");
                }
                busy |= n >= 100;
            }
            Err(e) => {
                tracing::warn!(error = %e, "republishing parked batches failed; trying again shortly")
            }
        }
        if let Err(e) = engine.complete_finished().await {
            tracing::warn!(error = %e, "completing delivery jobs failed; trying again shortly");
        }
        if !busy {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
    publisher.close().await;
    Ok(())
}
