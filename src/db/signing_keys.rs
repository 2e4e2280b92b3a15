//! SQL for the `signing_keys` table.

use rusqlite::{params, Connection, OptionalExtension};

use super::DbError;
use crate::oauth::jwt::SigningKey;

/// The newest active, unretired key; one is generated and stored if there is none, inside the
/// caller's transaction so two processes starting at once do not both create one.
pub fn active_or_create(conn: &mut Connection, now: i64) -> Result<SigningKey, DbError> {
    let tx = super::write_tx(conn)?;
    let stored: Option<Vec<u8>> = tx
        .query_row(
            "SELECT private_key FROM signing_keys WHERE activated IS NOT NULL \
             AND retired IS NULL ORDER BY activated DESC, created DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let key = match stored {
        Some(pkcs8) => SigningKey::from_pkcs8(&pkcs8).map_err(DbError::Refused)?,
        None => {
            let (key, pkcs8) = SigningKey::generate();
            tx.execute(
                "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created, activated) \
                 VALUES (?1, 'EdDSA', ?2, ?3, ?4, ?4)",
                params![key.kid, pkcs8, key.public_key(), now],
            )?;
            key
        }
    };
    tx.commit()?;
    Ok(key)
}

/// The public keys to publish: the active key and retired ones still in their grace period.
pub fn published(conn: &Connection) -> Result<Vec<(String, Vec<u8>)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT kid, public_key FROM signing_keys WHERE activated IS NOT NULL \
         ORDER BY activated DESC",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
