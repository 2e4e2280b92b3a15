//! SQL for the `refresh_tokens` table. Only hashes are stored.

use rusqlite::{params, Connection};

use super::DbError;

/// A refresh token row as written at issue time.
#[derive(Debug, Clone)]
pub struct NewRefreshToken<'a> {
    /// SHA-256 of the token.
    pub token_hash: &'a [u8],
    /// The device the token belongs to; removing the device removes the token.
    pub device_id: &'a str,
    /// Rotation family: reuse of any used member revokes the whole family.
    pub family: &'a str,
    /// Granted scope.
    pub scope: &'a str,
    /// Issue time, ms.
    pub created_at: i64,
    /// Expiry, ms; never after the device's own expiry.
    pub expires_at: i64,
}

/// Inserts a refresh token.
pub fn insert(conn: &Connection, t: &NewRefreshToken<'_>) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO refresh_tokens (token_hash, device_id, family, scope, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        t.token_hash,
        t.device_id,
        t.family,
        t.scope,
        t.created_at,
        t.expires_at
    ])?;
    Ok(())
}

/// Deletes expired refresh tokens in one batch of at most `limit` rows.
pub fn delete_expired(conn: &Connection, now: i64, limit: u32) -> Result<usize, DbError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM refresh_tokens WHERE rowid IN \
             (SELECT rowid FROM refresh_tokens WHERE expires_at <= ?1 LIMIT ?2)",
        )?
        .execute(params![now, limit])?)
}
