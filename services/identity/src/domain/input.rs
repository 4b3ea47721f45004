//! Validated inputs. Each `parse` returns the message a client sees next to the field name.

/// An email address, kept as typed for display and lower-cased for lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    display: String,
    normalized: String,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("is required".into());
        }
        if s.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err("is not a valid email address".into());
        };
        let bad_char = |c: char| {
            c.is_whitespace()
                || c.is_control()
                || matches!(
                    c,
                    '<' | '>' | '(' | ')' | ',' | ';' | ':' | '\\' | '"' | '[' | ']'
                )
        };
        let domain_ok = !domain.is_empty()
            && domain.len() <= 253
            && domain.contains('.')
            && !domain.starts_with(['.', '-'])
            && !domain.ends_with(['.', '-'])
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        if local.is_empty()
            || local.len() > 64
            || local.contains('@')
            || local.chars().any(bad_char)
            || !domain_ok
        {
            return Err("is not a valid email address".into());
        }
        Ok(Self {
            display: s.to_owned(),
            normalized: s.to_lowercase(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.display
    }

    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

/// A password that meets the policy; never printed.
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 10;
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let n = raw.chars().count();
        if n < Self::MIN_CHARS {
            return Err(format!("must be at least {} characters", Self::MIN_CHARS));
        }
        if n > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        if let Some(first) = raw.chars().next()
            && raw.chars().all(|c| c == first)
        {
            return Err("must not be one repeated character".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

fn short_text(raw: &str, max: usize) -> Result<String, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("is required".into());
    }
    if s.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(s.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(pub String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        short_text(raw, 100).map(Self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantName(pub String);

impl TenantName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        short_text(raw, 100).map(Self)
    }
}

/// URL-friendly base of a tenant slug (a random suffix makes it unique).
pub fn slug_base(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= 40 {
            break;
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "tenant".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        let e = Email::parse("  Ada.Lovelace+news@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Ada.Lovelace+news@Example.COM");
        assert_eq!(e.normalized(), "ada.lovelace+news@example.com");
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@exa mple.com",
            "a@.example.com",
            "a@example..com",
            "a@@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn passwords() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("aaaaaaaaaaaa").is_err());
        assert!(Password::parse(&"x1".repeat(100)).is_err());
        assert!(Password::parse("correct horse battery").is_ok());
        assert_eq!(
            format!("{:?}", Password::parse("correct horse battery").unwrap()),
            "Password([REDACTED])"
        );
    }

    #[test]
    fn names_and_slugs() {
        assert!(DisplayName::parse(&"x".repeat(100_000)).is_err());
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\u{0}b").is_err());
        assert_eq!(DisplayName::parse(" Ada ").unwrap().0, "Ada");
        assert_eq!(slug_base("Acme Fitness & Co!"), "acme-fitness-co");
        assert_eq!(slug_base("!!!"), "tenant");
    }
}
