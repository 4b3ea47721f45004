//! The self-describing v1 ciphertext layout and the errors of reading one.
//!
//! ```text
//! byte 0        format version (1)
//! byte 1        kid length n (1..=32)
//! bytes 2..2+n  kid, ASCII [A-Za-z0-9_-]
//! next 12       random 96-bit nonce
//! rest          AES-256-GCM ciphertext followed by its 16-byte tag
//! ```
//!
//! The header (version, length, kid) is authenticated too: it is prepended to the caller's
//! associated data, so a blob whose header was rewritten never decrypts, and a future format
//! version can never be confused with this one under the same key.

use crate::key_ring::check_kid;

/// Format version byte of the layout above.
pub(crate) const VERSION_1: u8 = 1;
/// AES-GCM standard nonce length (96 bits).
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM full-length tag; shorter tags weaken authentication.
pub(crate) const TAG_LEN: usize = 16;

/// Why a ciphertext could not be decrypted.
///
/// Messages describe the blob's structure only; they never contain plaintext or key material,
/// and every authentication failure looks the same so that errors cannot act as an oracle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The string form was not URL-safe base64 without padding.
    #[error("ciphertext is not valid URL-safe base64")]
    NotBase64,
    /// The blob is too short or its header is not well formed.
    #[error("ciphertext is malformed: {0}")]
    Malformed(&'static str),
    /// The first byte names a format this version of the crate cannot read.
    #[error("unsupported ciphertext format version {0}")]
    UnsupportedVersion(u8),
    /// The ciphertext was sealed under a key id the ring does not hold.
    #[error("ciphertext was encrypted under key id '{kid}', which is not in the key ring")]
    UnknownKid {
        /// The key id named by the ciphertext (validated, so safe to log).
        kid: String,
    },
    /// Wrong key, wrong associated data, or the bytes were modified.
    #[error("ciphertext authentication failed")]
    AuthenticationFailed,
    /// Decryption succeeded but the plaintext was not text where a [`crate::Secret`] was asked for.
    #[error("decrypted secret is not valid UTF-8")]
    NotUtf8,
}

/// A parsed v1 blob, borrowing from the caller's bytes.
#[derive(Debug)]
pub(crate) struct Envelope<'a> {
    /// Version, kid length and kid: authenticated as part of the associated data.
    pub header: &'a [u8],
    pub kid: &'a str,
    pub nonce: &'a [u8; NONCE_LEN],
    pub ciphertext: &'a [u8],
    pub tag: &'a [u8; TAG_LEN],
}

impl<'a> Envelope<'a> {
    pub(crate) fn parse(blob: &'a [u8]) -> Result<Self, DecryptError> {
        const TRUNCATED: DecryptError = DecryptError::Malformed("truncated");

        let (&version, rest) = blob.split_first().ok_or(DecryptError::Malformed("empty"))?;
        if version != VERSION_1 {
            return Err(DecryptError::UnsupportedVersion(version));
        }
        let (&kid_len, rest) = rest.split_first().ok_or(TRUNCATED)?;
        let (kid, rest) = rest
            .split_at_checked(usize::from(kid_len))
            .ok_or(TRUNCATED)?;
        // Validated before it can reach an error message or a log line: a forged header must
        // not be able to smuggle arbitrary bytes into either.
        let kid = std::str::from_utf8(kid)
            .ok()
            .filter(|kid| check_kid(kid).is_ok())
            .ok_or(DecryptError::Malformed("invalid key id"))?;
        let (nonce, rest) = rest.split_first_chunk::<NONCE_LEN>().ok_or(TRUNCATED)?;
        let (ciphertext, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or(TRUNCATED)?;
        let header = blob.get(..header_len(kid)).ok_or(TRUNCATED)?;
        Ok(Self {
            header,
            kid,
            nonce,
            ciphertext,
            tag,
        })
    }
}

/// Appends the v1 header for `kid`; the kid must already be validated.
pub(crate) fn write_header(out: &mut Vec<u8>, kid: &str) {
    debug_assert!(check_kid(kid).is_ok());
    out.push(VERSION_1);
    // Kids are validated to at most 32 bytes when they enter a ring, so this never saturates.
    out.push(u8::try_from(kid.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(kid.as_bytes());
}

/// Length of a v1 header for `kid`.
pub(crate) fn header_len(kid: &str) -> usize {
    2 + kid.len()
}

/// The associated data actually fed to AES-GCM: the blob header, then the caller's AAD.
///
/// Unambiguous because the header is self-delimiting (its length byte says where it ends).
pub(crate) fn associated_data(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + aad.len());
    out.extend_from_slice(header);
    out.extend_from_slice(aad);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(kid: &str, body_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, kid);
        out.extend(std::iter::repeat_n(7u8, NONCE_LEN + body_len));
        out
    }

    #[test]
    fn a_well_formed_blob_splits_into_its_parts() {
        let bytes = blob("k1", 5 + TAG_LEN);
        let env = Envelope::parse(&bytes).unwrap();
        assert_eq!(env.header, &[VERSION_1, 2, b'k', b'1']);
        assert_eq!(env.kid, "k1");
        assert_eq!(env.ciphertext.len(), 5);
        assert_eq!(header_len("k1"), env.header.len());
    }

    #[test]
    fn an_empty_plaintext_still_has_a_tag() {
        let bytes = blob("k1", TAG_LEN);
        assert!(Envelope::parse(&bytes).unwrap().ciphertext.is_empty());
    }

    #[test]
    fn structural_problems_are_reported_as_such() {
        assert_eq!(
            Envelope::parse(&[]).unwrap_err(),
            DecryptError::Malformed("empty")
        );
        assert_eq!(
            Envelope::parse(&[9, 1, b'k']).unwrap_err(),
            DecryptError::UnsupportedVersion(9)
        );
        assert_eq!(
            Envelope::parse(&[VERSION_1]).unwrap_err(),
            DecryptError::Malformed("truncated")
        );
        assert_eq!(
            Envelope::parse(&[VERSION_1, 40, b'k']).unwrap_err(),
            DecryptError::Malformed("truncated")
        );
        let short = blob("k1", TAG_LEN - 1);
        assert_eq!(
            Envelope::parse(&short).unwrap_err(),
            DecryptError::Malformed("truncated")
        );
    }

    #[test]
    fn a_forged_kid_never_reaches_an_error_message() {
        let mut bytes = blob("k1", TAG_LEN);
        bytes[2] = b'\n';
        assert_eq!(
            Envelope::parse(&bytes).unwrap_err(),
            DecryptError::Malformed("invalid key id")
        );
        let mut empty_kid = vec![VERSION_1, 0];
        empty_kid.extend([0u8; NONCE_LEN + TAG_LEN]);
        assert_eq!(
            Envelope::parse(&empty_kid).unwrap_err(),
            DecryptError::Malformed("invalid key id")
        );
    }
}
