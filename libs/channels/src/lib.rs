//! Campaign OS delivery adapters: what the publishing service uses to hand a rendered campaign
//! message to the outside world, and the small policies around it.
//!
//! - [`email`]: builds the MIME message (text + HTML alternatives, hidden preheader,
//!   RFC 8058 one-click `List-Unsubscribe`, deterministic `Message-ID`).
//! - [`smtp`]: sends it through a pooled SMTP relay (lettre, rustls on aws-lc).
//! - [`webhook`]: signed JSON POSTs to tenant endpoints, with SSRF protection.
//! - [`unsubscribe`]: HMAC-signed one-click unsubscribe tokens for links.
//! - [`backoff`] and [`ratelimit`]: retry delays and per-key send-rate limits.
//!
//! Every send returns `Result<SendReceipt, SendError>`; [`SendError`] says whether retrying can
//! help ([`SendError::Transient`]) or not ([`SendError::Permanent`]).

pub mod backoff;
pub mod email;
pub mod error;
pub mod ratelimit;
pub mod smtp;
pub mod unsubscribe;
pub mod webhook;

pub use error::{SendError, SendReceipt};
