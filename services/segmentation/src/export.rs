//! Streaming reads: contact export (CSV / JSON Lines) and segment member streaming for campaign
//! fan-out. Both page through the data with a keyset cursor, one short transaction per page, and
//! hand pages to a bounded channel: memory stays flat whatever the size, and a slow client slows
//! the producer instead of buffering.

use chrono::{DateTime, SecondsFormat, Utc};
use cos_db::Db;
use cos_proto::segmentation::v1 as pb;
use futures::Stream;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use uuid::Uuid;

use crate::convert::map_to_struct;
use crate::error::Error;
use crate::store::{self, contacts::ContactRow};

const EXPORT_PAGE: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

fn status(e: Error) -> Status {
    e.into()
}

/// Spreadsheet formula injection: a free-text cell that starts like a formula is prefixed with
/// an apostrophe (OWASP's advice), so opening the export in Excel can't run anything.
fn safe_cell(s: &str) -> std::borrow::Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}").into(),
        _ => s.into(),
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn attribute_cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => safe_cell(s).into_owned(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|s| safe_cell(s).into_owned())
            .collect::<Vec<_>>()
            .join(";"),
        Some(other) => other.to_string(),
    }
}

fn csv_header(attributes: &[String]) -> Vec<String> {
    let mut h: Vec<String> = [
        "id",
        "email",
        "phone",
        "external_id",
        "first_name",
        "last_name",
        "locale",
        "time_zone",
        "tags",
        "email_consent",
        "sms_consent",
        "push_consent",
        "created_at",
        "updated_at",
        "last_activity_at",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    h.extend(attributes.iter().map(|k| format!("attributes.{k}")));
    h
}

fn csv_row(r: &ContactRow, attributes: &[String]) -> Vec<String> {
    let mut row = vec![
        r.id.to_string(),
        r.email.clone().unwrap_or_default(),
        r.phone.clone().unwrap_or_default(),
        safe_cell(r.external_id.as_deref().unwrap_or_default()).into_owned(),
        safe_cell(&r.first_name).into_owned(),
        safe_cell(&r.last_name).into_owned(),
        r.locale.clone(),
        r.time_zone.clone(),
        r.tags
            .iter()
            .map(|t| safe_cell(t).into_owned())
            .collect::<Vec<_>>()
            .join(";"),
        r.email_consent.clone(),
        r.sms_consent.clone(),
        r.push_consent.clone(),
        time(Some(r.created_at)),
        time(Some(r.updated_at)),
        time(r.last_activity_at),
    ];
    row.extend(
        attributes
            .iter()
            .map(|k| attribute_cell(r.attributes.0.get(k))),
    );
    row
}

fn json_line(r: &ContactRow) -> Value {
    let consent: Map<String, Value> = [
        ("email", &r.email_consent),
        ("sms", &r.sms_consent),
        ("push", &r.push_consent),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Value::String(v.clone())))
    .collect();
    serde_json::json!({
        "id": r.id,
        "email": r.email,
        "phone": r.phone,
        "external_id": r.external_id,
        "first_name": r.first_name,
        "last_name": r.last_name,
        "locale": r.locale,
        "time_zone": r.time_zone,
        "attributes": r.attributes.0,
        "tags": r.tags,
        "consent": consent,
        "created_at": time(Some(r.created_at)),
        "updated_at": time(Some(r.updated_at)),
        "last_activity_at": r.last_activity_at.map(|t| time(Some(t))),
    })
}

async fn export_page(
    db: &Db,
    tenant: Uuid,
    segment: Option<Uuid>,
    after: Option<Uuid>,
) -> Result<Vec<ContactRow>, Error> {
    let mut tx = db.tenant_tx(tenant).await?;
    let rows = match segment {
        Some(s) => store::segments::members_page(&mut tx, tenant, s, after, EXPORT_PAGE).await?,
        None => {
            store::contacts::list(
                &mut tx,
                tenant,
                &store::contacts::ListFilter::default(),
                after,
                EXPORT_PAGE,
            )
            .await?
        }
    };
    tx.commit().await?;
    Ok(rows)
}

/// Streams every live contact (or one segment's members) as export chunks.
pub fn spawn(
    db: Db,
    tenant: Uuid,
    segment: Option<Uuid>,
    format: Format,
    attributes: Vec<String>,
) -> impl Stream<Item = Result<pb::ExportChunk, Status>> + Send + 'static {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut after = None;
        let mut first = true;
        let mut exported = 0u64;
        loop {
            let rows = match export_page(&db, tenant, segment, after).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, %tenant, "contact export failed mid-stream");
                    let _ = tx.send(Err(status(e))).await;
                    return;
                }
            };
            let mut data = Vec::with_capacity(rows.len() * 200);
            match format {
                Format::Csv => {
                    let mut w = csv::WriterBuilder::new().from_writer(&mut data);
                    let mut ok = true;
                    if first {
                        ok &= w.write_record(csv_header(&attributes)).is_ok();
                    }
                    for r in &rows {
                        ok &= w.write_record(csv_row(r, &attributes)).is_ok();
                    }
                    ok &= w.flush().is_ok();
                    drop(w);
                    if !ok {
                        let _ = tx
                            .send(Err(Status::internal("export encoding failed")))
                            .await;
                        return;
                    }
                }
                Format::JsonLines => {
                    for r in &rows {
                        data.extend_from_slice(json_line(r).to_string().as_bytes());
                        data.push(b'\n');
                    }
                }
            }
            first = false;
            exported += rows.len() as u64;
            let last = rows.last().map(|r| r.id);
            let done = (rows.len() as i64) < EXPORT_PAGE;
            if !data.is_empty() && tx.send(Ok(pb::ExportChunk { data })).await.is_err() {
                tracing::info!(%tenant, exported, "export abandoned by the client");
                return;
            }
            if done {
                tracing::info!(%tenant, exported, "contact export finished");
                return;
            }
            after = last;
        }
    });
    ReceiverStream::new(rx)
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    id: Uuid,
    email: Option<String>,
    phone: Option<String>,
    first_name: String,
    last_name: String,
    locale: String,
    time_zone: String,
    email_consent: String,
    sms_consent: String,
    push_consent: String,
    attributes: sqlx::types::Json<Map<String, Value>>,
}

async fn member_page(
    db: &Db,
    tenant: Uuid,
    segment: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Option<Vec<MemberRow>>, Error> {
    let mut tx = db.tenant_tx(tenant).await?;
    // The segment may be deleted mid-stream: stop rather than stream a dead list.
    if store::segments::get(&mut tx, tenant, segment, false)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let rows = sqlx::query_as::<_, MemberRow>(
        "SELECT c.id, c.email, c.phone, c.first_name, c.last_name, c.locale, c.time_zone,
                c.email_consent, c.sms_consent, c.push_consent, c.attributes
         FROM segmentation.segment_members m
         JOIN segmentation.contacts c ON c.tenant_id = m.tenant_id AND c.id = m.contact_id
         WHERE m.tenant_id = $1 AND m.segment_id = $2 AND ($3::uuid IS NULL OR m.contact_id > $3)
           AND c.deleted_at IS NULL
         ORDER BY m.contact_id LIMIT $4",
    )
    .bind(tenant)
    .bind(segment)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(rows))
}

/// Streams a segment's members in contact-id order, `batch` per message.
pub fn stream_members(
    db: Db,
    tenant: Uuid,
    segment: Uuid,
    mut after: Option<Uuid>,
    batch: i64,
) -> impl Stream<Item = Result<pb::MemberBatch, Status>> + Send + 'static {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        loop {
            let rows = match member_page(&db, tenant, segment, after, batch).await {
                Ok(Some(rows)) => rows,
                Ok(None) => {
                    let _ = tx
                        .send(Err(Status::not_found("the segment was deleted")))
                        .await;
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, %tenant, %segment, "member stream failed");
                    let _ = tx.send(Err(status(e))).await;
                    return;
                }
            };
            let done = (rows.len() as i64) < batch;
            after = rows.last().map(|r| r.id).or(after);
            if !rows.is_empty() {
                let members = rows
                    .into_iter()
                    .map(|r| pb::Member {
                        contact_id: r.id.to_string(),
                        email: r.email.unwrap_or_default(),
                        phone: r.phone.unwrap_or_default(),
                        first_name: r.first_name,
                        last_name: r.last_name,
                        locale: r.locale,
                        time_zone: r.time_zone,
                        email_consent: r.email_consent,
                        sms_consent: r.sms_consent,
                        push_consent: r.push_consent,
                        attributes: Some(map_to_struct(&r.attributes.0)),
                    })
                    .collect();
                if tx.send(Ok(pb::MemberBatch { members })).await.is_err() {
                    return;
                }
            }
            if done {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
