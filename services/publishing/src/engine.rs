//! The delivery engine: renders each recipient's message, sends it through the channel's
//! connection and records the outcome, so that a recipient gets a campaign's message on a
//! channel at most once per (campaign, variant, contact, channel) and, barring a crash in the
//! instant between a provider's acceptance and our commit, exactly once.
//!
//! - Sandbox connections (and the `sandbox` channel): render, then insert the delivery rows with
//!   the rendered message, the job's counters and the batch's events in one transaction. A
//!   redelivered batch inserts nothing new: exactly once.
//! - SMTP and webhook: claim the batch's rows as `pending` in one statement (rows another worker
//!   finished or holds are skipped), send each claimed recipient (rate-limited per connection),
//!   and record each outcome with its counters and event in its own transaction. A claim whose
//!   worker crashed is taken over after the lease (`claim_lease_secs`) with the same delivery id,
//!   which is the email's Message-ID and the webhook's Idempotency-Key, so the rare resend after
//!   a crash is recognisable downstream.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cos_channels::email::OutgoingEmail;
use cos_channels::ratelimit::RateLimiter;
use cos_channels::unsubscribe::{UnsubscribeClaims, UnsubscribeSigner};
use cos_channels::webhook::WebhookSender;
use cos_channels::{SendError, SendReceipt};
use cos_db::Db;
use cos_proto::publishing::v1 as pb;
use cos_templating::template::RenderContact;
use futures::StreamExt;
use prost::Message;
use uuid::Uuid;

use crate::config::PublishingConfig;
use crate::error::{Error, Result};
use crate::events;
use crate::jobs::{Connection, Job, JobCache, Sender};
use crate::store::{self, DeliveryScope, NewDelivery, Outcome};

/// What happened to a batch taken off the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every recipient has a final or retrying delivery row.
    Done,
    /// The job is paused: the batch is parked until it resumes.
    Parked,
    /// The job is cancelled, completed or unknown: nothing sent.
    Dropped,
}

pub struct Engine {
    pub db: Db,
    pub jobs: JobCache,
    pub signer: UnsubscribeSigner,
    pub webhook: WebhookSender,
    pub limiter: RateLimiter,
    pub config: PublishingConfig,
}

/// A message rendered for one recipient on one channel.
enum Rendered {
    Email(Box<OutgoingEmail>),
    Webhook(serde_json::Value),
    /// What the sandbox records (no address needed).
    Sandbox(serde_json::Value),
}

fn render_contact(r: &pb::Recipient) -> RenderContact {
    let attributes = if r.attributes_json.is_empty() {
        serde_json::Map::new()
    } else {
        serde_json::from_slice(&r.attributes_json).unwrap_or_default()
    };
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    RenderContact {
        contact_id: r.contact_id.clone(),
        email: opt(&r.email),
        phone: opt(&r.phone),
        external_id: opt(&r.external_id),
        first_name: opt(&r.first_name),
        last_name: opt(&r.last_name),
        locale: opt(&r.locale),
        time_zone: opt(&r.time_zone),
        attributes,
    }
}

fn domain_of(address: &str) -> &str {
    let a = address.trim().trim_end_matches('>');
    a.rsplit_once('@').map_or("campaignos.invalid", |(_, d)| d)
}

impl Engine {
    fn unsubscribe_url(&self, job: &Job, contact: Uuid, channel: &str) -> String {
        // A test send goes to whatever address the marketer typed: its link must not be able to
        // unsubscribe the real contact it was rendered for.
        let contact = if job.run_id.is_nil() {
            Uuid::nil()
        } else {
            contact
        };
        let token = self.signer.sign(&UnsubscribeClaims {
            tenant_id: job.tenant,
            contact_id: contact,
            campaign_id: job.campaign_id,
            channel: channel.to_owned(),
        });
        format!("{}/u/{token}", self.config.public_url.trim_end_matches('/'))
    }

    fn extra(&self, job: &Job, r: &pb::Recipient, unsubscribe_url: &str) -> serde_json::Value {
        serde_json::json!({
            "campaign": {"id": job.campaign_id.to_string(), "name": job.campaign_name},
            "variant": r.variant,
            "unsubscribe_url": unsubscribe_url,
        })
    }

    /// Renders the email of one recipient, with the unsubscribe link in the body (unless the
    /// template already shows it) and in the List-Unsubscribe headers.
    fn render_email(
        &self,
        job: &Job,
        r: &pb::Recipient,
        contact: Uuid,
        delivery_id: Uuid,
        from: &str,
        reply_to: Option<&String>,
    ) -> std::result::Result<OutgoingEmail, String> {
        let compiled = job.compiled()?;
        if !compiled.has_email() {
            return Err("render_error: the campaign has no email content".to_owned());
        }
        let url = self.unsubscribe_url(job, contact, "email");
        let rendered = compiled
            .render_email(&render_contact(r), &self.extra(job, r, &url))
            .map_err(|e| format!("render_error: {e}"))?;
        let mut html = rendered.html_body;
        if !html.is_empty() && !html.contains(&url) {
            html.push_str(&format!(
                "\n<p style=\"font-size:12px;color:#666\"><a href=\"{url}\">Unsubscribe</a></p>"
            ));
        }
        let mut text = rendered.text_body;
        if !text.is_empty() && !text.contains(&url) {
            text.push_str(&format!("\n\nUnsubscribe: {url}\n"));
        }
        Ok(OutgoingEmail {
            from: from.to_owned(),
            reply_to: reply_to.cloned(),
            to: r.email.clone(),
            subject: rendered.subject,
            preheader: rendered.preheader,
            html_body: html,
            text_body: text,
            message_id: format!("{delivery_id}@{}", domain_of(from)),
            list_unsubscribe_url: Some(url),
            list_unsubscribe_mailto: None,
            extra_headers: vec![
                ("X-Campaign-Id".to_owned(), job.campaign_id.to_string()),
                ("X-Delivery-Id".to_owned(), delivery_id.to_string()),
            ],
        })
    }

    /// Renders one recipient's message for `channel` through `conn`; `Err` is the reason the
    /// delivery fails permanently (bad address, template error).
    fn render(
        &self,
        job: &Job,
        channel: &str,
        conn: &Connection,
        r: &pb::Recipient,
        delivery_id: Uuid,
    ) -> std::result::Result<Rendered, String> {
        let contact =
            Uuid::parse_str(&r.contact_id).map_err(|_| "invalid contact id".to_owned())?;
        let email_needed = || {
            if r.email.trim().is_empty() || !r.email.contains('@') {
                Err("invalid_address: the contact has no valid email address".to_owned())
            } else {
                Ok(())
            }
        };
        match (&conn.sender, channel) {
            (Sender::Sandbox, _) => {
                let mut out = serde_json::Map::new();
                let want = |c: &str| channel == "sandbox" || channel == c;
                let compiled = job.compiled()?;
                if want("email") && compiled.has_email() {
                    if channel == "email" {
                        email_needed()?;
                    }
                    let e = self.render_email(
                        job,
                        r,
                        contact,
                        delivery_id,
                        "sandbox@campaignos.invalid",
                        None,
                    )?;
                    out.insert(
                        "email".into(),
                        serde_json::json!({
                            "to": e.to, "subject": e.subject, "preheader": e.preheader,
                            "html_body": e.html_body, "text_body": e.text_body,
                            "list_unsubscribe": e.list_unsubscribe_url,
                        }),
                    );
                }
                if want("sms") && compiled.has_sms() {
                    let url = self.unsubscribe_url(job, contact, "sms");
                    let text = compiled
                        .render_sms(&render_contact(r), &self.extra(job, r, &url))
                        .map_err(|e| format!("render_error: {e}"))?;
                    out.insert(
                        "sms".into(),
                        serde_json::json!({"to": r.phone, "text": text}),
                    );
                }
                if want("webhook") && compiled.has_webhook() {
                    let body = compiled
                        .render_webhook(&render_contact(r), &self.extra(job, r, ""))
                        .map_err(|e| format!("render_error: {e}"))?;
                    out.insert("webhook".into(), body);
                }
                Ok(Rendered::Sandbox(serde_json::Value::Object(out)))
            }
            (Sender::Smtp { from, reply_to, .. }, _) => {
                email_needed()?;
                Ok(Rendered::Email(Box::new(self.render_email(
                    job,
                    r,
                    contact,
                    delivery_id,
                    from,
                    reply_to.as_ref(),
                )?)))
            }
            (Sender::Webhook(_), _) => {
                let compiled = job.compiled()?;
                if !compiled.has_webhook() {
                    return Err("render_error: the campaign has no webhook content".to_owned());
                }
                let body = compiled
                    .render_webhook(&render_contact(r), &self.extra(job, r, ""))
                    .map_err(|e| format!("render_error: {e}"))?;
                Ok(Rendered::Webhook(body))
            }
        }
    }

    async fn send(
        &self,
        conn: &Connection,
        rendered: &Rendered,
        delivery_id: Uuid,
    ) -> std::result::Result<SendReceipt, SendError> {
        match (&conn.sender, rendered) {
            (Sender::Smtp { sender, .. }, Rendered::Email(e)) => sender.send(e).await,
            (Sender::Webhook(target), Rendered::Webhook(body)) => {
                self.webhook
                    .send(target, body, &delivery_id.to_string())
                    .await
            }
            _ => Err(SendError::permanent(
                "the connection cannot send this channel's message",
            )),
        }
    }

    /// Processes one batch from the work queue. `raw` is the message as received (parked as is).
    pub async fn process_batch(
        &self,
        batch: &pb::DeliveryBatch,
        raw: &[u8],
    ) -> Result<BatchOutcome> {
        let (Ok(tenant), Ok(run_id)) = (
            Uuid::parse_str(&batch.tenant_id),
            Uuid::parse_str(&batch.run_id),
        ) else {
            tracing::error!(run_id = %batch.run_id, "delivery batch with malformed ids dropped");
            return Ok(BatchOutcome::Dropped);
        };
        let Some(job) = self.jobs.get(tenant, run_id).await? else {
            tracing::warn!(%run_id, seq = batch.seq, "delivery batch for an unknown job dropped");
            return Ok(BatchOutcome::Dropped);
        };
        match job.cached_state().as_deref().unwrap_or("active") {
            // A completed job can still receive a batch the fan-out published twice (a crash
            // between publishing and its checkpoint, with the audience changed in between):
            // its new recipients are sent; the delivery rows skip everyone else.
            "active" | "completed" => {}
            "paused" => {
                self.park(&job, batch.seq, raw).await?;
                return Ok(BatchOutcome::Parked);
            }
            _ => return Ok(BatchOutcome::Dropped),
        }
        for (channel, conn) in &job.channels {
            let paused = if conn.is_sandbox() {
                self.sandbox_batch(&job, channel, conn, batch).await?;
                false
            } else {
                self.live_batch(&job, channel, conn, batch).await?
            };
            if paused {
                self.park(&job, batch.seq, raw).await?;
                return Ok(BatchOutcome::Parked);
            }
        }
        let mut tx = self.db.tenant_tx(tenant).await?;
        store::batch_done(&mut tx, tenant, run_id, batch.seq).await?;
        store::maybe_complete(&mut tx, tenant, run_id).await?;
        tx.commit().await?;
        Ok(BatchOutcome::Done)
    }

    async fn park(&self, job: &Job, seq: i64, raw: &[u8]) -> Result<()> {
        let mut tx = self.db.tenant_tx(job.tenant).await?;
        store::park_batch(&mut tx, job.tenant, job.run_id, seq, raw).await?;
        tx.commit().await?;
        metrics::counter!("cos_publishing_batches_parked_total").increment(1);
        Ok(())
    }

    fn scope(job: &Job, channel: &str, conn: &Connection, seq: i64) -> DeliveryScope {
        DeliveryScope {
            tenant: job.tenant,
            run_id: job.run_id,
            campaign_id: job.campaign_id,
            channel: channel.to_owned(),
            connection_id: conn.id,
            batch_seq: seq,
        }
    }

    /// Sandbox: render everything, record everything, in one transaction.
    async fn sandbox_batch(
        &self,
        job: &Job,
        channel: &str,
        conn: &Connection,
        batch: &pb::DeliveryBatch,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let mut rows = Vec::with_capacity(batch.recipients.len());
        for r in batch.recipients.iter().filter(|r| gets(r, channel)) {
            let Ok(contact_id) = Uuid::parse_str(&r.contact_id) else {
                continue;
            };
            let id = Uuid::now_v7();
            let (status, error, rendered) = match self.render(job, channel, conn, r, id) {
                Ok(Rendered::Sandbox(v)) => ("sent", String::new(), Some(v)),
                Ok(_) => (
                    "failed",
                    "sandbox rendering produced no record".to_owned(),
                    None,
                ),
                Err(reason) => ("failed", reason, None),
            };
            rows.push(NewDelivery {
                id,
                contact_id,
                variant: r.variant.clone(),
                recipient: recipient_of(channel, r),
                status,
                error,
                payload: None,
                rendered,
            });
        }
        let rendered_at = started.elapsed();
        let scope = Self::scope(job, channel, conn, batch.seq);
        let mut tx = self.db.tenant_tx(job.tenant).await?;
        let inserted = store::insert_final(&mut tx, &scope, &rows).await?;
        let inserted_at = started.elapsed();
        let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
        let fresh: Vec<&NewDelivery> = rows.iter().filter(|r| inserted.contains(&r.id)).collect();
        let sent: Vec<&NewDelivery> = fresh
            .iter()
            .copied()
            .filter(|r| r.status == "sent")
            .collect();
        let failed: Vec<&NewDelivery> = fresh
            .iter()
            .copied()
            .filter(|r| r.status != "sent")
            .collect();
        store::add_batch_counts(
            &mut tx,
            job.tenant,
            job.run_id,
            batch.seq,
            channel,
            sent.len() as i64,
            failed.len() as i64,
        )
        .await?;
        events::recorded(&mut tx, job, channel, "sent", &sent).await?;
        events::recorded(&mut tx, job, channel, "failed", &failed).await?;
        tx.commit().await?;
        tracing::debug!(
            run_id = %job.run_id,
            seq = batch.seq,
            recipients = rows.len(),
            render_ms = rendered_at.as_millis() as u64,
            insert_ms = (inserted_at - rendered_at).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "sandbox batch recorded"
        );
        metrics::counter!("cos_publishing_deliveries_total", "status" => "sent", "kind" => "sandbox")
            .increment(sent.len() as u64);
        metrics::counter!("cos_publishing_deliveries_total", "status" => "failed", "kind" => "sandbox")
            .increment(failed.len() as u64);
        Ok(())
    }

    /// SMTP / webhook: claim, send each (concurrently, rate-limited), record each. Returns true
    /// when the job was paused part way (unsent claims are released).
    async fn live_batch(
        &self,
        job: &Arc<Job>,
        channel: &str,
        conn: &Arc<Connection>,
        batch: &pb::DeliveryBatch,
    ) -> Result<bool> {
        let mut rows = Vec::with_capacity(batch.recipients.len());
        let mut by_contact = std::collections::HashMap::new();
        for r in batch.recipients.iter().filter(|r| gets(r, channel)) {
            let Ok(contact_id) = Uuid::parse_str(&r.contact_id) else {
                continue;
            };
            rows.push(NewDelivery {
                id: Uuid::now_v7(),
                contact_id,
                variant: r.variant.clone(),
                recipient: recipient_of(channel, r),
                status: "pending",
                error: String::new(),
                payload: Some(r.encode_to_vec()),
                rendered: None,
            });
            by_contact.insert(contact_id, r);
        }
        let scope = Self::scope(job, channel, conn, batch.seq);
        let token = Uuid::new_v4();
        let mut tx = self.db.tenant_tx(job.tenant).await?;
        let claimed = store::claim_pending(
            &mut tx,
            &scope,
            &rows,
            self.config.claim_lease.as_secs_f64(),
            token,
        )
        .await?;
        tx.commit().await?;
        let paused = std::sync::atomic::AtomicBool::new(false);
        let unsent = std::sync::Mutex::new(Vec::new());
        let results = futures::stream::iter(claimed)
            .map(|(id, contact)| {
                let r = by_contact.get(&contact).copied();
                let paused = &paused;
                let unsent = &unsent;
                async move {
                    let Some(r) = r else { return Ok(()) };
                    if paused.load(std::sync::atomic::Ordering::Relaxed)
                        || self.is_paused(job).await?
                    {
                        paused.store(true, std::sync::atomic::Ordering::Relaxed);
                        unsent.lock().unwrap_or_else(|e| e.into_inner()).push(id);
                        return Ok(());
                    }
                    self.attempt(job, channel, conn, id, r, token).await
                }
            })
            .buffer_unordered(self.config.send_concurrency)
            .collect::<Vec<Result<()>>>()
            .await;
        for r in results {
            r?;
        }
        let unsent = unsent.into_inner().unwrap_or_else(|e| e.into_inner());
        if !unsent.is_empty() {
            let mut tx = self.db.tenant_tx(job.tenant).await?;
            store::release_claims(&mut tx, job.tenant, &unsent, token).await?;
            tx.commit().await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn is_paused(&self, job: &Job) -> Result<bool> {
        let state = match job.cached_state() {
            Some(s) => s,
            None => {
                let mut tx = self.db.tenant_tx(job.tenant).await?;
                let s = store::job_state(&mut tx, job.tenant, job.run_id)
                    .await?
                    .unwrap_or_else(|| "cancelled".into());
                tx.commit().await?;
                job.set_state(&s);
                s
            }
        };
        Ok(state != "active" && state != "completed")
    }

    /// One attempt for a delivery claimed under `token`: waits for the connection's rate
    /// limit, renews the claim (skipping the row if another worker took it over meanwhile),
    /// sends, and records the outcome with counters and event.
    pub async fn attempt(
        &self,
        job: &Job,
        channel: &str,
        conn: &Connection,
        id: Uuid,
        r: &pb::Recipient,
        token: Uuid,
    ) -> Result<()> {
        if let Some(cid) = conn.id {
            let rate = conn.rate_per_second;
            self.limiter.acquire(cid, rate, rate.max(1)).await;
        }
        let attempts = {
            let mut tx = self.db.tenant_tx(job.tenant).await?;
            let n = store::touch_claim(&mut tx, job.tenant, id, token).await?;
            tx.commit().await?;
            match n {
                Some(n) => n,
                None => {
                    tracing::info!(delivery_id = %id, "delivery claimed by another worker; not sent here");
                    return Ok(());
                }
            }
        };
        let result = match self.render(job, channel, conn, r, id) {
            Ok(rendered) => self.send(conn, &rendered, id).await,
            Err(reason) => Err(SendError::permanent(reason)),
        };
        let now = Utc::now();
        let (outcome, retry_error);
        match &result {
            Ok(receipt) => {
                outcome = Outcome::Sent {
                    provider_message_id: &receipt.provider_message_id,
                };
            }
            Err(e)
                if e.is_transient()
                    && u32::try_from(attempts).unwrap_or(u32::MAX) < self.config.max_attempts =>
            {
                let mut delay = cos_channels::backoff::retry_delay(
                    u32::try_from(attempts).unwrap_or(1),
                    self.config.retry_base,
                    self.config.retry_cap,
                    &mut rand::rng(),
                );
                if let Some(after) = e.retry_after() {
                    delay = delay.max(after.min(self.config.retry_cap));
                }
                retry_error = e.reason().to_owned();
                outcome = Outcome::Retry {
                    error: &retry_error,
                    at: now + chrono::Duration::from_std(delay).unwrap_or_default(),
                };
            }
            Err(e) => {
                outcome = Outcome::Failed { error: e.reason() };
            }
        }
        let error_text = match &result {
            Err(e) => e.reason().to_owned(),
            Ok(_) => String::new(),
        };
        // The message may already be out: recording it must not be given up lightly. A row
        // left `pending` would be sent again after the claim lease.
        let mut wait = Duration::from_millis(200);
        let mut tries = 0;
        loop {
            match self
                .record(job, channel, id, token, r, &outcome, &error_text)
                .await
            {
                Ok(()) => break,
                Err(e) if tries < 8 => {
                    tries += 1;
                    tracing::warn!(delivery_id = %id, error = %e, ?wait, "recording a delivery outcome failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
        let label = match &result {
            Ok(_) => "sent",
            Err(e) if e.is_transient() => "transient_error",
            Err(_) => "failed",
        };
        metrics::counter!("cos_publishing_deliveries_total", "status" => label, "kind" => "live")
            .increment(1);
        if let Err(e) = &result {
            tracing::info!(delivery_id = %id, run_id = %job.run_id, attempt = attempts, error = %e, "delivery attempt failed");
        }
        Ok(())
    }

    /// Writes the outcome of an attempt with the job's counters and the event, in one
    /// transaction.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        job: &Job,
        channel: &str,
        id: Uuid,
        token: Uuid,
        r: &pb::Recipient,
        outcome: &Outcome<'_>,
        error_text: &str,
    ) -> Result<()> {
        let mut tx = self.db.tenant_tx(job.tenant).await?;
        if store::record_outcome(&mut tx, job.tenant, id, Some(token), outcome)
            .await?
            .is_some()
        {
            let (sent, failed, retrying) = match outcome {
                Outcome::Sent { .. } => (1, 0, 0),
                Outcome::Failed { .. } => (0, 1, 0),
                Outcome::Retry { .. } => (0, 0, 1),
            };
            store::bump_counters(&mut tx, job.tenant, job.run_id, sent, failed, retrying, &[])
                .await?;
            let status = match outcome {
                Outcome::Sent { .. } => "sent",
                Outcome::Failed { .. } => "failed",
                Outcome::Retry { .. } => "",
            };
            if !status.is_empty() {
                let row = NewDelivery {
                    id,
                    contact_id: Uuid::parse_str(&r.contact_id).unwrap_or_default(),
                    variant: r.variant.clone(),
                    recipient: String::new(),
                    status: if status == "sent" { "sent" } else { "failed" },
                    error: error_text.to_owned(),
                    payload: None,
                    rendered: None,
                };
                events::recorded(&mut tx, job, channel, status, &[&row]).await?;
            }
            store::maybe_complete(&mut tx, job.tenant, job.run_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A marketer's test send: render and send now; returns (status, provider id, error).
    pub async fn send_test(
        &self,
        job: &Job,
        channel: &str,
        conn: &Connection,
        id: Uuid,
        r: &pb::Recipient,
    ) -> (&'static str, String, String) {
        let result = match self.render(job, channel, conn, r, id) {
            Ok(Rendered::Sandbox(_)) => Ok(SendReceipt {
                provider_message_id: format!("sandbox-{id}"),
                detail: "recorded by the sandbox".into(),
            }),
            Ok(rendered) => self.send(conn, &rendered, id).await,
            Err(reason) => Err(SendError::permanent(reason)),
        };
        match result {
            Ok(receipt) => ("sent", receipt.provider_message_id, String::new()),
            Err(e) => ("failed", String::new(), e.reason().to_owned()),
        }
    }

    /// Sends due retries and takes over abandoned claims (active jobs, any tenant). Returns how
    /// many were claimed. A row that cannot be processed fails with the reason instead of
    /// blocking the others.
    pub async fn retry_due(&self) -> Result<usize> {
        let token = Uuid::new_v4();
        let mut tx = self.db.system_tx("claim due delivery retries").await?;
        let due =
            store::claim_due_retries(&mut tx, self.config.claim_lease.as_secs_f64(), 50, token)
                .await?;
        tx.commit().await?;
        let n = due.len();
        for d in due {
            if let Err(e) = self.retry_one(&d, token).await {
                // The claim stays; the row is taken over again after the lease.
                tracing::warn!(delivery_id = %d.id, tenant = %d.tenant_id, error = %e, "retrying a delivery failed; it is tried again after the claim lease");
            }
        }
        Ok(n)
    }

    async fn retry_one(&self, d: &store::DueDelivery, token: Uuid) -> Result<()> {
        let job = match d.run_id {
            Some(run) => self.jobs.get(d.tenant_id, run).await?,
            None => None,
        };
        let recipient = d.payload.as_deref().map(pb::Recipient::decode);
        let conn = job
            .as_ref()
            .and_then(|j| j.channels.iter().find(|(c, _)| *c == d.channel))
            .map(|(_, c)| c.clone());
        let (Some(job), Some(Ok(r)), Some(conn)) = (job, recipient, conn) else {
            let mut tx = self.db.tenant_tx(d.tenant_id).await?;
            if let Some(Some(run)) = store::record_outcome(
                &mut tx,
                d.tenant_id,
                d.id,
                Some(token),
                &Outcome::Failed {
                    error: "the delivery's job, channel or recipient is gone",
                },
            )
            .await?
            {
                store::bump_counters(&mut tx, d.tenant_id, run, 0, 1, 0, &[]).await?;
                store::maybe_complete(&mut tx, d.tenant_id, run).await?;
            }
            tx.commit().await?;
            return Ok(());
        };
        if self.is_paused(&job).await? && job.cached_state().as_deref() != Some("completed") {
            // Paused since the claim: give it back; the sweep takes it again after a resume.
            let mut tx = self.db.tenant_tx(d.tenant_id).await?;
            store::release_claims(&mut tx, d.tenant_id, &[d.id], token).await?;
            tx.commit().await?;
            return Ok(());
        }
        self.attempt(&job, &d.channel, &conn, d.id, &r, token).await
    }

    /// Completes sealed jobs whose last delivery finished outside a batch (retries).
    pub async fn complete_finished(&self) -> Result<usize> {
        let mut tx = self.db.system_tx("find finished delivery jobs").await?;
        let open = store::open_sealed_jobs(&mut tx, 100).await?;
        tx.commit().await?;
        let mut done = 0;
        for (tenant, run_id) in open {
            let mut tx = self.db.tenant_tx(tenant).await?;
            if store::maybe_complete(&mut tx, tenant, run_id).await? {
                done += 1;
            }
            tx.commit().await?;
        }
        Ok(done)
    }
}

/// Whether the recipient gets `channel` (campaigns lists the channels when not all).
fn gets(r: &pb::Recipient, channel: &str) -> bool {
    r.channels.is_empty() || r.channels.iter().any(|c| c == channel)
}

fn recipient_of(channel: &str, r: &pb::Recipient) -> String {
    match channel {
        "email" => r.email.clone(),
        "sms" => r.phone.clone(),
        _ => String::new(),
    }
}

/// Republishes parked batches of resumed (or cancelled: they are then dropped on receipt) jobs.
pub async fn republish_parked(
    db: &Db,
    publisher: &cos_events::WorkQueuePublisher,
) -> Result<usize> {
    let mut tx = db.system_tx("republish parked delivery batches").await?;
    let parked = store::claim_parked(&mut tx, 100).await?;
    if parked.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let payloads: Vec<Vec<u8>> = parked.iter().map(|p| p.3.clone()).collect();
    publisher
        .publish_all(&payloads, "application/x-protobuf")
        .await
        .map_err(Error::Events)?;
    for (tenant, run_id, seq, _) in &parked {
        store::delete_parked(&mut tx, *tenant, *run_id, *seq).await?;
    }
    tx.commit().await?;
    Ok(parked.len())
}

/// Waits `d` unless cancelled.
pub async fn pause(d: Duration, stop: &tokio_util::sync::CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}
