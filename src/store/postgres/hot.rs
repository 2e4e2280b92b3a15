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
use crate::domain::model::{Client, DeviceAuthorization, Started};
use crate::domain::rules;
use crate::protocol::codes::UserCode;
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::resource;
use crate::store::{
    Admission, Caller, ClientAuth, NewAuthorization, PendingCode, PollMark, StartOutcome,
};

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
        // statement (W2 on one instance, single runs with one-statement starts and before
        // memory answered slow_down for 8 s: one slot 38.6k and 29.6k polls a second, two
        // 22.4k and 30.2k, three 18.4k and 21.4k).
        let polls = Group::start(BATCH, 1, move |work| {
            let p = p.clone();
            async move { poll_batch(&p, work).await }
        });
        let p = pool.clone();
        // Two batches of starts at a time: each transaction locks its client's row (the
        // foreign keys' FOR KEY SHARE), which concurrent ones share through a multixact. W1
        // with a statement per start: 7.2–8.4k a second with one slot, 11.1–11.4k with two,
        // 9.6–9.7k with four; with one statement per batch (START_ROWS), alternating single
        // runs: one slot 19.2k and 19.2k, two 19.3k and 18.3k, four 17.2k and 17.2k.
        let starts = Group::start(BATCH, 2, move |news| {
            let p = p.clone();
            async move { start_many(&p, news).await }
        });
        Groups { polls, starts }
    }
}

/// What a device authorization comes to once its client is known: the checks of SQLite's
/// `flow::start_authorization`, made without the database.
// Made once per request and consumed at once: boxing the answer would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// Answered without writing: a refusal, or the cap.
    Done(Result<StartOutcome, OAuthError>),
    /// Read the client's pending codes again (the cap's [`Admission::Recount`]).
    Recount { cap: usize, addresses: bool },
    /// Start it, first ending `evict`'s code if given.
    Start {
        scope: String,
        evict: Option<String>,
    },
}

/// The [`Step`] of `new`, whose caller authenticated as `client`.
fn step(new: &NewAuthorization, client: &Client) -> Step {
    let scope = match rules::requested_scope(&new.scope, client) {
        Ok(s) => s.to_string(),
        Err(e) => return Step::Done(Err(e)),
    };
    if let Some(asked) = &new.facts.resource {
        if let Err(e) = client.allowed(&new.server_audience).check(asked) {
            return Step::Done(Err(OAuthError::new(ErrorCode::InvalidTarget, e)));
        }
    }
    // At the cap, the address holding the most gives up its oldest code to an address holding
    // fewer (the cap's decision, made before the trip): a flood cannot lock other devices out.
    match &new.admission {
        Admission::Full => Step::Done(Ok(StartOutcome::Full)),
        Admission::Recount { cap, addresses } => Step::Recount {
            cap: *cap,
            addresses: *addresses,
        },
        Admission::Issue { evict } => Step::Start {
            scope,
            evict: evict.clone(),
        },
    }
}

/// Carries out `step` for `new`, whose client is `client_id`, on `conn`.
async fn run_step<C: GenericClient>(
    conn: &C,
    new: NewAuthorization,
    client_id: &str,
    step: Step,
) -> Result<Result<StartOutcome, OAuthError>, PgError> {
    match step {
        Step::Done(outcome) => Ok(outcome),
        Step::Recount { cap, addresses } => {
            let codes = pending_codes(conn, client_id, new.now, cap, addresses).await?;
            Ok(Ok(StartOutcome::Recount(codes)))
        }
        Step::Start { scope, evict } => {
            let (started, evicted) = start(conn, new, client_id, scope, evict).await?;
            Ok(Ok(StartOutcome::Started { started, evicted }))
        }
    }
}

/// One device authorization on `conn`, in a transaction of its own: see
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
    let step = step(&new, &client);
    run_step(conn, new, &client.client_id, step).await
}

/// A batch's device authorizations on `conn` (its transaction), answered in order: each
/// distinct caller authenticated once, the authorizations that end no other code inserted by
/// one [`START_ROWS`](super::flow_sql::START_ROWS) statement, and the others (an eviction, a
/// recount) pipelined beside it.
async fn start_together<C: GenericClient + Sync>(
    conn: &C,
    news: Vec<NewAuthorization>,
) -> Result<Vec<Result<StartOutcome, OAuthError>>, PgError> {
    // A batch usually holds one client's requests: its credentials are checked once.
    let mut distinct: Vec<&ClientAuth> = Vec::new();
    let mut which = Vec::with_capacity(news.len());
    for new in &news {
        let same = |seen: &&ClientAuth| match (&seen.caller, &new.auth.caller) {
            (Caller::Presented(a), Caller::Presented(b)) => {
                a.client_id == b.client_id && a.secret == b.secret && seen.grant == new.auth.grant
            }
            _ => false,
        };
        match distinct.iter().position(same) {
            Some(k) => which.push(k),
            None => {
                which.push(distinct.len());
                distinct.push(&new.auth);
            }
        }
    }
    let clients = futures_util::future::try_join_all(
        distinct
            .into_iter()
            .map(|auth| rows::authenticate(conn, auth)),
    )
    .await?;
    let mut answers: Vec<Option<Result<StartOutcome, OAuthError>>> =
        (0..news.len()).map(|_| None).collect();
    let (mut plain, mut others) = (Vec::new(), Vec::new());
    for ((k, new), c) in news.into_iter().enumerate().zip(which) {
        let client = match &clients[c] {
            Ok((client, _)) => client,
            Err(e) => {
                answers[k] = Some(Err(e.clone()));
                continue;
            }
        };
        let client_id = client.client_id.clone();
        match step(&new, client) {
            Step::Done(outcome) => answers[k] = Some(outcome),
            Step::Start { scope, evict: None } => plain.push((k, new, client_id, scope)),
            step => others.push((k, new, client_id, step)),
        }
    }
    let singles = futures_util::future::try_join_all(others.into_iter().map(
        |(k, new, client_id, step)| async move {
            Ok::<_, PgError>((k, run_step(conn, new, &client_id, step).await?))
        },
    ));
    let (singles, rows) = futures_util::future::try_join(singles, start_rows(conn, plain)).await?;
    for (k, outcome) in singles.into_iter().chain(rows) {
        answers[k] = Some(outcome);
    }
    answers
        .into_iter()
        .map(|a| {
            a.ok_or_else(|| PgError::Internal("a device authorization went unanswered".into()))
        })
        .collect()
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
/// [`START`](super::flow_sql::START) or [`START_ROWS`](super::flow_sql::START_ROWS) (whose
/// device stands).
const START_AGAIN: &str = "INSERT INTO device_authorizations (id, created_at, client_id, \
     device_id, user_code, scope, expires_at, poll_interval_seconds, device_code_hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (user_code) DO NOTHING RETURNING id";

/// `new`'s device as the `devices` row keeps it: its metadata (JSON) and its resources.
fn stored_facts(new: &NewAuthorization) -> (String, Option<String>) {
    let metadata = serde_json::json!({ "user_agent": new.facts.user_agent }).to_string();
    let resource = new.facts.resource.as_deref().map(resource::to_stored);
    (metadata, resource)
}

/// Inserts `new`'s authorization (its device stands) with fresh user codes until one is free:
/// user codes are unique across every stored row, live or not yet reaped, and with 20^8 of
/// them a collision is rare.
async fn insert_again<C: GenericClient>(
    conn: &C,
    new: &NewAuthorization,
    client_id: &str,
    scope: &str,
) -> Result<UserCode, PgError> {
    let again = conn.prepare_cached(START_AGAIN).await?;
    for _ in 0..10 {
        let code = UserCode::generate();
        let inserted = conn
            .query_opt(
                &again,
                &[
                    &new.authorization_id,
                    &new.now,
                    &client_id,
                    &new.device_id,
                    &code.as_str(),
                    &scope,
                    &new.expires_at,
                    &seconds(new.poll_interval_seconds),
                    &new.device_code.key(),
                ],
            )
            .await?;
        if inserted.is_some() {
            return Ok(code);
        }
    }
    Err(PgError::Internal(
        "no unused user code found in 11 draws".into(),
    ))
}

/// What [`start`] and [`start_rows`] answer for `new`, stored with user code `code`.
fn started(new: NewAuthorization, client_id: &str, scope: String, code: UserCode) -> Started {
    let authorization = DeviceAuthorization {
        id: new.authorization_id,
        created_at: new.now,
        client_id: client_id.to_string(),
        device_id: new.device_id,
        user_code: code.as_str().to_string(),
        scope,
        expires_at: new.expires_at,
        poll_interval_seconds: new.poll_interval_seconds,
        last_polled_at: None,
        approved_by_account_id: None,
        approved_at: None,
        denied_at: None,
        consumed_at: None,
    };
    Started {
        device_code: new.device_code,
        user_code: code,
        authorization,
    }
}

/// Creates a pending device and its authorization, after ending `evict`'s code; answers
/// whether that one was ended.
async fn start<C: GenericClient>(
    conn: &C,
    new: NewAuthorization,
    client_id: &str,
    scope: String,
    evict: Option<String>,
) -> Result<(Started, bool), PgError> {
    let (metadata, stored_resource) = stored_facts(&new);
    let facts = &new.facts;
    let mut code = new.user_code.clone();
    let stmt = conn.prepare_cached(super::flow_sql::START).await?;
    let row = conn
        .query_one(
            &stmt,
            &[
                &new.device_id,
                &client_id,
                &facts.name,
                &new.expires_at,
                &facts.os,
                &facts.ip_address,
                &facts.hostname,
                &facts.location.city,
                &facts.location.region,
                &facts.location.country,
                &metadata,
                &new.now,
                &stored_resource,
                &new.authorization_id,
                &code.as_str(),
                &scope,
                &seconds(new.poll_interval_seconds),
                &new.device_code.key(),
                &evict,
            ],
        )
        .await?;
    let evicted = count(&row, 0)? > 0;
    if count(&row, 1)? == 0 {
        code = insert_again(conn, &new, client_id, &scope).await?;
    }
    Ok((started(new, client_id, scope, code), evicted))
}

/// Authorizations that end no other code (`(index, new, client_id, scope)`), in one
/// [`START_ROWS`](super::flow_sql::START_ROWS) statement; answers each index's outcome.
async fn start_rows<C: GenericClient>(
    conn: &C,
    plain: Vec<(usize, NewAuthorization, String, String)>,
) -> Result<Vec<(usize, Result<StartOutcome, OAuthError>)>, PgError> {
    if plain.is_empty() {
        return Ok(Vec::new());
    }
    let codes: Vec<UserCode> = plain.iter().map(|(_, n, ..)| n.user_code.clone()).collect();
    let stored: Vec<(String, Option<String>)> =
        plain.iter().map(|(_, new, ..)| stored_facts(new)).collect();
    let keys: Vec<Vec<u8>> = plain.iter().map(|(_, n, ..)| n.device_code.key()).collect();
    let column = |f: fn(&NewAuthorization) -> Option<&str>| -> Vec<Option<&str>> {
        plain.iter().map(|(_, n, ..)| f(n)).collect()
    };
    let device_ids = column(|n| Some(n.device_id.as_str()));
    let client_ids: Vec<&str> = plain.iter().map(|(_, _, c, _)| c.as_str()).collect();
    let names = column(|n| n.facts.name.as_deref());
    let expires: Vec<i64> = plain.iter().map(|(_, n, ..)| n.expires_at).collect();
    let oses = column(|n| n.facts.os.as_deref());
    let addresses = column(|n| n.facts.ip_address.as_deref());
    let hostnames = column(|n| n.facts.hostname.as_deref());
    let cities = column(|n| n.facts.location.city.as_deref());
    let regions = column(|n| n.facts.location.region.as_deref());
    let countries = column(|n| n.facts.location.country.as_deref());
    let metadata: Vec<&str> = stored.iter().map(|(m, _)| m.as_str()).collect();
    let nows: Vec<i64> = plain.iter().map(|(_, n, ..)| n.now).collect();
    let resources: Vec<Option<&str>> = stored.iter().map(|(_, r)| r.as_deref()).collect();
    let ids = column(|n| Some(n.authorization_id.as_str()));
    let user_codes: Vec<&str> = codes.iter().map(UserCode::as_str).collect();
    let scopes: Vec<&str> = plain.iter().map(|(_, _, _, s)| s.as_str()).collect();
    let intervals: Vec<i32> = plain
        .iter()
        .map(|(_, n, ..)| seconds(n.poll_interval_seconds))
        .collect();
    let stmt = conn.prepare_cached(super::flow_sql::START_ROWS).await?;
    let inserted = conn
        .query(
            &stmt,
            &[
                &device_ids,
                &client_ids,
                &names,
                &expires,
                &oses,
                &addresses,
                &hostnames,
                &cities,
                &regions,
                &countries,
                &metadata,
                &nows,
                &resources,
                &ids,
                &user_codes,
                &scopes,
                &intervals,
                &keys,
            ],
        )
        .await?
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<std::collections::HashSet<String>, _>>()?;
    let mut out = Vec::with_capacity(plain.len());
    for ((k, new, client_id, scope), mut code) in plain.into_iter().zip(codes) {
        if !inserted.contains(&new.authorization_id) {
            code = insert_again(conn, &new, &client_id, &scope).await?;
        }
        let started = started(new, &client_id, scope, code);
        out.push((
            k,
            Ok(StartOutcome::Started {
                started,
                evicted: false,
            }),
        ));
    }
    Ok(out)
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

/// Device authorizations started together (RFC 8628 §3.1–3.2), in one transaction
/// ([`start_together`]: one statement inserts those that end no other code) and one commit
/// (one WAL flush) for them all, where each alone would flush its own: the batch of
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
        Box::pin(async move { start_together(tx, news).await })
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
