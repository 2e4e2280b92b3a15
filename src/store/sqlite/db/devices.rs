//! SQL for the `devices` table: the long-lived record of each device (ZenML's fields).

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::DbError;
use crate::domain::model::{Device, DeviceFilter, DeviceStatus};

const COLUMNS: &str = "id, client_id, user_id, name, status, trusted_device, expires, os, \
    ip_address, hostname, city, region, country, last_login, device_metadata, \
    failed_auth_attempts, created, updated, resource";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Device> {
    let status: String = r.get(4)?;
    Ok(Device {
        id: r.get(0)?,
        client_id: r.get(1)?,
        user_id: r.get(2)?,
        name: r.get(3)?,
        status: DeviceStatus::parse(&status),
        trusted_device: r.get(5)?,
        expires: r.get(6)?,
        os: r.get(7)?,
        ip_address: r.get(8)?,
        hostname: r.get(9)?,
        city: r.get(10)?,
        region: r.get(11)?,
        country: r.get(12)?,
        last_login: r.get(13)?,
        device_metadata: r.get(14)?,
        failed_auth_attempts: r.get(15)?,
        created: r.get(16)?,
        updated: r.get(17)?,
        resource: r
            .get::<_, Option<String>>(18)?
            .map(|s| crate::protocol::resource::from_stored(&s)),
    })
}

/// Inserts a device.
pub fn insert(conn: &Connection, d: &Device) -> Result<(), DbError> {
    conn.prepare_cached(&format!(
        "INSERT INTO devices ({COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
    ))?
    .execute(params![
        d.id,
        d.client_id,
        d.user_id,
        d.name,
        d.status.as_str(),
        d.trusted_device,
        d.expires,
        d.os,
        d.ip_address,
        d.hostname,
        d.city,
        d.region,
        d.country,
        d.last_login,
        d.device_metadata,
        d.failed_auth_attempts,
        d.created,
        d.updated,
        d.resource
            .as_deref()
            .map(crate::protocol::resource::to_stored),
    ])?;
    Ok(())
}

/// Looks a device up by id.
pub fn find(conn: &Connection, id: &str) -> Result<Option<Device>, DbError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM devices WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

/// Records an approval: the device now belongs to `user_id` and lives until `expires`.
pub fn mark_verified(
    conn: &Connection,
    id: &str,
    user_id: &str,
    trusted: bool,
    expires: i64,
    now: i64,
) -> Result<(), DbError> {
    conn.prepare_cached(
        "UPDATE devices SET user_id = ?2, status = 'verified', trusted_device = ?3, \
         expires = ?4, updated = ?5 WHERE id = ?1",
    )?
    .execute(params![id, user_id, trusted, expires, now])?;
    Ok(())
}

/// Records a token issue: the device is active and `now` is its last login.
pub fn mark_active(conn: &Connection, id: &str, now: i64) -> Result<(), DbError> {
    conn.prepare_cached(
        "UPDATE devices SET status = 'active', last_login = ?2, updated = ?2 \
         WHERE id = ?1 AND status IN ('verified', 'active')",
    )?
    .execute(params![id, now])?;
    Ok(())
}

/// Deletes expired devices in one batch of at most `limit` rows; returns how many went.
/// Their authorizations and refresh tokens go with them (ON DELETE CASCADE).
pub fn delete_expired(conn: &Connection, now: i64, limit: u32) -> Result<usize, DbError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM devices WHERE rowid IN \
             (SELECT rowid FROM devices WHERE expires <= ?1 LIMIT ?2)",
        )?
        .execute(params![now, limit])?)
}

/// Deletes a device; its authorizations and refresh tokens go with it (ON DELETE CASCADE).
pub fn delete(conn: &Connection, id: &str) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached("DELETE FROM devices WHERE id = ?1")?
        .execute([id])?
        == 1)
}

/// Locks a device, or unlocks it back to `active` (it has held tokens) or `verified`.
/// Counts one wrong user code presented for a pending device; returns the new count.
pub fn add_failed_attempt(conn: &Connection, id: &str, now: i64) -> Result<i64, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE devices SET failed_auth_attempts = failed_auth_attempts + 1, updated = ?2 \
             WHERE id = ?1 RETURNING failed_auth_attempts",
        )?
        .query_row(rusqlite::params![id, now], |r| r.get(0))?)
}

/// Locks a device whatever its status (used when its code has been guessed at too often).
pub fn force_lock(conn: &Connection, id: &str, now: i64) -> Result<(), DbError> {
    conn.prepare_cached("UPDATE devices SET status = 'locked', updated = ?2 WHERE id = ?1")?
        .execute(rusqlite::params![id, now])?;
    Ok(())
}

pub fn set_locked(conn: &Connection, id: &str, locked: bool, now: i64) -> Result<(), DbError> {
    let sql = if locked {
        "UPDATE devices SET status = 'locked', updated = ?2 WHERE id = ?1 AND status != 'pending'"
    } else {
        "UPDATE devices SET status = CASE WHEN last_login IS NULL THEN 'verified' ELSE 'active' END, \
         failed_auth_attempts = 0, updated = ?2 WHERE id = ?1 AND status = 'locked'"
    };
    conn.prepare_cached(sql)?.execute(params![id, now])?;
    Ok(())
}

/// Every device of a user, newest first.
pub fn list_for_user(conn: &Connection, user_id: &str) -> Result<Vec<Device>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM devices WHERE user_id = ?1 ORDER BY created DESC, id"
    ))?;
    let rows = stmt.query_map([user_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A page of devices matching `filter`, newest first, and the total count. Pending devices that
/// nobody has claimed are never listed: they belong to no one yet.
pub fn list(
    conn: &Connection,
    filter: &DeviceFilter,
    offset: u32,
    limit: u32,
) -> Result<(Vec<Device>, u64), DbError> {
    let mut clauses = vec!["user_id IS NOT NULL".to_string()];
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut add = |clause: &str, value: rusqlite::types::Value| {
        args.push(value);
        clauses.push(format!("{clause} ?{}", args.len()));
    };
    if let Some(u) = &filter.user_id {
        add("user_id =", u.clone().into());
    }
    if let Some(s) = filter.status {
        add("status =", s.as_str().to_string().into());
    }
    if let Some(t) = filter.trusted_device {
        add("trusted_device =", i64::from(t).into());
    }
    if let Some(c) = &filter.client_id {
        add("client_id =", c.clone().into());
    }
    let clause = clauses.join(" AND ");
    let total: u64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM devices WHERE {clause}"))?
        .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&page_query(&clause, args.len()))?;
    args.push(i64::from(limit).into());
    args.push(i64::from(offset).into());
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), from_row)?;
    Ok((rows.collect::<Result<_, _>>()?, total))
}

/// The query of one page of [`list`]: `clause` (which starts with `user_id IS NOT NULL`) has
/// `n` parameters, and LIMIT and OFFSET follow them. Its order is that of the partial index
/// `devices_claimed` (schema.sql), so a page reads its rows instead of sorting every match.
pub(super) fn page_query(clause: &str, n: usize) -> String {
    format!(
        "SELECT {COLUMNS} FROM devices WHERE {clause} ORDER BY created DESC, id \
         LIMIT ?{} OFFSET ?{}",
        n + 1,
        n + 2
    )
}

/// Updates the owner-editable fields; `None` leaves a field as it is.
pub fn update(
    conn: &Connection,
    id: &str,
    name: Option<Option<&str>>,
    device_metadata: Option<&str>,
    now: i64,
) -> Result<(), DbError> {
    if let Some(name) = name {
        conn.prepare_cached("UPDATE devices SET name = ?2, updated = ?3 WHERE id = ?1")?
            .execute(params![id, name, now])?;
    }
    if let Some(meta) = device_metadata {
        conn.prepare_cached("UPDATE devices SET device_metadata = ?2, updated = ?3 WHERE id = ?1")?
            .execute(params![id, meta, now])?;
    }
    Ok(())
}
