//! SQL for the `users` table.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::DbError;
use crate::domain::model::User;

const COLUMNS: &str = "id, username, password_hash, is_admin, disabled, created, updated";

fn from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        password_hash: r.get(2)?,
        is_admin: r.get(3)?,
        disabled: r.get(4)?,
        created: r.get(5)?,
        updated: r.get(6)?,
    })
}

/// Inserts a user; a taken username is a unique violation (see [`super::is_unique_violation`]).
pub fn insert(
    conn: &Connection,
    username: &str,
    password_hash: &str,
    is_admin: bool,
    now: i64,
) -> Result<User, DbError> {
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        username: username.to_string(),
        password_hash: password_hash.to_string(),
        is_admin,
        disabled: false,
        created: now,
        updated: now,
    };
    conn.prepare_cached(&format!(
        "INSERT INTO users ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))?
    .execute(params![
        user.id,
        user.username,
        user.password_hash,
        user.is_admin,
        user.disabled,
        user.created,
        user.updated
    ])?;
    Ok(user)
}

/// Looks a user up by name (case-insensitive).
pub fn find_by_username(conn: &Connection, username: &str) -> Result<Option<User>, DbError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE username = ?1"))?
        .query_row([username], from_row)
        .optional()?)
}

/// Looks a user up by id.
pub fn find_by_id(conn: &Connection, id: &str) -> Result<Option<User>, DbError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

/// A page of users by name, with the total count.
pub fn list(conn: &Connection, offset: u32, limit: u32) -> Result<(Vec<User>, u64), DbError> {
    let total: u64 = conn
        .prepare_cached("SELECT count(*) FROM users")?
        .query_row([], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM users ORDER BY username LIMIT ?1 OFFSET ?2"
    ))?;
    let rows = stmt.query_map(params![limit, offset], from_row)?;
    Ok((rows.collect::<Result<_, _>>()?, total))
}

/// Writes back the mutable fields (admin flag, disabled, password hash).
pub fn update(conn: &Connection, u: &User, now: i64) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE users SET is_admin = ?2, disabled = ?3, password_hash = ?4, updated = ?5 \
             WHERE id = ?1",
        )?
        .execute(params![u.id, u.is_admin, u.disabled, u.password_hash, now])?
        == 1)
}

/// Deletes a user; their devices, tokens and sessions go with them.
pub fn delete(conn: &Connection, id: &str) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached("DELETE FROM users WHERE id = ?1")?
        .execute([id])?
        == 1)
}

/// How many enabled admins exist: the last one cannot be demoted, disabled or deleted.
pub fn count_active_admins(conn: &Connection) -> Result<u64, DbError> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM users WHERE is_admin = 1 AND disabled = 0")?
        .query_row([], |r| r.get(0))?)
}
