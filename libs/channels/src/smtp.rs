//! Sending email through an SMTP relay (lettre's pooled async transport; TLS via rustls on the
//! aws-lc provider, Mozilla roots from `webpki-roots`).
//!
//! Error classification ([`classify`]): SMTP 4xx replies, connection, I/O, TLS and timeout
//! errors are `Transient`; SMTP 5xx replies are `Permanent` and carry the server's code and text
//! (`550 5.1.1 no such user`), except authentication failures (530, 534, 535, 538: our
//! configuration, not the recipient), which are `Transient`; messages that cannot be built (bad
//! address, ...) or sent by this server at all (non-ASCII address without SMTPUTF8) are
//! `Permanent`.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::transport::smtp::{Error as SmtpError, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::Semaphore;

use crate::email::{OutgoingEmail, build_message};
use crate::error::excerpt;
use crate::{SendError, SendReceipt};

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (local relays and tests only; credentials travel in the clear).
    None,
    /// Plain connection upgraded with STARTTLS, which is **required** (typically port 587):
    /// a server that does not offer it fails the send instead of getting plaintext.
    StartTls,
    /// TLS from the first byte ("SMTPS", typically port 465).
    Implicit,
}

/// Where and how to reach the SMTP relay.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Both or neither of `username` and `password`.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Connect timeout; one whole send (connect, commands, data, final reply) is bounded by
    /// twice this.
    pub timeout: Duration,
    /// Most connections open to the relay at once (also the most kept idle in the pool).
    pub pool_max: u32,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("timeout", &self.timeout)
            .field("pool_max", &self.pool_max)
            .finish()
    }
}

impl Default for SmtpConfig {
    /// `localhost:587` with required STARTTLS, no credentials, 30 s timeout, 4 connections.
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 587,
            tls: SmtpTls::StartTls,
            username: None,
            password: None,
            timeout: Duration::from_secs(30),
            pool_max: 4,
        }
    }
}

/// Sends [`OutgoingEmail`]s through one relay over a pool of connections. Cheap to clone
/// (clones share the pool).
///
/// lettre's async transport only bounds the TCP connect with a timeout, not the SMTP
/// conversation, so each send is bounded here as a whole (twice [`SmtpConfig::timeout`]). When
/// that bound hits, the connection in use is in an unknown state mid-command, and lettre would
/// put it back in its pool; so the whole pool is replaced by a fresh one and the old one shut
/// down (its idle connections closed), instead of later sends inheriting a desynchronized
/// connection.
#[derive(Clone)]
pub struct SmtpSender {
    shared: Arc<Shared>,
}

type Pool = Arc<AsyncSmtpTransport<Tokio1Executor>>;

struct Shared {
    /// The current pool; replaced after a send timed out. `None` only while dropping.
    current: RwLock<Option<Pool>>,
    /// To build a replacement pool.
    builder: AsyncSmtpTransportBuilder,
    /// lettre's pool spawns tasks on the Tokio runtime when it is created and dropped; kept so
    /// dropping the last clone of a sender outside that runtime's context does not panic.
    runtime: tokio::runtime::Handle,
    /// Bounds concurrent connections (lettre's pool only bounds idle ones).
    slots: Semaphore,
    /// Bound of one whole send: connect, commands, data and final reply.
    send_deadline: Duration,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _entered = self.runtime.enter();
        drop(
            self.current
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}

impl fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSender")
            .field("send_deadline", &self.shared.send_deadline)
            .finish_non_exhaustive()
    }
}

impl SmtpSender {
    /// A sender for `cfg`. Does not connect yet (the first send does). Must be called within a
    /// Tokio runtime (lettre's pool runs a cleanup task on it).
    ///
    /// The EHLO name is the address literal `[127.0.0.1]`; relays that want a real host name
    /// get one with [`SmtpSender::new_with_hello_name`].
    pub fn new(cfg: &SmtpConfig) -> Result<Self, String> {
        Self::new_with_hello_name(cfg, None)
    }

    /// Like [`SmtpSender::new`], introducing ourselves as `hello_name` (a FQDN, e.g. the sending
    /// host's name) in EHLO.
    pub fn new_with_hello_name(cfg: &SmtpConfig, hello_name: Option<&str>) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "SmtpSender must be created within a Tokio runtime".to_owned())?;
        if cfg.host.trim().is_empty() {
            return Err("SMTP host is empty".into());
        }
        if cfg.port == 0 {
            return Err("SMTP port is 0".into());
        }
        if cfg.timeout.is_zero() {
            return Err("SMTP timeout is 0".into());
        }
        let pool_max = cfg.pool_max.max(1);
        let tls = match cfg.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(tls_params(&cfg.host)?),
            SmtpTls::Implicit => Tls::Wrapper(tls_params(&cfg.host)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.trim())
            .port(cfg.port)
            .tls(tls)
            .timeout(Some(cfg.timeout))
            .pool_config(PoolConfig::new().max_size(pool_max));
        match (&cfg.username, &cfg.password) {
            (Some(user), Some(pass)) => {
                if cfg.tls == SmtpTls::None {
                    tracing::warn!(
                        host = %cfg.host,
                        "SMTP credentials configured without TLS: they travel in the clear"
                    );
                }
                builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
            }
            (None, None) => {}
            _ => return Err("SMTP username and password must be set together".into()),
        }
        if let Some(name) = hello_name {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("invalid EHLO name {name:?}"));
            }
            builder = builder.hello_name(ClientId::Domain(name.to_owned()));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                current: RwLock::new(Some(Arc::new(builder.clone().build()))),
                builder,
                runtime,
                slots: Semaphore::new(pool_max as usize),
                send_deadline: cfg.timeout.saturating_mul(2),
            }),
        })
    }

    fn current(&self) -> Option<Pool> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the pool `used` (if still current) with a fresh one and shuts `used` down.
    fn replace_pool(&self, used: Pool) {
        {
            let mut current = self
                .shared
                .current
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &used)) {
                *current = Some(Arc::new(self.shared.builder.clone().build()));
            }
        }
        let deadline = self.shared.send_deadline;
        tokio::spawn(async move {
            // Closing a stalled connection politely (QUIT) may never complete: give up after
            // the deadline, which drops (closes) what is left.
            let _ = tokio::time::timeout(deadline, used.shutdown()).await;
        });
    }

    /// Sends one email. The receipt's `provider_message_id` is the relay's queue id when its
    /// reply names one (`250 2.0.0 Ok: queued as 4XyZ`, `250 Ok <ses id>`), otherwise our
    /// `Message-ID` (without brackets).
    pub async fn send(&self, e: &OutgoingEmail) -> Result<SendReceipt, SendError> {
        let message = build_message(e)?;
        let _slot = self
            .shared
            .slots
            .acquire()
            .await
            .map_err(|_| SendError::transient("SMTP sender is shut down"))?;
        let Some(smtp) = self.current() else {
            return Err(SendError::transient("SMTP sender is shut down"));
        };
        let deadline = self.shared.send_deadline;
        let response = match tokio::time::timeout(deadline, smtp.send(message)).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Err(classify(&err)),
            Err(_) => {
                self.replace_pool(smtp);
                return Err(SendError::transient(format!(
                    "SMTP timeout: send did not complete within {deadline:?}"
                )));
            }
        };
        let detail = response_text(&response);
        let own_id = e
            .message_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned();
        Ok(SendReceipt {
            provider_message_id: queue_id(&response).unwrap_or(own_id),
            detail,
        })
    }
}

fn tls_params(host: &str) -> Result<TlsParameters, String> {
    TlsParameters::new(host.trim().to_owned()).map_err(|e| format!("SMTP TLS setup: {e}"))
}

fn response_text(r: &Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    excerpt(&format!("{} {}", r.code(), lines.join(" ")), 500)
}

/// The relay's id for the message, when its reply names one.
fn queue_id(r: &Response) -> Option<String> {
    let clean = |s: &str| {
        let id = s.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        (!id.is_empty() && id.len() <= 128).then(|| id.to_owned())
    };
    let text: String = r.message().collect::<Vec<_>>().join(" ");
    let lower = text.to_ascii_lowercase();
    if let Some(pos) = lower.find("queued as ") {
        return text[pos + "queued as ".len()..]
            .split_whitespace()
            .next()
            .and_then(clean);
    }
    // "Ok <id>" (Amazon SES and others), optionally after an enhanced status code.
    let mut words = text
        .split_whitespace()
        .skip_while(|w| w.chars().all(|c| c.is_ascii_digit() || c == '.'));
    match (words.next(), words.next(), words.next()) {
        (Some(ok), Some(id), None) if ok.trim_end_matches(':').eq_ignore_ascii_case("ok") => {
            clean(id).filter(|id| id.len() >= 8)
        }
        _ => None,
    }
}

/// Transient or permanent, with the server's own words.
pub fn classify(err: &SmtpError) -> SendError {
    if let Some(code) = err.status() {
        let text = std::error::Error::source(err)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let reason = excerpt(&format!("{code} {text}"), 500);
        // Authentication failures are about our configuration, not the recipient: retry once
        // the credentials are fixed rather than failing every recipient for good.
        if matches!(code.to_string().as_str(), "530" | "534" | "535" | "538") {
            return SendError::transient(format!("SMTP authentication failed: {reason}"));
        }
        return if err.is_permanent() {
            SendError::permanent(reason)
        } else {
            SendError::transient(reason)
        };
    }
    let reason = excerpt(&err.to_string(), 500);
    if err.is_timeout() {
        return SendError::transient(format!("SMTP timeout: {reason}"));
    }
    // Client errors are mostly about this server's capabilities or our configuration
    // (no compatible AUTH mechanism, no STARTTLS offered: retry once fixed), except a message
    // this server can never take.
    if err.is_client() && reason.contains("non-ascii") {
        return SendError::permanent(reason);
    }
    SendError::transient(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_password() {
        let cfg = SmtpConfig {
            username: Some("mailer".into()),
            password: Some("hunter2-secret".into()),
            ..SmtpConfig::default()
        };
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("REDACTED") && dbg.contains("mailer"), "{dbg}");
    }

    #[tokio::test]
    async fn config_errors() {
        let half = SmtpConfig {
            username: Some("u".into()),
            ..SmtpConfig::default()
        };
        assert!(SmtpSender::new(&half).is_err());
        let empty = SmtpConfig {
            host: " ".into(),
            ..SmtpConfig::default()
        };
        assert!(SmtpSender::new(&empty).is_err());
    }

    #[tokio::test]
    async fn tls_modes_build() {
        for tls in [SmtpTls::None, SmtpTls::StartTls, SmtpTls::Implicit] {
            let cfg = SmtpConfig {
                host: "smtp.example.com".into(),
                tls,
                ..SmtpConfig::default()
            };
            assert!(SmtpSender::new(&cfg).is_ok(), "{tls:?}");
        }
    }

    #[test]
    fn needs_a_runtime_but_drops_anywhere() {
        assert!(SmtpSender::new(&SmtpConfig::default()).is_err());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sender = rt.block_on(async { SmtpSender::new(&SmtpConfig::default()).unwrap() });
        // Dropped outside the runtime's context: must not panic.
        drop(sender);
    }

    #[test]
    fn queue_ids() {
        let r = |code: &str, lines: &[&str]| {
            let text: String = lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                    format!("{code}{sep}{l}\r\n")
                })
                .collect();
            text.parse::<Response>().unwrap()
        };
        assert_eq!(
            queue_id(&r("250", &["2.0.0 Ok: queued as 4Bxyz12"])).as_deref(),
            Some("4Bxyz12")
        );
        assert_eq!(
            queue_id(&r("250", &["Ok 0100018c7a1b2c3d-abcdef"])).as_deref(),
            Some("0100018c7a1b2c3d-abcdef")
        );
        assert_eq!(queue_id(&r("250", &["Great success"])), None);
        assert_eq!(queue_id(&r("250", &["OK"])), None);
    }
}
