//! Managing a device after approval — lock, unlock, remove — with token revocation and an audit
//! record, in one transaction each. Shared by the command line, the pages and the API, so a
//! locked device behaves the same whichever way it was locked.

use rusqlite::Connection;

use crate::db::{self, audit, devices, DbError};
use crate::domain::model::{Actor, Device};

/// Finds a device that `owner` may manage: their own, or any when `owner` is `None` (an admin or
/// the command line). Someone else's device is indistinguishable from a missing one.
pub fn find_managed(
    conn: &Connection,
    id: &str,
    owner: Option<&str>,
) -> Result<Option<Device>, DbError> {
    Ok(devices::find(conn, id)?.filter(|d| owner.is_none() || d.user_id.as_deref() == owner))
}

/// Removes a device. Its refresh tokens are deleted with it, and its access tokens stop
/// introspecting as active at once. Returns false if there was no such device for `owner`.
pub fn remove(
    conn: &mut Connection,
    id: &str,
    owner: Option<&str>,
    actor: Actor<'_>,
    now: i64,
) -> Result<bool, DbError> {
    let tx = db::write_tx(conn)?;
    let Some(device) = find_managed(&tx, id, owner)? else {
        return Ok(false);
    };
    devices::delete(&tx, &device.id)?;
    audit::record(
        &tx,
        now,
        actor.user_id,
        "device.remove",
        &device.id,
        actor.ip_address,
        &serde_json::json!({ "client_id": device.client_id, "user_id": device.user_id }),
    )?;
    tx.commit()?;
    Ok(true)
}

/// Locks or unlocks a device. While locked, every refresh fails and its access tokens
/// introspect as inactive; unlocking restores them (the tokens themselves are kept).
pub fn set_locked(
    conn: &mut Connection,
    id: &str,
    owner: Option<&str>,
    locked: bool,
    actor: Actor<'_>,
    now: i64,
) -> Result<Option<Device>, DbError> {
    let tx = db::write_tx(conn)?;
    let Some(device) = find_managed(&tx, id, owner)? else {
        return Ok(None);
    };
    devices::set_locked(&tx, &device.id, locked, now)?;
    audit::record(
        &tx,
        now,
        actor.user_id,
        if locked {
            "device.lock"
        } else {
            "device.unlock"
        },
        &device.id,
        actor.ip_address,
        &serde_json::json!({ "client_id": device.client_id }),
    )?;
    let device = devices::find(&tx, &device.id)?;
    tx.commit()?;
    Ok(device)
}
