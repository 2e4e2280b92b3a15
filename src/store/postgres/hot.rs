//! PostgreSQL's hot paths, as batches: device authorizations that arrive together start in one
//! transaction, and polls that arrive together are answered by one statement ([`Groups`], built
//! on [`super::group`]). The store's methods (`flow.rs`) queue work here; nothing here knows
//! the store, so the store can own the groups.

use deadpool_postgres::{GenericClient, Pool};

use super::flow_sql::{
    authorization_from_row, count, mark_from_row, seconds, AUTH_COLUMNS, AUTH_WIDTH, MARK_COLUMNS,
};
use super::group::Group;
use super::rows::{self, prefixed};
use super::{IsolationLevel, PgError};
use crate::domain::model::{DeviceAuthorization, Started};
use crate::domain::rules;
use crate::protocol::codes::UserCode;
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::resource;
use crate::store::{Admission, NewAuthorization, PendingCode, PollMark, StartOutcome};

/// The hot paths' group commits ([`super::group`]): what many requests ask at once is sent as
/// one batch.
#[derive(Clone)]
pub struct Groups {
    /// Polls: the reads of polls whose client is already authenticated (the authorization of
    /// each device code, by its key, with its shared poll mark) and judged polls' marks, one
    /// statement per batch ([`poll_batch`]).
    pub polls: Group<PollWork, Polled>,
    /// Device authorizations: one transaction, one commit per batch.
    pub starts: Group<NewAuthorization, Started1>,
}

/// At most this many requests in one batch.
const BATCH: usize = 64;

impl Groups {
    /// Starts the groups' tasks on the current Tokio runtime, each batch on a connection of
    /// `pool`.
    pub fn start(pool: &Pool) -> Groups {
        let p = pool.clone();
        // One batch of polls at a time: batches are larger, and each costs the server one
        // statement (W2 on one instance, in single runs: one slot 18.7–29.7k polls a second,
        // two 21.0–28.5k; the figures move more between runs than between settings).
        let polls = Group::start(BATCH, 1, move |work| {
            let p = p.clone();
            async move { poll_batch(&p, work).await }
        });
        let p = pool.clone();
        // Two batches of starts at a time: each transaction locks its client's row (the
        // foreign keys' FOR KEY SHARE), which concurrent ones share through a multixact. W1
        // measured 7.2–8.4k a second with one slot, 11.1–11.4k with two, 9.6–9.7k with four.
        let starts = Group::start(BATCH, 2, move |news| {
            let p = p.clone();
            async move { start_many(&p, news).await }
        });
        Groups { polls, starts }
    }
}

/// A device authorization's statements on `conn` (a batch's transaction): see
/// [`PgStore::start_authorization`](super::store::PgStore::start_authorization) and SQLite's
/// `flow::start_authorization`.
async fn start_authorization<C: GenericClient + Sync>(
    conn: &C,
    new: NewAuthorization,
) -> Result<Result<StartOutcome, OAuthError>, PgError> {
    let client = match rows::authenticate(conn, &new.auth).await? {
        Ok((client, _)) => client,
        Err(e) => return Ok(Err(e)),
    };
    let scope = match rules::requested_scope(&new.scope, &client) {
        Ok(s) => s.to_string(),
        Err(e) => return Ok(Err(e)),
    };
    if let Some(asked) = &new.facts.resource {
        if let Err(e) = client.allowed(&new.server_audience).check(asked) {
            return Ok(Err(OAuthError::new(ErrorCode::InvalidTarget, e)));
        }
    }
    // At the cap, the address holding the most gives up its oldest code to an address holding
    // fewer (the cap's decision, made before the trip): a flood cannot lock other devices out.
    let evict = match &new.admission {
        Admission::Full => return Ok(Ok(StartOutcome::Full)),
        Admission::Recount { cap, addresses } => {
            let codes = pending_codes(conn, &client.client_id, new.now, *cap, *addresses).await?;
            return Ok(Ok(StartOutcome::Recount(codes)));
        }
        Admission::Issue { evict } => evict.clone(),
    };
    let (started, evicted) = start(conn, new, &client.client_id, scope, evict).await?;
    Ok(Ok(StartOutcome::Started { started, evicted }))
}

/// A client's live, undecided codes, earliest expiry first, at most `cap`: with each code's
/// device address if `addresses`, or if the client turns out to hold `cap` codes.
async fn pending_codes<C: GenericClient>(
    conn: &C,
    client_id: &str,
    now: i64,
    cap: usize,
    addresses: bool,
) -> Result<Vec<PendingCode>, PgError> {
    let codes = read_pending(conn, client_id, now, cap, addresses).await?;
    if !addresses && codes.len() >= cap {
        return read_pending(conn, client_id, now, cap, true).await;
    }
    Ok(codes)
}

async fn read_pending<C: GenericClient>(
    conn: &C,
    client_id: &str,
    now: i64,
    cap: usize,
    addresses: bool,
) -> Result<Vec<PendingCode>, PgError> {
    let sql = if addresses {
        "SELECT a.id, a.expires_at, d.ip_address FROM device_authorizations a \
         JOIN devices d ON d.id = a.device_id \
         WHERE a.client_id = $1 AND a.expires_at > $2 \
         AND a.approved_at IS NULL AND a.denied_at IS NULL AND a.consumed_at IS NULL \
         ORDER BY a.expires_at, a.id LIMIT $3"
    } else {
        "SELECT id, expires_at, NULL::text FROM device_authorizations \
         WHERE client_id = $1 AND expires_at > $2 \
         AND approved_at IS NULL AND denied_at IS NULL AND consumed_at IS NULL \
         ORDER BY expires_at, id LIMIT $3"
    };
    let stmt = conn.prepare_cached(sql).await?;
    let limit = i64::try_from(cap).unwrap_or(i64::MAX);
    conn.query(&stmt, &[&client_id, &now, &limit])
        .await?
        .iter()
        .map(|r| {
            Ok(PendingCode {
                id: r.try_get(0)?,
                expires_at: r.try_get(1)?,
                ip_address: r.try_get(2)?,
            })
        })
        .collect()
}

/// The authorization alone, with another user code, after a collision in
/// [`START`](super::flow_sql::START) (whose device stands).
const START_AGAIN: &str = "INSERT INTO device_authorizations (id, created_at, client_id, \
     device_id, user_code, scope, expires_at, poll_interval_seconds, device_code_hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (user_code) DO NOTHING RETURNING id";

/// Creates a pending device and its authorization, after ending `evict`'s code; answers
/// whether that one was ended.
async fn start<C: GenericClient>(
    conn: &C,
    new: NewAuthorization,
    client_id: &str,
    scope: String,
    evict: Option<String>,
) -> Result<(Started, bool), PgError> {
    let NewAuthorization {
        facts,
        authorization_id,
        device_id,
        device_code,
        poll_interval_seconds,
        expires_at,
        now,
        ..
    } = new;
    let metadata = serde_json::json!({ "user_agent": facts.user_agent }).to_string();
    let stored_resource = facts.resource.as_deref().map(resource::to_stored);
    let key = device_code.key();
    let interval = seconds(poll_interval_seconds);
    // User codes are unique across every stored row (live or not yet reaped). With 20^8 codes
    // a collision is rare; the insert then does nothing and we draw again.
    let mut code = UserCode::generate();
    let stmt = conn.prepare_cached(super::flow_sql::START).await?;
    let row = conn
        .query_one(
            &stmt,
            &[
                &device_id,
                &client_id,
                &facts.name,
                &expires_at,
                &facts.os,
                &facts.ip_address,
                &facts.hostname,
                &facts.location.city,
                &facts.location.region,
                &facts.location.country,
                &metadata,
                &now,
                &stored_resource,
                &authorization_id,
                &code.as_str(),
                &scope,
                &interval,
                &key,
                &evict,
            ],
        )
        .await?;
    let evicted = count(&row, 0)? > 0;
    let mut inserted = count(&row, 1)? > 0;
    let mut attempts = 0;
    while !inserted {
        attempts += 1;
        if attempts > 10 {
            return Err(PgError::Internal(
                "no unused user code found in 11 draws".into(),
            ));
        }
        code = UserCode::generate();
        let again = conn.prepare_cached(START_AGAIN).await?;
        inserted = conn
            .query_opt(
                &again,
                &[
                    &authorization_id,
                    &now,
                    &client_id,
                    &device_id,
                    &code.as_str(),
                    &scope,
                    &expires_at,
                    &interval,
                    &key,
                ],
            )
            .await?
            .is_some();
    }
    let authorization = DeviceAuthorization {
        id: authorization_id,
        created_at: now,
        client_id: client_id.to_string(),
        device_id,
        user_code: code.as_str().to_string(),
        scope,
        expires_at,
        poll_interval_seconds,
        last_polled_at: None,
        approved_by_account_id: None,
        approved_at: None,
        denied_at: None,
        consumed_at: None,
    };
    Ok((
        Started {
            device_code,
            user_code: code,
            authorization,
        },
        evicted,
    ))
}

/// What a poll asks of the database, grouped with the other polls of the moment
/// ([`PgStore::poll_read`](super::store::PgStore::poll_read),
/// [`PgStore::record_poll`](super::store::PgStore::record_poll)).
pub(super) enum PollWork {
    /// Read the authorization of this device code key, with its shared poll mark.
    Read(Vec<u8>),
    /// Share this judged poll's mark.
    Mark(PollMark),
}

/// The answer to a [`PollWork::Read`] (`None` for a mark, or a code that does not exist).
pub(super) type Polled = Option<(DeviceAuthorization, Option<PollMark>)>;

/// The polls waiting together, in one statement: it shares the judged polls' marks (an upsert
/// that never moves a mark back, so two instances judging polls of one code at once keep the
/// later poll and the larger interval) and reads the asked codes with their marks. The read
/// sees the marks as they were before this statement; the ones it writes were judged here, and
/// this process remembers them (`app::polls`), so a poll read in the same batch loses nothing.
/// A code judged twice in one batch is written once (its later poll, its larger interval), and
/// rows are taken in id order, so two batches that share codes wait rather than deadlock.
pub(super) async fn poll_batch(
    pool: &deadpool_postgres::Pool,
    work: Vec<PollWork>,
) -> Result<Vec<Polled>, PgError> {
    let mut keys = Vec::new();
    let mut merged: std::collections::BTreeMap<String, PollMark> = Default::default();
    for w in &work {
        match w {
            PollWork::Read(key) => keys.push(key.as_slice()),
            PollWork::Mark(m) => match merged.get_mut(&m.id) {
                Some(have) => {
                    let interval = have.poll_interval_seconds.max(m.poll_interval_seconds);
                    if m.last_polled_at >= have.last_polled_at {
                        *have = m.clone();
                    }
                    have.poll_interval_seconds = interval;
                }
                None => {
                    merged.insert(m.id.clone(), m.clone());
                }
            },
        }
    }
    let (mut ids, mut at, mut early, mut interval, mut expires) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for m in merged.into_values() {
        ids.push(m.id);
        at.push(m.last_polled_at);
        early.push(i32::try_from(m.early_ms).unwrap_or(i32::MAX));
        interval.push(i32::try_from(m.poll_interval_seconds).unwrap_or(i32::MAX));
        expires.push(m.expires_at);
    }
    let conn = pool.get().await?;
    let stmt = conn
        .prepare_cached(&format!(
            "WITH marked AS (INSERT INTO poll_state AS p (authorization_id, last_polled_at, \
                 early_ms, poll_interval_seconds, expires_at) \
                 SELECT * FROM unnest($2::text[], $3::bigint[], $4::int[], $5::int[], \
                     $6::bigint[]) \
                 ON CONFLICT (authorization_id) DO UPDATE SET \
                 last_polled_at = EXCLUDED.last_polled_at, early_ms = EXCLUDED.early_ms, \
                 poll_interval_seconds = greatest(p.poll_interval_seconds, \
                     EXCLUDED.poll_interval_seconds), written_back = FALSE \
                 WHERE p.last_polled_at <= EXCLUDED.last_polled_at) \
             SELECT a.device_code_hash, {}, {} FROM device_authorizations a \
             LEFT JOIN poll_state p ON p.authorization_id = a.id \
             WHERE a.device_code_hash = ANY($1)",
            prefixed("a", AUTH_COLUMNS),
            prefixed("p", MARK_COLUMNS)
        ))
        .await?;
    let rows = conn
        .query(&stmt, &[&keys, &ids, &at, &early, &interval, &expires])
        .await?;
    let mut found = std::collections::HashMap::with_capacity(rows.len());
    for r in rows {
        let key: Vec<u8> = r.try_get(0)?;
        let read = (
            authorization_from_row(&r, 1)?,
            mark_from_row(&r, 1 + AUTH_WIDTH)?,
        );
        found.insert(key, read);
    }
    Ok(work
        .iter()
        .map(|w| match w {
            PollWork::Read(key) => found.get(key).cloned(),
            PollWork::Mark(_) => None,
        })
        .collect())
}

/// Device authorizations started together (RFC 8628 §3.1–3.2), in one transaction: their
/// statements pipelined on one connection and one commit (one WAL flush) for them all, where
/// each alone would flush its own: the batch of
/// [`PgStore::start_authorization`](super::store::PgStore::start_authorization)'s group.
///
/// A batch that fails for a reason of its own making (an SQL error, not the database being
/// unavailable or busy) is run again one authorization per transaction, so that only the one
/// that fails is answered with its error, as if nothing had been grouped.
pub(super) async fn start_many(
    pool: &deadpool_postgres::Pool,
    news: Vec<NewAuthorization>,
) -> Result<Vec<Started1>, PgError> {
    let together = super::transaction(pool, IsolationLevel::ReadCommitted, |tx| {
        let news = news.clone();
        Box::pin(async move {
            futures_util::future::try_join_all(news.into_iter().map(|n| start_authorization(tx, n)))
                .await
        })
    })
    .await;
    match together {
        Ok(outcomes) => Ok(outcomes.into_iter().map(Ok).collect()),
        Err(PgError::Internal(why)) if news.len() > 1 => {
            tracing::debug!(error = %why, "a batch of device authorizations failed; one by one");
            let mut each = Vec::with_capacity(news.len());
            for n in news {
                let alone = super::transaction(pool, IsolationLevel::ReadCommitted, |tx| {
                    let n = n.clone();
                    Box::pin(async move { start_authorization(tx, n).await })
                })
                .await;
                each.push(alone);
            }
            Ok(each)
        }
        Err(e) => Err(e),
    }
}

/// One authorization's answer from [`start_many`].
pub(super) type Started1 = Result<Result<StartOutcome, OAuthError>, PgError>;
