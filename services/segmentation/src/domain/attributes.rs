//! Per-tenant custom attribute definitions and consent: the vocabulary shared by contact
//! validation, CSV import and the criteria language.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Type of a custom attribute. Values are stored in the contact's `attributes` JSON object:
/// string → JSON string, number → JSON number (finite), boolean → JSON bool, date → JSON string
/// `YYYY-MM-DD`, string_list → JSON array of strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttributeType {
    String,
    Number,
    Boolean,
    Date,
    StringList,
}

impl AttributeType {
    pub const ALL: [AttributeType; 5] = [
        Self::String,
        Self::Number,
        Self::Boolean,
        Self::Date,
        Self::StringList,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Date => "date",
            Self::StringList => "string_list",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for AttributeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest string attribute value, and most items in a string list.
pub const MAX_STRING_VALUE_CHARS: usize = 1000;
pub const MAX_LIST_ITEMS: usize = 100;

/// Names the built-in contact fields use; attribute keys may not take them.
pub const RESERVED_KEYS: &[&str] = &[
    "id",
    "email",
    "phone",
    "external_id",
    "first_name",
    "last_name",
    "locale",
    "time_zone",
    "tags",
    "consent",
    "attributes",
    "created_at",
    "updated_at",
    "last_activity_at",
    "deleted_at",
    "version",
];

/// Checks an attribute key: `^[a-z][a-z0-9_]{0,62}$` and not a built-in field name.
pub fn validate_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let ok_rest = key
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok_first || !ok_rest || key.len() > 63 {
        return Err(
            "must start with a lowercase letter and contain only a-z, 0-9 and _ (at most 63 characters)"
                .to_owned(),
        );
    }
    if RESERVED_KEYS.contains(&key) {
        return Err(format!("'{key}' is a built-in contact field"));
    }
    Ok(())
}

/// The tenant's defined attributes by key.
pub type AttributeCatalog = BTreeMap<String, AttributeType>;

/// Validates (and normalises) one attribute value against its type. `Value::Null` is not a
/// value: callers treat it as "remove the attribute" before calling this.
pub fn validate_value(ty: AttributeType, value: &Value) -> Result<Value, String> {
    match (ty, value) {
        (AttributeType::String, Value::String(s)) => {
            if s.chars().count() > MAX_STRING_VALUE_CHARS {
                Err(format!(
                    "is longer than {MAX_STRING_VALUE_CHARS} characters"
                ))
            } else {
                Ok(Value::String(s.clone()))
            }
        }
        (AttributeType::Number, Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Value::Number(n.clone())),
            _ => Err("must be a finite number".to_owned()),
        },
        (AttributeType::Boolean, Value::Bool(b)) => Ok(Value::Bool(*b)),
        (AttributeType::Date, Value::String(s)) => parse_date(s)
            .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
            .ok_or_else(|| format!("'{}' is not a date (YYYY-MM-DD)", truncate(s, 40))),
        (AttributeType::StringList, Value::Array(items)) => {
            if items.len() > MAX_LIST_ITEMS {
                return Err(format!("has more than {MAX_LIST_ITEMS} items"));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) if s.chars().count() <= MAX_STRING_VALUE_CHARS => {
                        out.push(Value::String(s.clone()))
                    }
                    Value::String(_) => {
                        return Err(format!(
                            "item {i} is longer than {MAX_STRING_VALUE_CHARS} characters"
                        ));
                    }
                    _ => return Err(format!("item {i} must be a string")),
                }
            }
            Ok(Value::Array(out))
        }
        (ty, other) => Err(format!("must be a {} value, got {}", ty, json_kind(other))),
    }
}

/// Strict `YYYY-MM-DD` (also accepted: an RFC 3339 timestamp, whose UTC date is taken).
pub fn parse_date(s: &str) -> Option<chrono::NaiveDate> {
    let s = s.trim();
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc).date_naive())
        })
}

pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// A messaging channel that has its own consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Email,
    Sms,
    Push,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Self::Email, Self::Sms, Self::Push];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Push => "push",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Consent state for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum ConsentState {
    Subscribed,
    Unsubscribed,
    #[default]
    Unknown,
}

impl ConsentState {
    pub const ALL: [ConsentState; 3] = [Self::Subscribed, Self::Unsubscribed, Self::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscribed => "subscribed",
            Self::Unsubscribed => "unsubscribed",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys() {
        assert!(validate_key("plan").is_ok());
        assert!(validate_key("lifetime_value_2").is_ok());
        for bad in ["", "Plan", "1x", "a-b", "email", "tags", "x'; drop table"] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
        assert!(validate_key(&"a".repeat(64)).is_err());
    }

    #[test]
    fn values() {
        use AttributeType::*;
        assert_eq!(validate_value(String, &json!("x")), Ok(json!("x")));
        assert!(validate_value(String, &json!(1)).is_err());
        assert_eq!(validate_value(Number, &json!(1.5)), Ok(json!(1.5)));
        assert!(validate_value(Number, &json!("1")).is_err());
        assert_eq!(validate_value(Boolean, &json!(true)), Ok(json!(true)));
        assert_eq!(
            validate_value(Date, &json!("2026-02-03")),
            Ok(json!("2026-02-03"))
        );
        assert_eq!(
            validate_value(Date, &json!("2026-02-03T23:30:00-02:00")),
            Ok(json!("2026-02-04"))
        );
        assert!(validate_value(Date, &json!("2026-02-30")).is_err());
        assert!(validate_value(Date, &json!("03/02/2026")).is_err());
        assert_eq!(
            validate_value(StringList, &json!(["a", "b"])),
            Ok(json!(["a", "b"]))
        );
        assert!(validate_value(StringList, &json!(["a", 1])).is_err());
        assert!(validate_value(StringList, &json!(vec!["x"; 101])).is_err());
    }
}
