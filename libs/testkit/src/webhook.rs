//! A local webhook endpoint: records every request, checks its `X-CampaignOS-Signature`, and
//! answers with whatever status the test scripts (200 by default).
//!
//! The signature check is implemented here independently of `cos-channels` (HMAC-SHA256 over
//! `<t>.<body>`, header `t=<unix secs>,v1=<hex>`), so tests that use this receiver check the
//! documented scheme, not the sender against itself.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_lc_rs::hmac;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Accepted clock difference for signatures, in seconds.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query, e.g. `/hook`.
    pub path: String,
    /// The body as JSON (`Value::Null` if it is not JSON; see `raw_body`).
    pub body: serde_json::Value,
    pub raw_body: Vec<u8>,
    /// Whether `X-CampaignOS-Signature` verifies with the receiver's secret (within 5 minutes).
    pub signature_valid: bool,
    pub signature: Option<String>,
    pub idempotency_key: Option<String>,
    /// All headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The status the receiver answered with.
    pub responded: u16,
}

impl Received {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
struct Scripted {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

#[derive(Default)]
struct Inner {
    secret: Vec<u8>,
    received: Vec<Received>,
    next: VecDeque<Scripted>,
    always: Option<Scripted>,
}

/// The webhook receiver; stops when the last clone is dropped.
#[derive(Clone)]
pub struct WebhookReceiver {
    base: String,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<tokio::sync::Notify>,
    _guard: Arc<DropGuard>,
}

impl std::fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("base", &self.base)
            .finish()
    }
}

type Shared = (Arc<Mutex<Inner>>, Arc<tokio::sync::Notify>);

impl WebhookReceiver {
    /// Starts on 127.0.0.1 (random port), verifying signatures with `secret`.
    pub async fn start(secret: &[u8]) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Mutex::new(Inner {
            secret: secret.to_vec(),
            ..Inner::default()
        }));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let token = CancellationToken::new();
        let app = Router::new()
            .fallback(handle)
            .with_state((inner.clone(), arrived.clone()));
        let stop = token.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(Self {
            base,
            inner,
            arrived,
            _guard: Arc::new(token.drop_guard()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint URL, `http://127.0.0.1:PORT/hook` (any path is accepted).
    pub fn url(&self) -> String {
        format!("{}/hook", self.base)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.base.clone()
    }

    /// Answers the next `times` requests with `status` (then back to the default).
    pub fn respond_with(&self, status: u16, times: usize) {
        self.respond_with_headers(status, &[], times);
    }

    /// Answers the next `times` requests with `status` and these headers (e.g.
    /// `("Retry-After", "30")`, `("Location", "...")`).
    pub fn respond_with_headers(&self, status: u16, headers: &[(&str, &str)], times: usize) {
        self.respond_with_body(status, headers, &default_body(status), times);
    }

    /// Answers the next `times` requests with `status`, headers and body.
    pub fn respond_with_body(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
        times: usize,
    ) {
        let s = scripted(status, headers, body);
        let mut inner = self.lock();
        for _ in 0..times {
            inner.next.push_back(s.clone());
        }
    }

    /// Answers every request (after any scripted with `respond_with`) with `status`.
    pub fn always(&self, status: u16) {
        self.lock().always = Some(scripted(status, &[], &default_body(status)));
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    pub fn count(&self) -> usize {
        self.lock().received.len()
    }

    /// Waits until at least `n` requests arrived; false if `timeout` passed first.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count() >= n;
            }
        }
    }
}

fn default_body(status: u16) -> String {
    if (200..300).contains(&status) {
        "ok".into()
    } else {
        format!("status {status} scripted by the test")
    }
}

fn scripted(status: u16, headers: &[(&str, &str)], body: &str) -> Scripted {
    Scripted {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.to_owned(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Independent implementation of the documented scheme.
pub fn signature_valid(secret: &[u8], header: &str, body: &[u8], now: i64) -> bool {
    let mut t: Option<i64> = None;
    let mut sigs: Vec<Vec<u8>> = Vec::new();
    for item in header.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" if t.is_none() => t = v.parse().ok(),
            "v1" => {
                let bytes: Option<Vec<u8>> = (0..v.len())
                    .step_by(2)
                    .map(|i| v.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                    .collect();
                if let Some(b) = bytes {
                    sigs.push(b);
                }
            }
            _ => {}
        }
    }
    let Some(t) = t else {
        return false;
    };
    if (now - t).abs() > SIGNATURE_TOLERANCE_SECS {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    sigs.iter().any(|s| hmac::verify(&key, &message, s).is_ok())
}

async fn handle(
    State((inner, arrived)): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = {
        let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
        let signature = headers
            .get("x-campaignos-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let valid = signature
            .as_deref()
            .is_some_and(|s| signature_valid(&inner.secret, s, &body, now()));
        let answer = inner
            .next
            .pop_front()
            .or_else(|| inner.always.clone())
            .unwrap_or_else(|| scripted(200, &[], "ok"));
        inner.received.push(Received {
            method: method.to_string(),
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |p| p.to_string()),
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            raw_body: body.to_vec(),
            signature_valid: valid,
            signature,
            idempotency_key: headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            responded: answer.status,
        });
        answer
    };
    arrived.notify_waiters();
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, answer.body).into_response();
    for (k, v) in &answer.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_vector() {
        // Same vector as cos-channels' webhook tests (computed with Python's hmac module).
        let header =
            "t=1700000000,v1=aecbc681fe3d2604c08ff8e880a0988d997a12367fcf9545e6a3b90c1dfc04b7";
        let body = br#"{"a":1}"#;
        assert!(signature_valid(
            b"whsec_test_secret",
            header,
            body,
            1_700_000_000
        ));
        assert!(!signature_valid(
            b"whsec_test_secret",
            header,
            br#"{"a":2}"#,
            1_700_000_000
        ));
        assert!(!signature_valid(
            b"whsec_test_secret",
            header,
            body,
            1_700_001_000
        ));
        assert!(!signature_valid(b"other", header, body, 1_700_000_000));
    }

    #[tokio::test]
    async fn records_and_scripts_responses() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let r = WebhookReceiver::start(b"s").await.unwrap();
        r.respond_with_headers(429, &[("Retry-After", "7")], 1);
        let client = reqwest::Client::new();
        let first = client.post(r.url()).body("{\"x\":1}").send().await.unwrap();
        assert_eq!(first.status().as_u16(), 429);
        assert_eq!(first.headers()["retry-after"], "7");
        let second = client.post(r.url()).body("nope").send().await.unwrap();
        assert_eq!(second.status().as_u16(), 200);
        assert!(r.wait_for(2, Duration::from_secs(5)).await);
        let got = r.received();
        assert_eq!(got[0].body, serde_json::json!({"x": 1}));
        assert_eq!(got[1].body, serde_json::Value::Null);
        assert!(!got[0].signature_valid);
        assert_eq!(got[0].path, "/hook");
    }
}
