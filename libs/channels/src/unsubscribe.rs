//! One-click unsubscribe tokens, carried in the links of every campaign email
//! (`https://.../u/<token>`, and the RFC 8058 `List-Unsubscribe` header).
//!
//! A token is `v1.` followed by the unpadded base64url encoding of
//!
//! ```text
//! tenant_id (16 bytes) | contact_id (16) | campaign_id (16) | channel (1..=16 bytes, [a-z]) | tag (16)
//! ```
//!
//! where `tag` is the first 128 bits of HMAC-SHA256(secret, `"cos-unsubscribe/v1\0"` + the
//! bytes before it). For an email campaign that is 95 characters, safe in any URL without
//! escaping. Verification recomputes the tag and compares it in constant time.
//!
//! **Tokens do not expire**: links in old emails must keep working for as long as the mail sits
//! in someone's inbox. A token only lets its holder unsubscribe that contact from that tenant's
//! channel, which is exactly what the mail's recipient may do anyway.
//!
//! **Rotation**: a signer built with a new secret no longer accepts tokens signed with the old
//! one (old links fail [`UnsubscribeSigner::verify`] with `BadSignature`). To rotate without
//! breaking links already sent, sign with the new secret and keep accepting the old one for a
//! while with [`UnsubscribeSigner::also_accept`].

use std::fmt;

use aws_lc_rs::{constant_time, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

/// Shortest accepted secret.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest channel name.
pub const MAX_CHANNEL_LEN: usize = 16;

const PREFIX: &str = "v1.";
const DOMAIN: &[u8] = b"cos-unsubscribe/v1\0";
const TAG_LEN: usize = 16;
const IDS_LEN: usize = 48;
/// Longest token a valid signer can produce (anything longer is rejected before decoding).
const MAX_TOKEN_LEN: usize = PREFIX.len() + (IDS_LEN + MAX_CHANNEL_LEN + TAG_LEN).div_ceil(3) * 4;

/// Who unsubscribes from what.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct UnsubscribeClaims {
    pub tenant_id: Uuid,
    pub contact_id: Uuid,
    pub campaign_id: Uuid,
    /// `email`, `sms`, ...: 1 to 16 characters `[a-z]`.
    pub channel: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnsubscribeError {
    /// Not a token of a known version, bad base64 or wrong length, bad channel.
    #[error("malformed unsubscribe token")]
    Malformed,
    /// Well-formed but not signed by this server (tampered, or signed with another secret).
    #[error("unsubscribe token signature does not verify")]
    BadSignature,
    /// Claims that cannot be put in a token (channel not 1..=16 characters `[a-z]`).
    #[error("invalid unsubscribe claims: channel must be 1 to 16 characters a-z")]
    InvalidClaims,
}

/// Signs and verifies unsubscribe tokens with a server secret.
#[derive(Clone)]
pub struct UnsubscribeSigner {
    key: hmac::Key,
    /// Older secrets still accepted by `verify` (rotation).
    previous: Vec<hmac::Key>,
}

impl fmt::Debug for UnsubscribeSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsubscribeSigner")
            .field("secret", &"[REDACTED]")
            .field("previous_secrets", &self.previous.len())
            .finish()
    }
}

fn valid_channel(channel: &[u8]) -> bool {
    (1..=MAX_CHANNEL_LEN).contains(&channel.len()) && channel.iter().all(u8::is_ascii_lowercase)
}

fn key(secret: &[u8]) -> Result<hmac::Key, String> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "unsubscribe secret must be at least {MIN_SECRET_LEN} bytes (got {})",
            secret.len()
        ));
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, secret))
}

fn tag(key: &hmac::Key, payload: &[u8]) -> [u8; TAG_LEN] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(DOMAIN);
    ctx.update(payload);
    let full = ctx.sign();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&full.as_ref()[..TAG_LEN]);
    out
}

impl UnsubscribeSigner {
    /// A signer with `secret` (at least 32 bytes, e.g. 32 random bytes).
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        Ok(Self {
            key: key(secret)?,
            previous: Vec::new(),
        })
    }

    /// Also accepts tokens signed with `old_secret` (for rotating the secret without breaking
    /// links already sent). New tokens are always signed with the primary secret.
    pub fn also_accept(mut self, old_secret: &[u8]) -> Result<Self, String> {
        self.previous.push(key(old_secret)?);
        Ok(self)
    }

    /// The token for `claims`, or `InvalidClaims` if the channel is not 1..=16 chars `[a-z]`.
    pub fn try_sign(&self, claims: &UnsubscribeClaims) -> Result<String, UnsubscribeError> {
        if !valid_channel(claims.channel.as_bytes()) {
            return Err(UnsubscribeError::InvalidClaims);
        }
        Ok(self.sign_unchecked(claims))
    }

    /// The token for `claims`. The channel must be 1..=16 characters `[a-z]` (a programming
    /// error otherwise: in debug builds this panics, in release the token is produced but
    /// `verify` rejects it as `Malformed`); use [`Self::try_sign`] for unchecked input.
    pub fn sign(&self, claims: &UnsubscribeClaims) -> String {
        debug_assert!(
            valid_channel(claims.channel.as_bytes()),
            "unsubscribe channel must be 1..=16 chars [a-z], got {:?}",
            claims.channel
        );
        self.sign_unchecked(claims)
    }

    fn sign_unchecked(&self, claims: &UnsubscribeClaims) -> String {
        let mut bytes = Vec::with_capacity(IDS_LEN + claims.channel.len() + TAG_LEN);
        bytes.extend_from_slice(claims.tenant_id.as_bytes());
        bytes.extend_from_slice(claims.contact_id.as_bytes());
        bytes.extend_from_slice(claims.campaign_id.as_bytes());
        bytes.extend_from_slice(claims.channel.as_bytes());
        let t = tag(&self.key, &bytes);
        bytes.extend_from_slice(&t);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes))
    }

    /// The claims of a token this server signed. Never panics, whatever `token` is.
    pub fn verify(&self, token: &str) -> Result<UnsubscribeClaims, UnsubscribeError> {
        let body = token
            .strip_prefix(PREFIX)
            .ok_or(UnsubscribeError::Malformed)?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(UnsubscribeError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| UnsubscribeError::Malformed)?;
        if bytes.len() < IDS_LEN + 1 + TAG_LEN || bytes.len() > IDS_LEN + MAX_CHANNEL_LEN + TAG_LEN
        {
            return Err(UnsubscribeError::Malformed);
        }
        let (payload, given) = bytes.split_at(bytes.len() - TAG_LEN);
        let ok = std::iter::once(&self.key)
            .chain(&self.previous)
            .any(|k| constant_time::verify_slices_are_equal(&tag(k, payload), given).is_ok());
        if !ok {
            return Err(UnsubscribeError::BadSignature);
        }
        let channel = &payload[IDS_LEN..];
        if !valid_channel(channel) {
            return Err(UnsubscribeError::Malformed);
        }
        let id = |i: usize| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&payload[i * 16..(i + 1) * 16]);
            Uuid::from_bytes(b)
        };
        Ok(UnsubscribeClaims {
            tenant_id: id(0),
            contact_id: id(1),
            campaign_id: id(2),
            // `valid_channel` checked the bytes are ASCII lowercase letters.
            channel: channel.iter().map(|b| char::from(*b)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(channel: &str) -> UnsubscribeClaims {
        UnsubscribeClaims {
            tenant_id: Uuid::new_v4(),
            contact_id: Uuid::new_v4(),
            campaign_id: Uuid::new_v4(),
            channel: channel.to_owned(),
        }
    }

    #[test]
    fn round_trip() {
        let signer = UnsubscribeSigner::new(SECRET).unwrap();
        for ch in ["email", "sms", "a", "abcdefghijklmnop"] {
            let c = claims(ch);
            let token = signer.sign(&c);
            assert!(token.starts_with("v1."));
            assert!(token.len() <= MAX_TOKEN_LEN);
            assert!(
                token[3..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "url-safe: {token}"
            );
            assert_eq!(signer.verify(&token), Ok(c));
        }
        assert_eq!(signer.sign(&claims("email")).len(), 95);
    }

    #[test]
    fn short_secret_refused() {
        assert!(UnsubscribeSigner::new(&SECRET[..31]).is_err());
        assert!(UnsubscribeSigner::new(SECRET).is_ok());
        let dbg = format!("{:?}", UnsubscribeSigner::new(SECRET).unwrap());
        assert!(!dbg.contains("0123456789"), "{dbg}");
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let signer = UnsubscribeSigner::new(SECRET).unwrap();
        let token = signer.sign(&claims("email"));
        let mut bytes = URL_SAFE_NO_PAD.decode(&token[3..]).unwrap();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80] {
                bytes[i] ^= flip;
                let forged = format!("v1.{}", URL_SAFE_NO_PAD.encode(&bytes));
                assert_eq!(
                    signer.verify(&forged),
                    Err(UnsubscribeError::BadSignature),
                    "byte {i}"
                );
                bytes[i] ^= flip;
            }
        }
    }

    #[test]
    fn malformed_tokens() {
        let signer = UnsubscribeSigner::new(SECRET).unwrap();
        let token = signer.sign(&claims("email"));
        for bad in [
            "",
            "v1.",
            "v2.AAAA",
            &token[3..],
            &token[..token.len() - 1],
            &format!("{token}A"),
            &format!("{token}="),
            &token.replace("v1.", "v1.+"),
            "v1.!!!!",
        ] {
            let r = signer.verify(bad);
            assert!(r.is_err(), "{bad:?}");
        }
        // Truncated but still decodable: wrong length or wrong tag, never Ok.
        let bytes = URL_SAFE_NO_PAD.decode(&token[3..]).unwrap();
        for n in 0..bytes.len() {
            let t = format!("v1.{}", URL_SAFE_NO_PAD.encode(&bytes[..n]));
            assert!(signer.verify(&t).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn other_secret_fails_and_rotation_keeps_old_links() {
        let old = UnsubscribeSigner::new(SECRET).unwrap();
        let token = old.sign(&claims("email"));
        let new_secret = b"fedcba9876543210fedcba9876543210";
        let new = UnsubscribeSigner::new(new_secret).unwrap();
        assert_eq!(new.verify(&token), Err(UnsubscribeError::BadSignature));
        let rotating = UnsubscribeSigner::new(new_secret)
            .unwrap()
            .also_accept(SECRET)
            .unwrap();
        assert!(rotating.verify(&token).is_ok());
        assert_eq!(
            old.verify(&rotating.sign(&claims("sms"))),
            Err(UnsubscribeError::BadSignature)
        );
    }

    #[test]
    fn bad_channels_cannot_be_signed() {
        let signer = UnsubscribeSigner::new(SECRET).unwrap();
        for ch in ["", "Email", "e-mail", "abcdefghijklmnopq", "é", "sms\n"] {
            assert_eq!(
                signer.try_sign(&claims(ch)),
                Err(UnsubscribeError::InvalidClaims),
                "{ch:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn garbage_never_panics_or_verifies(s in ".{0,200}") {
            let signer = UnsubscribeSigner::new(SECRET).unwrap();
            prop_assert!(signer.verify(&s).is_err());
            let prefixed = format!("v1.{s}");
            prop_assert!(signer.verify(&prefixed).is_err());
        }

        #[test]
        fn random_payloads_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let signer = UnsubscribeSigner::new(SECRET).unwrap();
            let t = format!("v1.{}", URL_SAFE_NO_PAD.encode(&bytes));
            prop_assert!(signer.verify(&t).is_err());
        }
    }
}
