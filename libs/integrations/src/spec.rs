//! What a provider's configuration looks like: its fields, which of them are secret or required,
//! and how each value is checked.

/// Checks one (already trimmed) value. The message is shown to the client after the field name,
/// so it must describe the expected shape and never quote the value: it may be a secret.
pub type Validator = fn(&str) -> Result<(), String>;

/// One configurable field of a provider.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// Name as clients send it (`secret_key`): `[a-z][a-z0-9_]*`, at most 63 bytes.
    pub name: &'static str,
    /// Stored encrypted, returned masked, loaded as a [`cos_crypto::Secret`].
    pub secret: bool,
    /// Must have a value once the config exists; cannot be removed.
    pub required: bool,
    /// Extra check of a submitted value.
    pub validate: Option<Validator>,
}

impl FieldSpec {
    /// An optional secret field (API key, password, signing secret).
    #[must_use]
    pub const fn secret(name: &'static str) -> Self {
        Self {
            name,
            secret: true,
            required: false,
            validate: None,
        }
    }

    /// An optional non-secret field (a base URL, a publishable key, a sender address).
    #[must_use]
    pub const fn setting(name: &'static str) -> Self {
        Self {
            name,
            secret: false,
            required: false,
            validate: None,
        }
    }

    /// Makes the field required.
    #[must_use]
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Adds a value check.
    #[must_use]
    pub const fn validated_by(mut self, validate: Validator) -> Self {
        self.validate = Some(validate);
        self
    }
}

/// A provider (`stripe`, `ayrshare`, ...) and its fields.
#[derive(Debug, Clone, Copy)]
pub struct ProviderSpec {
    /// Name of the provider: `[a-z][a-z0-9_]*`, at most 63 bytes.
    pub provider: &'static str,
    /// Every field a config of this provider may hold; anything else is refused.
    pub fields: &'static [FieldSpec],
}

impl ProviderSpec {
    /// The field called `name`.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Checks the spec itself: valid provider and field names, no field twice. Specs are
    /// constants, so a failure is a programming error; it is reported, not panicked on.
    ///
    /// # Errors
    /// A description of what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if !is_name(self.provider) {
            return Err(format!(
                "provider name {:?} is not [a-z][a-z0-9_]* (at most 63 bytes)",
                self.provider
            ));
        }
        for (i, field) in self.fields.iter().enumerate() {
            if !is_name(field.name) {
                return Err(format!(
                    "{}: field name {:?} is not [a-z][a-z0-9_]* (at most 63 bytes)",
                    self.provider, field.name
                ));
            }
            if self.fields[..i].iter().any(|f| f.name == field.name) {
                return Err(format!(
                    "{}: field {} is declared twice",
                    self.provider, field.name
                ));
            }
        }
        Ok(())
    }

    /// Field names, comma-separated, for error messages.
    pub(crate) fn field_list(&self) -> String {
        self.fields
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Provider and field names: `[a-z][a-z0-9_]{0,62}`. Such names are safe in messages, AAD and
/// SQL values.
pub(crate) fn is_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    matches!(bytes.first(), Some(b) if b.is_ascii_lowercase())
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// Specs of the providers Campaign OS talks to, and validators for building more.
pub mod providers {
    use super::{FieldSpec, ProviderSpec};

    /// Stripe (billing): `secret_key` (required; `sk_test_`/`sk_live_`/`rk_test_`/`rk_live_`),
    /// `webhook_secret` (`whsec_`), `publishable_key` (`pk_test_`/`pk_live_`, not secret) and
    /// `api_base` (a bare `http(s)://host[:port]`, for a Stripe stub in tests).
    pub const STRIPE: ProviderSpec = ProviderSpec {
        provider: "stripe",
        fields: &[
            FieldSpec::secret("secret_key")
                .required()
                .validated_by(stripe_secret_key),
            FieldSpec::secret("webhook_secret").validated_by(stripe_webhook_secret),
            FieldSpec::setting("publishable_key").validated_by(stripe_publishable_key),
            FieldSpec::setting("api_base").validated_by(http_base_url),
        ],
    };

    /// `sk_test_…`, `sk_live_…` or a restricted key `rk_test_…`/`rk_live_…`.
    ///
    /// # Errors
    /// A message that does not quote the value.
    pub fn stripe_secret_key(value: &str) -> Result<(), String> {
        prefixed_token(
            value,
            &["sk_test_", "sk_live_", "rk_test_", "rk_live_"],
            "must be a Stripe secret key (sk_test_, sk_live_, rk_test_ or rk_live_ followed by letters and digits)",
        )
    }

    /// `pk_test_…` or `pk_live_…`.
    ///
    /// # Errors
    /// A message that does not quote the value.
    pub fn stripe_publishable_key(value: &str) -> Result<(), String> {
        prefixed_token(
            value,
            &["pk_test_", "pk_live_"],
            "must be a Stripe publishable key (pk_test_ or pk_live_ followed by letters and digits)",
        )
    }

    /// `whsec_…`.
    ///
    /// # Errors
    /// A message that does not quote the value.
    pub fn stripe_webhook_secret(value: &str) -> Result<(), String> {
        prefixed_token(
            value,
            &["whsec_"],
            "must be a Stripe webhook signing secret (whsec_ followed by letters and digits)",
        )
    }

    fn prefixed_token(value: &str, prefixes: &[&str], message: &str) -> Result<(), String> {
        let ok = prefixes.iter().any(|prefix| {
            value.strip_prefix(prefix).is_some_and(|rest| {
                !rest.is_empty()
                    && rest.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'/' | b'=')
                    })
            })
        });
        if ok { Ok(()) } else { Err(message.to_owned()) }
    }

    /// A base URL that is only a scheme and an authority: `http(s)://host[:port]`, an optional
    /// trailing `/`, no credentials, path, query or fragment (SDKs append their own paths).
    ///
    /// # Errors
    /// A message describing the expected shape.
    pub fn http_base_url(value: &str) -> Result<(), String> {
        const MESSAGE: &str = "must be an http(s) URL with only a host and an optional port, e.g. https://api.stripe.com";
        let rest = value
            .strip_prefix("https://")
            .or_else(|| value.strip_prefix("http://"))
            .ok_or_else(|| MESSAGE.to_owned())?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| MESSAGE.to_owned())?;
            let ok_host =
                !host.is_empty() && host.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
            if !ok_host {
                return Err(MESSAGE.to_owned());
            }
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or_else(|| MESSAGE.to_owned())?),
                ),
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && (host.contains(':')
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
        let port_ok = port.is_none_or(|p| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n > 0)
        });
        if host_ok && port_ok {
            Ok(())
        } else {
            Err(MESSAGE.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::providers::*;
    use super::*;

    #[test]
    fn built_in_specs_are_well_formed() {
        STRIPE.check().unwrap();
        assert!(STRIPE.field("secret_key").unwrap().required);
        assert!(STRIPE.field("secret_key").unwrap().secret);
        assert!(!STRIPE.field("api_base").unwrap().secret);
        assert!(STRIPE.field("nope").is_none());
    }

    #[test]
    fn malformed_specs_are_reported() {
        const DUP: ProviderSpec = ProviderSpec {
            provider: "x",
            fields: &[FieldSpec::setting("a"), FieldSpec::secret("a")],
        };
        assert!(DUP.check().unwrap_err().contains("twice"));
        const BAD: ProviderSpec = ProviderSpec {
            provider: "Stripe",
            fields: &[],
        };
        assert!(BAD.check().is_err());
    }

    #[test]
    fn stripe_keys() {
        for ok in [
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
            "sk_live_51Habcdef",
            "rk_live_abc",
            "sk_test_123",
        ] {
            assert!(stripe_secret_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "sk_test_",
            "pk_test_abc",
            "sk_prod_abc",
            "sk_test_abc def",
            "rk_abc",
        ] {
            let err = stripe_secret_key(bad).unwrap_err();
            assert!(!err.contains("abc") && !err.contains("prod"), "{err}");
        }
        assert!(stripe_publishable_key("pk_live_abc").is_ok());
        assert!(stripe_publishable_key("sk_live_abc").is_err());
        assert!(stripe_webhook_secret("whsec_MfKQ9r8GKYqrTwjU").is_ok());
        assert!(stripe_webhook_secret("whsec").is_err());
    }

    #[test]
    fn base_urls() {
        for ok in [
            "https://api.stripe.com",
            "https://api.stripe.com/",
            "http://127.0.0.1:12111",
            "http://localhost:8080/",
            "http://[::1]:9000",
        ] {
            assert!(http_base_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "api.stripe.com",
            "ftp://x",
            "https://",
            "https://api.stripe.com/v1",
            "https://user:pw@api.stripe.com",
            "https://api.stripe.com?x=1",
            "https://api.stripe.com:0",
            "https://api.stripe.com:99999",
            "https://api stripe.com",
            "http://[::1",
        ] {
            assert!(http_base_url(bad).is_err(), "{bad}");
        }
    }
}
