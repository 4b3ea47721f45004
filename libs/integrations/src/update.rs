//! Applying a submitted update to a stored config: validation, merging and the audit trail of
//! what changed. Pure apart from the `seal` callback that encrypts a secret.

use std::collections::BTreeMap;

use cos_crypto::{Secret, mask};
use cos_errors::FieldViolation;
use serde::{Deserialize, Serialize};

use crate::spec::{FieldSpec, ProviderSpec, is_name};

/// Longest value accepted for any field (a service-account JSON or a PEM key fits).
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Longest reason accepted for a change.
pub const MAX_REASON_CHARS: usize = 1000;

/// A config as stored: clear settings, sealed secrets, and the masked display of each secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    pub settings: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub masked: BTreeMap<String, String>,
}

/// What happened to a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Given a (new) value.
    Set,
    /// Its value was removed.
    Removed,
}

/// One changed field in an audit entry. Settings carry their old and new clear values; secrets
/// carry only the masked display of the old and new value, never the secret or its ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub secret: bool,
    pub change: ChangeKind,
    /// Previous value (masked for secrets); `None` if the field had none.
    pub old: Option<String>,
    /// New value (masked for secrets); `None` when removed.
    pub new: Option<String>,
}

/// The result of applying an update: the new stored state and the fields that changed.
#[derive(Debug)]
pub(crate) struct Applied {
    pub stored: Stored,
    pub changes: Vec<FieldChange>,
}

/// Applies `values` (`None` = remove) to `current`. A secret left out keeps its value, and so
/// does a secret sent back as exactly its current masked display (a form that round-trips what
/// it was shown). Every problem is collected, each naming its field as `values.<name>`.
pub(crate) fn apply(
    spec: &ProviderSpec,
    current: &Stored,
    values: BTreeMap<String, Option<String>>,
    mut seal: impl FnMut(&FieldSpec, &str) -> String,
) -> Result<Applied, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut next = current.clone();
    let mut changes = Vec::new();

    for (name, value) in values {
        let Some(field) = spec.field(&name) else {
            violations.push(unknown_field(spec, &name));
            continue;
        };
        let path = format!("values.{name}");
        match value {
            None => {
                if field.required {
                    violations.push(violation(path, "is required and cannot be removed"));
                    continue;
                }
                if let Some(change) = remove(field, &mut next) {
                    changes.push(change);
                }
            }
            Some(raw) if field.secret => {
                // Moved into a wiped-on-drop wrapper at once; only borrowed from here on.
                let raw = Secret::new(raw);
                let value = raw.expose_secret().trim();
                if current.masked.get(field.name).map(String::as_str) == Some(value) {
                    continue;
                }
                if let Err(message) = check_value(field, value) {
                    violations.push(violation(path, message));
                    continue;
                }
                let masked = mask(value);
                let sealed = seal(field, value);
                let old = next.masked.insert(field.name.to_owned(), masked.clone());
                next.secrets.insert(field.name.to_owned(), sealed);
                changes.push(FieldChange {
                    field: name,
                    secret: true,
                    change: ChangeKind::Set,
                    old,
                    new: Some(masked),
                });
            }
            Some(raw) => {
                let value = raw.trim();
                if let Err(message) = check_value(field, value) {
                    violations.push(violation(path, message));
                    continue;
                }
                if current.settings.get(field.name).map(String::as_str) == Some(value) {
                    continue;
                }
                let old = next
                    .settings
                    .insert(field.name.to_owned(), value.to_owned());
                changes.push(FieldChange {
                    field: name,
                    secret: false,
                    change: ChangeKind::Set,
                    old,
                    new: Some(value.to_owned()),
                });
            }
        }
    }

    for field in spec.fields.iter().filter(|f| f.required) {
        let present = if field.secret {
            next.secrets.contains_key(field.name)
        } else {
            next.settings.contains_key(field.name)
        };
        let reported = violations
            .iter()
            .any(|v| v.field.strip_prefix("values.") == Some(field.name));
        if !present && !reported {
            violations.push(violation(format!("values.{}", field.name), "is required"));
        }
    }

    if violations.is_empty() {
        Ok(Applied {
            stored: next,
            changes,
        })
    } else {
        Err(violations)
    }
}

/// Checks a reason for a change and returns it trimmed.
pub(crate) fn check_reason(reason: &str) -> Result<&str, FieldViolation> {
    let reason = reason.trim();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(violation(
            "reason".to_owned(),
            format!("must be at most {MAX_REASON_CHARS} characters"),
        ));
    }
    if reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(violation(
            "reason".to_owned(),
            "must not contain control characters",
        ));
    }
    Ok(reason)
}

fn remove(field: &FieldSpec, next: &mut Stored) -> Option<FieldChange> {
    let old = if field.secret {
        next.secrets.remove(field.name)?;
        next.masked.remove(field.name)
    } else {
        Some(next.settings.remove(field.name)?)
    };
    Some(FieldChange {
        field: field.name.to_owned(),
        secret: field.secret,
        change: ChangeKind::Removed,
        old,
        new: None,
    })
}

/// Shape checks shared by every field, then the field's own validator. Messages never quote the
/// value.
fn check_value(field: &FieldSpec, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty (send null to remove the value)".to_owned());
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("must be at most {MAX_VALUE_BYTES} bytes"));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("must not contain control characters".to_owned());
    }
    // A masked display (`sk_live_…abcd`, `****`) sent back for a secret that has a different
    // value, or none, would otherwise be stored as if it were the key.
    if field.secret && (value.contains('…') || value == "****") {
        return Err(
            "looks like a masked value; send the full secret, or leave the field out to keep the current one"
                .to_owned(),
        );
    }
    match field.validate {
        Some(validate) => validate(value),
        None => Ok(()),
    }
}

fn unknown_field(spec: &ProviderSpec, name: &str) -> FieldViolation {
    let known = spec.field_list();
    if is_name(name) {
        violation(
            format!("values.{name}"),
            format!(
                "is not a field of provider {} (known fields: {known})",
                spec.provider
            ),
        )
    } else {
        // Not echoed: a malformed key may be a value pasted into the wrong place.
        violation(
            "values".to_owned(),
            format!(
                "contains a field name that is not a field of provider {} (known fields: {known})",
                spec.provider
            ),
        )
    }
}

fn violation(field: String, message: impl Into<String>) -> FieldViolation {
    FieldViolation {
        field,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::providers::STRIPE;

    const KEY: &str = "sk_live_51HabcdefghijklmnopWXYZ";

    fn seal(field: &FieldSpec, value: &str) -> String {
        format!("sealed:{}:{}", field.name, value.len())
    }

    fn values(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect()
    }

    fn created() -> Stored {
        apply(
            &STRIPE,
            &Stored::default(),
            values(&[
                ("secret_key", Some(KEY)),
                ("api_base", Some(" https://api.stripe.com ")),
            ]),
            seal,
        )
        .unwrap()
        .stored
    }

    #[test]
    fn a_new_config_seals_secrets_and_keeps_settings_clear() {
        let stored = created();
        assert_eq!(
            stored.secrets["secret_key"],
            format!("sealed:secret_key:{}", KEY.len())
        );
        assert_eq!(stored.masked["secret_key"], "sk_live_…WXYZ");
        assert_eq!(stored.settings["api_base"], "https://api.stripe.com");
    }

    #[test]
    fn missing_secrets_are_kept_and_round_tripped_masks_are_no_change() {
        let current = created();
        let applied = apply(
            &STRIPE,
            &current,
            values(&[
                ("secret_key", Some("sk_live_…WXYZ")),
                ("publishable_key", Some("pk_live_abc")),
            ]),
            |_, _| panic!("nothing to seal"),
        )
        .unwrap();
        assert_eq!(applied.stored.secrets, current.secrets);
        assert_eq!(applied.changes.len(), 1);
        assert_eq!(applied.changes[0].field, "publishable_key");
        assert_eq!(applied.changes[0].old, None);
    }

    #[test]
    fn removing_a_required_field_or_omitting_it_is_refused() {
        let err = apply(&STRIPE, &created(), values(&[("secret_key", None)]), seal).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].field, "values.secret_key");

        let err = apply(
            &STRIPE,
            &Stored::default(),
            values(&[("api_base", Some("https://x.test"))]),
            seal,
        )
        .unwrap_err();
        assert_eq!(err[0].field, "values.secret_key");
        assert_eq!(err[0].message, "is required");
    }

    #[test]
    fn every_problem_is_reported_by_field_and_none_quotes_the_value() {
        let err = apply(
            &STRIPE,
            &Stored::default(),
            values(&[
                ("secret_key", Some("sk_prod_topsecretvalue")),
                ("colour", Some("blue")),
                ("Bad Key sk_live_x", Some("x")),
                ("webhook_secret", Some("whsec_…abcd")),
                ("api_base", Some("")),
            ]),
            seal,
        )
        .unwrap_err();
        let fields: Vec<_> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "values",
                "values.api_base",
                "values.colour",
                "values.secret_key",
                "values.webhook_secret"
            ]
        );
        for v in &err {
            assert!(!v.message.contains("topsecret"), "{}", v.message);
            assert!(!v.message.contains("sk_live_x"), "{}", v.message);
        }
    }

    #[test]
    fn removal_records_the_old_masked_value_only() {
        let mut current = created();
        current
            .secrets
            .insert("webhook_secret".into(), "sealed".into());
        current
            .masked
            .insert("webhook_secret".into(), "whsec_…abcd".into());
        let applied = apply(
            &STRIPE,
            &current,
            values(&[("webhook_secret", None), ("publishable_key", None)]),
            seal,
        )
        .unwrap();
        assert!(!applied.stored.secrets.contains_key("webhook_secret"));
        assert_eq!(
            applied.changes,
            [FieldChange {
                field: "webhook_secret".into(),
                secret: true,
                change: ChangeKind::Removed,
                old: Some("whsec_…abcd".into()),
                new: None,
            }]
        );
    }

    #[test]
    fn reasons() {
        assert_eq!(check_reason("  rotate key\n").unwrap(), "rotate key");
        assert_eq!(check_reason("").unwrap(), "");
        assert!(check_reason("a\u{7}b").is_err());
        assert!(check_reason(&"x".repeat(MAX_REASON_CHARS + 1)).is_err());
    }
}
