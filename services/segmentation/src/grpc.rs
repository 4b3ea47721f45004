//! The SegmentationService gRPC implementation: maps protobuf to domain types and runs each
//! change in one tenant transaction with its events. Permission checks happen before this code,
//! in the auth layer, from each RPC's policy.

use std::pin::Pin;
use std::sync::Arc;

use chrono::Utc;
use cos_auth::principal_of;
use cos_db::Db;
use cos_errors::ServiceError;
use cos_proto::segmentation::v1 as pb;
use cos_proto::segmentation::v1::segmentation_service_server::SegmentationService;
use futures::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::config::SegmentationConfig;
use crate::convert::{from_json, from_ts, map_to_struct, opt_ts, struct_to_map, to_json, ts};
use crate::domain::attributes::{AttributeType, Channel, ConsentState, validate_key};
use crate::domain::contact::ConsentInput;
use crate::domain::state::{Patch, TagsChange};
use crate::error::{Error, Result};
use crate::ops::{self, Item, MatchOn, Outcome, Target};
use crate::plan::{ContactGate, Plan};
use crate::segments_ops::{self, TenantSegments};
use crate::store::{self, contacts::ContactRow};
use crate::{events, export};

pub struct SegmentationApi {
    pub(crate) db: Db,
    pub(crate) config: SegmentationConfig,
    pub(crate) plan: Plan,
}

#[derive(Clone)]
pub struct SegmentationGrpc(pub(crate) Arc<SegmentationApi>);

const MAX_PAGE: i32 = 500;
const MAX_MEMBER_IDS: usize = 1000;
const PREVIEW_SAMPLE: i64 = 20;

struct Caller {
    tenant: Uuid,
    user: Uuid,
    bearer: Option<String>,
    request_id: String,
}

/// The tenant of an internal call: only a service credential (signed for that tenant) is
/// accepted, never a user's token.
fn service_tenant<T>(req: &Request<T>) -> Result<Uuid> {
    cos_auth::service_principal_of(req)
        .map(|sp| sp.tenant_id)
        .ok_or_else(|| {
            ServiceError::permission_denied("only other services of the mesh may call this").into()
        })
}

fn caller<T>(req: &Request<T>) -> Result<Caller> {
    let p = principal_of(req)?;
    Ok(Caller {
        tenant: p.tenant_id,
        user: p.user_id,
        bearer: req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned),
        request_id: req
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    })
}

pub(crate) fn parse_uuid(field: &str, raw: &str) -> Result<Uuid> {
    if raw.trim().is_empty() {
        return Err(ServiceError::invalid(field, "is required").into());
    }
    Uuid::parse_str(raw.trim())
        .map_err(|_| ServiceError::invalid(field, "is not a valid id").into())
}

fn page_size(raw: i32, default: i64) -> Result<i64> {
    match raw {
        0 => Ok(default),
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

/// One page out of `limit + 1` fetched rows: the first `limit`, and the next-page token (the
/// last row's key) when there were more.
fn page<T>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let token = if more {
        rows.last().map(key).unwrap_or_default()
    } else {
        String::new()
    };
    (rows, token)
}

fn not_found(what: &str) -> Error {
    ServiceError::not_found(what).into()
}

pub(crate) fn contact_pb(r: &ContactRow) -> pb::Contact {
    pb::Contact {
        id: r.id.to_string(),
        email: r.email.clone().unwrap_or_default(),
        phone: r.phone.clone().unwrap_or_default(),
        external_id: r.external_id.clone().unwrap_or_default(),
        first_name: r.first_name.clone(),
        last_name: r.last_name.clone(),
        locale: r.locale.clone(),
        time_zone: r.time_zone.clone(),
        attributes: Some(map_to_struct(&r.attributes.0)),
        tags: r.tags.clone(),
        consent: Channel::ALL
            .into_iter()
            .map(|c| {
                let (state, at, source) = r.consent(c);
                pb::Consent {
                    channel: c.as_str().to_owned(),
                    state: state.to_owned(),
                    source: source.to_owned(),
                    updated_at: opt_ts(at),
                }
            })
            .collect(),
        version: r.version,
        created_at: ts(r.created_at),
        updated_at: ts(r.updated_at),
        last_activity_at: opt_ts(r.last_activity_at),
    }
}

fn attribute_pb(r: store::attributes::AttributeRow) -> pb::AttributeDefinition {
    pb::AttributeDefinition {
        key: r.key,
        label: r.label,
        r#type: r.r#type,
        description: r.description,
        version: r.version,
        created_at: ts(r.created_at),
        updated_at: ts(r.updated_at),
    }
}

fn segment_pb(r: store::segments::SegmentRow) -> pb::Segment {
    pb::Segment {
        id: r.id.to_string(),
        name: r.name,
        description: r.description,
        kind: r.kind,
        criteria: r.criteria.map(|c| from_json(&c.0)),
        size: r.member_count,
        refreshed_at: opt_ts(r.refreshed_at),
        refresh_interval_secs: r.refresh_interval_secs,
        version: r.version,
        created_at: ts(r.created_at),
        updated_at: ts(r.updated_at),
    }
}

pub(crate) fn import_pb(r: store::imports::ImportRow) -> pb::ImportJob {
    let mapping = r
        .mapping
        .0
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let opts = &r.options.0;
    pb::ImportJob {
        id: r.id.to_string(),
        status: r.status,
        file_name: r.file_name,
        file_bytes: r.file_bytes,
        mapping,
        unknown_columns: opts["unknown_columns"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        rows_read: r.rows_read,
        rows_imported: r.rows_imported,
        rows_updated: r.rows_updated,
        rows_unchanged: r.rows_unchanged,
        rows_rejected: r.rows_rejected,
        rows_over_limit: r.rows_over_limit,
        error: r.error.unwrap_or_default(),
        static_segment_id: opts["static_segment_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        created_at: ts(r.created_at),
        started_at: opt_ts(r.started_at),
        finished_at: opt_ts(r.finished_at),
    }
}

/// The proto's writable fields as a patch. `creating` means absent tags are no tags.
fn patch_of(f: Option<pb::ContactFields>, field: &str) -> Result<Patch> {
    let f = f.ok_or_else(|| ServiceError::invalid(field, "is required"))?;
    let mut consent = Vec::new();
    for (i, c) in f.consent.iter().enumerate() {
        let channel = Channel::parse(c.channel.trim()).ok_or_else(|| {
            ServiceError::invalid(
                format!("{field}.consent[{i}].channel"),
                "must be email, sms or push",
            )
        })?;
        let state = ConsentState::parse(c.state.trim()).ok_or_else(|| {
            ServiceError::invalid(
                format!("{field}.consent[{i}].state"),
                "must be subscribed, unsubscribed or unknown",
            )
        })?;
        consent.push(ConsentInput {
            channel,
            state,
            source: if c.source.trim().is_empty() {
                "api".to_owned()
            } else {
                c.source.trim().to_owned()
            },
            at: c.updated_at.as_ref().and_then(from_ts),
        });
    }
    Ok(Patch {
        email: f.email,
        phone: f.phone,
        external_id: f.external_id,
        first_name: f.first_name,
        last_name: f.last_name,
        locale: f.locale,
        time_zone: f.time_zone,
        attributes: f
            .attributes
            .as_ref()
            .map(struct_to_map)
            .unwrap_or_default()
            .into_iter()
            .collect(),
        tags: TagsChange {
            replace: f.replace_tags.then(|| f.tags.clone()),
            add: if f.replace_tags {
                Vec::new()
            } else {
                f.tags.clone()
            }
            .into_iter()
            .chain(f.add_tags)
            .collect(),
            remove: f.remove_tags,
        },
        consent,
        last_activity_at: f.last_activity_at.as_ref().and_then(from_ts),
    })
}

/// A single-item outcome as the API reports it.
fn single(outcome: Outcome, field: &str, gate: &ContactGate) -> Result<ContactRow> {
    match outcome {
        Outcome::Created(r) | Outcome::Updated(r) | Outcome::Unchanged(r) => Ok(*r),
        Outcome::Rejected(v) => Err(ServiceError::invalid_fields(ops::to_api(v, field)).into()),
        Outcome::NotFound => Err(not_found("contact")),
        Outcome::VersionConflict(current) => Err(ServiceError::new(
            cos_errors::ErrorCode::VersionConflict,
            format!("the contact was changed by someone else (current version {current}); reload and retry"),
        )
        .with_metadata("current_version", current)
        .into()),
        Outcome::OverLimit(limit, usage) => Err(gate.over_limit_error(limit, usage).into()),
    }
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl SegmentationGrpc {
    async fn write_one(&self, c: &Caller, item: Item) -> Result<(Outcome, ContactGate)> {
        let api = &self.0;
        let gate = api.plan.contact_gate(c.tenant, c.bearer.as_deref()).await?;
        let limit = gate.limit;
        let mut tx = api.db.tenant_tx(c.tenant).await?;
        let catalog = store::attributes::catalog(&mut tx, c.tenant).await?;
        let mut out = ops::write_batch(
            &mut tx,
            c.tenant,
            &catalog,
            vec![item],
            &ops::Options {
                skip_existing: false,
                contact_limit: limit,
            },
            Utc::now(),
        )
        .await?;
        tx.commit().await?;
        Ok((out.pop().unwrap_or(Outcome::NotFound), gate))
    }
}

#[tonic::async_trait]
impl SegmentationService for SegmentationGrpc {
    async fn create_contact(
        &self,
        req: Request<pb::CreateContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let c = caller(&req)?;
        let mut patch = patch_of(req.into_inner().contact, "contact")?;
        // A new contact's tags are exactly what it was given.
        patch.tags = TagsChange {
            replace: Some(patch.tags.add.clone()),
            add: Vec::new(),
            remove: Vec::new(),
        };
        let (out, gate) = self
            .write_one(
                &c,
                Item {
                    line: 0,
                    patch,
                    target: Target::New,
                },
            )
            .await?;
        Ok(Response::new(contact_pb(&single(out, "contact", &gate)?)))
    }

    async fn upsert_contact(
        &self,
        req: Request<pb::UpsertContactRequest>,
    ) -> Result<Response<pb::UpsertContactResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let on = match r.match_on.trim() {
            "" | "email" => MatchOn::Email,
            "external_id" => MatchOn::ExternalId,
            _ => {
                return Err(Error::from(ServiceError::invalid(
                    "match_on",
                    "must be email or external_id",
                ))
                .into());
            }
        };
        let patch = patch_of(r.contact, "contact")?;
        let key_present = match on {
            MatchOn::ExternalId => patch
                .external_id
                .as_deref()
                .is_some_and(|s| !s.trim().is_empty()),
            _ => patch.email.as_deref().is_some_and(|s| !s.trim().is_empty()),
        };
        if !key_present {
            let field = if on == MatchOn::ExternalId {
                "contact.external_id"
            } else {
                "contact.email"
            };
            return Err(Error::from(ServiceError::invalid(field, "is required to upsert")).into());
        }
        let (out, gate) = self
            .write_one(
                &c,
                Item {
                    line: 0,
                    patch,
                    target: Target::Match(on),
                },
            )
            .await?;
        let outcome = match &out {
            Outcome::Created(_) => "created",
            Outcome::Updated(_) => "updated",
            _ => "unchanged",
        };
        let row = single(out, "contact", &gate)?;
        Ok(Response::new(pb::UpsertContactResponse {
            contact: Some(contact_pb(&row)),
            outcome: outcome.to_owned(),
        }))
    }

    async fn get_contact(
        &self,
        req: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let c = caller(&req)?;
        let id = parse_uuid("contact_id", &req.get_ref().contact_id)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let row = store::contacts::get(&mut tx, c.tenant, id, false)
            .await?
            .ok_or_else(|| not_found("contact"))?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(contact_pb(&row)))
    }

    async fn list_contacts(
        &self,
        req: Request<pb::ListContactsRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let limit = page_size(r.page_size, 50)?;
        let after = page_token(&r.page_token)?;
        let non_empty = |s: String| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let filter = store::contacts::ListFilter {
            query: non_empty(r.query),
            tag: non_empty(r.tag).map(|t| t.to_lowercase()),
            segment_id: match non_empty(r.segment_id) {
                Some(s) => Some(parse_uuid("segment_id", &s)?),
                None => None,
            },
            email_consent: match non_empty(r.email_consent) {
                Some(s) => Some(
                    ConsentState::parse(&s)
                        .ok_or_else(|| {
                            Error::from(ServiceError::invalid(
                                "email_consent",
                                "must be subscribed, unsubscribed or unknown",
                            ))
                        })?
                        .as_str()
                        .to_owned(),
                ),
                None => None,
            },
        };
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let rows = store::contacts::list(&mut tx, c.tenant, &filter, after, limit + 1).await?;
        tx.commit().await.map_err(Error::from)?;
        let (rows, next_page_token) = page(rows, limit, |r| r.id.to_string());
        Ok(Response::new(pb::ListContactsResponse {
            next_page_token,
            contacts: rows.iter().map(contact_pb).collect(),
        }))
    }

    async fn update_contact(
        &self,
        req: Request<pb::UpdateContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = parse_uuid("contact_id", &r.contact_id)?;
        if r.version <= 0 {
            return Err(Error::from(ServiceError::invalid(
                "version",
                "is required (the version you read; it protects against lost updates)",
            ))
            .into());
        }
        let patch = patch_of(r.contact, "contact")?;
        let (out, gate) = self
            .write_one(
                &c,
                Item {
                    line: 0,
                    patch,
                    target: Target::Existing(id, Some(r.version)),
                },
            )
            .await?;
        Ok(Response::new(contact_pb(&single(out, "contact", &gate)?)))
    }

    async fn delete_contact(
        &self,
        req: Request<pb::DeleteContactRequest>,
    ) -> Result<Response<pb::DeleteContactResponse>, Status> {
        let c = caller(&req)?;
        let id = parse_uuid("contact_id", &req.get_ref().contact_id)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        store::contacts::lock_live_count(&mut tx, c.tenant).await?;
        let (row, segments) = store::contacts::soft_delete(&mut tx, c.tenant, id)
            .await?
            .ok_or_else(|| not_found("contact"))?;
        store::contacts::add_live_count(&mut tx, c.tenant, -1).await?;
        for s in segments {
            events::membership(&mut tx, c.tenant, s, &[], &[id]).await?;
        }
        events::emit(
            &mut tx,
            c.tenant,
            events::CONTACT_DELETED,
            &[events::contact_changed(id, "deleted", row.version, &[])],
        )
        .await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::DeleteContactResponse {}))
    }

    async fn erase_contact(
        &self,
        req: Request<pb::EraseContactRequest>,
    ) -> Result<Response<pb::EraseContactResponse>, Status> {
        let c = caller(&req)?;
        let r = req.get_ref();
        let id = parse_uuid("contact_id", &r.contact_id)?;
        let reason = r.reason.trim();
        if reason.chars().count() > 500 {
            return Err(Error::from(ServiceError::invalid(
                "reason",
                "must be at most 500 characters",
            ))
            .into());
        }
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        store::contacts::lock_live_count(&mut tx, c.tenant).await?;
        let (erasure, live, segments) =
            store::contacts::erase(&mut tx, c.tenant, id, c.user, &c.request_id, reason)
                .await?
                .ok_or_else(|| not_found("contact"))?;
        if live {
            store::contacts::add_live_count(&mut tx, c.tenant, -1).await?;
            for s in segments {
                events::membership(&mut tx, c.tenant, s, &[], &[id]).await?;
            }
            events::emit(
                &mut tx,
                c.tenant,
                events::CONTACT_DELETED,
                &[events::contact_changed(id, "erased", 0, &[])],
            )
            .await?;
        }
        tx.commit().await.map_err(Error::from)?;
        tracing::info!(contact = %id, erasure = %erasure, "contact erased (GDPR)");
        Ok(Response::new(pb::EraseContactResponse {
            erasure_id: erasure.to_string(),
        }))
    }

    type ExportContactsStream = Stream_<pb::ExportChunk>;

    async fn export_contacts(
        &self,
        req: Request<pb::ExportContactsRequest>,
    ) -> Result<Response<Self::ExportContactsStream>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let format = match r.format.trim() {
            "" | "csv" => export::Format::Csv,
            "jsonl" | "json" => export::Format::JsonLines,
            _ => {
                return Err(
                    Error::from(ServiceError::invalid("format", "must be csv or jsonl")).into(),
                );
            }
        };
        let segment = match r.segment_id.trim() {
            "" => None,
            s => Some(parse_uuid("segment_id", s)?),
        };
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        if let Some(s) = segment {
            store::segments::get(&mut tx, c.tenant, s, false)
                .await?
                .ok_or_else(|| not_found("segment"))?;
        }
        let catalog = store::attributes::list(&mut tx, c.tenant).await?;
        tx.commit().await.map_err(Error::from)?;
        let stream = export::spawn(
            self.0.db.clone(),
            c.tenant,
            segment,
            format,
            catalog.into_iter().map(|a| a.key).collect(),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_attribute(
        &self,
        req: Request<pb::CreateAttributeRequest>,
    ) -> Result<Response<pb::AttributeDefinition>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let key = r.key.trim();
        let mut violations = Vec::new();
        if let Err(m) = validate_key(key) {
            violations.push(cos_errors::FieldViolation {
                field: "key".into(),
                message: m,
            });
        }
        let ty = AttributeType::parse(r.r#type.trim());
        if ty.is_none() {
            violations.push(cos_errors::FieldViolation {
                field: "type".into(),
                message: "must be string, number, boolean, date or string_list".into(),
            });
        }
        let label = if r.label.trim().is_empty() {
            key.to_owned()
        } else {
            r.label.trim().to_owned()
        };
        if label.chars().count() > 100 {
            violations.push(cos_errors::FieldViolation {
                field: "label".into(),
                message: "must be at most 100 characters".into(),
            });
        }
        if r.description.chars().count() > 1000 {
            violations.push(cos_errors::FieldViolation {
                field: "description".into(),
                message: "must be at most 1000 characters".into(),
            });
        }
        if !violations.is_empty() {
            return Err(Error::from(ServiceError::invalid_fields(violations)).into());
        }
        self.0
            .plan
            .ensure_can_write(c.tenant, c.bearer.as_deref())
            .await?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM segmentation.attribute_definitions WHERE tenant_id = $1",
        )
        .bind(c.tenant)
        .fetch_one(&mut *tx)
        .await
        .map_err(Error::from)?;
        if count >= 200 {
            return Err(Error::from(ServiceError::failed_precondition(
                "a tenant can define at most 200 attributes",
            ))
            .into());
        }
        let row = store::attributes::create(
            &mut tx,
            c.tenant,
            key,
            &label,
            ty.unwrap_or(AttributeType::String),
            r.description.trim(),
        )
        .await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(attribute_pb(row)))
    }

    async fn list_attributes(
        &self,
        req: Request<pb::ListAttributesRequest>,
    ) -> Result<Response<pb::ListAttributesResponse>, Status> {
        let c = caller(&req)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let rows = store::attributes::list(&mut tx, c.tenant).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::ListAttributesResponse {
            attributes: rows.into_iter().map(attribute_pb).collect(),
        }))
    }

    async fn update_attribute(
        &self,
        req: Request<pb::UpdateAttributeRequest>,
    ) -> Result<Response<pb::AttributeDefinition>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        if r.version <= 0 {
            return Err(Error::from(ServiceError::invalid("version", "is required")).into());
        }
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let row = store::attributes::get(&mut tx, c.tenant, r.key.trim())
            .await?
            .ok_or_else(|| not_found("attribute"))?;
        if row.version != r.version {
            return Err(Error::from(ServiceError::new(
                cos_errors::ErrorCode::VersionConflict,
                format!(
                    "the attribute was changed by someone else (current version {})",
                    row.version
                ),
            ))
            .into());
        }
        let label = r.label.map(|l| l.trim().to_owned()).unwrap_or(row.label);
        let description = r
            .description
            .map(|d| d.trim().to_owned())
            .unwrap_or(row.description);
        if label.is_empty() || label.chars().count() > 100 {
            return Err(Error::from(ServiceError::invalid(
                "label",
                "must be 1 to 100 characters",
            ))
            .into());
        }
        if description.chars().count() > 1000 {
            return Err(Error::from(ServiceError::invalid(
                "description",
                "must be at most 1000 characters",
            ))
            .into());
        }
        let row =
            store::attributes::update(&mut tx, c.tenant, &row.key, &label, &description).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(attribute_pb(row)))
    }

    async fn delete_attribute(
        &self,
        req: Request<pb::DeleteAttributeRequest>,
    ) -> Result<Response<pb::DeleteAttributeResponse>, Status> {
        let c = caller(&req)?;
        let key = req.get_ref().key.trim().to_owned();
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        store::attributes::get(&mut tx, c.tenant, &key)
            .await?
            .ok_or_else(|| not_found("attribute"))?;
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM segmentation.segments WHERE tenant_id = $1 AND deleted_at IS NULL AND criteria IS NOT NULL
               AND jsonb_path_exists(criteria, '$.** ? (@.field == $f)', jsonb_build_object('f', $2::text)) ORDER BY name",
        )
        .bind(c.tenant)
        .bind(format!("attributes.{key}"))
        .fetch_all(&mut *tx)
        .await
        .map_err(Error::from)?;
        if !users.is_empty() {
            return Err(Error::from(ServiceError::failed_precondition(format!(
                "attribute '{key}' is used by segment(s): {}; change their criteria first",
                users.join(", ")
            )))
            .into());
        }
        let touched = store::attributes::delete(&mut tx, c.tenant, &key).await?;
        tx.commit().await.map_err(Error::from)?;
        tracing::info!(attribute = %key, contacts = touched, "attribute deleted");
        Ok(Response::new(pb::DeleteAttributeResponse {}))
    }

    async fn create_import(
        &self,
        req: Request<pb::CreateImportRequest>,
    ) -> Result<Response<pb::ImportJob>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let job = crate::import::create(&self.0, c.tenant, c.user, c.bearer.as_deref(), r).await?;
        Ok(Response::new(job))
    }

    async fn get_import(
        &self,
        req: Request<pb::GetImportRequest>,
    ) -> Result<Response<pb::ImportJob>, Status> {
        let c = caller(&req)?;
        let id = parse_uuid("import_id", &req.get_ref().import_id)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let row = store::imports::get(&mut tx, c.tenant, id, false)
            .await?
            .ok_or_else(|| not_found("import"))?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(import_pb(row)))
    }

    async fn list_imports(
        &self,
        req: Request<pb::ListImportsRequest>,
    ) -> Result<Response<pb::ListImportsResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let limit = page_size(r.page_size, 20)?;
        let before = page_token(&r.page_token)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let rows = store::imports::list(&mut tx, c.tenant, before, limit + 1).await?;
        tx.commit().await.map_err(Error::from)?;
        let (rows, next_page_token) = page(rows, limit, |r| r.id.to_string());
        Ok(Response::new(pb::ListImportsResponse {
            next_page_token,
            imports: rows.into_iter().map(import_pb).collect(),
        }))
    }

    async fn list_import_rejections(
        &self,
        req: Request<pb::ListImportRejectionsRequest>,
    ) -> Result<Response<pb::ListImportRejectionsResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = parse_uuid("import_id", &r.import_id)?;
        let limit = page_size(r.page_size, 100)?;
        let after: i64 = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse().map_err(|_| {
                Error::from(ServiceError::invalid(
                    "page_token",
                    "is not a token this API issued",
                ))
            })?
        };
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        store::imports::get(&mut tx, c.tenant, id, false)
            .await?
            .ok_or_else(|| not_found("import"))?;
        let rows = store::imports::rejections(&mut tx, c.tenant, id, after, limit + 1).await?;
        tx.commit().await.map_err(Error::from)?;
        let (rows, next_page_token) = page(rows, limit, |r| r.0.to_string());
        Ok(Response::new(pb::ListImportRejectionsResponse {
            next_page_token,
            rejections: rows
                .into_iter()
                .map(|(line, reason)| pb::ImportRejection { line, reason })
                .collect(),
        }))
    }

    async fn cancel_import(
        &self,
        req: Request<pb::CancelImportRequest>,
    ) -> Result<Response<pb::ImportJob>, Status> {
        let c = caller(&req)?;
        let id = parse_uuid("import_id", &req.get_ref().import_id)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let row = store::imports::get(&mut tx, c.tenant, id, true)
            .await?
            .ok_or_else(|| not_found("import"))?;
        if !matches!(&row.status[..], "queued" | "running") {
            return Err(Error::from(ServiceError::failed_precondition(format!(
                "the import is already {}",
                row.status
            )))
            .into());
        }
        store::imports::finish(&mut tx, c.tenant, id, "cancelled", None).await?;
        let row = store::imports::get(&mut tx, c.tenant, id, false)
            .await?
            .ok_or_else(|| not_found("import"))?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(import_pb(row)))
    }

    async fn create_segment(
        &self,
        req: Request<pb::CreateSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let name = r.name.trim().to_owned();
        check_name(&name)?;
        check_description(&r.description)?;
        let interval = match r.refresh_interval_secs {
            0 => 3600,
            n if (60..=604_800).contains(&n) => n,
            _ => {
                return Err(Error::from(ServiceError::invalid(
                    "refresh_interval_secs",
                    "must be between 60 and 604800",
                ))
                .into());
            }
        };
        let kind = r.kind.trim();
        let criteria_json = r.criteria.as_ref().map(to_json).filter(|v| !v.is_null());
        self.0
            .plan
            .ensure_can_write(c.tenant, c.bearer.as_deref())
            .await?;
        let id = Uuid::now_v7();
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let (criteria, depends_on) = match (kind, &criteria_json) {
            ("dynamic", Some(json)) => {
                let catalog = store::attributes::catalog(&mut tx, c.tenant).await?;
                let segments = TenantSegments::load(&mut tx, c.tenant, &catalog).await?;
                let (parsed, deps) =
                    segments_ops::validate_criteria(json, id, &catalog, &segments)?;
                (Some(parsed.to_json()), deps)
            }
            ("dynamic", None) => {
                return Err(Error::from(ServiceError::invalid(
                    "criteria",
                    "is required for a dynamic segment",
                ))
                .into());
            }
            ("static", None) => (None, Vec::new()),
            ("static", Some(_)) => return Err(Error::from(ServiceError::invalid(
                "criteria",
                "must be empty for a static segment (its members are added by hand or by import)",
            ))
            .into()),
            _ => {
                return Err(Error::from(ServiceError::invalid(
                    "kind",
                    "must be dynamic or static",
                ))
                .into());
            }
        };
        store::segments::create(
            &mut tx,
            c.tenant,
            &store::segments::NewSegment {
                id,
                name: &name,
                description: r.description.trim(),
                kind,
                criteria: criteria.as_ref(),
                depends_on: &depends_on,
                refresh_interval_secs: interval,
            },
        )
        .await?;
        // The first materialisation is the baseline: no entered events for existing contacts.
        let row = match segments_ops::refresh(&mut tx, c.tenant, id, None, false).await? {
            Some((row, _, _)) => row,
            None => return Err(not_found("segment").into()),
        };
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(segment_pb(row)))
    }

    async fn get_segment(
        &self,
        req: Request<pb::GetSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let c = caller(&req)?;
        let id = parse_uuid("segment_id", &req.get_ref().segment_id)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let row = store::segments::get(&mut tx, c.tenant, id, false)
            .await?
            .ok_or_else(|| not_found("segment"))?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(segment_pb(row)))
    }

    async fn list_segments(
        &self,
        req: Request<pb::ListSegmentsRequest>,
    ) -> Result<Response<pb::ListSegmentsResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let limit = page_size(r.page_size, 50)?;
        let after = page_token(&r.page_token)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let rows = store::segments::list(&mut tx, c.tenant, after, limit + 1).await?;
        tx.commit().await.map_err(Error::from)?;
        let (rows, next_page_token) = page(rows, limit, |r| r.id.to_string());
        Ok(Response::new(pb::ListSegmentsResponse {
            next_page_token,
            segments: rows.into_iter().map(segment_pb).collect(),
        }))
    }

    async fn update_segment(
        &self,
        req: Request<pb::UpdateSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = parse_uuid("segment_id", &r.segment_id)?;
        if r.version <= 0 {
            return Err(Error::from(ServiceError::invalid(
                "version",
                "is required (the version you read)",
            ))
            .into());
        }
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let row = store::segments::get(&mut tx, c.tenant, id, true)
            .await?
            .ok_or_else(|| not_found("segment"))?;
        if row.version != r.version {
            return Err(Error::from(ServiceError::new(cos_errors::ErrorCode::VersionConflict, format!("the segment was changed by someone else (current version {}); reload and retry", row.version)).with_metadata("current_version", row.version)).into());
        }
        let name = r
            .name
            .map(|n| n.trim().to_owned())
            .unwrap_or(row.name.clone());
        check_name(&name)?;
        let description = r
            .description
            .map(|d| d.trim().to_owned())
            .unwrap_or(row.description.clone());
        check_description(&description)?;
        let interval = r.refresh_interval_secs.unwrap_or(row.refresh_interval_secs);
        if !(60..=604_800).contains(&interval) {
            return Err(Error::from(ServiceError::invalid(
                "refresh_interval_secs",
                "must be between 60 and 604800",
            ))
            .into());
        }
        let new_criteria = r.criteria.as_ref().map(to_json).filter(|v| !v.is_null());
        let (criteria, depends_on, changed) = match (&row.kind[..], new_criteria) {
            ("static", Some(_)) => {
                return Err(Error::from(ServiceError::invalid(
                    "criteria",
                    "a static segment has no criteria",
                ))
                .into());
            }
            ("dynamic", Some(json)) => {
                let catalog = store::attributes::catalog(&mut tx, c.tenant).await?;
                let segments = TenantSegments::load(&mut tx, c.tenant, &catalog).await?;
                let (parsed, deps) =
                    segments_ops::validate_criteria(&json, id, &catalog, &segments)?;
                let canonical = parsed.to_json();
                let changed = row.criteria.as_ref().map(|c| &c.0) != Some(&canonical);
                (Some(canonical), deps, changed)
            }
            _ => (
                row.criteria.as_ref().map(|c| c.0.clone()),
                row.depends_on.clone(),
                false,
            ),
        };
        store::segments::update(
            &mut tx,
            c.tenant,
            id,
            &store::segments::SegmentChange {
                name: &name,
                description: &description,
                criteria: criteria.as_ref(),
                depends_on: &depends_on,
                refresh_interval_secs: interval,
                criteria_changed: changed,
            },
        )
        .await?;
        if changed {
            store::segments::refresh_dependents_now(&mut tx, c.tenant, id).await?;
        }
        let row = if changed {
            // New definition, new baseline (no events for the switch itself).
            segments_ops::refresh(&mut tx, c.tenant, id, None, false)
                .await?
                .map(|(r, _, _)| r)
        } else {
            store::segments::get(&mut tx, c.tenant, id, false).await?
        }
        .ok_or_else(|| not_found("segment"))?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(segment_pb(row)))
    }

    async fn delete_segment(
        &self,
        req: Request<pb::DeleteSegmentRequest>,
    ) -> Result<Response<pb::DeleteSegmentResponse>, Status> {
        let c = caller(&req)?;
        let id = parse_uuid("segment_id", &req.get_ref().segment_id)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        store::segments::get(&mut tx, c.tenant, id, true)
            .await?
            .ok_or_else(|| not_found("segment"))?;
        let users = store::segments::referenced_by(&mut tx, c.tenant, id).await?;
        if !users.is_empty() {
            return Err(Error::from(ServiceError::failed_precondition(format!(
                "segment is used by the criteria of: {}; change those first",
                users.join(", ")
            )))
            .into());
        }
        store::segments::soft_delete(&mut tx, c.tenant, id).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::DeleteSegmentResponse {}))
    }

    async fn refresh_segment(
        &self,
        req: Request<pb::RefreshSegmentRequest>,
    ) -> Result<Response<pb::RefreshSegmentResponse>, Status> {
        let c = caller(&req)?;
        let id = parse_uuid("segment_id", &req.get_ref().segment_id)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let row = store::segments::get(&mut tx, c.tenant, id, false)
            .await?
            .ok_or_else(|| not_found("segment"))?;
        if row.kind != "dynamic" {
            return Err(Error::from(ServiceError::failed_precondition("only dynamic segments are refreshed; a static segment's members change when you add or remove them")).into());
        }
        let (row, entered, exited) = segments_ops::refresh(&mut tx, c.tenant, id, None, true)
            .await?
            .ok_or_else(|| not_found("segment"))?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::RefreshSegmentResponse {
            segment: Some(segment_pb(row)),
            entered: entered as i64,
            exited: exited as i64,
        }))
    }

    async fn list_segment_members(
        &self,
        req: Request<pb::ListSegmentMembersRequest>,
    ) -> Result<Response<pb::ListSegmentMembersResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = parse_uuid("segment_id", &r.segment_id)?;
        let limit = page_size(r.page_size, 50)?;
        let after = page_token(&r.page_token)?;
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        store::segments::get(&mut tx, c.tenant, id, false)
            .await?
            .ok_or_else(|| not_found("segment"))?;
        let rows = store::segments::members_page(&mut tx, c.tenant, id, after, limit + 1).await?;
        tx.commit().await.map_err(Error::from)?;
        let (rows, next_page_token) = page(rows, limit, |r| r.id.to_string());
        Ok(Response::new(pb::ListSegmentMembersResponse {
            next_page_token,
            members: rows.iter().map(contact_pb).collect(),
        }))
    }

    async fn add_segment_members(
        &self,
        req: Request<pb::ChangeSegmentMembersRequest>,
    ) -> Result<Response<pb::ChangeSegmentMembersResponse>, Status> {
        self.change_members(req, true).await
    }

    async fn remove_segment_members(
        &self,
        req: Request<pb::ChangeSegmentMembersRequest>,
    ) -> Result<Response<pb::ChangeSegmentMembersResponse>, Status> {
        self.change_members(req, false).await
    }

    async fn preview_segment(
        &self,
        req: Request<pb::PreviewSegmentRequest>,
    ) -> Result<Response<pb::PreviewSegmentResponse>, Status> {
        let c = caller(&req)?;
        let json = req
            .get_ref()
            .criteria
            .as_ref()
            .map(to_json)
            .filter(|v| !v.is_null());
        let Some(json) = json else {
            return Err(Error::from(ServiceError::invalid("criteria", "is required")).into());
        };
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let catalog = store::attributes::catalog(&mut tx, c.tenant).await?;
        let segments = TenantSegments::load(&mut tx, c.tenant, &catalog).await?;
        let parsed = crate::domain::criteria::parse(&json, &catalog, &Default::default())
            .map_err(segments_ops::criteria_errors)?;
        let compiled = crate::domain::criteria::compile(&parsed, &segments.refs, Utc::now(), 2)
            .map_err(segments_ops::criteria_errors)?;
        let (count, sample) =
            store::segments::preview(&mut tx, c.tenant, &compiled, PREVIEW_SAMPLE).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::PreviewSegmentResponse {
            count,
            sample: sample.iter().map(contact_pb).collect(),
        }))
    }

    type StreamMembersStream = Stream_<pb::MemberBatch>;

    async fn stream_members(
        &self,
        req: Request<pb::StreamMembersRequest>,
    ) -> Result<Response<Self::StreamMembersStream>, Status> {
        let c = caller(&req)?;
        self.members_stream(c.tenant, req.into_inner()).await
    }

    type StreamAudienceStream = Stream_<pb::MemberBatch>;

    async fn stream_audience(
        &self,
        req: Request<pb::StreamMembersRequest>,
    ) -> Result<Response<Self::StreamAudienceStream>, Status> {
        let tenant = service_tenant(&req)?;
        self.members_stream(tenant, req.into_inner()).await
    }

    async fn record_unsubscribe(
        &self,
        req: Request<pb::RecordUnsubscribeRequest>,
    ) -> Result<Response<pb::RecordUnsubscribeResponse>, Status> {
        let tenant = service_tenant(&req)?;
        let r = req.into_inner();
        let id = parse_uuid("contact_id", &r.contact_id)?;
        let channel = Channel::parse(r.channel.trim()).ok_or_else(|| {
            Error::from(ServiceError::invalid(
                "channel",
                "must be email, sms or push",
            ))
        })?;
        let source = match r.source.trim() {
            "" => "unsubscribe_link".to_owned(),
            s if s.chars().count() <= crate::domain::contact::MAX_CONSENT_SOURCE_CHARS => {
                s.to_owned()
            }
            _ => {
                return Err(Error::from(ServiceError::invalid(
                    "source",
                    "must be at most 100 characters",
                ))
                .into());
            }
        };
        let patch = Patch {
            consent: vec![ConsentInput {
                channel,
                state: ConsentState::Unsubscribed,
                source,
                at: None,
            }],
            ..Patch::default()
        };
        // No plan gate: an existing contact only changes consent, and an unsubscribe must work
        // whatever state billing (or the plan) is in.
        let mut tx = self.0.db.tenant_tx(tenant).await.map_err(Error::from)?;
        let catalog = store::attributes::catalog(&mut tx, tenant).await?;
        let mut out = ops::write_batch(
            &mut tx,
            tenant,
            &catalog,
            vec![Item {
                line: 0,
                patch,
                target: Target::Existing(id, None),
            }],
            &ops::Options {
                skip_existing: false,
                contact_limit: None,
            },
            Utc::now(),
        )
        .await?;
        tx.commit().await.map_err(Error::from)?;
        let changed = match out.pop().unwrap_or(Outcome::NotFound) {
            Outcome::Updated(_) => true,
            Outcome::Unchanged(_) => false,
            Outcome::NotFound => return Err(not_found("contact").into()),
            Outcome::Created(_)
            | Outcome::Rejected(_)
            | Outcome::VersionConflict(_)
            | Outcome::OverLimit(..) => {
                return Err(
                    Error::Internal("unexpected outcome of a consent change".into()).into(),
                );
            }
        };
        Ok(Response::new(pb::RecordUnsubscribeResponse { changed }))
    }
}

impl SegmentationGrpc {
    /// Every member of a segment of `tenant` as a stream (StreamMembers for users, StreamAudience
    /// for campaigns' fan-out with a service credential).
    async fn members_stream(
        &self,
        tenant: Uuid,
        r: pb::StreamMembersRequest,
    ) -> Result<Response<Stream_<pb::MemberBatch>>, Status> {
        let c = Caller {
            tenant,
            user: Uuid::nil(),
            bearer: None,
            request_id: String::new(),
        };
        let id = parse_uuid("segment_id", &r.segment_id)?;
        let batch = match r.batch_size {
            0 => 1000,
            n if (1..=5000).contains(&n) => i64::from(n),
            _ => {
                return Err(Error::from(ServiceError::invalid(
                    "batch_size",
                    "must be between 1 and 5000",
                ))
                .into());
            }
        };
        let after = match r.after_contact_id.trim() {
            "" => None,
            s => Some(parse_uuid("after_contact_id", s)?),
        };
        let attributes = match (r.omit_attributes, r.attribute_keys.is_empty()) {
            (false, true) => export::AttributeSelection::All,
            (true, true) => export::AttributeSelection::Only(Default::default()),
            (true, false) => {
                return Err(Error::from(ServiceError::invalid(
                    "attribute_keys",
                    "must be empty when omit_attributes is set",
                ))
                .into());
            }
            (false, false) => {
                if r.attribute_keys.len() > 100
                    || r.attribute_keys
                        .iter()
                        .any(|k| k.is_empty() || k.len() > 64)
                {
                    return Err(Error::from(ServiceError::invalid(
                        "attribute_keys",
                        "at most 100 keys of 1 to 64 characters",
                    ))
                    .into());
                }
                export::AttributeSelection::Only(r.attribute_keys.into_iter().collect())
            }
        };
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        store::segments::get(&mut tx, c.tenant, id, false)
            .await?
            .ok_or_else(|| not_found("segment"))?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(Box::pin(export::stream_members(
            self.0.db.clone(),
            c.tenant,
            id,
            after,
            batch,
            export::MemberFormat {
                attributes,
                as_json: r.attributes_as_json,
            },
        ))))
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "name",
            "must be 1 to 200 characters without control characters",
        )
        .into());
    }
    Ok(())
}

fn check_description(d: &str) -> Result<()> {
    if d.chars().count() > 2000 {
        return Err(ServiceError::invalid("description", "must be at most 2000 characters").into());
    }
    Ok(())
}

impl SegmentationGrpc {
    async fn change_members(
        &self,
        req: Request<pb::ChangeSegmentMembersRequest>,
        add: bool,
    ) -> Result<Response<pb::ChangeSegmentMembersResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = parse_uuid("segment_id", &r.segment_id)?;
        if r.contact_ids.is_empty() || r.contact_ids.len() > MAX_MEMBER_IDS {
            return Err(Error::from(ServiceError::invalid(
                "contact_ids",
                format!("must hold 1 to {MAX_MEMBER_IDS} ids"),
            ))
            .into());
        }
        let mut ids = Vec::with_capacity(r.contact_ids.len());
        for (i, raw) in r.contact_ids.iter().enumerate() {
            ids.push(parse_uuid(&format!("contact_ids[{i}]"), raw)?);
        }
        ids.sort();
        ids.dedup();
        if add {
            self.0
                .plan
                .ensure_can_write(c.tenant, c.bearer.as_deref())
                .await?;
        }
        let mut tx = self.0.db.tenant_tx(c.tenant).await.map_err(Error::from)?;
        let seg = store::segments::get(&mut tx, c.tenant, id, true)
            .await?
            .ok_or_else(|| not_found("segment"))?;
        if seg.kind != "static" {
            return Err(Error::from(ServiceError::failed_precondition("members of a dynamic segment follow its criteria; only static segments take members by hand")).into());
        }
        let changed = if add {
            let existing = store::segments::existing_contacts(&mut tx, c.tenant, &ids).await?;
            if existing.len() != ids.len() {
                let missing: Vec<String> = ids
                    .iter()
                    .filter(|i| !existing.contains(i))
                    .take(10)
                    .map(Uuid::to_string)
                    .collect();
                return Err(Error::from(
                    ServiceError::not_found(format!("contact(s) {}", missing.join(", ")))
                        .with_violation(
                            "contact_ids",
                            "contain ids that are not contacts of this workspace",
                        ),
                )
                .into());
            }
            let added = store::segments::add_members(&mut tx, c.tenant, id, &ids).await?;
            events::membership(&mut tx, c.tenant, id, &added, &[]).await?;
            added
        } else {
            let removed = store::segments::remove_members(&mut tx, c.tenant, id, &ids).await?;
            events::membership(&mut tx, c.tenant, id, &[], &removed).await?;
            removed
        };
        // Segments whose criteria use this one (in_segment) re-evaluate these contacts.
        store::mark_dirty(&mut tx, c.tenant, &changed).await?;
        let size = store::segments::get(&mut tx, c.tenant, id, false)
            .await?
            .map_or(0, |s| s.member_count);
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::ChangeSegmentMembersResponse {
            changed: changed.len() as i64,
            size,
        }))
    }
}
