//! The contact write pipeline shared by the API (create, upsert, update) and CSV import: match
//! each change to an existing contact, merge and validate, enforce the plan's contact limit,
//! write the batch in two statements, and emit events and membership work in the same
//! transaction.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use cos_errors::FieldViolation as ApiViolation;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::attributes::AttributeCatalog;
use crate::domain::contact::FieldViolation;
use crate::domain::state::{ContactState, Patch, apply};
use crate::error::Result;
use crate::events;
use crate::store::{self, contacts::ContactRow};

/// Which contact a change is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Always a new contact (create).
    New,
    /// This contact, optionally only at this version (update).
    Existing(Uuid, Option<i64>),
    /// Found by identifiers; created when none matches (upsert, import).
    Match(MatchOn),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOn {
    Email,
    ExternalId,
    /// Email, external id or phone (import): all of them must point at the same contact.
    Any,
}

pub struct Item {
    /// Caller's reference (CSV line number, or 0).
    pub line: i64,
    pub patch: Patch,
    pub target: Target,
}

#[derive(Debug)]
pub enum Outcome {
    Created(Box<ContactRow>),
    Updated(Box<ContactRow>),
    Unchanged(Box<ContactRow>),
    Rejected(Vec<FieldViolation>),
    NotFound,
    VersionConflict(i64),
    /// Refused because the plan's contact limit is reached: (limit, live contacts).
    OverLimit(i64, i64),
}

impl Outcome {
    pub fn contact_id(&self) -> Option<Uuid> {
        match self {
            Outcome::Created(r) | Outcome::Updated(r) | Outcome::Unchanged(r) => Some(r.id),
            _ => None,
        }
    }
}

pub struct Options {
    /// Leave matched contacts as they are (import option).
    pub skip_existing: bool,
    /// The plan's contact limit (None: unlimited).
    pub contact_limit: Option<i64>,
}

fn violation(field: &str, message: impl Into<String>) -> Vec<FieldViolation> {
    vec![FieldViolation {
        field: field.to_owned(),
        message: message.into(),
    }]
}

pub fn to_api(v: Vec<FieldViolation>, prefix: &str) -> Vec<ApiViolation> {
    v.into_iter()
        .map(|v| ApiViolation {
            field: if prefix.is_empty() {
                v.field
            } else {
                format!("{prefix}.{}", v.field)
            },
            message: v.message,
        })
        .collect()
}

fn normalize_email(e: &str) -> String {
    e.trim().to_lowercase()
}

/// Writes a batch of changes in the caller's (tenant) transaction. Outcomes are in item order.
/// An identifier taken by a concurrent writer fails the statement: the caller may retry.
pub async fn write_batch(
    conn: &mut PgConnection,
    tenant: Uuid,
    catalog: &AttributeCatalog,
    items: Vec<Item>,
    opts: &Options,
    now: DateTime<Utc>,
) -> Result<Vec<Outcome>> {
    // 1. Existing contacts the batch refers to, locked.
    let mut emails = Vec::new();
    let mut external_ids = Vec::new();
    let mut phones = Vec::new();
    let mut ids = Vec::new();
    for it in &items {
        match it.target {
            Target::Existing(id, _) => ids.push(id),
            Target::Match(on) => {
                let p = &it.patch;
                if matches!(on, MatchOn::Email | MatchOn::Any) {
                    emails.extend(p.email.as_deref().map(normalize_email));
                }
                if matches!(on, MatchOn::ExternalId | MatchOn::Any) {
                    external_ids.extend(p.external_id.as_deref().map(|x| x.trim().to_owned()));
                }
                if on == MatchOn::Any {
                    phones.extend(p.phone.as_deref().map(|x| x.trim().to_owned()));
                }
            }
            Target::New => {}
        }
    }
    let mut existing: HashMap<Uuid, ContactRow> = HashMap::new();
    if !emails.is_empty() || !external_ids.is_empty() || !phones.is_empty() {
        for row in
            store::contacts::find_by_identifiers(conn, tenant, &emails, &external_ids, &phones)
                .await?
        {
            existing.insert(row.id, row);
        }
    }
    for id in ids {
        if let std::collections::hash_map::Entry::Vacant(e) = existing.entry(id)
            && let Some(row) = store::contacts::get(conn, tenant, id, true).await?
        {
            e.insert(row);
        }
    }
    let by_email: HashMap<&str, Uuid> = existing
        .values()
        .filter_map(|r| r.email_normalized.as_deref().map(|e| (e, r.id)))
        .collect();
    let by_external: HashMap<&str, Uuid> = existing
        .values()
        .filter_map(|r| r.external_id.as_deref().map(|e| (e, r.id)))
        .collect();
    let by_phone: HashMap<&str, Uuid> = existing
        .values()
        .filter_map(|r| r.phone.as_deref().map(|e| (e, r.id)))
        .collect();

    // 2. Decide each item.
    enum Plan {
        Create(ContactState),
        Update(Uuid, ContactState, Option<i64>),
    }
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(items.len());
    let mut plans: Vec<(usize, Plan)> = Vec::new();
    let mut touched: HashMap<Uuid, i64> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        let matched: Result<Option<Uuid>, Vec<FieldViolation>> = match it.target {
            Target::New => Ok(None),
            Target::Existing(id, _) => {
                if existing.contains_key(&id) {
                    Ok(Some(id))
                } else {
                    outcomes.push(Some(Outcome::NotFound));
                    continue;
                }
            }
            Target::Match(on) => {
                let p = &it.patch;
                let mut found: Vec<(&'static str, Uuid)> = Vec::new();
                if matches!(on, MatchOn::Email | MatchOn::Any)
                    && let Some(id) = p
                        .email
                        .as_deref()
                        .and_then(|e| by_email.get(normalize_email(e).as_str()))
                {
                    found.push(("email", *id));
                }
                if matches!(on, MatchOn::ExternalId | MatchOn::Any)
                    && let Some(id) = p
                        .external_id
                        .as_deref()
                        .and_then(|x| by_external.get(x.trim()))
                {
                    found.push(("external_id", *id));
                }
                if on == MatchOn::Any
                    && let Some(id) = p.phone.as_deref().and_then(|x| by_phone.get(x.trim()))
                {
                    found.push(("phone", *id));
                }
                let distinct: BTreeSet<Uuid> = found.iter().map(|(_, id)| *id).collect();
                if distinct.len() > 1 {
                    let detail = found
                        .iter()
                        .map(|(f, id)| format!("{f} → contact {id}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    Err(violation(
                        found[0].0,
                        format!("identifiers belong to different existing contacts ({detail})"),
                    ))
                } else {
                    Ok(distinct.into_iter().next())
                }
            }
        };
        let matched = match matched {
            Ok(m) => m,
            Err(v) => {
                outcomes.push(Some(Outcome::Rejected(v)));
                continue;
            }
        };
        if let Some(id) = matched {
            if let Some(line) = touched.get(&id) {
                outcomes.push(Some(Outcome::Rejected(violation(
                    "email",
                    format!("matches the same contact as line {line}"),
                ))));
                continue;
            }
            touched.insert(id, it.line);
            let row = &existing[&id];
            if opts.skip_existing {
                outcomes.push(Some(Outcome::Unchanged(Box::new(row.clone()))));
                continue;
            }
            let expected = match it.target {
                Target::Existing(_, v) => v,
                _ => None,
            };
            if let Some(v) = expected
                && v != row.version
            {
                outcomes.push(Some(Outcome::VersionConflict(row.version)));
                continue;
            }
            let before = row.state();
            match apply(Some(&before), &it.patch, catalog, now) {
                Ok(after) if after.changed_fields(&before).is_empty() => {
                    outcomes.push(Some(Outcome::Unchanged(Box::new(row.clone()))));
                }
                Ok(after) => {
                    plans.push((i, Plan::Update(id, after, expected)));
                    outcomes.push(None);
                }
                Err(v) => outcomes.push(Some(Outcome::Rejected(v))),
            }
        } else {
            match apply(None, &it.patch, catalog, now) {
                Ok(state) => {
                    plans.push((i, Plan::Create(state)));
                    outcomes.push(None);
                }
                Err(v) => outcomes.push(Some(Outcome::Rejected(v))),
            }
        }
    }

    // 3. The contact limit: new contacts beyond it are refused.
    let creates = plans
        .iter()
        .filter(|(_, p)| matches!(p, Plan::Create(_)))
        .count() as i64;
    let mut allowed = i64::MAX;
    let mut live = 0;
    if creates > 0 {
        live = store::contacts::lock_live_count(conn, tenant).await?;
        if let Some(limit) = opts.contact_limit {
            allowed = (limit - live).max(0);
        }
    }
    let mut to_insert: Vec<(usize, Uuid, ContactState)> = Vec::new();
    let mut to_update: Vec<(usize, Uuid, ContactState, Option<i64>)> = Vec::new();
    for (i, plan) in plans {
        match plan {
            Plan::Create(state) => {
                if (to_insert.len() as i64) < allowed {
                    to_insert.push((i, Uuid::now_v7(), state));
                } else {
                    outcomes[i] = Some(Outcome::OverLimit(
                        opts.contact_limit.unwrap_or(0),
                        live + to_insert.len() as i64,
                    ));
                }
            }
            Plan::Update(id, state, v) => to_update.push((i, id, state, v)),
        }
    }

    // 4. Write.
    let inserted = store::contacts::insert_many(
        conn,
        tenant,
        &to_insert
            .iter()
            .map(|(_, id, s)| (*id, s))
            .collect::<Vec<_>>(),
    )
    .await?;
    store::contacts::add_live_count(conn, tenant, inserted.len() as i64).await?;
    let updated = store::contacts::update_many(
        conn,
        tenant,
        &to_update
            .iter()
            .map(|(_, id, s, v)| (*id, s, *v))
            .collect::<Vec<_>>(),
    )
    .await?;
    let mut inserted: HashMap<Uuid, ContactRow> = inserted.into_iter().map(|r| (r.id, r)).collect();
    let mut updated: HashMap<Uuid, ContactRow> = updated.into_iter().map(|r| (r.id, r)).collect();

    // 5. Events and membership work.
    let mut created_events = Vec::new();
    let mut updated_events = Vec::new();
    let mut consent_events = Vec::new();
    let mut dirty = Vec::new();
    for (i, id, state) in to_insert {
        let Some(row) = inserted.remove(&id) else {
            continue;
        };
        created_events.push(events::contact_changed(id, "created", row.version, &[]));
        let unknown = ContactState::default();
        for (channel, before, after) in state.consent_changes(&unknown) {
            consent_events.push(events::consent_changed(
                id,
                channel,
                before,
                after,
                &state.consent(channel).source,
            ));
        }
        dirty.push(id);
        outcomes[i] = Some(Outcome::Created(Box::new(row)));
    }
    for (i, id, state, _) in to_update {
        let Some(row) = updated.remove(&id) else {
            // Only a version mismatch can skip a locked live row.
            outcomes[i] = Some(Outcome::VersionConflict(existing[&id].version));
            continue;
        };
        let before = existing[&id].state();
        let fields = state.changed_fields(&before);
        updated_events.push(events::contact_changed(id, "updated", row.version, &fields));
        for (channel, b, a) in state.consent_changes(&before) {
            consent_events.push(events::consent_changed(
                id,
                channel,
                b,
                a,
                &state.consent(channel).source,
            ));
        }
        dirty.push(id);
        outcomes[i] = Some(Outcome::Updated(Box::new(row)));
    }
    events::emit(conn, tenant, events::CONTACT_CREATED, &created_events).await?;
    events::emit(conn, tenant, events::CONTACT_UPDATED, &updated_events).await?;
    events::emit(conn, tenant, events::CONSENT_CHANGED, &consent_events).await?;
    store::mark_dirty(conn, tenant, &dirty).await?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::NotFound))
        .collect())
}
