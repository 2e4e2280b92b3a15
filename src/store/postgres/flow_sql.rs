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
