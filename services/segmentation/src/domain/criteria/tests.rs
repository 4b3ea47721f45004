use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::domain::attributes::{AttributeCatalog, AttributeType, Channel, ConsentState};

fn catalog() -> AttributeCatalog {
    [
        ("plan", AttributeType::String),
        ("score", AttributeType::Number),
        ("vip", AttributeType::Boolean),
        ("birthday", AttributeType::Date),
        ("interests", AttributeType::StringList),
    ]
    .into_iter()
    .map(|(k, t)| (k.to_owned(), t))
    .collect()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
}

fn contact() -> EvalContact {
    let attributes = json!({
        "plan": "Pro_Plan%",
        "score": 42.5,
        "vip": true,
        "birthday": "1990-03-01",
        "interests": ["Cooking", "travel"],
    });
    EvalContact {
        id: Uuid::from_u128(1),
        email_normalized: Some("ada@example.com".into()),
        phone: Some("+15550001".into()),
        external_id: None,
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        locale: "en-GB".into(),
        time_zone: String::new(),
        attributes: attributes.as_object().unwrap().clone(),
        tags: vec!["vip".into(), "beta".into()],
        consent: BTreeMap::from([
            (Channel::Email, ConsentState::Subscribed),
            (Channel::Sms, ConsentState::Unsubscribed),
        ]),
        created_at: Utc.with_ymd_and_hms(2026, 1, 10, 8, 30, 0).unwrap(),
        updated_at: Utc.with_ymd_and_hms(2026, 3, 14, 23, 0, 0).unwrap(),
        last_activity_at: Some(Utc.with_ymd_and_hms(2026, 3, 10, 9, 0, 0).unwrap()),
    }
}

fn ok(v: Value) -> Criteria {
    parse(&v, &catalog(), &Limits::default()).unwrap_or_else(|e| panic!("{v} should parse: {e:?}"))
}

fn errs(v: Value) -> Vec<CriteriaError> {
    match parse(&v, &catalog(), &Limits::default()) {
        Ok(c) => panic!("{v} should not parse, got {c:?}"),
        Err(e) => e,
    }
}

fn no_segments() -> HashMap<Uuid, SegmentRef> {
    HashMap::new()
}

fn eval(v: Value, c: &EvalContact) -> bool {
    let criteria = ok(v.clone());
    // Everything that evaluates also compiles, its JSON round-trips, and its SQL is sane.
    let compiled = compile(&criteria, &no_segments(), now(), 2).expect("compiles");
    check_placeholders(&compiled, 2);
    assert_eq!(ok(criteria.to_json()), criteria, "round trip of {v}");
    evaluate(&criteria, c, &no_segments(), &HashSet::new(), now())
}

/// Every `$n` in the SQL is one of the parameters, and every parameter is used.
fn check_placeholders(c: &CompiledSql, first: usize) {
    let mut used = BTreeSet::new();
    let bytes = c.sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            let digits: String = c.sql[i + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let n: usize = digits.parse().expect("placeholder number");
            used.insert(n);
            i += digits.len();
        }
        i += 1;
    }
    let expected: BTreeSet<usize> = (first..first + c.params.len()).collect();
    assert_eq!(used, expected, "{}", c.sql);
}

fn cond(field: &str, op: &str, value: Value) -> Value {
    json!({"field": field, "op": op, "value": value})
}

/// (criteria, expected for `contact()`)
fn check_all(cases: &[(Value, bool)]) {
    let c = contact();
    for (v, expected) in cases {
        assert_eq!(eval(v.clone(), &c), *expected, "{v}");
    }
}

#[test]
fn text_fields() {
    check_all(&[
        (cond("first_name", "eq", json!("Ada")), true),
        (cond("first_name", "eq", json!("ada")), false),
        (
            json!({"field": "first_name", "op": "eq", "value": "ADA", "ignore_case": true}),
            true,
        ),
        (cond("first_name", "neq", json!("Ada")), false),
        (cond("first_name", "neq", json!("Bob")), true),
        (cond("first_name", "in", json!(["Bob", "Ada"])), true),
        (cond("first_name", "not_in", json!(["Bob", "Ada"])), false),
        (cond("first_name", "not_in", json!(["Bob"])), true),
        (
            json!({"field": "last_name", "op": "in", "value": ["LOVELACE"], "ignore_case": true}),
            true,
        ),
        (cond("last_name", "contains", json!("love")), false),
        (cond("last_name", "contains", json!("elac")), true),
        (
            json!({"field": "last_name", "op": "contains", "value": "LOVE", "ignore_case": true}),
            true,
        ),
        (cond("last_name", "starts_with", json!("Love")), true),
        (cond("last_name", "starts_with", json!("lace")), false),
        (cond("last_name", "ends_with", json!("lace")), true),
        (cond("locale", "exists", Value::Null), true),
        (json!({"field": "locale", "op": "not_exists"}), false),
        // Empty is missing.
        (json!({"field": "time_zone", "op": "exists"}), false),
        (json!({"field": "time_zone", "op": "not_exists"}), true),
        (cond("time_zone", "neq", json!("UTC")), true),
        (cond("time_zone", "contains", json!("U")), false),
        // NULL is missing.
        (json!({"field": "external_id", "op": "exists"}), false),
        (cond("external_id", "eq", json!("x")), false),
        (cond("external_id", "neq", json!("x")), true),
        (cond("external_id", "not_in", json!(["x"])), true),
        (cond("phone", "starts_with", json!("+1555")), true),
        (cond("phone", "eq", json!("+15550001")), true),
    ]);
}

#[test]
fn email_is_case_insensitive() {
    check_all(&[
        (cond("email", "eq", json!("Ada@Example.COM")), true),
        (cond("email", "eq", json!("  ada@example.com ")), true),
        (cond("email", "ends_with", json!("@EXAMPLE.com")), true),
        (cond("email", "contains", json!("Ada@")), true),
        (
            cond("email", "in", json!(["bob@x.io", "ADA@example.com"])),
            true,
        ),
        (cond("email", "neq", json!("ADA@example.com")), false),
        (json!({"field": "email", "op": "exists"}), true),
    ]);
    let c = ok(cond("email", "eq", json!("Ada@Example.COM")));
    assert_eq!(c.to_json()["value"], json!("ada@example.com"));
}

#[test]
fn like_wildcards_are_literal() {
    check_all(&[
        (cond("attributes.plan", "contains", json!("_")), true),
        (cond("attributes.plan", "contains", json!("%")), true),
        (cond("attributes.plan", "ends_with", json!("n%")), true),
        (cond("attributes.plan", "starts_with", json!("Pro_")), true),
        (cond("attributes.plan", "starts_with", json!("Pro%")), false),
        (cond("attributes.plan", "contains", json!("\\")), false),
        (cond("first_name", "contains", json!("A%")), false),
        (cond("first_name", "starts_with", json!("_")), false),
    ]);
}

#[test]
fn string_attributes() {
    check_all(&[
        (cond("attributes.plan", "eq", json!("Pro_Plan%")), true),
        (cond("attributes.plan", "eq", json!("pro_plan%")), false),
        (
            json!({"field": "attributes.plan", "op": "eq", "value": "pro_PLAN%", "ignore_case": true}),
            true,
        ),
        (cond("attributes.plan", "neq", json!("free")), true),
        (
            cond("attributes.plan", "in", json!(["free", "Pro_Plan%"])),
            true,
        ),
        (cond("attributes.plan", "not_in", json!(["free"])), true),
        (json!({"field": "attributes.plan", "op": "exists"}), true),
    ]);
    let mut c = contact();
    c.attributes.insert("plan".into(), json!(7));
    for (v, expected) in [
        (cond("attributes.plan", "eq", json!("7")), false),
        (cond("attributes.plan", "neq", json!("7")), true),
        (json!({"field": "attributes.plan", "op": "exists"}), false),
    ] {
        assert_eq!(eval(v.clone(), &c), expected, "wrong-typed value: {v}");
    }
}

#[test]
fn numbers() {
    check_all(&[
        (cond("attributes.score", "eq", json!(42.5)), true),
        (cond("attributes.score", "eq", json!(42)), false),
        (cond("attributes.score", "neq", json!(42)), true),
        (cond("attributes.score", "in", json!([1, 42.5])), true),
        (cond("attributes.score", "not_in", json!([1, 2])), true),
        (cond("attributes.score", "gt", json!(42)), true),
        (cond("attributes.score", "gt", json!(42.5)), false),
        (cond("attributes.score", "gte", json!(42.5)), true),
        (cond("attributes.score", "lt", json!(42.5)), false),
        (cond("attributes.score", "lte", json!(42.5)), true),
        (cond("attributes.score", "lt", json!(100)), true),
        (cond("attributes.score", "between", json!([42.5, 50])), true),
        (cond("attributes.score", "between", json!([0, 42.4])), false),
        (json!({"field": "attributes.score", "op": "exists"}), true),
    ]);
    let mut c = contact();
    c.attributes.insert("score".into(), json!(1.0));
    assert!(eval(cond("attributes.score", "eq", json!(1)), &c));
    assert!(eval(cond("attributes.score", "in", json!([1])), &c));
    c.attributes.insert("score".into(), json!("42.5"));
    assert!(!eval(cond("attributes.score", "gt", json!(1)), &c));
    assert!(eval(cond("attributes.score", "neq", json!(42.5)), &c));
    c.attributes.remove("score");
    assert!(!eval(cond("attributes.score", "lt", json!(1)), &c));
    assert!(eval(
        json!({"field": "attributes.score", "op": "not_exists"}),
        &c
    ));
}

#[test]
fn booleans() {
    check_all(&[
        (cond("attributes.vip", "eq", json!(true)), true),
        (cond("attributes.vip", "eq", json!(false)), false),
        (cond("attributes.vip", "neq", json!(false)), true),
        (json!({"field": "attributes.vip", "op": "exists"}), true),
        (
            json!({"field": "attributes.vip", "op": "not_exists"}),
            false,
        ),
    ]);
    let mut c = contact();
    c.attributes.remove("vip");
    assert!(!eval(cond("attributes.vip", "eq", json!(false)), &c));
    assert!(eval(cond("attributes.vip", "neq", json!(true)), &c));
}

#[test]
fn dates() {
    check_all(&[
        (cond("attributes.birthday", "eq", json!("1990-03-01")), true),
        (
            cond(
                "attributes.birthday",
                "eq",
                json!("1990-03-01T10:00:00+02:00"),
            ),
            true,
        ),
        (
            cond("attributes.birthday", "neq", json!("1990-03-02")),
            true,
        ),
        (
            cond("attributes.birthday", "in", json!(["1990-03-01"])),
            true,
        ),
        (
            cond("attributes.birthday", "not_in", json!(["1990-03-01"])),
            false,
        ),
        (
            cond("attributes.birthday", "before", json!("1990-03-02")),
            true,
        ),
        (
            cond("attributes.birthday", "before", json!("1990-03-01")),
            false,
        ),
        (
            cond("attributes.birthday", "lte", json!("1990-03-01")),
            true,
        ),
        (
            cond("attributes.birthday", "lt", json!("1990-03-01")),
            false,
        ),
        (
            cond("attributes.birthday", "after", json!("1990-02-28")),
            true,
        ),
        (
            cond("attributes.birthday", "gt", json!("1990-03-01")),
            false,
        ),
        (
            cond("attributes.birthday", "gte", json!("1990-03-01")),
            true,
        ),
        (
            cond(
                "attributes.birthday",
                "between",
                json!(["1990-01-01", "1990-03-01"]),
            ),
            true,
        ),
        (
            cond(
                "attributes.birthday",
                "between",
                json!(["1990-03-02", "1991-01-01"]),
            ),
            false,
        ),
        (
            cond(
                "attributes.birthday",
                "within_last",
                json!({"amount": 36, "unit": "months"}),
            ),
            false,
        ),
        (
            json!({"field": "attributes.birthday", "op": "exists"}),
            true,
        ),
    ]);
    let mut c = contact();
    c.attributes.insert("birthday".into(), json!("2026-02-13"));
    let within = |n: u32, unit: &str| {
        cond(
            "attributes.birthday",
            "within_last",
            json!({"amount": n, "unit": unit}),
        )
    };
    assert!(eval(within(30, "days"), &c));
    assert!(!eval(within(29, "days"), &c));
    assert!(!eval(within(1, "months"), &c));
    assert!(eval(within(2, "months"), &c));
    assert!(eval(within(5, "weeks"), &c));
    c.attributes.insert("birthday".into(), json!("2026-03-16"));
    assert!(
        !eval(within(30, "days"), &c),
        "the future is not within the last 30 days"
    );
    c.attributes.insert("birthday".into(), json!("someday"));
    assert!(!eval(
        json!({"field": "attributes.birthday", "op": "exists"}),
        &c
    ));
    assert!(!eval(
        cond("attributes.birthday", "lt", json!("2100-01-01")),
        &c
    ));
}

#[test]
fn timestamps() {
    check_all(&[
        (cond("created_at", "before", json!("2026-01-11")), true),
        (cond("created_at", "before", json!("2026-01-10")), false),
        (cond("created_at", "after", json!("2026-01-09")), true),
        // A date is a whole UTC day.
        (cond("created_at", "after", json!("2026-01-10")), false),
        (cond("created_at", "gte", json!("2026-01-10")), true),
        (cond("created_at", "lte", json!("2026-01-10")), true),
        (
            cond("created_at", "lt", json!("2026-01-10T08:30:00Z")),
            false,
        ),
        (
            cond("created_at", "lte", json!("2026-01-10T08:30:00Z")),
            true,
        ),
        (
            cond("created_at", "gt", json!("2026-01-10T09:29:59+01:00")),
            true,
        ),
        (
            cond("created_at", "between", json!(["2026-01-10", "2026-01-10"])),
            true,
        ),
        (
            cond(
                "created_at",
                "between",
                json!(["2026-01-10T08:30:00.000001Z", "2026-02-01"]),
            ),
            false,
        ),
        (
            cond(
                "updated_at",
                "within_last",
                json!({"amount": 13, "unit": "hours"}),
            ),
            true,
        ),
        (
            cond(
                "updated_at",
                "within_last",
                json!({"amount": 12, "unit": "hours"}),
            ),
            false,
        ),
        (
            cond(
                "updated_at",
                "within_last",
                json!({"amount": 780, "unit": "minutes"}),
            ),
            true,
        ),
        (
            cond(
                "last_activity_at",
                "within_last",
                json!({"amount": 1, "unit": "weeks"}),
            ),
            true,
        ),
        (
            cond(
                "last_activity_at",
                "within_last",
                json!({"amount": 5, "unit": "days"}),
            ),
            false,
        ),
        (json!({"field": "last_activity_at", "op": "exists"}), true),
        (json!({"field": "created_at", "op": "exists"}), true),
    ]);
    let mut c = contact();
    c.last_activity_at = None;
    assert!(!eval(
        cond("last_activity_at", "before", json!("2100-01-01")),
        &c
    ));
    assert!(eval(
        json!({"not": cond("last_activity_at", "before", json!("2100-01-01"))}),
        &c
    ));
    assert!(eval(
        json!({"field": "last_activity_at", "op": "not_exists"}),
        &c
    ));
    // Sub-microsecond digits are dropped, as PostgreSQL does.
    let crit = ok(cond(
        "created_at",
        "lte",
        json!("2026-01-10T08:30:00.0000009Z"),
    ));
    assert_eq!(crit.to_json()["value"], json!("2026-01-10T08:30:00Z"));
}

#[test]
fn lists_and_tags() {
    check_all(&[
        (json!({"op": "has_tag", "value": "vip"}), true),
        // Tags are stored lower-cased, so tag values are lower-cased too.
        (
            json!({"field": "tags", "op": "has_tag", "value": " Beta"}),
            true,
        ),
        (json!({"op": "has_tag", "value": "gamma"}), false),
        (cond("tags", "in", json!(["x", "BETA"])), true),
        (cond("tags", "not_in", json!(["x", "y"])), true),
        (cond("tags", "not_in", json!(["x", "vip"])), false),
        (
            json!({"field": "tags", "op": "in", "value": ["VIP"], "ignore_case": true}),
            true,
        ),
        (json!({"field": "tags", "op": "exists"}), true),
        (
            cond("attributes.interests", "contains", json!("travel")),
            true,
        ),
        (
            cond("attributes.interests", "contains", json!("cooking")),
            false,
        ),
        (
            json!({"field": "attributes.interests", "op": "contains", "value": "cooking", "ignore_case": true}),
            true,
        ),
        (
            cond("attributes.interests", "contains", json!("trav")),
            false,
        ),
        (
            cond("attributes.interests", "in", json!(["golf", "travel"])),
            true,
        ),
        (
            cond("attributes.interests", "not_in", json!(["golf"])),
            true,
        ),
        (
            json!({"field": "attributes.interests", "op": "exists"}),
            true,
        ),
    ]);
    let mut c = contact();
    c.tags = vec!["Legacy".into()];
    assert!(!eval(json!({"op": "has_tag", "value": "Legacy"}), &c));
    assert!(eval(
        json!({"op": "has_tag", "value": "Legacy", "ignore_case": true}),
        &c
    ));
    c.tags.clear();
    c.attributes.insert("interests".into(), json!([]));
    assert!(!eval(json!({"field": "tags", "op": "exists"}), &c));
    assert!(eval(json!({"field": "tags", "op": "not_exists"}), &c));
    assert!(!eval(
        json!({"field": "attributes.interests", "op": "exists"}),
        &c
    ));
    c.attributes.insert("interests".into(), json!("travel"));
    assert!(!eval(
        cond("attributes.interests", "contains", json!("travel")),
        &c
    ));
    c.attributes
        .insert("interests".into(), json!([1, "travel", ["golf"]]));
    assert!(eval(
        cond("attributes.interests", "contains", json!("travel")),
        &c
    ));
    assert!(!eval(
        cond("attributes.interests", "in", json!(["golf", "1"])),
        &c
    ));
}

#[test]
fn consent() {
    check_all(&[
        (cond("email", "consent", json!("subscribed")), true),
        (cond("sms", "consent", json!("subscribed")), false),
        (cond("sms", "consent", json!("unsubscribed")), true),
        (cond("push", "consent", json!("unknown")), true),
    ]);
}

#[test]
fn nesting_and_not() {
    let yes = json!({"op": "has_tag", "value": "vip"});
    let no = json!({"op": "has_tag", "value": "nope"});
    check_all(&[
        (json!({"all": []}), true),
        (json!({"any": []}), false),
        (json!({"all": [yes, no]}), false),
        (json!({"any": [yes, no]}), true),
        (json!({"not": no}), true),
        (json!({"not": {"not": yes}}), true),
        (json!({"all": [yes, {"any": [no, {"not": no}]}]}), true),
        (
            json!({"any": [no, {"all": [yes, {"not": {"any": [yes]}}]}]}),
            false,
        ),
    ]);
    let compiled = compile(
        &ok(json!({"all": [yes, {"not": {"any": [no, yes]}}]})),
        &no_segments(),
        now(),
        1,
    )
    .unwrap();
    assert!(compiled.sql.contains(" AND (NOT ("), "{}", compiled.sql);
    assert!(compiled.sql.contains(" OR "), "{}", compiled.sql);
}

#[test]
fn in_segment_static_and_dynamic() {
    let vip_segment = Uuid::from_u128(10);
    let static_segment = Uuid::from_u128(11);
    let outer = Uuid::from_u128(12);
    let segments = HashMap::from([
        (
            vip_segment,
            SegmentRef::Dynamic(ok(json!({"op": "has_tag", "value": "vip"}))),
        ),
        (static_segment, SegmentRef::Static),
        (
            outer,
            SegmentRef::Dynamic(ok(json!({"all": [
                {"op": "in_segment", "value": vip_segment.to_string()},
                {"op": "in_segment", "value": static_segment.to_string()},
            ]}))),
        ),
    ]);
    let c = contact();
    let members = HashSet::from([(static_segment, c.id)]);
    let not_members = HashSet::new();
    let crit = ok(json!({"op": "in_segment", "value": outer.to_string()}));
    assert!(evaluate(&crit, &c, &segments, &members, now()));
    assert!(!evaluate(&crit, &c, &segments, &not_members, now()));
    let compiled = compile(&crit, &segments, now(), 2).unwrap();
    check_placeholders(&compiled, 2);
    assert!(
        compiled.sql.contains("segmentation.segment_members m"),
        "{}",
        compiled.sql
    );
    assert!(compiled.sql.contains("(c.tags @> $"), "{}", compiled.sql);
    assert!(compiled.params.contains(&SqlParam::Uuid(static_segment)));
    assert_eq!(crit.referenced_segments(), BTreeSet::from([outer]));
    // Cycles among stored segments are refused when compiling.
    let a = Uuid::from_u128(20);
    let b = Uuid::from_u128(21);
    let cyclic = HashMap::from([
        (
            a,
            SegmentRef::Dynamic(ok(json!({"op": "in_segment", "value": b.to_string()}))),
        ),
        (
            b,
            SegmentRef::Dynamic(ok(
                json!({"not": {"op": "in_segment", "value": a.to_string()}}),
            )),
        ),
    ]);
    let crit = ok(json!({"all": [{"op": "in_segment", "value": a.to_string()}]}));
    let e = compile(&crit, &cyclic, now(), 1).unwrap_err();
    assert_eq!(e[0].path, "criteria.all[0].value");
    assert!(
        e[0].message.contains(&format!("{a} -> {b} -> {a}")),
        "{}",
        e[0].message
    );
    assert!(!evaluate(&crit, &c, &cyclic, &members, now()));
}

#[test]
fn in_segment_unknown_is_an_error_at_the_node() {
    let known = Uuid::from_u128(1);
    let gone = Uuid::from_u128(2);
    let segments = HashMap::from([(known, SegmentRef::Static)]);
    let crit = ok(json!({"any": [
        {"op": "in_segment", "value": known.to_string()},
        {"not": {"op": "in_segment", "value": gone.to_string()}},
    ]}));
    let e = compile(&crit, &segments, now(), 1).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "criteria.any[1].not.value");
    assert!(e[0].message.contains(&gone.to_string()));
    // Inside an inlined segment, the error points at the reference in these criteria.
    let outer = Uuid::from_u128(3);
    let segments = HashMap::from([(
        outer,
        SegmentRef::Dynamic(ok(
            json!({"all": [{"op": "in_segment", "value": gone.to_string()}]}),
        )),
    )]);
    let crit = ok(json!({"not": {"op": "in_segment", "value": outer.to_string()}}));
    let e = compile(&crit, &segments, now(), 1).unwrap_err();
    assert_eq!(e[0].path, "criteria.not.value");
    assert!(
        e[0].message.contains("criteria.all[0].value"),
        "{}",
        e[0].message
    );
    // The evaluator never lets a broken reference select anyone, even under `not`.
    assert!(!evaluate(
        &crit,
        &contact(),
        &segments,
        &HashSet::new(),
        now()
    ));
}

#[test]
fn segment_nesting_and_size_budgets() {
    // A chain deeper than MAX_SEGMENT_NESTING.
    let ids: Vec<Uuid> = (0..=MAX_SEGMENT_NESTING as u128 + 1)
        .map(Uuid::from_u128)
        .collect();
    let mut segments = HashMap::new();
    for w in ids.windows(2) {
        segments.insert(
            w[0],
            SegmentRef::Dynamic(ok(json!({"op": "in_segment", "value": w[1].to_string()}))),
        );
    }
    segments.insert(*ids.last().unwrap(), SegmentRef::Static);
    let crit = ok(json!({"op": "in_segment", "value": ids[0].to_string()}));
    let e = compile(&crit, &segments, now(), 1).unwrap_err();
    assert!(e[0].message.contains("levels deep"), "{e:?}");
    // A diamond that explodes in size.
    let leaf = Uuid::from_u128(100);
    let mut segments = HashMap::from([(leaf, SegmentRef::Static)]);
    let mut below = leaf;
    for i in 0..6u128 {
        let id = Uuid::from_u128(200 + i);
        let refs: Vec<Value> = (0..20)
            .map(|_| json!({"op": "in_segment", "value": below.to_string()}))
            .collect();
        segments.insert(id, SegmentRef::Dynamic(ok(json!({"any": refs}))));
        below = id;
    }
    let crit = ok(json!({"op": "in_segment", "value": below.to_string()}));
    let e = compile(&crit, &segments, now(), 1).unwrap_err();
    assert!(e.iter().any(|e| e.message.contains("more than")), "{e:?}");
    assert!(!evaluate(
        &crit,
        &contact(),
        &segments,
        &HashSet::new(),
        now()
    ));
}

#[test]
fn cycles() {
    let [a, b, c, d] = [1u128, 2, 3, 4].map(Uuid::from_u128);
    let graph = HashMap::from([
        (b, BTreeSet::from([c])),
        (c, BTreeSet::from([a, d])),
        (d, BTreeSet::new()),
    ]);
    // Direct.
    let e = check_cycles(a, &BTreeSet::from([a]), &graph).unwrap_err();
    assert_eq!(e, format!("segment reference cycle: {a} -> {a}"));
    // Indirect: a -> b -> c -> a.
    let e = check_cycles(a, &BTreeSet::from([d, b]), &graph).unwrap_err();
    assert_eq!(
        e,
        format!("segment reference cycle: {a} -> {b} -> {c} -> {a}")
    );
    // No cycle.
    assert!(check_cycles(a, &BTreeSet::from([d]), &graph).is_ok());
    assert!(
        check_cycles(
            d,
            &BTreeSet::from([c]),
            &HashMap::from([(c, BTreeSet::from([b]))])
        )
        .is_ok()
    );
    // An existing cycle elsewhere does not loop.
    let looping = HashMap::from([(b, BTreeSet::from([c])), (c, BTreeSet::from([b]))]);
    assert!(check_cycles(a, &BTreeSet::from([b]), &looping).is_ok());
    // An entry for the segment itself is ignored in favour of `refs`.
    let stale = HashMap::from([(a, BTreeSet::from([a]))]);
    assert!(check_cycles(a, &BTreeSet::new(), &stale).is_ok());
}

fn paths(e: &[CriteriaError]) -> Vec<&str> {
    e.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn errors_point_at_the_node() {
    let e = errs(json!({"all": [
        {"op": "has_tag", "value": "x"},
        {"op": "has_tag", "value": "x"},
        {"any": [{"field": "nickname", "op": "eq", "value": "x"}]},
    ]}));
    assert_eq!(paths(&e), ["criteria.all[2].any[0].field"]);
    assert!(e[0].message.contains("unknown field 'nickname'"), "{e:?}");

    // Several errors at once.
    let e = errs(json!({"any": [
        {"field": "attributes.nope", "op": "eq", "value": "x"},
        {"field": "first_name", "op": "eq", "value": 3},
        {"field": "first_name", "op": "gt", "value": "x"},
        {"field": "attributes.score", "op": "eq", "value": "12"},
        {"field": "attributes.vip", "op": "contains", "value": true},
        {"op": "in_segment", "value": "not-a-uuid"},
        {"field": "created_at", "op": "before", "value": "yesterday"},
        {"field": "tags", "op": "in", "value": ["ok", 5]},
        {"field": "updated_at", "op": "within_last", "value": {"amount": 0, "unit": "fortnights"}},
        {"field": "email", "op": "exists", "value": "x"},
        {"field": "sms", "op": "consent", "value": "maybe"},
        {"op": "frobnicate", "field": "email", "value": 1},
        {"field": "email", "op": "eq", "value": "a", "extra": 1},
        "just a string",
        {"all": [], "field": "email"},
        {"field": "attributes.score", "op": "between", "value": [5, 1]},
        {"field": "first_name", "op": "eq", "value": ""},
        {"field": "attributes.score", "op": "gt", "value": 1, "ignore_case": true},
    ]}));
    assert_eq!(
        paths(&e),
        [
            "criteria.any[0].field",
            "criteria.any[1].value",
            "criteria.any[2].op",
            "criteria.any[3].value",
            "criteria.any[4].op",
            "criteria.any[5].value",
            "criteria.any[6].value",
            "criteria.any[7].value[1]",
            "criteria.any[8].value.unit",
            "criteria.any[8].value.amount",
            "criteria.any[9].value",
            "criteria.any[10].value",
            "criteria.any[11].op",
            "criteria.any[12].extra",
            "criteria.any[13]",
            "criteria.any[14]",
            "criteria.any[15].value",
            "criteria.any[16].value",
            "criteria.any[17].ignore_case",
        ],
        "{e:#?}"
    );
    assert!(e[0].message.contains("attribute 'nope' is not defined"));
    assert!(e[1].message.contains("must be a string, got a number"));
    assert!(
        e[2].message
            .contains("'gt' does not apply to text field 'first_name'")
    );
    assert!(e[3].message.contains("must be a number, got a string"));
    assert!(e[5].message.contains("'not-a-uuid' is not a segment id"));
}

#[test]
fn size_limits() {
    let leaf = json!({"op": "has_tag", "value": "x"});
    // Depth: 8 levels are fine, 9 are not.
    let mut deep = leaf.clone();
    for _ in 0..7 {
        deep = json!({"not": deep});
    }
    ok(deep.clone());
    let e = errs(json!({"all": [deep]}));
    assert_eq!(paths(&e), ["criteria.all[0].not.not.not.not.not.not.not"]);
    assert!(e[0].message.contains("deeper than 8"));

    let e = errs(json!({"any": vec![leaf.clone(); 200]}));
    assert_eq!(paths(&e), ["criteria"]);
    assert!(e[0].message.contains("201"), "{e:?}");
    ok(json!({"any": vec![leaf.clone(); 199]}));

    let values: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    let e = errs(cond("first_name", "in", json!(values)));
    assert_eq!(paths(&e), ["criteria.value"]);
    ok(cond("first_name", "in", json!(values[..1000])));

    let tight = Limits {
        max_depth: 2,
        max_nodes: 3,
        max_list_values: 2,
    };
    let e = parse(
        &json!({"all": [{"all": [leaf]}, cond("tags", "in", json!(["a", "b", "c"]))]}),
        &catalog(),
        &tight,
    )
    .unwrap_err();
    assert_eq!(
        paths(&e),
        [
            "criteria",
            "criteria.all[0].all[0]",
            "criteria.all[1].value"
        ]
    );
}

#[test]
fn injection_attempts_are_only_parameters() {
    let evil = [
        "x'); DROP TABLE segmentation.contacts; --",
        "' OR 1=1 --",
        "$1; --",
        "\\'; select pg_sleep(10); --",
        "\"quoted\"",
        "ab%_\\",
    ];
    for v in evil {
        let crit = ok(json!({"any": [
            cond("first_name", "eq", json!(v)),
            cond("email", "contains", json!(v)),
            json!({"field": "last_name", "op": "starts_with", "value": v, "ignore_case": true}),
            cond("attributes.plan", "eq", json!(v)),
            cond("attributes.plan", "ends_with", json!(v)),
            cond("attributes.interests", "in", json!([v, "a"])),
            cond("tags", "not_in", json!([v])),
            json!({"op": "has_tag", "value": v}),
        ]}));
        let compiled = compile(&crit, &no_segments(), now(), 2).unwrap();
        check_placeholders(&compiled, 2);
        assert!(
            !compiled.sql.contains(v),
            "{v} spliced into {}",
            compiled.sql
        );
        assert!(!compiled.sql.contains("DROP"), "{}", compiled.sql);
        assert!(!compiled.sql.contains("1=1"), "{}", compiled.sql);
        assert!(!compiled.sql.contains(';'), "{}", compiled.sql);
    }
    // Attribute keys are bound too.
    let compiled = compile(
        &ok(cond("attributes.plan", "contains", json!("x"))),
        &no_segments(),
        now(),
        1,
    )
    .unwrap();
    assert!(!compiled.sql.contains("plan"), "{}", compiled.sql);
    assert_eq!(compiled.params[0], SqlParam::Text("plan".into()));
    // Hostile field names never get that far.
    for field in [
        "attributes.x'); drop table segmentation.contacts; --",
        "email; --",
        "email OR 1=1",
        "c.tenant_id",
        "attributes.",
        "attributes",
        "deleted_at",
    ] {
        let e = errs(cond(field, "eq", json!("x")));
        assert_eq!(paths(&e), ["criteria.field"], "{field}");
    }
    // A catalog key that is itself hostile (validate_key forbids it, but the compiler does not
    // rely on that) is still only a parameter.
    let mut hostile = catalog();
    let key = "x'); drop table t; --";
    hostile.insert(key.to_owned(), AttributeType::Number);
    let crit = parse(
        &cond(&format!("attributes.{key}"), "gt", json!(1)),
        &hostile,
        &Limits::default(),
    )
    .unwrap();
    let compiled = compile(&crit, &no_segments(), now(), 1).unwrap();
    assert!(!compiled.sql.contains("drop"), "{}", compiled.sql);
    assert!(compiled.params.contains(&SqlParam::Text(key.into())));
}

#[test]
fn nul_and_overlong_values_are_rejected() {
    let e = errs(cond("first_name", "eq", json!("a\u{0}b")));
    assert_eq!(paths(&e), ["criteria.value"]);
    let e = errs(cond("first_name", "eq", json!("x".repeat(1001))));
    assert_eq!(paths(&e), ["criteria.value"]);
}

#[test]
fn canonical_json() {
    let crit = ok(json!({"all": [
        {"field": "tags", "op": "has_tag", "value": "vip"},
        {"field": "first_name", "op": "neq", "value": "Ada", "ignore_case": false},
        {"field": "attributes.score", "op": "between", "value": [1, 2.5]},
        {"field": "created_at", "op": "after", "value": "2026-01-01T10:00:00+01:00"},
        {"field": "last_activity_at", "op": "not_exists", "value": null},
        {"op": "in_segment", "field": "segment", "value": "0193C9B4-8A55-7C1E-9F43-5B1F0E2D6A10"},
    ]}));
    assert_eq!(
        crit.to_json(),
        json!({"all": [
            {"op": "has_tag", "value": "vip"},
            {"field": "first_name", "op": "neq", "value": "Ada"},
            {"field": "attributes.score", "op": "between", "value": [1, 2.5]},
            {"field": "created_at", "op": "after", "value": "2026-01-01T09:00:00Z"},
            {"field": "last_activity_at", "op": "not_exists"},
            {"op": "in_segment", "value": "0193c9b4-8a55-7c1e-9f43-5b1f0e2d6a10"},
        ]})
    );
    assert_eq!(serde_json::to_value(&crit).unwrap(), crit.to_json());
    assert_eq!(
        crit.referenced_segments(),
        BTreeSet::from([Uuid::parse_str("0193c9b4-8a55-7c1e-9f43-5b1f0e2d6a10").unwrap()])
    );
}

#[test]
fn parameters_number_from_first_param_and_bind_now() {
    let crit = ok(json!({"all": [
        cond("updated_at", "within_last", json!({"amount": 2, "unit": "days"})),
        cond("attributes.birthday", "within_last", json!({"amount": 1, "unit": "months"})),
    ]}));
    let compiled = compile(&crit, &no_segments(), now(), 5).unwrap();
    check_placeholders(&compiled, 5);
    assert!(!compiled.sql.contains("now()"), "{}", compiled.sql);
    assert_eq!(
        compiled.params[..2],
        [
            SqlParam::Timestamp(now() - chrono::TimeDelta::days(2)),
            SqlParam::Timestamp(now()),
        ]
    );
    assert!(
        compiled
            .params
            .contains(&SqlParam::Text("2026-02-15".into()))
    );
    assert!(
        compiled
            .params
            .contains(&SqlParam::Text("2026-03-15".into()))
    );
}
