//! Compile-time checks of the public API's shape: the publishing service clones senders into
//! spawned tasks, so types must be Send + Sync + Clone and futures Send.

use cos_channels::email::OutgoingEmail;
use cos_channels::ratelimit::RateLimiter;
use cos_channels::smtp::SmtpSender;
use cos_channels::unsubscribe::UnsubscribeSigner;
use cos_channels::webhook::{WebhookSender, WebhookTarget};
use cos_channels::{SendError, SendReceipt};

fn is_send<T: Send>(_: &T) {}
fn is_shared<T: Send + Sync + Clone + 'static>() {}

#[allow(dead_code)]
fn futures_are_send(
    smtp: &SmtpSender,
    webhook: &WebhookSender,
    limiter: &RateLimiter,
    email: &OutgoingEmail,
    target: &WebhookTarget,
    body: &serde_json::Value,
) {
    is_send(&smtp.send(email));
    is_send(&webhook.send(target, body, "key"));
    is_send(&limiter.acquire(uuid::Uuid::nil(), 10, 5));
}

#[test]
fn types_are_shareable() {
    is_shared::<SmtpSender>();
    is_shared::<WebhookSender>();
    is_shared::<RateLimiter>();
    is_shared::<UnsubscribeSigner>();
    is_shared::<SendError>();
    is_shared::<SendReceipt>();
    is_shared::<OutgoingEmail>();
    is_shared::<WebhookTarget>();
}
