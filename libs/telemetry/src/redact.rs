//! Secret redaction for everything that ends up in a log line.
//!
//! Two mechanisms, both applied by the log layer ([`crate::json_layer`]) to every line:
//!
//! * **By field name** ([`is_sensitive_field`]): a field whose name contains `password`, `passwd`,
//!   `secret`, `token`, `authorization`, `api_key`/`apikey`, `cookie`, `private_key`, `refresh`
//!   or `credential` (case-insensitive) is written as `"[REDACTED]"`, whatever its type.
//!   Exception: token *counts* (`tokens`, `input_tokens`, `token_count`, ...) used by the AI
//!   spend metrics are numbers, not secrets, and are kept.
//! * **By value pattern** ([`redact`]): inside any string value (including the message), JWTs,
//!   Campaign OS API keys (`cos_` + 20 or more `[A-Za-z0-9_-]`), `Bearer <credential>`, Stripe
//!   secret/restricted keys and webhook secrets, passwords embedded in URLs
//!   (`scheme://user:pass@host`) and `password=...`/`token: ...` style pairs are replaced by
//!   `[REDACTED]`.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Regex, RegexSet};

/// The text that replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Substrings of field names whose values are never logged.
const SENSITIVE_NAME_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "api-key",
    "cookie",
    "private_key",
    "privatekey",
    "refresh",
    "credential",
];

/// One value rule: a pattern and its replacement (may use capture groups).
struct Rule {
    re: Regex,
    replacement: &'static str,
}

/// Pattern sources, in the order they are applied. Kept as one table so the fast-path
/// [`RegexSet`] and the rules cannot drift apart.
const RULES: &[(&str, &str)] = &[
    // `Bearer <credential>` (any case), keep the scheme so the line stays readable.
    (r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+", "$1 [REDACTED]"),
    // JWT / JWS: base64url JSON header (`{"` -> `eyJ`), payload, optional signature.
    (
        r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*)?",
        "[REDACTED]",
    ),
    // Campaign OS API keys.
    (r"cos_[A-Za-z0-9_-]{20,}", "[REDACTED]"),
    // Stripe secret / restricted keys and webhook signing secrets.
    (
        r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{8,}|\bwhsec_[A-Za-z0-9]{8,}",
        "[REDACTED]",
    ),
    // Password in a URL's userinfo: `postgres://user:pass@host` -> `postgres://user:[REDACTED]@host`.
    (
        r"(?i)\b([a-z][a-z0-9+.-]*://[^:/?#@\s]+:)[^@/?#\s]+@",
        "${1}[REDACTED]@",
    ),
    // `password=...`, `"client_secret": "..."`, `?access_token=...`, Debug output such as
    // `token: Some("...")` and `authorization: Basic ...` style pairs.
    (
        r#"(?i)\b((?:[a-z0-9_-]*(?:password|passwd|secret|token|api[_-]?key|private[_-]?key|credential|authorization|cookie)[a-z0-9_-]*)["']?\s*[=:]\s*(?:Some\()?["']?)(?:(?:basic|bearer|digest)\s+)?[^\s"'&,;})]+"#,
        "${1}[REDACTED]",
    ),
];

static RULE_SET: LazyLock<(RegexSet, Vec<Rule>)> = LazyLock::new(|| {
    // The patterns are literals of this module and covered by its tests, so compiling
    // them cannot fail at run time.
    #[allow(clippy::expect_used)]
    let set = RegexSet::new(RULES.iter().map(|(p, _)| *p)).expect("redaction patterns compile");
    #[allow(clippy::expect_used)]
    let rules = RULES
        .iter()
        .map(|(p, r)| Rule {
            re: Regex::new(p).expect("redaction pattern compiles"),
            replacement: r,
        })
        .collect();
    (set, rules)
});

/// Replace anything in `s` that looks like a credential by `[REDACTED]`.
///
/// Returns `Cow::Borrowed(s)` when nothing matched (the common case costs one `RegexSet` scan).
pub fn redact(s: &str) -> Cow<'_, str> {
    let (set, rules) = &*RULE_SET;
    if !set.is_match(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::from(s);
    for rule in rules {
        if let Cow::Owned(replaced) = rule.re.replace_all(&out, rule.replacement) {
            out = replaced;
        }
    }
    Cow::Owned(out)
}

/// Whether a field with this name must never have its value logged.
pub fn is_sensitive_field(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    if is_token_count(&lower) {
        return false;
    }
    SENSITIVE_NAME_PARTS.iter().any(|part| lower.contains(part))
}

/// `tokens`, `input_tokens`, `token_count`, `max_tokens`, `tokens_used`: LLM usage counters.
fn is_token_count(lower: &str) -> bool {
    if lower.contains("token_count") || lower.contains("token_usage") {
        return true;
    }
    // Every occurrence of "token" must be the plural "tokens" for the name to count as a counter.
    let mut rest = lower;
    let mut saw_token = false;
    while let Some(pos) = rest.find("token") {
        saw_token = true;
        let after = &rest[pos + "token".len()..];
        if !after.starts_with('s') {
            return false;
        }
        rest = after;
    }
    saw_token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_field_names() {
        for name in [
            "password",
            "new_password",
            "client_secret",
            "access_token",
            "refresh_token",
            "Authorization",
            "api_key",
            "x-api-key",
            "cookie",
            "set_cookie",
            "private_key",
            "refresh",
            "db_credentials",
            "token",
        ] {
            assert!(is_sensitive_field(name), "{name} should be sensitive");
        }
        for name in [
            "tenant_id",
            "user_id",
            "request_id",
            "email",
            "message",
            "input_tokens",
            "tokens",
            "token_count",
            "max_tokens",
        ] {
            assert!(!is_sensitive_field(name), "{name} should not be sensitive");
        }
    }

    #[test]
    fn clean_text_is_borrowed() {
        let s = "user logged in from 10.0.0.1 with tenant acme";
        assert!(matches!(redact(s), Cow::Borrowed(_)));
    }

    #[test]
    fn jwt_is_redacted() {
        let jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXZhbHVlLWhlcmU";
        let input = format!("token is {jwt} ok");
        let out = redact(&input);
        assert_eq!(out, "token is [REDACTED] ok");
    }

    #[test]
    fn bearer_is_redacted() {
        let out = redact("authorization header: Bearer abc.def-ghi_jkl~123=");
        assert!(!out.contains("abc.def"), "{out}");
        assert!(out.contains("Bearer [REDACTED]"), "{out}");
        let out = redact("bearer opaque-token-value");
        assert!(!out.contains("opaque"), "{out}");
    }

    #[test]
    fn api_keys_are_redacted() {
        let key = "cos_AbCdEfGhIjKlMnOpQrStUvWx_yz-0123";
        let input = format!("using key {key}.");
        let out = redact(&input);
        assert_eq!(out, "using key [REDACTED].");
        // Too short to be a key: kept.
        assert_eq!(redact("cos_short"), "cos_short");
    }

    #[test]
    fn stripe_keys_are_redacted() {
        for key in [
            "sk_live_51HxYzAbCdEfGhIj",
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
            "rk_live_abcdefgh1234",
            "whsec_abcdefghijklmnop",
        ] {
            let input = format!("stripe key={key}");
            let out = redact(&input);
            assert!(!out.contains(key), "{out}");
            let input = format!("stripe {key} used");
            let out = redact(&input);
            assert_eq!(out, "stripe [REDACTED] used");
        }
    }

    #[test]
    fn url_passwords_and_pairs_are_redacted() {
        let out = redact("connecting to postgres://cos:hunter2@db:5432/cos");
        assert_eq!(out, "connecting to postgres://cos:[REDACTED]@db:5432/cos");
        let out = redact("GET /callback?code=1&access_token=abc123&x=1");
        assert!(!out.contains("abc123"), "{out}");
        let out = redact(r#"{"client_secret": "s3cr3t", "name": "n"}"#);
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(out.contains(r#""name": "n""#), "{out}");
        let out = redact("password=pa55 user=bob");
        assert_eq!(out, "password=[REDACTED] user=bob");
    }

    #[test]
    fn debug_output_and_auth_headers_are_redacted() {
        let out = redact(r#"LoginRequest { email: "a@b.c", password: "pw1", otp: Some("1") }"#);
        assert!(!out.contains("pw1"), "{out}");
        assert!(out.contains(r#"email: "a@b.c""#), "{out}");
        let out = redact(r#"Creds { refresh_token: Some("opaque-r"), id: 3 }"#);
        assert!(!out.contains("opaque-r"), "{out}");
        let out = redact(r#"{"authorization": "Basic dXNlcjpwYXNzd29yZA==", "accept": "*/*"}"#);
        assert!(!out.contains("dXNlcjpw"), "{out}");
        assert!(out.contains(r#""accept": "*/*""#), "{out}");
        let out = redact(r#"{"cookie": "session=abc123"}"#);
        assert!(!out.contains("abc123"), "{out}");
    }

    #[test]
    fn several_secrets_in_one_string() {
        let s = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig and cos_0123456789abcdefghijXYZ and sk_test_abcdefghijkl";
        let out = redact(s);
        assert!(!out.contains("eyJ"), "{out}");
        assert!(!out.contains("cos_0123"), "{out}");
        assert!(!out.contains("sk_test_"), "{out}");
    }
}
