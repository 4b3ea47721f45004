//! In-memory evaluation of [`Criteria`] against one contact, with the same meaning as the SQL
//! from [`super::compile`] (a property test checks them against each other on PostgreSQL).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::decimal::Decimal;
use super::{
    BoolOp, Bound, Criteria, DateOp, ListOp, ListSubject, MAX_COMPILED_NODES, MAX_SEGMENT_NESTING,
    Node, NumberOp, SegmentRef, SegmentResolver, Test, TextField, TextOp, TextSubject, TimeField,
    TimeOp, fold, format_date, is_date_shaped, to_micros,
};
use crate::domain::attributes::{Channel, ConsentState};

/// What the evaluator needs of a contact (the columns the SQL reads).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalContact {
    pub id: Uuid,
    /// Trimmed, lower-cased email (the `email_normalized` column).
    pub email_normalized: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub locale: String,
    pub time_zone: String,
    pub attributes: Map<String, Value>,
    pub tags: Vec<String>,
    /// A channel not in the map is `unknown`.
    pub consent: BTreeMap<Channel, ConsentState>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_activity_at: Option<DateTime<Utc>>,
}

/// Static segment membership (the `segmentation.segment_members` rows).
pub trait Membership {
    fn is_static_member(&self, segment: Uuid, contact: Uuid) -> bool;
}

/// `(segment, contact)` pairs.
impl Membership for HashSet<(Uuid, Uuid)> {
    fn is_static_member(&self, segment: Uuid, contact: Uuid) -> bool {
        self.contains(&(segment, contact))
    }
}

impl Membership for BTreeSet<(Uuid, Uuid)> {
    fn is_static_member(&self, segment: Uuid, contact: Uuid) -> bool {
        self.contains(&(segment, contact))
    }
}

/// Whether `contact` matches. Meant for criteria that [`super::compile`] accepts with the same
/// resolver; if evaluation meets a reference compile would refuse (unknown segment, cycle, too
/// deep or too large), the contact does not match.
pub fn evaluate(
    criteria: &Criteria,
    contact: &EvalContact,
    resolver: &dyn SegmentResolver,
    members: &dyn Membership,
    now: DateTime<Utc>,
) -> bool {
    let mut e = Evaluator {
        contact,
        resolver,
        members,
        now: to_micros(now),
        stack: Vec::new(),
        nodes: criteria.node_count(),
        invalid: false,
    };
    let matched = e.node(&criteria.root);
    matched && !e.invalid
}

struct Evaluator<'a> {
    contact: &'a EvalContact,
    resolver: &'a dyn SegmentResolver,
    members: &'a dyn Membership,
    now: DateTime<Utc>,
    stack: Vec<Uuid>,
    nodes: usize,
    /// Met a reference that does not resolve (or a cycle, or a budget overrun).
    invalid: bool,
}

fn in_range(t: DateTime<Utc>, lo: Bound, hi: Bound) -> bool {
    let lo_ok = match lo {
        Bound::At { t: b, inclusive } => t > b || (inclusive && t == b),
        Bound::Always => true,
        Bound::Never => false,
    };
    let hi_ok = match hi {
        Bound::At { t: b, inclusive } => t < b || (inclusive && t == b),
        Bound::Always => true,
        Bound::Never => false,
    };
    lo_ok && hi_ok
}

impl Evaluator<'_> {
    fn node(&mut self, node: &Node) -> bool {
        match node {
            Node::All(xs) => xs.iter().all(|x| self.node(x)),
            Node::Any(xs) => xs.iter().any(|x| self.node(x)),
            Node::Not(x) => !self.node(x),
            Node::Cond(c) => self.test(&c.test) != c.negated,
        }
    }

    fn attr(&self, key: &str) -> Option<&Value> {
        self.contact.attributes.get(key)
    }

    fn test(&mut self, test: &Test) -> bool {
        match test {
            Test::Text {
                subject,
                op,
                ignore_case,
            } => self.text(subject, op, *ignore_case),
            Test::Number { key, op } => {
                let Some(Value::Number(n)) = self.attr(key) else {
                    return false;
                };
                let x = Decimal::of(n);
                match op {
                    NumberOp::Eq(v) => x == Decimal::of(v),
                    NumberOp::In(vs) => vs.iter().any(|v| x == Decimal::of(v)),
                    NumberOp::Cmp(cmp, v) => cmp.holds(x.cmp(&Decimal::of(v))),
                    NumberOp::Between(lo, hi) => Decimal::of(lo) <= x && x <= Decimal::of(hi),
                    NumberOp::Exists => true,
                }
            }
            Test::Bool { key, op } => match (self.attr(key), op) {
                (Some(Value::Bool(b)), BoolOp::Eq(v)) => b == v,
                (Some(Value::Bool(_)), BoolOp::Exists) => true,
                _ => false,
            },
            Test::Date { key, op } => {
                let Some(Value::String(s)) = self.attr(key) else {
                    return false;
                };
                if let DateOp::Eq(d) = op {
                    return *s == format_date(*d);
                }
                if !is_date_shaped(s) {
                    return false;
                }
                let s = s.as_str();
                match op {
                    DateOp::In(ds) => ds.iter().any(|d| s == format_date(*d)),
                    DateOp::Cmp(cmp, d) => cmp.holds(s.cmp(format_date(*d).as_str())),
                    DateOp::Between(lo, hi) => {
                        format_date(*lo).as_str() <= s && s <= format_date(*hi).as_str()
                    }
                    DateOp::WithinLast(rel) => {
                        let (start, end) = rel.window(self.now);
                        format_date(start.date_naive()).as_str() <= s
                            && s <= format_date(end.date_naive()).as_str()
                    }
                    DateOp::Exists => true,
                    DateOp::Eq(_) => unreachable!("handled above"),
                }
            }
            Test::Time { field, op } => {
                let c = self.contact;
                let value = match field {
                    TimeField::Created => Some(c.created_at),
                    TimeField::Updated => Some(c.updated_at),
                    TimeField::LastActivity => c.last_activity_at,
                };
                let Some(t) = value.map(to_micros) else {
                    return false;
                };
                match op {
                    TimeOp::Exists => true,
                    _ => {
                        let (lo, hi) = op.range(self.now).expect("not exists");
                        in_range(t, lo, hi)
                    }
                }
            }
            Test::List {
                subject,
                op,
                ignore_case,
            } => {
                let elements: Vec<&str> = match subject {
                    ListSubject::Tags => self.contact.tags.iter().map(String::as_str).collect(),
                    ListSubject::Attr(key) => match self.attr(key) {
                        Some(Value::Array(items)) => {
                            if *op == ListOp::Exists {
                                return !items.is_empty();
                            }
                            items.iter().filter_map(Value::as_str).collect()
                        }
                        _ => return false,
                    },
                };
                let wanted: Vec<&String> = match op {
                    ListOp::Has(v) => vec![v],
                    ListOp::In(vs) => vs.iter().collect(),
                    ListOp::Exists => return !elements.is_empty(),
                };
                if *ignore_case {
                    let wanted: Vec<String> = wanted.iter().map(|v| fold(v)).collect();
                    elements.iter().any(|e| wanted.contains(&fold(e)))
                } else {
                    elements.iter().any(|e| wanted.iter().any(|w| w == e))
                }
            }
            Test::Consent { channel, state } => {
                self.contact
                    .consent
                    .get(channel)
                    .copied()
                    .unwrap_or_default()
                    == *state
            }
            Test::InSegment(id) => self.in_segment(*id),
        }
    }

    fn text(&self, subject: &TextSubject, op: &TextOp, ignore_case: bool) -> bool {
        let c = self.contact;
        let value: Option<&str> = match subject {
            TextSubject::Field(f) => match f {
                TextField::Email => c.email_normalized.as_deref(),
                TextField::Phone => c.phone.as_deref(),
                TextField::ExternalId => c.external_id.as_deref(),
                TextField::FirstName => Some(&c.first_name),
                TextField::LastName => Some(&c.last_name),
                TextField::Locale => Some(&c.locale),
                TextField::TimeZone => Some(&c.time_zone),
            },
            TextSubject::Attr(key) => self.attr(key).and_then(Value::as_str),
        };
        let Some(x) = value.filter(|s| !s.is_empty()) else {
            return false;
        };
        let fold_case = ignore_case && *subject != TextSubject::Field(TextField::Email);
        let norm = |s: &str| if fold_case { fold(s) } else { s.to_owned() };
        let x = norm(x);
        match op {
            TextOp::Eq(v) => x == norm(v),
            TextOp::In(vs) => vs.iter().any(|v| x == norm(v)),
            TextOp::Contains(v) => x.contains(&norm(v)),
            TextOp::StartsWith(v) => x.starts_with(&norm(v)),
            TextOp::EndsWith(v) => x.ends_with(&norm(v)),
            TextOp::Exists => true,
        }
    }

    fn in_segment(&mut self, id: Uuid) -> bool {
        match self.resolver.resolve(id) {
            None => {
                self.invalid = true;
                false
            }
            Some(SegmentRef::Static) => self.members.is_static_member(id, self.contact.id),
            Some(SegmentRef::Dynamic(criteria)) => {
                self.nodes += criteria.node_count();
                if self.stack.contains(&id)
                    || self.stack.len() >= MAX_SEGMENT_NESTING
                    || self.nodes > MAX_COMPILED_NODES
                {
                    self.invalid = true;
                    return false;
                }
                self.stack.push(id);
                let result = self.node(&criteria.root);
                self.stack.pop();
                result
            }
        }
    }
}
