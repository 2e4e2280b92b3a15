//! SQL for the `signing_keys` table.
//!
//! At most one key is active (activated, not retired). Rotation retires it and activates a new
//! one in one transaction; a retired key stays published until every token it signed has
//! expired (retired + access token lifetime), so rotation never breaks a live token — unlike a
//! single-key server, where rotating kills every token at once. Revoking deletes the key: tokens
//! it signed stop verifying immediately.

use rusqlite::{params, Connection, OptionalExtension};

use super::DbError;
use crate::oauth::jwt::{Algorithm, PublicKey, SigningKey};

/// A key as listed by `hallpass keys list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub algorithm: String,
    /// Creation time, ms.
    pub created: i64,
    /// When it started signing, ms.
    pub activated: Option<i64>,
    /// When it stopped signing, ms.
    pub retired: Option<i64>,
}

fn load(algorithm: &str, pkcs8: &[u8]) -> Result<SigningKey, DbError> {
    let alg = Algorithm::parse(algorithm)
        .ok_or_else(|| DbError::Refused(format!("unknown signing algorithm {algorithm:?}")))?;
    SigningKey::from_pkcs8(alg, pkcs8).map_err(DbError::Refused)
}

fn insert(conn: &Connection, algorithm: Algorithm, now: i64) -> Result<SigningKey, DbError> {
    let (key, pkcs8) = SigningKey::generate(algorithm);
    conn.execute(
        "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created, activated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![key.kid, algorithm.as_str(), pkcs8, key.public_key(), now],
    )?;
    Ok(key)
}

/// The active key; one of `algorithm` is generated and stored if there is none, inside a write
/// transaction so two processes starting at once do not both create one.
pub fn active_or_create(
    conn: &mut Connection,
    algorithm: Algorithm,
    now: i64,
) -> Result<SigningKey, DbError> {
    if let Some(key) = active(conn)? {
        return Ok(key);
    }
    let tx = super::write_tx(conn)?;
    let key = match active(&tx)? {
        Some(key) => key,
        None => insert(&tx, algorithm, now)?,
    };
    tx.commit()?;
    Ok(key)
}

/// The active key, if any.
pub fn active(conn: &Connection) -> Result<Option<SigningKey>, DbError> {
    let row: Option<(String, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT algorithm, private_key FROM signing_keys WHERE activated IS NOT NULL \
             AND retired IS NULL ORDER BY activated DESC LIMIT 1",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(alg, pkcs8)| load(&alg, &pkcs8)).transpose()
}

/// The kid of the active key: a cheap check of whether a cached signer is still current.
pub fn active_kid(conn: &Connection) -> Result<Option<String>, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT kid FROM signing_keys WHERE activated IS NOT NULL AND retired IS NULL \
             ORDER BY activated DESC LIMIT 1",
        )?
        .query_row([], |r| r.get(0))
        .optional()?)
}

/// Retires the active key and activates a new one of `algorithm`.
pub fn rotate(
    conn: &mut Connection,
    algorithm: Algorithm,
    now: i64,
) -> Result<SigningKey, DbError> {
    let tx = super::write_tx(conn)?;
    tx.execute(
        "UPDATE signing_keys SET retired = ?1 WHERE retired IS NULL",
        [now],
    )?;
    // A rotation within the same millisecond must still order after the old key.
    let key = insert(&tx, algorithm, now + 1)?;
    tx.commit()?;
    Ok(key)
}

/// Deletes a key at once; tokens it signed stop verifying. Returns false for an unknown kid.
pub fn revoke(conn: &Connection, kid: &str) -> Result<bool, DbError> {
    Ok(conn.execute("DELETE FROM signing_keys WHERE kid = ?1", [kid])? == 1)
}

/// Every key, newest first.
pub fn list(conn: &Connection) -> Result<Vec<KeyInfo>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT kid, algorithm, created, activated, retired FROM signing_keys \
         ORDER BY created DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(KeyInfo {
            kid: r.get(0)?,
            algorithm: r.get(1)?,
            created: r.get(2)?,
            activated: r.get(3)?,
            retired: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The keys to publish and to verify with: the active key, and retired keys whose tokens may
/// still be live (retired less than `grace_ms` ago).
pub fn published(conn: &Connection, now: i64, grace_ms: i64) -> Result<Vec<PublicKey>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT kid, algorithm, public_key FROM signing_keys WHERE activated IS NOT NULL \
         AND (retired IS NULL OR retired > ?1) ORDER BY activated DESC",
    )?;
    let rows = stmt.query_map([now.saturating_sub(grace_ms)], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
    })?;
    let mut keys = Vec::new();
    for row in rows {
        let (kid, alg, public) = row?;
        if let Some(algorithm) = Algorithm::parse(&alg) {
            keys.push(PublicKey {
                kid,
                algorithm,
                public,
            });
        }
    }
    Ok(keys)
}

/// Deletes retired keys whose every token has expired.
pub fn delete_expired(conn: &Connection, now: i64, grace_ms: i64) -> Result<usize, DbError> {
    Ok(conn.execute(
        "DELETE FROM signing_keys WHERE retired IS NOT NULL AND retired <= ?1",
        [now.saturating_sub(grace_ms)],
    )?)
}
