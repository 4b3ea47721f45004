//! Plaintext secrets that refuse to be printed, and masking for showing one back to a user.

use std::fmt;

use zeroize::Zeroizing;

/// A plaintext secret (API key, webhook signing secret, password) held in memory.
///
/// `Debug` and `Display` print `[REDACTED]`, so a secret inside a struct that gets logged, or
/// inside an error, stays hidden; the memory is wiped on drop. Reading it takes an explicit
/// [`Secret::expose_secret`], which is easy to spot in review. `Serialize` is deliberately
/// not implemented so a secret cannot end up in an API response or a JSON log by accident;
/// `Deserialize` is, so configuration can hold secrets.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

const REDACTED: &str = "[REDACTED]";

impl Secret {
    /// Wraps a plaintext secret.
    #[must_use]
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Zeroizing::new(secret.into()))
    }

    pub(crate) fn from_zeroizing(secret: Zeroizing<String>) -> Self {
        Self(secret)
    }

    /// The plaintext. Call sites are where secrets leave the type system; keep them few.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The secret masked for display, see [`mask`].
    #[must_use]
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self::new(secret)
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Self::new(secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// Characters kept at the end of a masked secret, so a user can tell two keys apart.
const VISIBLE_SUFFIX: usize = 4;
/// Below this many characters after the prefix, showing the suffix would reveal too large a
/// share of the secret, so it is masked entirely.
const MIN_BODY_TO_SHOW_SUFFIX: usize = 12;
/// What a fully masked secret looks like; fixed so it reveals not even the length.
const FULLY_MASKED: &str = "****";

/// Masks a secret for display: keeps a recognisable vendor prefix and the last 4 characters,
/// e.g. `sk_live_…abcd` or `cos_…wxyz`. Secrets too short for that are fully masked as `****`.
///
/// The prefix is at most two segments of 2-8 lowercase ASCII letters, each ending in `_` or `-`
/// (`sk_live_`, `whsec_`, `xoxb-`): such prefixes name the kind of key, not its value, and the
/// narrow pattern keeps random key material from being mistaken for one.
#[must_use]
pub fn mask(secret: &str) -> String {
    let (prefix, body) = split_recognisable_prefix(secret);
    let body_chars = body.chars().count();
    if body_chars < MIN_BODY_TO_SHOW_SUFFIX {
        return FULLY_MASKED.to_owned();
    }
    // Counted in chars, not bytes, so a non-ASCII secret never gets split mid-character.
    let suffix: String = body.chars().skip(body_chars - VISIBLE_SUFFIX).collect();
    format!("{prefix}…{suffix}")
}

fn split_recognisable_prefix(secret: &str) -> (&str, &str) {
    const MAX_SEGMENTS: usize = 2;
    let bytes = secret.as_bytes();
    let mut end = 0;
    for _ in 0..MAX_SEGMENTS {
        let letters = bytes
            .get(end..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_lowercase())
            .count();
        let separator = bytes.get(end + letters);
        if (2..=8).contains(&letters) && matches!(separator, Some(b'_' | b'-')) {
            end += letters + 1;
        } else {
            break;
        }
    }
    // `end` follows an ASCII separator, so it is a char boundary and the split always succeeds.
    secret.split_at_checked(end).unwrap_or(("", secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize as _;
    use serde::de::IntoDeserializer as _;

    #[test]
    fn a_secret_never_prints_its_value() {
        let secret = Secret::new("sk_live_51Habcdefghijklmnop");
        assert_eq!(format!("{secret:?}"), "[REDACTED]");
        assert_eq!(format!("{secret}"), "[REDACTED]");
        assert_eq!(format!("{:#?}", Some(&secret)), "Some(\n    [REDACTED],\n)");
        assert_eq!(secret.expose_secret(), "sk_live_51Habcdefghijklmnop");
    }

    #[test]
    fn a_secret_can_come_from_configuration() {
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            "whsec_abc".into_deserializer();
        let secret = Secret::deserialize(de).unwrap();
        assert_eq!(secret.expose_secret(), "whsec_abc");
    }

    #[test]
    fn masking_keeps_the_vendor_prefix_and_last_four() {
        assert_eq!(mask("sk_live_51Hxxxxxxxxxxabcd"), "sk_live_…abcd");
        assert_eq!(mask("cos_0123456789abcdefwxyz"), "cos_…wxyz");
        assert_eq!(
            mask("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "whsec_…LaSw"
        );
        assert_eq!(mask("xoxb-17653672481-19874698323-pdFZKVQ"), "xoxb-…ZKVQ");
        assert_eq!(
            Secret::new("sk_test_4eC39HqLyjWDarjtT1zdp7dc").masked(),
            "sk_test_…p7dc"
        );
    }

    #[test]
    fn masking_without_a_prefix_shows_only_the_last_four() {
        assert_eq!(mask("0f9e8d7c6b5a49382716aa55"), "…aa55");
        // Upper case or one-letter "segments" are more likely key material than a vendor tag.
        assert_eq!(mask("AKIAIOSFODNN7EXAMPLE"), "…MPLE");
        assert_eq!(mask("a_0123456789abcdef"), "…cdef");
        // Only two segments count as prefix; the rest is treated as the secret.
        assert_eq!(mask("ab_cd_ef_0123456789abcd"), "ab_cd_…abcd");
    }

    #[test]
    fn short_secrets_are_fully_masked() {
        assert_eq!(mask(""), "****");
        assert_eq!(mask("abc"), "****");
        assert_eq!(mask("hunter2hunter"), "…nter");
        assert_eq!(mask("hunter2hunt"), "****");
        // The prefix does not count towards the length: 11 characters after `sk_live_`.
        assert_eq!(mask("sk_live_abcdefghijk"), "****");
        assert_eq!(mask("sk_live_abcdefghijkl"), "sk_live_…ijkl");
    }

    #[test]
    fn masking_never_splits_a_multibyte_character() {
        assert_eq!(mask("пароль-очень-длинный"), "…нный");
        assert_eq!(mask("cos_ééééééééééé🔑🔑🔑🔑"), "cos_…🔑🔑🔑🔑");
        assert_eq!(mask("ключ"), "****");
    }
}
