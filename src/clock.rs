//! The one clock: every time hallpass stores or compares is milliseconds since the Unix epoch,
//! read here. Protocol code, use cases and every storage backend take their `now` from this
//! module (or from a caller that did), so a test or a backend never needs another notion of
//! time.

use std::time::Duration;

/// Milliseconds since the Unix epoch: the unit of every stored time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A duration as milliseconds, saturating.
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
