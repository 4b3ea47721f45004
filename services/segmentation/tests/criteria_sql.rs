//! Property test: for random catalogs, contacts and criteria trees, the compiled SQL run on a
//! real PostgreSQL (as the app role, under row-level security) selects exactly the contacts the
//! in-memory evaluator selects.
//!
//! One test database for the whole run; each case inserts its contacts (plus another tenant's and
//! some soft-deleted ones, which must never be selected) inside a transaction that is rolled back.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Duration, FixedOffset, SecondsFormat, TimeZone, Utc};
use cos_segmentation::domain::attributes::{
    AttributeCatalog, AttributeType, Channel, ConsentState,
};
use cos_segmentation::domain::criteria::{
    BindParams, EvalContact, Limits, SegmentRef, compile, evaluate, parse,
};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use uuid::Uuid;

// ----------------------------------------------------------------------------- value pools

/// Strings with LIKE wildcards, escapes, quotes, mixed case, non-ASCII and the empty string.
const STRINGS: &[&str] = &[
    "",
    "a",
    "A",
    "ab",
    "Ab",
    "AB",
    "aB%",
    "a_b",
    "a\\b",
    "%",
    "_",
    "\\",
    "it's",
    "\"q\"",
    "x%y",
    "Ä",
    "ä",
    "straße",
    "STRASSE",
    "École",
    "école",
    "💥",
    " a ",
    "O'Brien",
    "' OR 1=1 --",
    "a%b_c\\d",
    "Ab_C",
    "b",
];
/// Extra needles for contains / starts_with / ends_with.
const FRAGMENTS: &[&str] = &[
    "A%", "%b", "_c", "b_", "\\d", "'", "E", "e", "ss", "SS", "cole", "1",
];
const TAGS: &[&str] = &[
    "vip", "VIP", "Vip", "beta", "b%", "b_", "x\\y", "it's", "Ünï", "ünï",
];
const EMAIL_LOCALS: &[&str] = &["Ada", "bob", "ÄRGER", "c_d", "e%f"];
const EMAIL_DOMAINS: &[&str] = &["Example.com", "ex_ample.org"];
const KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", "k5"];
/// `within_last` units and amounts that land on the grid of stored timestamps.
const UNITS: [(&str, u32, u32); 5] = [
    ("minutes", 60, 72),
    ("hours", 1, 72),
    ("days", 1, 100),
    ("weeks", 1, 15),
    ("months", 1, 4),
];

fn numbers() -> Vec<Value> {
    vec![
        json!(-1.5),
        json!(0),
        json!(1),
        json!(1.0),
        json!(2),
        json!(2.5),
        json!(10),
        json!(-0.0),
        json!(1e20),
        json!(0.1),
        json!(0.30000000000000004),
        json!(123456789012i64),
        json!(-7),
    ]
}

fn needles() -> Vec<String> {
    STRINGS
        .iter()
        .chain(FRAGMENTS)
        .filter(|s| !s.is_empty())
        .map(|s| (*s).to_owned())
        .collect()
}

fn base_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 34, 56).unwrap() + Duration::nanoseconds(789_012_345)
}

// ----------------------------------------------------------------------------- generated data

#[derive(Debug, Clone)]
struct GenContact {
    email_local: Option<(String, String, u8)>,
    phone: Option<String>,
    external_id: Option<String>,
    names: [String; 4],
    attributes: Vec<Option<Value>>,
    tags: Vec<String>,
    consent: [ConsentState; 3],
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    last_activity: Option<DateTime<Utc>>,
    deleted: bool,
    in_static: bool,
}

#[derive(Debug, Clone)]
struct Case {
    now: DateTime<Utc>,
    types: Vec<AttributeType>,
    contacts: Vec<GenContact>,
    dynamic: Value,
    criteria: Vec<Value>,
}

fn types() -> BoxedStrategy<AttributeType> {
    select(AttributeType::ALL.to_vec()).boxed()
}

fn consent_state() -> BoxedStrategy<ConsentState> {
    select(ConsentState::ALL.to_vec()).boxed()
}

fn date_string(now: DateTime<Utc>) -> BoxedStrategy<String> {
    (-10i64..120)
        .prop_map(move |k| {
            (now.date_naive() - Duration::days(k))
                .format("%Y-%m-%d")
                .to_string()
        })
        .boxed()
}

/// A stored value of the given type.
fn typed_value(ty: AttributeType, now: DateTime<Utc>) -> BoxedStrategy<Value> {
    match ty {
        AttributeType::String => select(STRINGS.to_vec()).prop_map(|s| json!(s)).boxed(),
        AttributeType::Number => select(numbers()).boxed(),
        AttributeType::Boolean => any::<bool>().prop_map(Value::Bool).boxed(),
        AttributeType::Date => prop_oneof![
            8 => date_string(now).prop_map(Value::String),
            1 => select(vec!["2026-02-30", "soon", "2026-1-2", ""]).prop_map(|s| json!(s)),
        ]
        .boxed(),
        AttributeType::StringList => prop_oneof![
            8 => prop::collection::vec(select(STRINGS.to_vec()), 0..4).prop_map(|v| json!(v)),
            1 => select(STRINGS.to_vec()).prop_map(|s| json!([s, 1, [s], null])),
        ]
        .boxed(),
    }
}

/// Missing, the right type, or (a bad row) some other JSON value.
fn stored_value(ty: AttributeType, now: DateTime<Utc>) -> BoxedStrategy<Option<Value>> {
    let wrong: Vec<BoxedStrategy<Value>> = AttributeType::ALL
        .into_iter()
        .filter(|t| *t != ty)
        .map(|t| typed_value(t, now))
        .chain([Just(Value::Null).boxed(), Just(json!({"x": 1})).boxed()])
        .collect();
    prop_oneof![
        2 => Just(None),
        7 => typed_value(ty, now).prop_map(Some),
        2 => proptest::strategy::Union::new(wrong).prop_map(Some),
    ]
    .boxed()
}

/// A stored timestamp on a grid that criteria bounds hit exactly: whole hours or days before
/// `now` (or after it, for `future`), UTC midnights, sometimes off the grid by some microseconds.
fn stored_time(now: DateTime<Utc>, future: bool) -> BoxedStrategy<DateTime<Utc>> {
    let earliest = if future { -24i64 } else { 0 };
    let on_grid = prop_oneof![
        (earliest..72).prop_map(move |h| now - Duration::hours(h)),
        (earliest / 24..100).prop_map(move |d| now - Duration::days(d)),
        (earliest / 24..100).prop_map(move |d| {
            (now.date_naive() - Duration::days(d))
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
        }),
    ];
    (
        on_grid,
        prop_oneof![3 => Just(0i64), 1 => -86_400_000_000i64..86_400_000_000],
    )
        .prop_map(|(t, micros)| t + Duration::microseconds(micros))
        .boxed()
}

fn contact(types: &[AttributeType], now: DateTime<Utc>) -> BoxedStrategy<GenContact> {
    let attrs: Vec<BoxedStrategy<Option<Value>>> =
        types.iter().map(|t| stored_value(*t, now)).collect();
    let strings = || select(STRINGS.to_vec()).prop_map(str::to_owned);
    let identity = (
        prop::option::of((
            select(EMAIL_LOCALS.to_vec()).prop_map(str::to_owned),
            select(EMAIL_DOMAINS.to_vec()).prop_map(str::to_owned),
            0u8..3,
        )),
        prop::option::of(select(vec!["+1555", "+44 20 %", "_0"]).prop_map(str::to_owned)),
        prop::option::of(strings()),
        [strings(), strings(), strings(), strings()],
    );
    let rest = (
        attrs,
        prop::collection::vec(select(TAGS.to_vec()).prop_map(str::to_owned), 0..4),
        [consent_state(), consent_state(), consent_state()],
        stored_time(now, false),
        stored_time(now, false),
        prop::option::of(stored_time(now, true)),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.4),
    );
    (identity, rest)
        .prop_map(
            |(
                (email_local, phone, external_id, names),
                (attributes, tags, consent, created, updated, last_activity, deleted, in_static),
            )| GenContact {
                email_local,
                phone,
                external_id,
                names,
                attributes,
                tags,
                consent,
                created,
                updated,
                last_activity,
                deleted,
                in_static,
            },
        )
        .boxed()
}

// ----------------------------------------------------------------------------- criteria

fn with_value(field: Option<&str>, op: &str, value: Option<Value>, ignore_case: bool) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(f) = field {
        m.insert("field".into(), json!(f));
    }
    m.insert("op".into(), json!(op));
    if let Some(v) = value {
        m.insert("value".into(), v);
    }
    if ignore_case {
        m.insert("ignore_case".into(), json!(true));
    }
    Value::Object(m)
}

/// A condition on a string field with needles from `values`.
fn text_cond(field: &str, values: BoxedStrategy<String>) -> BoxedStrategy<Value> {
    const OPS: [&str; 9] = [
        "eq",
        "neq",
        "in",
        "not_in",
        "contains",
        "starts_with",
        "ends_with",
        "exists",
        "not_exists",
    ];
    let field = field.to_owned();
    (
        select(OPS.to_vec()),
        values.clone(),
        prop::collection::vec(values, 1..4),
        any::<bool>(),
    )
        .prop_map(move |(op, v, vs, ic)| match op {
            "exists" | "not_exists" => with_value(Some(&field), op, None, false),
            "in" | "not_in" => with_value(Some(&field), op, Some(json!(vs)), ic),
            _ => with_value(Some(&field), op, Some(json!(v)), ic),
        })
        .boxed()
}

fn relative() -> BoxedStrategy<Value> {
    (select(UNITS.to_vec()), any::<u32>())
        .prop_map(|((unit, step, max), n)| json!({"amount": step * (1 + n % max), "unit": unit}))
        .boxed()
}

/// A timestamp value: a UTC day, or an instant on the hour grid around `now` (so bounds meet
/// stored values exactly), sometimes with sub-microsecond digits, in some time zone.
fn time_value(now: DateTime<Utc>) -> BoxedStrategy<(DateTime<Utc>, String)> {
    prop_oneof![
        (-2i64..100).prop_map(move |k| {
            let d = now.date_naive() - Duration::days(k);
            (
                d.and_hms_opt(0, 0, 0).unwrap().and_utc(),
                d.format("%Y-%m-%d").to_string(),
            )
        }),
        (
            prop_oneof![-24i64..72, (-1i64..100).prop_map(|d| d * 24)],
            prop_oneof![
                3 => Just(0i64),
                1 => -999i64..999,
                1 => -1_000_000_000i64..1_000_000_000
            ],
            select(vec![0, 7200, -19800]),
        )
            .prop_map(move |(k, nanos, offset)| {
                let t = now - Duration::hours(k) + Duration::nanoseconds(nanos);
                let tz = FixedOffset::east_opt(offset).unwrap();
                (
                    t,
                    t.with_timezone(&tz)
                        .to_rfc3339_opts(SecondsFormat::AutoSi, offset == 0),
                )
            }),
    ]
    .boxed()
}

fn time_cond(field: &'static str, now: DateTime<Utc>) -> BoxedStrategy<Value> {
    const OPS: [&str; 10] = [
        "gt",
        "gte",
        "lt",
        "lte",
        "before",
        "after",
        "between",
        "within_last",
        "exists",
        "not_exists",
    ];
    (
        select(OPS.to_vec()),
        time_value(now),
        time_value(now),
        relative(),
    )
        .prop_map(move |(op, a, b, rel)| match op {
            "exists" | "not_exists" => with_value(Some(field), op, None, false),
            "within_last" => with_value(Some(field), op, Some(rel), false),
            "between" => {
                let (lo, hi) = if a.0 <= b.0 { (a, b) } else { (b, a) };
                with_value(Some(field), op, Some(json!([lo.1, hi.1])), false)
            }
            _ => with_value(Some(field), op, Some(json!(a.1)), false),
        })
        .boxed()
}

fn attribute_cond(key: &str, ty: AttributeType, now: DateTime<Utc>) -> BoxedStrategy<Value> {
    let field = format!("attributes.{key}");
    match ty {
        AttributeType::String => text_cond(&field, select(needles()).boxed()),
        AttributeType::Number => {
            const OPS: [&str; 11] = [
                "eq",
                "neq",
                "in",
                "not_in",
                "gt",
                "gte",
                "lt",
                "lte",
                "between",
                "exists",
                "not_exists",
            ];
            (
                select(OPS.to_vec()),
                select(numbers()),
                select(numbers()),
                prop::collection::vec(select(numbers()), 1..4),
            )
                .prop_map(move |(op, a, b, ns)| match op {
                    "exists" | "not_exists" => with_value(Some(&field), op, None, false),
                    "in" | "not_in" => with_value(Some(&field), op, Some(json!(ns)), false),
                    "between" => {
                        let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                        let pair = if x <= y { json!([a, b]) } else { json!([b, a]) };
                        with_value(Some(&field), op, Some(pair), false)
                    }
                    _ => with_value(Some(&field), op, Some(a), false),
                })
                .boxed()
        }
        AttributeType::Boolean => (
            select(vec!["eq", "neq", "exists", "not_exists"]),
            any::<bool>(),
        )
            .prop_map(move |(op, b)| match op {
                "exists" | "not_exists" => with_value(Some(&field), op, None, false),
                _ => with_value(Some(&field), op, Some(json!(b)), false),
            })
            .boxed(),
        AttributeType::Date => {
            const OPS: [&str; 14] = [
                "eq",
                "neq",
                "in",
                "not_in",
                "gt",
                "gte",
                "lt",
                "lte",
                "before",
                "after",
                "between",
                "within_last",
                "exists",
                "not_exists",
            ];
            (
                select(OPS.to_vec()),
                date_string(now),
                date_string(now),
                prop::collection::vec(date_string(now), 1..4),
                relative(),
            )
                .prop_map(move |(op, a, b, ds, rel)| match op {
                    "exists" | "not_exists" => with_value(Some(&field), op, None, false),
                    "in" | "not_in" => with_value(Some(&field), op, Some(json!(ds)), false),
                    "within_last" => with_value(Some(&field), op, Some(rel), false),
                    "between" => {
                        let pair = if a <= b { json!([a, b]) } else { json!([b, a]) };
                        with_value(Some(&field), op, Some(pair), false)
                    }
                    _ => with_value(Some(&field), op, Some(json!(a)), false),
                })
                .boxed()
        }
        AttributeType::StringList => list_cond(Some(field), "contains", select(needles()).boxed()),
    }
}

fn list_cond(
    field: Option<String>,
    has: &'static str,
    values: BoxedStrategy<String>,
) -> BoxedStrategy<Value> {
    (
        select(vec![has, "in", "not_in", "exists", "not_exists"]),
        values.clone(),
        prop::collection::vec(values, 1..4),
        any::<bool>(),
    )
        .prop_map(move |(op, v, vs, ic)| {
            let field = field.as_deref().unwrap_or("tags");
            match op {
                "exists" | "not_exists" => with_value(Some(field), op, None, false),
                "in" | "not_in" => with_value(Some(field), op, Some(json!(vs)), ic),
                _ if field == "tags" => with_value(None, op, Some(json!(v)), ic),
                _ => with_value(Some(field), op, Some(json!(v)), ic),
            }
        })
        .boxed()
}

fn leaf(
    types: &[AttributeType],
    now: DateTime<Utc>,
    segments: &[Uuid],
    contacts: usize,
) -> BoxedStrategy<Value> {
    let n = contacts.max(1);
    let emails = prop_oneof![
        (
            select(EMAIL_LOCALS.to_vec()),
            0..n,
            select(EMAIL_DOMAINS.to_vec()),
            any::<bool>()
        )
            .prop_map(|(l, i, d, upper)| {
                let e = format!("{l}{i}@{d}");
                if upper { e.to_uppercase() } else { e }
            }),
        select(vec![
            "ada", "@EXAMPLE", "_", "%", "1@", "ärger", "ÄRGER", ".org", "e%f"
        ])
        .prop_map(str::to_owned),
    ]
    .boxed();
    let phones = prop_oneof![
        (select(vec!["+1555", "+44 20 %", "_0"]), 0..n).prop_map(|(p, i)| format!("{p}{i}")),
        select(vec!["+1555", "%", "_", "5"]).prop_map(str::to_owned),
    ]
    .boxed();
    let external = prop_oneof![
        (select(STRINGS.to_vec()), 0..n).prop_map(|(s, i)| format!("{s}-{i}")),
        select(needles()),
    ]
    .boxed();
    let mut leaves: Vec<BoxedStrategy<Value>> = vec![
        text_cond("email", emails),
        text_cond("phone", phones),
        text_cond("external_id", external),
        text_cond("first_name", select(needles()).boxed()),
        text_cond("last_name", select(needles()).boxed()),
        text_cond("locale", select(needles()).boxed()),
        text_cond("time_zone", select(needles()).boxed()),
        time_cond("created_at", now),
        time_cond("updated_at", now),
        time_cond("last_activity_at", now),
        list_cond(
            None,
            "has_tag",
            select(TAGS.to_vec()).prop_map(str::to_owned).boxed(),
        ),
        (select(vec!["email", "sms", "push"]), consent_state())
            .prop_map(|(ch, st)| with_value(Some(ch), "consent", Some(json!(st.as_str())), false))
            .boxed(),
    ];
    for (key, ty) in KEYS.iter().zip(types) {
        leaves.push(attribute_cond(key, *ty, now));
    }
    if !segments.is_empty() {
        leaves.push(
            select(segments.to_vec())
                .prop_map(|id| with_value(None, "in_segment", Some(json!(id.to_string())), false))
                .boxed(),
        );
    }
    proptest::strategy::Union::new(leaves).boxed()
}

fn tree(leaf: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|xs| json!({"all": xs})),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|xs| json!({"any": xs})),
            inner.prop_map(|x| json!({"not": x})),
        ]
    })
    .boxed()
}

const STATIC_SEGMENT: Uuid = Uuid::from_u128(0x5757);
const DYNAMIC_SEGMENT: Uuid = Uuid::from_u128(0xd1d1);

fn case() -> impl Strategy<Value = Case> {
    (
        (0i64..10_000_000, -1_000_000_000i64..1_000_000_000),
        prop::collection::vec(types(), KEYS.len()),
        30usize..60,
    )
        .prop_flat_map(|((secs, nanos), types, n)| {
            let now = base_now() + Duration::seconds(secs) + Duration::nanoseconds(nanos);
            let contacts = prop::collection::vec(contact(&types, now), n);
            // The dynamic segment may use the static one; the criteria may use both.
            let dynamic = tree(leaf(&types, now, &[STATIC_SEGMENT], n));
            let criteria = prop::collection::vec(
                tree(leaf(&types, now, &[STATIC_SEGMENT, DYNAMIC_SEGMENT], n)),
                12,
            );
            (Just(now), Just(types), contacts, dynamic, criteria)
        })
        .prop_map(|(now, types, contacts, dynamic, criteria)| Case {
            now,
            types,
            contacts,
            dynamic,
            criteria,
        })
}

// ----------------------------------------------------------------------------- the check

fn build_contact(i: usize, g: &GenContact) -> EvalContact {
    let email_normalized = g
        .email_local
        .as_ref()
        .map(|(l, d, _)| format!("{l}{i}@{d}").trim().to_lowercase());
    // Every contact needs one identifier; identifiers are unique per tenant.
    let external_id = match (&g.external_id, &email_normalized, &g.phone) {
        (Some(x), _, _) => Some(format!("{x}-{i}")),
        (None, None, None) => Some(format!("id-{i}")),
        _ => None,
    };
    let [first_name, last_name, locale, time_zone] = g.names.clone();
    EvalContact {
        id: Uuid::from_u128(0xc0_0000 + i as u128),
        email_normalized,
        phone: g.phone.as_ref().map(|p| format!("{p}{i}")),
        external_id,
        first_name,
        last_name,
        locale,
        time_zone,
        attributes: KEYS
            .iter()
            .zip(&g.attributes)
            .filter_map(|(k, v)| v.clone().map(|v| ((*k).to_owned(), v)))
            .collect(),
        tags: g.tags.clone(),
        consent: Channel::ALL.into_iter().zip(g.consent).collect(),
        created_at: g.created,
        updated_at: g.updated,
        last_activity_at: g.last_activity,
    }
}

/// The stored email: the normalised one with some letters upper-cased again.
fn stored_email(g: &GenContact, normalized: &str) -> String {
    match g.email_local.as_ref().map(|e| e.2) {
        Some(1) => normalized.to_uppercase(),
        Some(2) => format!("  {normalized}"),
        _ => normalized.to_owned(),
    }
}

async fn insert_contact(
    conn: &mut PgConnection,
    tenant: Uuid,
    c: &EvalContact,
    g: &GenContact,
) -> Result<(), sqlx::Error> {
    let consent = |ch: Channel| c.consent.get(&ch).copied().unwrap_or_default().as_str();
    sqlx::query(
        "INSERT INTO segmentation.contacts (tenant_id, id, email, email_normalized, phone, \
         external_id, first_name, last_name, locale, time_zone, attributes, tags, email_consent, \
         sms_consent, push_consent, created_at, updated_at, last_activity_at, deleted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
    )
    .bind(tenant)
    .bind(c.id)
    .bind(c.email_normalized.as_ref().map(|e| stored_email(g, e)))
    .bind(&c.email_normalized)
    .bind(&c.phone)
    .bind(&c.external_id)
    .bind(&c.first_name)
    .bind(&c.last_name)
    .bind(&c.locale)
    .bind(&c.time_zone)
    .bind(Value::Object(c.attributes.clone()))
    .bind(&c.tags)
    .bind(consent(Channel::Email))
    .bind(consent(Channel::Sms))
    .bind(consent(Channel::Push))
    .bind(c.created_at)
    .bind(c.updated_at)
    .bind(c.last_activity_at)
    .bind(g.deleted.then_some(c.updated_at))
    .execute(conn)
    .await?;
    Ok(())
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

async fn check(conn: &mut PgConnection, case: &Case) -> Result<(), TestCaseError> {
    let catalog: AttributeCatalog = KEYS
        .iter()
        .map(|k| (*k).to_owned())
        .zip(case.types.iter().copied())
        .collect();
    let limits = Limits::default();
    let tenant = Uuid::new_v4();
    let other_tenant = Uuid::new_v4();
    let contacts: Vec<EvalContact> = case
        .contacts
        .iter()
        .enumerate()
        .map(|(i, g)| build_contact(i, g))
        .collect();
    let members: HashSet<(Uuid, Uuid)> = contacts
        .iter()
        .zip(&case.contacts)
        .filter(|(_, g)| g.in_static)
        .map(|(c, _)| (STATIC_SEGMENT, c.id))
        .collect();
    let dynamic = parse(&case.dynamic, &catalog, &limits)
        .map_err(|e| fail(format!("generated dynamic criteria do not parse: {e:?}")))?;
    let segments = HashMap::from([
        (STATIC_SEGMENT, SegmentRef::Static),
        (DYNAMIC_SEGMENT, SegmentRef::Dynamic(dynamic)),
    ]);

    let mut tx = conn.begin().await.map_err(fail)?;
    for t in [tenant, other_tenant] {
        sqlx::query(
            "INSERT INTO segmentation.segments (tenant_id, id, name, kind) VALUES ($1, $2, 'static', 'static')",
        )
        .bind(t)
        .bind(STATIC_SEGMENT)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    }
    for (c, g) in contacts.iter().zip(&case.contacts) {
        insert_contact(&mut tx, tenant, c, g).await.map_err(fail)?;
        // The same contact in another tenant (in the static segment there too): never selected.
        insert_contact(&mut tx, other_tenant, c, g)
            .await
            .map_err(fail)?;
        for t in [tenant, other_tenant] {
            if g.in_static {
                sqlx::query(
                    "INSERT INTO segmentation.segment_members (tenant_id, segment_id, contact_id) VALUES ($1, $2, $3)",
                )
                .bind(t)
                .bind(STATIC_SEGMENT)
                .bind(c.id)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            }
        }
    }
    // Query as the application role, under row-level security, like the service does.
    sqlx::query("SET LOCAL ROLE cos_app")
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await
        .map_err(fail)?;

    for json in &case.criteria {
        let criteria = parse(json, &catalog, &limits)
            .map_err(|e| fail(format!("generated criteria do not parse: {e:?}\n{json}")))?;
        let again = parse(&criteria.to_json(), &catalog, &limits)
            .map_err(|e| fail(format!("canonical JSON does not parse: {e:?}")))?;
        prop_assert_eq!(&again, &criteria, "canonical JSON round trip");

        let compiled = compile(&criteria, &segments, case.now, 2)
            .map_err(|e| fail(format!("does not compile: {e:?}\n{json}")))?;
        let sql = format!(
            "SELECT c.id FROM segmentation.contacts c \
             WHERE c.tenant_id = $1 AND c.deleted_at IS NULL AND ({})",
            compiled.sql
        );
        let from_sql: BTreeSet<Uuid> = sqlx::query_scalar::<_, Uuid>(AssertSqlSafe(sql))
            .bind(tenant)
            .bind_params(&compiled.params)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| {
                fail(format!(
                    "query failed: {e}\n{}\n{:?}",
                    compiled.sql, compiled.params
                ))
            })?
            .into_iter()
            .collect();
        let from_eval: BTreeSet<Uuid> = contacts
            .iter()
            .zip(&case.contacts)
            .filter(|(_, g)| !g.deleted)
            .filter(|(c, _)| evaluate(&criteria, c, &segments, &members, case.now))
            .map(|(c, _)| c.id)
            .collect();
        prop_assert_eq!(
            &from_sql,
            &from_eval,
            "criteria {}\nsql {}\nparams {:?}",
            json,
            compiled.sql,
            compiled.params
        );
    }
    tx.rollback().await.map_err(fail)?;
    Ok(())
}

#[test]
fn compiled_sql_selects_what_the_evaluator_selects() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fingerprint = format!(
        "{}_{}_crit",
        cos_db::migrations_fingerprint([(cos_segmentation::SCHEMA, &cos_segmentation::MIGRATOR)]),
        cos_db::text_fingerprint(&[cos_db::BOOTSTRAP_REVISION]),
    );
    let db = rt
        .block_on(cos_testkit::TestDatabase::create(
            &fingerprint,
            |url| async move {
                let mut conn = PgConnection::connect(&url).await?;
                cos_db::bootstrap(&mut conn, "cos_app").await?;
                cos_segmentation::migrate(&mut conn, "cos_app").await?;
                conn.close().await?;
                Ok(())
            },
        ))
        .expect("test database");
    let conn = RefCell::new(
        rt.block_on(PgConnection::connect(&db.url))
            .expect("connect to the test database"),
    );

    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        rt.block_on(check(&mut conn.borrow_mut(), &case))
    });

    rt.block_on(async {
        let _ = conn.into_inner().close().await;
        db.drop_database().await
    })
    .expect("drop the test database");
    if let Err(e) = result {
        panic!("{e}");
    }
}
