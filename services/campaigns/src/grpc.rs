//! The CampaignsService gRPC implementation: validates input, checks target segments with
//! segmentation, and runs each change in one tenant transaction with its event. Permission
//! checks happen before this code, in the auth layer, from each RPC's policy.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cos_auth::principal_of;
use cos_db::Db;
use cos_errors::{ErrorCode, FieldViolation, ServiceError};
use cos_proto::campaigns::v1 as pb;
use cos_proto::campaigns::v1::campaigns_service_server::CampaignsService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::config::CampaignsConfig;
use crate::convert::{
    campaign_pb, content_from_json, content_to_domain, content_to_json, render_contact,
    variants_from_json, variants_to_domain, variants_to_json,
};
use crate::domain::state::{self, Action, Status as CampaignStatus};
use crate::domain::{catalog, input, schedule, template};
use crate::error::{Error, Result};
use crate::events::{self, Change};
use crate::segments::Segments;
use crate::store::{self, CampaignRow, Fields, ListFilter, ScheduleChange, ScheduleFields};

pub struct CampaignsApi {
    pub(crate) db: Db,
    pub(crate) config: CampaignsConfig,
    pub(crate) segments: Segments,
    pub(crate) renderer: template::Renderer,
    pub(crate) audience: crate::audience::AudienceSource,
    pub(crate) publishing: crate::delivery::Publishing,
    pub(crate) entitlements: Option<cos_entitlements::EntitlementClient>,
    pub(crate) queue: std::sync::Arc<cos_events::WorkQueuePublisher>,
    pub(crate) wake_runner: std::sync::Arc<tokio::sync::Notify>,
    /// Names this process in fan-out leases.
    pub(crate) replica: String,
}

#[derive(Clone)]
pub struct CampaignsGrpc(pub(crate) Arc<CampaignsApi>);

const MAX_PAGE: i32 = 200;
const DEFAULT_PAGE: i64 = 50;
const MAX_SEGMENTS: usize = 10;
const MAX_QUERY: usize = 200;

struct Caller {
    tenant: Uuid,
    user: Uuid,
    bearer: Option<String>,
    /// Scheduled campaigns go out by themselves: changing or deleting one is a launch decision.
    can_launch: bool,
}

fn caller<T>(req: &Request<T>) -> Result<Caller> {
    let p = principal_of(req)?;
    Ok(Caller {
        tenant: p.tenant_id,
        user: p.user_id,
        can_launch: p.has("campaigns.launch"),
        bearer: req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned),
    })
}

/// The caller as a launcher, and the campaign a lifecycle request names.
fn launcher_of(
    req: &Request<pb::TransitionRequest>,
) -> Result<(crate::launch::Launcher, Uuid, i64)> {
    let c = caller(req)?;
    let id = parse_uuid("campaign_id", &req.get_ref().campaign_id)?;
    let who = crate::launch::Launcher {
        tenant: c.tenant,
        user: c.user,
    };
    Ok((who, id, req.get_ref().version))
}

pub(crate) fn parse_uuid(field: &str, raw: &str) -> Result<Uuid> {
    if raw.trim().is_empty() {
        return Err(ServiceError::invalid(field, "is required").into());
    }
    Uuid::parse_str(raw.trim())
        .map_err(|_| ServiceError::invalid(field, "is not a valid id").into())
}

pub(crate) fn not_found() -> Error {
    ServiceError::not_found("campaign").into()
}

fn violation(field: impl Into<String>, message: impl Into<String>) -> FieldViolation {
    FieldViolation {
        field: field.into(),
        message: message.into(),
    }
}

fn from_domain(v: crate::domain::FieldViolation) -> FieldViolation {
    violation(v.field, v.description)
}

fn invalid(violations: Vec<FieldViolation>) -> Result<()> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::invalid_fields(violations).into())
    }
}

pub(crate) fn version_conflict(current: i64) -> Error {
    ServiceError::new(
        ErrorCode::VersionConflict,
        format!(
            "the campaign was changed by someone else (current version {current}); reload and retry"
        ),
    )
    .with_metadata("current_version", current)
    .into()
}

pub(crate) fn illegal(e: state::IllegalTransition) -> Error {
    ServiceError::failed_precondition(e.to_string()).into()
}

/// Refuses to change or delete a scheduled campaign without `campaigns.launch`.
fn check_may_change(c: &Caller, status: CampaignStatus) -> Result<()> {
    if status == CampaignStatus::Scheduled && !c.can_launch {
        return Err(ServiceError::permission_denied(
            "changing or deleting a scheduled campaign needs permission campaigns.launch",
        )
        .into());
    }
    Ok(())
}

pub(crate) fn stored_status(row: &CampaignRow) -> Result<CampaignStatus> {
    CampaignStatus::parse(&row.status).ok_or_else(|| {
        Error::Internal(format!(
            "campaign {} has unknown status {:?}",
            row.id, row.status
        ))
    })
}

/// Parses a list of segment ids: valid, distinct, at most [`MAX_SEGMENTS`].
fn segment_ids(field: &str, raw: &[String], out: &mut Vec<FieldViolation>) -> Vec<Uuid> {
    if raw.len() > MAX_SEGMENTS {
        out.push(violation(field, format!("at most {MAX_SEGMENTS} segments")));
        return vec![];
    }
    let mut ids = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        match Uuid::parse_str(r.trim()) {
            Ok(id) if ids.contains(&id) => {
                out.push(violation(format!("{field}[{i}]"), "is listed twice"))
            }
            Ok(id) => ids.push(id),
            Err(_) => out.push(violation(
                format!("{field}[{i}]"),
                "is not a valid segment id",
            )),
        }
    }
    ids
}

/// Everything a campaign is made of, as submitted (create, or update merged onto the stored row).
pub(crate) struct Draft {
    name: String,
    description: String,
    goal: String,
    kind: String,
    channels: Vec<String>,
    platforms: Vec<String>,
    targets: Vec<String>,
    exclusions: Vec<String>,
    content: pb::Content,
    budget: Option<pb::Budget>,
    variants: Vec<pb::Variant>,
}

impl Draft {
    pub(crate) fn of(row: &CampaignRow) -> Self {
        Self {
            name: row.name.clone(),
            description: row.description.clone(),
            goal: row.goal.clone(),
            kind: row.kind.clone(),
            channels: row.channels.clone(),
            platforms: row.platforms.clone(),
            targets: row.target_segment_ids.iter().map(Uuid::to_string).collect(),
            exclusions: row
                .exclusion_segment_ids
                .iter()
                .map(Uuid::to_string)
                .collect(),
            content: content_from_json(&row.content.0),
            budget: row
                .budget_amount_minor
                .zip(row.budget_currency.clone())
                .map(|(amount_minor, currency)| pb::Budget {
                    amount_minor,
                    currency,
                }),
            variants: variants_from_json(&row.variants.0),
        }
    }
}

impl CampaignsApi {
    /// Validates a draft into storable fields, reporting every bad field at once. A draft may be
    /// incomplete (no segments, no content yet); [`CampaignsApi::check_ready`] is what scheduling
    /// requires on top.
    pub(crate) fn validate(&self, d: &Draft) -> Result<Fields> {
        let mut out = Vec::new();
        let mut keep = |r: std::result::Result<String, crate::domain::FieldViolation>| match r {
            Ok(v) => v,
            Err(v) => {
                out.push(from_domain(v));
                String::new()
            }
        };
        let name = keep(input::validate_name(&d.name));
        let description = keep(input::validate_description(&d.description));
        let goal = keep(input::validate_goal(&d.goal));
        let kind_raw = if d.kind.trim().is_empty() {
            "message"
        } else {
            d.kind.trim()
        };
        let kind = match input::CampaignType::parse(kind_raw) {
            Some(k) => Some(k),
            None => {
                out.push(violation("type", "must be one of: message, social_post"));
                None
            }
        };
        let mut channels = Vec::new();
        if d.channels.len() > 4 {
            out.push(violation("channels", "at most 4 channels"));
        } else {
            for (i, c) in d.channels.iter().enumerate() {
                match input::Channel::parse(c.trim()) {
                    Some(ch) if channels.contains(&ch.as_str().to_owned()) => {
                        out.push(violation(format!("channels[{i}]"), "is listed twice"))
                    }
                    Some(ch) => channels.push(ch.as_str().to_owned()),
                    None => out.push(violation(
                        format!("channels[{i}]"),
                        "must be one of: email, sms, webhook, sandbox",
                    )),
                }
            }
        }
        if kind == Some(input::CampaignType::SocialPost) && !channels.is_empty() {
            out.push(violation(
                "channels",
                "a social_post campaign publishes to platforms, not channels",
            ));
        }
        let platforms = match (kind, d.platforms.is_empty()) {
            // A draft social post may not have its platforms yet (checked when scheduled).
            (Some(input::CampaignType::SocialPost), true) => vec![],
            (Some(k), _) => match input::validate_platforms(k, &d.platforms) {
                Ok(p) => p,
                Err(v) => {
                    out.push(from_domain(v));
                    vec![]
                }
            },
            (None, _) => vec![],
        };
        let targets = segment_ids("target_segment_ids", &d.targets, &mut out);
        let exclusions = segment_ids("exclusion_segment_ids", &d.exclusions, &mut out);
        for (i, id) in exclusions.iter().enumerate() {
            if targets.contains(id) {
                out.push(violation(
                    format!("exclusion_segment_ids[{i}]"),
                    "is also a target segment",
                ));
            }
        }
        out.extend(
            self.renderer
                .validate(&content_to_domain(&d.content))
                .into_iter()
                .map(from_domain),
        );
        let budget = match &d.budget {
            None => None,
            Some(b) => match input::validate_budget(b.amount_minor, &b.currency) {
                Ok(b) => b.map(|b| (b.amount_minor, b.currency)),
                Err(v) => {
                    out.push(from_domain(v));
                    None
                }
            },
        };
        let variants = variants_to_domain(&d.variants);
        out.extend(
            input::validate_variants(&variants)
                .into_iter()
                .map(from_domain),
        );
        invalid(out)?;
        Ok(Fields {
            name,
            description,
            goal,
            kind: kind.map(|k| k.as_str()).unwrap_or("message").to_owned(),
            channels,
            platforms,
            targets,
            exclusions,
            content: content_to_json(&d.content),
            budget,
            variants: variants_to_json(&variants),
        })
    }

    /// What a campaign needs before it can be scheduled: channels with their content and target
    /// segments (message), or platforms (social post).
    pub(crate) fn check_ready(&self, row: &Fields) -> Result<()> {
        let mut out = Vec::new();
        let kind = input::CampaignType::parse(&row.kind)
            .ok_or_else(|| Error::Internal(format!("campaign kind {:?}", row.kind)))?;
        let content = content_to_domain(&content_from_json(&row.content));
        match kind {
            input::CampaignType::Message => {
                if row.channels.is_empty() {
                    out.push(violation(
                        "channels",
                        "a message campaign needs at least one channel before it is scheduled",
                    ));
                }
                if row.targets.is_empty() {
                    out.push(violation(
                        "target_segment_ids",
                        "a message campaign needs at least one target segment before it is scheduled",
                    ));
                }
            }
            input::CampaignType::SocialPost => {
                if let Err(v) = input::validate_platforms(kind, &row.platforms) {
                    out.push(from_domain(v));
                }
            }
        }
        if kind == input::CampaignType::Message && !row.channels.is_empty() {
            out.extend(
                input::validate_channels(kind, &row.channels, &content)
                    .into_iter()
                    .map(from_domain),
            );
        }
        invalid(out)
    }

    async fn check_segments(
        &self,
        c: &Caller,
        targets: &[Uuid],
        exclusions: &[Uuid],
    ) -> Result<()> {
        if targets.is_empty() && exclusions.is_empty() {
            return Ok(());
        }
        let bearer = c.bearer.as_deref().ok_or_else(|| {
            ServiceError::unauthenticated("segments can only be checked with a bearer token")
        })?;
        self.segments.check(bearer, targets, exclusions).await
    }

    /// A live campaign of the caller's workspace, read in its own short transaction.
    async fn read(&self, c: &Caller, id: Uuid) -> Result<CampaignRow> {
        let mut tx = self.db.tenant_tx(c.tenant).await?;
        let row = store::get(&mut tx, c.tenant, id, false)
            .await?
            .ok_or_else(not_found)?;
        tx.commit().await.map_err(cos_db::DbError::from)?;
        Ok(row)
    }

    /// A built-in template (`builtin-<key>`) or one of the workspace's own.
    async fn template(&self, c: &Caller, raw_id: &str) -> Result<pb::CampaignTemplate> {
        let raw_id = raw_id.trim();
        if raw_id.starts_with(catalog::BUILTIN_PREFIX) {
            return catalog::builtin(raw_id)
                .map(builtin_pb)
                .ok_or_else(|| ServiceError::not_found("campaign template").into());
        }
        let id = parse_uuid("template_id", raw_id)?;
        let mut tx = self.db.tenant_tx(c.tenant).await?;
        let row = store::get_template(&mut tx, c.tenant, id)
            .await?
            .ok_or_else(|| Error::from(ServiceError::not_found("campaign template")))?;
        tx.commit().await.map_err(cos_db::DbError::from)?;
        Ok(template_pb(&row))
    }

    /// Applies a lifecycle action (not schedule) to a campaign under its row lock.
    async fn act(
        &self,
        c: &Caller,
        id: Uuid,
        version: i64,
        action: Action,
        event: &str,
    ) -> Result<CampaignRow> {
        let mut tx = self.db.tenant_tx(c.tenant).await?;
        let row = store::get(&mut tx, c.tenant, id, true)
            .await?
            .ok_or_else(not_found)?;
        if version != 0 && row.version != version {
            return Err(version_conflict(row.version));
        }
        let from = stored_status(&row)?;
        let to = state::transition(from, action).map_err(illegal)?;
        let change = match action {
            Action::Unschedule | Action::Cancel => ScheduleChange::Clear,
            _ => ScheduleChange::Keep,
        };
        let row = store::set_status(&mut tx, c.tenant, id, to.as_str(), change).await?;
        events::emit(
            &mut tx,
            c.tenant,
            event,
            Change {
                campaign: id,
                status: to.as_str(),
                previous_status: Some(from.as_str()),
                version: row.version,
                actor: c.user,
                send_at: row.send_at,
            },
        )
        .await?;
        tx.commit().await.map_err(cos_db::DbError::from)?;
        Ok(row)
    }
}

fn parse_time(field: &str, raw: &str) -> Result<Option<DateTime<Utc>>> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| {
            ServiceError::invalid(field, "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z")
                .into()
        })
}

fn list_filter(r: &pb::ListCampaignsRequest) -> Result<ListFilter> {
    let mut out = Vec::new();
    let statuses = if r.status.trim().is_empty() {
        None
    } else {
        let mut list = Vec::new();
        for s in r.status.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match CampaignStatus::parse(s) {
                Some(st) => list.push(st.as_str().to_owned()),
                None => out.push(violation(
                    "status",
                    format!(
                        "unknown status {s:?}; one of: draft, scheduled, running, paused, completed, cancelled, archived"
                    ),
                )),
            }
        }
        (!list.is_empty()).then_some(list)
    };
    let channel = if r.channel.trim().is_empty() {
        None
    } else {
        match input::Channel::parse(r.channel.trim()) {
            Some(c) => Some(c.as_str().to_owned()),
            None => {
                out.push(violation(
                    "channel",
                    "must be one of: email, sms, webhook, sandbox",
                ));
                None
            }
        }
    };
    let query = r.query.trim();
    out.extend(query_violation(query));
    invalid(out)?;
    let created_after = parse_time("created_after", &r.created_after)?;
    let created_before = parse_time("created_before", &r.created_before)?;
    if let (Some(a), Some(b)) = (created_after, created_before)
        && a >= b
    {
        return Err(ServiceError::invalid("created_before", "must be after created_after").into());
    }
    Ok(ListFilter {
        statuses,
        channel,
        created_after,
        created_before,
        query: (!query.is_empty()).then(|| query.to_owned()),
    })
}

/// A search text: at most [`MAX_QUERY`] characters, no control characters (NUL cannot even
/// reach PostgreSQL).
fn query_violation(query: &str) -> Option<FieldViolation> {
    if query.chars().count() > MAX_QUERY {
        Some(violation(
            "query",
            format!("at most {MAX_QUERY} characters"),
        ))
    } else if query.chars().any(char::is_control) {
        Some(violation("query", "must not contain control characters"))
    } else {
        None
    }
}

fn page_size(raw: i32) -> Result<i64> {
    match raw {
        0 => Ok(DEFAULT_PAGE),
        1..=MAX_PAGE => Ok(i64::from(raw)),
        _ => Err(
            ServiceError::invalid("page_size", format!("must be between 1 and {MAX_PAGE}")).into(),
        ),
    }
}

fn page_token(raw: &str) -> Result<Option<Uuid>> {
    if raw.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(raw)
        .map(Some)
        .map_err(|_| ServiceError::invalid("page_token", "is not a token this API issued").into())
}

#[tonic::async_trait]
impl CampaignsService for CampaignsGrpc {
    async fn create_campaign(
        &self,
        req: Request<pb::CreateCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let api = &self.0;
        let fields = api.validate(&Draft {
            name: r.name,
            description: r.description,
            goal: r.goal,
            kind: r.r#type,
            channels: r.channels,
            platforms: r.platforms,
            targets: r.target_segment_ids,
            exclusions: r.exclusion_segment_ids,
            content: r.content.unwrap_or_default(),
            budget: r.budget,
            variants: r.variants,
        })?;
        api.check_segments(&c, &fields.targets, &fields.exclusions)
            .await?;
        let mut tx = api.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let row = store::insert(&mut tx, c.tenant, Uuid::now_v7(), c.user, None, &fields).await?;
        emit_change(&mut tx, &c, &row, events::CREATED, None).await?;
        tx.commit().await.map_err(|e| Error::Db(e.into()))?;
        Ok(Response::new(campaign_pb(&row)))
    }

    async fn get_campaign(
        &self,
        req: Request<pb::GetCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let c = caller(&req)?;
        let id = parse_uuid("campaign_id", &req.get_ref().campaign_id)?;
        let row = self.0.read(&c, id).await?;
        Ok(Response::new(campaign_pb(&row)))
    }

    async fn list_campaigns(
        &self,
        req: Request<pb::ListCampaignsRequest>,
    ) -> Result<Response<pb::ListCampaignsResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let limit = page_size(r.page_size)?;
        let before = page_token(&r.page_token)?;
        let filter = list_filter(&r)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let mut rows = store::list(&mut tx, c.tenant, &filter, before, limit + 1).await?;
        tx.commit().await.map_err(|e| Error::Db(e.into()))?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_page_token = if more {
            rows.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListCampaignsResponse {
            campaigns: rows
                .iter()
                .map(|r| pb::Campaign {
                    content: None,
                    ..campaign_pb(r)
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn update_campaign(
        &self,
        req: Request<pb::UpdateCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let api = &self.0;
        let id = parse_uuid("campaign_id", &r.campaign_id)?;
        if r.version <= 0 {
            return Err(Error::from(ServiceError::invalid(
                "version",
                "is required (the version you read)",
            ))
            .into());
        }
        // Validate against the current row, check segments outside the transaction, then
        // re-read under the lock: the version check makes a concurrent change lose cleanly.
        let current = api.read(&c, id).await?;
        if current.version != r.version {
            return Err(version_conflict(current.version).into());
        }
        let status = stored_status(&current)?;
        if !status.is_editable() {
            return Err(Error::from(ServiceError::failed_precondition(format!(
                "a {} campaign cannot be edited; only draft and scheduled campaigns can (duplicate it to make a new draft)",
                status.as_str()
            )))
            .into());
        }
        let mut d = Draft::of(&current);
        if let Some(v) = r.name {
            d.name = v;
        }
        if let Some(v) = r.description {
            d.description = v;
        }
        if let Some(v) = r.goal {
            d.goal = v;
        }
        if let Some(v) = r.channels {
            d.channels = v.values;
        }
        if let Some(v) = r.platforms {
            d.platforms = v.values;
        }
        if let Some(v) = r.target_segment_ids {
            d.targets = v.values;
        }
        if let Some(v) = r.exclusion_segment_ids {
            d.exclusions = v.values;
        }
        if let Some(v) = r.content {
            d.content = v;
        }
        if let Some(b) = r.budget {
            d.budget = (b.amount_minor != 0 || !b.currency.is_empty()).then_some(b);
        }
        if let Some(v) = r.variants {
            d.variants = v.values;
        }
        let fields = api.validate(&d)?;
        check_may_change(&c, status)?;
        if status == CampaignStatus::Scheduled {
            // A scheduled campaign goes out by itself: it must stay sendable.
            api.check_ready(&fields)?;
        }
        let new_segments: Vec<Uuid> = fields
            .targets
            .iter()
            .chain(&fields.exclusions)
            .filter(|s| {
                !current.target_segment_ids.contains(s)
                    && !current.exclusion_segment_ids.contains(s)
            })
            .copied()
            .collect();
        let (new_targets, new_exclusions): (Vec<Uuid>, Vec<Uuid>) = new_segments
            .into_iter()
            .partition(|s| fields.targets.contains(s));
        api.check_segments(&c, &new_targets, &new_exclusions)
            .await?;
        let mut tx = api.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let locked = store::get(&mut tx, c.tenant, id, true)
            .await?
            .ok_or_else(not_found)?;
        if locked.version != r.version {
            return Err(version_conflict(locked.version).into());
        }
        let row = store::update(&mut tx, c.tenant, id, &fields).await?;
        emit_change(&mut tx, &c, &row, events::UPDATED, None).await?;
        tx.commit().await.map_err(|e| Error::Db(e.into()))?;
        Ok(Response::new(campaign_pb(&row)))
    }

    async fn delete_campaign(
        &self,
        req: Request<pb::DeleteCampaignRequest>,
    ) -> Result<Response<pb::DeleteCampaignResponse>, Status> {
        let c = caller(&req)?;
        let id = parse_uuid("campaign_id", &req.get_ref().campaign_id)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let row = store::get(&mut tx, c.tenant, id, true)
            .await?
            .ok_or_else(not_found)?;
        let status = stored_status(&row)?;
        check_may_change(&c, status)?;
        if matches!(status, CampaignStatus::Running | CampaignStatus::Paused) {
            return Err(Error::from(ServiceError::failed_precondition(format!(
                "a {} campaign cannot be deleted; it must complete first",
                status.as_str()
            )))
            .into());
        }
        let version = store::soft_delete(&mut tx, c.tenant, id).await?;
        events::emit(
            &mut tx,
            c.tenant,
            events::DELETED,
            Change {
                campaign: id,
                status: status.as_str(),
                previous_status: None,
                version,
                actor: c.user,
                send_at: row.send_at,
            },
        )
        .await?;
        tx.commit().await.map_err(|e| Error::Db(e.into()))?;
        Ok(Response::new(pb::DeleteCampaignResponse {}))
    }

    async fn schedule_campaign(
        &self,
        req: Request<pb::ScheduleCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let api = &self.0;
        let id = parse_uuid("campaign_id", &r.campaign_id)?;
        let mut missing = Vec::new();
        if r.send_at.trim().is_empty() {
            missing.push(violation(
                "send_at",
                "is required, e.g. \"2026-12-24T09:00\" (in time_zone) or an RFC 3339 instant",
            ));
        }
        if r.time_zone.trim().is_empty() {
            missing.push(violation(
                "time_zone",
                "is required: an IANA time zone such as \"Europe/Berlin\"",
            ));
        }
        invalid(missing)?;
        let lead = chrono::Duration::from_std(api.config.schedule_min_lead)
            .map_err(|e| Error::Internal(format!("schedule_min_lead: {e}")))?;
        let resolve = || {
            schedule::resolve_any(r.send_at.trim(), r.time_zone.trim(), Utc::now(), lead).map_err(
                |e| {
                    let field = match e.field() {
                        "schedule.time_zone" => "time_zone",
                        _ => "send_at",
                    };
                    Error::from(ServiceError::invalid(field, e.to_string()))
                },
            )
        };
        // Checked before the (possibly slow) segment checks, and again under the lock: the time
        // must still be ahead when it is stored.
        resolve()?;
        // Readiness and segments are checked on the row as stored; the lock below re-checks the
        // version so nothing changes in between unnoticed.
        let current = api.read(&c, id).await?;
        if r.version != 0 && current.version != r.version {
            return Err(version_conflict(current.version).into());
        }
        let from = stored_status(&current)?;
        if from != CampaignStatus::Scheduled {
            state::transition(from, Action::Schedule).map_err(illegal)?;
        }
        api.check_ready(&api.validate(&Draft::of(&current))?)?;
        api.check_segments(
            &c,
            &current.target_segment_ids,
            &current.exclusion_segment_ids,
        )
        .await?;
        let mut tx = api.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let locked = store::get(&mut tx, c.tenant, id, true)
            .await?
            .ok_or_else(not_found)?;
        if locked.version != current.version {
            return Err(version_conflict(locked.version).into());
        }
        let resolved = resolve()?;
        let schedule = ScheduleFields {
            send_at: resolved.send_at,
            time_zone: resolved.time_zone.name().to_owned(),
            local_send_at: resolved.local,
            ambiguous: resolved.ambiguous,
        };
        let row = store::set_status(
            &mut tx,
            c.tenant,
            id,
            CampaignStatus::Scheduled.as_str(),
            ScheduleChange::Set(schedule),
        )
        .await?;
        emit_change(&mut tx, &c, &row, events::SCHEDULED, Some(from.as_str())).await?;
        tx.commit().await.map_err(|e| Error::Db(e.into()))?;
        Ok(Response::new(campaign_pb(&row)))
    }

    async fn unschedule_campaign(
        &self,
        req: Request<pb::TransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.transition(req, Action::Unschedule, events::UNSCHEDULED)
            .await
    }

    async fn cancel_campaign(
        &self,
        req: Request<pb::TransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.transition(req, Action::Cancel, events::CANCELLED)
            .await
    }

    async fn archive_campaign(
        &self,
        req: Request<pb::TransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.transition(req, Action::Archive, events::ARCHIVED)
            .await
    }

    async fn preview_campaign(
        &self,
        req: Request<pb::PreviewCampaignRequest>,
    ) -> Result<Response<pb::PreviewCampaignResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let api = &self.0;
        let id = parse_uuid("campaign_id", &r.campaign_id)?;
        let contact_id = parse_uuid("contact_id", &r.contact_id)?;
        let row = api.read(&c, id).await?;
        let bearer = c.bearer.as_deref().ok_or_else(|| {
            Error::from(ServiceError::unauthenticated(
                "a preview reads the contact with your bearer token",
            ))
        })?;
        let contact = render_contact(&api.segments.contact(bearer, contact_id).await?);
        let content = content_to_domain(&content_from_json(&row.content.0));
        let extra = serde_json::json!({"campaign": {"id": row.id.to_string(), "name": row.name}});
        let failed =
            |e: template::RenderError| Error::from(ServiceError::invalid(e.field, e.message));
        let email = match &content.email {
            Some(e) => {
                let out = api
                    .renderer
                    .render_email(e, &contact, &extra)
                    .map_err(failed)?;
                Some(pb::RenderedEmail {
                    subject: out.subject,
                    preheader: out.preheader,
                    html_body: out.html_body,
                    text_body: out.text_body,
                })
            }
            None => None,
        };
        let sms_text = match &content.sms {
            Some(s) => Some(
                api.renderer
                    .render_sms(s, &contact, &extra)
                    .map_err(failed)?,
            ),
            None => None,
        };
        let webhook_json = match &content.webhook {
            Some(w) => Some(
                api.renderer
                    .render_webhook(w, &contact, &extra)
                    .map_err(failed)?
                    .to_string(),
            ),
            None => None,
        };
        Ok(Response::new(pb::PreviewCampaignResponse {
            contact_id: contact_id.to_string(),
            email,
            sms_text,
            webhook_json,
        }))
    }

    async fn list_campaign_templates(
        &self,
        req: Request<pb::ListCampaignTemplatesRequest>,
    ) -> Result<Response<pb::ListCampaignTemplatesResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let niche = r.niche.trim();
        if !niche.is_empty() && !valid_niche(niche) {
            return Err(Error::from(niche_violation()).into());
        }
        let query = r.query.trim();
        invalid(query_violation(query).into_iter().collect())?;
        let show_restricted = r.include_age_restricted || catalog::is_age_restricted(niche);
        let needle = query.to_lowercase();
        let mut templates: Vec<pb::CampaignTemplate> = catalog::BUILTINS
            .iter()
            .filter(|b| niche.is_empty() || b.niche == niche)
            .filter(|b| show_restricted || !catalog::is_age_restricted(b.niche))
            .filter(|b| {
                needle.is_empty()
                    || b.name.to_lowercase().contains(&needle)
                    || b.description.to_lowercase().contains(&needle)
            })
            .map(|b| summary(builtin_pb(b)))
            .collect();
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let own = store::list_templates(
            &mut tx,
            c.tenant,
            (!niche.is_empty()).then_some(niche),
            (!query.is_empty()).then_some(query),
        )
        .await?;
        tx.commit().await.map_err(|e| Error::Db(e.into()))?;
        templates.extend(
            own.iter()
                .filter(|t| show_restricted || !catalog::is_age_restricted(&t.niche))
                .map(|t| summary(template_pb(t))),
        );
        Ok(Response::new(pb::ListCampaignTemplatesResponse {
            templates,
        }))
    }

    async fn get_campaign_template(
        &self,
        req: Request<pb::GetCampaignTemplateRequest>,
    ) -> Result<Response<pb::CampaignTemplate>, Status> {
        let c = caller(&req)?;
        let template = self.0.template(&c, &req.get_ref().template_id).await?;
        Ok(Response::new(template))
    }

    async fn create_campaign_from_template(
        &self,
        req: Request<pb::CreateCampaignFromTemplateRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let api = &self.0;
        let template = api.template(&c, &r.template_id).await?;
        let fields = api.validate(&Draft {
            name: r.name.unwrap_or(template.name),
            description: template.description,
            goal: template.goal,
            kind: template.r#type,
            channels: template.channels,
            platforms: template.platforms,
            targets: r.target_segment_ids,
            exclusions: r.exclusion_segment_ids,
            content: template.content.unwrap_or_default(),
            budget: None,
            variants: template.variants,
        })?;
        api.check_segments(&c, &fields.targets, &fields.exclusions)
            .await?;
        let mut tx = api.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let row = store::insert(&mut tx, c.tenant, Uuid::now_v7(), c.user, None, &fields).await?;
        emit_change(&mut tx, &c, &row, events::CREATED, None).await?;
        tx.commit().await.map_err(|e| Error::Db(e.into()))?;
        Ok(Response::new(campaign_pb(&row)))
    }

    async fn save_campaign_as_template(
        &self,
        req: Request<pb::SaveCampaignAsTemplateRequest>,
    ) -> Result<Response<pb::CampaignTemplate>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = parse_uuid("campaign_id", &r.campaign_id)?;
        let niche = if r.niche.trim().is_empty() {
            "other"
        } else {
            r.niche.trim()
        };
        let mut out = Vec::new();
        if !valid_niche(niche) {
            out.push(violation("niche", niche_message()));
        }
        let description = match r.description.as_deref().map(input::validate_description) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(v)) => {
                out.push(from_domain(v));
                None
            }
        };
        let name = match r.name.as_deref().map(input::validate_name) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(v)) => {
                out.push(from_domain(v));
                None
            }
        };
        invalid(out)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let source = store::get(&mut tx, c.tenant, id, false)
            .await?
            .ok_or_else(not_found)?;
        if store::count_templates(&mut tx, c.tenant).await? >= MAX_TEMPLATES {
            return Err(Error::from(ServiceError::failed_precondition(format!(
                "a workspace keeps at most {MAX_TEMPLATES} templates; delete one first"
            )))
            .into());
        }
        let name = name.unwrap_or_else(|| source.name.clone());
        let description = description.unwrap_or_else(|| source.description.clone());
        let row = store::insert_template(
            &mut tx,
            c.tenant,
            c.user,
            &source,
            &name,
            &description,
            niche,
        )
        .await?
        .ok_or_else(|| {
            Error::from(
                ServiceError::already_exists(format!(
                    "a template named {name:?} already exists in this workspace"
                ))
                .with_violation("name", "is taken by another template"),
            )
        })?;
        tx.commit().await.map_err(|e| Error::Db(e.into()))?;
        Ok(Response::new(template_pb(&row)))
    }

    async fn delete_campaign_template(
        &self,
        req: Request<pb::DeleteCampaignTemplateRequest>,
    ) -> Result<Response<pb::DeleteCampaignTemplateResponse>, Status> {
        let c = caller(&req)?;
        let raw = req.get_ref().template_id.trim().to_owned();
        if raw.starts_with(catalog::BUILTIN_PREFIX) {
            return Err(Error::from(ServiceError::failed_precondition(
                "built-in templates cannot be deleted",
            ))
            .into());
        }
        let id = parse_uuid("template_id", &raw)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        if !store::delete_template(&mut tx, c.tenant, id).await? {
            return Err(Error::from(ServiceError::not_found("campaign template")).into());
        }
        tx.commit().await.map_err(|e| Error::Db(e.into()))?;
        Ok(Response::new(pb::DeleteCampaignTemplateResponse {}))
    }

    async fn launch_campaign(
        &self,
        req: Request<pb::TransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let (who, id, version) = launcher_of(&req)?;
        // The launch runs to its end even if the caller goes away: it holds quota and a delivery
        // job until it commits or gives them back.
        let api = self.0.clone();
        let row = tokio::spawn(async move { api.launch(who, id, version, false).await })
            .await
            .map_err(|e| Error::Internal(format!("launch task: {e}")))??;
        Ok(Response::new(campaign_pb(&row)))
    }

    async fn pause_campaign(
        &self,
        req: Request<pb::TransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let (who, id, version) = launcher_of(&req)?;
        let row = self.0.pause(who, id, version).await?;
        Ok(Response::new(campaign_pb(&row)))
    }

    async fn resume_campaign(
        &self,
        req: Request<pb::TransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let (who, id, version) = launcher_of(&req)?;
        let row = self.0.resume(who, id, version).await?;
        Ok(Response::new(campaign_pb(&row)))
    }

    async fn get_campaign_progress(
        &self,
        req: Request<pb::GetCampaignProgressRequest>,
    ) -> Result<Response<pb::CampaignProgress>, Status> {
        let c = caller(&req)?;
        let id = parse_uuid("campaign_id", &req.get_ref().campaign_id)?;
        Ok(Response::new(self.0.progress(c.tenant, id).await?))
    }

    async fn test_send_campaign(
        &self,
        req: Request<pb::TestSendCampaignRequest>,
    ) -> Result<Response<pb::TestSendCampaignResponse>, Status> {
        use cos_proto::publishing::v1 as ppb;
        let c = caller(&req)?;
        let r = req.into_inner();
        let api = &self.0;
        let id = parse_uuid("campaign_id", &r.campaign_id)?;
        let row = api.read(&c, id).await?;
        let channel = r.channel.trim();
        if !row.channels.iter().any(|ch| ch == channel) {
            return Err(Error::from(ServiceError::invalid(
                "channel",
                format!(
                    "must be one of the campaign's channels: {}",
                    row.channels.join(", ")
                ),
            ))
            .into());
        }
        let contact = if r.contact_id.trim().is_empty() {
            ppb::Recipient {
                contact_id: Uuid::nil().to_string(),
                first_name: "Alex".into(),
                last_name: "Sample".into(),
                attributes_json: b"{}".to_vec(),
                ..Default::default()
            }
        } else {
            let contact_id = parse_uuid("contact_id", &r.contact_id)?;
            let bearer = c.bearer.as_deref().ok_or_else(|| {
                Error::from(ServiceError::unauthenticated(
                    "a test send for a contact reads it with your bearer token",
                ))
            })?;
            let k = api.segments.contact(bearer, contact_id).await?;
            let attributes = k
                .attributes
                .as_ref()
                .map(crate::convert::struct_to_json)
                .unwrap_or_else(|| serde_json::json!({}));
            ppb::Recipient {
                contact_id: k.id,
                email: k.email,
                phone: k.phone,
                first_name: k.first_name,
                last_name: k.last_name,
                locale: k.locale,
                time_zone: k.time_zone,
                attributes_json: attributes.to_string().into_bytes(),
                external_id: k.external_id,
                ..Default::default()
            }
        };
        let out = api
            .publishing
            .send_test(
                c.tenant,
                ppb::SendTestMessageRequest {
                    campaign_id: id.to_string(),
                    channel: channel.to_owned(),
                    connection_id: String::new(),
                    to: r.to.trim().to_owned(),
                    content: Some(crate::launch::job_content(&row)),
                    contact: Some(contact),
                    campaign_name: row.name.clone(),
                },
            )
            .await?;
        Ok(Response::new(pb::TestSendCampaignResponse {
            delivery_id: out.delivery_id,
            status: out.status,
            provider_message_id: out.provider_message_id,
            error: out.error,
        }))
    }

    async fn duplicate_campaign(
        &self,
        req: Request<pb::DuplicateCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let api = &self.0;
        let id = parse_uuid("campaign_id", &r.campaign_id)?;
        let source = api.read(&c, id).await?;
        let mut d = Draft::of(&source);
        d.name = match r.name {
            Some(n) => n,
            None => copy_name(&source.name),
        };
        if let Some(v) = r.description {
            d.description = v;
        }
        let overridden_segments =
            r.target_segment_ids.is_some() || r.exclusion_segment_ids.is_some();
        if let Some(v) = r.target_segment_ids {
            d.targets = v.values;
        }
        if let Some(v) = r.exclusion_segment_ids {
            d.exclusions = v.values;
        }
        let fields = api.validate(&d)?;
        if overridden_segments {
            api.check_segments(&c, &fields.targets, &fields.exclusions)
                .await?;
        }
        let mut tx = api.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let row = store::insert(
            &mut tx,
            c.tenant,
            Uuid::now_v7(),
            c.user,
            Some(source.id),
            &fields,
        )
        .await?;
        emit_change(&mut tx, &c, &row, events::CREATED, None).await?;
        tx.commit().await.map_err(|e| Error::Db(e.into()))?;
        Ok(Response::new(campaign_pb(&row)))
    }
}

impl CampaignsGrpc {
    async fn transition(
        &self,
        req: Request<pb::TransitionRequest>,
        action: Action,
        event: &str,
    ) -> Result<Response<pb::Campaign>, Status> {
        let c = caller(&req)?;
        let id = parse_uuid("campaign_id", &req.get_ref().campaign_id)?;
        let version = req.get_ref().version;
        let row = self.0.act(&c, id, version, action, event).await?;
        Ok(Response::new(campaign_pb(&row)))
    }
}

const MAX_TEMPLATES: i64 = 500;

fn valid_niche(niche: &str) -> bool {
    niche == "other" || catalog::is_niche(niche)
}

fn niche_message() -> String {
    format!("must be one of: {}, other", catalog::NICHES.join(", "))
}

fn niche_violation() -> ServiceError {
    ServiceError::invalid("niche", niche_message())
}

fn builtin_pb(b: &catalog::Builtin) -> pb::CampaignTemplate {
    pb::CampaignTemplate {
        id: b.id(),
        name: b.name.to_owned(),
        description: b.description.to_owned(),
        goal: b.goal.to_owned(),
        niche: b.niche.to_owned(),
        age_restricted: catalog::is_age_restricted(b.niche),
        built_in: true,
        r#type: b.kind.to_owned(),
        channels: b.channels.iter().map(|s| (*s).to_owned()).collect(),
        platforms: b.platforms.iter().map(|s| (*s).to_owned()).collect(),
        content: Some(pb::Content {
            email: b
                .email
                .map(|[subject, preheader, html, text]| pb::EmailContent {
                    subject: subject.to_owned(),
                    preheader: preheader.to_owned(),
                    html_body: html.to_owned(),
                    text_body: text.to_owned(),
                }),
            sms: b.sms.map(|text| pb::SmsContent {
                text: text.to_owned(),
            }),
            webhook: None,
        }),
        variants: vec![],
        created_at: None,
    }
}

/// A list item: everything but the content.
fn summary(t: pb::CampaignTemplate) -> pb::CampaignTemplate {
    pb::CampaignTemplate { content: None, ..t }
}

fn template_pb(t: &store::TemplateRow) -> pb::CampaignTemplate {
    pb::CampaignTemplate {
        id: t.id.to_string(),
        name: t.name.clone(),
        description: t.description.clone(),
        goal: t.goal.clone(),
        niche: t.niche.clone(),
        age_restricted: catalog::is_age_restricted(&t.niche),
        built_in: false,
        r#type: t.kind.clone(),
        channels: t.channels.clone(),
        platforms: t.platforms.clone(),
        content: Some(content_from_json(&t.content.0)),
        variants: variants_from_json(&t.variants.0),
        created_at: Some(crate::convert::ts(t.created_at)),
    }
}

/// "<name> (copy)", shortened so it stays a valid name.
fn copy_name(name: &str) -> String {
    const SUFFIX: &str = " (copy)";
    let keep = 200 - SUFFIX.chars().count();
    let base: String = name.chars().take(keep).collect();
    format!("{base}{SUFFIX}")
}

async fn emit_change(
    conn: &mut sqlx::PgConnection,
    c: &Caller,
    row: &CampaignRow,
    event: &str,
    previous: Option<&str>,
) -> Result<()> {
    events::emit(
        conn,
        c.tenant,
        event,
        Change {
            campaign: row.id,
            status: &row.status,
            previous_status: previous,
            version: row.version,
            actor: c.user,
            send_at: row.send_at,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_name_stays_within_the_limit() {
        assert_eq!(copy_name("Spring sale"), "Spring sale (copy)");
        let long = "x".repeat(200);
        assert_eq!(copy_name(&long).chars().count(), 200);
    }

    #[test]
    fn segment_ids_reports_each_bad_entry() {
        let mut out = Vec::new();
        let a = Uuid::now_v7().to_string();
        let ids = segment_ids(
            "target_segment_ids",
            &[a.clone(), "nope".into(), a],
            &mut out,
        );
        assert_eq!(ids.len(), 1);
        let fields: Vec<_> = out.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["target_segment_ids[1]", "target_segment_ids[2]"]);
    }

    #[test]
    fn list_filter_rejects_unknown_status_and_channel() {
        let r = pb::ListCampaignsRequest {
            status: "draft,bogus".into(),
            channel: "fax".into(),
            ..Default::default()
        };
        let Err(Error::Client(e)) = list_filter(&r) else {
            panic!("expected a client error")
        };
        let text = format!("{e:?}");
        assert!(
            text.contains("status") && text.contains("channel"),
            "{text}"
        );
    }
}
