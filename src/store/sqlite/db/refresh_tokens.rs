//! SQL for the `refresh_tokens` table. Only hashes are stored.

use rusqlite::{params, Connection};

use super::DbError;
use crate::domain::model::RefreshToken;

/// A refresh token row as written at issue time.
#[derive(Debug, Clone)]
pub struct NewRefreshToken<'a> {
    /// The token's key ([`crate::secrets::token_key`]: issue time, then SHA-256).
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

/// Looks a token up by hash, whatever its state.
pub fn find(conn: &Connection, hash: &[u8]) -> Result<Option<RefreshToken>, DbError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached(
            "SELECT device_id, family, scope, created_at, expires_at, used_at, revoked_at \
             FROM refresh_tokens WHERE token_hash = ?1",
        )?
        .query_row([hash], |r| {
            Ok(RefreshToken {
                device_id: r.get(0)?,
                family: r.get(1)?,
                scope: r.get(2)?,
                created_at: r.get(3)?,
                expires_at: r.get(4)?,
                used_at: r.get(5)?,
                revoked_at: r.get(6)?,
            })
        })
        .optional()?)
}

/// Marks a token used by a rotation; false if it already was.
pub fn mark_used(conn: &Connection, hash: &[u8], now: i64) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1 AND used_at IS NULL",
        )?
        .execute(params![hash, now])?
        == 1)
}

/// A family's tokens are all one device's; the schema has no index on family (schema.sql).
pub(super) const REVOKE_FAMILY: &str = "UPDATE refresh_tokens SET revoked_at = ?3 \
     WHERE device_id = ?1 AND family = ?2 AND revoked_at IS NULL";

/// Revokes every live token of `device_id`'s `family`; returns how many.
pub fn revoke_family(
    conn: &Connection,
    device_id: &str,
    family: &str,
    now: i64,
) -> Result<usize, DbError> {
    Ok(conn
        .prepare_cached(REVOKE_FAMILY)?
        .execute(params![device_id, family, now])?)
}

/// Records a revoked access token by its JWT id until it would have expired.
pub fn revoke_access_token(conn: &Connection, jti: &str, expires_at: i64) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO revoked_access_tokens (jti, expires_at) VALUES (?1, ?2)",
    )?
    .execute(params![jti, expires_at])?;
    Ok(())
}

/// Whether the device's grant was revoked (RFC 7009 revocation of its refresh token, or reuse
/// detection). Revocation always covers a whole family, and a device has one family, so one
/// revoked row of the device says it; its access tokens are then inactive too (RFC 7009 §2.1).
pub fn grant_revoked(conn: &Connection, device_id: &str) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM refresh_tokens WHERE device_id = ?1 AND revoked_at IS NOT NULL LIMIT 1",
        )?
        .exists([device_id])?)
}

/// Whether an access token was revoked.
pub fn is_access_token_revoked(conn: &Connection, jti: &str) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM revoked_access_tokens WHERE jti = ?1")?
        .exists([jti])?)
}

/// Deletes revocation records of access tokens that have expired anyway.
pub fn delete_expired_revocations(
    conn: &Connection,
    now: i64,
    limit: u32,
) -> Result<usize, DbError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM revoked_access_tokens WHERE rowid IN \
             (SELECT rowid FROM revoked_access_tokens WHERE expires_at <= ?1 LIMIT ?2)",
        )?
        .execute(params![now, limit])?)
}
