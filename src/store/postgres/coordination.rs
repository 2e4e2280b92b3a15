//! What several instances on one database coordinate through it (the tables at the end of
//! schema.sql), as functions the PostgreSQL store and the server build on:
//!
//! - [`try_lease`] / [`release_lease`]: one holder at a time for work that must not run twice
//!   at once (the reaper), with an expiry on the database's clock, so a dead holder's lease
//!   lapses and instances whose clocks disagree still agree.
//! - [`take_token`] / [`refund_token`]: shared token buckets for the limits that count
//!   failures, the same arithmetic as `limits::RateLimit` (a bucket of `per_minute` tokens
//!   refilling evenly over a minute), exact under concurrent takes from any instances (the
//!   upsert locks the row).
//! - [`bump_changes`] / [`read_changes`]: change counters by kind, moved in the transaction
//!   that makes the change, so a cache validated against them is dropped within one read
//!   interval of any instance's (or the command line's) change.
//!
//! Each takes a pooled connection or a transaction (deadpool's `GenericClient`), and the hot
//! statements are prepared once per connection (`prepare_cached`).

use deadpool_postgres::GenericClient;

use super::PgError;

/// The database's clock in milliseconds since the epoch, as SQL.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Takes or renews the lease `name` for `holder` for `ttl_ms` of the database's clock: true
/// when `holder` holds it now (it was free, expired, or already `holder`'s). One statement.
pub async fn try_lease<C: GenericClient>(
    client: &C,
    name: &str,
    holder: &str,
    ttl_ms: i64,
) -> Result<bool, PgError> {
    let sql = format!(
        "INSERT INTO leases AS l (name, holder, expires_at) VALUES ($1, $2, {DB_NOW_MS} + $3) \
         ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
             expires_at = EXCLUDED.expires_at \
         WHERE l.holder = EXCLUDED.holder OR l.expires_at <= {DB_NOW_MS} \
         RETURNING holder"
    );
    let stmt = client.prepare_cached(&sql).await?;
    Ok(client
        .query_opt(&stmt, &[&name, &holder, &ttl_ms])
        .await?
        .is_some())
}

/// Gives the lease `name` up, if `holder` holds it (an instance shutting down cleanly), so
/// another can take it at once instead of after its expiry.
pub async fn release_lease<C: GenericClient>(
    client: &C,
    name: &str,
    holder: &str,
) -> Result<(), PgError> {
    client
        .execute(
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            &[&name, &holder],
        )
        .await?;
    Ok(())
}

/// Takes one token from the shared bucket of `limit` for `subject` at `now_ms`: `Ok(Ok(()))`
/// when there was one, `Ok(Err(seconds))` with how long until one is free when not (as
/// `limits::RateLimit::check`). `per_minute` 0 means no limit. A bucket is full (`per_minute`
/// tokens) when first seen; a denied take leaves it as it was (refilling is a function of
/// time, so not writing is the same as writing the refilled value). One statement when a
/// token is there, two when not.
pub async fn take_token<C: GenericClient>(
    client: &C,
    limit: &str,
    subject: &[u8],
    per_minute: u32,
    now_ms: i64,
) -> Result<Result<(), u64>, PgError> {
    if per_minute == 0 {
        return Ok(Ok(()));
    }
    let capacity = f64::from(per_minute);
    let per_ms = capacity / 60_000.0;
    let refilled = "least($3::float8, b.tokens + greatest($4 - b.updated_at, 0) * $5::float8)";
    let sql = format!(
        "INSERT INTO limit_buckets AS b (limit_name, subject, tokens, updated_at) \
         VALUES ($1, $2, $3::float8 - 1, $4) \
         ON CONFLICT (limit_name, subject) DO UPDATE \
             SET tokens = {refilled} - 1, updated_at = greatest(b.updated_at, $4) \
             WHERE {refilled} >= 1 \
         RETURNING tokens"
    );
    let stmt = client.prepare_cached(&sql).await?;
    let taken = client
        .query_opt(&stmt, &[&limit, &subject, &capacity, &now_ms, &per_ms])
        .await?;
    if taken.is_some() {
        return Ok(Ok(()));
    }
    let row = client
        .query_opt(
            "SELECT tokens, updated_at FROM limit_buckets WHERE limit_name = $1 AND subject = $2",
            &[&limit, &subject],
        )
        .await?;
    let tokens = row.map_or(capacity, |r| {
        let (tokens, updated): (f64, i64) = (r.get(0), r.get(1));
        (tokens + (now_ms - updated).max(0) as f64 * per_ms).min(capacity)
    });
    let per_second = capacity / 60.0;
    Ok(Err(((1.0 - tokens) / per_second).ceil().max(1.0) as u64))
}

/// Gives back a token taken for a request that turned out not to count (a limit on failures
/// reserves before it knows; `limits::RateLimit::refund_key`). Never above `per_minute`.
pub async fn refund_token<C: GenericClient>(
    client: &C,
    limit: &str,
    subject: &[u8],
    per_minute: u32,
) -> Result<(), PgError> {
    if per_minute == 0 {
        return Ok(());
    }
    client
        .execute(
            "UPDATE limit_buckets SET tokens = least($3::float8, tokens + 1) \
             WHERE limit_name = $1 AND subject = $2",
            &[&limit, &subject, &f64::from(per_minute)],
        )
        .await?;
    Ok(())
}

/// Deletes up to `batch` buckets untouched for a minute or more before `now_ms`: they have
/// refilled completely and carry no information (the reaper's job).
pub async fn reap_buckets<C: GenericClient>(
    client: &C,
    now_ms: i64,
    batch: i64,
) -> Result<u64, PgError> {
    Ok(client
        .execute(
            "DELETE FROM limit_buckets WHERE (limit_name, subject) IN (SELECT limit_name, \
             subject FROM limit_buckets WHERE updated_at <= $1::bigint - 60000 LIMIT $2)",
            &[&now_ms, &batch],
        )
        .await?)
}

/// The kinds of cached things whose changes are counted (rows of `change_counters`).
pub const CHANGE_KINDS: &[&str] = &["keys", "clients", "users", "devices"];

/// Counts a change of `kind` (one of [`CHANGE_KINDS`]) in the transaction `tx` that makes it,
/// and notifies listeners (`NOTIFY hallpass_changes, kind`) when it commits. Both become
/// visible with the change itself, or not at all.
pub async fn bump_changes<C: GenericClient>(tx: &C, kind: &str) -> Result<(), PgError> {
    let n = tx
        .execute(
            "WITH bumped AS (UPDATE change_counters SET seq = seq + 1 WHERE kind = $1 \
             RETURNING kind) SELECT pg_notify('hallpass_changes', kind) FROM bumped",
            &[&kind],
        )
        .await?;
    if n != 1 {
        return Err(PgError::Internal(format!("no change counter {kind:?}")));
    }
    Ok(())
}

/// Every counter, by kind. A reader that read these, then data, read data at least as new as
/// the counters: compare with a later read to know whether anything of a kind changed since.
pub async fn read_changes<C: GenericClient>(
    client: &C,
) -> Result<std::collections::BTreeMap<String, i64>, PgError> {
    Ok(client
        .query("SELECT kind, seq FROM change_counters", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}
