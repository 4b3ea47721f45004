//! What a worker needs to send a run's messages: the job's content snapshot, compiled senders
//! per channel connection and the job's state (refreshed at most every 500 ms so a pause
//! reaches every worker within a second).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cos_channels::smtp::{SmtpConfig, SmtpSender, SmtpTls};
use cos_channels::webhook::WebhookTarget;
use cos_crypto::KeyRing;
use cos_db::Db;
use cos_templating::template::{CompiledContent, Content, RenderError, Renderer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::{self, ConnectionRow, JobRow};

/// How long a cached job state is trusted.
const STATE_TTL: Duration = Duration::from_millis(500);

/// One channel of a job and the connection it sends through (none: the built-in sandbox).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobChannel {
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
}

/// The non-secret settings of a connection, as stored in `settings`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredSettings {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reply_to: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// AAD of a connection's secret: the ciphertext only decrypts for this tenant and connection.
pub fn secret_aad(tenant: Uuid, id: Uuid) -> Vec<u8> {
    format!("publishing.connection:{tenant}:{id}").into_bytes()
}

pub enum Sender {
    /// Records the rendered message instead of sending it.
    Sandbox,
    Smtp {
        sender: SmtpSender,
        from: String,
        reply_to: Option<String>,
    },
    Webhook(WebhookTarget),
}

pub struct Connection {
    pub id: Option<Uuid>,
    pub rate_per_second: u32,
    pub sender: Sender,
}

impl Connection {
    pub fn is_sandbox(&self) -> bool {
        matches!(self.sender, Sender::Sandbox)
    }
}

pub struct Job {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub campaign_id: Uuid,
    pub campaign_name: String,
    /// The content snapshot compiled once (an error fails every delivery with its reason).
    compiled: std::result::Result<CompiledContent, RenderError>,
    pub channels: Vec<(String, Arc<Connection>)>,
    state: Mutex<(String, Instant)>,
}

impl Job {
    /// The compiled templates, or why they could not be compiled.
    pub fn compiled(&self) -> std::result::Result<&CompiledContent, String> {
        self.compiled
            .as_ref()
            .map_err(|e| format!("render_error: {e}"))
    }

    pub fn cached_state(&self) -> Option<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.1.elapsed() < STATE_TTL).then(|| s.0.clone())
    }

    /// A job that exists only in memory (a test send).
    pub fn ephemeral(
        tenant: Uuid,
        campaign_id: Uuid,
        campaign_name: &str,
        content: Content,
    ) -> Self {
        Self {
            tenant,
            run_id: Uuid::nil(),
            campaign_id,
            campaign_name: campaign_name.to_owned(),
            compiled: Renderer::default().compile(&content),
            channels: Vec::new(),
            state: Mutex::new(("active".to_owned(), Instant::now())),
        }
    }

    pub fn set_state(&self, state: &str) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (state.to_owned(), Instant::now());
    }
}

/// Builds the sender of a stored connection (decrypting its secret).
pub fn connection_of(
    row: &ConnectionRow,
    keyring: &KeyRing,
    default_rate: u32,
    send_timeout: Duration,
) -> Result<Connection> {
    let settings: StoredSettings = serde_json::from_value(row.settings.clone())
        .map_err(|e| Error::Internal(format!("connection {} settings: {e}", row.id)))?;
    let secret = match &row.secret {
        Some(blob) => Some(
            keyring
                .decrypt(blob, &secret_aad(row.tenant_id, row.id))
                .map_err(|e| Error::Internal(format!("connection {} secret: {e}", row.id)))?,
        ),
        None => None,
    };
    let rate = match u32::try_from(row.rate_per_second).unwrap_or(0) {
        0 => default_rate,
        n => n,
    };
    let sender = match row.kind.as_str() {
        "sandbox" => Sender::Sandbox,
        "smtp" => {
            let tls = match settings.tls.as_str() {
                "none" => SmtpTls::None,
                "tls" => SmtpTls::Implicit,
                _ => SmtpTls::StartTls,
            };
            let cfg = SmtpConfig {
                host: settings.host.clone(),
                port: u16::try_from(settings.port).unwrap_or(587),
                tls,
                username: (!settings.username.is_empty()).then(|| settings.username.clone()),
                password: secret.map(|s| String::from_utf8_lossy(&s).into_owned()),
                timeout: send_timeout,
                pool_max: 8,
            };
            Sender::Smtp {
                sender: SmtpSender::new(&cfg)
                    .map_err(|e| Error::Internal(format!("connection {}: {e}", row.id)))?,
                from: settings.from.clone(),
                reply_to: (!settings.reply_to.is_empty()).then(|| settings.reply_to.clone()),
            }
        }
        "webhook" => Sender::Webhook(WebhookTarget {
            url: settings.url.clone(),
            secret: secret.unwrap_or_default(),
        }),
        other => {
            return Err(Error::Internal(format!(
                "unknown connection kind {other:?}"
            )));
        }
    };
    Ok(Connection {
        id: Some(row.id),
        rate_per_second: rate,
        sender,
    })
}

/// Jobs loaded by this process, by run id.
pub struct JobCache {
    db: Db,
    keyring: KeyRing,
    default_rate: u32,
    send_timeout: Duration,
    jobs: Mutex<HashMap<Uuid, Arc<Job>>>,
}

impl JobCache {
    pub fn new(db: Db, keyring: KeyRing, default_rate: u32, send_timeout: Duration) -> Self {
        Self {
            db,
            keyring,
            default_rate,
            send_timeout,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// The job of `run_id` (loaded on first use), with a fresh state. `None` when it does not
    /// exist (a batch for a job that was never created: dropped by the caller).
    pub async fn get(&self, tenant: Uuid, run_id: Uuid) -> Result<Option<Arc<Job>>> {
        let cached = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&run_id)
            .cloned();
        if let Some(job) = cached {
            if job.tenant != tenant {
                return Ok(None);
            }
            if job.cached_state().is_none() {
                let mut tx = self.db.tenant_tx(tenant).await?;
                let state = store::job_state(&mut tx, tenant, run_id).await?;
                tx.commit().await?;
                match state {
                    Some(s) => job.set_state(&s),
                    None => return Ok(None),
                }
            }
            return Ok(Some(job));
        }
        let mut tx = self.db.tenant_tx(tenant).await?;
        let Some(row) = store::get_job(&mut tx, tenant, run_id, false).await? else {
            return Ok(None);
        };
        let channels: Vec<JobChannel> = serde_json::from_value(row.channels.clone())
            .map_err(|e| Error::Internal(format!("job {run_id} channels: {e}")))?;
        let mut built = Vec::with_capacity(channels.len());
        for ch in channels {
            let conn = match ch.connection_id.as_deref() {
                None | Some("") => Connection {
                    id: None,
                    rate_per_second: 0,
                    sender: Sender::Sandbox,
                },
                Some(id) => {
                    let id = Uuid::parse_str(id)
                        .map_err(|e| Error::Internal(format!("job {run_id} connection id: {e}")))?;
                    let c = store::get_connection_any(&mut tx, tenant, id)
                        .await?
                        .ok_or_else(|| {
                            Error::Internal(format!("job {run_id}: connection {id} is gone"))
                        })?;
                    connection_of(&c, &self.keyring, self.default_rate, self.send_timeout)?
                }
            };
            built.push((ch.channel, Arc::new(conn)));
        }
        tx.commit().await?;
        let job = Arc::new(job_of(&row, built)?);
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.len() > 1000 {
            jobs.retain(|_, j| {
                j.cached_state()
                    .is_some_and(|s| s == "active" || s == "paused")
            });
        }
        Ok(Some(jobs.entry(run_id).or_insert(job).clone()))
    }

    /// Forgets a job's state so the next use reads it again (after a state change here).
    pub fn invalidate(&self, run_id: Uuid) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&run_id);
    }
}

fn job_of(row: &JobRow, channels: Vec<(String, Arc<Connection>)>) -> Result<Job> {
    let content: Content = serde_json::from_value(row.content.clone())
        .map_err(|e| Error::Internal(format!("job {} content: {e}", row.run_id)))?;
    Ok(Job {
        tenant: row.tenant_id,
        run_id: row.run_id,
        campaign_id: row.campaign_id,
        campaign_name: row.campaign_name.clone(),
        compiled: Renderer::default().compile(&content),
        channels,
        state: Mutex::new((row.state.clone(), Instant::now())),
    })
}
