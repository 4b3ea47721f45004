//! Signed webhook deliveries: a JSON `POST` to a tenant's HTTPS endpoint.
//!
//! # Verifying a delivery (for tenants)
//!
//! Every request carries
//!
//! - `Content-Type: application/json`, `User-Agent: CampaignOS-Webhook/1`;
//! - `Idempotency-Key: <key>`: the same for every retry of one delivery; store the keys you have
//!   processed and ignore repeats (retries happen after timeouts even if you did process it);
//! - `X-CampaignOS-Signature: t=<unix seconds>,v1=<hex>` where `<hex>` is the lowercase hex
//!   HMAC-SHA256, keyed with the endpoint's secret, of the bytes `<t>.<raw request body>`
//!   (the timestamp as decimal digits, a `.`, then the body exactly as received: verify before
//!   parsing or re-serializing the JSON).
//!
//! To verify: split the header on `,`, take `t` and every `v1` (there may be several during a
//! secret rotation), recompute the HMAC over `t + "." + body`, compare with a constant-time
//! comparison against each `v1`, and reject if none matches or if `t` is more than a few minutes
//! (we suggest 300 s) away from your clock, which bounds replays. [`verify`] does exactly this.
//!
//! # Delivery policy
//!
//! - Redirects are never followed (a 3xx is a permanent failure): the signed body must go only
//!   where the tenant configured it.
//! - No HTTP proxy is used (environment proxies are ignored).
//! - SSRF protection (unless `allow_private_targets`, meant for tests and on-premises setups):
//!   only `https` URLs; the host is resolved at send time by our own resolver, and a host with
//!   any loopback, private, link-local, unique-local, CGNAT, documentation, multicast,
//!   unspecified or otherwise special-purpose address (IPv4 and IPv6, including IPv4-mapped and
//!   NAT64/6to4-embedded IPv4) is refused as a permanent failure. The connection uses exactly the
//!   addresses that were checked (no second lookup, so no DNS-rebinding window).
//! - Response classification: 2xx = delivered; 408, 425, 429, 5xx, timeouts and connection
//!   errors = transient (`Retry-After` on 429/503 is honoured, capped at one hour); 3xx and
//!   every other 4xx (410 Gone, 401, 404, ...) = permanent.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::{constant_time, hmac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use crate::error::excerpt;
use crate::{SendError, SendReceipt};

pub const SIGNATURE_HEADER: &str = "X-CampaignOS-Signature";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
pub const USER_AGENT: &str = "CampaignOS-Webhook/1";
/// Longest accepted endpoint URL.
pub const MAX_URL_LEN: usize = 2048;
/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Characters of the response body quoted in a failure reason.
const BODY_EXCERPT_CHARS: usize = 200;
/// Bytes of the response body read at most (the rest is not downloaded).
const BODY_READ_LIMIT: usize = 4096;

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    ctx.sign()
}

/// The `X-CampaignOS-Signature` value for `body` sent at `timestamp` (unix seconds):
/// `t=<timestamp>,v1=<hex hmac-sha256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex(mac(secret, timestamp, body).as_ref())
    )
}

/// Whether `header` is a valid signature of `body` by `secret`, made within `tolerance_secs` of
/// `now` (unix seconds). Constant-time comparison; accepts any of several `v1` entries.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',').take(16) {
        match part.trim().split_once('=') {
            Some(("t", v)) if timestamp.is_none() => timestamp = v.parse::<i64>().ok(),
            Some(("v1", v)) => candidates.extend(unhex(v).filter(|b| b.len() == 32)),
            _ => {}
        }
    }
    let Some(t) = timestamp else {
        return false;
    };
    if tolerance_secs < 0 || now.abs_diff(t) > tolerance_secs.unsigned_abs() {
        return false;
    }
    let expected = mac(secret, t, body);
    candidates
        .iter()
        .any(|c| constant_time::verify_slices_are_equal(expected.as_ref(), c).is_ok())
}

/// A tenant's endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: Vec<u8>,
}

impl fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &redact_url(&self.url))
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// The URL without query string and fragment (they may carry tokens), for logs.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let had_query = u.query().is_some();
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_password(None);
            let _ = u.set_username("");
            let mut s = u.to_string();
            if had_query {
                s.push_str("?[REDACTED]");
            }
            s
        }
        Err(_) => "[unparseable URL]".into(),
    }
}

/// Whether connecting to `ip` is allowed when private targets are not: a globally routable
/// unicast address.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const BLOCKED: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),       // "this network", unspecified
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // CGNAT (shared address space)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local (cloud metadata endpoints live here)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated)
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
        ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, broadcast
    ];
    !BLOCKED.iter().any(|(net, prefix)| in_v4(ip, *net, *prefix))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    // IPv4 embedded in IPv6: judge the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 well-known prefix 64:ff9b::/96.
        return is_public_v4(embedded(seg[6], seg[7]));
    }
    if seg[0] == 0x2002 {
        // 6to4: 2002:AABB:CCDD::/48 reaches AA.BB.CC.DD.
        return is_public_v4(embedded(seg[1], seg[2]));
    }
    // Only global unicast (2000::/3) is routable on the internet; this excludes ::, ::1,
    // IPv4-compatible ::a.b.c.d, fc00::/7 unique-local, fe80::/10 link-local, ff00::/8
    // multicast, 64:ff9b:1::/48, 100::/64 discard, ...
    if seg[0] & 0xe000 != 0x2000 {
        return false;
    }
    // Special-purpose blocks inside 2000::/3.
    let in_block = |net: [u16; 2], prefix: u32| {
        let addr = (u32::from(seg[0]) << 16) | u32::from(seg[1]);
        let net = (u32::from(net[0]) << 16) | u32::from(net[1]);
        let mask = u32::MAX << (32 - prefix);
        addr & mask == net & mask
    };
    !(in_block([0x2001, 0x0000], 23) // IETF protocol assignments (Teredo, ORCHID, benchmarking)
        || in_block([0x2001, 0x0db8], 32) // documentation
        || in_block([0x3fff, 0x0000], 20)) // documentation
}

/// Checks an endpoint URL: at most 2048 characters, absolute `https` URL (`http` too when
/// `allow_private_targets`), no user name or password, a host; when private targets are not
/// allowed, an IP-literal host must be public and `localhost` names are refused.
/// (Host names are checked again after resolution, at send time.)
pub fn validate_url(url: &str, allow_private_targets: bool) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "webhook URL is longer than {MAX_URL_LEN} characters"
        ));
    }
    let parsed = Url::parse(url).map_err(|e| format!("invalid webhook URL: {e}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_private_targets => {}
        other => return Err(format!("webhook URL must use https (got {other})")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("webhook URL must not contain a user name or password".into());
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "webhook URL has no host".to_owned())?;
    if !allow_private_targets {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if !is_public_ip(ip) {
                return Err(format!("webhook URL points at a non-public address ({ip})"));
            }
        } else {
            let d = bare.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                return Err("webhook URL points at localhost".into());
            }
        }
    }
    Ok(())
}

/// Why the resolver refused a host (recognised in the error chain to make it permanent).
#[derive(Debug)]
struct BlockedAddress {
    host: String,
    ip: IpAddr,
}

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves to non-public address {}",
            self.host, self.ip
        )
    }
}

impl std::error::Error for BlockedAddress {}

/// DNS resolution that refuses hosts with any non-public address; reqwest connects to the
/// addresses it returns, so what was checked is what is used.
struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            if let Some(bad) = addrs.iter().find(|a| !is_public_ip(a.ip())) {
                return Err(Box::new(BlockedAddress { host, ip: bad.ip() })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Sends webhook deliveries. Cheap to clone (clones share the connection pool).
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    allow_private_targets: bool,
    timeout: Duration,
}

impl fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSender")
            .field("allow_private_targets", &self.allow_private_targets)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl WebhookSender {
    /// A sender whose requests time out after `timeout` (whole request, body included).
    /// `allow_private_targets` disables the SSRF protection and allows `http` (tests, on-prem).
    ///
    /// Installs rustls' aws-lc crypto provider as the process default if none is installed.
    pub fn new(timeout: Duration, allow_private_targets: bool) -> Result<Self, String> {
        if timeout.is_zero() {
            return Err("webhook timeout is 0".into());
        }
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(USER_AGENT)
            .pool_idle_timeout(Duration::from_secs(30));
        if !allow_private_targets {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        let client = builder
            .build()
            .map_err(|e| format!("webhook HTTP client: {e}"))?;
        Ok(Self {
            client,
            allow_private_targets,
            timeout,
        })
    }

    /// POSTs `body` to `target`, signed, with `idempotency_key` (the same for every retry of
    /// one delivery). The receipt's `provider_message_id` is the idempotency key.
    pub async fn send(
        &self,
        target: &WebhookTarget,
        body: &serde_json::Value,
        idempotency_key: &str,
    ) -> Result<SendReceipt, SendError> {
        validate_url(&target.url, self.allow_private_targets).map_err(SendError::permanent)?;
        self.post(target, body, idempotency_key).await
    }

    /// `send` after URL validation.
    async fn post(
        &self,
        target: &WebhookTarget,
        body: &serde_json::Value,
        idempotency_key: &str,
    ) -> Result<SendReceipt, SendError> {
        let key = HeaderValue::from_str(idempotency_key)
            .ok()
            .filter(|_| (1..=255).contains(&idempotency_key.len()))
            .ok_or_else(|| {
                SendError::permanent("idempotency key must be 1-255 visible ASCII characters")
            })?;
        let bytes = serde_json::to_vec(body)
            .map_err(|e| SendError::permanent(format!("cannot serialize body: {e}")))?;
        let signature = sign(&target.secret, chrono::Utc::now().timestamp(), &bytes);
        let result = self
            .client
            .post(&target.url)
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(IDEMPOTENCY_HEADER, key)
            .body(bytes)
            .send()
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => return Err(self.classify_error(&e)),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(SendReceipt {
                provider_message_id: idempotency_key.to_owned(),
                detail: format!("HTTP {}", status.as_u16()),
            });
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let head = status_line(status);
        if status.is_redirection() {
            return Err(SendError::permanent(format!(
                "{head}: redirects are not followed"
            )));
        }
        let body = read_prefix(response).await;
        let reason = if body.is_empty() {
            head
        } else {
            format!("{head}: {body}")
        };
        Err(classify_status(status, reason, retry_after))
    }

    fn classify_error(&self, e: &reqwest::Error) -> SendError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        let mut root = None;
        while let Some(err) = source {
            if let Some(blocked) = err.downcast_ref::<BlockedAddress>() {
                return SendError::permanent(format!("refusing to connect: {blocked}"));
            }
            root = Some(err);
            source = err.source();
        }
        // Describe without the URL (it may carry a token in its query string).
        let cause = root
            .filter(|r| !std::ptr::addr_eq(*r as *const _, e as *const _))
            .map(|r| format!(": {}", excerpt(&r.to_string(), 200)))
            .unwrap_or_default();
        if e.is_timeout() {
            SendError::transient(format!("timed out after {:?}{cause}", self.timeout))
        } else if e.is_connect() {
            SendError::transient(format!("connection failed{cause}"))
        } else if e.is_builder() {
            SendError::permanent(format!("invalid request{cause}"))
        } else {
            SendError::transient(format!("request failed{cause}"))
        }
    }
}

fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(r) => format!("HTTP {} {r}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Transient for 408, 425, 429 and 5xx (with the `Retry-After` hint on 429 and 503), permanent
/// for every other non-2xx status.
pub fn classify_status(
    status: StatusCode,
    reason: String,
    retry_after: Option<Duration>,
) -> SendError {
    match status.as_u16() {
        429 | 503 => SendError::Transient {
            reason,
            retry_after,
        },
        408 | 425 | 500..=599 => SendError::transient(reason),
        300..=499 => SendError::permanent(reason),
        _ => SendError::transient(reason),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The first 200 characters of the body (at most 4 KiB are read), on one line.
async fn read_prefix(mut response: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < BODY_READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    buf.truncate(BODY_READ_LIMIT);
    excerpt(&String::from_utf8_lossy(&buf), BODY_EXCERPT_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_secret";

    #[test]
    fn sign_and_verify() {
        let body = br#"{"a":1}"#;
        let h = sign(SECRET, 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="));
        assert_eq!(h.len(), "t=1700000000,v1=".len() + 64);
        assert!(verify(SECRET, &h, body, 1_700_000_000, 300));
        assert!(verify(SECRET, &h, body, 1_700_000_300, 300));
        assert!(verify(SECRET, &h, body, 1_699_999_700, 300));
        assert!(!verify(SECRET, &h, body, 1_700_000_301, 300), "too old");
        assert!(
            !verify(SECRET, &h, body, 1_699_999_699, 300),
            "from the future"
        );
        assert!(!verify(SECRET, &h, br#"{"a":2}"#, 1_700_000_000, 300));
        assert!(!verify(b"other", &h, body, 1_700_000_000, 300));
        assert!(!verify(
            SECRET,
            &h.replace("t=1700000000", "t=1700000001"),
            body,
            1_700_000_000,
            300
        ));
        // Rotation: several v1 entries, one valid.
        let rotated = format!("{},v1={}", h, "00".repeat(32));
        assert!(verify(SECRET, &rotated, body, 1_700_000_000, 300));
        for bad in [
            "",
            "t=",
            "v1=",
            "t=x,v1=00",
            ",,,",
            "t=1700000000",
            "t=1700000000,v1=zz",
        ] {
            assert!(!verify(SECRET, bad, body, 1_700_000_000, 300), "{bad:?}");
        }
        assert!(!verify(SECRET, &h, body, i64::MIN, i64::MAX));
        assert!(!verify(SECRET, &h, body, 1_700_000_000, -1));
    }

    #[test]
    fn known_vector() {
        // Computed independently: python3 -c "import hmac,hashlib; print(hmac.new(
        //   b'whsec_test_secret', b'1700000000.{\"a\":1}', hashlib.sha256).hexdigest())"
        assert_eq!(
            sign(SECRET, 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=aecbc681fe3d2604c08ff8e880a0988d997a12367fcf9545e6a3b90c1dfc04b7"
        );
    }

    #[test]
    fn public_addresses() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "2a00:1450:4001:82b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "2002:7f00:1::1",
            "64:ff9b::7f00:1",
            "3fff::1",
            "100::1",
        ] {
            assert!(!is_public_ip(ip.parse().unwrap()), "{ip}");
        }
        assert!(is_public_ip("172.32.0.1".parse().unwrap()));
        assert!(is_public_ip("100.128.0.1".parse().unwrap()));
    }

    #[test]
    fn urls() {
        assert!(validate_url("https://hooks.example.com/x?y=1", false).is_ok());
        assert!(validate_url("http://hooks.example.com/x", false).is_err());
        assert!(validate_url("http://127.0.0.1:8080/x", true).is_ok());
        assert!(validate_url("https://127.0.0.1/x", false).is_err());
        assert!(validate_url("https://[::1]/x", false).is_err());
        assert!(
            validate_url("https://0x7f.1/x", false).is_err(),
            "odd IPv4 notations"
        );
        assert!(validate_url("https://2130706433/x", false).is_err());
        assert!(validate_url("https://localhost/x", false).is_err());
        assert!(validate_url("https://a.localhost./x", false).is_err());
        assert!(validate_url("https://user:pw@hooks.example.com/", false).is_err());
        assert!(validate_url("https://user@hooks.example.com/", true).is_err());
        assert!(validate_url("ftp://hooks.example.com/", true).is_err());
        assert!(validate_url("/relative", true).is_err());
        let long = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(validate_url(&long, false).is_err());
    }

    #[test]
    fn retry_after() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let future = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let d = parse_retry_after(&future).unwrap();
        assert!(
            d > Duration::from_secs(80) && d <= Duration::from_secs(90),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-5"), None);
    }

    #[test]
    fn statuses() {
        let c = |s: u16| classify_status(StatusCode::from_u16(s).unwrap(), "r".into(), None);
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert!(c(s).is_transient(), "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410, 413, 422] {
            assert!(c(s).is_permanent(), "{s}");
        }
    }

    #[tokio::test]
    async fn resolver_refuses_names_of_private_addresses() {
        // `validate_url` refuses `localhost` by name; bypass it to exercise the resolver that
        // guards every other name, and the classification of its error deep in reqwest's chain.
        let sender = WebhookSender::new(Duration::from_secs(5), false).unwrap();
        let target = WebhookTarget {
            url: "https://localhost:9/hook".into(),
            secret: b"s".to_vec(),
        };
        let err = sender
            .post(&target, &serde_json::json!({}), "k1")
            .await
            .unwrap_err();
        assert!(err.is_permanent(), "{err:?}");
        assert!(err.reason().contains("non-public address"), "{err:?}");

        let direct = PublicOnlyResolver
            .resolve("localhost".parse().unwrap())
            .await;
        assert!(direct.is_err());
    }

    #[test]
    fn debug_redacts() {
        let t = WebhookTarget {
            url: "https://hooks.example.com/in?token=abc123".into(),
            secret: b"supersecret".to_vec(),
        };
        let dbg = format!("{t:?}");
        assert!(
            !dbg.contains("supersecret") && !dbg.contains("abc123"),
            "{dbg}"
        );
        assert!(dbg.contains("hooks.example.com/in"), "{dbg}");
    }
}
