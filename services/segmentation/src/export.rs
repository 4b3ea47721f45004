//! Streaming reads: contact export (CSV / JSON Lines) and segment member streaming for campaign
//! fan-out. Export pages through the data with a keyset cursor, one short transaction per page;
//! member streaming reads one server-side cursor in one transaction. Both hand batches to a
//! bounded channel: memory stays flat whatever the size, and a slow client slows the producer
//! instead of buffering.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use cos_db::Db;
use cos_proto::segmentation::v1 as pb;
use futures::Stream;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use uuid::Uuid;

use crate::convert::{from_json, map_to_struct};
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
    /// `attributes::text`: passed through untouched when the client wants JSON.
    attributes: String,
}

/// How long a member stream waits for the client to take the next batch before giving up. The
/// stream holds a database connection and a snapshot; a client that stops reading must not hold
/// them forever. It can resume with `after_contact_id`.
const STREAM_STALL: Duration = Duration::from_secs(60);

/// Which attributes each member carries.
#[derive(Debug, Clone, Default)]
pub enum AttributeSelection {
    #[default]
    All,
    Only(HashSet<String>),
}

/// How each member's attributes are sent.
#[derive(Debug, Clone, Default)]
pub struct MemberFormat {
    pub attributes: AttributeSelection,
    /// As a JSON object in `attributes_json` rather than a `Struct`.
    pub as_json: bool,
}

fn member(mut r: MemberRow, format: &MemberFormat) -> Result<pb::Member, Error> {
    let stored = std::mem::take(&mut r.attributes);
    let id = r.id;
    let parse = |text: &str| {
        serde_json::from_str::<Map<String, Value>>(text).map_err(|e| {
            Error::Internal(format!(
                "contact {id}: stored attributes are not a JSON object: {e}"
            ))
        })
    };
    let (attributes, attributes_json) = match (&format.attributes, format.as_json) {
        // The stored text goes out as it is: no parse, no re-encode.
        (AttributeSelection::All, true) => (None, stored.into_bytes()),
        (AttributeSelection::All, false) => (Some(map_to_struct(&parse(&stored)?)), vec![]),
        // omit_attributes: the statement did not even read them.
        (AttributeSelection::Only(keys), true) if keys.is_empty() => (None, b"{}".to_vec()),
        (AttributeSelection::Only(keys), false) if keys.is_empty() => {
            (Some(prost_types::Struct::default()), vec![])
        }
        (AttributeSelection::Only(keys), as_json) => {
            let mut m = parse(&stored)?;
            m.retain(|k, _| keys.contains(k));
            if as_json {
                (None, Value::Object(m).to_string().into_bytes())
            } else {
                let fields = m.into_iter().map(|(k, v)| (k, from_json(&v))).collect();
                (Some(prost_types::Struct { fields }), vec![])
            }
        }
    };
    Ok(pb::Member {
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
        attributes,
        attributes_json,
    })
}

/// Streams a segment's members in contact-id order, `batch` per message.
///
/// One read-only tenant transaction and one server-side cursor per stream: the whole stream is
/// the membership as of its start (one snapshot, however long fan-out takes), PostgreSQL runs
/// the join once instead of once per page, and each `FETCH` is a batch. The bounded channel
/// makes a slow client slow the cursor down instead of buffering; a client that stops reading
/// for `STREAM_STALL` ends the stream (and frees the connection).
pub fn stream_members(
    db: Db,
    tenant: Uuid,
    segment: Uuid,
    after: Option<Uuid>,
    batch: i64,
    format: MemberFormat,
) -> impl Stream<Item = Result<pb::MemberBatch, Status>> + Send + 'static {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut streamed = 0u64;
        let outcome = async {
            let mut conn = db.tenant_tx(tenant).await?;
            sqlx::query("SET TRANSACTION READ ONLY")
                .execute(&mut *conn)
                .await?;
            if store::segments::get(&mut conn, tenant, segment, false)
                .await?
                .is_none()
            {
                return Ok::<_, Error>(Some(Status::not_found("the segment was deleted")));
            }
            // One of two fixed texts: nothing from the request is spliced in.
            let attributes_column = match &format.attributes {
                AttributeSelection::Only(keys) if keys.is_empty() => "'{}'::text",
                _ => "c.attributes::text",
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DECLARE segment_members_stream NO SCROLL CURSOR FOR
                 SELECT c.id, c.email, c.phone, c.first_name, c.last_name, c.locale, c.time_zone,
                        c.email_consent, c.sms_consent, c.push_consent,
                        {attributes_column} AS attributes
                 FROM segmentation.segment_members m
                 JOIN segmentation.contacts c ON c.tenant_id = m.tenant_id AND c.id = m.contact_id
                 WHERE m.tenant_id = $1 AND m.segment_id = $2 AND m.contact_id > $3
                   AND c.deleted_at IS NULL
                 ORDER BY m.contact_id"
            )))
            .bind(tenant)
            .bind(segment)
            .bind(after.unwrap_or(Uuid::nil()))
            .execute(&mut *conn)
            .await?;
            // `batch` is validated to 1..=5000 by the caller; FETCH takes no parameters.
            let fetch = format!("FETCH FORWARD {batch} FROM segment_members_stream");
            loop {
                let rows = sqlx::query_as::<_, MemberRow>(sqlx::AssertSqlSafe(fetch.clone()))
                    .fetch_all(&mut *conn)
                    .await?;
                let done = (rows.len() as i64) < batch;
                if !rows.is_empty() {
                    streamed += rows.len() as u64;
                    let members = rows
                        .into_iter()
                        .map(|r| member(r, &format))
                        .collect::<Result<Vec<_>, Error>>()?;
                    match tokio::time::timeout(
                        STREAM_STALL,
                        tx.send(Ok(pb::MemberBatch { members })),
                    )
                    .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => {
                            tracing::info!(%tenant, %segment, streamed, "member stream abandoned by the client");
                            return Ok(None);
                        }
                        Err(_) => {
                            tracing::warn!(%tenant, %segment, streamed, "member stream stalled: the client stopped reading");
                            return Ok(Some(Status::deadline_exceeded(format!(
                                "the client took no batch for {} s; resume with after_contact_id",
                                STREAM_STALL.as_secs()
                            ))));
                        }
                    }
                }
                if done {
                    conn.commit().await?;
                    tracing::info!(%tenant, %segment, streamed, elapsed_ms = started.elapsed().as_millis() as u64, "member stream finished");
                    return Ok(None);
                }
            }
        }
        .await;
        match outcome {
            Ok(None) => {}
            Ok(Some(status)) => {
                let _ = tx.send(Err(status)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, %tenant, %segment, streamed, "member stream failed");
                let _ = tx.send(Err(self::status(e))).await;
            }
        }
    });
    ReceiverStream::new(rx)
}
