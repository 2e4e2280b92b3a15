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
//!
//! `private_key` holds the PKCS#8 document, sealed with the operator's secret when one is
//! configured (see [`crate::sealing`]: a sealed value is told apart by its prefix, so plain rows
//! from before still load). Every function that reads or stores a private key takes the
//! [`Sealer`].

use rusqlite::{params, Connection, OptionalExtension};

use super::DbError;
use crate::domain::model::{Activation, Imported, KeyInfo, Resealed};
use crate::protocol::jwt::{Algorithm, PublicKey, SigningKey};
use crate::sealing::{self, Sealer};

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

/// Stores a key, sealed with `sealer`'s first secret when one is configured; `activated` is
/// `None` for a key on standby.
fn insert(
    conn: &Connection,
    sealer: &Sealer,
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
        sealer.seal(&key.kid, key.algorithm.as_str(), pkcs8),
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
/// many servers start, or sign their first token of it, at once. Before storing one, every
/// stored key must open with `sealer` (see [`check_sealing`]): a server started with the wrong
/// secret must not put a key sealed with it beside the others.
pub fn active_or_create(
    conn: &mut Connection,
    sealer: &Sealer,
    algorithm: Algorithm,
    now: i64,
) -> Result<SigningKey, DbError> {
    if let Some(key) = active(conn, sealer, algorithm)? {
        return Ok(key);
    }
    let (fresh, pkcs8) = SigningKey::generate(algorithm);
    let tx = super::write_tx(conn)?;
    let key = match active(&tx, sealer, algorithm)? {
        Some(key) => key,
        None => {
            check_sealing(&tx, sealer)?;
            insert(&tx, sealer, &fresh, &pkcs8, now, Some(now))?;
            tracing::info!(kid = %fresh.kid, algorithm = algorithm.as_str(), "created a signing key");
            fresh
        }
    };
    tx.commit()?;
    Ok(key)
}

/// The active key of `algorithm`, if any, opened with `sealer`.
pub fn active(
    conn: &Connection,
    sealer: &Sealer,
    algorithm: Algorithm,
) -> Result<Option<SigningKey>, DbError> {
    let row: Option<(String, String, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT kid, algorithm, private_key FROM signing_keys WHERE algorithm = ?1 \
             AND activated IS NOT NULL AND retired IS NULL",
        )?
        .query_row([algorithm.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
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
    sealer: &Sealer,
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
    // The new keys are sealed like the others: never one under a wrong secret beside them.
    check_sealing(&tx, sealer)?;
    let mut keys = Vec::with_capacity(fresh.len());
    for (key, pkcs8) in fresh {
        retire_active(&tx, key.algorithm, now)?;
        // A rotation within the same millisecond must still order after the old key.
        insert(&tx, sealer, &key, &pkcs8, now + 1, Some(now + 1))?;
        keys.push(key);
    }
    tx.commit()?;
    Ok(keys)
}

/// Stores an operator's key (already checked, see [`crate::protocol::pem`]): active at once,
/// retiring the active key of its algorithm, or on standby.
pub fn import(
    conn: &mut Connection,
    sealer: &Sealer,
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
    check_sealing(&tx, sealer)?;
    let outcome = if standby {
        insert(&tx, sealer, key, pkcs8, now, None)?;
        Imported::Standby
    } else {
        let retired = retire_active(&tx, key.algorithm, now)?;
        insert(&tx, sealer, key, pkcs8, now, Some(now + 1))?;
        Imported::Active { retired }
    };
    tx.commit()?;
    Ok(outcome)
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
    use crate::store::sqlite::db::{self, DbOptions};
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
                    db.run_sync(|c| {
                        active_or_create(
                            c,
                            &Sealer::none(),
                            Algorithm::RS256,
                            crate::clock::now_ms(),
                        )
                    })
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
            .run_sync(|c| active_or_create(c, &Sealer::none(), Algorithm::EdDSA, 1000))
            .unwrap();
        let (key, pkcs8) = SigningKey::generate(Algorithm::EdDSA);
        let outcome = db
            .run_sync(|c| import(c, &Sealer::none(), &key, &pkcs8, true, 2000))
            .unwrap();
        assert_eq!(outcome, Imported::Standby);
        let again = db
            .run_sync(|c| import(c, &Sealer::none(), &key, &pkcs8, false, 2000))
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
            db.run_sync(|c| active(c, &Sealer::none(), Algorithm::EdDSA))
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
            db.run_sync(|c| import(c, &Sealer::none(), &third, &pkcs8, false, 7000))
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
        db.run_sync(|c| active_or_create(c, &Sealer::none(), Algorithm::ES256, 0))
            .unwrap();
        let keys = db
            .run_sync(|c| rotate(c, &Sealer::none(), None, Algorithm::EdDSA, 10))
            .unwrap();
        let algs: Vec<Algorithm> = keys.iter().map(|k| k.algorithm).collect();
        assert_eq!(algs, [Algorithm::EdDSA, Algorithm::ES256]);
        let keys = db
            .run_sync(|c| {
                rotate(
                    c,
                    &Sealer::none(),
                    Some(Algorithm::ES256),
                    Algorithm::EdDSA,
                    20,
                )
            })
            .unwrap();
        assert_eq!(keys.len(), 1);
        let mut active = db.run_sync(|c| active_algorithms(c)).unwrap();
        active.sort_by_key(|a| a.index());
        assert_eq!(active, [Algorithm::ES256, Algorithm::EdDSA]);
        assert_eq!(db.run_sync(|c| list(c)).unwrap().len(), 4);
    }
}
