//! When each device last polled, kept in memory.
//!
//! RFC 8628 §3.5's `slow_down` needs the time of the previous poll of a code. Storing it on
//! every poll would make each poll a write transaction with an fsync — the bottleneck of the
//! token endpoint. Instead the time, and the interval `slow_down` grows, live here; a poll
//! writes nothing unless it consumes an approved code. The reaper writes both back in batches
//! ([`PollTracker::take_dirty`], every `reaper.interval` and at shutdown), so `last_polled_at`
//! and `poll_interval_seconds` are what admins see and what survives a restart; a crash loses
//! at most one `reaper.interval` of them (the device then polls at the last stored interval).
//!
//! A code polled again within [`FRESH`] of the last database read of it — a device polling far
//! too fast, or a flood — is remembered: the read of a *pending* code for [`CODE_FRESH`], of its
//! client for [`FRESH`]. While a read is remembered, a poll that is refused for coming too soon
//! (`slow_down`) is answered from memory, touching neither the database nor the blocking pool.
//! That answer needs nothing from other instances: the poll came too soon after this instance's
//! own last poll of the code, so it is too soon whatever later polls another instance saw. An
//! `authorization_pending` answer does depend on them (another instance may have seen a later
//! poll, which makes this one too soon), so it is never given from memory: only the database
//! answers it, and a device polling at its interval (5 s by default) always reads the database.
//! A remembered read is also dropped when a decision is made in this process
//! ([`PollTracker::decided`]) and whenever anything was committed since the read (another
//! process, such as `hallpass device approve`, committed something: the store's [`Stamp`]), so
//! approvals are seen at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::model::Client;
use crate::protocol::error::ErrorCode;
use crate::protocol::poll::{self, PollDecision, PollState};
use crate::store::Stamp;

/// How long a database read of a client answers from memory, and how soon a code must be
/// polled again for its read to be remembered.
pub const FRESH: Duration = Duration::from_secs(1);

/// How long a remembered read of a pending code answers polls that come too soon. Any change
/// to the code moves the store's [`Stamp`], which drops the read at once; this bounds how long
/// a change the stamp missed could go unseen by a device that keeps polling too fast. Longer
/// than the default interval (5 s) is safe, as only `slow_down` is answered from memory: with
/// 8 s rather than 4, two instances behind a round-robin read the database half as often
/// (W2 on PostgreSQL, two instances / one: 0.84× and 0.87× against 0.71× and 0.84×).
pub const CODE_FRESH: Duration = Duration::from_secs(8);

/// At most this many remembered code reads (each ~200 bytes); past it, reads are not kept.
const MAX_CACHED_CODES: usize = 262_144;

/// A remembered read of a client: the row, when it was read, and the [`Stamp`] before it.
type CachedClient = (Arc<Client>, Instant, Stamp);

/// A remembered read of a pending code.
#[derive(Debug, Clone)]
struct CachedCode {
    id: Arc<str>,
    user_code: String,
    client_id: String,
    state: PollState,
    fetched: Instant,
    stamp: Stamp,
}

const SHARDS: usize = 16;

/// The in-memory poll state of one authorization.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The previous poll, ms.
    last_polled_at: i64,
    /// The interval after any `slow_down` answered from here.
    interval: i64,
    /// How long before it was due the previous poll came ([`PollState::early_ms`]); in
    /// memory only, as an `i32` so the mark stays 32 bytes.
    early_ms: i32,
    /// When the code expires, so stale marks can be pruned.
    expires_at: i64,
    /// Not yet written back to `last_polled_at`.
    dirty: bool,
    /// The interval grew here and is not yet written back.
    interval_dirty: bool,
}

/// Poll times by authorization id, sharded so concurrent polls of different codes do not
/// contend.
pub struct PollTracker {
    shards: Vec<Mutex<HashMap<String, Mark>>>,
    /// Recent reads of pending codes, by device-code hash.
    codes: Vec<Mutex<HashMap<[u8; 32], CachedCode>>>,
    /// Recent reads of clients, by client_id.
    clients: Mutex<HashMap<String, CachedClient>>,
    /// Whether reads are remembered at all (the store can tell whether anything changed since
    /// a [`Stamp`]).
    remembering: bool,
    /// How long a remembered code read answers ([`CODE_FRESH`]).
    code_fresh: Duration,
    /// Codes approved or denied in this process, by normalized user code: remembered reads
    /// older than this are not used.
    decided: Mutex<HashMap<String, Instant>>,
}

impl Default for PollTracker {
    /// A tracker that remembers poll times but no reads.
    fn default() -> Self {
        PollTracker {
            remembering: false,
            code_fresh: CODE_FRESH,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            codes: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            clients: Mutex::new(HashMap::new()),
            decided: Mutex::new(HashMap::new()),
        }
    }
}

impl PollTracker {
    /// A tracker that also remembers reads, each under the store's [`Stamp`] taken before it.
    pub fn remembering() -> PollTracker {
        PollTracker {
            remembering: true,
            ..PollTracker::default()
        }
    }

    /// A remembering tracker whose code reads answer for `code_fresh` (tests).
    #[cfg(test)]
    fn remembering_for(code_fresh: Duration) -> PollTracker {
        PollTracker {
            code_fresh,
            ..PollTracker::remembering()
        }
    }

    /// Whether reads may be remembered at all.
    fn remembers(&self) -> bool {
        self.remembering
    }
    fn shard(&self, id: &str) -> &Mutex<HashMap<String, Mark>> {
        let h = id
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.shards[h % SHARDS]
    }

    /// Decides a poll of authorization `id` whose stored state is `stored`, merging in the
    /// remembered poll time, and records this poll — atomically per code, so two simultaneous
    /// polls of one code see each other.
    pub fn decide(&self, id: &str, stored: &PollState, now: i64) -> PollDecision {
        self.decide_if(id, stored, now, |_| true)
            .unwrap_or_else(|d| d)
    }

    /// As [`PollTracker::decide`], if `take` accepts the decision; if not, the decision
    /// (as `Err`) and nothing recorded.
    fn decide_if(
        &self,
        id: &str,
        stored: &PollState,
        now: i64,
        take: impl Fn(&PollDecision) -> bool,
    ) -> Result<PollDecision, PollDecision> {
        let mut shard = self.shard(id).lock().expect("poll tracker poisoned");
        let mark = shard.get(id).copied();
        let mut state = stored.clone();
        if let Some(m) = mark {
            // The remembered poll is the latest one unless the database knows a later one
            // (another process's), whose earliness is unknown.
            if state
                .last_polled_at
                .is_none_or(|stored| m.last_polled_at >= stored)
            {
                state.last_polled_at = Some(m.last_polled_at);
                state.early_ms = i64::from(m.early_ms);
            }
            state.poll_interval_seconds = state.poll_interval_seconds.max(m.interval);
        }
        let decision = poll::decide(Some(&state), now);
        if !take(&decision) {
            return Err(decision);
        }
        if let PollDecision::Refuse {
            record_poll: true,
            new_interval,
            early_ms,
            ..
        } = decision
        {
            let next = Mark {
                last_polled_at: now,
                early_ms: i32::try_from(early_ms).unwrap_or(i32::MAX),
                interval: new_interval.unwrap_or(state.poll_interval_seconds),
                expires_at: stored.expires_at,
                dirty: true,
                interval_dirty: new_interval.is_some() || mark.is_some_and(|m| m.interval_dirty),
            };
            match shard.get_mut(id) {
                Some(m) => *m = next,
                None => {
                    shard.insert(id.to_string(), next);
                }
            }
        }
        Ok(decision)
    }

    /// Whether authorization `id` was polled at or after `since` (ms), as far as this process
    /// saw.
    pub fn polled_since(&self, id: &str, since: i64) -> bool {
        let shard = self.shard(id).lock().expect("poll tracker poisoned");
        shard.get(id).is_some_and(|m| m.last_polled_at >= since)
    }

    /// Poll times (and intervals grown from memory) not yet written back, clearing their dirty
    /// flags.
    pub fn take_dirty(&self) -> Vec<(String, i64, Option<i64>)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().expect("poll tracker poisoned");
            for (id, m) in shard.iter_mut().filter(|(_, m)| m.dirty) {
                m.dirty = false;
                let interval = m.interval_dirty.then_some(m.interval);
                m.interval_dirty = false;
                out.push((id.clone(), m.last_polled_at, interval));
            }
        }
        out
    }

    /// Marks times taken by [`PollTracker::take_dirty`] dirty again, after a write-back failed
    /// to store them. The next take hands over each mark's current values, which are never
    /// older than the ones that failed.
    pub fn restore_dirty(&self, times: &[(String, i64, Option<i64>)]) {
        for (id, _, interval) in times {
            let mut shard = self.shard(id).lock().expect("poll tracker poisoned");
            if let Some(m) = shard.get_mut(id.as_str()) {
                m.dirty = true;
                m.interval_dirty |= interval.is_some();
            }
        }
    }

    fn code_shard(&self, hash: &[u8; 32]) -> &Mutex<HashMap<[u8; 32], CachedCode>> {
        &self.codes[hash[0] as usize % SHARDS]
    }

    /// Remembers a database read of a code, if it is still undecided.
    pub fn remember_code(
        &self,
        hash: [u8; 32],
        id: &str,
        user_code: &str,
        client_id: &str,
        state: &PollState,
        stamp: Stamp,
    ) {
        if !self.remembers()
            || state.approved_at.is_some()
            || state.denied_at.is_some()
            || state.consumed_at.is_some()
        {
            return;
        }
        let mut shard = self.code_shard(&hash).lock().expect("poll cache poisoned");
        if shard.len() >= MAX_CACHED_CODES / SHARDS && !shard.contains_key(&hash) {
            shard.retain(|_, c| c.fetched.elapsed() < self.code_fresh);
            if shard.len() >= MAX_CACHED_CODES / SHARDS {
                return;
            }
        }
        shard.insert(
            hash,
            CachedCode {
                id: id.into(),
                user_code: user_code.to_string(),
                client_id: client_id.to_string(),
                state: state.clone(),
                fetched: Instant::now(),
                stamp,
            },
        );
    }

    /// Decides a poll from a fresh remembered read, or `None` (read the database).
    /// `client_id` is the authenticated client's; `current` is the store's stamp taken for this
    /// poll (one per poll, shared with [`PollTracker::cached_client`]).
    pub fn decide_cached(
        &self,
        hash: &[u8; 32],
        client_id: &str,
        now: i64,
        current: &Stamp,
    ) -> Option<PollDecision> {
        let (id, state) = {
            let shard = self.code_shard(hash).lock().expect("poll cache poisoned");
            let c = shard.get(hash)?;
            if c.fetched.elapsed() >= self.code_fresh || c.stamp != *current {
                return None;
            }
            let decided = self
                .decided
                .lock()
                .expect("poll cache poisoned")
                .get(&c.user_code)
                .is_some_and(|at| *at >= c.fetched);
            if decided {
                return None;
            }
            let mut state = c.state.clone();
            state.same_client = c.client_id == client_id;
            (c.id.clone(), state)
        };
        // Only the database may hand out tokens, or say a poll came late enough (see the
        // module's notes): then nothing is recorded here, and the poll reads the database.
        self.decide_if(&id, &state, now, |d| {
            !matches!(
                d,
                PollDecision::Issue
                    | PollDecision::Refuse {
                        error: ErrorCode::AuthorizationPending,
                        ..
                    }
            )
        })
        .ok()
    }

    /// Says that the code the person typed was just approved or denied here, so polls read the
    /// database again at once.
    pub fn decided(&self, typed_user_code: &str) {
        if let Some(code) = crate::protocol::codes::UserCode::parse(typed_user_code) {
            self.decided
                .lock()
                .expect("poll cache poisoned")
                .insert(code.as_str().to_string(), Instant::now());
        }
    }

    /// Remembers a database read of a client, made after `stamp` was taken.
    pub fn remember_client(&self, client: &Arc<Client>, stamp: Stamp) {
        if !self.remembers() {
            return;
        }
        let mut clients = self.clients.lock().expect("client cache poisoned");
        if clients.len() >= 4096 && !clients.contains_key(&client.client_id) {
            clients.retain(|_, (_, at, _)| at.elapsed() < FRESH);
        }
        clients.insert(
            client.client_id.clone(),
            (client.clone(), Instant::now(), stamp),
        );
    }

    /// A client read within [`FRESH`], if any.
    pub fn cached_client(&self, client_id: &str, current: &Stamp) -> Option<Arc<Client>> {
        let found = {
            let clients = self.clients.lock().expect("client cache poisoned");
            clients
                .get(client_id)
                .filter(|(_, at, _)| at.elapsed() < FRESH)
                .map(|(c, _, stamp)| (c.clone(), *stamp))
        };
        let (client, stamp) = found?;
        (stamp == *current).then_some(client)
    }

    /// Forgets codes that have expired and reads that are no longer fresh; returns how many
    /// marks remain.
    pub fn prune(&self, now: i64) -> usize {
        for shard in &self.codes {
            let mut shard = shard.lock().expect("poll cache poisoned");
            shard.retain(|_, c| c.fetched.elapsed() < self.code_fresh);
        }
        self.clients
            .lock()
            .expect("client cache poisoned")
            .retain(|_, (_, at, _)| at.elapsed() < FRESH);
        self.decided
            .lock()
            .expect("poll cache poisoned")
            .retain(|_, at| at.elapsed() < self.code_fresh);
        self.shards
            .iter()
            .map(|s| {
                let mut s = s.lock().expect("poll tracker poisoned");
                s.retain(|_, m| m.expires_at > now);
                s.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::error::ErrorCode;

    fn pending() -> PollState {
        PollState {
            same_client: true,
            expires_at: 100_000,
            poll_interval_seconds: 5,
            last_polled_at: None,
            early_ms: 0,
            approved_at: None,
            denied_at: None,
            consumed_at: None,
        }
    }

    fn error(d: PollDecision) -> ErrorCode {
        match d {
            PollDecision::Refuse { error, .. } => error,
            PollDecision::Issue => panic!("issued"),
        }
    }

    #[test]
    fn remembers_polls_and_grown_intervals() {
        let t = PollTracker::default();
        let s = pending();
        let at = |ms| error(t.decide("a", &s, ms));
        assert_eq!(at(0), ErrorCode::AuthorizationPending);
        assert_eq!(at(1000), ErrorCode::SlowDown, "interval now 10 s");
        // Waiting the old 5 s is still too soon, and each slow_down adds 5 s more (gaps of
        // the old interval, more than the grace short of the new one: see poll::grace_ms).
        assert_eq!(at(6000), ErrorCode::SlowDown, "interval now 15 s");
        assert_eq!(at(16_000), ErrorCode::SlowDown, "interval now 20 s");
        assert_eq!(at(36_000), ErrorCode::AuthorizationPending);
        // Another code is independent.
        assert_eq!(
            error(t.decide("b", &s, 36_100)),
            ErrorCode::AuthorizationPending
        );
        let mut dirty = t.take_dirty();
        dirty.sort();
        // Every grown interval is written back with the poll time.
        assert_eq!(
            dirty,
            vec![("a".into(), 36_000, Some(20)), ("b".into(), 36_100, None)]
        );
        assert!(t.take_dirty().is_empty());
        assert_eq!(t.prune(100_000), 0);
    }

    /// The schedule survives between polls in memory: a poll that came early is owed back by
    /// the next one, so a client polling at 700 ms on a 1 s interval is refused by its third
    /// poll, while a ticker with ±300 ms of jitter never is.
    #[test]
    fn earliness_is_remembered_between_polls() {
        let t = PollTracker::default();
        let mut s = pending();
        s.poll_interval_seconds = 1;
        let at = |id, ms| error(t.decide(id, &s, ms));
        assert_eq!(at("fast", 0), ErrorCode::AuthorizationPending);
        assert_eq!(at("fast", 700), ErrorCode::AuthorizationPending);
        assert_eq!(at("fast", 1400), ErrorCode::AuthorizationPending);
        assert_eq!(at("fast", 2100), ErrorCode::SlowDown);
        // Late, early, late, early: gaps of 1.6 s and 0.4 s, each poll within 300 ms of its
        // tick.
        for (k, jitter) in [300, -300, 300, -300, 250, -250, 0].into_iter().enumerate() {
            let tick = 10_000 + k as i64 * 1000;
            assert_eq!(at("ticker", tick + jitter), ErrorCode::AuthorizationPending);
        }
        // A later poll time in the database (another process's) wins over the remembered
        // one; its earliness is unknown, so it counts as on time.
        let mut stored = pending();
        stored.poll_interval_seconds = 1;
        stored.last_polled_at = Some(17_000);
        assert_eq!(
            error(t.decide("ticker", &stored, 17_200)),
            ErrorCode::SlowDown
        );
    }

    #[test]
    fn a_mark_stays_32_bytes() {
        // Issue 7: 100,000 live codes keep a mark each.
        assert_eq!(std::mem::size_of::<Mark>(), 32);
    }

    #[test]
    fn approval_is_not_recorded() {
        let t = PollTracker::default();
        let mut s = pending();
        s.approved_at = Some(1);
        assert_eq!(t.decide("a", &s, 0), PollDecision::Issue);
        assert!(t.take_dirty().is_empty());
    }

    #[test]
    fn fresh_reads_of_pending_codes_answer_from_memory() {
        // The store's stamp, standing for its commits (the store's own test checks that a commit
        // changes it: store::sqlite::stamp).
        let commits = std::cell::Cell::new(0u128);
        let stamp = || Stamp::new(Some(commits.get()));
        let window = Duration::from_millis(300);
        let t = PollTracker::remembering_for(window);
        let hash = [7u8; 32];
        assert!(
            t.decide_cached(&hash, "c", 0, &stamp()).is_none(),
            "nothing read yet"
        );
        // A decided code is never remembered: only the database hands out tokens.
        let mut approved = pending();
        approved.approved_at = Some(1);
        t.remember_code(hash, "a", "WDJBMJHT", "c", &approved, stamp());
        assert!(t.decide_cached(&hash, "c", 0, &stamp()).is_none());

        t.remember_code(hash, "a", "WDJBMJHT", "c", &pending(), stamp());
        // A poll that would be pending is the database's to answer (another instance may have
        // seen a later poll), and memory records nothing of it.
        assert!(t.decide_cached(&hash, "c", 0, &stamp()).is_none());
        assert!(t.take_dirty().is_empty());
        // The database path decides it, and records it here.
        assert_eq!(
            error(t.decide("a", &pending(), 0)),
            ErrorCode::AuthorizationPending
        );
        // Too soon after that: slow_down, from memory.
        assert_eq!(
            error(t.decide_cached(&hash, "c", 1000, &stamp()).unwrap()),
            ErrorCode::SlowDown
        );
        // Another client presenting the code: invalid_grant, as from the database.
        assert_eq!(
            error(t.decide_cached(&hash, "other", 1500, &stamp()).unwrap()),
            ErrorCode::InvalidGrant
        );
        // Late enough for the grown interval (10 s): pending, so the database's again.
        assert!(t.decide_cached(&hash, "c", 12_000, &stamp()).is_none());
        // An approval made here is seen at once.
        t.decided("wdjb-mjht");
        assert!(t.decide_cached(&hash, "c", 2000, &stamp()).is_none());
        t.remember_code(hash, "a", "WDJBMJHT", "c", &pending(), stamp());
        assert!(t.decide_cached(&hash, "c", 2000, &stamp()).is_some());
        // The interval grown from memory is written back.
        assert_eq!(t.take_dirty(), vec![("a".into(), 2000, Some(15))]);
        // A commit by anyone (the store's stamp changes) drops remembered reads.
        t.remember_code(hash, "a", "WDJBMJHT", "c", &pending(), stamp());
        assert!(t.decide_cached(&hash, "c", 3000, &stamp()).is_some());
        commits.set(1);
        assert!(t.decide_cached(&hash, "c", 3500, &stamp()).is_none());
        t.remember_code(hash, "a", "WDJBMJHT", "c", &pending(), stamp());
        // Reads go stale after the window.
        std::thread::sleep(window + Duration::from_millis(20));
        assert!(t.decide_cached(&hash, "c", 4000, &stamp()).is_none());
        t.prune(4000);
        assert!(t.codes.iter().all(|s| s.lock().unwrap().is_empty()));
    }
}
