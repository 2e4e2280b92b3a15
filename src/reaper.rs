//! The reaper: deletes expired rows in small batches on an interval, so the file does not grow
//! without bound. Correctness never depends on it — every read checks expiry — so a failed run
//! is logged and the next one tries again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::db::{
    self, device_authorizations, devices, refresh_tokens, sessions, signing_keys, Db, DbError,
};
use crate::metrics::{Metrics, Outcome};
use crate::polls::PollTracker;

/// Rows deleted by one pass, per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Expired device authorizations.
    pub authorizations: usize,
    /// Of those, how many were never exchanged or denied.
    pub unused_authorizations: usize,
    /// Expired devices (with their remaining tokens).
    pub devices: usize,
    /// Expired refresh tokens.
    pub refresh_tokens: usize,
    /// Revocation records of access tokens that have expired anyway.
    pub revocations: usize,
    /// Expired browser sessions.
    pub sessions: usize,
    /// Retired signing keys whose every token has expired.
    pub keys: usize,
}

/// Runs until `shutdown` turns true, purging every `interval`.
/// `key_grace` is the access token lifetime: how long a retired key must stay published.
/// Each pass also writes back the poll times remembered in `polls`; the last write-back
/// happens at shutdown.
pub async fn run(
    db: Db,
    polls: Arc<PollTracker>,
    metrics: Arc<Metrics>,
    interval: Duration,
    batch: u32,
    key_grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => break,
        }
        if let Err(e) = write_back_polls(&db, &polls).await {
            tracing::warn!(error = %e, "writing back poll times failed; will retry");
        }
        if *shutdown.borrow() {
            break;
        }
        match purge(&db, batch, key_grace, &shutdown).await {
            Ok(r) if r != Reaped::default() => {
                metrics.reaped("device_authorizations", r.authorizations);
                metrics.reaped("devices", r.devices);
                metrics.reaped("refresh_tokens", r.refresh_tokens);
                metrics.reaped("revoked_access_tokens", r.revocations);
                metrics.reaped("sessions", r.sessions);
                metrics.reaped("signing_keys", r.keys);
                for _ in 0..r.unused_authorizations {
                    metrics.authorization(Outcome::Expired);
                }
                tracing::info!(?r, "reaper deleted expired rows")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reaper pass failed; will retry"),
        }
    }
    if let Err(e) = write_back_polls(&db, &polls).await {
        tracing::warn!(error = %e, "writing back poll times at shutdown failed");
    }
    tracing::debug!("reaper stopped");
}

/// Writes the remembered poll times to `last_polled_at` (what admins see) and forgets codes
/// that have expired.
pub async fn write_back_polls(db: &Db, polls: &PollTracker) -> Result<(), DbError> {
    polls.prune(db::now_ms());
    let times = polls.take_dirty();
    if times.is_empty() {
        return Ok(());
    }
    db.run(move |conn| device_authorizations::write_poll_times(conn, &times))
        .await
}

/// A table's "delete one batch of expired rows" function.
type DeleteBatch = fn(&rusqlite::Connection, i64, u32) -> Result<usize, DbError>;

/// One pass: each table in batches of `batch` rows, one short transaction per batch, stopping
/// early at shutdown.
pub async fn purge(
    db: &Db,
    batch: u32,
    key_grace: Duration,
    shutdown: &watch::Receiver<bool>,
) -> Result<Reaped, DbError> {
    let grace = db::ms(key_grace);
    let unused = db
        .run(|conn| device_authorizations::count_expired_unused(conn, db::now_ms()))
        .await? as usize;
    Ok(Reaped {
        unused_authorizations: unused,
        authorizations: purge_table(db, batch, shutdown, device_authorizations::delete_expired)
            .await?,
        refresh_tokens: purge_table(db, batch, shutdown, refresh_tokens::delete_expired).await?,
        devices: purge_table(db, batch, shutdown, devices::delete_expired).await?,
        revocations: purge_table(
            db,
            batch,
            shutdown,
            refresh_tokens::delete_expired_revocations,
        )
        .await?,
        sessions: purge_table(db, batch, shutdown, sessions::delete_expired).await?,
        keys: db
            .run(move |conn| signing_keys::delete_expired(conn, db::now_ms(), grace))
            .await?,
    })
}

async fn purge_table(
    db: &Db,
    batch: u32,
    shutdown: &watch::Receiver<bool>,
    delete: DeleteBatch,
) -> Result<usize, DbError> {
    let mut total = 0;
    while !*shutdown.borrow() {
        let n = db
            .run(move |conn| delete(conn, db::now_ms(), batch))
            .await?;
        total += n;
        if n < batch as usize {
            break;
        }
        // Let polls and approvals take the write lock between batches.
        tokio::task::yield_now().await;
    }
    Ok(total)
}
