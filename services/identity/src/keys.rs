//! Access-token signing keys: kept in `identity.signing_keys`, private halves encrypted with the
//! key ring. The first replica to start creates one; every replica loads the newest as active and
//! publishes every unretired public key in the JWKS (so tokens signed before a rotation verify).

use std::sync::Arc;

use cos_auth::{Jwk, SigningKey};
use cos_crypto::KeyRing;
use cos_db::Db;
use sqlx::Row;

/// The active key and the public keys to publish.
pub struct SigningKeys {
    pub active: Arc<SigningKey>,
    pub published: Vec<Jwk>,
}

fn aad(kid: &str) -> Vec<u8> {
    format!("identity.signing_keys:{kid}").into_bytes()
}

pub async fn load_or_create(db: &Db, ring: &KeyRing) -> anyhow::Result<SigningKeys> {
    let mut tx = db.system_tx("load access-token signing keys").await?;
    // Two replicas starting together must not both create a first key.
    sqlx::query("SELECT pg_advisory_xact_lock(7263002)")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "SELECT kid, private_key_enc FROM identity.signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, kid DESC",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut keys = Vec::with_capacity(rows.len().max(1));
    for row in rows {
        let kid: String = row.try_get("kid")?;
        let enc: Vec<u8> = row.try_get("private_key_enc")?;
        let der = ring.decrypt(&enc, &aad(&kid)).map_err(|e| {
            anyhow::anyhow!("cannot decrypt signing key {kid} (is the key ring complete?): {e}")
        })?;
        keys.push(SigningKey::from_pkcs8(kid, &der)?);
    }
    if keys.is_empty() {
        let kid = format!("k{}", uuid::Uuid::now_v7().simple());
        let key = SigningKey::generate(kid.clone())?;
        sqlx::query("INSERT INTO identity.signing_keys (kid, private_key_enc, public_x) VALUES ($1, $2, $3)")
            .bind(&kid)
            .bind(ring.encrypt(key.pkcs8(), &aad(&kid)))
            .bind(&key.jwk().x)
            .execute(&mut *tx)
            .await?;
        tracing::info!(kid = %kid, "created access-token signing key");
        keys.push(key);
    }
    tx.commit().await?;
    let published = keys.iter().map(|k| k.jwk()).collect();
    let active = Arc::new(keys.swap_remove(0));
    Ok(SigningKeys { active, published })
}

/// Adds a new signing key and makes it active for replicas that start after it; older keys stay
/// published until retired, so tokens they signed keep verifying until they expire.
pub async fn rotate(db: &Db, ring: &KeyRing) -> anyhow::Result<String> {
    let kid = format!("k{}", uuid::Uuid::now_v7().simple());
    let key = SigningKey::generate(kid.clone())?;
    let mut tx = db.system_tx("rotate access-token signing key").await?;
    sqlx::query(
        "INSERT INTO identity.signing_keys (kid, private_key_enc, public_x) VALUES ($1, $2, $3)",
    )
    .bind(&kid)
    .bind(ring.encrypt(key.pkcs8(), &aad(&kid)))
    .bind(&key.jwk().x)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(kid)
}

/// Re-encrypts every stored private key under the key ring's active key id.
pub async fn reencrypt_all(db: &Db, ring: &KeyRing) -> anyhow::Result<usize> {
    let mut tx = db.system_tx("re-encrypt signing keys").await?;
    let rows = sqlx::query("SELECT kid, private_key_enc FROM identity.signing_keys FOR UPDATE")
        .fetch_all(&mut *tx)
        .await?;
    let mut changed = 0;
    for row in rows {
        let kid: String = row.try_get("kid")?;
        let enc: Vec<u8> = row.try_get("private_key_enc")?;
        if ring.needs_rotation(&enc) {
            let fresh = ring
                .reencrypt(&enc, &aad(&kid))
                .map_err(|e| anyhow::anyhow!("signing key {kid}: {e}"))?;
            sqlx::query("UPDATE identity.signing_keys SET private_key_enc = $2 WHERE kid = $1")
                .bind(&kid)
                .bind(fresh)
                .execute(&mut *tx)
                .await?;
            changed += 1;
        }
    }
    tx.commit().await?;
    Ok(changed)
}
