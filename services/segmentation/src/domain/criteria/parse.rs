//! JSON → validated [`Criteria`], collecting every error with its path.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

use super::decimal::Decimal;
use super::{
    BoolOp, Cmp, Cond, Criteria, CriteriaError, DateOp, Limits, ListOp, ListSubject, Node,
    NumberOp, Relative, Test, TextField, TextOp, TextSubject, TimeField, TimeOp, TimeValue, Unit,
    normalize_lower, to_micros,
};
use crate::domain::attributes::{
    AttributeCatalog, AttributeType, Channel, ConsentState, MAX_STRING_VALUE_CHARS, json_kind,
    parse_date,
};

/// Stop collecting after this many errors (the caller shows them to a person).
const MAX_ERRORS: usize = 50;

/// Validates a criteria tree against the tenant's attribute catalog and the size limits.
/// Error paths start with `criteria`.
pub fn parse(
    json: &Value,
    catalog: &AttributeCatalog,
    limits: &Limits,
) -> Result<Criteria, Vec<CriteriaError>> {
    let mut p = Parser {
        catalog,
        limits,
        errors: Vec::new(),
        nodes: 0,
    };
    let root = p.node(json, "criteria".to_owned(), 1);
    if p.nodes > limits.max_nodes {
        p.errors.insert(
            0,
            CriteriaError::new(
                "criteria",
                format!(
                    "has {} conditions and groups; at most {} are allowed",
                    p.nodes, limits.max_nodes
                ),
            ),
        );
        p.errors.truncate(MAX_ERRORS);
    }
    match root {
        Some(root) if p.errors.is_empty() => Ok(Criteria { root }),
        _ => Err(p.errors),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Neq,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    Gt,
    Gte,
    Lt,
    Lte,
    Before,
    After,
    Between,
    WithinLast,
    Exists,
    NotExists,
    HasTag,
    Consent,
    InSegment,
}

impl Op {
    const ALL: [Op; 20] = [
        Op::Eq,
        Op::Neq,
        Op::In,
        Op::NotIn,
        Op::Contains,
        Op::StartsWith,
        Op::EndsWith,
        Op::Gt,
        Op::Gte,
        Op::Lt,
        Op::Lte,
        Op::Before,
        Op::After,
        Op::Between,
        Op::WithinLast,
        Op::Exists,
        Op::NotExists,
        Op::HasTag,
        Op::Consent,
        Op::InSegment,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Neq => "neq",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Contains => "contains",
            Op::StartsWith => "starts_with",
            Op::EndsWith => "ends_with",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Before => "before",
            Op::After => "after",
            Op::Between => "between",
            Op::WithinLast => "within_last",
            Op::Exists => "exists",
            Op::NotExists => "not_exists",
            Op::HasTag => "has_tag",
            Op::Consent => "consent",
            Op::InSegment => "in_segment",
        }
    }

    fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == s)
    }

    fn cmp(self) -> Option<Cmp> {
        Some(match self {
            Op::Gt => Cmp::Gt,
            Op::Gte => Cmp::Gte,
            Op::Lt => Cmp::Lt,
            Op::Lte => Cmp::Lte,
            Op::Before => Cmp::Before,
            Op::After => Cmp::After,
            _ => return None,
        })
    }

    fn negated(self) -> bool {
        matches!(self, Op::Neq | Op::NotIn | Op::NotExists)
    }

    /// Operators whose value is compared as a string (where `ignore_case` means something).
    fn compares_strings(self) -> bool {
        matches!(
            self,
            Op::Eq
                | Op::Neq
                | Op::In
                | Op::NotIn
                | Op::Contains
                | Op::StartsWith
                | Op::EndsWith
                | Op::HasTag
        )
    }
}

/// What a condition's field turned out to be.
#[derive(Debug, Clone)]
enum Kind {
    Text(TextSubject),
    Number(String),
    Bool(String),
    Date(String),
    Time(TimeField),
    List(ListSubject),
    Channel(Channel),
    Segment,
}

impl Kind {
    fn ops(&self) -> &'static [Op] {
        use Op::*;
        match self {
            Kind::Text(_) => &[
                Eq, Neq, In, NotIn, Contains, StartsWith, EndsWith, Exists, NotExists,
            ],
            Kind::Number(_) => &[
                Eq, Neq, In, NotIn, Gt, Gte, Lt, Lte, Between, Exists, NotExists,
            ],
            Kind::Bool(_) => &[Eq, Neq, Exists, NotExists],
            Kind::Date(_) => &[
                Eq, Neq, In, NotIn, Gt, Gte, Lt, Lte, Before, After, Between, WithinLast, Exists,
                NotExists,
            ],
            Kind::Time(_) => &[
                Gt, Gte, Lt, Lte, Before, After, Between, WithinLast, Exists, NotExists,
            ],
            Kind::List(ListSubject::Tags) => &[HasTag, In, NotIn, Exists, NotExists],
            Kind::List(ListSubject::Attr(_)) => &[Contains, In, NotIn, Exists, NotExists],
            Kind::Channel(_) => &[Consent],
            Kind::Segment => &[InSegment],
        }
    }

    fn describe(&self) -> String {
        match self {
            Kind::Text(TextSubject::Field(f)) => format!("text field '{}'", f.name()),
            Kind::Text(TextSubject::Attr(k)) => format!("string attribute '{k}'"),
            Kind::Number(k) => format!("number attribute '{k}'"),
            Kind::Bool(k) => format!("boolean attribute '{k}'"),
            Kind::Date(k) => format!("date attribute '{k}'"),
            Kind::Time(f) => format!("timestamp field '{}'", f.name()),
            Kind::List(ListSubject::Tags) => "tags".to_owned(),
            Kind::List(ListSubject::Attr(k)) => format!("string_list attribute '{k}'"),
            Kind::Channel(c) => format!("consent channel '{}'", c.as_str()),
            Kind::Segment => "segments".to_owned(),
        }
    }
}

struct Parser<'a> {
    catalog: &'a AttributeCatalog,
    limits: &'a Limits,
    errors: Vec<CriteriaError>,
    nodes: usize,
}

/// Shortens user text quoted in an error message.
fn quote(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

const GROUP_KEYS: [&str; 3] = ["all", "any", "not"];
const CONDITION_KEYS: [&str; 4] = ["field", "op", "value", "ignore_case"];

impl Parser<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(CriteriaError::new(path, message));
        }
    }

    fn node(&mut self, v: &Value, path: String, depth: usize) -> Option<Node> {
        self.nodes += 1;
        if depth > self.limits.max_depth {
            self.err(
                path,
                format!("nesting is deeper than {} levels", self.limits.max_depth),
            );
            return None;
        }
        let Value::Object(obj) = v else {
            self.err(
                path,
                format!(
                    "must be an object: a group (all, any, not) or a condition (field, op, value), got {}",
                    json_kind(v)
                ),
            );
            return None;
        };
        let Some(group) = GROUP_KEYS.into_iter().find(|k| obj.contains_key(*k)) else {
            return self.condition(obj, &path);
        };
        if obj.len() != 1 {
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            self.err(
                path,
                format!(
                    "a group has exactly one key (all, any or not), found: {}",
                    quote(&keys.join(", "))
                ),
            );
            return None;
        }
        let child_path = format!("{path}.{group}");
        let value = &obj[group];
        if group == "not" {
            return self
                .node(value, child_path, depth + 1)
                .map(|n| Node::Not(Box::new(n)));
        }
        let Value::Array(items) = value else {
            self.err(
                child_path,
                format!(
                    "must be a list of conditions and groups, got {}",
                    json_kind(value)
                ),
            );
            return None;
        };
        let mut children = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.node(item, format!("{child_path}[{i}]"), depth + 1) {
                Some(n) => children.push(n),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        Some(if group == "all" {
            Node::All(children)
        } else {
            Node::Any(children)
        })
    }

    fn condition(&mut self, obj: &Map<String, Value>, path: &str) -> Option<Node> {
        let mut ok = true;
        for key in obj.keys() {
            if !CONDITION_KEYS.contains(&key.as_str()) {
                self.err(
                    format!("{path}.{}", quote(key)),
                    "unknown key: a condition has field, op, value and (for string comparisons) ignore_case; a group has all, any or not",
                );
                ok = false;
            }
        }
        let op_path = format!("{path}.op");
        let op = match obj.get("op") {
            None | Some(Value::Null) => {
                self.err(&op_path, "missing op");
                None
            }
            Some(Value::String(s)) => match Op::parse(s) {
                Some(op) => Some(op),
                None => {
                    let names: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
                    self.err(
                        &op_path,
                        format!(
                            "unknown op '{}'; use one of: {}",
                            quote(s),
                            names.join(", ")
                        ),
                    );
                    None
                }
            },
            Some(other) => {
                self.err(
                    &op_path,
                    format!("must be a string, got {}", json_kind(other)),
                );
                None
            }
        };
        let kind = self.field(obj.get("field"), op, &format!("{path}.field"));
        let (Some(op), Some(kind)) = (op, kind) else {
            return None;
        };
        if !kind.ops().contains(&op) {
            let names: Vec<&str> = kind.ops().iter().map(|o| o.name()).collect();
            self.err(
                op_path,
                format!(
                    "'{}' does not apply to {}; use one of: {}",
                    op.name(),
                    kind.describe(),
                    names.join(", ")
                ),
            );
            return None;
        }
        let ignore_case = match obj.get("ignore_case") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => {
                if op.compares_strings() && matches!(kind, Kind::Text(_) | Kind::List(_)) {
                    true
                } else {
                    self.err(
                        format!("{path}.ignore_case"),
                        "ignore_case applies only to string comparisons (eq, neq, in, not_in, contains, starts_with, ends_with, has_tag)",
                    );
                    ok = false;
                    false
                }
            }
            Some(other) => {
                self.err(
                    format!("{path}.ignore_case"),
                    format!("must be a boolean, got {}", json_kind(other)),
                );
                ok = false;
                false
            }
        };
        let vpath = format!("{path}.value");
        let value = obj.get("value").filter(|v| !v.is_null());
        let test = if matches!(op, Op::Exists | Op::NotExists) {
            if value.is_some() {
                self.err(vpath, format!("'{}' takes no value", op.name()));
                return None;
            }
            Some(match kind {
                Kind::Text(subject) => Test::Text {
                    subject,
                    op: TextOp::Exists,
                    ignore_case,
                },
                Kind::Number(key) => Test::Number {
                    key,
                    op: NumberOp::Exists,
                },
                Kind::Bool(key) => Test::Bool {
                    key,
                    op: BoolOp::Exists,
                },
                Kind::Date(key) => Test::Date {
                    key,
                    op: DateOp::Exists,
                },
                Kind::Time(field) => Test::Time {
                    field,
                    op: TimeOp::Exists,
                },
                Kind::List(subject) => Test::List {
                    subject,
                    op: ListOp::Exists,
                    ignore_case,
                },
                Kind::Channel(_) | Kind::Segment => unreachable!("checked by Kind::ops"),
            })
        } else {
            let Some(value) = value else {
                self.err(vpath, format!("'{}' needs a value", op.name()));
                return None;
            };
            self.test(kind, op, value, &vpath, ignore_case)
        };
        let test = test?;
        ok.then(|| {
            Node::Cond(Cond {
                path: path.to_owned(),
                negated: op.negated(),
                test,
            })
        })
    }

    fn field(&mut self, field: Option<&Value>, op: Option<Op>, path: &str) -> Option<Kind> {
        let name = match field {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => {
                self.err(path, format!("must be a string, got {}", json_kind(other)));
                return None;
            }
        };
        match op {
            Some(Op::Consent) => {
                return match name.and_then(Channel::parse) {
                    Some(c) => Some(Kind::Channel(c)),
                    None => {
                        self.err(
                            path,
                            "consent needs the channel as field: email, sms or push",
                        );
                        None
                    }
                };
            }
            Some(Op::InSegment) => {
                return match name {
                    None | Some("segment") => Some(Kind::Segment),
                    Some(_) => {
                        self.err(
                            path,
                            "in_segment takes no field (the segment id is the value)",
                        );
                        None
                    }
                };
            }
            Some(Op::HasTag) => {
                return match name {
                    None | Some("tags") => Some(Kind::List(ListSubject::Tags)),
                    Some(_) => {
                        self.err(
                            path,
                            "has_tag applies to tags (omit the field); for a string_list attribute use contains",
                        );
                        None
                    }
                };
            }
            _ => {}
        }
        let Some(name) = name else {
            self.err(path, "missing field");
            return None;
        };
        if let Some(f) = TextField::ALL.into_iter().find(|f| f.name() == name) {
            return Some(Kind::Text(TextSubject::Field(f)));
        }
        if let Some(f) = TimeField::ALL.into_iter().find(|f| f.name() == name) {
            return Some(Kind::Time(f));
        }
        if name == "tags" {
            return Some(Kind::List(ListSubject::Tags));
        }
        if let Some(key) = name.strip_prefix("attributes.") {
            let Some(ty) = self.catalog.get(key) else {
                self.err(path, format!("attribute '{}' is not defined", quote(key)));
                return None;
            };
            let key = key.to_owned();
            return Some(match ty {
                AttributeType::String => Kind::Text(TextSubject::Attr(key)),
                AttributeType::Number => Kind::Number(key),
                AttributeType::Boolean => Kind::Bool(key),
                AttributeType::Date => Kind::Date(key),
                AttributeType::StringList => Kind::List(ListSubject::Attr(key)),
            });
        }
        let builtins: Vec<&str> = TextField::ALL
            .iter()
            .map(|f| f.name())
            .chain(TimeField::ALL.iter().map(|f| f.name()))
            .collect();
        self.err(
            path,
            format!(
                "unknown field '{}'; use one of {}, tags, or attributes.<key> of a defined attribute",
                quote(name),
                builtins.join(", ")
            ),
        );
        None
    }

    fn test(
        &mut self,
        kind: Kind,
        op: Op,
        value: &Value,
        path: &str,
        ignore_case: bool,
    ) -> Option<Test> {
        match kind {
            Kind::Text(subject) => {
                let email = subject == TextSubject::Field(TextField::Email);
                let op = match op {
                    Op::Eq | Op::Neq => TextOp::Eq(self.text(value, path, email)?),
                    Op::In | Op::NotIn => {
                        TextOp::In(self.list(value, path, |p, v, path| p.text(v, path, email))?)
                    }
                    Op::Contains => TextOp::Contains(self.text(value, path, email)?),
                    Op::StartsWith => TextOp::StartsWith(self.text(value, path, email)?),
                    Op::EndsWith => TextOp::EndsWith(self.text(value, path, email)?),
                    _ => unreachable!("checked by Kind::ops"),
                };
                Some(Test::Text {
                    subject,
                    op,
                    ignore_case,
                })
            }
            Kind::Number(key) => {
                let op = match op {
                    Op::Eq | Op::Neq => NumberOp::Eq(self.number(value, path)?),
                    Op::In | Op::NotIn => {
                        NumberOp::In(self.list(value, path, |p, v, path| p.number(v, path))?)
                    }
                    Op::Between => {
                        let (a, b) = self.pair(value, path, |p, v, path| p.number(v, path))?;
                        if Decimal::of(&a) > Decimal::of(&b) {
                            self.err(path, "the first value must not be greater than the second");
                            return None;
                        }
                        NumberOp::Between(a, b)
                    }
                    other => NumberOp::Cmp(
                        other.cmp().expect("checked by Kind::ops"),
                        self.number(value, path)?,
                    ),
                };
                Some(Test::Number { key, op })
            }
            Kind::Bool(key) => {
                let Value::Bool(b) = value else {
                    self.err(
                        path,
                        format!("must be true or false, got {}", json_kind(value)),
                    );
                    return None;
                };
                Some(Test::Bool {
                    key,
                    op: BoolOp::Eq(*b),
                })
            }
            Kind::Date(key) => {
                let op = match op {
                    Op::Eq | Op::Neq => DateOp::Eq(self.date(value, path)?),
                    Op::In | Op::NotIn => {
                        DateOp::In(self.list(value, path, |p, v, path| p.date(v, path))?)
                    }
                    Op::Between => {
                        let (a, b) = self.pair(value, path, |p, v, path| p.date(v, path))?;
                        if a > b {
                            self.err(path, "the first date must not be after the second");
                            return None;
                        }
                        DateOp::Between(a, b)
                    }
                    Op::WithinLast => DateOp::WithinLast(self.relative(value, path)?),
                    other => DateOp::Cmp(
                        other.cmp().expect("checked by Kind::ops"),
                        self.date(value, path)?,
                    ),
                };
                Some(Test::Date { key, op })
            }
            Kind::Time(field) => {
                let op = match op {
                    Op::Between => {
                        let (a, b) = self.pair(value, path, |p, v, path| p.time(v, path))?;
                        if range_is_empty(a, b) {
                            self.err(path, "the first time must not be after the second");
                            return None;
                        }
                        TimeOp::Between(a, b)
                    }
                    Op::WithinLast => TimeOp::WithinLast(self.relative(value, path)?),
                    other => TimeOp::Cmp(
                        other.cmp().expect("checked by Kind::ops"),
                        self.time(value, path)?,
                    ),
                };
                Some(Test::Time { field, op })
            }
            Kind::List(subject) => {
                // Tags are stored trimmed and lower-cased; so are tag values here.
                let lower = subject == ListSubject::Tags;
                let op = match op {
                    Op::HasTag | Op::Contains => ListOp::Has(self.text(value, path, lower)?),
                    Op::In | Op::NotIn => {
                        ListOp::In(self.list(value, path, |p, v, path| p.text(v, path, lower))?)
                    }
                    _ => unreachable!("checked by Kind::ops"),
                };
                Some(Test::List {
                    subject,
                    op,
                    ignore_case,
                })
            }
            Kind::Channel(channel) => {
                let state = match value {
                    Value::String(s) => ConsentState::parse(s),
                    _ => None,
                };
                let Some(state) = state else {
                    self.err(path, "must be one of: subscribed, unsubscribed, unknown");
                    return None;
                };
                Some(Test::Consent { channel, state })
            }
            Kind::Segment => {
                let id = match value {
                    Value::String(s) => Uuid::parse_str(s).ok(),
                    _ => None,
                };
                let Some(id) = id else {
                    let shown = match value {
                        Value::String(s) => format!("'{}'", quote(s)),
                        other => json_kind(other).to_owned(),
                    };
                    self.err(path, format!("{shown} is not a segment id (UUID)"));
                    return None;
                };
                Some(Test::InSegment(id))
            }
        }
    }

    /// A non-empty string without NUL, at most `MAX_STRING_VALUE_CHARS` characters; with
    /// `lower` (email, tags) trimmed and lower-cased, as stored emails and tags are.
    fn text(&mut self, v: &Value, path: &str, lower: bool) -> Option<String> {
        let Value::String(s) = v else {
            self.err(path, format!("must be a string, got {}", json_kind(v)));
            return None;
        };
        if s.contains('\0') {
            self.err(path, "must not contain NUL characters");
            return None;
        }
        if s.chars().count() > MAX_STRING_VALUE_CHARS {
            self.err(
                path,
                format!("is longer than {MAX_STRING_VALUE_CHARS} characters"),
            );
            return None;
        }
        let s = if lower { normalize_lower(s) } else { s.clone() };
        if s.is_empty() {
            self.err(
                path,
                "must not be empty (test for a missing value with not_exists)",
            );
            return None;
        }
        Some(s)
    }

    fn number(&mut self, v: &Value, path: &str) -> Option<Number> {
        match v {
            Value::Number(n) => Some(n.clone()),
            other => {
                self.err(path, format!("must be a number, got {}", json_kind(other)));
                None
            }
        }
    }

    fn date(&mut self, v: &Value, path: &str) -> Option<NaiveDate> {
        use chrono::Datelike;
        let parsed = match v {
            Value::String(s) => parse_date(s).filter(|d| (0..=9999).contains(&d.year())),
            _ => None,
        };
        if parsed.is_none() {
            self.err(path, "must be a date (YYYY-MM-DD)");
        }
        parsed
    }

    fn time(&mut self, v: &Value, path: &str) -> Option<TimeValue> {
        use chrono::Datelike;
        let parsed = match v {
            Value::String(s) => {
                let s = s.trim();
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .ok()
                    .filter(|d| (0..=9999).contains(&d.year()))
                    .map(TimeValue::Day)
                    .or_else(|| {
                        DateTime::parse_from_rfc3339(s)
                            .ok()
                            .map(|t| TimeValue::Instant(to_micros(t.with_timezone(&Utc))))
                            .filter(|t| {
                                matches!(t, TimeValue::Instant(t) if (0..=9999).contains(&t.year()))
                            })
                    })
            }
            _ => None,
        };
        if parsed.is_none() {
            self.err(
                path,
                "must be a timestamp (RFC 3339, e.g. 2026-03-01T12:00:00Z) or a date (YYYY-MM-DD)",
            );
        }
        parsed
    }

    fn relative(&mut self, v: &Value, path: &str) -> Option<Relative> {
        let units: Vec<&str> = Unit::ALL.iter().map(|u| u.name()).collect();
        let Value::Object(obj) = v else {
            self.err(
                path,
                format!(
                    "must be an object {{\"amount\": <whole number>, \"unit\": {}}}",
                    units.join("|")
                ),
            );
            return None;
        };
        let mut ok = true;
        for key in obj.keys() {
            if key != "amount" && key != "unit" {
                self.err(
                    format!("{path}.{}", quote(key)),
                    "unknown key: within_last takes amount and unit",
                );
                ok = false;
            }
        }
        let unit = match obj.get("unit") {
            Some(Value::String(s)) => Unit::ALL.into_iter().find(|u| u.name() == s),
            _ => None,
        };
        if unit.is_none() {
            self.err(
                format!("{path}.unit"),
                format!("must be one of: {}", units.join(", ")),
            );
        }
        let amount = obj
            .get("amount")
            .and_then(Value::as_u64)
            .filter(|a| *a >= 1);
        if amount.is_none() {
            self.err(
                format!("{path}.amount"),
                "must be a whole number of at least 1",
            );
        }
        let amount = match (amount, unit) {
            (Some(a), Some(u)) if a > u64::from(u.max_amount()) => {
                self.err(
                    format!("{path}.amount"),
                    format!("must be at most {} {}", u.max_amount(), u.name()),
                );
                None
            }
            (Some(a), Some(_)) => u32::try_from(a).ok(),
            _ => None,
        };
        match (ok, amount, unit) {
            (true, Some(amount), Some(unit)) => Some(Relative { amount, unit }),
            _ => None,
        }
    }

    fn list<T>(
        &mut self,
        v: &Value,
        path: &str,
        mut item: impl FnMut(&mut Self, &Value, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Value::Array(items) = v else {
            self.err(path, format!("must be a list, got {}", json_kind(v)));
            return None;
        };
        if items.is_empty() {
            self.err(path, "must list at least one value");
            return None;
        }
        if items.len() > self.limits.max_list_values {
            self.err(
                path,
                format!(
                    "has {} values; at most {} are allowed",
                    items.len(),
                    self.limits.max_list_values
                ),
            );
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, v) in items.iter().enumerate() {
            match item(self, v, &format!("{path}[{i}]")) {
                Some(x) => out.push(x),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn pair<T>(
        &mut self,
        v: &Value,
        path: &str,
        mut item: impl FnMut(&mut Self, &Value, &str) -> Option<T>,
    ) -> Option<(T, T)> {
        match v {
            Value::Array(items) if items.len() == 2 => {
                let a = item(self, &items[0], &format!("{path}[0]"));
                let b = item(self, &items[1], &format!("{path}[1]"));
                a.zip(b)
            }
            _ => {
                self.err(path, "must be a list of two values [from, to] (inclusive)");
                None
            }
        }
    }
}

/// Whether `between [a, b]` on timestamps can match nothing.
fn range_is_empty(a: TimeValue, b: TimeValue) -> bool {
    use super::Bound;
    match (a.lower(true), b.upper(true)) {
        (Bound::At { t: lo, .. }, Bound::At { t: hi, inclusive }) => {
            lo > hi || (lo == hi && !inclusive)
        }
        (Bound::Never, _) | (_, Bound::Never) => true,
        _ => false,
    }
}
