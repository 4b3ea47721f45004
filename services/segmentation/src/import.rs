//! CSV import jobs: validation and queueing (API), and the worker that runs them in batches.
//!
//! Each batch (rows, counters, rejections, events) commits in one transaction, so a crash loses
//! nothing and repeats nothing: the replica that takes over a silent job re-parses the file and
//! skips the rows already counted. Re-running the same file matches every row to the contact it
//! created the first time and finds nothing to change.

use std::collections::BTreeMap;
use std::io::Cursor;

use chrono::Utc;
use cos_errors::{FieldViolation, ServiceError};
use cos_proto::segmentation::v1 as pb;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::import::ImportParser;
use crate::domain::state::Patch;
use crate::error::{Error, Result};
use crate::events;
use crate::grpc::{SegmentationApi, import_pb, parse_uuid};
use crate::ops::{self, Item, MatchOn, Outcome, Target};
use crate::store::{self, imports::Progress};

/// Rows written per transaction.
pub const BATCH: usize = 1000;

pub async fn create(
    api: &SegmentationApi,
    tenant: Uuid,
    user: Uuid,
    bearer: Option<&str>,
    r: pb::CreateImportRequest,
) -> Result<pb::ImportJob> {
    let file_name = r.file_name.trim();
    let file_name = if file_name.is_empty() {
        "contacts.csv"
    } else {
        file_name
    };
    if file_name.chars().count() > 255 || file_name.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "file_name",
            "must be at most 255 characters without control characters",
        )
        .into());
    }
    if r.content.is_empty() {
        return Err(ServiceError::invalid("file", "is empty").into());
    }
    if r.content.len() > api.config.import_max_bytes {
        return Err(ServiceError::new(
            cos_errors::ErrorCode::PayloadTooLarge,
            format!(
                "the file is larger than {} bytes",
                api.config.import_max_bytes
            ),
        )
        .into());
    }
    let static_segment = match r.static_segment_id.trim() {
        "" => None,
        s => Some(parse_uuid("static_segment_id", s)?),
    };
    let gate = api.plan.contact_gate(tenant, bearer).await?;
    if let Some(e) = gate.no_create.clone() {
        return Err(e.into());
    }
    let mapping: BTreeMap<String, String> = r.mapping.into_iter().collect();
    let mut tx = api.db.tenant_tx(tenant).await?;
    if let Some(s) = static_segment {
        let seg = store::segments::get(&mut tx, tenant, s, false)
            .await?
            .ok_or_else(|| {
                ServiceError::not_found("segment")
                    .with_violation("static_segment_id", "is not a segment of this workspace")
            })?;
        if seg.kind != "static" {
            return Err(ServiceError::invalid(
                "static_segment_id",
                "must be a static segment (a dynamic one follows its criteria)",
            )
            .into());
        }
    }
    let catalog = store::attributes::catalog(&mut tx, tenant).await?;
    // Header and mapping problems are reported now, not after the job starts.
    let parser = ImportParser::new(
        Cursor::new(&r.content[..]),
        (!mapping.is_empty()).then_some(&mapping),
        &catalog,
    )
    .map_err(import_error)?;
    let unknown = parser.unknown_columns().to_vec();
    // What each column was mapped to (given or inferred), as the job reports it.
    let resolved: BTreeMap<String, String> = parser
        .mapping()
        .mapped()
        .map(|(header, target)| (header.to_owned(), target.to_string()))
        .collect();
    drop(parser);
    let id = Uuid::now_v7();
    let sha = Sha256::digest(&r.content);
    let row = store::imports::create(
        &mut tx,
        tenant,
        &store::imports::NewImport {
            id,
            file_name,
            file_sha256: &sha.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            content: &r.content,
            mapping: json!(resolved),
            options: json!({
                "static_segment_id": static_segment.map(|s| s.to_string()),
                "skip_existing": r.skip_existing,
                "unknown_columns": unknown,
                "plan": gate.plan,
            }),
            contact_limit: gate.limit,
            created_by: user,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(import = %id, bytes = r.content.len(), "contact import queued");
    Ok(import_pb(row))
}

fn import_error(e: crate::domain::import::ImportError) -> Error {
    let violations: Vec<FieldViolation> = e
        .violations()
        .iter()
        .map(|v| FieldViolation {
            field: v.field.clone(),
            message: v.message.clone(),
        })
        .collect();
    if violations.is_empty() {
        ServiceError::invalid("file", e.to_string()).into()
    } else {
        ServiceError::invalid_fields(violations).into()
    }
}

/// Runs one claimed job to its end (or until it is cancelled).
pub async fn run_job(api: &SegmentationApi, tenant: Uuid, job: Uuid) -> Result<()> {
    let mut tx = api.db.tenant_tx(tenant).await?;
    let Some(row) = store::imports::get(&mut tx, tenant, job, false).await? else {
        return Ok(());
    };
    let content = store::imports::file(&mut tx, tenant, job).await?;
    let catalog = store::attributes::catalog(&mut tx, tenant).await?;
    tx.commit().await?;
    let Some(content) = content else {
        let mut tx = api.db.tenant_tx(tenant).await?;
        store::imports::finish(
            &mut tx,
            tenant,
            job,
            "failed",
            Some("the uploaded file is gone"),
        )
        .await?;
        tx.commit().await?;
        return Ok(());
    };
    let mapping: BTreeMap<String, String> = row
        .mapping
        .0
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let opts = &row.options.0;
    let skip_existing = opts["skip_existing"].as_bool().unwrap_or(false);
    let static_segment = opts["static_segment_id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok());
    let mut plan_name = opts["plan"].as_str().unwrap_or("current").to_owned();
    // The plan may have changed while the job waited (an upgrade, or a lapse into read-only):
    // the limit is read again now. If billing can't answer, the limit checked when the job was
    // queued still applies.
    let contact_limit = match api.plan.contact_gate(tenant, None).await {
        Ok(gate) => {
            if gate.limit != row.contact_limit {
                tracing::info!(import = %job, queued = ?row.contact_limit, now = ?gate.limit,
                    "the contact limit changed since the import was queued");
            }
            plan_name = gate.plan;
            gate.limit
        }
        Err(e) => {
            tracing::warn!(import = %job, error = %e,
                "billing did not answer; using the contact limit of queue time");
            row.contact_limit
        }
    };
    let mut parser = match ImportParser::new(
        Cursor::new(&content[..]),
        (!mapping.is_empty()).then_some(&mapping),
        &catalog,
    ) {
        Ok(p) => p,
        Err(e) => {
            let mut tx = api.db.tenant_tx(tenant).await?;
            store::imports::finish(&mut tx, tenant, job, "failed", Some(&e.to_string())).await?;
            tx.commit().await?;
            return Ok(());
        }
    };
    // Rows already committed by an earlier attempt.
    let mut skip = row.rows_read;
    let mut file_error = None;
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        let mut parse_rejections = Vec::new();
        let mut read = 0i64;
        while batch.len() + parse_rejections.len() < BATCH {
            match parser.next_row() {
                None => break,
                Some(Err(e)) => {
                    file_error = Some(e.to_string());
                    break;
                }
                Some(Ok(parsed)) => {
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    read += 1;
                    let line = parsed.line as i64;
                    match parsed.outcome {
                        Ok(valid) => batch.push(Item {
                            line,
                            patch: Patch::from_import(&valid),
                            target: Target::Match(MatchOn::Any),
                        }),
                        Err(reason) => parse_rejections.push((line, reason)),
                    }
                }
            }
        }
        if read == 0 {
            break;
        }
        let go_on = write_import_batch(
            api,
            tenant,
            job,
            &catalog,
            batch,
            parse_rejections,
            read,
            skip_existing,
            contact_limit,
            &plan_name,
            static_segment,
        )
        .await?;
        if !go_on {
            tracing::info!(import = %job, "import cancelled");
            return Ok(());
        }
        if file_error.is_some() {
            break;
        }
    }
    let mut tx = api.db.tenant_tx(tenant).await?;
    match &file_error {
        Some(e) => store::imports::finish(&mut tx, tenant, job, "failed", Some(e)).await?,
        None => store::imports::finish(&mut tx, tenant, job, "completed", None).await?,
    }
    let done = store::imports::get(&mut tx, tenant, job, false).await?;
    tx.commit().await?;
    if let Some(d) = done {
        tracing::info!(import = %job, status = %d.status, read = d.rows_read, imported = d.rows_imported,
            updated = d.rows_updated, unchanged = d.rows_unchanged, rejected = d.rows_rejected,
            over_limit = d.rows_over_limit, "contact import finished");
        metrics::counter!("cos_segmentation_import_rows_total", "outcome" => "imported")
            .increment(d.rows_imported as u64);
        metrics::counter!("cos_segmentation_import_rows_total", "outcome" => "rejected")
            .increment(d.rows_rejected as u64);
    }
    Ok(())
}

fn reason(violations: &[crate::domain::contact::FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect::<Vec<_>>()
        .join("; ")
}

#[allow(clippy::too_many_arguments)]
async fn write_import_batch(
    api: &SegmentationApi,
    tenant: Uuid,
    job: Uuid,
    catalog: &crate::domain::attributes::AttributeCatalog,
    items: Vec<Item>,
    parse_rejections: Vec<(i64, String)>,
    read: i64,
    skip_existing: bool,
    contact_limit: Option<i64>,
    plan: &str,
    static_segment: Option<Uuid>,
) -> Result<bool> {
    let opts = ops::Options {
        skip_existing,
        contact_limit,
    };
    let lines: Vec<i64> = items.iter().map(|i| i.line).collect();
    let mut tx = api.db.tenant_tx(tenant).await?;
    let now = Utc::now();
    // A batch statement fails as a whole if a concurrent writer took an identifier; then the
    // batch is redone row by row (savepoints), so only the clashing row is rejected.
    let outcomes = {
        let mut sp = sqlx::Connection::begin(&mut *tx).await?;
        match ops::write_batch(&mut sp, tenant, catalog, clone_items(&items), &opts, now).await {
            Ok(o) => {
                sp.commit().await?;
                o
            }
            Err(Error::Client(e)) if e.code == cos_errors::ErrorCode::AlreadyExists => {
                sp.rollback().await?;
                let mut out = Vec::with_capacity(items.len());
                for it in &items {
                    let mut sp = sqlx::Connection::begin(&mut *tx).await?;
                    match ops::write_batch(
                        &mut sp,
                        tenant,
                        catalog,
                        clone_items(std::slice::from_ref(it)),
                        &opts,
                        now,
                    )
                    .await
                    {
                        Ok(mut o) => {
                            sp.commit().await?;
                            out.push(o.pop().unwrap_or(Outcome::NotFound));
                        }
                        Err(Error::Client(e)) => {
                            sp.rollback().await?;
                            out.push(Outcome::Rejected(vec![
                                crate::domain::contact::FieldViolation {
                                    field: e
                                        .violations
                                        .first()
                                        .map(|v| v.field.clone())
                                        .unwrap_or_else(|| "email".into()),
                                    message: e.message.clone(),
                                },
                            ]));
                        }
                        Err(other) => return Err(other),
                    }
                }
                out
            }
            Err(other) => return Err(other),
        }
    };
    let mut p = Progress {
        read,
        rejected: parse_rejections.len() as i64,
        ..Progress::default()
    };
    let mut rejections = parse_rejections;
    let mut members = Vec::new();
    for (line, outcome) in lines.iter().zip(&outcomes) {
        if let Some(id) = outcome.contact_id() {
            members.push(id);
        }
        match outcome {
            Outcome::Created(_) => p.imported += 1,
            Outcome::Updated(_) => p.updated += 1,
            Outcome::Unchanged(_) => p.unchanged += 1,
            Outcome::Rejected(v) => {
                p.rejected += 1;
                rejections.push((*line, reason(v)));
            }
            Outcome::OverLimit(limit, _) => {
                p.over_limit += 1;
                rejections.push((*line, format!("not imported: the {plan} plan allows {limit} contacts and that limit is reached")));
            }
            Outcome::NotFound | Outcome::VersionConflict(_) => {
                p.rejected += 1;
                rejections.push((
                    *line,
                    "the matching contact changed during the import; run the import again".into(),
                ));
            }
        }
    }
    if let Some(seg) = static_segment
        && store::segments::get(&mut tx, tenant, seg, true)
            .await?
            .is_some()
    {
        let added = store::segments::add_members(&mut tx, tenant, seg, &members).await?;
        events::membership(&mut tx, tenant, seg, &added, &[]).await?;
        store::mark_dirty(&mut tx, tenant, &added).await?;
    }
    if !store::imports::record_batch(&mut tx, tenant, job, &p, &rejections).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

fn clone_items(items: &[Item]) -> Vec<Item> {
    items
        .iter()
        .map(|i| Item {
            line: i.line,
            patch: i.patch.clone(),
            target: i.target,
        })
        .collect()
}
