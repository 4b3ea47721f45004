//! [`Criteria`] → a parameterised PostgreSQL boolean expression over `c`
//! (= `segmentation.contacts`). Only fixed column names, operators and constants are written
//! into the SQL text; every value and attribute key is a bind parameter.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgArguments, PgTypeInfo};
use sqlx::{Encode, Postgres, Type};
use uuid::Uuid;

use super::{
    BoolOp, Bound, Criteria, CriteriaError, DateOp, ListOp, ListSubject, MAX_COMPILED_NODES,
    MAX_SEGMENT_NESTING, Node, NumberOp, SegmentRef, SegmentResolver, Test, TextField, TextOp,
    TextSubject, TimeField, fold, format_date, to_micros,
};
use crate::domain::attributes::Channel;

/// A bind parameter of a compiled expression.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    Text(String),
    TextArray(Vec<String>),
    Float(f64),
    Bool(bool),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
    Uuid(Uuid),
    Json(Value),
}

impl SqlParam {
    /// The PostgreSQL type the placeholder is cast to in the SQL text.
    pub fn sql_type(&self) -> &'static str {
        match self {
            Self::Text(_) => "text",
            Self::TextArray(_) => "text[]",
            Self::Float(_) => "float8",
            Self::Bool(_) => "boolean",
            Self::Date(_) => "date",
            Self::Timestamp(_) => "timestamptz",
            Self::Uuid(_) => "uuid",
            Self::Json(_) => "jsonb",
        }
    }
}

/// `SqlParam` binds as its own PostgreSQL type (`produces`), so a query can take any mix.
impl Type<Postgres> for SqlParam {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for SqlParam {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            Self::Text(v) => <String as Encode<Postgres>>::encode_by_ref(v, buf),
            Self::TextArray(v) => <Vec<String> as Encode<Postgres>>::encode_by_ref(v, buf),
            Self::Float(v) => <f64 as Encode<Postgres>>::encode_by_ref(v, buf),
            Self::Bool(v) => <bool as Encode<Postgres>>::encode_by_ref(v, buf),
            Self::Date(v) => <NaiveDate as Encode<Postgres>>::encode_by_ref(v, buf),
            Self::Timestamp(v) => <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(v, buf),
            Self::Uuid(v) => <Uuid as Encode<Postgres>>::encode_by_ref(v, buf),
            Self::Json(v) => <Value as Encode<Postgres>>::encode_by_ref(v, buf),
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(match self {
            Self::Text(_) => <String as Type<Postgres>>::type_info(),
            Self::TextArray(_) => <Vec<String> as Type<Postgres>>::type_info(),
            Self::Float(_) => <f64 as Type<Postgres>>::type_info(),
            Self::Bool(_) => <bool as Type<Postgres>>::type_info(),
            Self::Date(_) => <NaiveDate as Type<Postgres>>::type_info(),
            Self::Timestamp(_) => <DateTime<Utc> as Type<Postgres>>::type_info(),
            Self::Uuid(_) => <Uuid as Type<Postgres>>::type_info(),
            Self::Json(_) => <Value as Type<Postgres>>::type_info(),
        })
    }

    fn size_hint(&self) -> usize {
        match self {
            Self::Text(v) => v.len(),
            Self::TextArray(v) => v.iter().map(|s| s.len() + 4).sum::<usize>() + 20,
            Self::Json(v) => 64 + v.to_string().len(),
            _ => 16,
        }
    }
}

/// Queries that compiled parameters can be bound to, in order.
pub trait BindParams: Sized {
    fn bind_params(self, params: &[SqlParam]) -> Self;
}

impl BindParams for sqlx::query::Query<'_, Postgres, PgArguments> {
    fn bind_params(self, params: &[SqlParam]) -> Self {
        params.iter().cloned().fold(self, |q, p| q.bind(p))
    }
}

impl<O> BindParams for sqlx::query::QueryAs<'_, Postgres, O, PgArguments> {
    fn bind_params(self, params: &[SqlParam]) -> Self {
        params.iter().cloned().fold(self, |q, p| q.bind(p))
    }
}

impl<O> BindParams for sqlx::query::QueryScalar<'_, Postgres, O, PgArguments> {
    fn bind_params(self, params: &[SqlParam]) -> Self {
        params.iter().cloned().fold(self, |q, p| q.bind(p))
    }
}

/// Binds `params` (after whatever the query bound already, e.g. `$1` = tenant id):
/// `bind_params(sqlx::query_scalar(AssertSqlSafe(sql)).bind(tenant), &compiled.params)`.
pub fn bind_params<Q: BindParams>(query: Q, params: &[SqlParam]) -> Q {
    query.bind_params(params)
}

/// A boolean SQL expression over the alias `c` and its parameters, numbered from the
/// `first_param` given to [`compile`].
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledSql {
    pub sql: String,
    pub params: Vec<SqlParam>,
}

/// Compiles criteria to SQL. `in_segment` references are resolved now: dynamic segments are
/// inlined (a cycle, nesting deeper than [`MAX_SEGMENT_NESTING`] or more than
/// [`MAX_COMPILED_NODES`] nodes is an error), static ones become an `EXISTS` over
/// `segmentation.segment_members`, unknown ones are errors at the referencing node. `now`
/// anchors `within_last` and is bound as a parameter (never SQL `now()`).
pub fn compile(
    criteria: &Criteria,
    resolver: &dyn SegmentResolver,
    now: DateTime<Utc>,
    first_param: usize,
) -> Result<CompiledSql, Vec<CriteriaError>> {
    let mut c = Compiler {
        resolver,
        now: to_micros(now),
        first_param,
        params: Vec::new(),
        errors: Vec::new(),
        stack: Vec::new(),
        origin: None,
        nodes: criteria.node_count(),
    };
    let sql = c.node(&criteria.root);
    if c.errors.is_empty() {
        Ok(CompiledSql {
            sql,
            params: c.params,
        })
    } else {
        Err(c.errors)
    }
}

const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const DATE_SHAPE: &str = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$";

struct Compiler<'a> {
    resolver: &'a dyn SegmentResolver,
    now: DateTime<Utc>,
    first_param: usize,
    params: Vec<SqlParam>,
    errors: Vec<CriteriaError>,
    /// Dynamic segments being inlined (outermost first).
    stack: Vec<Uuid>,
    /// Path of the outermost `in_segment` being inlined: errors inside report there.
    origin: Option<String>,
    /// Nodes of the criteria plus everything inlined so far.
    nodes: usize,
}

fn text_column(f: TextField) -> (&'static str, bool) {
    match f {
        TextField::Email => ("c.email_normalized", true),
        TextField::Phone => ("c.phone", true),
        TextField::ExternalId => ("c.external_id", true),
        TextField::FirstName => ("c.first_name", false),
        TextField::LastName => ("c.last_name", false),
        TextField::Locale => ("c.locale", false),
        TextField::TimeZone => ("c.time_zone", false),
    }
}

fn time_column(f: TimeField) -> (&'static str, bool) {
    match f {
        TimeField::Created => ("c.created_at", false),
        TimeField::Updated => ("c.updated_at", false),
        TimeField::LastActivity => ("c.last_activity_at", true),
    }
}

fn consent_column(c: Channel) -> &'static str {
    match c {
        Channel::Email => "c.email_consent",
        Channel::Sms => "c.sms_consent",
        Channel::Push => "c.push_consent",
    }
}

fn folded(x: &str) -> String {
    format!("translate({x}, '{UPPER}', '{LOWER}')")
}

impl Compiler<'_> {
    /// Adds a parameter; returns its placeholder with a cast, e.g. `$3::text`.
    fn bind(&mut self, p: SqlParam) -> String {
        let n = self.first_param + self.params.len();
        let ty = p.sql_type();
        self.params.push(p);
        format!("${n}::{ty}")
    }

    fn error(&mut self, path: String, message: String) {
        let e = match &self.origin {
            Some(origin) => {
                let chain: Vec<String> = self.stack.iter().map(Uuid::to_string).collect();
                CriteriaError::new(
                    origin.clone(),
                    format!("in segment {}: {path}: {message}", chain.join(" -> ")),
                )
            }
            None => CriteriaError::new(path, message),
        };
        self.errors.push(e);
    }

    fn node(&mut self, node: &Node) -> String {
        match node {
            Node::All(xs) if xs.is_empty() => "TRUE".to_owned(),
            Node::Any(xs) if xs.is_empty() => "FALSE".to_owned(),
            Node::All(xs) | Node::Any(xs) => {
                let joiner = if matches!(node, Node::All(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts: Vec<String> = xs.iter().map(|x| self.node(x)).collect();
                format!("({})", parts.join(joiner))
            }
            Node::Not(x) => format!("(NOT {})", self.node(x)),
            Node::Cond(cond) => {
                let sql = self.test(&cond.test, &cond.path);
                if cond.negated {
                    format!("(NOT {sql})")
                } else {
                    sql
                }
            }
        }
    }

    /// `c.attributes @> {"key": value}`: index-usable (GIN jsonb_path_ops) and never NULL.
    fn contains_json(&mut self, key: &str, value: Value) -> String {
        let mut obj = serde_json::Map::new();
        obj.insert(key.to_owned(), value);
        let p = self.bind(SqlParam::Json(Value::Object(obj)));
        format!("(c.attributes @> {p})")
    }

    /// The attribute as `jsonb` (the key bound as a parameter).
    fn attr(&mut self, key: &str) -> String {
        let k = self.bind(SqlParam::Text(key.to_owned()));
        format!("(c.attributes -> {k})")
    }

    /// A condition that is never NULL: every test below is true or false.
    fn test(&mut self, test: &Test, path: &str) -> String {
        match test {
            Test::Text {
                subject,
                op,
                ignore_case,
            } => self.text(subject, op, *ignore_case),
            Test::Number { key, op } => self.number(key, op),
            Test::Bool { key, op } => match op {
                BoolOp::Eq(b) => self.contains_json(key, Value::Bool(*b)),
                BoolOp::Exists => {
                    let a = self.attr(key);
                    format!("COALESCE(jsonb_typeof({a}) = 'boolean', FALSE)")
                }
            },
            Test::Date { key, op } => self.date(key, op),
            Test::Time { field, op } => {
                let (col, nullable) = time_column(*field);
                let Some((lo, hi)) = op.range(self.now) else {
                    return if nullable {
                        format!("({col} IS NOT NULL)")
                    } else {
                        "TRUE".to_owned()
                    };
                };
                let mut parts = Vec::new();
                if nullable {
                    parts.push(format!("{col} IS NOT NULL"));
                }
                for (bound, incl, excl) in [(lo, ">=", ">"), (hi, "<=", "<")] {
                    match bound {
                        Bound::At { t, inclusive } => {
                            let p = self.bind(SqlParam::Timestamp(t));
                            let op = if inclusive { incl } else { excl };
                            parts.push(format!("{col} {op} {p}"));
                        }
                        Bound::Always => {}
                        Bound::Never => parts.push("FALSE".to_owned()),
                    }
                }
                if parts.is_empty() {
                    "TRUE".to_owned()
                } else {
                    format!("({})", parts.join(" AND "))
                }
            }
            Test::List {
                subject,
                op,
                ignore_case,
            } => self.list(subject, op, *ignore_case),
            Test::Consent { channel, state } => {
                let p = self.bind(SqlParam::Text(state.as_str().to_owned()));
                format!("({} = {p})", consent_column(*channel))
            }
            Test::InSegment(id) => self.in_segment(*id, path),
        }
    }

    fn text(&mut self, subject: &TextSubject, op: &TextOp, ignore_case: bool) -> String {
        let fold_case = ignore_case && *subject != TextSubject::Field(TextField::Email);
        // Exact equality: index-usable forms.
        if let (TextOp::Eq(v), false) = (op, fold_case) {
            return match subject {
                TextSubject::Attr(key) => self.contains_json(key, Value::String(v.clone())),
                TextSubject::Field(f) => {
                    let (col, nullable) = text_column(*f);
                    let p = self.bind(SqlParam::Text(v.clone()));
                    if nullable {
                        format!("({col} IS NOT NULL AND {col} = {p})")
                    } else {
                        format!("({col} = {p})")
                    }
                }
            };
        }
        let x = match subject {
            TextSubject::Field(f) => text_column(*f).0.to_owned(),
            TextSubject::Attr(key) => {
                let k = self.bind(SqlParam::Text(key.clone()));
                format!(
                    "(CASE WHEN jsonb_typeof(c.attributes -> {k}) = 'string' THEN c.attributes ->> {k} END)"
                )
            }
        };
        if *op == TextOp::Exists {
            return format!("COALESCE({x} <> '', FALSE)");
        }
        let (x, value): (String, fn(&str) -> String) = if fold_case {
            (folded(&x), fold)
        } else {
            (x, str::to_owned)
        };
        match op {
            TextOp::Eq(v) => {
                let p = self.bind(SqlParam::Text(value(v)));
                format!("COALESCE({x} = {p}, FALSE)")
            }
            TextOp::In(vs) => {
                let p = self.bind(SqlParam::TextArray(vs.iter().map(|v| value(v)).collect()));
                format!("COALESCE({x} = ANY({p}), FALSE)")
            }
            TextOp::Contains(v) => {
                let p = self.bind(SqlParam::Text(value(v)));
                format!("COALESCE(strpos({x}, {p}) > 0, FALSE)")
            }
            TextOp::StartsWith(v) => {
                let p = self.bind(SqlParam::Text(value(v)));
                format!("COALESCE(starts_with({x}, {p}), FALSE)")
            }
            TextOp::EndsWith(v) => {
                let p = self.bind(SqlParam::Text(value(v)));
                format!("COALESCE(right({x}, char_length({p})) = {p}, FALSE)")
            }
            TextOp::Exists => unreachable!("handled above"),
        }
    }

    fn number(&mut self, key: &str, op: &NumberOp) -> String {
        if let NumberOp::Eq(n) = op {
            return self.contains_json(key, Value::Number(n.clone()));
        }
        let a = self.attr(key);
        if *op == NumberOp::Exists {
            return format!("COALESCE(jsonb_typeof({a}) = 'number', FALSE)");
        }
        let x = format!("(CASE WHEN jsonb_typeof({a}) = 'number' THEN ({a})::numeric END)");
        match op {
            NumberOp::In(ns) => {
                let p = self.bind(SqlParam::TextArray(
                    ns.iter().map(|n| n.to_string()).collect(),
                ));
                format!("COALESCE({x} = ANY({p}::numeric[]), FALSE)")
            }
            NumberOp::Cmp(cmp, n) => {
                let p = self.bind(SqlParam::Text(n.to_string()));
                format!("COALESCE({x} {} {p}::numeric, FALSE)", cmp.sql())
            }
            NumberOp::Between(lo, hi) => {
                let lo = self.bind(SqlParam::Text(lo.to_string()));
                let hi = self.bind(SqlParam::Text(hi.to_string()));
                format!("COALESCE({x} BETWEEN {lo}::numeric AND {hi}::numeric, FALSE)")
            }
            NumberOp::Eq(_) | NumberOp::Exists => unreachable!("handled above"),
        }
    }

    fn date(&mut self, key: &str, op: &DateOp) -> String {
        if let DateOp::Eq(d) = op {
            return self.contains_json(key, Value::String(format_date(*d)));
        }
        let k = self.bind(SqlParam::Text(key.to_owned()));
        // The stored string if it has the YYYY-MM-DD shape (compared byte-wise, COLLATE "C").
        let x = format!(
            "(CASE WHEN jsonb_typeof(c.attributes -> {k}) = 'string' AND (c.attributes ->> {k}) ~ '{DATE_SHAPE}' THEN c.attributes ->> {k} END)"
        );
        let between = |c: &mut Self, lo: NaiveDate, hi: NaiveDate| {
            let lo = c.bind(SqlParam::Text(format_date(lo)));
            let hi = c.bind(SqlParam::Text(format_date(hi)));
            format!("COALESCE({x} COLLATE \"C\" BETWEEN {lo} AND {hi}, FALSE)")
        };
        match op {
            DateOp::In(ds) => {
                let p = self.bind(SqlParam::TextArray(
                    ds.iter().map(|d| format_date(*d)).collect(),
                ));
                format!("COALESCE({x} = ANY({p}), FALSE)")
            }
            DateOp::Cmp(cmp, d) => {
                let p = self.bind(SqlParam::Text(format_date(*d)));
                format!("COALESCE({x} COLLATE \"C\" {} {p}, FALSE)", cmp.sql())
            }
            DateOp::Between(lo, hi) => between(self, *lo, *hi),
            DateOp::WithinLast(rel) => {
                let (start, end) = rel.window(self.now);
                between(self, start.date_naive(), end.date_naive())
            }
            DateOp::Exists => format!("({x} IS NOT NULL)"),
            DateOp::Eq(_) => unreachable!("handled above"),
        }
    }

    fn list(&mut self, subject: &ListSubject, op: &ListOp, ignore_case: bool) -> String {
        let values: Vec<String> = match op {
            ListOp::Has(v) => vec![v.clone()],
            ListOp::In(vs) => vs.clone(),
            ListOp::Exists => {
                return match subject {
                    ListSubject::Tags => "(cardinality(c.tags) > 0)".to_owned(),
                    ListSubject::Attr(key) => {
                        let a = self.attr(key);
                        format!(
                            "COALESCE(CASE WHEN jsonb_typeof({a}) = 'array' THEN jsonb_array_length({a}) > 0 END, FALSE)"
                        )
                    }
                };
            }
        };
        if !ignore_case {
            match (subject, op) {
                (ListSubject::Tags, ListOp::Has(_)) => {
                    let p = self.bind(SqlParam::TextArray(values));
                    return format!("(c.tags @> {p})");
                }
                (ListSubject::Tags, _) => {
                    let p = self.bind(SqlParam::TextArray(values));
                    return format!("(c.tags && {p})");
                }
                (ListSubject::Attr(key), ListOp::Has(v)) => {
                    return self.contains_json(key, json!([v]));
                }
                _ => {}
            }
        }
        let values: Vec<String> = if ignore_case {
            values.iter().map(|v| fold(v)).collect()
        } else {
            values
        };
        let (from, guard, element) = match subject {
            ListSubject::Tags => ("unnest(c.tags) AS e(v)".to_owned(), "", "e.v"),
            ListSubject::Attr(key) => {
                let a = self.attr(key);
                (
                    format!(
                        "jsonb_array_elements(CASE WHEN jsonb_typeof({a}) = 'array' THEN {a} ELSE '[]'::jsonb END) AS e(v)"
                    ),
                    "jsonb_typeof(e.v) = 'string' AND ",
                    "(e.v #>> '{}')",
                )
            }
        };
        let element = if ignore_case {
            folded(element)
        } else {
            element.to_owned()
        };
        let p = self.bind(SqlParam::TextArray(values));
        format!("EXISTS (SELECT 1 FROM {from} WHERE {guard}{element} = ANY({p}))")
    }

    fn in_segment(&mut self, id: Uuid, path: &str) -> String {
        let value_path = format!("{path}.value");
        match self.resolver.resolve(id) {
            None => {
                self.error(value_path, format!("segment {id} does not exist"));
                "FALSE".to_owned()
            }
            Some(SegmentRef::Static) => {
                let p = self.bind(SqlParam::Uuid(id));
                format!(
                    "EXISTS (SELECT 1 FROM segmentation.segment_members m WHERE m.tenant_id = c.tenant_id AND m.segment_id = {p} AND m.contact_id = c.id)"
                )
            }
            Some(SegmentRef::Dynamic(criteria)) => {
                if let Some(i) = self.stack.iter().position(|s| *s == id) {
                    let cycle: Vec<String> = self.stack[i..]
                        .iter()
                        .chain([&id])
                        .map(Uuid::to_string)
                        .collect();
                    self.error(
                        value_path,
                        format!("segment reference cycle: {}", cycle.join(" -> ")),
                    );
                    return "FALSE".to_owned();
                }
                if self.stack.len() >= MAX_SEGMENT_NESTING {
                    self.error(
                        value_path,
                        format!(
                            "segments nest through in_segment more than {MAX_SEGMENT_NESTING} levels deep"
                        ),
                    );
                    return "FALSE".to_owned();
                }
                self.nodes += criteria.node_count();
                if self.nodes > MAX_COMPILED_NODES {
                    self.error(
                        value_path,
                        format!(
                            "with the segments it references, the criteria have more than {MAX_COMPILED_NODES} conditions and groups"
                        ),
                    );
                    return "FALSE".to_owned();
                }
                let outermost = self.origin.is_none();
                if outermost {
                    self.origin = Some(value_path);
                }
                self.stack.push(id);
                let sql = self.node(&criteria.root);
                self.stack.pop();
                if outermost {
                    self.origin = None;
                }
                format!("({sql})")
            }
        }
    }
}
