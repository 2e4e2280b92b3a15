//! The SQL behind [`super::admin`]: the `users`, `devices` and `audit_events` rows, and the
//! reads the administration transactions share (PostgreSQL's side of SQLite's
//! `db::{users,devices,audit}`). Each function takes a connection or a transaction
//! (`GenericClient`) and prepares its statement once per connection.

use deadpool_postgres::GenericClient;

use super::PgError;
use crate::domain::model::{Device, User};

pub use super::rows::{device_from_row, user_from_row, DEVICE_COLUMNS, USER_COLUMNS};

/// How many columns [`DEVICE_COLUMNS`] names.
pub const DEVICE_COLUMN_COUNT: usize = super::rows::DEVICE_WIDTH;

/// A user by id.
pub async fn find_user<C: GenericClient>(client: &C, id: &str) -> Result<Option<User>, PgError> {
    let stmt = client
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .await?;
    match client.query_opt(&stmt, &[&id]).await? {
        Some(r) => Ok(Some(user_from_row(&r, 0)?)),
        None => Ok(None),
    }
}

/// A user by name, case-insensitively as SQLite's `COLLATE NOCASE` (ASCII letters only; the
/// unique index `users_username` is on the same expression).
pub async fn find_user_by_name<C: GenericClient>(
    client: &C,
    username: &str,
) -> Result<Option<User>, PgError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE ascii_fold(username) = ascii_fold($1)"
        ))
        .await?;
    match client.query_opt(&stmt, &[&username]).await? {
        Some(r) => Ok(Some(user_from_row(&r, 0)?)),
        None => Ok(None),
    }
}

/// How many enabled admins exist: the last one cannot be demoted, disabled or deleted.
pub async fn count_active_admins<C: GenericClient>(client: &C) -> Result<i64, PgError> {
    let stmt = client
        .prepare_cached("SELECT count(*) FROM users WHERE is_admin AND NOT disabled")
        .await?;
    Ok(client.query_one(&stmt, &[]).await?.try_get(0)?)
}

/// A device that `owner` may manage: their own, or any when `owner` is `None` (an admin or the
/// command line). Someone else's device is indistinguishable from a missing one. With
/// `lock`, the row is locked until the transaction ends (`FOR UPDATE`).
pub async fn find_managed<C: GenericClient>(
    client: &C,
    id: &str,
    owner: Option<&str>,
    lock: bool,
) -> Result<Option<Device>, PgError> {
    let sql = if lock {
        format!(
            "SELECT {DEVICE_COLUMNS} FROM devices \
             WHERE id = $1 AND ($2::text IS NULL OR user_id = $2) FOR UPDATE"
        )
    } else {
        format!(
            "SELECT {DEVICE_COLUMNS} FROM devices \
             WHERE id = $1 AND ($2::text IS NULL OR user_id = $2)"
        )
    };
    let stmt = client.prepare_cached(&sql).await?;
    match client.query_opt(&stmt, &[&id, &owner]).await? {
        Some(r) => Ok(Some(device_from_row(&r, 0)?)),
        None => Ok(None),
    }
}

/// Appends one audit event. `actor` is a user id, or `None` for the command line. The detail
/// is stored as the text SQLite stores (`serde_json::Value::to_string`).
pub async fn record_audit<C: GenericClient>(
    client: &C,
    now: i64,
    actor: Option<&str>,
    action: &str,
    target_id: &str,
    ip_address: Option<&str>,
    detail: &serde_json::Value,
) -> Result<(), PgError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO audit_events (at, actor, action, target_id, ip_address, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &now,
                &actor,
                &action,
                &target_id,
                &ip_address,
                &detail.to_string(),
            ],
        )
        .await?;
    Ok(())
}

/// Locks or unlocks a device (SQLite's `db::devices::set_locked`): locking leaves a pending
/// device as it is; unlocking goes back to `active` (it has held tokens) or `verified`, and
/// forgets the wrong codes counted.
pub async fn set_locked<C: GenericClient>(
    client: &C,
    id: &str,
    locked: bool,
    now: i64,
) -> Result<(), PgError> {
    let sql = if locked {
        "UPDATE devices SET status = 'locked', updated = $2 WHERE id = $1 AND status <> 'pending'"
    } else {
        "UPDATE devices SET status = CASE WHEN last_login IS NULL THEN 'verified' \
         ELSE 'active' END, failed_auth_attempts = 0, updated = $2 \
         WHERE id = $1 AND status = 'locked'"
    };
    let stmt = client.prepare_cached(sql).await?;
    client.execute(&stmt, &[&id, &now]).await?;
    Ok(())
}
