//! Secrets at rest: AES-256-GCM under a rotatable key ring, plus redaction helpers for secrets.
//!
//! Every ciphertext names the key id (`kid`) it was sealed under, so a ring can hold old keys
//! for reading while a new active key is used for writing; rotation is "decrypt with the old
//! kid, encrypt with the active one" ([`KeyRing::reencrypt`]). Callers pass associated data
//! (AAD) describing where a ciphertext lives (e.g. `"identity.signing_keys:<kid>"`), so a
//! ciphertext copied into another row or column fails to decrypt.
//!
//! Nonces are 96-bit random values. NIST SP 800-38D caps random-nonce use at 2^32 messages per
//! key; secrets at rest are written far less often than that, and rotation resets the count.
//!
//! ```
//! use cos_crypto::KeyRing;
//!
//! let ring = KeyRing::generate("dev-1")?;
//! let aad = b"integrations.ayrshare_key:tenant-42";
//! let stored = ring.encrypt_to_string(b"ayr_live_0123456789abcdef", aad);
//! assert_eq!(ring.decrypt_str(&stored, aad)?, b"ayr_live_0123456789abcdef");
//! assert!(ring.decrypt_str(&stored, b"integrations.ayrshare_key:tenant-43").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ciphertext;
mod key_ring;
mod secret;

pub use ciphertext::DecryptError;
pub use key_ring::{KeyRing, KeyRingError, KidProblem, MAX_KID_LEN};
pub use secret::{Secret, mask};
