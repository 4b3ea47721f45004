//! The PublishingService gRPC implementation. Public RPCs act for the caller's tenant (the auth
//! layer checked the permission); internal RPCs accept only the mesh's service credential and
//! act for the tenant it was signed for.

use std::sync::Arc;

use cos_auth::{ServiceCredential, principal_of, service_principal_of};
use cos_crypto::KeyRing;
use cos_errors::{ErrorCode, ServiceError};
use cos_proto::publishing::v1 as pb;
use cos_proto::publishing::v1::publishing_service_server::PublishingService;
use cos_proto::segmentation::v1 as seg;
use cos_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use cos_templating::template::{Content, EmailContent, SmsContent, WebhookContent};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::convert::{opt_ts, ts};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::jobs::{self, JobChannel, StoredSettings};
use crate::store::{self, ConnectionRow};

pub struct PublishingApi {
    pub engine: Arc<Engine>,
    pub keyring: KeyRing,
    pub segmentation: SegmentationServiceClient<Channel>,
    pub credential: Option<ServiceCredential>,
    pub wake_maintenance: Arc<tokio::sync::Notify>,
}

#[derive(Clone)]
pub struct PublishingGrpc(pub Arc<PublishingApi>);

const MAX_CONNECTIONS: i64 = 50;
const CHANNELS: [&str; 4] = ["email", "sms", "webhook", "sandbox"];

fn tenant_of<T>(req: &Request<T>) -> Result<Uuid> {
    Ok(principal_of(req)?.tenant_id)
}

fn service_tenant<T>(req: &Request<T>) -> Result<Uuid> {
    service_principal_of(req)
        .map(|sp| sp.tenant_id)
        .ok_or_else(|| {
            ServiceError::permission_denied("only other services of the mesh may call this").into()
        })
}

fn parse_uuid(field: &str, raw: &str) -> Result<Uuid> {
    if raw.trim().is_empty() {
        return Err(ServiceError::invalid(field, "is required").into());
    }
    Uuid::parse_str(raw.trim())
        .map_err(|_| ServiceError::invalid(field, "is not a valid id").into())
}

fn invalid(field: &str, message: &str) -> Error {
    ServiceError::invalid(field, message).into()
}

fn check_text(field: &str, s: &str, max: usize, required: bool) -> Result<()> {
    if required && s.trim().is_empty() {
        return Err(invalid(field, "is required"));
    }
    if s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(invalid(
            field,
            &format!("must be at most {max} characters without control characters"),
        ));
    }
    Ok(())
}

fn check_address(field: &str, s: &str) -> Result<()> {
    check_text(field, s, 320, true)?;
    let addr = s
        .rsplit_once('<')
        .map_or(s, |(_, a)| a.trim_end_matches('>'))
        .trim();
    match addr.split_once('@') {
        Some((l, d)) if !l.is_empty() && d.contains('.') && !d.contains(' ') => Ok(()),
        _ => Err(invalid(
            field,
            "must be an email address, optionally as \"Name <address>\"",
        )),
    }
}

fn connection_pb(r: &ConnectionRow) -> pb::ChannelConnection {
    let s: StoredSettings = serde_json::from_value(r.settings.clone()).unwrap_or_default();
    let (smtp, webhook) = match r.kind.as_str() {
        "smtp" => (
            Some(pb::SmtpSettings {
                host: s.host,
                port: s.port,
                tls: s.tls,
                username: s.username,
                password: String::new(),
                from: s.from,
                reply_to: s.reply_to,
            }),
            None,
        ),
        "webhook" => (
            None,
            Some(pb::WebhookSettings {
                url: s.url,
                signing_secret: String::new(),
            }),
        ),
        _ => (None, None),
    };
    pb::ChannelConnection {
        id: r.id.to_string(),
        name: r.name.clone(),
        kind: r.kind.clone(),
        channels: r.channels.clone(),
        is_default: r.is_default,
        rate_per_second: u32::try_from(r.rate_per_second).unwrap_or(0),
        smtp,
        webhook,
        has_secret: r.secret.is_some(),
        signing_secret_once: String::new(),
        version: r.version,
        created_at: Some(ts(r.created_at)),
        updated_at: Some(ts(r.updated_at)),
    }
}

impl PublishingApi {
    /// A transaction under the tenant's row-level security.
    async fn tx(&self, tenant: Uuid) -> Result<cos_db::Tx> {
        Ok(self.engine.db.tenant_tx(tenant).await?)
    }

    fn allow_private(&self) -> bool {
        self.engine.config.allow_private_webhook_targets
    }

    /// Validates the settings of a connection of `kind`; returns (settings, new secret if any,
    /// generated secret to show once).
    fn settings_of(
        &self,
        kind: &str,
        smtp: Option<&pb::SmtpSettings>,
        webhook: Option<&pb::WebhookSettings>,
        existing: Option<&StoredSettings>,
        creating: bool,
    ) -> Result<(StoredSettings, Option<Vec<u8>>, String)> {
        let mut s = existing.cloned().unwrap_or_default();
        match kind {
            "smtp" => {
                if webhook.is_some() {
                    return Err(invalid("webhook", "must be empty for an smtp connection"));
                }
                let Some(m) = smtp else {
                    if creating {
                        return Err(invalid("smtp", "is required for an smtp connection"));
                    }
                    return Ok((s, None, String::new()));
                };
                if creating || !m.host.is_empty() {
                    check_text("smtp.host", &m.host, 253, true)?;
                    if m.host.contains(' ') || m.host.contains('/') {
                        return Err(invalid("smtp.host", "must be a host name or IP address"));
                    }
                    s.host = m.host.trim().to_owned();
                }
                if m.port > 65535 {
                    return Err(invalid("smtp.port", "must be between 1 and 65535"));
                }
                if m.port != 0 || creating {
                    s.port = if m.port == 0 { 587 } else { m.port };
                }
                if creating || !m.tls.is_empty() {
                    s.tls = match m.tls.trim() {
                        "" | "starttls" => "starttls".into(),
                        "tls" => "tls".into(),
                        "none" => "none".into(),
                        _ => return Err(invalid("smtp.tls", "must be starttls, tls or none")),
                    };
                }
                if creating || !m.username.is_empty() {
                    check_text("smtp.username", &m.username, 320, false)?;
                    s.username = m.username.clone();
                }
                if creating || !m.from.is_empty() {
                    check_address("smtp.from", &m.from)?;
                    s.from = m.from.trim().to_owned();
                }
                if !m.reply_to.is_empty() {
                    check_address("smtp.reply_to", &m.reply_to)?;
                    s.reply_to = m.reply_to.trim().to_owned();
                }
                let secret = if m.password.is_empty() {
                    None
                } else {
                    check_text("smtp.password", &m.password, 1024, true)?;
                    Some(m.password.clone().into_bytes())
                };
                Ok((s, secret, String::new()))
            }
            "webhook" => {
                if smtp.is_some() {
                    return Err(invalid("smtp", "must be empty for a webhook connection"));
                }
                let Some(w) = webhook else {
                    if creating {
                        return Err(invalid("webhook", "is required for a webhook connection"));
                    }
                    return Ok((s, None, String::new()));
                };
                if creating || !w.url.is_empty() {
                    cos_channels::webhook::validate_url(w.url.trim(), self.allow_private())
                        .map_err(|e| invalid("webhook.url", &e))?;
                    s.url = w.url.trim().to_owned();
                }
                let (secret, once) = if !w.signing_secret.is_empty() {
                    if w.signing_secret.len() < 16 || w.signing_secret.len() > 256 {
                        return Err(invalid(
                            "webhook.signing_secret",
                            "must be 16 to 256 characters",
                        ));
                    }
                    (Some(w.signing_secret.clone().into_bytes()), String::new())
                } else if creating {
                    let generated = format!("whsec_{}", cos_auth::random_token(32));
                    (Some(generated.clone().into_bytes()), generated)
                } else {
                    (None, String::new())
                };
                Ok((s, secret, once))
            }
            "sandbox" => {
                if smtp.is_some() || webhook.is_some() {
                    return Err(invalid(
                        "kind",
                        "a sandbox connection takes no smtp or webhook settings",
                    ));
                }
                Ok((s, None, String::new()))
            }
            _ => Err(invalid("kind", "must be smtp, webhook or sandbox")),
        }
    }

    async fn segmentation_unsubscribe(
        &self,
        tenant: Uuid,
        contact: Uuid,
        channel: &str,
    ) -> Result<bool> {
        let credential = self.credential.as_ref().ok_or_else(|| {
            Error::Internal(
                "COS_AUTH__SERVICE_SECRET is not set: unsubscribe cannot reach segmentation".into(),
            )
        })?;
        let mut req = Request::new(seg::RecordUnsubscribeRequest {
            contact_id: contact.to_string(),
            channel: channel.to_owned(),
            source: "unsubscribe_link".into(),
        });
        let header = credential.header_value(
            "/campaignos.segmentation.v1.SegmentationService/RecordUnsubscribe",
            tenant,
        );
        req.metadata_mut().insert(
            cos_auth::SERVICE_AUTH_HEADER,
            header
                .parse()
                .map_err(|_| Error::Internal("service header".into()))?,
        );
        req.set_timeout(std::time::Duration::from_secs(10));
        match self.segmentation.clone().record_unsubscribe(req).await {
            Ok(r) => Ok(r.into_inner().changed),
            // The contact was erased since the email went out: nothing to unsubscribe.
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => {
                tracing::warn!(code = ?s.code(), error = %s.message(), "segmentation refused an unsubscribe");
                Err(ServiceError::new(
                    ErrorCode::Unavailable,
                    "the unsubscribe could not be recorded right now; please try the link again in a minute",
                )
                .into())
            }
        }
    }
}

fn content_of(c: Option<&pb::JobContent>) -> Content {
    let Some(c) = c else {
        return Content::default();
    };
    Content {
        email: c.has_email.then(|| EmailContent {
            subject: c.email_subject.clone(),
            preheader: c.email_preheader.clone(),
            html_body: c.email_html_body.clone(),
            text_body: c.email_text_body.clone(),
        }),
        sms: c.has_sms.then(|| SmsContent {
            text: c.sms_text.clone(),
        }),
        webhook: c.has_webhook.then(|| WebhookContent {
            json_template: c.webhook_json_template.clone(),
        }),
    }
}

/// A unique violation on the connection name is the caller's 409, naming `name`.
fn name_taken(e: Error) -> Error {
    match &e {
        Error::Sqlx(s) if cos_db::unique_violation(s).is_some() => Error::from(
            ServiceError::already_exists("a channel connection with this name exists")
                .with_violation("name", "is already used by another connection"),
        ),
        _ => e,
    }
}

fn serves(row: &ConnectionRow, channel: &str) -> bool {
    row.channels.iter().any(|c| c == channel)
}

fn job_pb(j: &store::JobRow, parked: i64) -> pb::DeliveryJob {
    let channels: Vec<JobChannel> = serde_json::from_value(j.channels.clone()).unwrap_or_default();
    let skipped = j
        .skipped
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| pb::SkipCount {
                    reason: k.clone(),
                    count: v.as_i64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    pb::DeliveryJob {
        run_id: j.run_id.to_string(),
        campaign_id: j.campaign_id.to_string(),
        state: j.state.clone(),
        sealed: j.sealed,
        batches_total: j.batches_total,
        batches_done: j.batches_done,
        recipients_total: j.recipients_total,
        sent: j.sent,
        failed: j.failed,
        skipped,
        retrying: j.retrying,
        parked_batches: parked,
        completed_at: opt_ts(j.completed_at),
        channels: channels
            .into_iter()
            .map(|c| pb::JobChannel {
                channel: c.channel,
                connection_id: c.connection_id.unwrap_or_default(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl PublishingService for PublishingGrpc {
    async fn create_channel_connection(
        &self,
        req: Request<pb::CreateChannelConnectionRequest>,
    ) -> Result<Response<pb::ChannelConnection>, Status> {
        let tenant = tenant_of(&req)?;
        let r = req.into_inner();
        let api = &self.0;
        check_text("name", r.name.trim(), 100, true)?;
        let kind = r.kind.trim();
        if r.rate_per_second > 10_000 {
            return Err(invalid("rate_per_second", "must be at most 10000").into());
        }
        let (settings, secret, once) =
            api.settings_of(kind, r.smtp.as_ref(), r.webhook.as_ref(), None, true)?;
        let channels: Vec<String> = match kind {
            "smtp" => {
                if !r.channels.is_empty() && r.channels != ["email"] {
                    return Err(invalid("channels", "an smtp connection serves email only").into());
                }
                vec!["email".into()]
            }
            "webhook" => {
                if !r.channels.is_empty() && r.channels != ["webhook"] {
                    return Err(
                        invalid("channels", "a webhook connection serves webhook only").into(),
                    );
                }
                vec!["webhook".into()]
            }
            _ => {
                if r.channels.is_empty() {
                    CHANNELS.iter().map(|s| (*s).to_owned()).collect()
                } else {
                    let mut v = Vec::new();
                    for (i, c) in r.channels.iter().enumerate() {
                        if !CHANNELS.contains(&c.as_str()) {
                            return Err(invalid(
                                &format!("channels[{i}]"),
                                "must be email, sms, webhook or sandbox",
                            )
                            .into());
                        }
                        if !v.contains(c) {
                            v.push(c.clone());
                        }
                    }
                    v
                }
            }
        };
        let id = Uuid::now_v7();
        let encrypted = secret
            .as_ref()
            .map(|s| api.keyring.encrypt(s, &jobs::secret_aad(tenant, id)));
        let settings_json =
            serde_json::to_value(&settings).map_err(|e| Error::Internal(e.to_string()))?;
        let mut tx = api.tx(tenant).await?;
        store::lock_connections(&mut tx, tenant).await?;
        if store::count_connections(&mut tx, tenant).await? >= MAX_CONNECTIONS {
            return Err(Error::from(ServiceError::failed_precondition(format!(
                "a workspace can have at most {MAX_CONNECTIONS} channel connections; delete one first"
            )))
            .into());
        }
        let row = store::insert_connection(
            &mut tx,
            tenant,
            &store::NewConnection {
                id,
                name: r.name.trim(),
                kind,
                channels: &channels,
                is_default: r.is_default,
                rate_per_second: i32::try_from(r.rate_per_second).unwrap_or(0),
                settings: &settings_json,
                secret: encrypted.as_deref(),
            },
        )
        .await
        .map_err(name_taken)?;
        if r.is_default {
            store::clear_defaults(&mut tx, tenant, id, &channels).await?;
        }
        tx.commit().await.map_err(Error::from)?;
        let mut out = connection_pb(&row);
        out.signing_secret_once = once;
        Ok(Response::new(out))
    }

    async fn list_channel_connections(
        &self,
        req: Request<pb::ListChannelConnectionsRequest>,
    ) -> Result<Response<pb::ListChannelConnectionsResponse>, Status> {
        let tenant = tenant_of(&req)?;
        let kind = req.get_ref().kind.trim().to_owned();
        if !kind.is_empty() && !["smtp", "webhook", "sandbox"].contains(&kind.as_str()) {
            return Err(invalid("kind", "must be smtp, webhook or sandbox").into());
        }
        let mut tx = self.0.tx(tenant).await?;
        let rows =
            store::list_connections(&mut tx, tenant, (!kind.is_empty()).then_some(kind.as_str()))
                .await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::ListChannelConnectionsResponse {
            connections: rows.iter().map(connection_pb).collect(),
        }))
    }

    async fn get_channel_connection(
        &self,
        req: Request<pb::GetChannelConnectionRequest>,
    ) -> Result<Response<pb::ChannelConnection>, Status> {
        let tenant = tenant_of(&req)?;
        let id = parse_uuid("connection_id", &req.get_ref().connection_id)?;
        let mut tx = self.0.tx(tenant).await?;
        let row = store::get_connection(&mut tx, tenant, id)
            .await?
            .ok_or_else(|| Error::from(ServiceError::not_found("channel connection")))?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(connection_pb(&row)))
    }

    async fn update_channel_connection(
        &self,
        req: Request<pb::UpdateChannelConnectionRequest>,
    ) -> Result<Response<pb::ChannelConnection>, Status> {
        let tenant = tenant_of(&req)?;
        let r = req.into_inner();
        let api = &self.0;
        let id = parse_uuid("connection_id", &r.connection_id)?;
        if let Some(n) = &r.name {
            check_text("name", n.trim(), 100, true)?;
        }
        if r.rate_per_second.is_some_and(|v| v > 10_000) {
            return Err(invalid("rate_per_second", "must be at most 10000").into());
        }
        let mut tx = api.tx(tenant).await?;
        store::lock_connections(&mut tx, tenant).await?;
        let row = store::get_connection(&mut tx, tenant, id)
            .await?
            .ok_or_else(|| Error::from(ServiceError::not_found("channel connection")))?;
        if r.version != 0 && r.version != row.version {
            return Err(Error::from(
                ServiceError::new(
                    ErrorCode::VersionConflict,
                    format!(
                        "the connection was changed by someone else (current version {}); reload and retry",
                        row.version
                    ),
                )
                .with_metadata("current_version", row.version),
            )
            .into());
        }
        let existing: StoredSettings =
            serde_json::from_value(row.settings.clone()).unwrap_or_default();
        let (settings, secret, _) = api.settings_of(
            &row.kind,
            r.smtp.as_ref(),
            r.webhook.as_ref(),
            Some(&existing),
            false,
        )?;
        let secret = match secret {
            Some(s) => Some(api.keyring.encrypt(&s, &jobs::secret_aad(tenant, id))),
            None => row.secret.clone(),
        };
        let settings_json =
            serde_json::to_value(&settings).map_err(|e| Error::Internal(e.to_string()))?;
        let is_default = r.is_default.unwrap_or(row.is_default);
        let updated = store::update_connection(
            &mut tx,
            tenant,
            id,
            &store::ConnectionUpdate {
                name: r.name.as_deref().map_or(row.name.as_str(), str::trim),
                is_default,
                rate_per_second: r
                    .rate_per_second
                    .map_or(row.rate_per_second, |v| i32::try_from(v).unwrap_or(0)),
                settings: &settings_json,
                secret: secret.as_deref(),
            },
        )
        .await
        .map_err(name_taken)?;
        if is_default && !row.is_default {
            store::clear_defaults(&mut tx, tenant, id, &row.channels).await?;
        }
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(connection_pb(&updated)))
    }

    async fn delete_channel_connection(
        &self,
        req: Request<pb::DeleteChannelConnectionRequest>,
    ) -> Result<Response<pb::DeleteChannelConnectionResponse>, Status> {
        let tenant = tenant_of(&req)?;
        let id = parse_uuid("connection_id", &req.get_ref().connection_id)?;
        let mut tx = self.0.tx(tenant).await?;
        store::lock_connections(&mut tx, tenant).await?;
        if store::get_connection(&mut tx, tenant, id).await?.is_none() {
            return Err(Error::from(ServiceError::not_found("channel connection")).into());
        }
        if store::connection_in_use(&mut tx, tenant, id).await? {
            return Err(Error::from(ServiceError::failed_precondition(
                "a running or paused campaign sends through this connection; wait until it completes or cancel it",
            ))
            .into());
        }
        store::delete_connection(&mut tx, tenant, id).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::DeleteChannelConnectionResponse {}))
    }

    async fn list_deliveries(
        &self,
        req: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let tenant = tenant_of(&req)?;
        let r = req.into_inner();
        let campaign_id = parse_uuid("campaign_id", &r.campaign_id)?;
        let statuses: Vec<String> = r
            .status
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        for s in &statuses {
            if !["pending", "sent", "failed", "retrying"].contains(&s.as_str()) {
                return Err(invalid(
                    "status",
                    "must be pending, sent, failed or retrying (comma-separated)",
                )
                .into());
            }
        }
        let channel = r.channel.trim();
        if !channel.is_empty() && !CHANNELS.contains(&channel) {
            return Err(invalid("channel", "must be email, sms, webhook or sandbox").into());
        }
        let contact_id = match r.contact_id.trim() {
            "" => None,
            s => Some(parse_uuid("contact_id", s)?),
        };
        let limit = match r.page_size {
            0 => 100,
            n if (1..=500).contains(&n) => i64::from(n),
            _ => return Err(invalid("page_size", "must be between 1 and 500").into()),
        };
        let after = match r.page_token.trim() {
            "" => None,
            s => Some(
                Uuid::parse_str(s)
                    .map_err(|_| invalid("page_token", "is not a token this API returned"))?,
            ),
        };
        let mut tx = self.0.tx(tenant).await?;
        let rows = store::list_deliveries(
            &mut tx,
            tenant,
            &store::DeliveryFilter {
                campaign_id,
                statuses: &statuses,
                channel: (!channel.is_empty()).then_some(channel),
                contact_id,
                after,
                limit: limit + 1,
            },
        )
        .await?;
        tx.commit().await.map_err(Error::from)?;
        let more = rows.len() as i64 > limit;
        let rows: Vec<_> = rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(100))
            .collect();
        let next_page_token = if more {
            rows.last().map(|d| d.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: rows
                .into_iter()
                .map(|d| pb::Delivery {
                    id: d.id.to_string(),
                    campaign_id: d.campaign_id.to_string(),
                    run_id: d.run_id.map(|x| x.to_string()).unwrap_or_default(),
                    contact_id: d.contact_id.map(|x| x.to_string()).unwrap_or_default(),
                    channel: d.channel,
                    variant: d.variant,
                    status: d.status,
                    attempts: d.attempts,
                    recipient: d.recipient,
                    connection_id: d.connection_id.map(|x| x.to_string()).unwrap_or_default(),
                    provider_message_id: d.provider_message_id,
                    error: d.error,
                    created_at: Some(ts(d.created_at)),
                    sent_at: opt_ts(d.sent_at),
                    next_attempt_at: opt_ts(d.next_attempt_at),
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn unsubscribe(
        &self,
        req: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeResponse>, Status> {
        let api = &self.0;
        let token = req.get_ref().token.trim();
        if token.is_empty() || token.len() > 512 {
            return Err(invalid("token", "this unsubscribe link is not valid").into());
        }
        let claims = api.engine.signer.verify(token).map_err(|_| {
            invalid(
                "token",
                "this unsubscribe link is not valid (it may have been cut or altered)",
            )
        })?;
        if claims.contact_id.is_nil() {
            // The link of a test send: there is no contact behind it.
            return Ok(Response::new(pb::UnsubscribeResponse {
                channel: claims.channel,
                changed: false,
            }));
        }
        let changed = api
            .segmentation_unsubscribe(claims.tenant_id, claims.contact_id, &claims.channel)
            .await?;
        let mut tx = api.tx(claims.tenant_id).await?;
        store::insert_unsubscribe(
            &mut tx,
            claims.tenant_id,
            claims.contact_id,
            claims.campaign_id,
            &claims.channel,
            changed,
        )
        .await?;
        if changed {
            crate::events::unsubscribed(
                &mut tx,
                claims.tenant_id,
                claims.contact_id,
                claims.campaign_id,
                &claims.channel,
            )
            .await?;
        }
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::UnsubscribeResponse {
            channel: claims.channel,
            changed,
        }))
    }

    async fn create_delivery_job(
        &self,
        req: Request<pb::CreateDeliveryJobRequest>,
    ) -> Result<Response<pb::DeliveryJob>, Status> {
        let tenant = service_tenant(&req)?;
        let r = req.into_inner();
        let run_id = parse_uuid("run_id", &r.run_id)?;
        let campaign_id = parse_uuid("campaign_id", &r.campaign_id)?;
        if r.channels.is_empty() {
            return Err(invalid("channels", "at least one channel is required").into());
        }
        let mut tx = self.0.tx(tenant).await?;
        let mut channels = Vec::with_capacity(r.channels.len());
        for (i, c) in r.channels.iter().enumerate() {
            let field = format!("channels[{i}]");
            if !CHANNELS.contains(&c.channel.as_str()) {
                return Err(invalid(&field, "must be email, sms, webhook or sandbox").into());
            }
            let conn = if c.connection_id.trim().is_empty() {
                store::default_connection(&mut tx, tenant, &c.channel).await?
            } else {
                let id = parse_uuid(&format!("{field}.connection_id"), &c.connection_id)?;
                let row = store::get_connection(&mut tx, tenant, id)
                    .await?
                    .ok_or_else(|| {
                        invalid(
                            &format!("{field}.connection_id"),
                            "no such channel connection",
                        )
                    })?;
                if !serves(&row, &c.channel) {
                    return Err(invalid(
                        &format!("{field}.connection_id"),
                        &format!("the connection does not serve the {} channel", c.channel),
                    )
                    .into());
                }
                Some(row)
            };
            let connection_id = match conn {
                Some(row) => Some(row.id.to_string()),
                None if c.channel == "sandbox" => None,
                None => {
                    return Err(Error::from(
                        ServiceError::failed_precondition(format!(
                            "no channel connection sends {ch}: create one at /v1/channel-connections and make it the default for {ch}",
                            ch = c.channel
                        ))
                        .with_violation(field, "has no default channel connection"),
                    )
                    .into());
                }
            };
            channels.push(JobChannel {
                channel: c.channel.clone(),
                connection_id,
            });
        }
        let content = serde_json::to_value(content_of(r.content.as_ref()))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let channels_json =
            serde_json::to_value(&channels).map_err(|e| Error::Internal(e.to_string()))?;
        let name: String = r.campaign_name.chars().take(200).collect();
        let job = store::insert_job(
            &mut tx,
            tenant,
            run_id,
            campaign_id,
            &name,
            &channels_json,
            &content,
        )
        .await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(job_pb(&job, 0)))
    }

    async fn seal_delivery_job(
        &self,
        req: Request<pb::SealDeliveryJobRequest>,
    ) -> Result<Response<pb::DeliveryJob>, Status> {
        let tenant = service_tenant(&req)?;
        let r = req.into_inner();
        let run_id = parse_uuid("run_id", &r.run_id)?;
        if r.batches_total < 0 || r.recipients_total < 0 {
            return Err(invalid("batches_total", "must not be negative").into());
        }
        let mut tx = self.0.tx(tenant).await?;
        if store::get_job(&mut tx, tenant, run_id, true)
            .await?
            .is_none()
        {
            return Err(Error::from(ServiceError::not_found("delivery job")).into());
        }
        store::seal_job(&mut tx, tenant, run_id, r.batches_total, r.recipients_total).await?;
        store::maybe_complete(&mut tx, tenant, run_id).await?;
        let job = store::get_job(&mut tx, tenant, run_id, false)
            .await?
            .ok_or_else(|| Error::Internal("job vanished".into()))?;
        let parked = store::parked_count(&mut tx, tenant, run_id).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(job_pb(&job, parked)))
    }

    async fn set_delivery_job_state(
        &self,
        req: Request<pb::SetDeliveryJobStateRequest>,
    ) -> Result<Response<pb::DeliveryJob>, Status> {
        let tenant = service_tenant(&req)?;
        let r = req.into_inner();
        let run_id = parse_uuid("run_id", &r.run_id)?;
        let state = r.state.trim();
        if !["active", "paused", "cancelled"].contains(&state) {
            return Err(invalid("state", "must be active, paused or cancelled").into());
        }
        let mut tx = self.0.tx(tenant).await?;
        let job = store::get_job(&mut tx, tenant, run_id, true)
            .await?
            .ok_or_else(|| Error::from(ServiceError::not_found("delivery job")))?;
        match (job.state.as_str(), state) {
            (a, b) if a == b => {}
            ("completed", _) | ("cancelled", _) => {
                return Err(Error::from(ServiceError::failed_precondition(format!(
                    "the delivery job is {} and cannot become {state}",
                    job.state
                )))
                .into());
            }
            _ => store::set_job_state(&mut tx, tenant, run_id, state).await?,
        }
        if state == "cancelled" {
            // Deliveries waiting for a retry will not be retried.
            store::fail_open_deliveries(&mut tx, tenant, run_id, "campaign cancelled").await?;
        }
        if state == "active" {
            store::maybe_complete(&mut tx, tenant, run_id).await?;
        }
        let job = store::get_job(&mut tx, tenant, run_id, false)
            .await?
            .ok_or_else(|| Error::Internal("job vanished".into()))?;
        let parked = store::parked_count(&mut tx, tenant, run_id).await?;
        tx.commit().await.map_err(Error::from)?;
        self.0.engine.jobs.invalidate(run_id);
        self.0.wake_maintenance.notify_one();
        Ok(Response::new(job_pb(&job, parked)))
    }

    async fn get_delivery_job(
        &self,
        req: Request<pb::GetDeliveryJobRequest>,
    ) -> Result<Response<pb::DeliveryJob>, Status> {
        let tenant = service_tenant(&req)?;
        let run_id = parse_uuid("run_id", &req.get_ref().run_id)?;
        let mut tx = self.0.tx(tenant).await?;
        let job = store::get_job(&mut tx, tenant, run_id, false)
            .await?
            .ok_or_else(|| Error::from(ServiceError::not_found("delivery job")))?;
        let parked = store::parked_count(&mut tx, tenant, run_id).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(job_pb(&job, parked)))
    }

    async fn send_test_message(
        &self,
        req: Request<pb::SendTestMessageRequest>,
    ) -> Result<Response<pb::SendTestMessageResponse>, Status> {
        let tenant = service_tenant(&req)?;
        let r = req.into_inner();
        let campaign_id = parse_uuid("campaign_id", &r.campaign_id)?;
        let channel = r.channel.trim().to_owned();
        if !CHANNELS.contains(&channel.as_str()) {
            return Err(invalid("channel", "must be email, sms, webhook or sandbox").into());
        }
        let api = &self.0;
        let mut tx = api.tx(tenant).await?;
        let row = if r.connection_id.trim().is_empty() {
            store::default_connection(&mut tx, tenant, &channel).await?
        } else {
            let id = parse_uuid("connection_id", &r.connection_id)?;
            Some(
                store::get_connection(&mut tx, tenant, id)
                    .await?
                    .ok_or_else(|| invalid("connection_id", "no such channel connection"))?,
            )
        };
        let conn = match &row {
            Some(row) => jobs::connection_of(
                row,
                &api.keyring,
                api.engine.config.default_rate_per_second,
                api.engine.config.send_timeout,
            )?,
            None if channel == "sandbox" => jobs::Connection {
                id: None,
                rate_per_second: 0,
                sender: jobs::Sender::Sandbox,
            },
            None => {
                return Err(Error::from(ServiceError::failed_precondition(format!(
                    "no channel connection sends {channel}: create one at /v1/channel-connections"
                )))
                .into());
            }
        };
        let mut recipient = r.contact.unwrap_or_default();
        match channel.as_str() {
            "email" => {
                check_address("to", r.to.trim())?;
                recipient.email = r.to.trim().to_owned();
            }
            "sms" => {
                check_text("to", r.to.trim(), 32, true)?;
                recipient.phone = r.to.trim().to_owned();
            }
            _ => {}
        }
        if recipient.contact_id.is_empty() {
            recipient.contact_id = Uuid::nil().to_string();
        }
        let contact_id = Uuid::parse_str(&recipient.contact_id)
            .ok()
            .filter(|u| !u.is_nil());
        let id = Uuid::now_v7();
        store::insert_test_delivery(
            &mut tx,
            tenant,
            id,
            campaign_id,
            contact_id,
            &channel,
            conn.id,
            r.to.trim(),
        )
        .await?;
        tx.commit().await.map_err(Error::from)?;
        let job = jobs::Job::ephemeral(
            tenant,
            campaign_id,
            &r.campaign_name,
            content_of(r.content.as_ref()),
        );
        let (status, pmid, error) = api
            .engine
            .send_test(&job, &channel, &conn, id, &recipient)
            .await;
        let mut tx = api.tx(tenant).await?;
        let outcome = if status == "sent" {
            store::Outcome::Sent {
                provider_message_id: &pmid,
            }
        } else {
            store::Outcome::Failed { error: &error }
        };
        store::record_outcome(&mut tx, tenant, id, None, &outcome).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::SendTestMessageResponse {
            delivery_id: id.to_string(),
            status: status.to_owned(),
            provider_message_id: pmid,
            error,
        }))
    }
}
