//! Channel content written as [minijinja](https://docs.rs/minijinja) templates.
//!
//! # Template context
//!
//! Every template is rendered against one object: the caller's `extra` object
//! (for example `{"campaign": {"name": "Spring sale"}, "unsubscribe_url": "…"}`)
//! with the key `contact` set to the recipient ([`RenderContact`]). A `contact`
//! key inside `extra` is replaced; an `extra` that is not a JSON object is
//! ignored. Contact attributes are reachable as `contact.attributes.<key>`.
//!
//! # Undefined values
//!
//! Undefined values are lenient and chainable: `{{ contact.attributes.plan.tier }}`
//! renders as nothing when `plan` is missing, so a missing attribute never fails
//! a send. Use `{{ contact.first_name | default("there") }}` for fallbacks.
//!
//! # Escaping
//!
//! * `content.email.html_body` is HTML auto-escaped: `<script>` in a contact
//!   field comes out as `&lt;script&gt;`. Authors may opt out with `|safe`.
//! * subject, preheader, text body and SMS text are not escaped.
//! * `content.webhook.json_template` uses minijinja's JSON auto-escaping: every
//!   `{{ expression }}` is printed as a complete JSON literal, *including the
//!   quotes of strings*. Authors therefore write
//!   `{"name": {{ contact.first_name }}, "plan": {{ contact.attributes.plan }}}`
//!   and **not** `"{{ contact.first_name }}"`; a missing value prints `null`.
//!   Because of this a contact value can never break out of its JSON string.
//!   Writing the quotes anyway yields invalid JSON, which rendering reports.
//!
//! # Limits
//!
//! minijinja is built without its `multi_template` and `macros` features and
//! without a loader, so `include`, `import`, `extends` and `macro` are syntax
//! errors. Each render gets a fuel budget of
//! [`RENDER_FUEL`] instructions and a recursion limit of [`RECURSION_LIMIT`];
//! runaway loops fail with a [`RenderError`] instead of hanging, and each
//! rendered field is capped at [`Limits::rendered_max`] bytes.
//!
//! # Validation
//!
//! minijinja resolves filters, tests and functions at render time, not at
//! compile time. [`Renderer::validate`] therefore compiles every template and
//! then performs a best-effort dry run against an empty contact, reporting
//! unknown filters/tests/functions *on the path that dry run
//! takes*. An unknown filter inside an `{% if %}` branch that is false for an
//! empty contact is only caught when a real send renders it.

use std::fmt;

use minijinja::value::Serde;
use minijinja::{
    AutoEscape, Environment, ErrorKind, Output, State, UndefinedBehavior, Value, escape_formatter,
};
use serde::{Deserialize, Serialize};

use crate::FieldViolation;

/// Instructions a single template render may execute (minijinja fuel).
pub const RENDER_FUEL: u64 = 50_000;

/// Maximum nesting depth of a render (loops, conditionals, recursive loops).
pub const RECURSION_LIMIT: usize = 64;

/// Email content of a campaign; every field is a template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailContent {
    /// Subject line (not escaped).
    pub subject: String,
    /// Preview text shown after the subject in inboxes (not escaped; optional).
    pub preheader: String,
    /// HTML body, HTML auto-escaped (optional if `text_body` is set).
    pub html_body: String,
    /// Plain-text body, not escaped (optional if `html_body` is set).
    pub text_body: String,
}

/// SMS content of a campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsContent {
    /// Message text template (not escaped).
    pub text: String,
}

/// Webhook content of a campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookContent {
    /// JSON payload template, JSON auto-escaped (see the module docs).
    pub json_template: String,
}

/// All channel content of a campaign. Which channels are required is checked
/// by the campaigns service (`validate_channels`), not here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// Email content, if any.
    pub email: Option<EmailContent>,
    /// SMS content, if any.
    pub sms: Option<SmsContent>,
    /// Webhook content, if any.
    pub webhook: Option<WebhookContent>,
}

/// What templates see as `contact`.
///
/// Absent optional fields (and `null` attributes) are *undefined* in templates,
/// so they print as nothing and `default(...)` replaces them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RenderContact {
    /// Contact identifier (UUID text).
    pub contact_id: String,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number (E.164).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Identifier in the tenant's own systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Given name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// BCP 47 locale, e.g. `de-DE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// IANA time zone, e.g. `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Custom attributes, reachable as `contact.attributes.<key>`.
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// A fully rendered email.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderedEmail {
    /// Rendered subject line.
    pub subject: String,
    /// Rendered preheader (empty when the template is empty).
    pub preheader: String,
    /// Rendered HTML body (empty when the template is empty).
    pub html_body: String,
    /// Rendered text body (empty when the template is empty).
    pub text_body: String,
}

/// Size limits for templates and rendered output.
///
/// `subject_max`, `preheader_max` and `sms_max` count Unicode characters (what
/// an author sees); the other limits count UTF-8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum subject template length in characters (default 998).
    pub subject_max: usize,
    /// Maximum preheader template length in characters (default 255).
    pub preheader_max: usize,
    /// Maximum HTML or text body template size in bytes (default 512 KiB).
    pub body_max: usize,
    /// Maximum SMS template length in characters (default 1600).
    pub sms_max: usize,
    /// Maximum webhook template size in bytes (default 64 KiB).
    pub webhook_max: usize,
    /// Maximum size of any single rendered field in bytes (default 1 MiB).
    pub rendered_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            subject_max: 998,
            preheader_max: 255,
            body_max: 512 * 1024,
            sms_max: 1600,
            webhook_max: 64 * 1024,
            rendered_max: 1024 * 1024,
        }
    }
}

/// Rendering failed for one template field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// Field path of the template, e.g. `"content.email.html_body"`.
    pub field: String,
    /// What went wrong, phrased for the template author.
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for RenderError {}

impl RenderError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

const EMAIL_SUBJECT: &str = "content.email.subject";
const EMAIL_PREHEADER: &str = "content.email.preheader";
const EMAIL_HTML_BODY: &str = "content.email.html_body";
const EMAIL_TEXT_BODY: &str = "content.email.text_body";
const SMS_TEXT: &str = "content.sms.text";
const WEBHOOK_JSON: &str = "content.webhook.json_template";

/// How a length limit is measured.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Chars,
    Bytes,
}

impl Unit {
    fn measure(self, s: &str) -> usize {
        match self {
            Unit::Chars => s.chars().count(),
            Unit::Bytes => s.len(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Chars => "characters",
            Unit::Bytes => "bytes",
        }
    }
}

/// One template of a [`Content`], with its field path and size limit.
struct TemplateField<'a> {
    field: &'static str,
    source: &'a str,
    max: usize,
    unit: Unit,
}

/// The escaping a field's template is rendered with. The template name given to
/// minijinja is the field path, so the auto-escape callback can decide by name.
fn auto_escape_for(field: &str) -> AutoEscape {
    match field {
        EMAIL_HTML_BODY => AutoEscape::Html,
        WEBHOOK_JSON => AutoEscape::Json,
        _ => AutoEscape::None,
    }
}

/// Validates and renders campaign content templates.
pub struct Renderer {
    env: Environment<'static>,
    limits: Limits,
}

impl fmt::Debug for Renderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renderer")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Renderer {
    /// Creates a renderer with a sandboxed environment: no loader, lenient
    /// chainable undefined values, per-field escaping, fuel and recursion caps.
    pub fn new(limits: Limits) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_auto_escape_callback(auto_escape_for);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_formatter(format_value);
        Self { env, limits }
    }

    /// The limits this renderer enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks sizes and compiles every template of the content.
    ///
    /// Violations name fields like `"content.email.subject"`; syntax errors say
    /// `"template syntax error at line N: <minijinja's message>"`. Empty
    /// templates and absent channel content are skipped (the caller decides
    /// which channels need content).
    pub fn validate(&self, content: &Content) -> Vec<FieldViolation> {
        let context = build_context(&RenderContact::default(), &serde_json::Value::Null);
        self.template_fields(content)
            .into_iter()
            .filter(|f| !f.source.is_empty())
            .filter_map(|f| self.validate_field(&f, &context))
            .collect()
    }

    /// Renders all four email templates for one contact.
    pub fn render_email(
        &self,
        c: &EmailContent,
        contact: &RenderContact,
        extra: &serde_json::Value,
    ) -> Result<RenderedEmail, RenderError> {
        let ctx = build_context(contact, extra);
        Ok(RenderedEmail {
            subject: self.render_field(EMAIL_SUBJECT, &c.subject, &ctx)?,
            preheader: self.render_field(EMAIL_PREHEADER, &c.preheader, &ctx)?,
            html_body: self.render_field(EMAIL_HTML_BODY, &c.html_body, &ctx)?,
            text_body: self.render_field(EMAIL_TEXT_BODY, &c.text_body, &ctx)?,
        })
    }

    /// Renders the SMS text for one contact.
    pub fn render_sms(
        &self,
        c: &SmsContent,
        contact: &RenderContact,
        extra: &serde_json::Value,
    ) -> Result<String, RenderError> {
        self.render_field(SMS_TEXT, &c.text, &build_context(contact, extra))
    }

    /// Renders the webhook payload and parses it: the result must be valid JSON.
    pub fn render_webhook(
        &self,
        c: &WebhookContent,
        contact: &RenderContact,
        extra: &serde_json::Value,
    ) -> Result<serde_json::Value, RenderError> {
        let ctx = build_context(contact, extra);
        let text = self.render_field(WEBHOOK_JSON, &c.json_template, &ctx)?;
        serde_json::from_str(&text).map_err(|e| {
            RenderError::new(
                WEBHOOK_JSON,
                format!("rendered webhook payload is not valid JSON: {e}"),
            )
        })
    }

    /// Lists every template of `content` with its limit.
    fn template_fields<'a>(&self, content: &'a Content) -> Vec<TemplateField<'a>> {
        let l = &self.limits;
        let mut fields = Vec::new();
        if let Some(email) = &content.email {
            fields.extend([
                field(EMAIL_SUBJECT, &email.subject, l.subject_max, Unit::Chars),
                field(
                    EMAIL_PREHEADER,
                    &email.preheader,
                    l.preheader_max,
                    Unit::Chars,
                ),
                field(EMAIL_HTML_BODY, &email.html_body, l.body_max, Unit::Bytes),
                field(EMAIL_TEXT_BODY, &email.text_body, l.body_max, Unit::Bytes),
            ]);
        }
        if let Some(sms) = &content.sms {
            fields.push(field(SMS_TEXT, &sms.text, l.sms_max, Unit::Chars));
        }
        if let Some(webhook) = &content.webhook {
            let src = &webhook.json_template;
            fields.push(field(WEBHOOK_JSON, src, l.webhook_max, Unit::Bytes));
        }
        fields
    }

    /// Size check, compile, then a dry run for render-time-only name errors.
    fn validate_field(&self, f: &TemplateField<'_>, context: &Value) -> Option<FieldViolation> {
        // PostgreSQL text and jsonb cannot hold U+0000.
        if f.source.contains('\0') {
            return Some(FieldViolation::new(
                f.field,
                "must not contain NUL (U+0000) characters",
            ));
        }
        let size = f.unit.measure(f.source);
        if size > f.max {
            return Some(FieldViolation::new(
                f.field,
                format!(
                    "is {size} {unit} long; the maximum is {max} {unit}",
                    unit = f.unit.name(),
                    max = f.max
                ),
            ));
        }
        let template = match self.env.template_from_named_str(f.field, f.source) {
            Ok(template) => template,
            Err(err) => return Some(FieldViolation::new(f.field, describe(&err))),
        };
        match template.render(context.clone()) {
            Err(err) if is_static_error(err.kind()) => {
                Some(FieldViolation::new(f.field, describe(&err)))
            }
            _ => None,
        }
    }

    /// Compiles and renders one field; an empty template renders as "".
    fn render_field(&self, field: &str, source: &str, ctx: &Value) -> Result<String, RenderError> {
        if source.is_empty() {
            return Ok(String::new());
        }
        let to_error = |err: minijinja::Error| RenderError::new(field, describe(&err));
        let template = self
            .env
            .template_from_named_str(field, source)
            .map_err(to_error)?;
        let rendered = template.render(ctx.clone()).map_err(to_error)?;
        if rendered.len() > self.limits.rendered_max {
            return Err(RenderError::new(
                field,
                format!(
                    "rendered output is {} bytes; the maximum is {} bytes",
                    rendered.len(),
                    self.limits.rendered_max
                ),
            ));
        }
        Ok(rendered)
    }
}

impl Renderer {
    /// Compiles every template of `content` once, for rendering many recipients (a delivery
    /// job): rendering then skips parsing. Errors name the field like [`Renderer::validate`].
    pub fn compile(&self, content: &Content) -> Result<CompiledContent, RenderError> {
        let mut env = self.env.clone();
        let mut names = Vec::new();
        let mut add = |name: &'static str, source: &str| -> Result<(), RenderError> {
            if !source.is_empty() {
                env.add_template_owned(name, source.to_owned())
                    .map_err(|e| RenderError::new(name, describe(&e)))?;
                names.push(name);
            }
            Ok(())
        };
        if let Some(e) = &content.email {
            add(EMAIL_SUBJECT, &e.subject)?;
            add(EMAIL_PREHEADER, &e.preheader)?;
            add(EMAIL_HTML_BODY, &e.html_body)?;
            add(EMAIL_TEXT_BODY, &e.text_body)?;
        }
        if let Some(s) = &content.sms {
            add(SMS_TEXT, &s.text)?;
        }
        if let Some(w) = &content.webhook {
            add(WEBHOOK_JSON, &w.json_template)?;
        }
        Ok(CompiledContent {
            env,
            names,
            limits: self.limits,
            has_email: content.email.is_some(),
            has_sms: content.sms.is_some(),
            has_webhook: content.webhook.is_some(),
        })
    }
}

/// A content's templates compiled once (see [`Renderer::compile`]); renders like [`Renderer`]
/// with the same escaping, fuel and limits.
pub struct CompiledContent {
    env: Environment<'static>,
    names: Vec<&'static str>,
    limits: Limits,
    has_email: bool,
    has_sms: bool,
    has_webhook: bool,
}

impl fmt::Debug for CompiledContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledContent")
            .field("templates", &self.names)
            .finish_non_exhaustive()
    }
}

impl CompiledContent {
    pub fn has_email(&self) -> bool {
        self.has_email
    }

    pub fn has_sms(&self) -> bool {
        self.has_sms
    }

    pub fn has_webhook(&self) -> bool {
        self.has_webhook
    }

    fn field(&self, name: &'static str, ctx: &Value) -> Result<String, RenderError> {
        if !self.names.contains(&name) {
            return Ok(String::new());
        }
        let to_error = |err: minijinja::Error| RenderError::new(name, describe(&err));
        let rendered = self
            .env
            .get_template(name)
            .map_err(to_error)?
            .render(ctx)
            .map_err(to_error)?;
        if rendered.len() > self.limits.rendered_max {
            return Err(RenderError::new(
                name,
                format!(
                    "rendered output is {} bytes; the maximum is {} bytes",
                    rendered.len(),
                    self.limits.rendered_max
                ),
            ));
        }
        Ok(rendered)
    }

    /// The email for one contact (all four parts; absent ones are empty).
    pub fn render_email(
        &self,
        contact: &RenderContact,
        extra: &serde_json::Value,
    ) -> Result<RenderedEmail, RenderError> {
        let ctx = build_context(contact, extra);
        Ok(RenderedEmail {
            subject: self.field(EMAIL_SUBJECT, &ctx)?,
            preheader: self.field(EMAIL_PREHEADER, &ctx)?,
            html_body: self.field(EMAIL_HTML_BODY, &ctx)?,
            text_body: self.field(EMAIL_TEXT_BODY, &ctx)?,
        })
    }

    /// The SMS text for one contact.
    pub fn render_sms(
        &self,
        contact: &RenderContact,
        extra: &serde_json::Value,
    ) -> Result<String, RenderError> {
        self.field(SMS_TEXT, &build_context(contact, extra))
    }

    /// The webhook payload for one contact, parsed: it must be valid JSON.
    pub fn render_webhook(
        &self,
        contact: &RenderContact,
        extra: &serde_json::Value,
    ) -> Result<serde_json::Value, RenderError> {
        let text = self.field(WEBHOOK_JSON, &build_context(contact, extra))?;
        serde_json::from_str(&text).map_err(|e| {
            RenderError::new(
                WEBHOOK_JSON,
                format!("rendered webhook payload is not valid JSON: {e}"),
            )
        })
    }
}

fn field<'a>(field: &'static str, source: &'a str, max: usize, unit: Unit) -> TemplateField<'a> {
    TemplateField {
        field,
        source,
        max,
        unit,
    }
}

/// Prints `none` (JSON `null`) like an undefined value: empty in text and
/// HTML, `null` in JSON. Otherwise minijinja's default formatting applies.
fn format_value(
    out: &mut Output,
    state: &mut State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    let value = if value.is_none() {
        &Value::UNDEFINED
    } else {
        value
    };
    escape_formatter(out, state, value)
}

/// Errors that a dry run can report regardless of the data rendered: they are
/// mistakes in the template itself, not in a particular contact's values.
fn is_static_error(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::UnknownFilter
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownFunction
            | ErrorKind::SyntaxError
    )
}

/// Builds the render context: `extra`'s keys plus `contact`.
fn build_context(contact: &RenderContact, extra: &serde_json::Value) -> Value {
    let mut map = match extra {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    let mut contact = serde_json::to_value(contact).unwrap_or(serde_json::Value::Null);
    drop_null_attributes(&mut contact);
    map.insert("contact".to_owned(), contact);
    Value::from(Serde(map))
}

/// Removes top-level `null` attributes so that `default(...)` applies to them
/// exactly as to missing ones.
fn drop_null_attributes(contact: &mut serde_json::Value) {
    if let Some(serde_json::Value::Object(attributes)) = contact.get_mut("attributes") {
        attributes.retain(|_, value| !value.is_null());
    }
}

/// Turns a minijinja error into an author-facing message with its line.
fn describe(err: &minijinja::Error) -> String {
    let at = err
        .line()
        .map(|n| format!(" at line {n}"))
        .unwrap_or_default();
    let detail = err.detail().unwrap_or("");
    match err.kind() {
        ErrorKind::SyntaxError => format!("template syntax error{at}: {detail}"),
        ErrorKind::OutOfFuel => format!(
            "template is too expensive to render{at}: it exceeded its budget of \
             {RENDER_FUEL} steps (look for very long or nested loops)"
        ),
        ErrorKind::TemplateNotFound => {
            format!(
                "template error{at}: templates cannot include, import or extend other templates"
            )
        }
        kind if detail.is_empty() => format!("template error{at}: {kind}"),
        kind => format!("template error{at}: {kind}: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nul_characters_are_refused_with_the_field() {
        let r = super::Renderer::new(super::Limits::default());
        let content = super::Content {
            sms: Some(super::SmsContent {
                text: "a\0b".into(),
            }),
            ..Default::default()
        };
        let v = r.validate(&content);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].field, "content.sms.text");
    }

    use super::*;
    use serde_json::json;

    fn renderer() -> Renderer {
        Renderer::default()
    }

    fn contact(first_name: &str) -> RenderContact {
        let mut attributes = serde_json::Map::new();
        attributes.insert("plan".into(), json!("gold"));
        RenderContact {
            contact_id: "c-1".into(),
            email: Some("ada@example.com".into()),
            first_name: Some(first_name.into()),
            attributes,
            ..RenderContact::default()
        }
    }

    fn extra() -> serde_json::Value {
        json!({"campaign": {"name": "Spring"}, "unsubscribe_url": "https://u.example/x?a=1&b=2"})
    }

    fn email(html: &str) -> EmailContent {
        EmailContent {
            subject: "Hi {{ contact.first_name }}".into(),
            preheader: String::new(),
            html_body: html.into(),
            text_body: "Hello {{ contact.first_name }}".into(),
        }
    }

    fn email_content(e: EmailContent) -> Content {
        Content {
            email: Some(e),
            ..Content::default()
        }
    }

    #[test]
    fn valid_content_has_no_violations() {
        let content = Content {
            email: Some(email("<p>{{ contact.first_name }} {{ campaign.name }}</p>")),
            sms: Some(SmsContent {
                text: "Hi {{ contact.first_name | default('there') }}".into(),
            }),
            webhook: Some(WebhookContent {
                json_template: r#"{"id": {{ contact.contact_id }}}"#.into(),
            }),
        };
        assert_eq!(renderer().validate(&content), vec![]);
    }

    #[test]
    fn no_channel_content_is_not_an_error() {
        assert!(renderer().validate(&Content::default()).is_empty());
    }

    #[test]
    fn empty_optional_content_is_ignored() {
        let e = EmailContent {
            subject: "S".into(),
            ..EmailContent::default()
        };
        let r = renderer();
        assert!(r.validate(&email_content(e.clone())).is_empty());
        let out = r
            .render_email(&e, &contact("Ada"), &extra())
            .expect("renders");
        assert_eq!(out.subject, "S");
        assert_eq!(out.preheader, "");
        assert_eq!(out.html_body, "");
    }

    #[test]
    fn syntax_error_names_field_and_line() {
        let content = email_content(email("<p>\n  ok\n  {{ contact.first_name( }}\n</p>"));
        let v = renderer().validate(&content);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].field, "content.email.html_body");
        assert!(
            v[0].description
                .starts_with("template syntax error at line 3: "),
            "{}",
            v[0].description
        );
    }

    #[test]
    fn syntax_error_in_sms_and_webhook() {
        let content = Content {
            sms: Some(SmsContent {
                text: "{% if %}".into(),
            }),
            webhook: Some(WebhookContent {
                json_template: "{\n{% for %}".into(),
            }),
            ..Content::default()
        };
        let v = renderer().validate(&content);
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["content.sms.text", "content.webhook.json_template"]
        );
        assert!(v[1].description.contains("line 2"), "{}", v[1].description);
    }

    #[test]
    fn unknown_filter_reported_by_dry_run() {
        let content = email_content(EmailContent {
            subject: "a\n{{ contact.first_name | shout }}".into(),
            ..EmailContent::default()
        });
        let v = renderer().validate(&content);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].field, "content.email.subject");
        assert!(v[0].description.contains("line 2"), "{}", v[0].description);
        assert!(v[0].description.contains("shout"), "{}", v[0].description);
    }

    #[test]
    fn include_is_rejected() {
        let content = email_content(EmailContent {
            subject: "{% include 'secrets.txt' %}".into(),
            ..EmailContent::default()
        });
        let v = renderer().validate(&content);
        assert_eq!(v.len(), 1);
        assert!(v[0].description.contains("include"), "{}", v[0].description);
    }

    #[test]
    fn size_limits() {
        let limits = Limits {
            subject_max: 5,
            sms_max: 3,
            ..Limits::default()
        };
        let r = Renderer::new(limits);
        let content = Content {
            email: Some(EmailContent {
                subject: "ääääää".into(), // 6 chars, 12 bytes
                ..EmailContent::default()
            }),
            sms: Some(SmsContent { text: "abc".into() }),
            ..Content::default()
        };
        let v = r.validate(&content);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].field, "content.email.subject");
        assert_eq!(
            v[0].description,
            "is 6 characters long; the maximum is 5 characters"
        );

        let big = "x".repeat(Limits::default().body_max + 1);
        let v = renderer().validate(&email_content(email(&big)));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].field, "content.email.html_body");
        assert!(v[0].description.contains("bytes"));
    }

    #[test]
    fn rendered_output_limit() {
        let r = Renderer::new(Limits {
            rendered_max: 10,
            ..Limits::default()
        });
        let sms = SmsContent {
            text: "{{ 'x' * 11 }}".into(),
        };
        let err = r
            .render_sms(&sms, &contact("a"), &extra())
            .expect_err("too big");
        assert_eq!(err.field, "content.sms.text");
        assert!(err.message.contains("maximum is 10 bytes"), "{err}");
    }

    #[test]
    fn html_is_escaped_text_is_not() {
        let r = renderer();
        let e = email("<p>Hi {{ contact.first_name }}</p><a href=\"{{ unsubscribe_url }}\">x</a>");
        let out = r
            .render_email(&e, &contact("<script>"), &extra())
            .expect("renders");
        assert!(
            out.html_body.contains("Hi &lt;script&gt;</p>"),
            "{}",
            out.html_body
        );
        assert!(out.html_body.contains("a=1&amp;b=2"), "{}", out.html_body);
        assert_eq!(out.subject, "Hi <script>");
        assert_eq!(out.text_body, "Hello <script>");
        let sms = SmsContent {
            text: "{{ contact.first_name }} & co".into(),
        };
        let text = r
            .render_sms(&sms, &contact("<b>"), &extra())
            .expect("renders");
        assert_eq!(text, "<b> & co");
    }

    #[test]
    fn default_filter_and_lenient_undefined() {
        let r = renderer();
        let mut nameless = contact("x");
        nameless.first_name = None;
        let sms = SmsContent {
            text:
                "Hi {{ contact.first_name | default('there') }}{{ contact.attributes.nope.deep }}!"
                    .into(),
        };
        assert_eq!(
            r.render_sms(&sms, &nameless, &extra()).expect("ok"),
            "Hi there!"
        );
        assert_eq!(
            r.render_sms(&sms, &contact("Ada"), &extra()).expect("ok"),
            "Hi Ada!"
        );
    }

    #[test]
    fn null_values_render_empty_and_take_defaults() {
        let mut c = contact("Ada");
        c.attributes.insert("city".into(), json!(null));
        c.attributes.insert("tags".into(), json!(["a", null]));
        let sms = SmsContent {
            text: "{{ contact.attributes.city | default('nowhere') }}|{{ contact.attributes.tags[1] }}|{{ contact.last_name }}"
                .into(),
        };
        let out = renderer().render_sms(&sms, &c, &extra()).expect("ok");
        assert_eq!(out, "nowhere||");
    }

    #[test]
    fn attributes_and_extra_are_visible() {
        let sms = SmsContent {
            text: "{{ contact.attributes.plan }}/{{ campaign.name }}/{{ contact.email }}".into(),
        };
        let out = renderer()
            .render_sms(&sms, &contact("a"), &extra())
            .expect("ok");
        assert_eq!(out, "gold/Spring/ada@example.com");
    }

    #[test]
    fn extra_cannot_override_contact() {
        let sms = SmsContent {
            text: "{{ contact.first_name }}".into(),
        };
        let extra = json!({"contact": {"first_name": "Mallory"}});
        let out = renderer()
            .render_sms(&sms, &contact("Ada"), &extra)
            .expect("ok");
        assert_eq!(out, "Ada");
    }

    #[test]
    fn fuel_exhaustion_is_an_error() {
        let sms = SmsContent {
            text: "{% for i in range(100000000) %}x{% endfor %}".into(),
        };
        let err = renderer()
            .render_sms(&sms, &contact("a"), &extra())
            .expect_err("must not hang");
        assert_eq!(err.field, "content.sms.text");

        let sms = SmsContent {
            text: "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}"
                .into(),
        };
        let err = renderer()
            .render_sms(&sms, &contact("a"), &extra())
            .expect_err("must not hang");
        assert!(err.message.contains("too expensive"), "{err}");
    }

    #[test]
    fn recursion_is_capped() {
        let mut nested = json!([]);
        for _ in 0..200 {
            nested = json!([nested]);
        }
        let mut c = contact("a");
        c.attributes.insert("tree".into(), nested);
        let sms = SmsContent {
            text: "{% for x in contact.attributes.tree recursive %}[{{ loop(x) }}]{% endfor %}"
                .into(),
        };
        let err = renderer()
            .render_sms(&sms, &c, &extra())
            .expect_err("too deep");
        assert_eq!(err.field, "content.sms.text");
    }

    #[test]
    fn runtime_error_names_line() {
        let sms = SmsContent {
            text: "a\nb\n{{ 1 / 0 }}".into(),
        };
        let err = renderer()
            .render_sms(&sms, &contact("a"), &extra())
            .expect_err("division by zero");
        assert!(err.message.starts_with("template error at line 3"), "{err}");
    }

    #[test]
    fn webhook_values_cannot_inject_keys() {
        let hook = WebhookContent {
            json_template: r#"{"name": {{ contact.first_name }}, "plan": {{ contact.attributes.plan }}, "missing": {{ contact.phone }}}"#.into(),
        };
        let evil = contact(r#"a","admin":true,"x":""#);
        let value = renderer()
            .render_webhook(&hook, &evil, &extra())
            .expect("valid JSON");
        let obj = value.as_object().expect("object");
        assert!(!obj.contains_key("admin"));
        assert_eq!(obj["name"], json!(r#"a","admin":true,"x":""#));
        assert_eq!(obj["plan"], json!("gold"));
        assert_eq!(obj["missing"], serde_json::Value::Null);
    }

    #[test]
    fn webhook_quoted_placeholder_is_invalid_json() {
        let hook = WebhookContent {
            json_template: r#"{"name": "{{ contact.first_name }}"}"#.into(),
        };
        let err = renderer()
            .render_webhook(&hook, &contact("Ada"), &extra())
            .expect_err("double quotes");
        assert_eq!(err.field, "content.webhook.json_template");
        assert!(err.message.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn non_object_extra_is_ignored() {
        let sms = SmsContent {
            text: "{{ contact.first_name }}{{ campaign }}".into(),
        };
        let out = renderer()
            .render_sms(&sms, &contact("Ada"), &json!([1, 2]))
            .expect("ok");
        assert_eq!(out, "Ada");
    }

    #[test]
    fn compiled_content_renders_like_the_renderer() {
        let r = Renderer::default();
        let content = Content {
            email: Some(EmailContent {
                subject: "Hi {{ contact.first_name }}".into(),
                preheader: String::new(),
                html_body: "<p>{{ contact.attributes.note }}</p>".into(),
                text_body: "{{ contact.attributes.note }}".into(),
            }),
            sms: None,
            webhook: Some(WebhookContent {
                json_template: "{\"n\": {{ contact.first_name }}}".into(),
            }),
        };
        let mut contact = RenderContact {
            first_name: Some("Ada".into()),
            ..RenderContact::default()
        };
        contact
            .attributes
            .insert("note".into(), serde_json::json!("<b>x</b>"));
        let extra = serde_json::json!({});
        let compiled = r.compile(&content).unwrap();
        let a = compiled.render_email(&contact, &extra).unwrap();
        let b = r
            .render_email(content.email.as_ref().unwrap(), &contact, &extra)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.html_body, "<p>&lt;b&gt;x&lt;&#x2f;b&gt;</p>");
        assert_eq!(a.text_body, "<b>x</b>");
        assert_eq!(
            compiled.render_webhook(&contact, &extra).unwrap(),
            serde_json::json!({"n": "Ada"})
        );
        assert!(compiled.has_email() && compiled.has_webhook() && !compiled.has_sms());
        assert_eq!(compiled.render_sms(&contact, &extra).unwrap(), "");
        let broken = Content {
            sms: Some(SmsContent {
                text: "{% if %}".into(),
            }),
            ..Content::default()
        };
        assert_eq!(r.compile(&broken).unwrap_err().field, SMS_TEXT);
    }
}
