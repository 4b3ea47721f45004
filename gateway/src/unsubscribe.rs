//! One-click unsubscribe, as a plain HTML page rather than JSON: `GET /u/{token}` (the link in
//! an email) and `POST /u/{token}` (RFC 8058 one-click from the mailbox provider, body
//! `List-Unsubscribe=One-Click`). Both flip the contact's consent through publishing, which
//! verifies the signed token; the page says what happened in words a recipient understands.
//! Rate-limited per client IP in a bucket of its own (ten times the API's per-IP limit).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cos_proto::publishing::v1 as pb;
use cos_proto::publishing::v1::publishing_service_client::PublishingServiceClient;

use crate::AppState;

const PUBLISHING: &str = "campaignos.publishing.v1.PublishingService";

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem\">\
         <h1 style=\"font-size:1.4rem\">{title}</h1><p>{body}</p></body></html>"
    );
    let mut r = (status, html).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    r.headers_mut()
        .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

pub(crate) async fn handle(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let ip = crate::client_ip(&state, &headers, peer);
    // Its own bucket, ten times the per-IP API limit: one-click POSTs from a mailbox provider
    // arrive from few addresses, and must not compete with (or be starved by) API traffic.
    let limit = crate::ratelimit::Limit {
        scope: "unsubscribe",
        key: format!("unsubscribe:{}", crate::rate_key(ip)),
        per_minute: state.config.rate_limit.per_ip_per_minute.saturating_mul(10),
    };
    if crate::enforce(&state, &[limit]).await.is_err() {
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            "Please try the link again in a minute.",
        );
    }
    if token.is_empty() || token.len() > 512 {
        return page(
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "The unsubscribe link is incomplete. Copy the whole link from the email and try again.",
        );
    }
    let Some(channel) = state.upstreams.get(PUBLISHING).cloned() else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unsubscribe is unavailable",
            "Please try again later.",
        );
    };
    let mut req = tonic::Request::new(pb::UnsubscribeRequest { token });
    req.set_timeout(std::time::Duration::from_secs(15));
    match PublishingServiceClient::new(channel).unsubscribe(req).await {
        Ok(r) => {
            let r = r.into_inner();
            let what = match r.channel.as_str() {
                "email" => "emails",
                "sms" => "text messages",
                _ => "messages",
            };
            let body = if r.changed {
                format!("You will not receive these {what} any more.")
            } else {
                format!("You had already unsubscribed; you will not receive these {what}.")
            };
            page(StatusCode::OK, "You are unsubscribed", &body)
        }
        Err(s) if s.code() == tonic::Code::InvalidArgument => page(
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "The unsubscribe link is incomplete or was altered. Copy the whole link from the email and try again.",
        ),
        Err(s) => {
            tracing::warn!(code = ?s.code(), error = %s.message(), "unsubscribe failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "We could not unsubscribe you right now",
                "Nothing went wrong on your side. Please try the link again in a few minutes.",
            )
        }
    }
}

/// The page's OpenAPI operations (GET and POST `/u/{token}`): no bearer, HTML responses.
pub(crate) fn openapi_operations() -> Vec<(String, &'static str, serde_json::Value)> {
    let op = |method: &str, summary: &str| {
        serde_json::json!({
            "operationId": format!("Unsubscribe_{method}"),
            "summary": summary,
            "description": "The one-click unsubscribe link of a campaign email (the signed token \
                            is the credential). Sets the contact's consent for the channel to \
                            unsubscribed and answers a plain HTML page, not JSON.",
            "tags": ["PublishingService"],
            "security": [],
            "x-hand-written": true,
            "x-grpc-method": "/campaignos.publishing.v1.PublishingService/Unsubscribe",
            "parameters": [{"name": "token", "in": "path", "required": true,
                            "schema": {"type": "string", "maxLength": 512}}],
            "responses": {
                "200": {"description": "Unsubscribed (or already unsubscribed).",
                        "content": {"text/html": {"schema": {"type": "string"}}}},
                "400": {"description": "The link is incomplete or was altered.",
                        "content": {"text/html": {"schema": {"type": "string"}}}},
                "429": {"description": "Too many requests from this address.",
                        "content": {"text/html": {"schema": {"type": "string"}}}},
                "503": {"description": "The unsubscribe could not be recorded right now.",
                        "content": {"text/html": {"schema": {"type": "string"}}}}
            }
        })
    };
    vec![
        (
            "/u/{token}".to_owned(),
            "get",
            op("get", "Unsubscribes through an email link."),
        ),
        (
            "/u/{token}".to_owned(),
            "post",
            op(
                "post",
                "One-click unsubscribe (RFC 8058, List-Unsubscribe-Post).",
            ),
        ),
    ]
}
