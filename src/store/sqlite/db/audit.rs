//! SQL for the `audit_events` table: who approved, denied or revoked what, when, from where.

use rusqlite::{params, Connection};

use super::DbError;

/// Appends one event. `actor` is a user id, or `None` for the command line.
pub fn record(
    conn: &Connection,
    now: i64,
    actor: Option<&str>,
    action: &str,
    target_id: &str,
    ip_address: Option<&str>,
    detail: &serde_json::Value,
) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO audit_events (at, actor, action, target_id, ip_address, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        now,
        actor,
        action,
        target_id,
        ip_address,
        detail.to_string()
    ])?;
    Ok(())
}
