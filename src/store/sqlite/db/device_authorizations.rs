//! SQL for the `device_authorizations` table: the short-lived record of one RFC 8628
//! authorization (Storyden's fields). Every lookup that decides something checks
//! `expires_at` itself; the reaper only reclaims space.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::DbError;
use crate::domain::model::{
    AuthorizationState, DeviceAuthorization, Listing, Overview, StateCounts,
};

const COLUMNS: &str = "id, created_at, client_id, device_id, user_code, scope, expires_at, \
    poll_interval_seconds, last_polled_at, approved_by_account_id, approved_at, denied_at, \
    consumed_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<DeviceAuthorization> {
    Ok(DeviceAuthorization {
        id: r.get(0)?,
        created_at: r.get(1)?,
        client_id: r.get(2)?,
        device_id: r.get(3)?,
        user_code: r.get(4)?,
        scope: r.get(5)?,
        expires_at: r.get(6)?,
        poll_interval_seconds: r.get(7)?,
        last_polled_at: r.get(8)?,
        approved_by_account_id: r.get(9)?,
        approved_at: r.get(10)?,
        denied_at: r.get(11)?,
        consumed_at: r.get(12)?,
    })
}

/// Inserts an authorization with its device code's key ([`crate::secrets::token_key`]). A user code that collides with
/// a stored one is a unique violation; the caller draws another.
pub fn insert(
    conn: &Connection,
    a: &DeviceAuthorization,
    device_code_hash: &[u8],
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(&format!(
        "INSERT INTO device_authorizations ({COLUMNS}, device_code_hash) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))?
    .execute(params![
        a.id,
        a.created_at,
        a.client_id,
        a.device_id,
        a.user_code,
        a.scope,
        a.expires_at,
        a.poll_interval_seconds,
        a.last_polled_at,
        a.approved_by_account_id,
        a.approved_at,
        a.denied_at,
        a.consumed_at,
        device_code_hash
    ])?;
    Ok(())
}

/// Looks an authorization up by its device code's key ([`crate::secrets::token_key`]),
/// expired or not.
pub fn find_by_device_code_hash(
    conn: &Connection,
    hash: &[u8],
) -> Result<Option<DeviceAuthorization>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM device_authorizations WHERE device_code_hash = ?1"
        ))?
        .query_row([hash], from_row)
        .optional()?)
}

/// Looks an authorization up by its normalized user code, expired or not.
pub fn find_by_user_code(
    conn: &Connection,
    user_code: &str,
) -> Result<Option<DeviceAuthorization>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM device_authorizations WHERE user_code = ?1"
        ))?
        .query_row([user_code], from_row)
        .optional()?)
}

/// The live, undecided authorization of a device, if it has one.
pub fn find_undecided_for_device(
    conn: &Connection,
    device_id: &str,
    now: i64,
) -> Result<Option<DeviceAuthorization>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM device_authorizations WHERE device_id = ?1 \
             AND approved_at IS NULL AND denied_at IS NULL AND consumed_at IS NULL \
             AND expires_at > ?2 ORDER BY created_at DESC LIMIT 1"
        ))?
        .query_row(rusqlite::params![device_id, now], from_row)
        .optional()?)
}

/// Writes back poll times remembered in memory, in one transaction; fastest in id order
/// (see `app::reaper::write_back_polls`). An interval grown from memory is stored too
/// (never lowered).
pub fn write_poll_times(
    conn: &mut Connection,
    times: &[(String, i64, Option<i64>)],
) -> Result<(), DbError> {
    let tx = super::write_tx(conn)?;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE device_authorizations SET last_polled_at = max(coalesce(last_polled_at, 0), ?2), \
             poll_interval_seconds = max(poll_interval_seconds, coalesce(?3, 0)) WHERE id = ?1",
        )?;
        for (id, at, interval) in times {
            stmt.execute(params![id, at, interval])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Marks a live, undecided authorization approved. Returns false if it was not live and
/// undecided (so two approvers cannot both win).
pub fn approve(conn: &Connection, id: &str, user_id: &str, now: i64) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE device_authorizations SET approved_by_account_id = ?2, approved_at = ?3 \
             WHERE id = ?1 AND approved_at IS NULL AND denied_at IS NULL \
             AND consumed_at IS NULL AND expires_at > ?3",
        )?
        .execute(params![id, user_id, now])?
        == 1)
}

/// Marks a live, undecided authorization denied; `user_id` is `None` from the command line.
pub fn deny(conn: &Connection, id: &str, user_id: Option<&str>, now: i64) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE device_authorizations SET approved_by_account_id = ?2, denied_at = ?3 \
             WHERE id = ?1 AND approved_at IS NULL AND denied_at IS NULL \
             AND consumed_at IS NULL AND expires_at > ?3",
        )?
        .execute(params![id, user_id, now])?
        == 1)
}

/// Marks an approved authorization consumed. Returns false if someone else consumed it first:
/// this conditional update is what makes a device code yield tokens exactly once.
pub fn consume(conn: &Connection, id: &str, now: i64) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE device_authorizations SET consumed_at = ?2 \
             WHERE id = ?1 AND approved_at IS NOT NULL AND consumed_at IS NULL \
             AND expires_at > ?2",
        )?
        .execute(params![id, now])?
        == 1)
}

/// A client's live, undecided codes, earliest expiry first, at most `limit` of them, each
/// passed to `each` as (authorization id, expiry, the address its device asked from): the
/// per-client cap, `app::limits::PendingCap`, shares the cap by address. Walks the
/// (client_id, expires_at) index; with `addresses`, each row's device by its key too (without,
/// the address is `None`). Returns how many rows it read.
pub fn pending_for_client(
    conn: &Connection,
    client_id: &str,
    now: i64,
    limit: usize,
    addresses: bool,
    mut each: impl FnMut(&str, i64, Option<&str>),
) -> Result<usize, DbError> {
    let sql = if addresses {
        "SELECT a.id, a.expires_at, d.ip_address FROM device_authorizations a \
         JOIN devices d ON d.id = a.device_id \
         WHERE a.client_id = ?1 AND a.expires_at > ?2 \
         AND a.approved_at IS NULL AND a.denied_at IS NULL AND a.consumed_at IS NULL \
         ORDER BY a.expires_at LIMIT ?3"
    } else {
        "SELECT id, expires_at, NULL FROM device_authorizations \
         WHERE client_id = ?1 AND expires_at > ?2 \
         AND approved_at IS NULL AND denied_at IS NULL AND consumed_at IS NULL \
         ORDER BY expires_at LIMIT ?3"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params![client_id, now, limit as i64])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let id = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
        let ip = r
            .get_ref(2)?
            .as_str_or_null()
            .map_err(rusqlite::Error::from)?;
        each(id, r.get(1)?, ip);
        n += 1;
    }
    Ok(n)
}

/// Ends a live, undecided authorization at once, to make room under the per-client cap
/// (`app::limits::Admit::Evict`): it expires now, and so does its pending device, so the
/// device's next poll gets `expired_token`, the page says the code has expired, and the reaper
/// takes both. Returns false (and changes nothing) if it was approved, denied, used or expired
/// meanwhile: an approved code is never taken from its device.
pub fn evict(conn: &Connection, id: &str, now: i64) -> Result<bool, DbError> {
    let ended = conn
        .prepare_cached(
            "UPDATE device_authorizations SET expires_at = ?2 \
             WHERE id = ?1 AND approved_at IS NULL AND denied_at IS NULL \
             AND consumed_at IS NULL AND expires_at > ?2",
        )?
        .execute(params![id, now])?
        == 1;
    if ended {
        conn.prepare_cached(
            "UPDATE devices SET expires = ?2, updated = ?2 \
             WHERE id = (SELECT device_id FROM device_authorizations WHERE id = ?1) \
             AND status = 'pending'",
        )?
        .execute(params![id, now])?;
    }
    Ok(ended)
}

/// Expired rows are found client by client through (client_id, expires_at): the schema has no
/// index on expires_at alone (schema.sql). `CROSS JOIN` keeps oauth_clients the outer loop.
pub(super) const COUNT_EXPIRED_UNUSED: &str =
    "SELECT count(*) FROM oauth_clients c CROSS JOIN device_authorizations a \
     WHERE a.client_id = c.client_id AND a.expires_at <= ?1 \
     AND a.consumed_at IS NULL AND a.denied_at IS NULL";

/// See [`COUNT_EXPIRED_UNUSED`].
pub(super) const DELETE_EXPIRED: &str = "DELETE FROM device_authorizations WHERE rowid IN \
     (SELECT a.rowid FROM oauth_clients c CROSS JOIN device_authorizations a \
      WHERE a.client_id = c.client_id AND a.expires_at <= ?1 LIMIT ?2)";

/// How many expired authorizations were never exchanged or denied: the "expired" outcome.
pub fn count_expired_unused(conn: &Connection, now: i64) -> Result<u64, DbError> {
    Ok(conn
        .prepare_cached(COUNT_EXPIRED_UNUSED)?
        .query_row([now], |r| r.get(0))?)
}

/// Deletes expired authorizations in one batch of at most `limit` rows.
pub fn delete_expired(conn: &Connection, now: i64, limit: u32) -> Result<usize, DbError> {
    Ok(conn
        .prepare_cached(DELETE_EXPIRED)?
        .execute(params![now, limit])?)
}

/// A page of authorizations, newest first, with the total count.
pub fn list(
    conn: &Connection,
    state: Option<AuthorizationState>,
    client_id: Option<&str>,
    now: i64,
    offset: u32,
    limit: u32,
) -> Result<(Vec<DeviceAuthorization>, u64), DbError> {
    let clause = format!(
        "({}) AND (?2 IS NULL OR client_id = ?2)",
        state.map_or("?1 IS NOT NULL", state_condition)
    );
    let total: u64 = conn
        .prepare_cached(&format!(
            "SELECT count(*) FROM device_authorizations WHERE {clause}"
        ))?
        .query_row(params![now, client_id], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM device_authorizations WHERE {clause} \
         ORDER BY created_at DESC, id LIMIT ?3 OFFSET ?4"
    ))?;
    let rows = stmt.query_map(params![now, client_id, limit, offset], from_row)?;
    Ok((rows.collect::<Result<_, _>>()?, total))
}

/// Looks an authorization up by id.
pub fn find(conn: &Connection, id: &str) -> Result<Option<DeviceAuthorization>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM device_authorizations WHERE id = ?1"
        ))?
        .query_row([id], from_row)
        .optional()?)
}

/// Counts the authorizations in each state, of one client or all, in one pass over the table.
pub fn count_states(
    conn: &Connection,
    client_id: Option<&str>,
    now: i64,
) -> Result<StateCounts, DbError> {
    let sql = format!(
        "SELECT coalesce(sum({}), 0), coalesce(sum({}), 0), coalesce(sum({}), 0), \
         coalesce(sum({}), 0), coalesce(sum({}), 0) \
         FROM device_authorizations WHERE ?2 IS NULL OR client_id = ?2",
        state_condition(AuthorizationState::Pending),
        state_condition(AuthorizationState::Approved),
        state_condition(AuthorizationState::Denied),
        state_condition(AuthorizationState::Consumed),
        state_condition(AuthorizationState::Expired),
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![now, client_id], |r| {
            Ok(StateCounts {
                pending: r.get(0)?,
                approved: r.get(1)?,
                denied: r.get(2)?,
                consumed: r.get(3)?,
                expired: r.get(4)?,
            })
        })?)
}

/// A page of a listing, newest first, joined with the devices, clients and users it names.
/// The page is cut from `device_authorizations` alone first, so the joins touch only its rows.
pub fn list_overview(
    conn: &Connection,
    listing: Listing,
    client_id: Option<&str>,
    now: i64,
    offset: u32,
    limit: u32,
) -> Result<Vec<Overview>, DbError> {
    let sql = format!(
        "SELECT a.*, c.name, d.name, d.os, d.hostname, d.ip_address, d.city, d.region, \
         d.country, u.username \
         FROM (SELECT {COLUMNS} FROM device_authorizations \
               WHERE ({}) AND (?2 IS NULL OR client_id = ?2) \
               ORDER BY created_at DESC, id LIMIT ?3 OFFSET ?4) a \
         LEFT JOIN devices d ON d.id = a.device_id \
         LEFT JOIN oauth_clients c ON c.client_id = a.client_id \
         LEFT JOIN users u ON u.id = coalesce(a.approved_by_account_id, d.user_id) \
         ORDER BY a.created_at DESC, a.id",
        listing_condition(listing)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![now, client_id, limit, offset], |r| {
        Ok(Overview {
            authorization: from_row(r)?,
            client_name: r.get(13)?,
            device_name: r.get(14)?,
            os: r.get(15)?,
            hostname: r.get(16)?,
            ip_address: r.get(17)?,
            city: r.get(18)?,
            region: r.get(19)?,
            country: r.get(20)?,
            username: r.get(21)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The SQL condition selecting rows in this state at time `?1`.
fn state_condition(state: AuthorizationState) -> &'static str {
    match state {
        AuthorizationState::Pending => {
            "approved_at IS NULL AND denied_at IS NULL AND consumed_at IS NULL AND expires_at > ?1"
        }
        AuthorizationState::Approved => {
            "approved_at IS NOT NULL AND consumed_at IS NULL AND expires_at > ?1"
        }
        AuthorizationState::Denied => "denied_at IS NOT NULL",
        AuthorizationState::Consumed => "consumed_at IS NOT NULL",
        AuthorizationState::Expired => {
            "consumed_at IS NULL AND denied_at IS NULL AND expires_at <= ?1"
        }
    }
}

/// The SQL condition selecting the rows of a listing at time `?1`.
fn listing_condition(listing: Listing) -> &'static str {
    match listing {
        Listing::Live => "consumed_at IS NULL AND denied_at IS NULL AND expires_at > ?1",
        Listing::Only(state) => state_condition(state),
        Listing::All => "?1 IS NOT NULL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{Client, Device, DeviceStatus};
    use crate::store::sqlite::db::{devices, users};

    #[test]
    fn listings_join_devices_and_count_every_state() {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "foreign_keys", "ON").unwrap();
        crate::store::sqlite::db::migrate::migrate(&mut c, std::path::Path::new(":memory:"))
            .unwrap();
        crate::store::sqlite::db::clients::insert(&c, &Client::public_for_tests("cli", ""))
            .unwrap();
        let alice = users::insert(&c, "alice", "x", false, 0).unwrap();
        let now = 1_000_000;
        // Six authorizations, one in each state (and one more pending), each with a device:
        // name, approved_at, denied_at, consumed_at, expires_at.
        type Row<'a> = (&'a str, Option<i64>, Option<i64>, Option<i64>, i64);
        let states: [Row<'_>; 6] = [
            ("pending", None, None, None, now + 60_000),
            ("pending2", None, None, None, now + 60_000),
            ("approved", Some(now - 10), None, None, now + 60_000),
            ("denied", None, Some(now - 10), None, now + 60_000),
            (
                "consumed",
                Some(now - 20),
                None,
                Some(now - 10),
                now + 60_000,
            ),
            ("expired", None, None, None, now - 1),
        ];
        for (i, (name, approved, denied, consumed, expires)) in states.iter().enumerate() {
            let d = Device {
                id: format!("d{i}"),
                client_id: "cli".into(),
                user_id: approved.map(|_| alice.id.clone()),
                name: Some(name.to_string()),
                status: DeviceStatus::Pending,
                trusted_device: false,
                expires: *expires,
                os: Some("linux".into()),
                ip_address: Some(format!("203.0.113.{i}")),
                hostname: None,
                city: None,
                region: None,
                country: Some("Iceland".into()),
                last_login: None,
                device_metadata: "{}".into(),
                failed_auth_attempts: 0,
                resource: None,
                created: now,
                updated: now,
            };
            devices::insert(&c, &d).unwrap();
            let a = DeviceAuthorization {
                id: format!("a{i}"),
                created_at: now - 100 + i as i64,
                client_id: "cli".into(),
                device_id: d.id.clone(),
                user_code: format!("CODE{i}"),
                scope: String::new(),
                expires_at: *expires,
                poll_interval_seconds: 5,
                last_polled_at: None,
                approved_by_account_id: approved.or(*denied).map(|_| alice.id.clone()),
                approved_at: *approved,
                denied_at: *denied,
                consumed_at: *consumed,
            };
            insert(&c, &a, format!("hash{i}").as_bytes()).unwrap();
        }
        let counts = count_states(&c, None, now).unwrap();
        assert_eq!(
            counts,
            StateCounts {
                pending: 2,
                approved: 1,
                denied: 1,
                consumed: 1,
                expired: 1
            }
        );
        assert_eq!(counts.of(Listing::All), 6);
        assert_eq!(
            count_states(&c, Some("other"), now)
                .unwrap()
                .of(Listing::All),
            0
        );
        for listing in [
            Listing::Live,
            Listing::All,
            Listing::Only(AuthorizationState::Pending),
            Listing::Only(AuthorizationState::Denied),
            Listing::Only(AuthorizationState::Expired),
        ] {
            let rows = list_overview(&c, listing, Some("cli"), now, 0, 100).unwrap();
            assert_eq!(rows.len() as u64, counts.of(listing), "{listing:?}");
        }
        // Newest first, joined: device facts, client name, the approver.
        let live = list_overview(&c, Listing::Live, None, now, 0, 100).unwrap();
        let names: Vec<_> = live
            .iter()
            .map(|o| o.device_name.clone().unwrap())
            .collect();
        assert_eq!(names, ["approved", "pending2", "pending"]);
        assert_eq!(live[0].username.as_deref(), Some("alice"));
        assert_eq!(live[0].client_name.as_deref(), Some("CLI"));
        assert_eq!(live[0].ip_address.as_deref(), Some("203.0.113.2"));
        assert_eq!(live[0].country.as_deref(), Some("Iceland"));
        assert_eq!(live[1].username, None);
        // Paging.
        let page = list_overview(&c, Listing::All, None, now, 2, 2).unwrap();
        let ids: Vec<_> = page.iter().map(|o| o.authorization.id.clone()).collect();
        assert_eq!(ids, ["a3", "a2"]);
    }
}
