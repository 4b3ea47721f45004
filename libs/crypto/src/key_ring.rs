//! The key ring: named AES-256 keys, one of them active for new encryptions.

use std::fmt;

use aes_gcm::aead::{AeadInOut, Generate, KeyInit, Nonce};
use aes_gcm::{A_MAX, Aes256Gcm, Key, P_MAX, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::{DecodePaddingMode, general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::Secret;
use crate::ciphertext::{
    DecryptError, Envelope, NONCE_LEN, TAG_LEN, associated_data, header_len, write_header,
};

/// Longest key id accepted; it is stored in every ciphertext, so it is kept short.
pub const MAX_KID_LEN: usize = 32;
/// AES-256 key length in bytes.
const KEY_LEN: usize = 32;
/// Length of a 32-byte key in padded standard base64.
const KEY_BASE64_LEN: usize = 44;

/// Standard alphabet, padding optional: operators often strip the trailing `=` when pasting a
/// key into an environment variable, and accepting that costs nothing.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What is wrong with a key id. Deliberately never echoes the value: a key id that fails
/// validation may well be key material pasted into the wrong place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KidProblem {
    /// Nothing before the `:` (or an empty active key id).
    #[error("is empty")]
    Empty,
    /// Longer than [`MAX_KID_LEN`].
    #[error("is {0} bytes long; at most 32 are allowed")]
    TooLong(usize),
    /// Something other than ASCII letters, digits, `_` and `-`.
    #[error("contains a character outside [A-Za-z0-9_-]")]
    InvalidCharacter,
}

/// Why a key ring could not be built. Names the entry or kid at fault, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// The keys string held no entries at all.
    #[error("key ring is empty: expected `kid:base64key[,kid:base64key...]`")]
    Empty,
    /// Two commas in a row, or a leading/trailing comma.
    #[error("key ring entry #{entry} is empty (stray comma?)")]
    EmptyEntry {
        /// 1-based position in the comma-separated list.
        entry: usize,
    },
    /// An entry without the `:` between kid and key.
    #[error("key ring entry #{entry} is not `kid:base64key` (no ':' found)")]
    MissingSeparator {
        /// 1-based position in the comma-separated list.
        entry: usize,
    },
    /// The kid part of an entry is not a valid key id.
    #[error("key ring entry #{entry}: key id {problem}")]
    InvalidKid {
        /// 1-based position in the comma-separated list.
        entry: usize,
        /// What is wrong with it.
        problem: KidProblem,
    },
    /// The key part is not standard base64.
    #[error("key '{kid}' is not valid standard base64")]
    InvalidBase64 {
        /// The (valid) key id of the entry.
        kid: String,
    },
    /// The key decodes to something other than 32 bytes.
    #[error("key '{kid}' decodes to {len} bytes; AES-256 needs exactly 32")]
    WrongKeyLength {
        /// The (valid) key id of the entry.
        kid: String,
        /// Decoded length in bytes.
        len: usize,
    },
    /// The same kid was configured twice, so which key it means would be ambiguous.
    #[error("key id '{kid}' appears more than once in the key ring")]
    DuplicateKid {
        /// The repeated key id.
        kid: String,
    },
    /// The active kid (or the kid given to a generator) is not a valid key id.
    #[error("active key id {problem}")]
    InvalidActiveKid {
        /// What is wrong with it.
        problem: KidProblem,
    },
    /// The active kid names no key in the ring.
    #[error("active key id '{kid}' is not in the key ring")]
    ActiveKidNotFound {
        /// The missing key id.
        kid: String,
    },
}

/// Checks the key id syntax: 1-32 chars of `[A-Za-z0-9_-]`.
pub(crate) fn check_kid(kid: &str) -> Result<(), KidProblem> {
    if kid.is_empty() {
        Err(KidProblem::Empty)
    } else if kid.len() > MAX_KID_LEN {
        Err(KidProblem::TooLong(kid.len()))
    } else if !kid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Err(KidProblem::InvalidCharacter)
    } else {
        Ok(())
    }
}

/// One named key. The raw bytes are kept only so a generated dev ring can be persisted.
#[derive(Clone)]
struct RingKey {
    kid: String,
    material: Zeroizing<[u8; KEY_LEN]>,
    cipher: Aes256Gcm,
}

impl RingKey {
    fn new(kid: String, material: Zeroizing<[u8; KEY_LEN]>) -> Self {
        // Borrowing the array as a `Key` (rather than converting it) avoids leaving an
        // unwiped copy of the key on the stack.
        let cipher = Aes256Gcm::new(<&Key<Aes256Gcm>>::from(&*material));
        Self {
            kid,
            material,
            cipher,
        }
    }

    fn generate(kid: String) -> Self {
        let mut material = Zeroizing::new([0u8; KEY_LEN]);
        // ThreadRng is a CSPRNG reseeded from the OS; it panics only if the OS RNG is broken,
        // in which case no key we could make would be safe anyway.
        rand::rng().fill_bytes(&mut *material);
        Self::new(kid, material)
    }
}

/// AES-256-GCM keys by key id, one of them active for encryption.
///
/// Cheap to share behind an `Arc`; all operations take `&self`. Key bytes are wiped on drop,
/// and `Debug` prints key ids only.
#[derive(Clone)]
pub struct KeyRing {
    /// In configuration order, so `to_config_string` round-trips. Rings hold a handful of
    /// keys, so a linear search beats a map.
    keys: Vec<RingKey>,
    /// Index into `keys` of the key new ciphertexts are sealed with.
    active: usize,
}

impl KeyRing {
    /// Builds a ring from configuration: `keys` is `"kid1:BASE64KEY,kid2:BASE64KEY"` (standard
    /// base64 of exactly 32 bytes each; whitespace around entries is ignored) and `active_kid`
    /// names the key used for new encryptions.
    ///
    /// # Errors
    /// A [`KeyRingError`] naming the entry or kid at fault; never containing key material.
    pub fn parse(keys: &str, active_kid: &str) -> Result<Self, KeyRingError> {
        // Checked first: if the two arguments were swapped, `active_kid` holds key material,
        // and the syntax check reports it without echoing it.
        let active_kid = active_kid.trim();
        check_kid(active_kid).map_err(|problem| KeyRingError::InvalidActiveKid { problem })?;

        if keys.trim().is_empty() {
            return Err(KeyRingError::Empty);
        }
        let mut ring: Vec<RingKey> = Vec::new();
        for (index, entry) in keys.split(',').enumerate() {
            let entry_no = index + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(KeyRingError::EmptyEntry { entry: entry_no });
            }
            let (kid, encoded) = entry
                .split_once(':')
                .ok_or(KeyRingError::MissingSeparator { entry: entry_no })?;
            let kid = kid.trim();
            check_kid(kid).map_err(|problem| KeyRingError::InvalidKid {
                entry: entry_no,
                problem,
            })?;
            if ring.iter().any(|k| k.kid == kid) {
                return Err(KeyRingError::DuplicateKid {
                    kid: kid.to_owned(),
                });
            }
            let material = decode_key(kid, encoded.trim())?;
            ring.push(RingKey::new(kid.to_owned(), material));
        }

        let active = ring
            .iter()
            .position(|k| k.kid == active_kid)
            .ok_or_else(|| KeyRingError::ActiveKidNotFound {
                kid: active_kid.to_owned(),
            })?;
        Ok(Self { keys: ring, active })
    }

    /// A ring with one freshly generated random key, active. For development and tests:
    /// persist it with [`KeyRing::to_config_string`] or its ciphertexts die with the process.
    ///
    /// # Errors
    /// [`KeyRingError::InvalidActiveKid`] if `kid` is not 1-32 chars of `[A-Za-z0-9_-]`.
    pub fn generate(kid: &str) -> Result<Self, KeyRingError> {
        check_kid(kid).map_err(|problem| KeyRingError::InvalidActiveKid { problem })?;
        Ok(Self {
            keys: vec![RingKey::generate(kid.to_owned())],
            active: 0,
        })
    }

    /// Adds a freshly generated key under `kid` and makes it active; older keys stay for
    /// decryption. Production rotates through configuration instead; this serves dev rings
    /// and tests.
    ///
    /// # Errors
    /// [`KeyRingError::InvalidActiveKid`] for a malformed kid, [`KeyRingError::DuplicateKid`]
    /// if the ring already holds it.
    pub fn rotate_to_generated(&mut self, kid: &str) -> Result<(), KeyRingError> {
        check_kid(kid).map_err(|problem| KeyRingError::InvalidActiveKid { problem })?;
        if self.contains(kid) {
            return Err(KeyRingError::DuplicateKid {
                kid: kid.to_owned(),
            });
        }
        self.keys.push(RingKey::generate(kid.to_owned()));
        self.active = self.keys.len() - 1;
        Ok(())
    }

    /// The `keys` string [`KeyRing::parse`] accepts, for persisting a generated dev ring (store
    /// [`KeyRing::active_kid`] next to it). Wrapped in [`Secret`] because it is key material.
    #[must_use]
    pub fn to_config_string(&self) -> Secret {
        // Sized up front so the string never reallocates and leaves unwiped copies behind.
        let len = self
            .keys
            .iter()
            .map(|k| k.kid.len() + 1 + KEY_BASE64_LEN)
            .sum::<usize>()
            + self.keys.len().saturating_sub(1);
        let mut out = Zeroizing::new(String::with_capacity(len));
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&key.kid);
            out.push(':');
            STANDARD.encode_string(key.material.as_slice(), &mut out);
        }
        Secret::from_zeroizing(out)
    }

    /// The key id new ciphertexts are sealed under.
    #[must_use]
    pub fn active_kid(&self) -> &str {
        &self.active_key().kid
    }

    /// All key ids in the ring, in configuration order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    /// Whether the ring holds a key named `kid`.
    #[must_use]
    pub fn contains(&self, kid: &str) -> bool {
        self.key(kid).is_some()
    }

    /// Encrypts `plaintext` under the active key, bound to `aad` (which must be passed again,
    /// byte for byte, to decrypt). Returns the self-describing v1 blob.
    ///
    /// # Panics
    /// If `plaintext` exceeds AES-GCM's limit of 2^36 - 32 bytes (64 GiB), or if the operating
    /// system's random number generator fails. Neither is a condition a caller can recover from
    /// by retrying, and secrets are validated to small sizes long before they get here.
    #[must_use]
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let key = self.active_key();
        assert!(
            plaintext.len() as u64 <= P_MAX,
            "plaintext exceeds the AES-GCM limit of 2^36 - 32 bytes"
        );
        // AES-GCM caps AAD at 2^61 bytes, beyond any real address space; asserted anyway (with
        // room for the header) so that the `expect` below is provably unreachable.
        assert!(aad.len() as u64 + 64 <= A_MAX, "associated data too long");

        let nonce = Nonce::<Aes256Gcm>::generate();
        let mut blob =
            Vec::with_capacity(header_len(&key.kid) + NONCE_LEN + plaintext.len() + TAG_LEN);
        write_header(&mut blob, &key.kid);
        let aead_aad = associated_data(&blob, aad);
        blob.extend_from_slice(&nonce);
        let body_start = blob.len();
        // Sealed in place inside the output, so the plaintext is never copied elsewhere.
        // `body_start` is the length before the plaintext was appended: the range is in bounds.
        blob.extend_from_slice(plaintext);
        let tag: Tag = key
            .cipher
            .encrypt_inout_detached(&nonce, &aead_aad, (&mut blob[body_start..]).into())
            .expect("AES-GCM only fails on over-long input, and both lengths are checked above");
        blob.extend_from_slice(&tag);
        blob
    }

    /// Decrypts a v1 blob with whichever key it names, checking it against `aad`.
    ///
    /// # Errors
    /// [`DecryptError::UnknownKid`] if the ring lacks the blob's key,
    /// [`DecryptError::AuthenticationFailed`] for a wrong AAD or modified bytes, and
    /// structural variants for blobs that are not v1 ciphertexts.
    pub fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let envelope = Envelope::parse(blob)?;
        let key = self
            .key(envelope.kid)
            .ok_or_else(|| DecryptError::UnknownKid {
                kid: envelope.kid.to_owned(),
            })?;
        let aead_aad = associated_data(envelope.header, aad);
        let mut plaintext = envelope.ciphertext.to_vec();
        // The tag is checked before any keystream is applied, so on failure `plaintext` still
        // holds ciphertext and nothing needs wiping.
        key.cipher
            .decrypt_inout_detached(
                envelope.nonce.into(),
                &aead_aad,
                plaintext.as_mut_slice().into(),
                envelope.tag.into(),
            )
            .map_err(|_| DecryptError::AuthenticationFailed)?;
        Ok(plaintext)
    }

    /// [`KeyRing::encrypt`], encoded as URL-safe base64 without padding (for text columns,
    /// JSON and environment variables).
    ///
    /// # Panics
    /// As [`KeyRing::encrypt`].
    #[must_use]
    pub fn encrypt_to_string(&self, plaintext: &[u8], aad: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.encrypt(plaintext, aad))
    }

    /// Decrypts the string form produced by [`KeyRing::encrypt_to_string`].
    ///
    /// # Errors
    /// [`DecryptError::NotBase64`], or any error of [`KeyRing::decrypt`].
    pub fn decrypt_str(&self, encoded: &str, aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
        self.decrypt(&decode_blob(encoded)?, aad)
    }

    /// Decrypts the string form into a [`Secret`], for text secrets such as API keys.
    ///
    /// # Errors
    /// As [`KeyRing::decrypt_str`], plus [`DecryptError::NotUtf8`].
    pub fn decrypt_secret(&self, encoded: &str, aad: &[u8]) -> Result<Secret, DecryptError> {
        let plaintext = self.decrypt_str(encoded, aad)?;
        match String::from_utf8(plaintext) {
            Ok(text) => Ok(Secret::new(text)),
            Err(err) => {
                // Wipe the rejected plaintext rather than just dropping it.
                drop(Zeroizing::new(err.into_bytes()));
                Err(DecryptError::NotUtf8)
            }
        }
    }

    /// The key id a blob names, without decrypting it (for metrics and rotation sweeps).
    ///
    /// # Errors
    /// Structural [`DecryptError`]s if `blob` is not a v1 ciphertext.
    pub fn ciphertext_kid(blob: &[u8]) -> Result<&str, DecryptError> {
        Envelope::parse(blob).map(|envelope| envelope.kid)
    }

    /// Whether `blob` was sealed under a key other than the active one and should be
    /// re-encrypted. A blob that cannot even be parsed returns `false`: re-encrypting cannot
    /// help it, and [`KeyRing::decrypt`] reports what is wrong.
    #[must_use]
    pub fn needs_rotation(&self, blob: &[u8]) -> bool {
        Self::ciphertext_kid(blob).is_ok_and(|kid| kid != self.active_kid())
    }

    /// [`KeyRing::needs_rotation`] for the string form; `false` for invalid base64.
    #[must_use]
    pub fn needs_rotation_str(&self, encoded: &str) -> bool {
        decode_blob(encoded).is_ok_and(|blob| self.needs_rotation(&blob))
    }

    /// Decrypts `blob` with the key it names and encrypts the plaintext again under the active
    /// key, with the same `aad` and a fresh nonce.
    ///
    /// # Errors
    /// Any error of [`KeyRing::decrypt`]; the old blob is then left as it was by the caller.
    ///
    /// # Panics
    /// As [`KeyRing::encrypt`].
    pub fn reencrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let plaintext = Zeroizing::new(self.decrypt(blob, aad)?);
        Ok(self.encrypt(&plaintext, aad))
    }

    /// [`KeyRing::reencrypt`] for the string form.
    ///
    /// # Errors
    /// [`DecryptError::NotBase64`], or any error of [`KeyRing::decrypt`].
    ///
    /// # Panics
    /// As [`KeyRing::encrypt`].
    pub fn reencrypt_str(&self, encoded: &str, aad: &[u8]) -> Result<String, DecryptError> {
        let blob = self.reencrypt(&decode_blob(encoded)?, aad)?;
        Ok(URL_SAFE_NO_PAD.encode(blob))
    }

    fn active_key(&self) -> &RingKey {
        // `active` is set only from a position found in `keys` (parse) or to the index of a
        // key just pushed (generate, rotate), and keys are never removed: always in bounds.
        &self.keys[self.active]
    }

    fn key(&self, kid: &str) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("active_kid", &self.active_kid())
            .field("kids", &self.kids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Decodes one configured key into wiped-on-drop storage.
fn decode_key(kid: &str, encoded: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyRingError> {
    // Reserved up front so decoding never reallocates and strands a copy of the key.
    let mut decoded = Zeroizing::new(Vec::with_capacity(base64::decoded_len_estimate(
        encoded.len(),
    )));
    // The base64 error is dropped on purpose: it quotes the offending input byte.
    KEY_BASE64
        .decode_vec(encoded, &mut decoded)
        .map_err(|_| KeyRingError::InvalidBase64 {
            kid: kid.to_owned(),
        })?;
    let mut material = Zeroizing::new([0u8; KEY_LEN]);
    if decoded.len() != KEY_LEN {
        return Err(KeyRingError::WrongKeyLength {
            kid: kid.to_owned(),
            len: decoded.len(),
        });
    }
    material.copy_from_slice(&decoded);
    Ok(material)
}

fn decode_blob(encoded: &str) -> Result<Vec<u8>, DecryptError> {
    URL_SAFE_NO_PAD
        .decode(encoded.trim())
        .map_err(|_| DecryptError::NotBase64)
}
