//! Secrets at rest through the public API: round trips, binding, tampering, rotation, config.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cos_crypto::{DecryptError, KeyRing, KeyRingError, KidProblem};
use rand::Rng as _;

const AAD: &[u8] = b"identity.signing_keys:key-2026-01";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A base64 key whose text is easy to search for in error and debug output.
fn key_b64(fill: u8) -> String {
    STANDARD.encode([fill; 32])
}

fn ring(keys: &[(&str, u8)], active: &str) -> KeyRing {
    let config = keys
        .iter()
        .map(|(kid, fill)| format!("{kid}:{}", key_b64(*fill)))
        .collect::<Vec<_>>()
        .join(",");
    KeyRing::parse(&config, active).unwrap()
}

fn header_len(kid: &str) -> usize {
    2 + kid.len()
}

#[test]
fn a_secret_round_trips_through_bytes_and_strings() {
    let ring = ring(&[("k1", 1)], "k1");
    let blob = ring.encrypt(b"ayr_live_0123456789", AAD);
    assert_eq!(ring.decrypt(&blob, AAD).unwrap(), b"ayr_live_0123456789");

    let text = ring.encrypt_to_string(b"ayr_live_0123456789", AAD);
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "URL-safe alphabet without padding: {text}"
    );
    assert_eq!(
        ring.decrypt_str(&text, AAD).unwrap(),
        b"ayr_live_0123456789"
    );

    let empty = ring.encrypt(b"", b"");
    assert_eq!(ring.decrypt(&empty, b"").unwrap(), b"");
}

#[test]
fn a_text_secret_decrypts_into_a_redacted_secret() {
    let ring = ring(&[("k1", 1)], "k1");
    let stored = ring.encrypt_to_string(b"whsec_0123456789abcdef", AAD);
    let secret = ring.decrypt_secret(&stored, AAD).unwrap();
    assert_eq!(secret.expose_secret(), "whsec_0123456789abcdef");
    assert_eq!(format!("{secret:?}"), "[REDACTED]");

    let binary = ring.encrypt_to_string(&[0xff, 0xfe], AAD);
    assert_eq!(
        ring.decrypt_secret(&binary, AAD).unwrap_err(),
        DecryptError::NotUtf8
    );
}

#[test]
fn the_same_plaintext_encrypts_differently_every_time() {
    let ring = ring(&[("k1", 1)], "k1");
    assert_ne!(ring.encrypt(b"same", AAD), ring.encrypt(b"same", AAD));
}

#[test]
fn a_ciphertext_copied_into_another_row_fails_to_decrypt() {
    let ring = ring(&[("k1", 1)], "k1");
    let blob = ring.encrypt(b"tenant 1 secret", b"integrations.ayrshare_key:tenant-1");
    let err = ring
        .decrypt(&blob, b"integrations.ayrshare_key:tenant-2")
        .unwrap_err();
    assert_eq!(err, DecryptError::AuthenticationFailed);
    assert!(ring.decrypt(&blob, b"").is_err());
}

#[test]
fn any_modified_byte_after_the_header_fails_authentication_and_says_nothing_more() {
    let ring = ring(&[("k1", 1)], "k1");
    let blob = ring.encrypt(b"top secret value", AAD);
    for i in header_len("k1")..blob.len() {
        let mut tampered = blob.clone();
        tampered[i] ^= 0x01;
        let err = ring.decrypt(&tampered, AAD).unwrap_err();
        assert_eq!(err, DecryptError::AuthenticationFailed, "byte {i}");
        assert_eq!(err.to_string(), "ciphertext authentication failed");
    }
}

#[test]
fn a_rewritten_header_is_rejected() {
    let ring = ring(&[("k1", 1), ("k2", 2)], "k1");
    let blob = ring.encrypt(b"value", AAD);

    let mut other_version = blob.clone();
    other_version[0] = 2;
    assert_eq!(
        ring.decrypt(&other_version, AAD).unwrap_err(),
        DecryptError::UnsupportedVersion(2)
    );

    // Pointing the header at another key of the ring must not help an attacker either.
    let mut relabelled = blob.clone();
    relabelled[3] = b'2';
    assert_eq!(
        ring.decrypt(&relabelled, AAD).unwrap_err(),
        DecryptError::AuthenticationFailed
    );

    let truncated = &blob[..blob.len() - TAG_LEN];
    assert!(matches!(
        ring.decrypt(truncated, AAD),
        Err(DecryptError::Malformed(_) | DecryptError::AuthenticationFailed)
    ));
    assert_eq!(
        ring.decrypt(&blob[..3], AAD).unwrap_err(),
        DecryptError::Malformed("truncated")
    );
    assert_eq!(
        ring.decrypt_str("not base64!", AAD).unwrap_err(),
        DecryptError::NotBase64
    );
}

#[test]
fn a_ciphertext_under_an_unknown_key_names_that_key() {
    let writer = ring(&[("old-key", 1)], "old-key");
    let reader = ring(&[("new-key", 2)], "new-key");
    let blob = writer.encrypt(b"value", AAD);
    let err = reader.decrypt(&blob, AAD).unwrap_err();
    assert_eq!(
        err,
        DecryptError::UnknownKid {
            kid: "old-key".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "ciphertext was encrypted under key id 'old-key', which is not in the key ring"
    );
}

#[test]
fn old_ciphertexts_stay_readable_after_a_new_active_key_and_reencrypt_moves_them() {
    let before = ring(&[("2025", 1)], "2025");
    let old_blob = before.encrypt(b"signing key bytes", AAD);
    assert!(!before.needs_rotation(&old_blob));

    // Rotation by configuration: append the new key and make it active.
    let config = format!(
        "{},2026:{}",
        before.to_config_string().expose_secret(),
        key_b64(2)
    );
    let after = KeyRing::parse(&config, "2026").unwrap();
    assert_eq!(after.active_kid(), "2026");
    assert_eq!(after.decrypt(&old_blob, AAD).unwrap(), b"signing key bytes");
    assert!(after.needs_rotation(&old_blob));
    assert_eq!(KeyRing::ciphertext_kid(&old_blob).unwrap(), "2025");

    let new_blob = after.reencrypt(&old_blob, AAD).unwrap();
    assert_eq!(KeyRing::ciphertext_kid(&new_blob).unwrap(), "2026");
    assert!(!after.needs_rotation(&new_blob));
    assert_eq!(after.decrypt(&new_blob, AAD).unwrap(), b"signing key bytes");
    // Once re-encrypted, the old key is no longer needed to read it.
    assert_eq!(
        before.decrypt(&new_blob, AAD).unwrap_err(),
        DecryptError::UnknownKid { kid: "2026".into() }
    );
    // Re-encryption still checks the context: it cannot launder a ciphertext into another row.
    assert_eq!(
        after.reencrypt(&old_blob, b"other row").unwrap_err(),
        DecryptError::AuthenticationFailed
    );
}

#[test]
fn rotation_works_on_the_string_form_and_on_generated_rings() {
    let mut ring = KeyRing::generate("dev-1").unwrap();
    let stored = ring.encrypt_to_string(b"value", AAD);
    ring.rotate_to_generated("dev-2").unwrap();
    assert_eq!(ring.kids().collect::<Vec<_>>(), ["dev-1", "dev-2"]);
    assert!(ring.needs_rotation_str(&stored));
    let rotated = ring.reencrypt_str(&stored, AAD).unwrap();
    assert!(!ring.needs_rotation_str(&rotated));
    assert_eq!(ring.decrypt_str(&rotated, AAD).unwrap(), b"value");
    assert!(!ring.needs_rotation_str("garbage!"));
    assert!(!ring.needs_rotation(b""));
    assert_eq!(
        ring.rotate_to_generated("dev-1").unwrap_err(),
        KeyRingError::DuplicateKid {
            kid: "dev-1".into()
        }
    );
}

#[test]
fn a_generated_ring_survives_being_persisted_as_config() {
    let ring = KeyRing::generate("dev").unwrap();
    let blob = ring.encrypt(b"value", AAD);
    let config = ring.to_config_string();
    assert_eq!(format!("{config:?}"), "[REDACTED]");
    let reloaded = KeyRing::parse(config.expose_secret(), ring.active_kid()).unwrap();
    assert_eq!(reloaded.decrypt(&blob, AAD).unwrap(), b"value");
    assert!(KeyRing::generate("").is_err());
}

#[test]
fn the_blob_is_plain_aes_256_gcm_with_the_header_prepended_to_the_aad() {
    // Pins the v1 layout so another implementation (or a future version) can read it.
    let ring = ring(&[("k1", 9)], "k1");
    let blob = ring.encrypt(b"interop", AAD);
    assert_eq!(&blob[..4], &[1, 2, b'k', b'1']);
    assert_eq!(blob.len(), 4 + NONCE_LEN + b"interop".len() + TAG_LEN);

    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from([9u8; 32]));
    let nonce = <&aes_gcm::Nonce<_>>::try_from(&blob[4..4 + NONCE_LEN]).unwrap();
    let aad = [&blob[..4], AAD].concat();
    let plaintext = cipher
        .decrypt(
            nonce,
            Payload {
                msg: &blob[4 + NONCE_LEN..],
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(plaintext, b"interop");
}

#[test]
fn round_trips_hold_for_many_random_lengths_and_contexts() {
    let ring = ring(&[("old", 3), ("prop", 4)], "prop");
    let mut rng = rand::rng();
    for round in 0..400 {
        // Mostly short values like real secrets, with some long ones across block boundaries.
        let len = if round % 10 == 0 {
            rng.random_range(0..5000)
        } else {
            rng.random_range(0..80)
        };
        let mut plaintext = vec![0u8; len];
        rng.fill(plaintext.as_mut_slice());
        let mut aad = vec![0u8; rng.random_range(0..64)];
        rng.fill(aad.as_mut_slice());

        let blob = ring.encrypt(&plaintext, &aad);
        assert_eq!(blob.len(), header_len("prop") + NONCE_LEN + len + TAG_LEN);
        assert_eq!(ring.decrypt(&blob, &aad).unwrap(), plaintext);
        let text = ring.encrypt_to_string(&plaintext, &aad);
        assert_eq!(ring.decrypt_str(&text, &aad).unwrap(), plaintext);

        let mut tampered = blob.clone();
        let at = rng.random_range(header_len("prop")..blob.len());
        tampered[at] ^= 1 << rng.random_range(0..8);
        assert_eq!(
            ring.decrypt(&tampered, &aad).unwrap_err(),
            DecryptError::AuthenticationFailed
        );

        let mut other_aad = aad.clone();
        other_aad.push(0);
        assert!(ring.decrypt(&blob, &other_aad).is_err());
    }
}

#[test]
fn config_is_forgiving_about_whitespace_and_padding() {
    let unpadded = key_b64(5).trim_end_matches('=').to_owned();
    let ring = KeyRing::parse(&format!(" a:{} ,\n b : {unpadded} ", key_b64(4)), " b ").unwrap();
    assert_eq!(ring.kids().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(ring.active_kid(), "b");
    assert!(ring.contains("a") && !ring.contains("c"));
}

#[test]
fn each_config_mistake_is_named_without_echoing_key_material() {
    let good = key_b64(7);
    let short = STANDARD.encode([7u8; 16]);
    let long = STANDARD.encode([7u8; 33]);
    let cases: Vec<(String, &str, KeyRingError, &str)> = vec![
        (
            "  ".into(),
            "k1",
            KeyRingError::Empty,
            "key ring is empty: expected `kid:base64key[,kid:base64key...]`",
        ),
        (
            format!("k1:{good},,k2:{good}"),
            "k1",
            KeyRingError::EmptyEntry { entry: 2 },
            "key ring entry #2 is empty (stray comma?)",
        ),
        (
            good.clone(),
            "k1",
            KeyRingError::MissingSeparator { entry: 1 },
            "key ring entry #1 is not `kid:base64key` (no ':' found)",
        ),
        (
            format!(":{good}"),
            "k1",
            KeyRingError::InvalidKid {
                entry: 1,
                problem: KidProblem::Empty,
            },
            "key ring entry #1: key id is empty",
        ),
        (
            // Key and kid swapped: the "kid" is key material and must not be echoed.
            format!("k1:{good},{good}:k2"),
            "k1",
            KeyRingError::InvalidKid {
                entry: 2,
                problem: KidProblem::TooLong(44),
            },
            "key ring entry #2: key id is 44 bytes long; at most 32 are allowed",
        ),
        (
            format!("prod key:{good}"),
            "k1",
            KeyRingError::InvalidKid {
                entry: 1,
                problem: KidProblem::InvalidCharacter,
            },
            "key ring entry #1: key id contains a character outside [A-Za-z0-9_-]",
        ),
        (
            format!("k1:{}", good.replace('H', "*")),
            "k1",
            KeyRingError::InvalidBase64 { kid: "k1".into() },
            "key 'k1' is not valid standard base64",
        ),
        (
            format!("k1:{}", URL_SAFE_NO_PAD.encode([0xfb; 32])),
            "k1",
            KeyRingError::InvalidBase64 { kid: "k1".into() },
            "key 'k1' is not valid standard base64",
        ),
        (
            format!("k1:{short}"),
            "k1",
            KeyRingError::WrongKeyLength {
                kid: "k1".into(),
                len: 16,
            },
            "key 'k1' decodes to 16 bytes; AES-256 needs exactly 32",
        ),
        (
            format!("k1:{long}"),
            "k1",
            KeyRingError::WrongKeyLength {
                kid: "k1".into(),
                len: 33,
            },
            "key 'k1' decodes to 33 bytes; AES-256 needs exactly 32",
        ),
        (
            format!("k1:{good},k1:{}", key_b64(8)),
            "k1",
            KeyRingError::DuplicateKid { kid: "k1".into() },
            "key id 'k1' appears more than once in the key ring",
        ),
        (
            format!("k1:{good}"),
            "k2",
            KeyRingError::ActiveKidNotFound { kid: "k2".into() },
            "active key id 'k2' is not in the key ring",
        ),
        (
            format!("k1:{good}"),
            "",
            KeyRingError::InvalidActiveKid {
                problem: KidProblem::Empty,
            },
            "active key id is empty",
        ),
    ];
    for (keys, active, expected, message) in cases {
        let err = KeyRing::parse(&keys, active).unwrap_err();
        assert_eq!(err, expected, "keys {keys:?}");
        assert_eq!(err.to_string(), message);
        for material in [&good, &short, &long] {
            assert!(!err.to_string().contains(material.as_str()));
            assert!(!format!("{err:?}").contains(material.as_str()));
        }
    }
}

#[test]
fn swapped_arguments_do_not_echo_the_keys() {
    let keys = format!("k1:{}", key_b64(7));
    let err = KeyRing::parse(&keys, &keys).unwrap_err();
    assert_eq!(
        err,
        KeyRingError::InvalidActiveKid {
            problem: KidProblem::TooLong(47)
        }
    );
    assert!(!format!("{err} {err:?}").contains(&key_b64(7)));
}

#[test]
fn debug_output_shows_key_ids_only() {
    let ring = ring(&[("k1", 0xab), ("k2", 0xcd)], "k2");
    let debug = format!("{ring:?} {ring:#?}");
    assert!(
        debug.contains("\"k1\"") && debug.contains("\"k2\""),
        "{debug}"
    );
    assert!(!debug.contains(&key_b64(0xab)) && !debug.contains(&key_b64(0xcd)));
    // Neither the raw bytes nor the cipher state are printed.
    assert!(!debug.contains("171") && !debug.contains("205"), "{debug}");
    assert!(!debug.contains("material") && !debug.contains("cipher"));
}

#[test]
fn a_key_ring_can_be_shared_across_tasks() {
    fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
    assert_shareable::<KeyRing>();
    assert_shareable::<cos_crypto::Secret>();
}
