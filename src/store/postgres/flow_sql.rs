//! The rows the device flow reads on PostgreSQL, as the SQLite backend reads them
//! (src/store/sqlite/db/{device_authorizations,devices,users}.rs): the column lists, their
//! readers, and the state conditions of the admins' listings. `INTEGER` columns are `i32`
//! here and `i64` in the model.

use tokio_postgres::Row;

use super::PgError;
use crate::domain::model::{AuthorizationState, DeviceAuthorization, Listing};
use crate::store::PollMark;

/// `device_authorizations`' columns, in [`authorization_from_row`]'s order.
pub const AUTH_COLUMNS: &str = "id, created_at, client_id, device_id, user_code, scope, \
    expires_at, poll_interval_seconds, last_polled_at, approved_by_account_id, approved_at, \
    denied_at, consumed_at";
/// How many columns [`AUTH_COLUMNS`] has.
pub const AUTH_WIDTH: usize = 13;

pub use super::rows::{
    optional_device as device_from_row, optional_user as user_from_row, DEVICE_COLUMNS,
    DEVICE_WIDTH, USER_COLUMNS,
};

/// `poll_state`'s columns, in [`mark_from_row`]'s order.
pub const MARK_COLUMNS: &str = "authorization_id, last_polled_at, early_ms, \
    poll_interval_seconds, expires_at";

/// An authorization from the [`AUTH_COLUMNS`] of `r` starting at `at`.
pub fn authorization_from_row(r: &Row, at: usize) -> Result<DeviceAuthorization, PgError> {
    Ok(DeviceAuthorization {
        id: r.try_get(at)?,
        created_at: r.try_get(at + 1)?,
        client_id: r.try_get(at + 2)?,
        device_id: r.try_get(at + 3)?,
        user_code: r.try_get(at + 4)?,
        scope: r.try_get(at + 5)?,
        expires_at: r.try_get(at + 6)?,
        poll_interval_seconds: i64::from(r.try_get::<_, i32>(at + 7)?),
        last_polled_at: r.try_get(at + 8)?,
        approved_by_account_id: r.try_get(at + 9)?,
        approved_at: r.try_get(at + 10)?,
        denied_at: r.try_get(at + 11)?,
        consumed_at: r.try_get(at + 12)?,
    })
}

/// A poll mark from the [`MARK_COLUMNS`] of `r` starting at `at`; `None` when they are NULL.
pub fn mark_from_row(r: &Row, at: usize) -> Result<Option<PollMark>, PgError> {
    let Some(id) = r.try_get::<_, Option<String>>(at)? else {
        return Ok(None);
    };
    Ok(Some(PollMark {
        id,
        last_polled_at: r.try_get(at + 1)?,
        early_ms: i64::from(r.try_get::<_, i32>(at + 2)?),
        poll_interval_seconds: i64::from(r.try_get::<_, i32>(at + 3)?),
        expires_at: r.try_get(at + 4)?,
    }))
}

/// The SQL condition selecting rows in this state at time `$1` (as SQLite's, which the states'
/// definitions in `AuthorizationState` follow).
pub fn state_condition(state: AuthorizationState) -> &'static str {
    match state {
        AuthorizationState::Pending => {
            "approved_at IS NULL AND denied_at IS NULL AND consumed_at IS NULL \
             AND expires_at > $1::bigint"
        }
        AuthorizationState::Approved => {
            "approved_at IS NOT NULL AND consumed_at IS NULL AND expires_at > $1::bigint"
        }
        AuthorizationState::Denied => "denied_at IS NOT NULL AND $1::bigint IS NOT NULL",
        AuthorizationState::Consumed => "consumed_at IS NOT NULL AND $1::bigint IS NOT NULL",
        AuthorizationState::Expired => {
            "consumed_at IS NULL AND denied_at IS NULL AND expires_at <= $1::bigint"
        }
    }
}

/// The SQL condition selecting the rows of a listing at time `$1`.
pub fn listing_condition(listing: Listing) -> &'static str {
    match listing {
        Listing::Live => "consumed_at IS NULL AND denied_at IS NULL AND expires_at > $1::bigint",
        Listing::Only(state) => state_condition(state),
        Listing::All => "$1::bigint IS NOT NULL",
    }
}

/// `n` as a `LIMIT` or `OFFSET`.
pub fn big(n: impl Into<u64>) -> i64 {
    i64::try_from(n.into()).unwrap_or(i64::MAX)
}

/// A count read as `bigint`.
pub fn count(r: &Row, at: usize) -> Result<u64, PgError> {
    Ok(r.try_get::<_, i64>(at)?.max(0) as u64)
}

/// An interval in seconds as the `INTEGER` column holds it.
pub fn seconds(s: i64) -> i32 {
    i32::try_from(s).unwrap_or(i32::MAX)
}

/// Ends the code to evict (if any and still live and undecided, with its pending device),
/// and creates the pending device and its authorization (RFC 8628 §3.1–3.2): one statement.
///
/// `ev` ends at most one row (by primary key), so its device is named with `= (SELECT …)`,
/// never `IN (SELECT …)`: a prepared statement's generic plan is made once, after five runs,
/// and one made while `devices` was nearly empty joined `IN` as a sequential scan of every
/// device, kept as the table grew (W1 on a fresh database fell to ~800 a second, ~1.2 ms of
/// server CPU each; `= (SELECT …)` is an index lookup whatever the statistics). The approval's
/// `ap` is written the same way.
pub const START: &str = "WITH ev AS (UPDATE device_authorizations SET expires_at = $12 \
         WHERE id = $19 AND approved_at IS NULL AND denied_at IS NULL \
         AND consumed_at IS NULL AND expires_at > $12 RETURNING device_id), \
     evd AS (UPDATE devices SET expires = $12, updated = $12 \
         WHERE id = (SELECT device_id FROM ev) AND status = 'pending'), \
     evn AS (SELECT pg_notify('hallpass_changes', 'devices') FROM ev), \
     dev AS (INSERT INTO devices (id, client_id, user_id, name, status, trusted_device, \
         expires, os, ip_address, hostname, city, region, country, last_login, \
         device_metadata, failed_auth_attempts, created, updated, resource) \
         VALUES ($1, $2, NULL, $3, 'pending', FALSE, $4, $5, $6, $7, $8, $9, $10, NULL, \
         $11, 0, $12, $12, $13) RETURNING id), \
     ins AS (INSERT INTO device_authorizations (id, created_at, client_id, device_id, \
         user_code, scope, expires_at, poll_interval_seconds, device_code_hash) \
         SELECT $14, $12, $2, dev.id, $15, $16, $4, $17, $18 FROM dev \
         ON CONFLICT (user_code) DO NOTHING RETURNING id) \
     SELECT (SELECT count(*) FROM ev) + (SELECT count(*) FROM evn) * 0, \
     (SELECT count(*) FROM ins)";

/// Many device authorizations that end no other code, in one statement (RFC 8628 §3.1–3.2):
/// their pending devices and their authorizations, from one array per column (row `k` of each
/// is the `k`th authorization). Answers the ids of the authorizations inserted; one whose user
/// code was taken (by a stored row or an earlier one of the same batch) is not, and its device
/// stands, as after [`START`]. Each row costs the indexes and the foreign keys' checks, but the
/// statement's planning, start and end are paid once per batch instead of once per row.
pub const START_ROWS: &str = "WITH s AS (SELECT * FROM unnest($1::text[], $2::text[], \
         $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
         $10::text[], $11::text[], $12::bigint[], $13::text[], $14::text[], $15::text[], \
         $16::text[], $17::int[], $18::bytea[]) AS s(device_id, client_id, name, expires_at, \
         os, ip_address, hostname, city, region, country, metadata, now, resource, id, \
         user_code, scope, poll_interval, code_hash)), \
     dev AS (INSERT INTO devices (id, client_id, user_id, name, status, trusted_device, \
         expires, os, ip_address, hostname, city, region, country, last_login, \
         device_metadata, failed_auth_attempts, created, updated, resource) \
         SELECT device_id, client_id, NULL, name, 'pending', FALSE, expires_at, os, \
         ip_address, hostname, city, region, country, NULL, metadata, 0, now, now, resource \
         FROM s) \
     INSERT INTO device_authorizations (id, created_at, client_id, device_id, user_code, \
         scope, expires_at, poll_interval_seconds, device_code_hash) \
     SELECT id, now, client_id, device_id, user_code, scope, expires_at, poll_interval, \
         code_hash FROM s \
     ON CONFLICT (user_code) DO NOTHING RETURNING id";

/// How many expired authorizations were never exchanged or denied (the "expired" outcome),
/// counted client by client: `device_authorizations` has no index on `expires_at` alone, and a
/// plain join is planned as a pass over the whole (client_id, expires_at) index (or the table),
/// every row read at every reaper pass. Per client (LATERAL), each count is a range of that
/// index: as many ranges as clients, however many codes are live.
pub const COUNT_EXPIRED_UNUSED: &str = "SELECT coalesce(sum(x.n), 0)::bigint \
     FROM oauth_clients c CROSS JOIN LATERAL (SELECT count(*) AS n FROM device_authorizations a \
         WHERE a.client_id = c.client_id AND a.expires_at <= $1 \
         AND a.consumed_at IS NULL AND a.denied_at IS NULL) x";

/// One batch of at most `$2` expired authorizations, found client by client as in
/// [`COUNT_EXPIRED_UNUSED`], then deleted by primary key: `id = ANY(ARRAY(…))`, as `id IN (…)`
/// was planned as a hash join over the whole table.
pub const PURGE_AUTHORIZATIONS: &str = "DELETE FROM device_authorizations WHERE id = ANY(ARRAY( \
     SELECT x.id FROM oauth_clients c CROSS JOIN LATERAL (SELECT a.id \
         FROM device_authorizations a WHERE a.client_id = c.client_id AND a.expires_at <= $1 \
         ORDER BY a.expires_at LIMIT $2) x LIMIT $2))";
