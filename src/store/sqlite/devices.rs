//! Managing a device after approval on SQLite — rename, lock, unlock, remove — with token
//! revocation and an audit record, in one transaction each. Shared by the command line, the
//! pages and the API, so a locked device behaves the same whichever way it was locked.

use rusqlite::Connection;

use super::db::{self, audit, clients, devices, DbError};
use crate::domain::model::{Actor, Device, DeviceStatus};
use crate::store::{DeviceRefused, DeviceUpdate, DevicesOf};

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
    actor: &Actor,
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
        actor.user_id.as_deref(),
        "device.remove",
        &device.id,
        actor.ip_address.as_deref(),
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
    actor: &Actor,
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
        actor.user_id.as_deref(),
        if locked {
            "device.lock"
        } else {
            "device.unlock"
        },
        &device.id,
        actor.ip_address.as_deref(),
        &serde_json::json!({ "client_id": device.client_id }),
    )?;
    let device = devices::find(&tx, &device.id)?;
    tx.commit()?;
    Ok(device)
}

/// Renames a device, sets its metadata, and locks or unlocks it (audited), in one transaction.
/// A pending device cannot be locked or unlocked: its code can be denied instead.
pub fn update(
    conn: &mut Connection,
    u: &DeviceUpdate,
) -> Result<Result<Device, DeviceRefused>, DbError> {
    let tx = db::write_tx(conn)?;
    let Some(device) = find_managed(&tx, &u.id, u.owner.as_deref())? else {
        return Ok(Err(DeviceRefused::NotFound));
    };
    if device.status == DeviceStatus::Pending && u.locked.is_some() {
        return Ok(Err(DeviceRefused::Pending));
    }
    devices::update(
        &tx,
        &device.id,
        u.name
            .as_ref()
            .map(|n| n.as_deref().filter(|s| !s.is_empty())),
        u.metadata.as_deref(),
        u.now,
    )?;
    tx.commit()?;
    if let Some(locked) = u.locked {
        set_locked(conn, &device.id, None, locked, &u.actor, u.now)?;
    }
    Ok(devices::find(conn, &device.id)?.ok_or(DeviceRefused::NotFound))
}

/// A user's devices, newest first, with the name of each of their clients.
pub fn devices_of(conn: &Connection, user_id: &str) -> Result<DevicesOf, DbError> {
    let devices = devices::list_for_user(conn, user_id)?;
    let mut client_names = std::collections::HashMap::new();
    for d in &devices {
        if !client_names.contains_key(&d.client_id) {
            let name = clients::find(conn, &d.client_id)?.map(|c| c.name);
            client_names.insert(d.client_id.clone(), name);
        }
    }
    Ok(DevicesOf {
        devices,
        client_names,
    })
}
