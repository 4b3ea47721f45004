//! A contact's full stored state, how a partial change (API patch, import row) merges into it,
//! and which fields a change touched. Pure: the store turns rows into `ContactState` and back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::attributes::{AttributeCatalog, Channel, ConsentState};
use super::contact::{ConsentInput, ContactInput, FieldViolation, ValidContact, validate};

/// Consent of one channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsentSlot {
    pub state: ConsentState,
    pub at: Option<DateTime<Utc>>,
    pub source: String,
}

/// Everything stored about a contact that a client can change.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContactState {
    pub email: Option<String>,
    pub email_normalized: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub locale: String,
    pub time_zone: String,
    pub attributes: Map<String, Value>,
    pub tags: Vec<String>,
    pub email_consent: ConsentSlot,
    pub sms_consent: ConsentSlot,
    pub push_consent: ConsentSlot,
    pub last_activity_at: Option<DateTime<Utc>>,
}

impl ContactState {
    pub fn consent(&self, channel: Channel) -> &ConsentSlot {
        match channel {
            Channel::Email => &self.email_consent,
            Channel::Sms => &self.sms_consent,
            Channel::Push => &self.push_consent,
        }
    }

    fn consent_mut(&mut self, channel: Channel) -> &mut ConsentSlot {
        match channel {
            Channel::Email => &mut self.email_consent,
            Channel::Sms => &mut self.sms_consent,
            Channel::Push => &mut self.push_consent,
        }
    }

    /// Names of the fields that differ (consent counts when its state changes).
    pub fn changed_fields(&self, before: &ContactState) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.email != before.email {
            out.push("email");
        }
        if self.phone != before.phone {
            out.push("phone");
        }
        if self.external_id != before.external_id {
            out.push("external_id");
        }
        if self.first_name != before.first_name {
            out.push("first_name");
        }
        if self.last_name != before.last_name {
            out.push("last_name");
        }
        if self.locale != before.locale {
            out.push("locale");
        }
        if self.time_zone != before.time_zone {
            out.push("time_zone");
        }
        if self.attributes != before.attributes {
            out.push("attributes");
        }
        if self.tags != before.tags {
            out.push("tags");
        }
        for (channel, name) in [
            (Channel::Email, "consent.email"),
            (Channel::Sms, "consent.sms"),
            (Channel::Push, "consent.push"),
        ] {
            let (a, b) = (self.consent(channel), before.consent(channel));
            if a.state != b.state {
                out.push(name);
            }
        }
        if self.last_activity_at != before.last_activity_at {
            out.push("last_activity_at");
        }
        out
    }

    /// Channels whose consent state differs: (channel, before, after).
    pub fn consent_changes(
        &self,
        before: &ContactState,
    ) -> Vec<(Channel, ConsentState, ConsentState)> {
        Channel::ALL
            .into_iter()
            .filter_map(|c| {
                let (b, a) = (before.consent(c).state, self.consent(c).state);
                (a != b).then_some((c, b, a))
            })
            .collect()
    }
}

/// How a change treats tags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagsChange {
    /// Replace all tags with these.
    pub replace: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

/// A partial change. `Some("")` clears an optional field; `None` leaves it alone. Attribute
/// values of `Value::Null` remove that attribute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
    pub attributes: BTreeMap<String, Value>,
    pub tags: TagsChange,
    pub consent: Vec<ConsentInput>,
    pub last_activity_at: Option<DateTime<Utc>>,
}

impl Patch {
    /// The change an import row makes: what the row has overwrites, attributes merge, tags are
    /// added (never removed), consent columns apply.
    pub fn from_import(row: &ValidContact) -> Self {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            email: row.email.clone(),
            phone: row.phone.clone(),
            external_id: row.external_id.clone(),
            first_name: non_empty(&row.first_name),
            last_name: non_empty(&row.last_name),
            locale: non_empty(&row.locale),
            time_zone: non_empty(&row.time_zone),
            attributes: row
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tags: TagsChange {
                replace: None,
                add: row.tags.clone(),
                remove: Vec::new(),
            },
            consent: row.consent.clone(),
            last_activity_at: row.last_activity_at,
        }
    }
}

fn pick(patch: &Option<String>, base: Option<&str>) -> Option<String> {
    match patch {
        Some(v) if v.trim().is_empty() => None,
        Some(v) => Some(v.clone()),
        None => base.map(str::to_owned),
    }
}

/// Applies `patch` to `base` (None: a new contact) and validates the result as a whole, so a
/// change can never leave a contact that a create would have refused. Consent changes whose
/// time is not given are stamped with `now`.
pub fn apply(
    base: Option<&ContactState>,
    patch: &Patch,
    catalog: &AttributeCatalog,
    now: DateTime<Utc>,
) -> Result<ContactState, Vec<FieldViolation>> {
    let empty = ContactState::default();
    let b = base.unwrap_or(&empty);
    fn non_empty(s: &str) -> Option<&str> {
        (!s.is_empty()).then_some(s)
    }
    let mut attributes: BTreeMap<String, Value> = b
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in &patch.attributes {
        if v.is_null() {
            attributes.remove(k);
        } else {
            attributes.insert(k.clone(), v.clone());
        }
    }
    let mut tags: Vec<String> = match &patch.tags.replace {
        Some(replace) => replace.clone(),
        None => b.tags.clone(),
    };
    tags.extend(patch.tags.add.iter().cloned());
    let removed: Vec<String> = patch
        .tags
        .remove
        .iter()
        .map(|t| t.trim().to_lowercase())
        .collect();
    tags.retain(|t| !removed.contains(&t.trim().to_lowercase()));
    let input = ContactInput {
        email: pick(&patch.email, b.email.as_deref()),
        phone: pick(&patch.phone, b.phone.as_deref()),
        external_id: pick(&patch.external_id, b.external_id.as_deref()),
        first_name: pick(&patch.first_name, non_empty(&b.first_name)),
        last_name: pick(&patch.last_name, non_empty(&b.last_name)),
        locale: pick(&patch.locale, non_empty(&b.locale)),
        time_zone: pick(&patch.time_zone, non_empty(&b.time_zone)),
        attributes,
        tags,
        consent: patch.consent.clone(),
        last_activity_at: patch.last_activity_at.or(b.last_activity_at),
    };
    let valid = validate(&input, catalog)?;
    let mut state = ContactState {
        email: valid.email,
        email_normalized: valid.email_normalized,
        phone: valid.phone,
        external_id: valid.external_id,
        first_name: valid.first_name,
        last_name: valid.last_name,
        locale: valid.locale,
        time_zone: valid.time_zone,
        attributes: valid.attributes,
        tags: valid.tags,
        email_consent: b.email_consent.clone(),
        sms_consent: b.sms_consent.clone(),
        push_consent: b.push_consent.clone(),
        last_activity_at: valid.last_activity_at,
    };
    for c in &valid.consent {
        let slot = state.consent_mut(c.channel);
        // The same state again (e.g. a re-import) keeps when and where it was first recorded.
        if slot.state != c.state {
            *slot = ConsentSlot {
                state: c.state,
                at: Some(c.at.unwrap_or(now)),
                source: c.source.clone(),
            };
        }
    }
    Ok(state)
}
