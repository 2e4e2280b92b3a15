//! SQL for the `signing_keys` table.
//!
//! At most one key is active (activated, not retired). Rotation retires it and activates a new
//! one in one transaction; a retired key stays published until every token it signed has
//! expired (retired + access token lifetime), so rotation never breaks a live token — unlike a
//! single-key server, where rotating kills every token at once. Revoking deletes the key: tokens
//! it signed stop verifying immediately.
//!
//! `private_key` holds the PKCS#8 document, sealed with the operator's secret when one is
//! configured (see [`crate::sealing`]: a sealed value is told apart by its prefix, so plain rows
//! from before still load). Every function that reads or stores a private key takes the
//! [`Sealer`].

use rusqlite::{params, Connection, OptionalExtension};

use super::DbError;
use crate::oauth::jwt::{Algorithm, PublicKey, SigningKey};
use crate::sealing::{self, Sealer};

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
    /// Whether its private key is sealed (see [`crate::sealing`]).
    pub sealed: bool,
}

fn load(sealer: &Sealer, kid: &str, algorithm: &str, stored: &[u8]) -> Result<SigningKey, DbError> {
    let alg = Algorithm::parse(algorithm)
        .ok_or_else(|| DbError::Refused(format!("unknown signing algorithm {algorithm:?}")))?;
    let pkcs8 = sealer
        .open(kid, algorithm, stored)
        .map_err(|e| DbError::Refused(e.to_string()))?;
    let key = SigningKey::from_pkcs8(alg, &pkcs8).map_err(DbError::Refused)?;
    if key.kid != kid {
        return Err(DbError::Refused(format!(
            "signing key {kid}: its private key belongs to another key ({})",
            key.kid
        )));
    }
    Ok(key)
}

fn insert(
    conn: &Connection,
    sealer: &Sealer,
    algorithm: Algorithm,
    now: i64,
) -> Result<SigningKey, DbError> {
    let (key, pkcs8) = SigningKey::generate(algorithm);
    let stored = sealer.seal(&key.kid, algorithm.as_str(), &pkcs8);
    conn.execute(
        "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created, activated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![key.kid, algorithm.as_str(), stored, key.public_key(), now],
    )?;
    Ok(key)
}

/// The active key; one of `algorithm` is generated and stored if there is none, inside a write
/// transaction so two processes starting at once do not both create one. Before creating one,
/// every stored key must open with `sealer` (see [`check_sealing`]): a server started with the
/// wrong secret must not put a key sealed with it beside the others.
pub fn active_or_create(
    conn: &mut Connection,
    sealer: &Sealer,
    algorithm: Algorithm,
    now: i64,
) -> Result<SigningKey, DbError> {
    if let Some(key) = active(conn, sealer)? {
        return Ok(key);
    }
    let tx = super::write_tx(conn)?;
    let key = match active(&tx, sealer)? {
        Some(key) => key,
        None => {
            check_sealing(&tx, sealer)?;
            insert(&tx, sealer, algorithm, now)?
        }
    };
    tx.commit()?;
    Ok(key)
}

/// The active key, if any, opened with `sealer`.
pub fn active(conn: &Connection, sealer: &Sealer) -> Result<Option<SigningKey>, DbError> {
    let row: Option<(String, String, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT kid, algorithm, private_key FROM signing_keys WHERE activated IS NOT NULL \
             AND retired IS NULL ORDER BY activated DESC LIMIT 1",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    row.map(|(kid, alg, stored)| load(sealer, &kid, &alg, &stored))
        .transpose()
}

/// Every stored key: kid, algorithm and the stored private key.
fn all_private(conn: &Connection) -> Result<Vec<(String, String, Vec<u8>)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT kid, algorithm, private_key FROM signing_keys ORDER BY created DESC",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Checks that every stored key opens with `sealer` (plain keys always do); refuses naming
/// the first that does not. The server checks this at start-up, so a wrong or missing secret
/// stops it before it signs anything or creates a key.
pub fn check_sealing(conn: &Connection, sealer: &Sealer) -> Result<(), DbError> {
    for (kid, alg, stored) in all_private(conn)? {
        load(sealer, &kid, &alg, &stored)?;
    }
    Ok(())
}

/// What [`reseal`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Resealed {
    /// Keys sealed anew with the first secret (plain ones, and ones sealed with an older one).
    pub resealed: Vec<String>,
    /// Keys already sealed with the first secret, left as they were.
    pub unchanged: Vec<String>,
}

/// Seals every stored key with `sealer`'s first secret, in one transaction: plain keys (from
/// before a secret was configured) and keys sealed with an older secret. Refuses, changing
/// nothing, if any key does not open, or if no secret is configured.
pub fn reseal(conn: &mut Connection, sealer: &Sealer) -> Result<Resealed, DbError> {
    if !sealer.is_configured() {
        return Err(DbError::Refused(
            "no sealing secret is configured (keys.sealing_secrets_file)".into(),
        ));
    }
    let tx = super::write_tx(conn)?;
    let mut done = Resealed::default();
    for (kid, alg, stored) in all_private(&tx)? {
        // Every key is opened (and parsed) first: a damaged row is reported, not skipped.
        load(sealer, &kid, &alg, &stored)?;
        if sealer.sealed_with_first(&stored) {
            done.unchanged.push(kid);
            continue;
        }
        let pkcs8 = sealer
            .open(&kid, &alg, &stored)
            .map_err(|e| DbError::Refused(e.to_string()))?;
        tx.execute(
            "UPDATE signing_keys SET private_key = ?1 WHERE kid = ?2",
            params![sealer.seal(&kid, &alg, &pkcs8), kid],
        )?;
        done.resealed.push(kid);
    }
    tx.commit()?;
    Ok(done)
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
    sealer: &Sealer,
    algorithm: Algorithm,
    now: i64,
) -> Result<SigningKey, DbError> {
    let tx = super::write_tx(conn)?;
    // The new key is sealed like the others: never one under a wrong secret beside them.
    check_sealing(&tx, sealer)?;
    tx.execute(
        "UPDATE signing_keys SET retired = ?1 WHERE retired IS NULL",
        [now],
    )?;
    // A rotation within the same millisecond must still order after the old key.
    let key = insert(&tx, sealer, algorithm, now + 1)?;
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
        "SELECT kid, algorithm, created, activated, retired, substr(private_key, 1, ?1) = ?2 \
         FROM signing_keys ORDER BY created DESC",
    )?;
    let prefix = sealing::SEALED_PREFIX;
    let rows = stmt.query_map(params![prefix.len() as i64, prefix], |r| {
        Ok(KeyInfo {
            kid: r.get(0)?,
            algorithm: r.get(1)?,
            created: r.get(2)?,
            activated: r.get(3)?,
            retired: r.get(4)?,
            sealed: r.get(5)?,
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
