//! Building the MIME message of one campaign email.
//!
//! - `multipart/alternative` (text, then HTML) when both bodies are set, a single part otherwise
//!   (lettre picks 7bit, quoted-printable or base64 per part).
//! - The preheader (the preview line mail clients show after the subject) is injected as a
//!   hidden `<div>` at the start of the HTML body (right after `<body ...>` when there is one),
//!   HTML-escaped.
//! - `List-Unsubscribe: <https://...>, <mailto:...>` and, when an HTTP(S) URL is given,
//!   `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058 one-click unsubscribe; Gmail
//!   and Yahoo require it for bulk senders and require the URL to be `https`).
//! - `Message-ID: <{message_id}>`: [`OutgoingEmail::message_id`] is given **without** the angle
//!   brackets, e.g. `9f1c...e2@campaignos.local`, and should be deterministic per delivery (e.g.
//!   `<delivery uuid>@<sending domain>`), so a resend after a crash is recognisably the same
//!   message. Brackets are tolerated and stripped.
//! - Header injection: CR, LF and other control characters in the subject and extra header
//!   values are replaced by spaces (and lettre RFC 2047-encodes anything unusual on top of that);
//!   addresses that do not parse and header names that are not RFC 5322 field names are refused.

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use crate::SendError;

/// One rendered campaign email, ready to be sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// `"Name <a@b.example>"` or `"a@b.example"`.
    pub from: String,
    pub reply_to: Option<String>,
    /// One recipient, same forms as `from`.
    pub to: String,
    pub subject: String,
    /// Plain text shown as the inbox preview; empty for none.
    pub preheader: String,
    /// Empty for a text-only message.
    pub html_body: String,
    /// Empty for an HTML-only message.
    pub text_body: String,
    /// Without `<>`, e.g. `0190f3a4-....@campaignos.local`; deterministic per delivery.
    pub message_id: String,
    /// `https://...` one-click unsubscribe endpoint (POSTed by mailbox providers, RFC 8058).
    pub list_unsubscribe_url: Option<String>,
    /// `mailto:unsub@...?subject=...` alternative.
    pub list_unsubscribe_mailto: Option<String>,
    /// Extra headers such as `X-Campaign-Id`. Structural headers (From, To, Subject, Date,
    /// Message-ID, Content-*, MIME-Version, List-Unsubscribe*, ...) cannot be set this way.
    pub extra_headers: Vec<(String, String)>,
}

/// Headers `extra_headers` may not set: built by [`build_message`] itself, or routing ones.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "return-path",
    "received",
];

/// Longest unsubscribe URI accepted (keeps the header line well under SMTP's 998 limit).
const MAX_UNSUBSCRIBE_URI_LEN: usize = 900;

fn invalid(field: &str, why: impl std::fmt::Display) -> SendError {
    SendError::permanent(format!("invalid {field}: {why}"))
}

fn mailbox(field: &str, value: &str) -> Result<Mailbox, SendError> {
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    value
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| invalid(field, format!("{e} ({value:?})")))
}

/// Replaces CR, LF, tabs and other control characters by spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// RFC 5322 field name: printable US-ASCII except `:`, at most 76 characters (lettre's limit).
fn valid_header_name(name: &str) -> bool {
    (1..=76).contains(&name.len()) && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// A URI that can sit between `<` and `>` in a header without escaping anything.
fn check_uri(field: &str, uri: &str, schemes: &[&str]) -> Result<(), SendError> {
    let lower = uri.to_ascii_lowercase();
    if !schemes.iter().any(|s| lower.starts_with(s)) {
        return Err(invalid(
            field,
            format!("must start with {}", schemes.join(" or ")),
        ));
    }
    if uri.len() > MAX_UNSUBSCRIBE_URI_LEN {
        return Err(invalid(field, "too long"));
    }
    if !uri
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b',' | b'"'))
    {
        return Err(invalid(
            field,
            "must be printable ASCII without spaces, <, >, \" or , (percent-encode them)",
        ));
    }
    Ok(())
}

fn check_message_id(id: &str) -> Result<String, SendError> {
    let id = id.trim();
    let id = id
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(id);
    let valid = id.len() <= 250
        && id.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'(' | b')' | b',' | b'\\')
        })
        && matches!(id.split_once('@'), Some((l, r)) if !l.is_empty() && !r.is_empty() && !r.contains('@'));
    if !valid {
        return Err(invalid(
            "message_id",
            format!("expected local@domain in printable ASCII, got {id:?}"),
        ));
    }
    Ok(format!("<{id}>"))
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The hidden preheader block for `preheader` (plain text).
pub fn preheader_html(preheader: &str) -> String {
    format!(
        "<div style=\"display:none;max-height:0;overflow:hidden;mso-hide:all\">{}</div>",
        html_escape(preheader)
    )
}

/// `html` with the hidden preheader block at the start of its body: right after the `<body ...>`
/// tag when there is one, at the very start otherwise.
pub fn inject_preheader(html: &str, preheader: &str) -> String {
    let block = preheader_html(preheader);
    // ASCII lowercasing keeps byte offsets, so positions found in `lower` are valid in `html`.
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find("<body").map(|p| p + from) {
        let after = pos + "<body".len();
        let next = lower.as_bytes().get(after).copied();
        if matches!(next, Some(b'>' | b' ' | b'\t' | b'\r' | b'\n' | b'/')) {
            if let Some(end) = lower[after..].find('>') {
                let insert_at = after + end + 1;
                return format!("{}{block}{}", &html[..insert_at], &html[insert_at..]);
            }
            break;
        }
        from = after;
    }
    format!("{block}{html}")
}

/// Builds the MIME message. Errors are `Permanent` and name the invalid field.
pub fn build_message(e: &OutgoingEmail) -> Result<Message, SendError> {
    let mut builder = Message::builder()
        .from(mailbox("from", &e.from)?)
        .to(mailbox("to", &e.to)?)
        .subject(one_line(&e.subject))
        .message_id(Some(check_message_id(&e.message_id)?));
    if let Some(reply_to) = &e.reply_to {
        builder = builder.reply_to(mailbox("reply_to", reply_to)?);
    }

    let mut unsubscribe = Vec::new();
    if let Some(url) = &e.list_unsubscribe_url {
        check_uri("list_unsubscribe_url", url, &["https://", "http://"])?;
        unsubscribe.push(format!("<{url}>"));
    }
    if let Some(mailto) = &e.list_unsubscribe_mailto {
        check_uri("list_unsubscribe_mailto", mailto, &["mailto:"])?;
        unsubscribe.push(format!("<{mailto}>"));
    }
    if !unsubscribe.is_empty() {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("List-Unsubscribe"),
            unsubscribe.join(", "),
        ));
    }
    if e.list_unsubscribe_url.is_some() {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
            "List-Unsubscribe=One-Click".to_owned(),
        ));
    }

    for (name, value) in &e.extra_headers {
        let name = name.trim();
        if !valid_header_name(name) {
            return Err(invalid(
                "extra header name",
                format!("{:?} is not an RFC 5322 field name", one_line(name)),
            ));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                "extra header name",
                format!("{name} is set by the message builder"),
            ));
        }
        let header_name = HeaderName::new_from_ascii(name.to_owned())
            .map_err(|_| invalid("extra header name", name))?;
        builder = builder.raw_header(HeaderValue::new(header_name, one_line(value)));
    }

    let html = if e.html_body.is_empty() {
        None
    } else if e.preheader.trim().is_empty() {
        Some(e.html_body.clone())
    } else {
        Some(inject_preheader(&e.html_body, &one_line(&e.preheader)))
    };
    let text = (!e.text_body.is_empty()).then(|| e.text_body.clone());
    let built = match (text, html) {
        (Some(text), Some(html)) => {
            builder.multipart(MultiPart::alternative_plain_html(text, html))
        }
        (None, Some(html)) => builder.singlepart(SinglePart::html(html)),
        (Some(text), None) => builder.singlepart(SinglePart::plain(text)),
        (None, None) => return Err(invalid("body", "html_body and text_body are both empty")),
    };
    built.map_err(|err| SendError::permanent(format!("cannot build message: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preheader_goes_after_body_tag() {
        let html = "<html><head><title>x</title></head><BODY class=\"a\"><p>Hi</p></BODY></html>";
        let out = inject_preheader(html, "Sale <today> & \"now\"");
        assert!(out.starts_with("<html><head><title>x</title></head><BODY class=\"a\"><div style=\"display:none;max-height:0;overflow:hidden;mso-hide:all\">Sale &lt;today&gt; &amp; &quot;now&quot;</div><p>Hi</p>"), "{out}");
        assert_eq!(
            inject_preheader("<p>x</p>", "p"),
            format!("{}<p>x</p>", preheader_html("p"))
        );
        // `<bodyx>` is not a body tag; non-ASCII before the tag keeps offsets right.
        let out = inject_preheader("<bodyx>é<body>y", "p");
        assert_eq!(out, format!("<bodyx>é<body>{}y", preheader_html("p")));
    }

    #[test]
    fn message_ids() {
        assert_eq!(check_message_id("a@b").unwrap(), "<a@b>");
        assert_eq!(check_message_id("<a@b>").unwrap(), "<a@b>");
        for bad in [
            "",
            "ab",
            "@b",
            "a@",
            "a b@c",
            "a@b\r\nX: y",
            "a@b@c",
            "a<@b",
        ] {
            assert!(check_message_id(bad).is_err(), "{bad:?}");
        }
    }
}
