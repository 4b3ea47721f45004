//! Validation of campaign fields and deterministic A/B variant assignment.
//!
//! Every check returns [`FieldViolation`]s naming the offending field path
//! (`"name"`, `"budget.currency"`, `"channels[2]"`, `"variants[1].weight"`…).
//! Enumerated values (types, channels, platforms) are matched exactly, in
//! lowercase, except platforms, which are normalised to lowercase.

use std::collections::HashSet;

use crate::domain::FieldViolation;
use crate::domain::template::Content;

/// Maximum length of a campaign name, in characters, after trimming.
pub const NAME_MAX: usize = 200;
/// Maximum length of a description, in characters, after trimming.
pub const DESCRIPTION_MAX: usize = 5000;
/// Maximum length of a goal, in characters, after trimming.
pub const GOAL_MAX: usize = 500;
/// Largest accepted budget, in minor currency units.
pub const BUDGET_MAX_MINOR: i64 = 10_000_000_000_000;
/// Maximum number of channels of a message campaign.
pub const CHANNELS_MAX: usize = 4;
/// Maximum number of platforms of a social post.
pub const PLATFORMS_MAX: usize = 10;
/// Maximum number of A/B variants.
pub const VARIANTS_MAX: usize = 10;
/// Maximum length of a variant name, in characters, after trimming.
pub const VARIANT_NAME_MAX: usize = 100;
/// Social platforms a social post may target.
pub const PLATFORMS: [&str; 12] = [
    "facebook",
    "instagram",
    "linkedin",
    "tiktok",
    "twitter",
    "youtube",
    "pinterest",
    "threads",
    "bluesky",
    "reddit",
    "telegram",
    "google_business",
];

/// What kind of campaign this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CampaignType {
    /// Messages sent to contacts over channels (email, SMS, webhook…).
    Message,
    /// A post published on social platforms.
    SocialPost,
}

impl CampaignType {
    /// Every campaign type.
    pub const ALL: [CampaignType; 2] = [CampaignType::Message, CampaignType::SocialPost];

    /// Wire name: `"message"` or `"social_post"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignType::Message => "message",
            CampaignType::SocialPost => "social_post",
        }
    }

    /// Parses a wire name (exact match).
    pub fn parse(s: &str) -> Option<CampaignType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A delivery channel of a message campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Email; needs `content.email`.
    Email,
    /// SMS; needs `content.sms`.
    Sms,
    /// HTTP webhook; needs `content.webhook`.
    Webhook,
    /// Test channel that records instead of delivering; accepts any content.
    Sandbox,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 4] = [
        Channel::Email,
        Channel::Sms,
        Channel::Webhook,
        Channel::Sandbox,
    ];

    /// Wire name: `"email"`, `"sms"`, `"webhook"` or `"sandbox"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Webhook => "webhook",
            Channel::Sandbox => "sandbox",
        }
    }

    /// Parses a wire name (exact match).
    pub fn parse(s: &str) -> Option<Channel> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A campaign budget in minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Amount in minor units (cents for USD), `0..=10^13`.
    pub amount_minor: i64,
    /// Uppercase ISO 4217 code, e.g. `"EUR"`.
    pub currency: String,
}

/// An A/B test variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Stable identifier, `[a-z0-9_-]{1,32}`, unique within the campaign.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Relative share of recipients, `1..=100`.
    pub weight: u32,
}

/// Validates a campaign name: 1..=200 characters after trimming, no control
/// characters. Returns the trimmed name. Field `"name"`.
pub fn validate_name(name: &str) -> Result<String, FieldViolation> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(FieldViolation::new("name", "must not be empty"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            "name",
            "must not contain control characters such as line breaks or tabs",
        ));
    }
    check_max_chars("name", trimmed, NAME_MAX)?;
    Ok(trimmed.to_owned())
}

/// Validates a description: at most 5000 characters after trimming; line
/// breaks and tabs are allowed, other control characters are not. Returns the
/// trimmed text (empty means "no description"). Field `"description"`.
pub fn validate_description(s: &str) -> Result<String, FieldViolation> {
    validate_free_text("description", s, DESCRIPTION_MAX)
}

/// Validates a goal: same rules as [`validate_description`] with a maximum of
/// 500 characters. Field `"goal"`.
pub fn validate_goal(s: &str) -> Result<String, FieldViolation> {
    validate_free_text("goal", s, GOAL_MAX)
}

/// Validates a budget.
///
/// * amount 0 and currency "" → `Ok(None)` (no budget);
/// * a negative amount or one above 10^13 → `"budget.amount_minor"`;
/// * otherwise the currency must be three ASCII letters (lowercase input is
///   uppercased) → `"budget.currency"`. An explicit zero amount with a
///   currency is a valid zero budget.
pub fn validate_budget(
    amount_minor: i64,
    currency: &str,
) -> Result<Option<Budget>, FieldViolation> {
    const AMOUNT: &str = "budget.amount_minor";
    if amount_minor < 0 {
        return Err(FieldViolation::new(AMOUNT, "must not be negative"));
    }
    if amount_minor > BUDGET_MAX_MINOR {
        return Err(FieldViolation::new(
            AMOUNT,
            format!("must be at most {BUDGET_MAX_MINOR}"),
        ));
    }
    let currency = currency.trim();
    if amount_minor == 0 && currency.is_empty() {
        return Ok(None);
    }
    let currency = normalize_currency(currency)?;
    Ok(Some(Budget {
        amount_minor,
        currency,
    }))
}

/// Checks the channels of a campaign against its kind and content.
///
/// Message campaigns need 1..=4 distinct known channels. Email, SMS and webhook
/// channels need their content (email: non-empty subject and an HTML or text
/// body; SMS: non-empty text; webhook: non-empty template). The sandbox channel
/// needs at least one kind of content and accepts content of any kind; without
/// sandbox, content for a channel that is not selected is reported. Social
/// posts must have no channels (their platforms are checked by
/// [`validate_platforms`]).
pub fn validate_channels(
    kind: CampaignType,
    channels: &[String],
    content: &Content,
) -> Vec<FieldViolation> {
    match kind {
        CampaignType::SocialPost if channels.is_empty() => Vec::new(),
        CampaignType::SocialPost => vec![FieldViolation::new(
            "channels",
            "a social post has no channels; choose its platforms instead",
        )],
        CampaignType::Message => {
            let (selected, mut violations) = parse_channels(channels);
            if !channels.is_empty() {
                violations.extend(check_content(&selected, content));
            }
            violations
        }
    }
}

/// Validates the platforms of a campaign. Social posts need 1..=10 distinct
/// platforms from [`PLATFORMS`] (matched case-insensitively, returned in
/// lowercase); message campaigns must have none. Field `"platforms"` or
/// `"platforms[i]"` for a problem with one entry.
pub fn validate_platforms(
    kind: CampaignType,
    platforms: &[String],
) -> Result<Vec<String>, FieldViolation> {
    if kind == CampaignType::Message {
        return if platforms.is_empty() {
            Ok(Vec::new())
        } else {
            Err(FieldViolation::new(
                "platforms",
                "a message campaign has no platforms; choose its channels instead",
            ))
        };
    }
    check_count("platforms", platforms.len(), PLATFORMS_MAX, "platform")?;
    let mut seen = Vec::with_capacity(platforms.len());
    for (i, raw) in platforms.iter().enumerate() {
        let platform = raw.trim().to_ascii_lowercase();
        let field = format!("platforms[{i}]");
        if !PLATFORMS.contains(&platform.as_str()) {
            return Err(FieldViolation::new(
                field,
                format!(
                    "unknown platform \"{raw}\"; expected one of {}",
                    PLATFORMS.join(", ")
                ),
            ));
        }
        if seen.contains(&platform) {
            return Err(FieldViolation::new(
                field,
                format!("\"{platform}\" is listed twice"),
            ));
        }
        seen.push(platform);
    }
    Ok(seen)
}

/// Validates A/B variants: none, or 2..=10; keys match `[a-z0-9_-]{1,32}` and
/// are unique; names are 1..=100 characters; weights are 1..=100.
pub fn validate_variants(variants: &[Variant]) -> Vec<FieldViolation> {
    if variants.len() == 1 {
        return vec![FieldViolation::new(
            "variants",
            "an A/B test needs at least 2 variants (or none)",
        )];
    }
    if variants.len() > VARIANTS_MAX {
        return vec![FieldViolation::new(
            "variants",
            format!(
                "at most {VARIANTS_MAX} variants are allowed, got {}",
                variants.len()
            ),
        )];
    }
    let mut keys = HashSet::new();
    let mut violations = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        violations.extend(check_variant(i, variant, &mut keys));
    }
    violations
}

/// Deterministic variant assignment per recipient: the same
/// `(campaign_id, contact_id)` always gets the same variant, and recipients
/// are distributed in proportion to the weights.
///
/// The hash is FNV-1a 64 over the 32 bytes `campaign_id ++ contact_id`,
/// followed by the MurmurHash3 64-bit finaliser (FNV's low bits mix poorly);
/// the bucket is taken with a multiply-shift into `0..total_weight`. This is
/// stable across Rust releases and platforms. Returns `None` when there are no
/// variants or all weights are zero; zero-weight variants are never chosen.
pub fn assign_variant<'a>(
    variants: &'a [Variant],
    campaign_id: &[u8; 16],
    contact_id: &[u8; 16],
) -> Option<&'a Variant> {
    let total: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
    if total == 0 {
        return None;
    }
    let hash = fmix64(fnv1a64(
        campaign_id.iter().chain(contact_id.iter()).copied(),
    ));
    let bucket = scale(hash, total);
    let mut upper = 0u64;
    variants.iter().find(|v| {
        upper += u64::from(v.weight);
        bucket < upper
    })
}

/// FNV-1a, 64-bit.
fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.into_iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// MurmurHash3's 64-bit finaliser: spreads every input bit over the output.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Maps a uniform `u64` onto `0..n` using its high bits.
fn scale(hash: u64, n: u64) -> u64 {
    // The product is < n * 2^64, so the shifted value is < n and fits in u64.
    u64::try_from((u128::from(hash) * u128::from(n)) >> 64).unwrap_or(0)
}

/// Shared rules of description-like free text.
fn validate_free_text(field: &str, s: &str, max: usize) -> Result<String, FieldViolation> {
    let trimmed = s.trim();
    if trimmed
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(FieldViolation::new(
            field,
            "must not contain control characters other than line breaks and tabs",
        ));
    }
    check_max_chars(field, trimmed, max)?;
    Ok(trimmed.to_owned())
}

fn check_max_chars(field: &str, s: &str, max: usize) -> Result<(), FieldViolation> {
    let len = s.chars().count();
    if len > max {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max} characters long, got {len}"),
        ));
    }
    Ok(())
}

/// Checks `1..=max` entries.
fn check_count(field: &str, len: usize, max: usize, noun: &str) -> Result<(), FieldViolation> {
    if len == 0 {
        return Err(FieldViolation::new(
            field,
            format!("at least one {noun} is required"),
        ));
    }
    if len > max {
        return Err(FieldViolation::new(
            field,
            format!("at most {max} {noun}s are allowed, got {len}"),
        ));
    }
    Ok(())
}

fn normalize_currency(currency: &str) -> Result<String, FieldViolation> {
    const CURRENCY: &str = "budget.currency";
    if currency.is_empty() {
        return Err(FieldViolation::new(
            CURRENCY,
            "is required when a budget amount is set",
        ));
    }
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(FieldViolation::new(
            CURRENCY,
            format!("\"{currency}\" is not a three-letter ISO 4217 code such as \"EUR\""),
        ));
    }
    Ok(currency.to_ascii_uppercase())
}

/// Parses channel names, reporting count, unknown and duplicate entries.
fn parse_channels(channels: &[String]) -> (Vec<Channel>, Vec<FieldViolation>) {
    let mut violations = Vec::new();
    if let Err(v) = check_count("channels", channels.len(), CHANNELS_MAX, "channel") {
        violations.push(v);
    }
    let mut selected = Vec::new();
    for (i, name) in channels.iter().enumerate() {
        let field = format!("channels[{i}]");
        match Channel::parse(name) {
            None => violations.push(FieldViolation::new(
                field,
                format!("unknown channel \"{name}\"; expected one of email, sms, webhook, sandbox"),
            )),
            Some(c) if selected.contains(&c) => {
                violations.push(FieldViolation::new(
                    field,
                    format!("\"{name}\" is listed twice"),
                ));
            }
            Some(c) => selected.push(c),
        }
    }
    (selected, violations)
}

/// Checks that the selected channels have content and that content is not
/// present for channels that were not selected.
fn check_content(selected: &[Channel], content: &Content) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    for channel in selected {
        violations.extend(required_content(*channel, content));
    }
    if !selected.contains(&Channel::Sandbox) {
        let present = [
            (Channel::Email, content.email.is_some()),
            (Channel::Sms, content.sms.is_some()),
            (Channel::Webhook, content.webhook.is_some()),
        ];
        for (channel, _) in present.iter().filter(|(c, p)| *p && !selected.contains(c)) {
            violations.push(FieldViolation::new(
                format!("content.{}", channel.as_str()),
                format!("{} is not one of the campaign's channels", channel.as_str()),
            ));
        }
    }
    violations
}

/// The content one channel needs.
fn required_content(channel: Channel, content: &Content) -> Vec<FieldViolation> {
    let missing = |field: &str| {
        vec![FieldViolation::new(
            field,
            format!("is required for the {} channel", channel.as_str()),
        )]
    };
    match channel {
        Channel::Email => match &content.email {
            None => missing("content.email"),
            Some(email) => check_email(email),
        },
        Channel::Sms => match &content.sms {
            None => missing("content.sms"),
            Some(sms) if sms.text.trim().is_empty() => {
                vec![FieldViolation::new("content.sms.text", "must not be empty")]
            }
            Some(_) => Vec::new(),
        },
        Channel::Webhook => match &content.webhook {
            None => missing("content.webhook"),
            Some(hook) if hook.json_template.trim().is_empty() => vec![FieldViolation::new(
                "content.webhook.json_template",
                "must not be empty",
            )],
            Some(_) => Vec::new(),
        },
        Channel::Sandbox => {
            if content.email.is_none() && content.sms.is_none() && content.webhook.is_none() {
                missing("content")
            } else {
                Vec::new()
            }
        }
    }
}

fn check_email(email: &crate::domain::template::EmailContent) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    if email.subject.trim().is_empty() {
        violations.push(FieldViolation::new(
            "content.email.subject",
            "must not be empty",
        ));
    }
    if email.html_body.trim().is_empty() && email.text_body.trim().is_empty() {
        violations.push(FieldViolation::new(
            "content.email",
            "needs an html_body or a text_body",
        ));
    }
    violations
}

/// Checks one variant; `keys` collects the keys seen so far.
fn check_variant(i: usize, v: &Variant, keys: &mut HashSet<String>) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    let key_ok = (1..=32).contains(&v.key.len())
        && v.key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !key_ok {
        violations.push(FieldViolation::new(
            format!("variants[{i}].key"),
            "must be 1 to 32 characters of a-z, 0-9, '_' or '-'",
        ));
    } else if !keys.insert(v.key.clone()) {
        violations.push(FieldViolation::new(
            format!("variants[{i}].key"),
            format!("\"{}\" is used by another variant", v.key),
        ));
    }
    let name = v.name.trim();
    if name.is_empty()
        || name.chars().count() > VARIANT_NAME_MAX
        || name.chars().any(char::is_control)
    {
        violations.push(FieldViolation::new(
            format!("variants[{i}].name"),
            format!("must be 1 to {VARIANT_NAME_MAX} characters without control characters"),
        ));
    }
    if !(1..=100).contains(&v.weight) {
        violations.push(FieldViolation::new(
            format!("variants[{i}].weight"),
            format!("must be between 1 and 100, got {}", v.weight),
        ));
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::template::{EmailContent, SmsContent, WebhookContent};

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn fields(v: &[FieldViolation]) -> Vec<&str> {
        v.iter().map(|v| v.field.as_str()).collect()
    }

    fn email() -> EmailContent {
        EmailContent {
            subject: "Hi".into(),
            text_body: "Body".into(),
            ..EmailContent::default()
        }
    }

    #[test]
    fn enums_round_trip() {
        for t in CampaignType::ALL {
            assert_eq!(CampaignType::parse(t.as_str()), Some(t));
        }
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(CampaignType::SocialPost.as_str(), "social_post");
        assert_eq!(Channel::parse("Email"), None);
        assert_eq!(CampaignType::parse("ad"), None);
    }

    #[test]
    fn name_rules() {
        assert_eq!(
            validate_name("  Spring sale \t").expect("ok"),
            "Spring sale"
        );
        assert_eq!(validate_name("   ").expect_err("empty").field, "name");
        assert!(validate_name("a\u{7}b").is_err());
        assert!(validate_name("line\nbreak").is_err());
        assert!(validate_name(&"é".repeat(200)).is_ok());
        let err = validate_name(&"é".repeat(201)).expect_err("long");
        assert_eq!(
            err.to_string(),
            "name: must be at most 200 characters long, got 201"
        );
    }

    #[test]
    fn description_and_goal_rules() {
        assert_eq!(validate_description("").expect("ok"), "");
        assert_eq!(validate_description(" a\nb ").expect("ok"), "a\nb");
        assert!(validate_description(&"x".repeat(5000)).is_ok());
        assert_eq!(
            validate_description(&"x".repeat(5001))
                .expect_err("long")
                .field,
            "description"
        );
        assert!(validate_description("a\u{0}b").is_err());
        assert!(validate_goal(&"x".repeat(500)).is_ok());
        assert_eq!(
            validate_goal(&"x".repeat(501)).expect_err("long").field,
            "goal"
        );
    }

    #[test]
    fn budget_rules() {
        assert_eq!(validate_budget(0, "").expect("ok"), None);
        let b = validate_budget(12_345, "eur").expect("ok").expect("some");
        assert_eq!(
            b,
            Budget {
                amount_minor: 12_345,
                currency: "EUR".into()
            }
        );
        assert_eq!(
            validate_budget(0, "USD").expect("ok"),
            Some(Budget {
                amount_minor: 0,
                currency: "USD".into()
            })
        );
        let err = validate_budget(-1, "EUR").expect_err("negative");
        assert_eq!(err.to_string(), "budget.amount_minor: must not be negative");
        assert!(validate_budget(BUDGET_MAX_MINOR, "EUR").is_ok());
        assert_eq!(
            validate_budget(BUDGET_MAX_MINOR + 1, "EUR")
                .expect_err("big")
                .field,
            "budget.amount_minor"
        );
        for bad in ["", "EU", "EURO", "E1R", "€UR"] {
            assert_eq!(
                validate_budget(100, bad).expect_err(bad).field,
                "budget.currency"
            );
        }
    }

    #[test]
    fn message_channels_need_content() {
        let content = Content {
            email: Some(email()),
            ..Content::default()
        };
        let kind = CampaignType::Message;
        assert!(validate_channels(kind, &strings(&["email"]), &content).is_empty());
        let v = validate_channels(kind, &strings(&["email", "sms", "webhook"]), &content);
        assert_eq!(fields(&v), ["content.sms", "content.webhook"]);
        assert_eq!(v[0].description, "is required for the sms channel");
    }

    #[test]
    fn channel_count_unknown_and_duplicates() {
        let c = Content::default();
        let kind = CampaignType::Message;
        assert_eq!(fields(&validate_channels(kind, &[], &c)), ["channels"]);
        let v = validate_channels(kind, &strings(&["sandbox", "fax", "sandbox"]), &c);
        assert_eq!(fields(&v), ["channels[1]", "channels[2]", "content"]);
        let five = strings(&["email", "sms", "webhook", "sandbox", "email"]);
        assert!(fields(&validate_channels(kind, &five, &c)).contains(&"channels"));
    }

    #[test]
    fn email_needs_subject_and_body() {
        let content = Content {
            email: Some(EmailContent {
                subject: "  ".into(),
                ..EmailContent::default()
            }),
            ..Content::default()
        };
        let v = validate_channels(CampaignType::Message, &strings(&["email"]), &content);
        assert_eq!(fields(&v), ["content.email.subject", "content.email"]);
    }

    #[test]
    fn empty_sms_and_webhook_templates() {
        let content = Content {
            sms: Some(SmsContent::default()),
            webhook: Some(WebhookContent::default()),
            ..Content::default()
        };
        let v = validate_channels(
            CampaignType::Message,
            &strings(&["sms", "webhook"]),
            &content,
        );
        assert_eq!(
            fields(&v),
            ["content.sms.text", "content.webhook.json_template"]
        );
    }

    #[test]
    fn unselected_content_is_reported() {
        let content = Content {
            email: Some(email()),
            sms: Some(SmsContent { text: "x".into() }),
            ..Content::default()
        };
        let v = validate_channels(CampaignType::Message, &strings(&["email"]), &content);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].to_string(),
            "content.sms: sms is not one of the campaign's channels"
        );
    }

    #[test]
    fn sandbox_accepts_any_content() {
        let content = Content {
            sms: Some(SmsContent { text: "x".into() }),
            ..Content::default()
        };
        let kind = CampaignType::Message;
        assert!(validate_channels(kind, &strings(&["sandbox"]), &content).is_empty());
        let v = validate_channels(kind, &strings(&["sandbox"]), &Content::default());
        assert_eq!(fields(&v), ["content"]);
    }

    #[test]
    fn social_post_has_no_channels() {
        let c = Content::default();
        assert!(validate_channels(CampaignType::SocialPost, &[], &c).is_empty());
        let v = validate_channels(CampaignType::SocialPost, &strings(&["email"]), &c);
        assert_eq!(fields(&v), ["channels"]);
    }

    #[test]
    fn platform_rules() {
        let social = CampaignType::SocialPost;
        assert_eq!(
            validate_platforms(social, &strings(&["LinkedIn", " bluesky"])).expect("ok"),
            strings(&["linkedin", "bluesky"])
        );
        assert_eq!(
            validate_platforms(social, &[]).expect_err("empty").field,
            "platforms"
        );
        assert_eq!(
            validate_platforms(social, &strings(&["x", "myspace"]))
                .expect_err("unknown")
                .field,
            "platforms[0]"
        );
        assert_eq!(
            validate_platforms(social, &strings(&["reddit", "Reddit"]))
                .expect_err("dup")
                .field,
            "platforms[1]"
        );
        let eleven: Vec<String> = PLATFORMS.iter().take(11).map(|s| (*s).to_owned()).collect();
        assert_eq!(
            validate_platforms(social, &eleven).expect_err("many").field,
            "platforms"
        );
        let ten = &eleven[..10];
        assert_eq!(validate_platforms(social, ten).expect("ok").len(), 10);
        assert!(
            validate_platforms(CampaignType::Message, &[])
                .expect("ok")
                .is_empty()
        );
        assert_eq!(
            validate_platforms(CampaignType::Message, &strings(&["reddit"]))
                .expect_err("msg")
                .field,
            "platforms"
        );
    }

    fn variant(key: &str, weight: u32) -> Variant {
        Variant {
            key: key.into(),
            name: format!("Variant {key}"),
            weight,
        }
    }

    #[test]
    fn variant_rules() {
        assert!(validate_variants(&[]).is_empty());
        assert_eq!(fields(&validate_variants(&[variant("a", 1)])), ["variants"]);
        assert!(validate_variants(&[variant("a", 1), variant("b-2_x", 100)]).is_empty());
        let eleven: Vec<Variant> = (0..11).map(|i| variant(&format!("v{i}"), 1)).collect();
        assert_eq!(fields(&validate_variants(&eleven)), ["variants"]);
        assert!(validate_variants(&eleven[..10]).is_empty());
        let bad = [
            variant("A", 1),
            variant("ok", 0),
            variant("ok", 101),
            variant(&"k".repeat(33), 5),
            Variant {
                key: "n".into(),
                name: " ".into(),
                weight: 5,
            },
        ];
        assert_eq!(
            fields(&validate_variants(&bad)),
            [
                "variants[0].key",
                "variants[1].weight",
                "variants[2].key",
                "variants[2].weight",
                "variants[3].key",
                "variants[4].name"
            ]
        );
    }

    #[test]
    fn fnv1a_reference_vectors() {
        assert_eq!(fnv1a64(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(*b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn assign_variant_edge_cases() {
        let id = [7u8; 16];
        assert_eq!(assign_variant(&[], &id, &id), None);
        assert_eq!(assign_variant(&[variant("a", 0)], &id, &id), None);
        let only = [variant("a", 0), variant("b", 3)];
        assert_eq!(
            assign_variant(&only, &id, &id).map(|v| v.key.as_str()),
            Some("b")
        );
    }

    #[test]
    fn assign_variant_is_stable() {
        let variants = [variant("a", 50), variant("b", 30), variant("c", 20)];
        let campaign = *b"campaign-0000001";
        // Cross-checked with an independent implementation of the same hash.
        let hash = fmix64(fnv1a64(campaign.iter().chain(b"contact-00000042").copied()));
        assert_eq!(hash, 0x929c_160a_ef56_0ae8);
        let expected = [
            ([0u8; 16], "c"),
            ([1u8; 16], "a"),
            ([0xffu8; 16], "a"),
            (*b"contact-00000042", "b"),
        ];
        for (contact, key) in expected {
            let got = assign_variant(&variants, &campaign, &contact).expect("some");
            assert_eq!(got.key, key, "{contact:?}");
            // Same inputs, same answer.
            assert_eq!(assign_variant(&variants, &campaign, &contact), Some(got));
        }
    }

    /// SplitMix64, for reproducible pseudo-random ids in tests.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn random_id(state: &mut u64) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&splitmix(state).to_le_bytes());
        id[8..].copy_from_slice(&splitmix(state).to_le_bytes());
        id
    }

    #[test]
    fn assign_variant_follows_weights() {
        let variants = [
            variant("a", 50),
            variant("b", 30),
            variant("c", 15),
            variant("d", 5),
        ];
        let total: u32 = variants.iter().map(|v| v.weight).sum();
        let campaign = *b"0123456789abcdef";
        let mut state = 42;
        let mut counts = [0u32; 4];
        const N: u32 = 100_000;
        for _ in 0..N {
            let contact = random_id(&mut state);
            let v = assign_variant(&variants, &campaign, &contact).expect("some");
            let i = variants.iter().position(|x| x == v).expect("member");
            counts[i] += 1;
        }
        for (v, count) in variants.iter().zip(counts) {
            let share = f64::from(count) / f64::from(N);
            let want = f64::from(v.weight) / f64::from(total);
            assert!((share - want).abs() < 0.02, "{}: {share} vs {want}", v.key);
        }
    }

    #[test]
    fn sequential_contact_ids_are_spread() {
        // Structured ids (only the last byte differs) must still be spread.
        let variants = [variant("a", 1), variant("b", 1)];
        let campaign = [0u8; 16];
        let mut hits_a = 0;
        for n in 0..=255u8 {
            let mut contact = [0u8; 16];
            contact[15] = n;
            if assign_variant(&variants, &campaign, &contact).map(|v| v.key.as_str()) == Some("a") {
                hits_a += 1;
            }
        }
        assert!((96..=160).contains(&hits_a), "{hits_a}");
    }
}
