//! SQL for the `sessions` table: browser sign-in sessions. Only the SHA-256 of a session id is
//! stored, so a copy of the database does not sign anyone in; the CSRF token bound to the
//! session is useless without the session cookie.

use rusqlite::{params, Connection, OptionalExtension};

use super::users;
use super::DbError;
use crate::domain::model::Session;

/// Stores a new session.
pub fn insert(
    conn: &Connection,
    id_hash: &[u8],
    user_id: &str,
    csrf_token: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id_hash, user_id, csrf_token, now, expires_at])?;
    Ok(())
}

/// The live session with this id hash, if its user is still enabled.
pub fn find(conn: &Connection, id_hash: &[u8], now: i64) -> Result<Option<Session>, DbError> {
    let found: Option<(String, String, i64)> = conn
        .prepare_cached(
            "SELECT user_id, csrf_token, expires_at FROM sessions \
             WHERE id_hash = ?1 AND expires_at > ?2",
        )?
        .query_row(params![id_hash, now], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((user_id, csrf_token, expires_at)) = found else {
        return Ok(None);
    };
    Ok(users::find_by_id(conn, &user_id)?
        .filter(|u| !u.disabled)
        .map(|user| Session {
            id_hash: id_hash.to_vec(),
            user,
            csrf_token,
            expires_at,
        }))
}

/// Ends a session (sign-out).
pub fn delete(conn: &Connection, id_hash: &[u8]) -> Result<(), DbError> {
    conn.prepare_cached("DELETE FROM sessions WHERE id_hash = ?1")?
        .execute([id_hash])?;
    Ok(())
}

/// Ends every session of a user (password change, disabling).
pub fn delete_for_user(conn: &Connection, user_id: &str) -> Result<usize, DbError> {
    Ok(conn
        .prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
        .execute([user_id])?)
}

/// Deletes expired sessions in one batch of at most `limit` rows.
pub fn delete_expired(conn: &Connection, now: i64, limit: u32) -> Result<usize, DbError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM sessions WHERE rowid IN \
             (SELECT rowid FROM sessions WHERE expires_at <= ?1 LIMIT ?2)",
        )?
        .execute(params![now, limit])?)
}
