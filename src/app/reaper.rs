//! The reaper: deletes expired rows in small batches on an interval, so the file does not grow
//! without bound. Correctness never depends on it — every read checks expiry — so a failed run
//! is logged and the next one tries again.
//!
//! Several instances sharing a PostgreSQL database each write back their own poll times, but
//! only the holder of the store's `reaper` lease purges: the lease lasts [`LEASE_PASSES`]
//! intervals and is renewed at each pass, so when its holder dies another instance takes it
//! over within that time (on SQLite, one process, the lease is always held).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::polls::PollTracker;
use crate::clock;
use crate::metrics::{Metrics, Outcome};
use crate::store::{Expired, Store, StoreError};

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

/// How many reaper intervals the lease outlives its last renewal.
pub const LEASE_PASSES: u32 = 3;

/// The name of the reaper's lease.
const LEASE: &str = "reaper";

/// Runs until `shutdown` turns true, purging every `interval`.
/// `key_grace` is the access token lifetime: how long a retired key must stay published.
/// Each pass also writes back the poll times remembered in `polls`; the last write-back
/// happens at shutdown.
pub async fn run(
    store: Store,
    polls: Arc<PollTracker>,
    metrics: Arc<Metrics>,
    interval: Duration,
    batch: u32,
    key_grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let lease_ms = clock::ms(interval * LEASE_PASSES).max(1000);
    let mut holding = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => break,
        }
        if let Err(e) = write_back_polls(&store, &polls, batch).await {
            tracing::warn!(error = %e, "writing back poll times failed; will retry");
        }
        if *shutdown.borrow() {
            break;
        }
        match store.lease(LEASE, lease_ms).await {
            Ok(held) => {
                if held != holding && store.is_shared() {
                    match held {
                        true => {
                            tracing::info!("this instance runs the reaper (it holds the lease)")
                        }
                        false => tracing::info!("another instance runs the reaper now"),
                    }
                }
                holding = held;
                if !held {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take the reaper's lease; will retry");
                continue;
            }
        }
        match purge(&store, batch, key_grace, &shutdown).await {
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
    if let Err(e) = write_back_polls(&store, &polls, batch).await {
        tracing::warn!(error = %e, "writing back poll times at shutdown failed");
    }
    if holding && store.is_shared() {
        // Another instance takes over at its next pass instead of after the lease's expiry.
        if let Err(e) = store.release_lease(LEASE).await {
            tracing::debug!(error = %e, "could not give up the reaper's lease");
        }
    }
    tracing::debug!("reaper stopped");
}

/// Writes the remembered poll times to `last_polled_at` (what admins see) and forgets codes
/// that have expired, at most `batch` rows per transaction. One transaction for all of them
/// stalled every write queued behind it: with 100,000 codes polled, device authorizations
/// running beside the polls (W7 in benches/load.rs) waited up to 201–434 ms, against 39–102 ms
/// in eleven of twelve runs with batches of 500. Times a failed batch did not write are kept
/// for the next pass.
pub async fn write_back_polls(
    store: &Store,
    polls: &PollTracker,
    batch: u32,
) -> Result<(), StoreError> {
    polls.prune(clock::now_ms());
    let mut times = polls.take_dirty();
    // In id order: ids are UUIDv7, so this is the order of the primary-key index and of the
    // table, and consecutive updates land on the same few pages instead of one random page
    // each (the tracker hands them over in hash order). perf of W2 over 100,000 live codes put
    // the write-back at 20% of the server's samples before this, 7% after.
    times.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let batch = (batch as usize).max(1);
    for start in (0..times.len()).step_by(batch) {
        let end = (start + batch).min(times.len());
        let written = store.write_poll_times(times[start..end].to_vec()).await;
        if let Err(e) = written {
            polls.restore_dirty(&times[start..]);
            return Err(e);
        }
        // Let polls and approvals take the write lock between batches.
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// One pass: each kind of expired row in batches of `batch` rows, one short transaction per
/// batch, stopping early at shutdown.
pub async fn purge(
    store: &Store,
    batch: u32,
    key_grace: Duration,
    shutdown: &watch::Receiver<bool>,
) -> Result<Reaped, StoreError> {
    let grace = clock::ms(key_grace);
    let unused = store.count_expired_unused(clock::now_ms()).await? as usize;
    Ok(Reaped {
        unused_authorizations: unused,
        authorizations: purge_kind(store, batch, shutdown, Expired::Authorizations).await?,
        refresh_tokens: purge_kind(store, batch, shutdown, Expired::RefreshTokens).await?,
        devices: purge_kind(store, batch, shutdown, Expired::Devices).await?,
        revocations: purge_kind(store, batch, shutdown, Expired::Revocations).await?,
        sessions: purge_kind(store, batch, shutdown, Expired::Sessions).await?,
        keys: store.purge_keys(clock::now_ms(), grace).await?,
    })
}

async fn purge_kind(
    store: &Store,
    batch: u32,
    shutdown: &watch::Receiver<bool>,
    what: Expired,
) -> Result<usize, StoreError> {
    let mut total = 0;
    while !*shutdown.borrow() {
        let n = store.purge(what, clock::now_ms(), batch).await?;
        total += n;
        if n < batch as usize {
            break;
        }
        // Let polls and approvals take the write lock between batches.
        tokio::task::yield_now().await;
    }
    Ok(total)
}
