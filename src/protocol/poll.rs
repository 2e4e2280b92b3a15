//! What to answer a device polling the token endpoint (RFC 8628 §3.4–3.5), as a pure function
//! of the stored authorization and the clock.

use super::error::ErrorCode;

/// RFC 8628 §3.5: on `slow_down` "the interval MUST be increased by 5 seconds for this and all
/// subsequent requests".
pub const SLOW_DOWN_STEP_SECONDS: i64 = 5;

/// The least a poll may come before it is due without a `slow_down`; see [`grace_ms`].
pub const MIN_GRACE_MS: i64 = 750;

/// How early a poll may arrive before it is due, in ms: a quarter of the interval, at least
/// [`MIN_GRACE_MS`] (750 ms at the 1–3 s intervals, 1.25 s at the default 5 s).
///
/// RFC 8628 §3.5 says the client "SHOULD wait at least the number of seconds specified by the
/// interval", and Go's golang.org/x/oauth2 waits on a ticker: each poll is sent on a tick, so
/// its arrival carries the network's and the scheduler's jitter, and a poll that left a few ms
/// late makes the next gap a few ms short of the interval. Compared strictly, such gaps got
/// `slow_down` (issue 19: 8 of 34 polls at 5 s). A grace on each gap alone cannot tell jitter
/// from a client that is too fast: at a 1 s interval, ±300 ms of jitter makes gaps as short as
/// 400 ms, shorter than the 500 ms of a client polling twice as often as it should. So a poll
/// is due one interval after the previous poll was *due*, not after it arrived (the virtual
/// schedule of a GCRA, as in ATM cell-rate policing): a poll that came early is owed back by
/// the next one, a client on a timer never drifts, whatever its jitter within ± half the grace,
/// and a client that is faster than the interval on average uses the grace up and gets
/// `slow_down` — at half the interval, by its second early poll whatever came before.
pub fn grace_ms(interval_seconds: i64) -> i64 {
    (interval_seconds.saturating_mul(1000) / 4).max(MIN_GRACE_MS)
}

/// The parts of a device authorization that decide a poll's answer. Times in ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollState {
    /// Whether the code was issued to the polling client.
    pub same_client: bool,
    /// When the code stops being valid.
    pub expires_at: i64,
    /// The current minimum interval for this code.
    pub poll_interval_seconds: i64,
    /// The previous poll, if any.
    pub last_polled_at: Option<i64>,
    /// How long before it was due the previous poll arrived (ms, 0 up to [`grace_ms`]): the
    /// next poll is due one interval after the previous one was due (see [`grace_ms`]). Kept
    /// in memory only (`app::polls`); 0 when unknown (read from the database), which errs
    /// on the lenient side.
    pub early_ms: i64,
    /// Set once a person approved.
    pub approved_at: Option<i64>,
    /// Set once a person denied.
    pub denied_at: Option<i64>,
    /// Set once tokens were issued for this code.
    pub consumed_at: Option<i64>,
}

/// The decision for one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollDecision {
    /// Issue tokens and mark the code consumed.
    Issue,
    /// Answer with an error; `record_poll` says whether to store this poll's time (and
    /// `early_ms`), and `new_interval` a grown interval to store.
    Refuse {
        /// The error code to send.
        error: ErrorCode,
        /// Store `last_polled_at = now`.
        record_poll: bool,
        /// With `record_poll`: how long before it was due this poll came, to store as
        /// [`PollState::early_ms`].
        early_ms: i64,
        /// Store this as the code's new `poll_interval_seconds`.
        new_interval: Option<i64>,
    },
}

impl PollDecision {
    fn refuse(error: ErrorCode) -> PollDecision {
        PollDecision::Refuse {
            error,
            record_poll: false,
            early_ms: 0,
            new_interval: None,
        }
    }
}

/// Decides a poll. `state` is `None` when no live code matches.
///
/// Order matters: a code that was used, or belongs to another client, is `invalid_grant`
/// whatever else holds (RFC 6749 §5.2); expiry beats everything the person did; an approved or
/// denied code is answered at once even if the device polled early, since `slow_down` is "a
/// variant of authorization_pending" (RFC 8628 §3.5) and only applies while pending.
pub fn decide(state: Option<&PollState>, now: i64) -> PollDecision {
    let Some(s) = state else {
        return PollDecision::refuse(ErrorCode::InvalidGrant);
    };
    if !s.same_client || s.consumed_at.is_some() {
        return PollDecision::refuse(ErrorCode::InvalidGrant);
    }
    if now >= s.expires_at {
        return PollDecision::refuse(ErrorCode::ExpiredToken);
    }
    if s.denied_at.is_some() {
        return PollDecision::refuse(ErrorCode::AccessDenied);
    }
    if s.approved_at.is_some() {
        return PollDecision::Issue;
    }
    let Some(last) = s.last_polled_at else {
        return PollDecision::Refuse {
            error: ErrorCode::AuthorizationPending,
            record_poll: true,
            early_ms: 0,
            new_interval: None,
        };
    };
    // RFC 8628 §3.5 with a grace for jitter: see grace_ms.
    let grace = grace_ms(s.poll_interval_seconds);
    let due = last + s.early_ms.clamp(0, grace) + s.poll_interval_seconds * 1000;
    if now < due - grace {
        // The schedule starts again from this poll, at the grown interval.
        PollDecision::Refuse {
            error: ErrorCode::SlowDown,
            record_poll: true,
            early_ms: 0,
            new_interval: Some(s.poll_interval_seconds + SLOW_DOWN_STEP_SECONDS),
        }
    } else {
        PollDecision::Refuse {
            error: ErrorCode::AuthorizationPending,
            record_poll: true,
            early_ms: (due - now).max(0),
            new_interval: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> PollState {
        PollState {
            same_client: true,
            expires_at: 600_000,
            poll_interval_seconds: 5,
            last_polled_at: None,
            early_ms: 0,
            approved_at: None,
            denied_at: None,
            consumed_at: None,
        }
    }

    fn error_of(d: PollDecision) -> ErrorCode {
        match d {
            PollDecision::Refuse { error, .. } => error,
            PollDecision::Issue => panic!("issued"),
        }
    }

    #[test]
    fn pending_then_slow_down_grows_interval() {
        let mut s = pending();
        assert_eq!(
            error_of(decide(Some(&s), 1000)),
            ErrorCode::AuthorizationPending
        );
        s.last_polled_at = Some(1000);
        let d = decide(Some(&s), 4000);
        assert_eq!(
            d,
            PollDecision::Refuse {
                error: ErrorCode::SlowDown,
                record_poll: true,
                early_ms: 0,
                new_interval: Some(10)
            }
        );
        s.poll_interval_seconds = 10;
        s.last_polled_at = Some(4000);
        // Waiting the old interval is still too soon.
        assert_eq!(error_of(decide(Some(&s), 9500)), ErrorCode::SlowDown);
        assert_eq!(
            error_of(decide(Some(&s), 14_000)),
            ErrorCode::AuthorizationPending
        );
    }

    #[test]
    fn terminal_states() {
        assert_eq!(error_of(decide(None, 0)), ErrorCode::InvalidGrant);
        let mut s = pending();
        s.same_client = false;
        assert_eq!(error_of(decide(Some(&s), 0)), ErrorCode::InvalidGrant);
        let mut s = pending();
        s.consumed_at = Some(1);
        s.approved_at = Some(1);
        assert_eq!(error_of(decide(Some(&s), 2)), ErrorCode::InvalidGrant);
        let mut s = pending();
        s.denied_at = Some(1);
        assert_eq!(error_of(decide(Some(&s), 2)), ErrorCode::AccessDenied);
        assert_eq!(error_of(decide(Some(&s), 600_000)), ErrorCode::ExpiredToken);
        let mut s = pending();
        s.approved_at = Some(1);
        s.last_polled_at = Some(1);
        assert_eq!(
            decide(Some(&s), 2),
            PollDecision::Issue,
            "approval beats slow_down"
        );
        assert_eq!(error_of(decide(Some(&s), 600_000)), ErrorCode::ExpiredToken);
    }

    /// A tiny deterministic generator (xorshift64*), so the property tests need no crate and
    /// a failure names its seed.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        /// Uniform in `lo..=hi`.
        fn between(&mut self, lo: i64, hi: i64) -> i64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
            lo + (r % (hi - lo + 1) as u64) as i64
        }
    }

    /// Answers polls at `times` (ms) as the server does, storing what each decision says.
    struct Code(PollState);

    impl Code {
        fn new(interval: i64) -> Code {
            Code(PollState {
                poll_interval_seconds: interval,
                expires_at: i64::MAX,
                ..pending()
            })
        }
        fn poll(&mut self, now: i64) -> ErrorCode {
            match decide(Some(&self.0), now) {
                PollDecision::Refuse {
                    error,
                    record_poll,
                    early_ms,
                    new_interval,
                } => {
                    assert!(record_poll);
                    self.0.last_polled_at = Some(now);
                    self.0.early_ms = early_ms;
                    if let Some(i) = new_interval {
                        self.0.poll_interval_seconds = i;
                    }
                    error
                }
                PollDecision::Issue => panic!("issued"),
            }
        }
        /// What a poll at `now` would get, storing nothing.
        fn clone_poll(&self, now: i64) -> ErrorCode {
            Code(self.0.clone()).poll(now)
        }
    }

    #[test]
    fn the_grace_is_a_quarter_of_the_interval_and_at_least_750_ms() {
        assert_eq!(grace_ms(1), 750);
        assert_eq!(grace_ms(3), 750);
        assert_eq!(grace_ms(5), 1250);
        assert_eq!(grace_ms(10), 2500);
        // A poll up to the grace early is pending; one more millisecond is slow_down.
        for interval in [1, 5, 10] {
            let mut c = Code::new(interval);
            c.poll(1000);
            let due = 1000 + interval * 1000;
            assert_eq!(
                c.clone_poll(due - grace_ms(interval)),
                ErrorCode::AuthorizationPending
            );
            assert_eq!(c.poll(due - grace_ms(interval) - 1), ErrorCode::SlowDown);
        }
    }

    /// Issue 19: golang.org/x/oauth2 polls on a ticker, every `interval` exactly, and the
    /// polls arrive with jitter either side. Such a client never gets slow_down, with ±300 ms
    /// of jitter at every interval, and with up to ± half the grace.
    #[test]
    fn a_client_on_a_timer_never_gets_slow_down_whatever_its_jitter() {
        for interval in 1..=12 {
            for (seed, jitter) in
                (0..40).flat_map(|s| [(s, 300), (s + 1000, grace_ms(interval) / 2)])
            {
                let mut rng = Rng::new(seed * 100 + interval as u64);
                let mut c = Code::new(interval);
                let start = rng.between(0, 10_000);
                for k in 0..300 {
                    let at = start + k * interval * 1000 + rng.between(-jitter, jitter);
                    assert_eq!(
                        c.poll(at),
                        ErrorCode::AuthorizationPending,
                        "interval {interval} s, jitter ±{jitter} ms, seed {seed}, poll {k}"
                    );
                }
            }
        }
    }

    /// A client that waits the interval after each answer (openid-client) is never early.
    #[test]
    fn a_client_that_sleeps_the_interval_never_gets_slow_down() {
        let mut rng = Rng::new(7);
        let mut c = Code::new(1);
        let mut at = 0;
        for _ in 0..1000 {
            assert_eq!(c.poll(at), ErrorCode::AuthorizationPending);
            at += 1000 + rng.between(0, 400);
        }
    }

    /// A client polling at half the interval gets slow_down by its second early poll,
    /// whatever it did before (its last poll may have been as early as the grace allows).
    #[test]
    fn a_client_at_half_the_interval_gets_slow_down_within_two_polls() {
        for interval in 1..=12 {
            for seed in 0..200 {
                let mut rng = Rng::new(seed * 100 + interval as u64);
                let mut c = Code::new(interval);
                // First on a timer with jitter, for a while.
                let polite = rng.between(0, 20);
                let start = rng.between(0, 10_000);
                let mut at = 0;
                for k in 0..=polite {
                    at = start + k * interval * 1000 + rng.between(-300, 300);
                    assert_eq!(c.poll(at), ErrorCode::AuthorizationPending);
                }
                let half = interval * 500;
                let first = c.poll(at + half + rng.between(-50, 50));
                let second = c.poll(at + 2 * half + rng.between(-50, 50));
                assert!(
                    first == ErrorCode::SlowDown || second == ErrorCode::SlowDown,
                    "interval {interval} s, seed {seed}: {first:?} then {second:?}"
                );
                if interval >= 2 {
                    // Past 1 s, half the interval is more than the grace early: at once.
                    assert_eq!(first, ErrorCode::SlowDown, "interval {interval} s");
                }
            }
        }
    }

    /// Any client faster than the interval on average uses the grace up: one that polls
    /// `d` ms early every time gets slow_down within grace / d polls, and then must keep to
    /// the grown interval.
    #[test]
    fn a_client_slightly_too_fast_on_average_gets_slow_down_eventually() {
        for (interval, early) in [(1, 100), (1, 20), (5, 200), (5, 50)] {
            let mut c = Code::new(interval);
            let gap = interval * 1000 - early;
            let bound = grace_ms(interval) / early + 2;
            let first_slow = (0..=bound)
                .find(|k| c.poll(k * gap) == ErrorCode::SlowDown)
                .unwrap_or_else(|| panic!("{interval} s, {early} ms early: never slowed"));
            assert!(first_slow >= 2, "{interval} s, {early} ms early: too soon");
        }
    }
}
