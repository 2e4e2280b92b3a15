//! The reaper: deletes expired rows in small batches on an interval, so the file does not grow
//! without bound. Correctness never depends on it — every read checks expiry — so a failed run
//! is logged and the next one tries again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock;
use crate::db::{
    device_authorizations, devices, refresh_tokens, sessions, signing_keys, Db, DbError,
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
        if let Err(e) = write_back_polls(&db, &polls, batch).await {
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
    if let Err(e) = write_back_polls(&db, &polls, batch).await {
        tracing::warn!(error = %e, "writing back poll times at shutdown failed");
    }
    tracing::debug!("reaper stopped");
}

/// Writes the remembered poll times to `last_polled_at` (what admins see) and forgets codes
/// that have expired, at most `batch` rows per transaction. One transaction for all of them
/// stalled every write queued behind it: with 100,000 codes polled, device authorizations
/// running beside the polls (W7 in benches/load.rs) waited up to 201–434 ms, against 39–102 ms
/// in eleven of twelve runs with batches of 500. Times a failed batch did not write are kept
/// for the next pass.
pub async fn write_back_polls(db: &Db, polls: &PollTracker, batch: u32) -> Result<(), DbError> {
    polls.prune(clock::now_ms());
    let mut times = polls.take_dirty();
    // In id order: ids are UUIDv7, so this is the order of the primary-key index and of the
    // table, and consecutive updates land on the same few pages instead of one random page
    // each (the tracker hands them over in hash order). perf of W2 over 100,000 live codes put
    // the write-back at 20% of the server's samples before this, 7% after.
    times.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let times: Arc<[_]> = times.into();
    let batch = (batch as usize).max(1);
    for start in (0..times.len()).step_by(batch) {
        let end = (start + batch).min(times.len());
        let chunk = times.clone();
        // On a pooled connection, not through the group-commit writer: as writer jobs the
        // batches shared their commits (and the writer's larger checkpoints) with the device
        // authorizations beside them, and W7's tail grew (p99.9 61 / 72 ms against 29 / 40 ms,
        // two alternating runs after W2L).
        let written = db
            .run(move |conn| device_authorizations::write_poll_times(conn, &chunk[start..end]))
            .await;
        if let Err(e) = written {
            polls.restore_dirty(&times[start..]);
            return Err(e);
        }
        // Let polls and approvals take the write lock between batches.
        tokio::task::yield_now().await;
    }
    Ok(())
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
    let grace = clock::ms(key_grace);
    let unused = db
        .run(|conn| device_authorizations::count_expired_unused(conn, clock::now_ms()))
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
            .run(move |conn| signing_keys::delete_expired(conn, clock::now_ms(), grace))
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
            .run(move |conn| delete(conn, clock::now_ms(), batch))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Synchronous};
    use crate::db::clients;
    use crate::db::DbOptions;
    use crate::domain::model::{Client, DeviceFacts};
    use crate::flow;
    use crate::protocol::poll::PollState;

    fn pending(expires_at: i64) -> PollState {
        PollState {
            same_client: true,
            expires_at,
            poll_interval_seconds: 5,
            last_polled_at: None,
            early_ms: 0,
            approved_at: None,
            denied_at: None,
            consumed_at: None,
        }
    }

    /// `last_polled_at` of every authorization, in id order.
    fn stored_poll_times(db: &Db) -> Vec<Option<i64>> {
        db.run_sync(|c| {
            let mut s =
                c.prepare("SELECT last_polled_at FROM device_authorizations ORDER BY id")?;
            let v = s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(v)
        })
        .unwrap()
    }

    #[test]
    fn poll_times_are_written_back_in_batches_and_a_failed_batch_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(
            &dir.path().join("r.db"),
            &DbOptions {
                pool_size: 2,
                busy_timeout: Duration::from_secs(5),
                synchronous: Synchronous::Full,
            },
        )
        .unwrap();
        let now = clock::now_ms();
        let config = Config::default();
        let ids: Vec<String> = db
            .run_sync(|c| {
                clients::insert(c, &Client::public_for_tests("c", ""))?;
                (0..5)
                    .map(|_| {
                        flow::start(c, &config, "c", "", &DeviceFacts::default(), now)
                            .map(|s| s.authorization.id)
                    })
                    .collect()
            })
            .unwrap();
        let expires = now + 600_000;
        let polls = PollTracker::default();
        for (i, id) in ids.iter().enumerate() {
            polls.decide(id, &pending(expires), now + i as i64);
        }
        // The fourth code's update fails: its batch (the 3rd and 4th, in id order) writes
        // nothing, the 5th is not tried, and the earlier batch stands.
        db.run_sync(|c| {
            Ok(c.execute_batch(&format!(
                "CREATE TRIGGER fail BEFORE UPDATE ON device_authorizations \
                 WHEN NEW.id = '{}' BEGIN SELECT RAISE(ABORT, 'refused'); END",
                ids[3]
            ))?)
        })
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(rt.block_on(write_back_polls(&db, &polls, 2)).is_err());
        assert_eq!(
            stored_poll_times(&db),
            vec![Some(now), Some(now + 1), None, None, None]
        );
        // The next pass writes what the failed one could not, and only that.
        db.run_sync(|c| Ok(c.execute_batch("DROP TRIGGER fail")?))
            .unwrap();
        let mut left: Vec<String> = polls.take_dirty().into_iter().map(|t| t.0).collect();
        left.sort();
        assert_eq!(left, ids[2..]);
        polls.restore_dirty(
            &ids[2..]
                .iter()
                .map(|id| (id.clone(), 0, None))
                .collect::<Vec<_>>(),
        );
        rt.block_on(write_back_polls(&db, &polls, 2)).unwrap();
        assert_eq!(
            stored_poll_times(&db),
            (0..5).map(|i| Some(now + i)).collect::<Vec<_>>()
        );
        assert!(polls.take_dirty().is_empty());
    }
}
