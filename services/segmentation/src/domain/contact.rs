//! Contact input validation: the one place that decides whether a contact (from create, upsert,
//! an update after merging its patch, or an import row) is acceptable, and how its fields are
//! normalised before they are stored.
//!
//! [`validate`] reports every violation at once, each naming its field (`email`,
//! `attributes.plan`, `tags[3]`, `consent[0].source`). Rules and limits:
//!
//! - Optional text fields are trimmed; a value that is blank after trimming counts as absent.
//! - At least one of email, phone or external_id ([`IDENTIFIER_REQUIRED`], on field `email`).
//! - **email**: a practical syntax check, not full RFC 5322: exactly one `@`; at most
//!   [`MAX_EMAIL_CHARS`] characters in all; no whitespace or control characters; a local part of
//!   1–[`MAX_EMAIL_LOCAL_CHARS`] characters made of letters, digits and
//!   ``!#$%&'*+-/=?^_`{|}~.`` without a leading, trailing or doubled dot (no quoted local parts);
//!   a domain of at most 253 characters with at least one dot, whose labels are 1–63 letters,
//!   digits or hyphens (non-ASCII letters allowed) not starting or ending with a hyphen, and
//!   whose last label is not all digits (no IP literals). Stored trimmed as given (`email`) and
//!   lower-cased (`email_normalized`, the uniqueness key).
//! - **phone**: normalised to E.164: `+` then [`MIN_PHONE_DIGITS`]–[`MAX_PHONE_DIGITS`] digits,
//!   the first not 0. Spaces, dashes, dots and parentheses are accepted and dropped; anything
//!   else is refused. A number without the leading `+` is refused with a message asking for the
//!   country code (a national number cannot be converted without knowing the country).
//! - **external_id**: 1–[`MAX_EXTERNAL_ID_CHARS`] characters, no control characters.
//! - **first_name / last_name**: at most [`MAX_NAME_CHARS`] characters, no control characters.
//! - **locale**: `language[-Script][-REGION]`: a 2–3 letter language, an optional 4-letter
//!   script, an optional 2-letter or 3-digit region; `-` or `_` as separator; normalised to
//!   canonical case (`zh-Hant-TW`, `pt-BR`, `es-419`). Variants and extensions are refused.
//! - **time_zone**: an IANA name known to `chrono-tz` (case-insensitive; stored in canonical
//!   spelling, e.g. `europe/paris` → `Europe/Paris`).
//! - **attributes**: each key must be defined in the catalog and its value must pass
//!   [`validate_value`] (which normalises it). `Value::Null` means "remove": such entries are
//!   accepted for any key (removing an attribute whose definition is gone is fine) and are left
//!   out of [`ValidContact::attributes`], which only holds values to store.
//! - **tags**: each trimmed, 1–[`MAX_TAG_CHARS`] characters, no control characters, commas or
//!   semicolons; then lower-cased, deduplicated and sorted; at most [`MAX_TAGS`] distinct tags.
//! - **consent**: each channel at most once; the source is trimmed, at most
//!   [`MAX_CONSENT_SOURCE_CHARS`] characters, no control characters.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::attributes::{AttributeCatalog, Channel, ConsentState, validate_value};

/// One invalid field (`field` is the path as the client sent it: `email`, `attributes.plan`,
/// `tags[3]`, `consent[0].source`). The shared error type, so violations go straight into
/// `ServiceError::invalid_fields`.
pub use cos_errors::FieldViolation;

/// Longest email address, in characters.
pub const MAX_EMAIL_CHARS: usize = 254;
/// Longest part before the `@`, in characters.
pub const MAX_EMAIL_LOCAL_CHARS: usize = 64;
const MAX_EMAIL_DOMAIN_CHARS: usize = 253;
const MAX_DOMAIN_LABEL_CHARS: usize = 63;
/// Digits of an E.164 number, country code included.
pub const MIN_PHONE_DIGITS: usize = 8;
pub const MAX_PHONE_DIGITS: usize = 15;
pub const MAX_EXTERNAL_ID_CHARS: usize = 200;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_TAG_CHARS: usize = 64;
/// Most distinct tags on one contact.
pub const MAX_TAGS: usize = 100;
pub const MAX_CONSENT_SOURCE_CHARS: usize = 100;

/// Message of the violation (on field `email`) when no identifier is given.
pub const IDENTIFIER_REQUIRED: &str = "at least one of email, phone or external_id is required";

/// A contact as a client (or an import row) describes it, before validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactInput {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
    /// `Value::Null` = remove the attribute.
    pub attributes: BTreeMap<String, Value>,
    pub tags: Vec<String>,
    pub consent: Vec<ConsentInput>,
    pub last_activity_at: Option<DateTime<Utc>>,
}

/// Consent for one channel; `at: None` lets the caller stamp the time of the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentInput {
    pub channel: Channel,
    pub state: ConsentState,
    pub source: String,
    pub at: Option<DateTime<Utc>>,
}

/// A contact that passed [`validate`], normalised and ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidContact {
    /// Trimmed, as given.
    pub email: Option<String>,
    /// Lower-cased: the uniqueness key.
    pub email_normalized: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    pub external_id: Option<String>,
    /// `""` when absent (likewise the next three).
    pub first_name: String,
    pub last_name: String,
    pub locale: String,
    pub time_zone: String,
    /// Normalised values to store; no nulls.
    pub attributes: Map<String, Value>,
    /// Lower-cased, deduplicated, sorted.
    pub tags: Vec<String>,
    /// In input order, sources trimmed.
    pub consent: Vec<ConsentInput>,
    pub last_activity_at: Option<DateTime<Utc>>,
}

/// Validates and normalises a contact, reporting all violations (see the module docs).
pub fn validate(
    input: &ContactInput,
    catalog: &AttributeCatalog,
) -> Result<ValidContact, Vec<FieldViolation>> {
    let mut v = Violations(Vec::new());

    let email_in = present(&input.email);
    let phone_in = present(&input.phone);
    let external_id_in = present(&input.external_id);
    if email_in.is_none() && phone_in.is_none() && external_id_in.is_none() {
        v.add("email", IDENTIFIER_REQUIRED);
    }

    let mut email = None;
    let mut email_normalized = None;
    if let Some(e) = email_in {
        match check_email(e) {
            Ok(()) => {
                email = Some(e.to_owned());
                email_normalized = Some(e.to_lowercase());
            }
            Err(why) => v.add(
                "email",
                format!("{} is not a valid email address ({why})", show(e)),
            ),
        }
    }
    let phone = phone_in.and_then(|p| v.check("phone", normalize_phone(p)));
    let external_id = external_id_in.and_then(|x| {
        v.check(
            "external_id",
            check_text(x, MAX_EXTERNAL_ID_CHARS).map(str::to_owned),
        )
    });
    let mut name = |field: &str, value: &Option<String>| {
        present(value)
            .and_then(|s| v.check(field, check_text(s, MAX_NAME_CHARS).map(str::to_owned)))
            .unwrap_or_default()
    };
    let first_name = name("first_name", &input.first_name);
    let last_name = name("last_name", &input.last_name);
    let locale = present(&input.locale)
        .and_then(|s| v.check("locale", normalize_locale(s)))
        .unwrap_or_default();
    let time_zone = present(&input.time_zone)
        .and_then(|s| v.check("time_zone", normalize_time_zone(s)))
        .unwrap_or_default();

    let mut attributes = Map::new();
    for (key, value) in &input.attributes {
        if value.is_null() {
            continue;
        }
        let field = || format!("attributes.{key}");
        match catalog.get(key) {
            None => v.add(
                field(),
                format!(
                    "attribute {} is not defined; define it under /v1/contact-attributes first",
                    show(key)
                ),
            ),
            Some(ty) => match validate_value(*ty, value) {
                Ok(normalized) => {
                    attributes.insert(key.clone(), normalized);
                }
                Err(m) => v.add(field(), m),
            },
        }
    }

    let mut tags = BTreeSet::new();
    for (i, raw) in input.tags.iter().enumerate() {
        match check_tag(raw) {
            Ok(tag) => {
                tags.insert(tag.to_lowercase());
            }
            Err(why) => v.add(format!("tags[{i}]"), why),
        }
    }
    if tags.len() > MAX_TAGS {
        v.add(
            "tags",
            format!(
                "has {} distinct tags; at most {MAX_TAGS} are allowed",
                tags.len()
            ),
        );
    }

    let mut consent = Vec::with_capacity(input.consent.len());
    let mut seen = BTreeSet::new();
    for (i, c) in input.consent.iter().enumerate() {
        if !seen.insert(c.channel) {
            v.add(
                format!("consent[{i}].channel"),
                format!("channel '{}' appears more than once", c.channel.as_str()),
            );
        }
        match check_text(c.source.trim(), MAX_CONSENT_SOURCE_CHARS) {
            Ok(source) => consent.push(ConsentInput {
                source: source.to_owned(),
                ..c.clone()
            }),
            Err(m) => v.add(format!("consent[{i}].source"), m),
        }
    }

    if !v.0.is_empty() {
        return Err(v.0);
    }
    Ok(ValidContact {
        email,
        email_normalized,
        phone,
        external_id,
        first_name,
        last_name,
        locale,
        time_zone,
        attributes,
        tags: tags.into_iter().collect(),
        consent,
        last_activity_at: input.last_activity_at,
    })
}

struct Violations(Vec<FieldViolation>);

impl Violations {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            message: message.into(),
        });
    }

    fn check<T>(&mut self, field: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|m| self.add(field, m)).ok()
    }
}

/// The trimmed value, or None when absent or blank.
fn present(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `s` in single quotes for a message: at most 60 characters, control characters escaped.
pub(crate) fn show(s: &str) -> String {
    const MAX: usize = 60;
    let mut out = String::with_capacity(s.len().min(4 * MAX) + 2);
    out.push('\'');
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// A non-empty text of at most `max` characters without control characters (already trimmed).
fn check_text(s: &str, max: usize) -> Result<&str, String> {
    if s.chars().any(char::is_control) {
        Err("must not contain control characters (tabs, line breaks, …)".to_owned())
    } else if s.chars().count() > max {
        Err(format!("is longer than {max} characters"))
    } else {
        Ok(s)
    }
}

fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
}

/// The practical email check of the module docs; `Err` says what is wrong.
fn check_email(s: &str) -> Result<(), &'static str> {
    if s.chars().count() > MAX_EMAIL_CHARS {
        return Err("longer than 254 characters");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains spaces or control characters");
    }
    let (local, domain) = match s.split_once('@') {
        None => return Err("the @ is missing"),
        Some((_, d)) if d.contains('@') => return Err("more than one @"),
        Some(parts) => parts,
    };
    if local.is_empty() {
        return Err("nothing before the @");
    }
    if local.chars().count() > MAX_EMAIL_LOCAL_CHARS {
        return Err("the part before the @ is longer than 64 characters");
    }
    if !local.chars().all(is_local_char) {
        return Err("the part before the @ contains a character that is not allowed");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("misplaced dot before the @");
    }
    if domain.is_empty() {
        return Err("nothing after the @");
    }
    if domain.chars().count() > MAX_EMAIL_DOMAIN_CHARS {
        return Err("the domain is longer than 253 characters");
    }
    if !domain.contains('.') {
        return Err("the domain has no dot");
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("misplaced dot in the domain");
        }
        if label.chars().count() > MAX_DOMAIN_LABEL_CHARS {
            return Err("a part of the domain is longer than 63 characters");
        }
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return Err("the domain contains a character that is not allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a part of the domain starts or ends with a hyphen");
        }
    }
    if domain
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("the domain must end with a name, not a number");
    }
    Ok(())
}

/// E.164 normalisation (see the module docs).
fn normalize_phone(s: &str) -> Result<String, String> {
    let (has_plus, rest) = match s.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut out = String::with_capacity(MAX_PHONE_DIGITS + 1);
    out.push('+');
    for c in rest.chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => {
                return Err(format!(
                    "{} is not a valid phone number: only digits, spaces and + - . ( ) are allowed",
                    show(s)
                ));
            }
        }
    }
    if !has_plus {
        return Err(format!(
            "{} has no country code: write it in international format, starting with + and the \
             country code (e.g. +44 20 7946 0958)",
            show(s)
        ));
    }
    let digits = out.len() - 1;
    if !(MIN_PHONE_DIGITS..=MAX_PHONE_DIGITS).contains(&digits) {
        return Err(format!(
            "{} is not a valid phone number: it has {digits} digits; an international number has \
             {MIN_PHONE_DIGITS} to {MAX_PHONE_DIGITS}, country code included",
            show(s)
        ));
    }
    if out.as_bytes()[1] == b'0' {
        return Err(format!(
            "{} is not a valid phone number: country codes never start with 0",
            show(s)
        ));
    }
    Ok(out)
}

/// `language[-Script][-REGION]` in canonical case (see the module docs).
fn normalize_locale(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "{} is not a locale; use a language tag like en, en-US, pt-BR or zh-Hant-TW",
            show(s)
        )
    };
    let mut parts = s.split(['-', '_']);
    let lang = parts.next().unwrap_or_default();
    if !(2..=3).contains(&lang.len()) || !lang.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(bad());
    }
    let mut out = lang.to_ascii_lowercase();
    let mut next = parts.next();
    if let Some(script) =
        next.filter(|p| p.len() == 4 && p.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        out.push('-');
        out.push_str(&script[..1].to_ascii_uppercase());
        out.push_str(&script[1..].to_ascii_lowercase());
        next = parts.next();
    }
    if let Some(region) = next {
        let alpha = region.len() == 2 && region.bytes().all(|b| b.is_ascii_alphabetic());
        let numeric = region.len() == 3 && region.bytes().all(|b| b.is_ascii_digit());
        if !alpha && !numeric {
            return Err(bad());
        }
        out.push('-');
        out.push_str(&region.to_ascii_uppercase());
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// An IANA time zone name, matched case-insensitively, in its canonical spelling.
fn normalize_time_zone(s: &str) -> Result<String, String> {
    chrono_tz::Tz::from_str(s)
        .ok()
        .or_else(|| {
            chrono_tz::TZ_VARIANTS
                .iter()
                .copied()
                .find(|tz| tz.name().eq_ignore_ascii_case(s))
        })
        .map(|tz| tz.name().to_owned())
        .ok_or_else(|| {
            format!(
                "{} is not a time zone; use an IANA name like Europe/Paris or America/New_York",
                show(s)
            )
        })
}

/// One tag, trimmed (not yet lower-cased).
fn check_tag(raw: &str) -> Result<&str, String> {
    let t = raw.trim();
    if t.is_empty() {
        Err("a tag cannot be empty".to_owned())
    } else if t.chars().count() > MAX_TAG_CHARS {
        Err(format!(
            "tag {} is longer than {MAX_TAG_CHARS} characters",
            show(t)
        ))
    } else if t.chars().any(char::is_control) {
        Err(format!("tag {} contains control characters", show(t)))
    } else if t.contains([',', ';']) {
        Err(format!("tag {} must not contain ',' or ';'", show(t)))
    } else {
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::attributes::AttributeType;
    use serde_json::json;

    fn catalog() -> AttributeCatalog {
        [
            ("plan".to_owned(), AttributeType::String),
            ("ltv".to_owned(), AttributeType::Number),
            ("signup".to_owned(), AttributeType::Date),
        ]
        .into_iter()
        .collect()
    }

    fn with_email(email: &str) -> ContactInput {
        ContactInput {
            email: Some(email.to_owned()),
            ..Default::default()
        }
    }

    /// The violations of `input` as (field, message) pairs.
    fn errors(input: &ContactInput) -> Vec<(String, String)> {
        match validate(input, &catalog()) {
            Ok(v) => panic!("expected violations, got {v:?}"),
            Err(vs) => vs.into_iter().map(|v| (v.field, v.message)).collect(),
        }
    }

    fn fields(input: &ContactInput) -> Vec<String> {
        errors(input).into_iter().map(|(f, _)| f).collect()
    }

    fn ok(input: &ContactInput) -> ValidContact {
        validate(input, &catalog()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn contact_minimal_and_identifier_required() {
        let v = ok(&with_email("  Bob.Smith@Example.COM "));
        assert_eq!(v.email.as_deref(), Some("Bob.Smith@Example.COM"));
        assert_eq!(v.email_normalized.as_deref(), Some("bob.smith@example.com"));
        assert_eq!((v.first_name.as_str(), v.time_zone.as_str()), ("", ""));
        assert!(v.attributes.is_empty() && v.tags.is_empty());

        let none = ContactInput {
            email: Some("   ".into()),
            first_name: Some("Bob".into()),
            ..Default::default()
        };
        assert_eq!(
            errors(&none),
            vec![("email".to_owned(), IDENTIFIER_REQUIRED.to_owned())]
        );
        assert!(
            validate(
                &ContactInput {
                    external_id: Some("crm-1".into()),
                    ..Default::default()
                },
                &catalog()
            )
            .is_ok()
        );
    }

    #[test]
    fn contact_email_syntax() {
        for good in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "o'brien@example.ie",
            "user@bücher.de",
            &format!("{}@example.com", "a".repeat(64)),
        ] {
            ok(&with_email(good));
        }
        let cases = [
            ("bob@", "nothing after the @"),
            ("bob", "the @ is missing"),
            ("@example.com", "nothing before the @"),
            ("a@b@example.com", "more than one @"),
            (
                "bob smith@example.com",
                "contains spaces or control characters",
            ),
            ("bob@example", "the domain has no dot"),
            ("bob@example..com", "misplaced dot in the domain"),
            (".bob@example.com", "misplaced dot before the @"),
            ("bo..b@example.com", "misplaced dot before the @"),
            (
                "bob@-example.com",
                "a part of the domain starts or ends with a hyphen",
            ),
            (
                "bob@exa_mple.com",
                "the domain contains a character that is not allowed",
            ),
            (
                "bob@10.0.0.1",
                "the domain must end with a name, not a number",
            ),
            (
                "bo(b)@example.com",
                "the part before the @ contains a character that is not allowed",
            ),
        ];
        for (bad, why) in cases {
            assert_eq!(
                errors(&with_email(bad)),
                vec![(
                    "email".to_owned(),
                    format!("'{bad}' is not a valid email address ({why})")
                )],
            );
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(
            errors(&with_email(&long_local))[0]
                .1
                .contains("longer than 64")
        );
        let long = format!("a@{}.com", "b.".repeat(130));
        assert!(errors(&with_email(&long))[0].1.contains("longer than 254"));
        let long_label = format!("a@{}.com", "b".repeat(64));
        assert!(
            errors(&with_email(&long_label))[0]
                .1
                .contains("longer than 63")
        );
    }

    #[test]
    fn contact_phone_e164() {
        let phone = |p: &str| ContactInput {
            phone: Some(p.to_owned()),
            ..Default::default()
        };
        assert_eq!(
            ok(&phone("+44 (20) 7946-0958")).phone.as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            ok(&phone(" +1.415.555.0100 ")).phone.as_deref(),
            Some("+14155550100")
        );
        let e = errors(&phone("020 7946 0958"));
        assert_eq!(e[0].0, "phone");
        assert!(e[0].1.contains("no country code"), "{e:?}");
        assert!(
            errors(&phone("+44 20 7946 0958 ext 2"))[0]
                .1
                .contains("only digits")
        );
        assert!(errors(&phone("+1234567"))[0].1.contains("has 7 digits"));
        assert!(
            errors(&phone("+1234567890123456"))[0]
                .1
                .contains("has 16 digits")
        );
        assert!(
            errors(&phone("+0123456789"))[0]
                .1
                .contains("never start with 0")
        );
        assert!(
            errors(&phone("+44+2079460958"))[0]
                .1
                .contains("only digits")
        );
    }

    #[test]
    fn contact_external_id_and_names() {
        let mut input = ContactInput {
            external_id: Some(" crm 42 ".into()),
            first_name: Some(" Zoë ".into()),
            last_name: Some("O'Brien".into()),
            ..Default::default()
        };
        let v = ok(&input);
        assert_eq!(v.external_id.as_deref(), Some("crm 42"));
        assert_eq!(
            (v.first_name.as_str(), v.last_name.as_str()),
            ("Zoë", "O'Brien")
        );

        input.external_id = Some("x".repeat(201));
        input.first_name = Some("a\u{7}b".into());
        input.last_name = Some("é".repeat(201));
        assert_eq!(
            errors(&input),
            vec![
                (
                    "external_id".to_owned(),
                    "is longer than 200 characters".to_owned()
                ),
                (
                    "first_name".to_owned(),
                    "must not contain control characters (tabs, line breaks, …)".to_owned()
                ),
                (
                    "last_name".to_owned(),
                    "is longer than 200 characters".to_owned()
                ),
            ]
        );
        input.external_id = Some("id\n2".into());
        input.last_name = Some("é".repeat(200));
        input.first_name = None;
        assert_eq!(fields(&input), ["external_id"]);
    }

    #[test]
    fn contact_locale() {
        let loc = |l: &str| ContactInput {
            locale: Some(l.to_owned()),
            ..with_email("a@b.co")
        };
        for (given, want) in [
            ("en", "en"),
            ("EN_us", "en-US"),
            ("pt-br", "pt-BR"),
            ("zh-hant-tw", "zh-Hant-TW"),
            ("sr-Latn", "sr-Latn"),
            ("es-419", "es-419"),
            ("fil", "fil"),
        ] {
            assert_eq!(ok(&loc(given)).locale, want);
        }
        for bad in [
            "english",
            "e",
            "en-",
            "en-USA",
            "en-US-x",
            "zh-Hant-TW-1",
            "12",
        ] {
            let e = errors(&loc(bad));
            assert_eq!(e[0].0, "locale", "{bad}");
            assert!(e[0].1.contains("is not a locale"), "{bad}");
        }
    }

    #[test]
    fn contact_time_zone() {
        let tz = |t: &str| ContactInput {
            time_zone: Some(t.to_owned()),
            ..with_email("a@b.co")
        };
        assert_eq!(ok(&tz("Europe/Paris")).time_zone, "Europe/Paris");
        assert_eq!(ok(&tz("america/new_york")).time_zone, "America/New_York");
        assert_eq!(ok(&tz("UTC")).time_zone, "UTC");
        assert_eq!(
            errors(&tz("Mars/Olympus")),
            vec![(
                "time_zone".to_owned(),
                "'Mars/Olympus' is not a time zone; use an IANA name like Europe/Paris or \
                 America/New_York"
                    .to_owned()
            )]
        );
        assert_eq!(fields(&tz("+02:00")), ["time_zone"]);
    }

    #[test]
    fn contact_attributes() {
        let mut input = with_email("a@b.co");
        input.attributes = [
            ("plan".to_owned(), json!("pro")),
            ("signup".to_owned(), json!("2024-01-02T23:30:00-02:00")),
            ("ltv".to_owned(), Value::Null),
            ("gone".to_owned(), Value::Null),
        ]
        .into_iter()
        .collect();
        let v = ok(&input);
        assert_eq!(
            Value::Object(v.attributes),
            json!({"plan": "pro", "signup": "2024-01-03"})
        );

        input.attributes = [
            ("nope".to_owned(), json!(1)),
            ("ltv".to_owned(), json!("12")),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            errors(&input),
            vec![
                (
                    "attributes.ltv".to_owned(),
                    "must be a number value, got a string".to_owned()
                ),
                (
                    "attributes.nope".to_owned(),
                    "attribute 'nope' is not defined; define it under /v1/contact-attributes \
                     first"
                        .to_owned()
                ),
            ]
        );
    }

    #[test]
    fn contact_tags() {
        let mut input = with_email("a@b.co");
        input.tags = vec![" VIP ".into(), "beta".into(), "vip".into(), "Alpha".into()];
        assert_eq!(ok(&input).tags, ["alpha", "beta", "vip"]);

        input.tags = vec![
            "ok".into(),
            " ".into(),
            "a,b".into(),
            "a;b".into(),
            "t".repeat(65),
            "x\ty".into(),
        ];
        assert_eq!(
            errors(&input),
            vec![
                ("tags[1]".to_owned(), "a tag cannot be empty".to_owned()),
                (
                    "tags[2]".to_owned(),
                    "tag 'a,b' must not contain ',' or ';'".to_owned()
                ),
                (
                    "tags[3]".to_owned(),
                    "tag 'a;b' must not contain ',' or ';'".to_owned()
                ),
                (
                    "tags[4]".to_owned(),
                    format!("tag '{}…' is longer than 64 characters", "t".repeat(60))
                ),
                (
                    "tags[5]".to_owned(),
                    "tag 'x\\ty' contains control characters".to_owned()
                ),
            ]
        );

        input.tags = (0..100).map(|i| format!("t{i}")).collect();
        input.tags.push("T0".into());
        assert_eq!(ok(&input).tags.len(), 100);
        input.tags.push("t100".into());
        assert_eq!(
            errors(&input),
            vec![(
                "tags".to_owned(),
                "has 101 distinct tags; at most 100 are allowed".to_owned()
            )]
        );
    }

    #[test]
    fn contact_consent() {
        let consent = |channel, source: &str| ConsentInput {
            channel,
            state: ConsentState::Subscribed,
            source: source.to_owned(),
            at: None,
        };
        let mut input = with_email("a@b.co");
        input.consent = vec![consent(Channel::Email, " form "), consent(Channel::Sms, "")];
        let v = ok(&input);
        assert_eq!(v.consent[0].source, "form");
        assert_eq!(v.consent.len(), 2);

        input.consent = vec![
            consent(Channel::Email, "form"),
            consent(Channel::Push, &"s".repeat(101)),
            consent(Channel::Email, "api"),
        ];
        assert_eq!(
            errors(&input),
            vec![
                (
                    "consent[1].source".to_owned(),
                    "is longer than 100 characters".to_owned()
                ),
                (
                    "consent[2].channel".to_owned(),
                    "channel 'email' appears more than once".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn contact_reports_all_violations() {
        let input = ContactInput {
            email: Some("bob@".into()),
            phone: Some("0612".into()),
            locale: Some("xx-yy-zz".into()),
            time_zone: Some("Nowhere".into()),
            attributes: [("x".to_owned(), json!(1))].into_iter().collect(),
            tags: vec!["".into()],
            ..Default::default()
        };
        assert_eq!(
            fields(&input),
            [
                "email",
                "phone",
                "locale",
                "time_zone",
                "attributes.x",
                "tags[0]"
            ]
        );
    }

    #[test]
    fn contact_show_truncates_and_escapes() {
        assert_eq!(show("a\nb"), "'a\\nb'");
        assert_eq!(show(&"x".repeat(61)), format!("'{}…'", "x".repeat(60)));
    }
}
