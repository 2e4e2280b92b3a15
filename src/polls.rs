//! When each device last polled, kept in memory.
//!
//! RFC 8628 §3.5's `slow_down` needs the time of the previous poll of a code. Storing it on
//! every poll would make each poll a write transaction with an fsync — the bottleneck of the
//! token endpoint. Instead the time lives here, and the database is written only when the
//! answer changes something durable: a `slow_down` grows the code's interval (stored at once,
//! so it survives a restart), and an approved code is consumed. The `last_polled_at` column that
//! admins see is written back in batches by the reaper ([`PollTracker::take_dirty`]).
//!
//! After a restart the map is empty, so a device's first poll cannot be `slow_down`; its grown
//! interval, being stored, still holds.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::oauth::poll::{self, PollDecision, PollState};

const SHARDS: usize = 16;

/// The in-memory poll state of one authorization.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The previous poll, ms.
    last_polled_at: i64,
    /// The interval after any `slow_down` answered from here.
    interval: i64,
    /// When the code expires, so stale marks can be pruned.
    expires_at: i64,
    /// Not yet written back to `last_polled_at`.
    dirty: bool,
}

/// Poll times by authorization id, sharded so concurrent polls of different codes do not
/// contend.
pub struct PollTracker {
    shards: Vec<Mutex<HashMap<String, Mark>>>,
}

impl Default for PollTracker {
    fn default() -> Self {
        PollTracker {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl PollTracker {
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
        let mut shard = self.shard(id).lock().expect("poll tracker poisoned");
        let mark = shard.get(id).copied();
        let mut state = stored.clone();
        if let Some(m) = mark {
            state.last_polled_at = Some(state.last_polled_at.unwrap_or(0).max(m.last_polled_at));
            state.poll_interval_seconds = state.poll_interval_seconds.max(m.interval);
        }
        let decision = poll::decide(Some(&state), now);
        if let PollDecision::Refuse {
            record_poll: true,
            new_interval,
            ..
        } = decision
        {
            shard.insert(
                id.to_string(),
                Mark {
                    last_polled_at: now,
                    interval: new_interval.unwrap_or(state.poll_interval_seconds),
                    expires_at: stored.expires_at,
                    dirty: true,
                },
            );
        }
        decision
    }

    /// Poll times not yet written back, clearing their dirty flag.
    pub fn take_dirty(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().expect("poll tracker poisoned");
            for (id, m) in shard.iter_mut().filter(|(_, m)| m.dirty) {
                m.dirty = false;
                out.push((id.clone(), m.last_polled_at));
            }
        }
        out
    }

    /// Forgets codes that have expired; returns how many marks remain.
    pub fn prune(&self, now: i64) -> usize {
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
    use crate::oauth::error::ErrorCode;

    fn pending() -> PollState {
        PollState {
            same_client: true,
            expires_at: 100_000,
            poll_interval_seconds: 5,
            last_polled_at: None,
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
        // Waiting the old 5 s is still too soon, and each slow_down adds 5 s more.
        assert_eq!(at(9000), ErrorCode::SlowDown, "interval now 15 s");
        assert_eq!(at(23_500), ErrorCode::SlowDown, "interval now 20 s");
        assert_eq!(at(43_500), ErrorCode::AuthorizationPending);
        // Another code is independent.
        assert_eq!(
            error(t.decide("b", &s, 43_600)),
            ErrorCode::AuthorizationPending
        );
        let mut dirty = t.take_dirty();
        dirty.sort();
        assert_eq!(dirty, vec![("a".into(), 43_500), ("b".into(), 43_600)]);
        assert!(t.take_dirty().is_empty());
        assert_eq!(t.prune(100_000), 0);
    }

    #[test]
    fn approval_is_not_recorded() {
        let t = PollTracker::default();
        let mut s = pending();
        s.approved_at = Some(1);
        assert_eq!(t.decide("a", &s, 0), PollDecision::Issue);
        assert!(t.take_dirty().is_empty());
    }
}
