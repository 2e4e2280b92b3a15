//! SQL for the `signing_keys` table on PostgreSQL: the same keys, sealing and life cycle as
//! SQLite's (src/store/sqlite/db/signing_keys.rs, whose comment tells the rules): one active
//! key per algorithm (the unique partial index `signing_keys_active`), retired keys published
//! for a grace period, keys on standby published but not signing, revocation deleting.
//!
//! Each function takes a connection or a transaction (`GenericClient`). Private keys are opened
//! with the [`Sealer`] here and never leave as text.

use deadpool_postgres::GenericClient;

use super::PgError;
use crate::domain::model::KeyInfo;
use crate::protocol::jwt::{Algorithm, PublicKey, SigningKey};
use crate::sealing::{self, Sealer};

/// Opens a stored private key and checks it is the key its row names.
pub fn load(
    sealer: &Sealer,
    kid: &str,
    algorithm: &str,
    stored: &[u8],
) -> Result<SigningKey, PgError> {
    let alg = Algorithm::parse(algorithm)
        .ok_or_else(|| PgError::Refused(format!("unknown signing algorithm {algorithm:?}")))?;
    let pkcs8 = sealer
        .open(kid, algorithm, stored)
        .map_err(|e| PgError::Refused(e.to_string()))?;
    let key = SigningKey::from_pkcs8(alg, &pkcs8).map_err(PgError::Refused)?;
    if key.kid != kid {
        return Err(PgError::Refused(format!(
            "signing key {kid}: its private key belongs to another key ({})",
            key.kid
        )));
    }
    Ok(key)
}

/// A key ready to store: everything the row holds, sealed already (sealing is done once,
/// outside a transaction body that may run more than once).
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub kid: String,
    pub algorithm: Algorithm,
    pub private_key: Vec<u8>,
    pub public_key: Vec<u8>,
}

impl KeyRow {
    /// `key` sealed with `sealer`'s first secret when one is configured.
    pub fn new(sealer: &Sealer, key: &SigningKey, pkcs8: &[u8]) -> KeyRow {
        KeyRow {
            kid: key.kid.clone(),
            algorithm: key.algorithm,
            private_key: sealer.seal(&key.kid, key.algorithm.as_str(), pkcs8),
            public_key: key.public_key(),
        }
    }
}

/// Stores a key; `activated` is `None` for a key on standby.
pub async fn insert<C: GenericClient>(
    client: &C,
    row: &KeyRow,
    created: i64,
    activated: Option<i64>,
) -> Result<(), PgError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created, \
             activated) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &row.kid,
                &row.algorithm.as_str(),
                &row.private_key,
                &row.public_key,
                &created,
                &activated,
            ],
        )
        .await?;
    Ok(())
}

/// Stores `row` as the active key of its algorithm unless the algorithm has one: true when it
/// was stored. Of several instances storing their first key at once, one wins; the others wait
/// on the unique index `signing_keys_active` until the winner commits, then store nothing (the
/// index is the arbiter of `ON CONFLICT`, so the loss is no error and the transaction goes on).
pub async fn insert_first<C: GenericClient>(
    client: &C,
    row: &KeyRow,
    now: i64,
) -> Result<bool, PgError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created, \
             activated) VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (algorithm) WHERE activated IS NOT NULL AND retired IS NULL \
             DO NOTHING",
        )
        .await?;
    let n = client
        .execute(
            &stmt,
            &[
                &row.kid,
                &row.algorithm.as_str(),
                &row.private_key,
                &row.public_key,
                &now,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Retires the active key of `algorithm`, if any; returns its kid.
pub async fn retire_active<C: GenericClient>(
    client: &C,
    algorithm: Algorithm,
    now: i64,
) -> Result<Option<String>, PgError> {
    let stmt = client
        .prepare_cached(
            "UPDATE signing_keys SET retired = $2 WHERE algorithm = $1 \
             AND activated IS NOT NULL AND retired IS NULL RETURNING kid",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&algorithm.as_str(), &now])
        .await?
        .map(|r| r.get(0)))
}

/// The active key of `algorithm`, if any, opened with `sealer`.
pub async fn active<C: GenericClient>(
    client: &C,
    sealer: &Sealer,
    algorithm: Algorithm,
) -> Result<Option<SigningKey>, PgError> {
    let stmt = client
        .prepare_cached(
            "SELECT kid, algorithm, private_key FROM signing_keys WHERE algorithm = $1 \
             AND activated IS NOT NULL AND retired IS NULL",
        )
        .await?;
    match client.query_opt(&stmt, &[&algorithm.as_str()]).await? {
        Some(r) => {
            let (kid, alg, stored): (String, String, Vec<u8>) = (r.get(0), r.get(1), r.get(2));
            load(sealer, &kid, &alg, &stored).map(Some)
        }
        None => Ok(None),
    }
}

/// The active keys' ids by algorithm (at most one per algorithm): read beside a grant's other
/// statements, before its client's algorithm is known.
pub async fn active_kids<C: GenericClient>(
    client: &C,
) -> Result<Vec<(Algorithm, String)>, PgError> {
    let stmt = client
        .prepare_cached(
            "SELECT algorithm, kid FROM signing_keys \
             WHERE activated IS NOT NULL AND retired IS NULL",
        )
        .await?;
    Ok(client
        .query(&stmt, &[])
        .await?
        .iter()
        .filter_map(|r| Some((Algorithm::parse(r.get(0))?, r.get(1))))
        .collect())
}

/// Every stored key: kid, algorithm and the stored private key, newest first.
pub async fn all_private<C: GenericClient>(
    client: &C,
) -> Result<Vec<(String, String, Vec<u8>)>, PgError> {
    let stmt = client
        .prepare_cached(
            "SELECT kid, algorithm, private_key FROM signing_keys ORDER BY created DESC, kid",
        )
        .await?;
    Ok(client
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Checks that every stored key opens with `sealer`; refuses naming the first that does not.
/// Answers how many are stored unsealed.
pub async fn check_sealing<C: GenericClient>(
    client: &C,
    sealer: &Sealer,
) -> Result<usize, PgError> {
    let mut plain = 0;
    for (kid, alg, stored) in all_private(client).await? {
        load(sealer, &kid, &alg, &stored)?;
        if !sealing::is_sealed(&stored) {
            plain += 1;
        }
    }
    Ok(plain)
}

/// The algorithms that have an active key.
pub async fn active_algorithms<C: GenericClient>(client: &C) -> Result<Vec<Algorithm>, PgError> {
    Ok(active_kids(client)
        .await?
        .into_iter()
        .map(|(a, _)| a)
        .collect())
}

/// Every key, newest first.
pub async fn list<C: GenericClient>(client: &C) -> Result<Vec<KeyInfo>, PgError> {
    let stmt = client
        .prepare_cached(
            "SELECT kid, algorithm, created, activated, retired, \
             substring(private_key FROM 1 FOR $1) = $2 \
             FROM signing_keys ORDER BY created DESC, kid",
        )
        .await?;
    let prefix = sealing::SEALED_PREFIX;
    let len = prefix.len() as i32;
    Ok(client
        .query(&stmt, &[&len, &prefix])
        .await?
        .iter()
        .map(|r| KeyInfo {
            kid: r.get(0),
            algorithm: r.get(1),
            created: r.get(2),
            activated: r.get(3),
            retired: r.get(4),
            sealed: r.get(5),
        })
        .collect())
}

/// The keys to publish and to verify with: the active keys, keys on standby, and retired keys
/// whose tokens may still be live (retired less than `grace_ms` ago). Active and retired keys
/// first, newest activation first, then those on standby (SQLite sorts NULL last in DESC).
pub async fn published<C: GenericClient>(
    client: &C,
    now: i64,
    grace_ms: i64,
) -> Result<Vec<PublicKey>, PgError> {
    let stmt = client
        .prepare_cached(
            "SELECT kid, algorithm, public_key FROM signing_keys \
             WHERE retired IS NULL OR retired > $1 ORDER BY activated DESC NULLS LAST, kid",
        )
        .await?;
    Ok(client
        .query(&stmt, &[&now.saturating_sub(grace_ms)])
        .await?
        .iter()
        .filter_map(|r| {
            Some(PublicKey {
                kid: r.get(0),
                algorithm: Algorithm::parse(r.get(1))?,
                public: r.get(2),
            })
        })
        .collect())
}
