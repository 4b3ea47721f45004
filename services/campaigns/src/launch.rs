//! Launch, fan-out, pause/resume, completion and the scheduler.
//!
//! Launch (from the API or the scheduler):
//! 1. the campaign must be launchable (draft or scheduled, ready to send);
//! 2. the audience is counted (target members, each contact once, minus exclusions, minus
//!    contacts without consent or address for every channel);
//! 3. publishing registers the run's delivery job (content snapshot, channel connections: a
//!    channel without a connection refuses the launch here);
//! 4. billing grants one campaign and the run's messages from the monthly quotas, all or
//!    nothing (402 otherwise; the job is cancelled, nothing is sent);
//! 5. one transaction moves the campaign to running and records the run;
//! 6. the runner (any replica, lease-based) streams the audience again with attributes and
//!    publishes it to the durable work queue in batches, checkpointing its cursor, then seals the
//!    job with the batch count; it completes the campaign when publishing reports the job done.
//!
//! Recipients who joined the segments between the count and the fan-out are sent to while quota
//! remains and skipped as `quota` beyond it; quota not used is given back when the fan-out ends.

use std::collections::BTreeMap;
use std::sync::Arc;

use cos_entitlements::{CallAuth, Limit};
use cos_errors::ServiceError;
use cos_proto::publishing::v1 as ppb;
use prost::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::audience::{self, AudienceSpec, Next};
use crate::convert::{content_from_json, variants_from_json, variants_to_domain};
use crate::domain::input;
use crate::domain::state::{self, Action, Status as CampaignStatus};
use crate::error::{Error, Result};
use crate::events::{self, Change};
use crate::grpc::{CampaignsApi, Draft, illegal, not_found, stored_status, version_conflict};
use crate::store::{self, CampaignRow, ScheduleChange};

/// Fan-out publishes this many batches between checkpoints.
const BATCHES_PER_CHECKPOINT: usize = 8;
/// A fan-out's lease; renewed at every checkpoint (every few thousand recipients).
const LEASE_SECS: f64 = 120.0;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub status: String,
    pub counted: i64,
    pub published: i64,
    pub batches: i64,
    pub cursor_contact_id: Option<Uuid>,
    pub skipped: serde_json::Value,
    pub channels: Vec<String>,
    pub quota_key: String,
    pub quota_granted: i64,
    pub quota_per_recipient: i32,
    pub launched_at: chrono::DateTime<chrono::Utc>,
    pub fanned_out_at: Option<chrono::DateTime<chrono::Utc>>,
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: String,
}

const RUN_COLUMNS: &str = "tenant_id, id, campaign_id, status, counted, published, batches, \
     cursor_contact_id, skipped, channels, quota_key, quota_granted, quota_per_recipient, \
     launched_at, fanned_out_at, completed_at, last_error";

pub async fn get_run(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<RunRow>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM campaigns.campaign_runs WHERE tenant_id = $1 AND id = $2"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

async fn current_run_id(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
    campaign: Uuid,
) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar::<_, Option<Uuid>>(
        "SELECT current_run_id FROM campaigns.campaigns WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(campaign)
    .fetch_optional(conn)
    .await?
    .flatten())
}

pub(crate) fn job_content(row: &CampaignRow) -> ppb::JobContent {
    let c = content_from_json(&row.content.0);
    let mut out = ppb::JobContent::default();
    if let Some(e) = c.email {
        out.has_email = true;
        out.email_subject = e.subject;
        out.email_preheader = e.preheader;
        out.email_html_body = e.html_body;
        out.email_text_body = e.text_body;
    }
    if let Some(s) = c.sms {
        out.has_sms = true;
        out.sms_text = s.text;
    }
    if let Some(w) = c.webhook {
        out.has_webhook = true;
        out.webhook_json_template = w.json_template;
    }
    out
}

/// Who launches: a user (API) or the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct Launcher {
    pub tenant: Uuid,
    pub user: Uuid,
}

impl CampaignsApi {
    fn spec(row: &CampaignRow, tenant: Uuid) -> AudienceSpec {
        AudienceSpec {
            tenant,
            targets: row.target_segment_ids.clone(),
            exclusions: row.exclusion_segment_ids.clone(),
            channels: row.channels.clone(),
            after: None,
            with_attributes: false,
        }
    }

    async fn take_quota(&self, tenant: Uuid, run: Uuid, messages: i64) -> Result<i64> {
        let Some(ent) = &self.entitlements else {
            return Ok(messages);
        };
        let key = format!("campaign-run:{run}");
        ent.consume(
            tenant,
            Limit::CampaignsPerMonth,
            1,
            &format!("{key}:launch"),
            &CallAuth::Service,
        )
        .await?;
        if messages > 0
            && let Err(e) = ent
                .consume(
                    tenant,
                    Limit::MessagesPerMonth,
                    messages,
                    &format!("{key}:messages"),
                    &CallAuth::Service,
                )
                .await
        {
            if let Err(r) = ent
                .release(tenant, &format!("{key}:launch"), 1, &CallAuth::Service)
                .await
            {
                tracing::warn!(%tenant, %run, error = %r, "could not give back the campaign launch after a refused message quota");
            }
            return Err(e.into());
        }
        Ok(messages)
    }

    async fn give_back(&self, tenant: Uuid, run: Uuid, launch: bool, messages: i64) {
        let Some(ent) = &self.entitlements else {
            return;
        };
        let key = format!("campaign-run:{run}");
        if launch
            && let Err(e) = ent
                .release(tenant, &format!("{key}:launch"), 1, &CallAuth::Service)
                .await
        {
            tracing::warn!(%tenant, %run, error = %e, "could not give back a campaign launch");
        }
        if messages > 0
            && let Err(e) = ent
                .release(
                    tenant,
                    &format!("{key}:messages"),
                    messages,
                    &CallAuth::Service,
                )
                .await
        {
            tracing::warn!(%tenant, %run, messages, error = %e, "could not give back unused messages");
        }
    }

    /// Launches a draft or scheduled campaign now (see the module docs).
    pub(crate) async fn launch(
        &self,
        who: Launcher,
        id: Uuid,
        version: i64,
        from_schedule: bool,
    ) -> Result<CampaignRow> {
        let tenant = who.tenant;
        let current = {
            let mut tx = self.db.tenant_tx(tenant).await?;
            let row = store::get(&mut tx, tenant, id, false)
                .await?
                .ok_or_else(not_found)?;
            tx.commit().await.map_err(cos_db::DbError::from)?;
            row
        };
        if version != 0 && current.version != version {
            return Err(version_conflict(current.version));
        }
        let from = stored_status(&current)?;
        state::transition(from, Action::Launch).map_err(illegal)?;
        if from_schedule && from != CampaignStatus::Scheduled {
            return Err(
                ServiceError::failed_precondition("the campaign is no longer scheduled").into(),
            );
        }
        self.check_ready(&self.validate(&Draft::of(&current))?)?;
        if current.kind != "message" {
            return Err(ServiceError::failed_precondition(
                "social posts are published by the social adapters, which are not available yet",
            )
            .into());
        }
        let counted = audience::count(&self.audience, &Self::spec(&current, tenant)).await?;
        let run_id = Uuid::now_v7();
        self.publishing
            .create_job(
                tenant,
                ppb::CreateDeliveryJobRequest {
                    run_id: run_id.to_string(),
                    campaign_id: id.to_string(),
                    campaign_name: current.name.clone(),
                    channels: current
                        .channels
                        .iter()
                        .map(|c| ppb::JobChannel {
                            channel: c.clone(),
                            connection_id: String::new(),
                        })
                        .collect(),
                    content: Some(job_content(&current)),
                },
            )
            .await?;
        let granted = match self.take_quota(tenant, run_id, counted.messages).await {
            Ok(g) => g,
            Err(e) => {
                self.cancel_job(tenant, run_id).await;
                return Err(e);
            }
        };
        let per_recipient = current.channels.iter().filter(|c| *c != "sandbox").count() as i32;
        let committed = async {
            let mut tx = self.db.tenant_tx(tenant).await?;
            let locked = store::get(&mut tx, tenant, id, true).await?.ok_or_else(not_found)?;
            if locked.version != current.version {
                return Err(version_conflict(locked.version));
            }
            let row = store::set_status(&mut tx, tenant, id, CampaignStatus::Running.as_str(), ScheduleChange::Keep)
                .await?;
            sqlx::query(
                "INSERT INTO campaigns.campaign_runs
                     (tenant_id, id, campaign_id, counted, skipped, channels, quota_key, quota_granted,
                      quota_per_recipient, launched_by)
                 VALUES ($1, $2, $3, $4, '{}'::jsonb, $5, $6, $7, $8, $9)",
            )
            .bind(tenant)
            .bind(run_id)
            .bind(id)
            .bind(counted.recipients)
            .bind(&current.channels)
            .bind(format!("campaign-run:{run_id}"))
            .bind(granted)
            .bind(per_recipient)
            .bind((!who.user.is_nil()).then_some(who.user))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE campaigns.campaigns SET current_run_id = $3, last_error = '', launch_claimed_until = NULL,
                        launch_claim = NULL
                  WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant)
            .bind(id)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
            events::emit(
                &mut tx,
                tenant,
                events::LAUNCHED,
                Change {
                    campaign: id,
                    status: CampaignStatus::Running.as_str(),
                    previous_status: Some(from.as_str()),
                    version: row.version,
                    actor: who.user,
                    send_at: row.send_at,
                },
            )
            .await?;
            tx.commit().await.map_err(cos_db::DbError::from)?;
            Ok::<_, Error>(row)
        }
        .await;
        match committed {
            Ok(row) => {
                tracing::info!(%tenant, campaign = %id, run = %run_id, audience = counted.recipients, "campaign launched");
                metrics::counter!("cos_campaigns_launched_total").increment(1);
                self.wake_runner.notify_one();
                Ok(row)
            }
            Err(e) => {
                self.cancel_job(tenant, run_id).await;
                self.give_back(tenant, run_id, true, granted).await;
                Err(e)
            }
        }
    }

    async fn cancel_job(&self, tenant: Uuid, run: Uuid) {
        if let Err(e) = self.publishing.set_state(tenant, run, "cancelled").await {
            tracing::warn!(%tenant, %run, error = %e, "could not cancel an unused delivery job");
        }
    }

    /// running -> paused: publishing stops sending first, then the campaign records it.
    pub(crate) async fn pause(&self, who: Launcher, id: Uuid, version: i64) -> Result<CampaignRow> {
        self.pause_or_resume(who, id, version, Action::Pause).await
    }

    pub(crate) async fn resume(
        &self,
        who: Launcher,
        id: Uuid,
        version: i64,
    ) -> Result<CampaignRow> {
        self.pause_or_resume(who, id, version, Action::Resume).await
    }

    async fn pause_or_resume(
        &self,
        who: Launcher,
        id: Uuid,
        version: i64,
        action: Action,
    ) -> Result<CampaignRow> {
        let tenant = who.tenant;
        let (row, run) = {
            let mut tx = self.db.tenant_tx(tenant).await?;
            let row = store::get(&mut tx, tenant, id, false)
                .await?
                .ok_or_else(not_found)?;
            let run = current_run_id(&mut tx, tenant, id).await?;
            tx.commit().await.map_err(cos_db::DbError::from)?;
            (row, run)
        };
        if version != 0 && row.version != version {
            return Err(version_conflict(row.version));
        }
        let from = stored_status(&row)?;
        let to = state::transition(from, action).map_err(illegal)?;
        let (job_state, undo) = if action == Action::Pause {
            ("paused", "active")
        } else {
            ("active", "paused")
        };
        if let Some(run) = run {
            self.publishing.set_state(tenant, run, job_state).await?;
        }
        let committed = async {
            let mut tx = self.db.tenant_tx(tenant).await?;
            let locked = store::get(&mut tx, tenant, id, true)
                .await?
                .ok_or_else(not_found)?;
            if locked.version != row.version {
                return Err(version_conflict(locked.version));
            }
            let updated =
                store::set_status(&mut tx, tenant, id, to.as_str(), ScheduleChange::Keep).await?;
            events::emit(
                &mut tx,
                tenant,
                if action == Action::Pause {
                    events::PAUSED
                } else {
                    events::RESUMED
                },
                Change {
                    campaign: id,
                    status: to.as_str(),
                    previous_status: Some(from.as_str()),
                    version: updated.version,
                    actor: who.user,
                    send_at: updated.send_at,
                },
            )
            .await?;
            tx.commit().await.map_err(cos_db::DbError::from)?;
            Ok::<_, Error>(updated)
        }
        .await;
        match committed {
            Ok(updated) => {
                self.wake_runner.notify_one();
                Ok(updated)
            }
            Err(e) => {
                if let Some(run) = run
                    && let Err(u) = self.publishing.set_state(tenant, run, undo).await
                {
                    tracing::error!(%tenant, %run, error = %u, "could not undo the delivery job state after a failed {}", action.as_str());
                }
                Err(e)
            }
        }
    }

    /// The latest run's counters.
    pub(crate) async fn progress(
        &self,
        tenant: Uuid,
        id: Uuid,
    ) -> Result<cos_proto::campaigns::v1::CampaignProgress> {
        use cos_proto::campaigns::v1 as pb;
        let mut tx = self.db.tenant_tx(tenant).await?;
        let row = store::get(&mut tx, tenant, id, false)
            .await?
            .ok_or_else(not_found)?;
        let run = match current_run_id(&mut tx, tenant, id).await? {
            Some(r) => get_run(&mut tx, tenant, r).await?,
            None => None,
        };
        tx.commit().await.map_err(cos_db::DbError::from)?;
        let mut out = pb::CampaignProgress {
            campaign_id: id.to_string(),
            status: row.status.clone(),
            ..Default::default()
        };
        let Some(run) = run else {
            return Ok(out);
        };
        let mut skipped: BTreeMap<String, i64> = run
            .skipped
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let job = self.publishing.job(tenant, run.id).await?;
        for s in &job.skipped {
            *skipped.entry(s.reason.clone()).or_default() += s.count;
        }
        let fan_out_done = run.status != "fanning_out";
        out.run_id = run.id.to_string();
        out.audience = if fan_out_done {
            run.published
        } else {
            run.counted.max(run.published)
        };
        out.sent = job.sent;
        out.failed = job.failed;
        out.retrying = job.retrying;
        let job_skipped: i64 = job.skipped.iter().map(|s| s.count).sum();
        out.queued = (run.published - job.sent - job.failed - job_skipped).max(0);
        out.skipped_total = skipped.values().sum();
        out.skipped = skipped
            .into_iter()
            .map(|(reason, count)| pb::SkippedCount { reason, count })
            .collect();
        out.fan_out_done = fan_out_done;
        out.launched_at = Some(crate::convert::ts(run.launched_at));
        out.completed_at = run.completed_at.map(crate::convert::ts);
        out.quota_granted = run.quota_granted;
        out.last_error = run.last_error.clone();
        Ok(out)
    }

    // ---- the runner ------------------------------------------------------------------------

    /// Claims one run to fan out (any tenant): its campaign is running and nobody holds it.
    async fn claim_fan_out(&self) -> Result<Option<(RunRow, String)>> {
        // Each claim has its own owner token: two passes of one replica are told apart too.
        let owner = format!("{}:{}", self.replica, Uuid::new_v4().simple());
        let mut tx = self.db.system_tx("claim a campaign fan-out").await?;
        let sql = format!(
            "UPDATE campaigns.campaign_runs r SET lease_owner = $1,
                    lease_until = now() + make_interval(secs => $2)
              WHERE (r.tenant_id, r.id) IN (
                    SELECT r2.tenant_id, r2.id FROM campaigns.campaign_runs r2
                      JOIN campaigns.campaigns c ON c.tenant_id = r2.tenant_id AND c.id = r2.campaign_id
                     WHERE r2.status = 'fanning_out' AND c.status = 'running'
                       AND (r2.lease_until IS NULL OR r2.lease_until < now())
                     ORDER BY r2.launched_at LIMIT 1
                     FOR UPDATE OF r2 SKIP LOCKED)
              RETURNING {}",
            RUN_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect::<Vec<_>>().join(", ")
        );
        let run: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&owner)
            .bind(LEASE_SECS)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await.map_err(cos_db::DbError::from)?;
        Ok(run.map(|r| (r, owner)))
    }

    /// Streams the audience of `run` from its cursor to the work queue. Stops early (keeping its
    /// checkpoint) when the campaign is paused or the lease is lost.
    async fn fan_out(&self, run: RunRow, owner: &str) -> Result<()> {
        let tenant = run.tenant_id;
        let row = {
            let mut tx = self.db.tenant_tx(tenant).await?;
            let row = store::get(&mut tx, tenant, run.campaign_id, false)
                .await?
                .ok_or_else(not_found)?;
            tx.commit().await.map_err(cos_db::DbError::from)?;
            row
        };
        let variants = variants_to_domain(&variants_from_json(&row.variants.0));
        let campaign_bytes = *row.id.as_bytes();
        let mut spec = Self::spec(&row, tenant);
        spec.channels = run.channels.clone();
        spec.after = run.cursor_contact_id;
        spec.with_attributes = true;
        let mut reader = self.audience.reader(&spec).await?;
        let batch_size = self.config.fanout_batch_size;
        let per = i64::from(run.quota_per_recipient);
        let enforce_quota = self.entitlements.is_some() && per > 0;
        let mut published = run.published;
        let mut seq = run.batches;
        let mut messages_used = published * per;
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let mut current: Vec<ppb::Recipient> = Vec::with_capacity(batch_size);
        let mut skipped_delta: BTreeMap<String, i64> = BTreeMap::new();
        let mut cursor = run.cursor_contact_id;
        let mut published_delta = 0i64;
        let started = std::time::Instant::now();
        loop {
            let next = reader.next().await?;
            let done = next.is_none();
            if let Some((contact, next)) = next {
                cursor = Some(contact);
                match next {
                    Next::Skipped(reason) => {
                        *skipped_delta.entry(reason.to_owned()).or_default() += 1
                    }
                    Next::Accepted(a) => {
                        let cost = a.channels.iter().filter(|c| *c != "sandbox").count() as i64;
                        if enforce_quota && messages_used + cost > run.quota_granted {
                            *skipped_delta.entry("quota".to_owned()).or_default() += 1;
                        } else {
                            messages_used += cost;
                            let m = a.member;
                            let variant = input::assign_variant(
                                &variants,
                                &campaign_bytes,
                                contact.as_bytes(),
                            )
                            .map(|v| v.key.clone())
                            .unwrap_or_default();
                            current.push(ppb::Recipient {
                                contact_id: m.contact_id,
                                email: m.email,
                                phone: m.phone,
                                first_name: m.first_name,
                                last_name: m.last_name,
                                locale: m.locale,
                                time_zone: m.time_zone,
                                attributes_json: m.attributes_json,
                                variant,
                                external_id: String::new(),
                                channels: if a.channels.len() == run.channels.len() {
                                    vec![]
                                } else {
                                    a.channels
                                },
                            });
                        }
                    }
                }
            }
            if current.len() >= batch_size || (done && !current.is_empty()) {
                let batch = ppb::DeliveryBatch {
                    tenant_id: tenant.to_string(),
                    run_id: run.id.to_string(),
                    campaign_id: run.campaign_id.to_string(),
                    seq,
                    recipients: std::mem::take(&mut current),
                };
                published_delta += batch.recipients.len() as i64;
                seq += 1;
                pending.push(batch.encode_to_vec());
            }
            if pending.len() >= BATCHES_PER_CHECKPOINT || done {
                self.queue
                    .publish_all(&pending, "application/x-protobuf")
                    .await
                    .map_err(Error::Events)?;
                pending.clear();
                published += published_delta;
                let keep_going = self
                    .checkpoint(
                        &run,
                        owner,
                        cursor,
                        seq,
                        published_delta,
                        &skipped_delta,
                        done,
                    )
                    .await?;
                published_delta = 0;
                skipped_delta.clear();
                if !keep_going {
                    tracing::info!(run = %run.id, published, "fan-out stopped (campaign paused or lease lost)");
                    return Ok(());
                }
            }
            if done {
                break;
            }
        }
        self.publishing.seal(tenant, run.id, seq, published).await?;
        let unused = run.quota_granted - messages_used;
        if enforce_quota && unused > 0 {
            self.give_back(tenant, run.id, false, unused).await;
        }
        tracing::info!(run = %run.id, published, batches = seq, elapsed = ?started.elapsed(), "fan-out finished");
        metrics::counter!("cos_campaigns_fanout_recipients_total")
            .increment(u64::try_from(published - run.published).unwrap_or(0));
        Ok(())
    }

    /// Saves the fan-out's progress and renews its lease; false when it must stop (campaign no
    /// longer running, or another replica took the run over).
    #[allow(clippy::too_many_arguments)]
    async fn checkpoint(
        &self,
        run: &RunRow,
        owner: &str,
        cursor: Option<Uuid>,
        batches: i64,
        published_delta: i64,
        skipped_delta: &BTreeMap<String, i64>,
        done: bool,
    ) -> Result<bool> {
        let tenant = run.tenant_id;
        let mut tx = self.db.tenant_tx(tenant).await?;
        let reasons: Vec<&str> = skipped_delta.keys().map(String::as_str).collect();
        let counts: Vec<i64> = skipped_delta.values().copied().collect();
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE campaigns.campaign_runs r
                SET cursor_contact_id = $3, batches = $4, published = published + $5,
                    skipped = (SELECT coalesce(jsonb_object_agg(k, v), '{}'::jsonb) FROM (
                        SELECT k, sum(v)::bigint AS v FROM (
                            SELECT key AS k, value::bigint AS v FROM jsonb_each_text(r.skipped)
                            UNION ALL SELECT * FROM unnest($6::text[], $7::bigint[])) s GROUP BY k) t),
                    status = CASE WHEN $8 THEN 'fanned_out' ELSE status END,
                    fanned_out_at = CASE WHEN $8 THEN now() ELSE fanned_out_at END,
                    lease_until = CASE WHEN $8 THEN NULL ELSE now() + make_interval(secs => $10) END
              WHERE tenant_id = $1 AND id = $2 AND lease_owner = $9 AND status = 'fanning_out'
              RETURNING (SELECT c.status FROM campaigns.campaigns c
                          WHERE c.tenant_id = r.tenant_id AND c.id = r.campaign_id)",
        )
        .bind(tenant)
        .bind(run.id)
        .bind(cursor)
        .bind(batches)
        .bind(published_delta)
        .bind(&reasons)
        .bind(&counts)
        .bind(done)
        .bind(owner)
        .bind(LEASE_SECS)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
        tx.commit().await.map_err(cos_db::DbError::from)?;
        match status.as_deref() {
            None => Ok(false),
            Some("running") => Ok(true),
            Some(_) => {
                // Paused: let the lease go so a resume on any replica picks the run up at once.
                let mut tx = self.db.tenant_tx(tenant).await?;
                sqlx::query("UPDATE campaigns.campaign_runs SET lease_until = NULL WHERE tenant_id = $1 AND id = $2 AND lease_owner = $3")
                    .bind(tenant)
                    .bind(run.id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await.map_err(cos_db::DbError::from)?;
                Ok(done)
            }
        }
    }

    /// Records why a fan-out pass failed (shown to the on-call engineer in the run row).
    async fn note_fan_out_error(&self, tenant: Uuid, run: Uuid, error: &str) {
        let noted = async {
            let mut tx = self.db.tenant_tx(tenant).await?;
            sqlx::query("UPDATE campaigns.campaign_runs SET last_error = $3 WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(run)
                .bind(error.chars().take(1000).collect::<String>())
                .execute(&mut *tx)
                .await?;
            tx.commit().await.map_err(cos_db::DbError::from)?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = noted {
            tracing::warn!(%run, error = %e, "could not record the fan-out error");
        }
    }

    /// Completes running campaigns whose delivery job is done (any tenant); seals jobs whose
    /// seal did not get through when their fan-out ended.
    async fn complete_finished(&self) -> Result<usize> {
        let mut tx = self.db.system_tx("find fanned-out campaign runs").await?;
        let runs: Vec<(Uuid, Uuid, Uuid, i64, i64)> = sqlx::query_as(
            "SELECT r.tenant_id, r.id, r.campaign_id, r.batches, r.published
               FROM campaigns.campaign_runs r
               JOIN campaigns.campaigns c ON c.tenant_id = r.tenant_id AND c.id = r.campaign_id
              WHERE r.status = 'fanned_out' AND c.status = 'running'
              ORDER BY r.fanned_out_at LIMIT 1000",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await.map_err(cos_db::DbError::from)?;
        let mut done = 0;
        for (tenant, run, campaign, batches, published) in runs {
            let mut job = match self.publishing.job(tenant, run).await {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(%tenant, %run, error = %e, "cannot read the delivery job");
                    continue;
                }
            };
            if !job.sealed {
                match self.publishing.seal(tenant, run, batches, published).await {
                    Ok(j) => job = j,
                    Err(e) => {
                        tracing::warn!(%tenant, %run, error = %e, "sealing the delivery job failed; retried next pass");
                        continue;
                    }
                }
            }
            if job.state != "completed" {
                continue;
            }
            let mut tx = self.db.tenant_tx(tenant).await?;
            let Some(row) = store::get(&mut tx, tenant, campaign, true).await? else {
                continue;
            };
            if row.status != CampaignStatus::Running.as_str() {
                continue;
            }
            let updated = store::set_status(
                &mut tx,
                tenant,
                campaign,
                CampaignStatus::Completed.as_str(),
                ScheduleChange::Keep,
            )
            .await?;
            sqlx::query("UPDATE campaigns.campaign_runs SET status = 'completed', completed_at = now() WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(run)
                .execute(&mut *tx)
                .await?;
            events::emit(
                &mut tx,
                tenant,
                events::COMPLETED,
                Change {
                    campaign,
                    status: CampaignStatus::Completed.as_str(),
                    previous_status: Some(CampaignStatus::Running.as_str()),
                    version: updated.version,
                    actor: Uuid::nil(),
                    send_at: updated.send_at,
                },
            )
            .await?;
            tx.commit().await.map_err(cos_db::DbError::from)?;
            tracing::info!(%tenant, %campaign, %run, sent = job.sent, failed = job.failed, "campaign completed");
            done += 1;
        }
        Ok(done)
    }

    /// Claims due scheduled campaigns (any tenant) for a launch by this replica.
    async fn claim_due(&self) -> Result<Vec<(Uuid, Uuid, Uuid)>> {
        let mut tx = self.db.system_tx("claim due scheduled campaigns").await?;
        let due: Vec<(Uuid, Uuid, Uuid)> = sqlx::query_as(
            "UPDATE campaigns.campaigns
                SET launch_claimed_until = now() + interval '10 minutes', launch_claim = gen_random_uuid()
              WHERE (tenant_id, id) IN (
                    SELECT tenant_id, id FROM campaigns.campaigns
                     WHERE status = 'scheduled' AND deleted_at IS NULL AND send_at <= now()
                       AND (launch_claimed_until IS NULL OR launch_claimed_until < now())
                     ORDER BY send_at LIMIT 5 FOR UPDATE SKIP LOCKED)
              RETURNING tenant_id, id, launch_claim",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await.map_err(cos_db::DbError::from)?;
        Ok(due)
    }

    /// A scheduled launch was refused for a reason a person must fix (quota, no connection, an
    /// empty target): back to draft with the reason, so it is not retried forever.
    async fn schedule_failed(
        &self,
        tenant: Uuid,
        id: Uuid,
        claim: Uuid,
        reason: &str,
    ) -> Result<()> {
        let mut tx = self.db.tenant_tx(tenant).await?;
        let Some(row) = store::get(&mut tx, tenant, id, true).await? else {
            return Ok(());
        };
        let still_ours: bool = sqlx::query_scalar(
            "SELECT launch_claim IS NOT DISTINCT FROM $3 FROM campaigns.campaigns WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(claim)
        .fetch_one(&mut *tx)
        .await?;
        if row.status != CampaignStatus::Scheduled.as_str() || !still_ours {
            return Ok(());
        }
        let updated = store::set_status(
            &mut tx,
            tenant,
            id,
            CampaignStatus::Draft.as_str(),
            ScheduleChange::Clear,
        )
        .await?;
        sqlx::query("UPDATE campaigns.campaigns SET last_error = $3, launch_claimed_until = NULL, launch_claim = NULL WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .bind(reason.chars().take(1000).collect::<String>())
            .execute(&mut *tx)
            .await?;
        events::emit(
            &mut tx,
            tenant,
            events::LAUNCH_FAILED,
            Change {
                campaign: id,
                status: CampaignStatus::Draft.as_str(),
                previous_status: Some(CampaignStatus::Scheduled.as_str()),
                version: updated.version,
                actor: Uuid::nil(),
                send_at: None,
            },
        )
        .await?;
        tx.commit().await.map_err(cos_db::DbError::from)?;
        Ok(())
    }

    async fn launch_due(self: &Arc<Self>) -> Result<usize> {
        let due = self.claim_due().await?;
        let n = due.len();
        for (tenant, id, claim) in due {
            let who = Launcher {
                tenant,
                user: Uuid::nil(),
            };
            match self.launch(who, id, 0, true).await {
                Ok(_) => {}
                Err(Error::Client(e)) if e.code != cos_errors::ErrorCode::Unavailable => {
                    tracing::warn!(%tenant, campaign = %id, error = %e, "scheduled launch refused; back to draft");
                    self.schedule_failed(tenant, id, claim, &e.message).await?;
                }
                Err(e) => {
                    tracing::warn!(%tenant, campaign = %id, error = %e, "scheduled launch failed; retried in 2 minutes");
                }
            }
        }
        Ok(n)
    }
}

/// The scheduler and fan-out runner: launches due campaigns, fans out launched runs (up to
/// `fanout_concurrency` at once), completes finished ones. Any number of replicas may run it.
pub async fn run(api: Arc<CampaignsApi>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let interval = api.config.runner_interval;
    let slots = Arc::new(tokio::sync::Semaphore::new(api.config.fanout_concurrency));
    let mut fan_outs = tokio::task::JoinSet::new();
    tracing::info!(replica = %api.replica, "campaign runner starting");
    while !shutdown.is_cancelled() {
        while let Some(r) = fan_outs.try_join_next() {
            if let Err(e) = r {
                tracing::error!(error = %e, "fan-out task panicked");
            }
        }
        if let Err(e) = api.launch_due().await {
            tracing::warn!(error = %e, "scheduler pass failed");
        }
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            match api.claim_fan_out().await {
                Ok(Some((run, owner))) => {
                    let api = api.clone();
                    fan_outs.spawn(async move {
                        let (id, tenant) = (run.id, run.tenant_id);
                        if let Err(e) = api.fan_out(run, &owner).await {
                            tracing::warn!(run = %id, error = %e, "fan-out failed; it is tried again from its last checkpoint when its lease expires (campaign_runs.last_error)");
                            api.note_fan_out_error(tenant, id, &e.to_string()).await;
                        }
                        drop(permit);
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a fan-out failed");
                    break;
                }
            }
        }
        if let Err(e) = api.complete_finished().await {
            tracing::warn!(error = %e, "completion pass failed");
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = api.wake_runner.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
    }
    fan_outs.abort_all();
    while fan_outs.join_next().await.is_some() {}
    tracing::info!("campaign runner stopped");
    Ok(())
}
