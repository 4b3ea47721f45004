//! The segment criteria language: a JSON tree of conditions over a contact, validated against the
//! tenant's attribute catalog ([`parse`]), compiled to one parameterised PostgreSQL boolean
//! expression over the alias `c` (= `segmentation.contacts`) ([`compile`]), and evaluated in
//! memory with exactly the same meaning ([`evaluate`]). Pure: no I/O.
//!
//! # Shape
//!
//! ```json
//! {"all": [
//!   {"field": "attributes.plan", "op": "in", "value": ["pro", "team"]},
//!   {"any": [
//!     {"op": "has_tag", "value": "vip"},
//!     {"field": "last_activity_at", "op": "within_last", "value": {"amount": 30, "unit": "days"}}
//!   ]},
//!   {"not": {"field": "email", "op": "consent", "value": "unsubscribed"}},
//!   {"op": "in_segment", "value": "0193c9b4-8a55-7c1e-9f43-5b1f0e2d6a10"}
//! ]}
//! ```
//!
//! A node is a group (`all`, `any`: lists of nodes; `not`: one node) or a condition with
//! `field`, `op`, `value` and, for string comparisons, an optional `"ignore_case": true`.
//! `{"all": []}` is true (everyone), `{"any": []}` is false. Errors carry a JSON path from
//! `criteria`, e.g. `criteria.all[2].any[0].value`; all errors found are reported.
//!
//! # Fields and operators
//!
//! | field | type | operators |
//! |---|---|---|
//! | `email` | text, compared on the normalised (trimmed, lower-cased) address | eq neq in not_in contains starts_with ends_with exists not_exists |
//! | `phone` `external_id` `first_name` `last_name` `locale` `time_zone`, `attributes.<string>` | text | same as email |
//! | `attributes.<number>` | number | eq neq in not_in gt gte lt lte between exists not_exists |
//! | `attributes.<boolean>` | boolean | eq neq exists not_exists |
//! | `attributes.<date>` | date (`YYYY-MM-DD`) | eq neq in not_in gt gte lt lte before after between within_last exists not_exists |
//! | `created_at` `updated_at` `last_activity_at` | timestamp | gt gte lt lte before after between within_last exists not_exists |
//! | `attributes.<string_list>` | list of strings | contains in not_in exists not_exists |
//! | `tags` (field may be omitted for has_tag), compared lower-cased as stored | list of strings | has_tag in not_in exists not_exists |
//! | `email` `sms` `push` | consent channel | consent (value: subscribed, unsubscribed, unknown) |
//! | (none, or `segment`) | another segment | in_segment (value: segment id) |
//!
//! # Semantics (the SQL and the evaluator agree on every one of these)
//!
//! | rule | meaning |
//! |---|---|
//! | two-valued logic | every condition is true or false, never NULL: a missing field fails every positive test |
//! | negations | `neq` = NOT `eq`, `not_in` = NOT `in`, `not_exists` = NOT `exists`, `not` = NOT child: a contact without the field matches `neq`, `not_in` and `not_exists` |
//! | missing text | NULL and `''` are both "missing"; string values in criteria must be non-empty (test for absence with `not_exists`) |
//! | wrong-typed attribute | a stored value whose JSON type does not fit the attribute's type counts as missing (a bad row never errors the query) |
//! | case | exact, by code point, except `email` and tags, whose values are trimmed and lower-cased (Unicode) like the stored ones; `"ignore_case": true` folds ASCII letters A–Z only, on both sides (collation-independent, same in SQL and Rust) |
//! | `contains` / `starts_with` / `ends_with` | substring / prefix / suffix, no wildcards (`%`, `_`, `\` are literal) |
//! | `in` on lists (tags, string_list) | the list has any of the values; `contains` / `has_tag`: has the value |
//! | `exists` | text non-empty; number/boolean of that JSON type; date a `YYYY-MM-DD` string; list non-empty; timestamps non-NULL |
//! | numbers | exact decimal comparison (PostgreSQL `numeric`): `1` = `1.0` |
//! | dates (attributes) | compared as `YYYY-MM-DD`; `between [a, b]` is inclusive; values may also be RFC 3339 (their UTC date) |
//! | timestamps | values are RFC 3339 (kept to microseconds) or `YYYY-MM-DD`, a whole UTC day: `after D` = from the next day on, `before D` = before D, `gte D` = from D on, `lte D` = up to the end of D, `between [D1, D2]` = D1 to the end of D2 |
//! | `within_last {amount, unit}` | `now - amount unit <= t <= now` (units minutes, hours, days, weeks, months; `now` is an argument, bound as a parameter); for date attributes the UTC dates of those bounds |
//! | `in_segment` | static segment: listed in `segment_members`; dynamic: its criteria hold (inlined, nesting at most [`MAX_SEGMENT_NESTING`] deep, no cycles) |
//!
//! Nothing from the criteria is spliced into SQL text: every value and attribute key is a bind
//! parameter; only column names from a fixed list, operators and constants are.

mod decimal;
mod eval;
mod parse;
mod sql;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Number, Value, json};
use uuid::Uuid;

use super::attributes::{Channel, ConsentState};

pub use eval::{EvalContact, Membership, evaluate};
pub use parse::parse;
pub use sql::{BindParams, CompiledSql, SqlParam, bind_params, compile};

/// How far dynamic segments may nest through `in_segment` when compiling or evaluating.
pub const MAX_SEGMENT_NESTING: usize = 8;
/// Most condition and group nodes one compiled expression may hold once referenced dynamic
/// segments are inlined.
pub const MAX_COMPILED_NODES: usize = 2000;

/// Size limits for a criteria tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting: a bare condition is depth 1, a condition inside `all` depth 2, ...
    pub max_depth: usize,
    /// Most nodes (groups and conditions).
    pub max_nodes: usize,
    /// Most values in one `in`/`not_in` list.
    pub max_list_values: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 8,
            max_nodes: 200,
            max_list_values: 1000,
        }
    }
}

/// One problem in a criteria tree, at a JSON path such as `criteria.all[2].value`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CriteriaError {
    pub path: String,
    pub message: String,
}

impl CriteriaError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for CriteriaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for CriteriaError {}

/// A validated criteria tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Criteria {
    pub(crate) root: Node,
}

impl Criteria {
    /// The canonical JSON form (what to store): parsing it again gives an equal `Criteria`.
    pub fn to_json(&self) -> Value {
        self.root.to_json()
    }

    /// Segments this criteria names through `in_segment` (directly, not through them).
    pub fn referenced_segments(&self) -> BTreeSet<Uuid> {
        let mut out = BTreeSet::new();
        self.root.visit(&mut |cond| {
            if let Test::InSegment(id) = cond.test {
                out.insert(id);
            }
        });
        out
    }

    /// Number of nodes (groups and conditions).
    pub fn node_count(&self) -> usize {
        self.root.count()
    }
}

impl serde::Serialize for Criteria {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// What an `in_segment` reference points at.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentRef {
    /// A dynamic segment: its criteria are inlined.
    Dynamic(Criteria),
    /// A static segment: membership is the rows of `segmentation.segment_members`.
    Static,
}

/// Looks up segments referenced by `in_segment` (live segments of the same tenant only; a
/// deleted or unknown one is `None`).
pub trait SegmentResolver {
    fn resolve(&self, id: Uuid) -> Option<SegmentRef>;
}

impl SegmentResolver for HashMap<Uuid, SegmentRef> {
    fn resolve(&self, id: Uuid) -> Option<SegmentRef> {
        self.get(&id).cloned()
    }
}

impl SegmentResolver for BTreeMap<Uuid, SegmentRef> {
    fn resolve(&self, id: Uuid) -> Option<SegmentRef> {
        self.get(&id).cloned()
    }
}

/// Refuses a reference cycle through `segment`: `refs` are the segments its new criteria
/// reference, `graph` maps every other segment of the tenant to the segments it references
/// (an entry for `segment` itself is ignored). The error names the cycle, `A -> B -> A`.
pub fn check_cycles(
    segment: Uuid,
    refs: &BTreeSet<Uuid>,
    graph: &HashMap<Uuid, BTreeSet<Uuid>>,
) -> Result<(), String> {
    // Depth-first search from each reference; a path back to `segment` is a cycle. Visited
    // nodes are not expanded twice, so a pre-existing cycle elsewhere cannot loop forever.
    let mut visited = BTreeSet::new();
    let mut path = vec![segment];
    fn dfs(
        segment: Uuid,
        node: Uuid,
        graph: &HashMap<Uuid, BTreeSet<Uuid>>,
        visited: &mut BTreeSet<Uuid>,
        path: &mut Vec<Uuid>,
    ) -> bool {
        path.push(node);
        if node == segment {
            return true;
        }
        if visited.insert(node)
            && let Some(next) = graph.get(&node)
        {
            for &n in next {
                if dfs(segment, n, graph, visited, path) {
                    return true;
                }
            }
        }
        path.pop();
        false
    }
    for &r in refs {
        if dfs(segment, r, graph, &mut visited, &mut path) {
            let names: Vec<String> = path.iter().map(Uuid::to_string).collect();
            return Err(format!("segment reference cycle: {}", names.join(" -> ")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The AST. Negative operators (neq, not_in, not_exists) are their positive test with
// `negated: true`, so the SQL compiler and the evaluator implement each test once.

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Cond(Cond),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cond {
    /// JSON path of this condition in the criteria it was parsed from.
    pub(crate) path: String,
    pub(crate) negated: bool,
    pub(crate) test: Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextField {
    Email,
    Phone,
    ExternalId,
    FirstName,
    LastName,
    Locale,
    TimeZone,
}

impl TextField {
    pub(crate) const ALL: [TextField; 7] = [
        Self::Email,
        Self::Phone,
        Self::ExternalId,
        Self::FirstName,
        Self::LastName,
        Self::Locale,
        Self::TimeZone,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::ExternalId => "external_id",
            Self::FirstName => "first_name",
            Self::LastName => "last_name",
            Self::Locale => "locale",
            Self::TimeZone => "time_zone",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeField {
    Created,
    Updated,
    LastActivity,
}

impl TimeField {
    pub(crate) const ALL: [TimeField; 3] = [Self::Created, Self::Updated, Self::LastActivity];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Created => "created_at",
            Self::Updated => "updated_at",
            Self::LastActivity => "last_activity_at",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TextSubject {
    Field(TextField),
    Attr(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListSubject {
    Tags,
    Attr(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TextOp {
    Eq(String),
    In(Vec<String>),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
    Before,
    After,
}

impl Cmp {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Gt => "gt",
            Self::Gte => "gte",
            Self::Lt => "lt",
            Self::Lte => "lte",
            Self::Before => "before",
            Self::After => "after",
        }
    }

    /// `before` is `lt`, `after` is `gt`.
    pub(crate) fn base(self) -> Cmp {
        match self {
            Self::Before => Self::Lt,
            Self::After => Self::Gt,
            other => other,
        }
    }

    pub(crate) fn sql(self) -> &'static str {
        match self.base() {
            Self::Gt => ">",
            Self::Gte => ">=",
            Self::Lt => "<",
            _ => "<=",
        }
    }

    pub(crate) fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self.base() {
            Self::Gt => ord == Greater,
            Self::Gte => ord != Less,
            Self::Lt => ord == Less,
            _ => ord != Greater,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NumberOp {
    Eq(Number),
    In(Vec<Number>),
    Cmp(Cmp, Number),
    Between(Number, Number),
    Exists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BoolOp {
    Eq(bool),
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
}

impl Unit {
    pub(crate) const ALL: [Unit; 5] = [
        Self::Minutes,
        Self::Hours,
        Self::Days,
        Self::Weeks,
        Self::Months,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Minutes => "minutes",
            Self::Hours => "hours",
            Self::Days => "days",
            Self::Weeks => "weeks",
            Self::Months => "months",
        }
    }

    /// Largest amount: about a century.
    pub(crate) fn max_amount(self) -> u32 {
        match self {
            Self::Minutes => 52_560_000,
            Self::Hours => 876_000,
            Self::Days => 36_500,
            Self::Weeks => 5_200,
            Self::Months => 1_200,
        }
    }
}

/// `within_last` amount and unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Relative {
    pub(crate) amount: u32,
    pub(crate) unit: Unit,
}

impl Relative {
    /// The inclusive window `[now - amount unit, now]` (both to the microsecond).
    pub(crate) fn window(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let now = to_micros(now);
        let n = i64::from(self.amount);
        let start = match self.unit {
            Unit::Minutes => now.checked_sub_signed(chrono::TimeDelta::minutes(n)),
            Unit::Hours => now.checked_sub_signed(chrono::TimeDelta::hours(n)),
            Unit::Days => now.checked_sub_signed(chrono::TimeDelta::days(n)),
            Unit::Weeks => now.checked_sub_signed(chrono::TimeDelta::weeks(n)),
            Unit::Months => now.checked_sub_months(chrono::Months::new(self.amount)),
        };
        (start.unwrap_or(DateTime::<Utc>::MIN_UTC), now)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DateOp {
    Eq(NaiveDate),
    In(Vec<NaiveDate>),
    Cmp(Cmp, NaiveDate),
    Between(NaiveDate, NaiveDate),
    WithinLast(Relative),
    Exists,
}

/// A timestamp bound as written: an instant, or a whole UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeValue {
    Instant(DateTime<Utc>),
    Day(NaiveDate),
}

impl TimeValue {
    fn start(self) -> DateTime<Utc> {
        match self {
            Self::Instant(t) => t,
            Self::Day(d) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
        }
    }

    fn end_exclusive(self) -> Option<DateTime<Utc>> {
        match self {
            Self::Instant(_) => None,
            Self::Day(d) => d
                .succ_opt()
                .map(|n| n.and_time(chrono::NaiveTime::MIN).and_utc()),
        }
    }

    /// As a lower bound `t >= x` (inclusive) or `t > x`.
    pub(crate) fn lower(self, inclusive: bool) -> Bound {
        match (self, inclusive) {
            (_, true) => Bound::incl(self.start()),
            (Self::Instant(t), false) => Bound::excl(t),
            (Self::Day(_), false) => match self.end_exclusive() {
                Some(t) => Bound::incl(t),
                None => Bound::Never,
            },
        }
    }

    /// As an upper bound `t <= x` (inclusive) or `t < x`.
    pub(crate) fn upper(self, inclusive: bool) -> Bound {
        match (self, inclusive) {
            (_, false) => Bound::excl(self.start()),
            (Self::Instant(t), true) => Bound::incl(t),
            (Self::Day(_), true) => match self.end_exclusive() {
                Some(t) => Bound::excl(t),
                None => Bound::Always,
            },
        }
    }

    fn to_json(self) -> Value {
        match self {
            Self::Instant(t) => {
                Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
            Self::Day(d) => Value::String(format_date(d)),
        }
    }
}

/// One side of a time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    At {
        t: DateTime<Utc>,
        inclusive: bool,
    },
    /// No constraint.
    Always,
    /// Nothing satisfies it.
    Never,
}

impl Bound {
    fn incl(t: DateTime<Utc>) -> Self {
        Self::At { t, inclusive: true }
    }
    fn excl(t: DateTime<Utc>) -> Self {
        Self::At {
            t,
            inclusive: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TimeOp {
    Cmp(Cmp, TimeValue),
    Between(TimeValue, TimeValue),
    WithinLast(Relative),
    Exists,
}

impl TimeOp {
    /// The range of timestamps that satisfy the test (`None` for `exists`).
    pub(crate) fn range(&self, now: DateTime<Utc>) -> Option<(Bound, Bound)> {
        Some(match *self {
            TimeOp::Cmp(cmp, v) => match cmp.base() {
                Cmp::Gt => (v.lower(false), Bound::Always),
                Cmp::Gte => (v.lower(true), Bound::Always),
                Cmp::Lt => (Bound::Always, v.upper(false)),
                _ => (Bound::Always, v.upper(true)),
            },
            TimeOp::Between(a, b) => (a.lower(true), b.upper(true)),
            TimeOp::WithinLast(rel) => {
                let (start, end) = rel.window(now);
                (Bound::incl(start), Bound::incl(end))
            }
            TimeOp::Exists => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListOp {
    /// `contains` (string_list) / `has_tag` (tags): the list has this element.
    Has(String),
    /// The list has any of these elements.
    In(Vec<String>),
    Exists,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Test {
    Text {
        subject: TextSubject,
        op: TextOp,
        ignore_case: bool,
    },
    Number {
        key: String,
        op: NumberOp,
    },
    Bool {
        key: String,
        op: BoolOp,
    },
    Date {
        key: String,
        op: DateOp,
    },
    Time {
        field: TimeField,
        op: TimeOp,
    },
    List {
        subject: ListSubject,
        op: ListOp,
        ignore_case: bool,
    },
    Consent {
        channel: Channel,
        state: ConsentState,
    },
    InSegment(Uuid),
}

/// Truncates to PostgreSQL's timestamp precision (microseconds), so bound parameters and
/// in-memory comparisons see the same instant.
pub(crate) fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(6)
}

pub(crate) fn format_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// Folds ASCII A–Z to lower case (PostgreSQL side: `translate(x, 'A..Z', 'a..z')`).
pub(crate) fn fold(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// Email and tag criteria values are compared with stored emails (`email_normalized`) and tags,
/// which are trimmed and lower-cased.
pub(crate) fn normalize_lower(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Whether a stored date attribute has the comparable `YYYY-MM-DD` shape (SQL: the regular
/// expression `^[0-9]{4}-[0-9]{2}-[0-9]{2}$`).
pub(crate) fn is_date_shaped(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

impl Node {
    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Cond)) {
        match self {
            Node::All(xs) | Node::Any(xs) => xs.iter().for_each(|x| x.visit(f)),
            Node::Not(x) => x.visit(f),
            Node::Cond(c) => f(c),
        }
    }

    fn count(&self) -> usize {
        match self {
            Node::All(xs) | Node::Any(xs) => 1 + xs.iter().map(Node::count).sum::<usize>(),
            Node::Not(x) => 1 + x.count(),
            Node::Cond(_) => 1,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Node::All(xs) => json!({"all": xs.iter().map(Node::to_json).collect::<Vec<_>>()}),
            Node::Any(xs) => json!({"any": xs.iter().map(Node::to_json).collect::<Vec<_>>()}),
            Node::Not(x) => json!({"not": x.to_json()}),
            Node::Cond(c) => c.to_json(),
        }
    }
}

fn strings(xs: &[String]) -> Value {
    Value::Array(xs.iter().cloned().map(Value::String).collect())
}

impl Cond {
    fn to_json(&self) -> Value {
        let neg = self.negated;
        let (field, op, value, ignore_case): (Option<String>, &str, Option<Value>, bool) =
            match &self.test {
                Test::Text {
                    subject,
                    op,
                    ignore_case,
                } => {
                    let field = match subject {
                        TextSubject::Field(f) => f.name().to_owned(),
                        TextSubject::Attr(k) => format!("attributes.{k}"),
                    };
                    let (name, value) = match op {
                        TextOp::Eq(v) => (if neg { "neq" } else { "eq" }, Some(json!(v))),
                        TextOp::In(vs) => (if neg { "not_in" } else { "in" }, Some(strings(vs))),
                        TextOp::Contains(v) => ("contains", Some(json!(v))),
                        TextOp::StartsWith(v) => ("starts_with", Some(json!(v))),
                        TextOp::EndsWith(v) => ("ends_with", Some(json!(v))),
                        TextOp::Exists => (if neg { "not_exists" } else { "exists" }, None),
                    };
                    (Some(field), name, value, *ignore_case)
                }
                Test::Number { key, op } => {
                    let (name, value) = match op {
                        NumberOp::Eq(n) => (if neg { "neq" } else { "eq" }, Some(json!(n))),
                        NumberOp::In(ns) => (if neg { "not_in" } else { "in" }, Some(json!(ns))),
                        NumberOp::Cmp(c, n) => (c.name(), Some(json!(n))),
                        NumberOp::Between(a, b) => ("between", Some(json!([a, b]))),
                        NumberOp::Exists => (if neg { "not_exists" } else { "exists" }, None),
                    };
                    (Some(format!("attributes.{key}")), name, value, false)
                }
                Test::Bool { key, op } => {
                    let (name, value) = match op {
                        BoolOp::Eq(b) => (if neg { "neq" } else { "eq" }, Some(json!(b))),
                        BoolOp::Exists => (if neg { "not_exists" } else { "exists" }, None),
                    };
                    (Some(format!("attributes.{key}")), name, value, false)
                }
                Test::Date { key, op } => {
                    let d = |d: &NaiveDate| Value::String(format_date(*d));
                    let (name, value) = match op {
                        DateOp::Eq(v) => (if neg { "neq" } else { "eq" }, Some(d(v))),
                        DateOp::In(vs) => (
                            if neg { "not_in" } else { "in" },
                            Some(Value::Array(vs.iter().map(d).collect())),
                        ),
                        DateOp::Cmp(c, v) => (c.name(), Some(d(v))),
                        DateOp::Between(a, b) => ("between", Some(json!([d(a), d(b)]))),
                        DateOp::WithinLast(r) => ("within_last", Some(relative_json(*r))),
                        DateOp::Exists => (if neg { "not_exists" } else { "exists" }, None),
                    };
                    (Some(format!("attributes.{key}")), name, value, false)
                }
                Test::Time { field, op } => {
                    let (name, value) = match op {
                        TimeOp::Cmp(c, v) => (c.name(), Some(v.to_json())),
                        TimeOp::Between(a, b) => {
                            ("between", Some(json!([a.to_json(), b.to_json()])))
                        }
                        TimeOp::WithinLast(r) => ("within_last", Some(relative_json(*r))),
                        TimeOp::Exists => (if neg { "not_exists" } else { "exists" }, None),
                    };
                    (Some(field.name().to_owned()), name, value, false)
                }
                Test::List {
                    subject,
                    op,
                    ignore_case,
                } => {
                    let (field, has) = match subject {
                        ListSubject::Tags => (None, "has_tag"),
                        ListSubject::Attr(k) => (Some(format!("attributes.{k}")), "contains"),
                    };
                    let (field, name, value) = match op {
                        ListOp::Has(v) => (field, has, Some(json!(v))),
                        ListOp::In(vs) => (
                            field.or(Some("tags".to_owned())),
                            if neg { "not_in" } else { "in" },
                            Some(strings(vs)),
                        ),
                        ListOp::Exists => (
                            field.or(Some("tags".to_owned())),
                            if neg { "not_exists" } else { "exists" },
                            None,
                        ),
                    };
                    (field, name, value, *ignore_case)
                }
                Test::Consent { channel, state } => (
                    Some(channel.as_str().to_owned()),
                    "consent",
                    Some(json!(state.as_str())),
                    false,
                ),
                Test::InSegment(id) => (None, "in_segment", Some(json!(id.to_string())), false),
            };
        let mut m = Map::new();
        if let Some(f) = field {
            m.insert("field".into(), Value::String(f));
        }
        m.insert("op".into(), Value::String(op.to_owned()));
        if let Some(v) = value {
            m.insert("value".into(), v);
        }
        if ignore_case {
            m.insert("ignore_case".into(), Value::Bool(true));
        }
        Value::Object(m)
    }
}

fn relative_json(r: Relative) -> Value {
    json!({"amount": r.amount, "unit": r.unit.name()})
}
