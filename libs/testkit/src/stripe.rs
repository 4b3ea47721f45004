//! A local stand-in for the Stripe API: the Checkout Sessions subset billing uses, with Stripe's
//! request and response shapes (form-encoded requests, JSON objects, `{"error": {...}}` errors,
//! bearer secret keys, idempotency keys), plus controls a test uses to play the buyer (pay,
//! let expire) or a hostile world (tamper with amounts, fail with 5xx).
//!
//! Implemented: `POST /v1/checkout/sessions` (mode, line_items with price_data, metadata,
//! client_reference_id, success_url, cancel_url, expires_at) and
//! `GET /v1/checkout/sessions/{id}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The bearer key presented (tests check which key billing used).
    pub api_key: Option<String>,
    pub idempotency_key: Option<String>,
    /// Form fields of a POST, in order (`line_items[0][price_data][currency]` = `usd`).
    pub form: Vec<(String, String)>,
}

#[derive(Default)]
struct Inner {
    keys: Vec<String>,
    sessions: BTreeMap<String, Value>,
    idempotency: HashMap<String, String>,
    requests: Vec<Recorded>,
    fail_next: Vec<u16>,
    seq: u64,
}

/// The fake Stripe server. Dropping it does not stop it; call [`FakeStripe::stop`].
#[derive(Clone)]
pub struct FakeStripe {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    shutdown: CancellationToken,
}

fn stripe_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> Response {
    let mut err = json!({"type": kind, "message": message});
    if let Some(c) = code {
        err["code"] = json!(c);
    }
    if let Some(p) = param {
        err["param"] = json!(p);
    }
    (status, axum::Json(json!({ "error": err }))).into_response()
}

impl FakeStripe {
    /// Starts on 127.0.0.1 (random port), accepting the given secret keys.
    pub async fn start(keys: &[&str]) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Mutex::new(Inner {
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            ..Inner::default()
        }));
        let shutdown = CancellationToken::new();
        let app = Router::new()
            .route("/v1/checkout/sessions", post(create_session))
            .route("/v1/checkout/sessions/{id}", get(retrieve_session))
            .fallback(|| async {
                stripe_error(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    None,
                    "Unrecognized request URL (this fake implements checkout sessions only)",
                    None,
                )
            })
            .with_state(inner.clone());
        let token = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Ok(Self {
            url,
            inner,
            shutdown,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Replaces the accepted secret keys (a key rotated at Stripe).
    pub fn set_keys(&self, keys: &[&str]) {
        self.lock().keys = keys.iter().map(|k| (*k).to_owned()).collect();
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The session object as the fake would return it.
    pub fn session(&self, id: &str) -> Option<Value> {
        self.lock().sessions.get(id).cloned()
    }

    /// Ids of every session created, oldest first.
    pub fn session_ids(&self) -> Vec<String> {
        let inner = self.lock();
        let mut all: Vec<(i64, String)> = inner
            .sessions
            .values()
            .map(|s| {
                (
                    s["created"].as_i64().unwrap_or(0),
                    s["id"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        all.sort();
        all.into_iter().map(|(_, id)| id).collect()
    }

    /// The buyer pays: `status: complete`, `payment_status: paid`.
    pub fn pay(&self, id: &str) {
        self.update(id, |s| {
            s["status"] = json!("complete");
            s["payment_status"] = json!("paid");
            s["payment_intent"] = json!(format!("pi_test_{}", &id[id.len().saturating_sub(12)..]));
        });
    }

    /// The session times out unpaid: `status: expired`.
    pub fn expire(&self, id: &str) {
        self.update(id, |s| {
            s["status"] = json!("expired");
            s["url"] = Value::Null;
        });
    }

    /// Arbitrary change of a stored session (tampered amounts, foreign metadata, ...).
    pub fn update(&self, id: &str, f: impl FnOnce(&mut Value)) {
        let mut inner = self.lock();
        let s = inner
            .sessions
            .get_mut(id)
            .unwrap_or_else(|| panic!("fake Stripe has no session {id}"));
        f(s);
    }

    /// The next requests answer with these HTTP statuses (e.g. 500, 503) instead of working.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().fail_next.extend_from_slice(statuses);
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// Checks the key, records the request, and applies an injected failure. Err = the response.
#[allow(clippy::result_large_err)]
fn admit(
    inner: &mut Inner,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    form: Vec<(String, String)>,
) -> Result<(), Response> {
    let api_key = bearer(headers);
    inner.requests.push(Recorded {
        method: method.to_owned(),
        path: path.to_owned(),
        api_key: api_key.clone(),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        form,
    });
    if !inner.fail_next.is_empty() {
        let status = inner.fail_next.remove(0);
        return Err(stripe_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "api_error",
            None,
            "An unknown error occurred (injected by the test)",
            None,
        ));
    }
    match api_key {
        Some(k) if inner.keys.contains(&k) => Ok(()),
        Some(k) => Err(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            &format!("Invalid API Key provided: {}", mask(&k)),
            None,
        )),
        None => Err(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "You did not provide an API key.",
            None,
        )),
    }
}

fn mask(k: &str) -> String {
    let tail: String = k
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk_****{tail}")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn create_session(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(resp) = admit(
        &mut inner,
        "POST",
        "/v1/checkout/sessions",
        &headers,
        form.clone(),
    ) {
        return resp;
    }
    let idem = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(k) = &idem
        && let Some(id) = inner.idempotency.get(k)
        && let Some(s) = inner.sessions.get(id)
    {
        return axum::Json(s.clone()).into_response();
    }
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let bad = |m: &str, p: &str| {
        stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_missing"),
            m,
            Some(p),
        )
    };
    let Some(mode) = field("mode") else {
        return bad("Missing required param: mode.", "mode");
    };
    if !matches!(mode.as_str(), "payment" | "subscription" | "setup") {
        return bad("Invalid mode", "mode");
    }
    let Some(success_url) = field("success_url") else {
        return bad("Missing required param: success_url.", "success_url");
    };
    let mut metadata = serde_json::Map::new();
    for (k, v) in &form {
        if let Some(key) = k
            .strip_prefix("metadata[")
            .and_then(|r| r.strip_suffix(']'))
        {
            metadata.insert(key.to_owned(), json!(v));
        }
    }
    let mut total: i64 = 0;
    let mut currency: Option<String> = None;
    let mut i = 0;
    while let Some(c) = field(&format!("line_items[{i}][price_data][currency]")) {
        let Some(unit) = field(&format!("line_items[{i}][price_data][unit_amount]"))
            .and_then(|u| u.parse::<i64>().ok())
        else {
            return bad(
                "Missing required param: line_items[0][price_data][unit_amount].",
                "line_items[0][price_data][unit_amount]",
            );
        };
        let qty = field(&format!("line_items[{i}][quantity]"))
            .and_then(|q| q.parse::<i64>().ok())
            .unwrap_or(1);
        if field(&format!("line_items[{i}][price_data][product_data][name]")).is_none() {
            return bad(
                "Missing required param: line_items[0][price_data][product_data][name].",
                "line_items[0][price_data][product_data][name]",
            );
        }
        match &currency {
            Some(cur) if *cur != c => {
                return bad("All line items must share a currency", "line_items");
            }
            _ => currency = Some(c),
        }
        total += unit * qty;
        i += 1;
    }
    if i == 0 && mode == "payment" {
        return bad("Missing required param: line_items.", "line_items");
    }
    inner.seq += 1;
    let id = format!("cs_test_{}{:06}", uuid::Uuid::new_v4().simple(), inner.seq);
    let created = now();
    let expires_at = field("expires_at")
        .and_then(|e| e.parse::<i64>().ok())
        .unwrap_or(created + 24 * 3600);
    let mut session = json!({
        "id": id,
        "object": "checkout.session",
        "adaptive_pricing": null,
        "after_expiration": null,
        "allow_promotion_codes": null,
        "amount_subtotal": total,
        "amount_total": total,
        "automatic_tax": {"enabled": false, "liability": null, "provider": null, "status": null},
        "billing_address_collection": null,
        "cancel_url": field("cancel_url"),
        "client_reference_id": field("client_reference_id"),
        "client_secret": null,
        "consent": null,
        "consent_collection": null,
        "created": created,
        "currency": currency,
        "currency_conversion": null,
        "custom_fields": [],
        "custom_text": {"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null},
        "customer": null,
        "customer_creation": "if_required",
        "customer_details": null,
        "customer_email": field("customer_email"),
        "discounts": [],
        "expires_at": expires_at,
        "invoice": null,
    });
    let rest = json!({
        "invoice_creation": null,
        "livemode": false,
        "locale": null,
        "metadata": metadata,
        "mode": mode,
        "payment_intent": null,
        "payment_link": null,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": null,
        "payment_method_options": null,
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "phone_number_collection": {"enabled": false},
        "recovered_from": null,
        "saved_payment_method_options": null,
        "setup_intent": null,
        "shipping_address_collection": null,
        "shipping_cost": null,
        "shipping_options": [],
        "status": "open",
        "submit_type": null,
        "subscription": null,
        "success_url": success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page",
        "url": format!("https://checkout.stripe.test/c/pay/{id}"),
    });
    if let (Some(obj), Value::Object(more)) = (session.as_object_mut(), rest) {
        obj.extend(more);
    }
    inner.sessions.insert(id.clone(), session.clone());
    if let Some(k) = idem {
        inner.idempotency.insert(k, id);
    }
    axum::Json(session).into_response()
}

async fn retrieve_session(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    let path = format!("/v1/checkout/sessions/{id}");
    if let Err(resp) = admit(&mut inner, "GET", &path, &headers, Vec::new()) {
        return resp;
    }
    match inner.sessions.get(&id) {
        Some(s) => axum::Json(s.clone()).into_response(),
        None => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such checkout.session: '{id}'"),
            Some("session"),
        ),
    }
}
