//! SQL for the `signing_keys` table.
//!
//! Each algorithm clients use has at most one active key (activated, not retired; a unique
//! index holds it), created the first time a token of that algorithm is signed. Rotation
//! retires an active key and activates a new one in one transaction; a retired key stays
//! published until every token it signed has expired (retired + access token lifetime), so
//! rotation never breaks a live token — unlike a single-key server, where rotating kills every
//! token at once. A key on standby (imported, neither activated nor retired) is published but
//! signs nothing until activated. Revoking deletes the key: tokens it signed stop verifying
//! immediately.

use rusqlite::{params, Connection, OptionalExtension};

use super::DbError;
use crate::oauth::jwt::{Algorithm, PublicKey, SigningKey};

/// A key as listed by `hallpass keys list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// `RS256`, `ES256` or `EdDSA`.
    pub algorithm: String,
    /// Creation time, ms.
    pub created: i64,
    /// When it started signing, ms; `None` for a key on standby.
    pub activated: Option<i64>,
    /// When it stopped signing, ms.
    pub retired: Option<i64>,
}

fn load(algorithm: &str, pkcs8: &[u8]) -> Result<SigningKey, DbError> {
    let alg = Algorithm::parse(algorithm)
        .ok_or_else(|| DbError::Refused(format!("unknown signing algorithm {algorithm:?}")))?;
    SigningKey::from_pkcs8(alg, pkcs8).map_err(DbError::Refused)
}

/// Stores a key; `activated` is `None` for a key on standby.
fn insert(
    conn: &Connection,
    key: &SigningKey,
    pkcs8: &[u8],
    created: i64,
    activated: Option<i64>,
) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created, activated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        key.kid,
        key.algorithm.as_str(),
        pkcs8,
        key.public_key(),
        created,
        activated
    ])?;
    Ok(())
}

/// Retires the active key of `algorithm`, if any; returns its kid.
fn retire_active(
    conn: &Connection,
    algorithm: Algorithm,
    now: i64,
) -> Result<Option<String>, DbError> {
    let kid = active_kid(conn, algorithm)?;
    if let Some(kid) = &kid {
        conn.prepare_cached("UPDATE signing_keys SET retired = ?2 WHERE kid = ?1")?
            .execute(params![kid, now])?;
    }
    Ok(kid)
}

/// The active key of `algorithm`; one is generated and stored if there is none. The key is
/// generated before the write transaction (an RSA key takes 40-400 ms), which then stores
/// it only if no other process stored one meanwhile, so each algorithm gets one key however
/// many servers start, or sign their first token of it, at once.
pub fn active_or_create(
    conn: &mut Connection,
    algorithm: Algorithm,
    now: i64,
) -> Result<SigningKey, DbError> {
    if let Some(key) = active(conn, algorithm)? {
        return Ok(key);
    }
    let (fresh, pkcs8) = SigningKey::generate(algorithm);
    let tx = super::write_tx(conn)?;
    let key = match active(&tx, algorithm)? {
        Some(key) => key,
        None => {
            insert(&tx, &fresh, &pkcs8, now, Some(now))?;
            tracing::info!(kid = %fresh.kid, algorithm = algorithm.as_str(), "created a signing key");
            fresh
        }
    };
    tx.commit()?;
    Ok(key)
}

/// The active key of `algorithm`, if any.
pub fn active(conn: &Connection, algorithm: Algorithm) -> Result<Option<SigningKey>, DbError> {
    let row: Option<(String, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT algorithm, private_key FROM signing_keys WHERE algorithm = ?1 \
             AND activated IS NOT NULL AND retired IS NULL",
        )?
        .query_row([algorithm.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(alg, pkcs8)| load(&alg, &pkcs8)).transpose()
}

/// The kid of the active key of `algorithm`: a cheap check (one seek in the
/// `signing_keys_active` index) of whether a cached signer is still current.
pub fn active_kid(conn: &Connection, algorithm: Algorithm) -> Result<Option<String>, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT kid FROM signing_keys WHERE algorithm = ?1 \
             AND activated IS NOT NULL AND retired IS NULL",
        )?
        .query_row([algorithm.as_str()], |r| r.get(0))
        .optional()?)
}

/// The algorithms that have an active key.
pub fn active_algorithms(conn: &Connection) -> Result<Vec<Algorithm>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT algorithm FROM signing_keys WHERE activated IS NOT NULL AND retired IS NULL",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        if let Some(alg) = Algorithm::parse(&row?) {
            out.push(alg);
        }
    }
    Ok(out)
}

/// Retires active keys and activates new ones, in one transaction: `only` that algorithm's,
/// or (`None`) every algorithm's that has one, and `default`'s in any case, which comes first
/// in the answer. New keys are generated before the transaction starts.
pub fn rotate(
    conn: &mut Connection,
    only: Option<Algorithm>,
    default: Algorithm,
    now: i64,
) -> Result<Vec<SigningKey>, DbError> {
    let mut algorithms = vec![only.unwrap_or(default)];
    if only.is_none() {
        for alg in active_algorithms(conn)? {
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
    }
    let fresh: Vec<(SigningKey, Vec<u8>)> = algorithms
        .iter()
        .map(|&alg| SigningKey::generate(alg))
        .collect();
    let tx = super::write_tx(conn)?;
    let mut keys = Vec::with_capacity(fresh.len());
    for (key, pkcs8) in fresh {
        retire_active(&tx, key.algorithm, now)?;
        // A rotation within the same millisecond must still order after the old key.
        insert(&tx, &key, &pkcs8, now + 1, Some(now + 1))?;
        keys.push(key);
    }
    tx.commit()?;
    Ok(keys)
}

/// What became of an imported key.
#[derive(Debug, PartialEq, Eq)]
pub enum Imported {
    /// Stored and signing; the key it replaced, if any, is retired.
    Active {
        /// The retired key's kid.
        retired: Option<String>,
    },
    /// Stored on standby: published, not signing (see [`activate`]).
    Standby,
    /// A key with this kid (the same public key) is already stored.
    Duplicate,
}

/// Stores an operator's key (already checked, see [`crate::oauth::pem`]): active at once,
/// retiring the active key of its algorithm, or on standby.
pub fn import(
    conn: &mut Connection,
    key: &SigningKey,
    pkcs8: &[u8],
    standby: bool,
    now: i64,
) -> Result<Imported, DbError> {
    let tx = super::write_tx(conn)?;
    let exists = tx
        .prepare_cached("SELECT 1 FROM signing_keys WHERE kid = ?1")?
        .exists([&key.kid])?;
    if exists {
        return Ok(Imported::Duplicate);
    }
    let outcome = if standby {
        insert(&tx, key, pkcs8, now, None)?;
        Imported::Standby
    } else {
        let retired = retire_active(&tx, key.algorithm, now)?;
        insert(&tx, key, pkcs8, now, Some(now + 1))?;
        Imported::Active { retired }
    };
    tx.commit()?;
    Ok(outcome)
}

/// What [`activate`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Activation {
    /// The key signs now; the key of its algorithm that did, if any, is retired.
    Activated {
        /// The key's algorithm.
        algorithm: String,
        /// The retired key's kid.
        retired: Option<String>,
    },
    /// It was already the active key.
    AlreadyActive,
    /// A retired key never signs again (its retirement started its way out of the JWKS).
    Retired,
    /// No such key.
    NotFound,
}

/// Makes a key on standby the active key of its algorithm.
pub fn activate(conn: &mut Connection, kid: &str, now: i64) -> Result<Activation, DbError> {
    let tx = super::write_tx(conn)?;
    let row: Option<(String, Option<i64>, Option<i64>)> = tx
        .prepare_cached("SELECT algorithm, activated, retired FROM signing_keys WHERE kid = ?1")?
        .query_row([kid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let outcome = match row {
        None => Activation::NotFound,
        Some((_, _, Some(_))) => Activation::Retired,
        Some((_, Some(_), None)) => Activation::AlreadyActive,
        Some((alg, None, None)) => {
            let algorithm = Algorithm::parse(&alg)
                .ok_or_else(|| DbError::Refused(format!("unknown signing algorithm {alg:?}")))?;
            let retired = retire_active(&tx, algorithm, now)?;
            tx.prepare_cached("UPDATE signing_keys SET activated = ?2 WHERE kid = ?1")?
                .execute(params![kid, now + 1])?;
            Activation::Activated {
                algorithm: alg,
                retired,
            }
        }
    };
    tx.commit()?;
    Ok(outcome)
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

/// The keys to publish and to verify with: the active keys, keys on standby, and retired keys
/// whose tokens may still be live (retired less than `grace_ms` ago).
pub fn published(conn: &Connection, now: i64, grace_ms: i64) -> Result<Vec<PublicKey>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT kid, algorithm, public_key FROM signing_keys \
         WHERE retired IS NULL OR retired > ?1 ORDER BY activated DESC",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{self, DbOptions};
    use std::sync::{Arc, Barrier};

    fn file_db(dir: &tempfile::TempDir) -> db::Db {
        db::open(
            &dir.path().join("keys.db"),
            &DbOptions {
                pool_size: 4,
                busy_timeout: std::time::Duration::from_secs(10),
                synchronous: crate::config::Synchronous::Normal,
            },
        )
        .unwrap()
    }

    /// Four connections (as four processes would) asking at once for an RSA key where there is
    /// none all get the same one, and one is stored: each generates a key outside the write
    /// transaction, and the transaction stores it only if none was stored meanwhile.
    #[test]
    fn concurrent_first_keys_store_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(file_db(&dir));
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (db, barrier) = (db.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    db.run_sync(|c| active_or_create(c, Algorithm::RS256, db::now_ms()))
                        .unwrap()
                        .kid
                })
            })
            .collect();
        let kids: std::collections::BTreeSet<String> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(kids.len(), 1, "{kids:?}");
        let listed = db.run_sync(|c| list(c)).unwrap();
        assert_eq!(listed.len(), 1);
    }

    #[test]
    fn import_standby_activate_and_publish() {
        let dir = tempfile::tempdir().unwrap();
        let db = file_db(&dir);
        let first = db
            .run_sync(|c| active_or_create(c, Algorithm::EdDSA, 1000))
            .unwrap();
        let (key, pkcs8) = SigningKey::generate(Algorithm::EdDSA);
        let outcome = db
            .run_sync(|c| import(c, &key, &pkcs8, true, 2000))
            .unwrap();
        assert_eq!(outcome, Imported::Standby);
        let again = db
            .run_sync(|c| import(c, &key, &pkcs8, false, 2000))
            .unwrap();
        assert_eq!(again, Imported::Duplicate);
        // Published on standby, but the first key still signs.
        let shown = db.run_sync(|c| published(c, 3000, 1000)).unwrap();
        let kids: Vec<&str> = shown.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, [first.kid.as_str(), key.kid.as_str()]);
        let active_kid = db.run_sync(|c| active_kid(c, Algorithm::EdDSA)).unwrap();
        assert_eq!(active_kid.as_deref(), Some(first.kid.as_str()));
        // Activated: it signs, the first key is retired and stays published for `grace`.
        let done = db.run_sync(|c| activate(c, &key.kid, 4000)).unwrap();
        assert_eq!(
            done,
            Activation::Activated {
                algorithm: "EdDSA".into(),
                retired: Some(first.kid.clone())
            }
        );
        assert_eq!(
            db.run_sync(|c| active(c, Algorithm::EdDSA))
                .unwrap()
                .unwrap()
                .kid,
            key.kid
        );
        assert_eq!(db.run_sync(|c| published(c, 4500, 1000)).unwrap().len(), 2);
        assert_eq!(db.run_sync(|c| published(c, 5001, 1000)).unwrap().len(), 1);
        assert_eq!(
            db.run_sync(|c| activate(c, &key.kid, 6000)).unwrap(),
            Activation::AlreadyActive
        );
        assert_eq!(
            db.run_sync(|c| activate(c, &first.kid, 6000)).unwrap(),
            Activation::Retired
        );
        assert_eq!(
            db.run_sync(|c| activate(c, "nope", 6000)).unwrap(),
            Activation::NotFound
        );
        // Importing as active retires the key it replaces.
        let (third, pkcs8) = SigningKey::generate(Algorithm::EdDSA);
        assert_eq!(
            db.run_sync(|c| import(c, &third, &pkcs8, false, 7000))
                .unwrap(),
            Imported::Active {
                retired: Some(key.kid.clone())
            }
        );
    }

    /// Rotation retires and replaces every algorithm's active key, or one; the default's is
    /// first, and made if it had none.
    #[test]
    fn rotation_per_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let db = file_db(&dir);
        db.run_sync(|c| active_or_create(c, Algorithm::ES256, 0))
            .unwrap();
        let keys = db
            .run_sync(|c| rotate(c, None, Algorithm::EdDSA, 10))
            .unwrap();
        let algs: Vec<Algorithm> = keys.iter().map(|k| k.algorithm).collect();
        assert_eq!(algs, [Algorithm::EdDSA, Algorithm::ES256]);
        let keys = db
            .run_sync(|c| rotate(c, Some(Algorithm::ES256), Algorithm::EdDSA, 20))
            .unwrap();
        assert_eq!(keys.len(), 1);
        let mut active = db.run_sync(|c| active_algorithms(c)).unwrap();
        active.sort_by_key(|a| a.index());
        assert_eq!(active, [Algorithm::ES256, Algorithm::EdDSA]);
        assert_eq!(db.run_sync(|c| list(c)).unwrap().len(), 4);
    }
}
