//! EdDSA (Ed25519) access tokens: signing keys with a `kid`, the claims we put in them, a
//! verifier over a set of public keys (the JWKS), and helpers for opaque secrets.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::principal::{Principal, PrincipalKind};
use crate::roles::Role;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token is signed with an unknown key")]
    UnknownKey,
    #[error("token has expired")]
    Expired,
    #[error("token is invalid: {0}")]
    Invalid(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A public key in RFC 7517 form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

/// An Ed25519 private key and its id.
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn generate(kid: impl Into<String>) -> Result<Self, TokenError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc =
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| TokenError::Signing(e.to_string()))?;
        Self::from_pkcs8(kid, doc.as_ref())
    }

    pub fn from_pkcs8(kid: impl Into<String>, der: &[u8]) -> Result<Self, TokenError> {
        let pair =
            Ed25519KeyPair::from_pkcs8(der).map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok(Self {
            kid: kid.into(),
            pkcs8: der.to_vec(),
            public: pair.public_key().as_ref().to_vec(),
            encoding: EncodingKey::from_ed_der(der),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// PKCS#8 DER of the private key (store it encrypted).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(&self.public),
            kid: self.kid.clone(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }
    }
}

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// User id.
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    pub role: String,
    /// "user" or "api_key".
    pub knd: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scp: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub padm: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub akid: Option<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// Issues access tokens with the current signing key.
pub struct TokenIssuer {
    key: Arc<SigningKey>,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenIssuer {
    pub fn new(key: Arc<SigningKey>, issuer: &str, audience: &str, ttl: Duration) -> Self {
        Self {
            key,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Returns the token and its lifetime in seconds.
    pub fn issue(&self, p: &Principal) -> Result<(String, u32), TokenError> {
        self.issue_for(p, self.ttl)
    }

    pub fn issue_for(&self, p: &Principal, ttl: Duration) -> Result<(String, u32), TokenError> {
        let now = chrono::Utc::now().timestamp();
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 4);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: p.user_id.to_string(),
            tid: p.tenant_id.to_string(),
            role: p.role.as_str().to_owned(),
            knd: match p.kind {
                PrincipalKind::User => "user".into(),
                PrincipalKind::ApiKey => "api_key".into(),
            },
            scp: p.scopes.clone(),
            padm: p.platform_admin,
            sid: p.session_id.map(|s| s.to_string()),
            akid: p.api_key_id.map(|s| s.to_string()),
            iat: now,
            exp: now + secs,
            jti: Uuid::now_v7().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok((token, u32::try_from(secs).unwrap_or(u32::MAX)))
    }
}

/// Public keys by `kid`, shared between the verifier and whatever refreshes it.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Arc<RwLock<HashMap<String, DecodingKey>>>,
}

impl KeySet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole set (a fresh JWKS); keys it no longer lists stop verifying.
    pub fn replace(&self, jwks: &[Jwk]) -> Result<(), TokenError> {
        let mut next = HashMap::new();
        for jwk in jwks {
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                continue;
            }
            let key = DecodingKey::from_ed_components(&jwk.x)
                .map_err(|e| TokenError::Invalid(e.to_string()))?;
            next.insert(jwk.kid.clone(), key);
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Verifies access tokens: EdDSA only, known `kid`, issuer, audience, expiry.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: KeySet,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(keys: KeySet, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self { keys, validation }
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        // decode_header rejects algorithms it doesn't know, which includes "none".
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid("algorithm not allowed".into()));
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let data = {
            let keys = self.keys.keys.read().unwrap_or_else(|p| p.into_inner());
            let key = keys.get(&kid).ok_or(TokenError::UnknownKey)?;
            jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
        }
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid(e.to_string()),
        })?;
        principal_from_claims(&data.claims)
    }
}

fn principal_from_claims(c: &AccessClaims) -> Result<Principal, TokenError> {
    let uuid = |s: &str, what: &str| {
        Uuid::parse_str(s).map_err(|_| TokenError::Invalid(format!("{what} is not a uuid")))
    };
    let kind = match c.knd.as_str() {
        "user" => PrincipalKind::User,
        "api_key" => PrincipalKind::ApiKey,
        _ => return Err(TokenError::Invalid("unknown principal kind".into())),
    };
    let role: Role = c
        .role
        .parse()
        .map_err(|_| TokenError::Invalid("unknown role".into()))?;
    Ok(Principal {
        kind,
        user_id: uuid(&c.sub, "sub")?,
        tenant_id: uuid(&c.tid, "tid")?,
        role,
        api_key_id: c.akid.as_deref().map(|s| uuid(s, "akid")).transpose()?,
        scopes: c.scp.clone(),
        platform_admin: c.padm,
        session_id: c.sid.as_deref().map(|s| uuid(s, "sid")).transpose()?,
    })
}

/// `bytes` random bytes, URL-safe base64 (for refresh tokens and API-key secrets).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The system CSPRNG only fails if the OS has no entropy source at all.
    aws_lc_rs::rand::fill(&mut buf).expect("operating system random number generator failed");
    URL_SAFE_NO_PAD.encode(buf)
}

/// Hex SHA-256 of a high-entropy secret (refresh tokens, API keys): such secrets need no slow
/// hash, only one that can't be reversed and is cheap to look up.
pub fn sha256_hex(secret: &str) -> String {
    use aws_lc_rs::digest::{SHA256, digest};
    digest(&SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            kind: PrincipalKind::User,
            user_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            role: Role::Admin,
            api_key_id: None,
            scopes: vec![],
            platform_admin: false,
            session_id: Some(Uuid::now_v7()),
        }
    }

    fn setup() -> (TokenIssuer, TokenVerifier) {
        let key = Arc::new(SigningKey::generate("k1").unwrap());
        let keys = KeySet::new();
        keys.replace(&[key.jwk()]).unwrap();
        (
            TokenIssuer::new(key, "cos", "cos", Duration::from_secs(60)),
            TokenVerifier::new(keys, "cos", "cos"),
        )
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_principal() {
        let (issuer, verifier) = setup();
        let p = principal();
        let (token, ttl) = issuer.issue(&p).unwrap();
        assert_eq!(ttl, 60);
        assert_eq!(verifier.verify(&token).unwrap(), p);
    }

    #[test]
    fn alg_none_tampered_foreign_and_expired_tokens_are_rejected() {
        let (issuer, verifier) = setup();
        let p = principal();
        let (token, _) = issuer.issue(&p).unwrap();
        let parts: Vec<&str> = token.split('.').collect();

        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        assert!(
            verifier
                .verify(&format!("{none_header}.{}.", parts[1]))
                .is_err()
        );

        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let tampered = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
        assert!(matches!(
            verifier.verify(&tampered),
            Err(TokenError::Invalid(_))
        ));

        // Same kid, another key.
        let other = TokenIssuer::new(
            Arc::new(SigningKey::generate("k1").unwrap()),
            "cos",
            "cos",
            Duration::from_secs(60),
        );
        assert!(verifier.verify(&other.issue(&p).unwrap().0).is_err());
        // Unknown kid.
        let stranger = TokenIssuer::new(
            Arc::new(SigningKey::generate("k2").unwrap()),
            "cos",
            "cos",
            Duration::from_secs(60),
        );
        assert!(matches!(
            verifier.verify(&stranger.issue(&p).unwrap().0),
            Err(TokenError::UnknownKey)
        ));

        let (fresh, _) = issuer.issue(&p).unwrap();
        let mut claims = jsonwebtoken::dangerous::insecure_decode::<AccessClaims>(&fresh)
            .unwrap()
            .claims;
        claims.exp = chrono::Utc::now().timestamp() - 60;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        let expired = jsonwebtoken::encode(&header, &claims, &issuer.key.encoding).unwrap();
        assert!(matches!(
            verifier.verify(&expired),
            Err(TokenError::Expired)
        ));
    }

    #[test]
    fn keys_round_trip_through_pkcs8() {
        let key = SigningKey::generate("k9").unwrap();
        let again = SigningKey::from_pkcs8("k9", key.pkcs8()).unwrap();
        assert_eq!(key.jwk(), again.jwk());
    }
}
