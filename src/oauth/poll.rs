//! What to answer a device polling the token endpoint (RFC 8628 §3.4–3.5), as a pure function
//! of the stored authorization and the clock.

use super::error::ErrorCode;

/// RFC 8628 §3.5: on `slow_down` "the interval MUST be increased by 5 seconds for this and all
/// subsequent requests".
pub const SLOW_DOWN_STEP_SECONDS: i64 = 5;

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
    /// Answer with an error; `record_poll` says whether to store this poll's time, and
    /// `new_interval` a grown interval to store.
    Refuse {
        /// The error code to send.
        error: ErrorCode,
        /// Store `last_polled_at = now`.
        record_poll: bool,
        /// Store this as the code's new `poll_interval_seconds`.
        new_interval: Option<i64>,
    },
}

impl PollDecision {
    fn refuse(error: ErrorCode) -> PollDecision {
        PollDecision::Refuse {
            error,
            record_poll: false,
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
    let too_soon = s
        .last_polled_at
        .is_some_and(|last| now - last < s.poll_interval_seconds * 1000);
    if too_soon {
        PollDecision::Refuse {
            error: ErrorCode::SlowDown,
            record_poll: true,
            new_interval: Some(s.poll_interval_seconds + SLOW_DOWN_STEP_SECONDS),
        }
    } else {
        PollDecision::Refuse {
            error: ErrorCode::AuthorizationPending,
            record_poll: true,
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
}
