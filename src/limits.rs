//! Per-client-address rate limits, in memory and bounded in memory.
//!
//! Each limit is a token bucket per address: `per_minute` requests refill evenly over a minute,
//! and a full bucket allows a burst of `per_minute`. IPv6 addresses are grouped by /64, since
//! one host usually owns a whole /64. These limits are separate from RFC 8628's polling
//! interval: a device polling politely never comes near the token endpoint's limit.
//!
//! The table holds at most [`MAX_TRACKED`] addresses. When it is full, buckets that have
//! refilled completely (they carry no information) are dropped; if that is not enough, the
//! table is cleared and a warning logged: under a flood from that many addresses, forgetting is
//! better than growing without bound.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked per limit.
pub const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One limit: a token bucket per client address.
pub struct RateLimit {
    /// What is limited, for the log.
    name: &'static str,
    /// Requests per minute; 0 disables the limit.
    per_minute: u32,
    buckets: Mutex<HashMap<u128, Bucket>>,
}

impl RateLimit {
    /// A limit of `per_minute` requests per address (0: unlimited).
    pub fn new(name: &'static str, per_minute: u32) -> RateLimit {
        RateLimit {
            name,
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request's token for `ip`; `Err(seconds)` says how long until one is free.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.check_at(group(ip), Instant::now())
    }

    /// [`RateLimit::check`] for another kind of key (a browser session's, say).
    pub fn check_key(&self, key: u128) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: u128, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().expect("rate limit poisoned");
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&key) {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < capacity
            });
            if buckets.len() >= MAX_TRACKED {
                tracing::warn!(
                    limit = self.name,
                    "rate limit table full; forgetting all addresses"
                );
                buckets.clear();
            }
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second).min(capacity);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }

    /// Whether `ip` may try now, without taking a token: for limits that count only failures
    /// (take one with [`RateLimit::check`] after each failure). `Err(seconds)` to wait.
    pub fn peek(&self, ip: IpAddr) -> Result<(), u64> {
        self.peek_key(group(ip))
    }

    /// [`RateLimit::peek`] for another kind of key.
    pub fn peek_key(&self, key: u128) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let per_second = f64::from(self.per_minute) / 60.0;
        let now = Instant::now();
        let buckets = self.buckets.lock().expect("rate limit poisoned");
        match buckets.get(&key) {
            Some(b) => {
                let tokens = b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second;
                if tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(((1.0 - tokens) / per_second).ceil().max(1.0) as u64)
                }
            }
            None => Ok(()),
        }
    }

    /// How many addresses are tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.buckets.lock().expect("rate limit poisoned").len()
    }
}

/// The key of an address: IPv4 as is (in the IPv4-mapped range), IPv6 by its /64.
fn group(ip: IpAddr) -> u128 {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    match v6.to_ipv4_mapped() {
        Some(v4) => u128::from(v4.to_ipv6_mapped()),
        None => u128::from(v6) & !(u128::MAX >> 64),
    }
}

/// The limits the server enforces.
pub struct Limits {
    /// `POST /oauth/device_authorization` per address.
    pub device_authorization: RateLimit,
    /// `POST /oauth/token`, `/oauth/revoke` and `/oauth/introspect` per address.
    pub token: RateLimit,
    /// Sign-in attempts per address.
    pub sign_in: RateLimit,
    /// Failed user-code entries per address (RFC 8628 §5.1: bound the guessing of codes).
    pub code_entry: RateLimit,
    /// The same, per browser session (keyed by [`session_key`]).
    pub code_entry_session: RateLimit,
    /// Live pending codes per client.
    pub pending_codes: PendingCap,
}

/// The cap on live pending codes per client (`limits.max_pending_codes_per_client`), enforced
/// without counting the table on every device authorization request.
///
/// For each client it keeps the expiry times of the codes it believes pending: those read from
/// the database, plus those issued by this process since, oldest first. Approvals, denials and
/// exchanges are not subtracted, so the list holds at least every pending code: while it is
/// under the cap the real count is too, and no query is needed. Only at the cap is the database
/// read again (and the list replaced by what it says), at most once per [`RECOUNT_EVERY`] per
/// client while the client stays full. Like the count it replaces, the cap is soft: two
/// requests at once may both pass at cap - 1.
pub struct PendingCap {
    cap: usize,
    clients: Mutex<HashMap<String, Pending>>,
}

/// How often a client at the cap has its pending codes read again.
pub const RECOUNT_EVERY: Duration = Duration::from_secs(1);

struct Pending {
    /// Expiry times (ms) of codes that may still be pending, oldest first.
    expiries: VecDeque<i64>,
    /// When the database last said the client was at the cap.
    full_at: Option<Instant>,
}

/// What [`PendingCap::admit`] says about a new code for a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Under the cap.
    Yes,
    /// At the cap, as the database said less than [`RECOUNT_EVERY`] ago.
    Full,
    /// Read the client's pending codes with [`PendingCap::cap`] as the limit and pass their
    /// expiry times to [`PendingCap::recounted`].
    Recount,
}

impl PendingCap {
    /// A cap of `cap` live pending codes per client.
    pub fn new(cap: u32) -> PendingCap {
        PendingCap {
            cap: cap as usize,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether `client_id` may have another code at `now` (ms).
    pub fn admit(&self, client_id: &str, now: i64) -> Admit {
        let mut clients = self.clients.lock().expect("pending cap poisoned");
        let Some(p) = clients.get_mut(client_id) else {
            return Admit::Recount;
        };
        while p.expiries.front().is_some_and(|&e| e <= now) {
            p.expiries.pop_front();
        }
        if p.expiries.len() < self.cap {
            Admit::Yes
        } else if p.full_at.is_some_and(|t| t.elapsed() < RECOUNT_EVERY) {
            Admit::Full
        } else {
            Admit::Recount
        }
    }

    /// Replaces what is known of `client_id` by the expiry times the database holds (at most
    /// [`Self::cap`] of them); returns whether the client is under the cap.
    pub fn recounted(&self, client_id: &str, mut expiries: Vec<i64>) -> bool {
        expiries.sort_unstable();
        let full = expiries.len() >= self.cap;
        let mut clients = self.clients.lock().expect("pending cap poisoned");
        clients.insert(
            client_id.to_string(),
            Pending {
                expiries: expiries.into(),
                full_at: full.then(Instant::now),
            },
        );
        !full
    }

    /// Records a code issued to `client_id` that expires at `expires_at` (ms).
    pub fn issued(&self, client_id: &str, expires_at: i64) {
        let mut clients = self.clients.lock().expect("pending cap poisoned");
        if let Some(p) = clients.get_mut(client_id) {
            // Codes are issued with one lifetime, so this is nearly always the latest expiry;
            // out of order only costs an early recount, never a missed code.
            p.expiries.push_back(expires_at);
        }
    }
}

/// The rate-limit key of a browser session: the first 16 bytes of its stored hash.
pub fn session_key(id_hash: &[u8]) -> u128 {
    let mut k = [0u8; 16];
    let n = id_hash.len().min(16);
    k[..n].copy_from_slice(&id_hash[..n]);
    u128::from_be_bytes(k)
}

impl Limits {
    /// The limits of a configuration.
    pub fn new(config: &crate::config::Config) -> Limits {
        let l = &config.limits;
        Limits {
            device_authorization: RateLimit::new(
                "device_authorization",
                l.device_authorization_per_minute,
            ),
            token: RateLimit::new("token", l.token_per_minute),
            sign_in: RateLimit::new("sign_in", l.sign_in_per_minute),
            code_entry: RateLimit::new("code_entry", l.code_entry_failures_per_minute),
            code_entry_session: RateLimit::new(
                "code_entry_session",
                l.code_entry_failures_per_minute,
            ),
            pending_codes: PendingCap::new(l.max_pending_codes_per_client),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pending_cap_counts_only_at_the_cap() {
        let cap = PendingCap::new(3);
        assert_eq!(cap.admit("c", 0), Admit::Recount, "unknown client: read it");
        assert!(cap.recounted("c", vec![50, 10]));
        assert_eq!(cap.admit("c", 0), Admit::Yes);
        cap.issued("c", 100);
        // Three codes believed pending: at the cap, so the database is asked.
        assert_eq!(cap.admit("c", 0), Admit::Recount);
        // It says two of them were used: under the cap again.
        assert!(cap.recounted("c", vec![100]));
        cap.issued("c", 110);
        cap.issued("c", 120);
        assert_eq!(cap.admit("c", 0), Admit::Recount);
        assert!(!cap.recounted("c", vec![120, 100, 110]));
        // Full, as the database just said: no new read for a while.
        assert_eq!(cap.admit("c", 0), Admit::Full);
        // Once the oldest expires, there is room without a read.
        assert_eq!(cap.admit("c", 100), Admit::Yes);
        // Other clients are separate.
        assert_eq!(cap.admit("d", 0), Admit::Recount);
        assert!(!PendingCap::new(0).recounted("e", vec![]));
    }

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        let l = RateLimit::new("t", 60);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(l.check_at(group(ip), t0).is_ok());
        }
        assert_eq!(l.check_at(group(ip), t0), Err(1));
        assert!(l
            .check_at(group(ip), t0 + Duration::from_millis(1100))
            .is_ok());
        // Another address is unaffected.
        assert!(l.check_at(group("1.2.3.5".parse().unwrap()), t0).is_ok());
    }

    #[test]
    fn retry_after_reflects_the_rate() {
        let l = RateLimit::new("t", 5);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            l.check_at(group(ip), t0).unwrap();
        }
        assert_eq!(l.check_at(group(ip), t0), Err(12));
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_zero_disables() {
        let l = RateLimit::new("t", 1);
        let t0 = Instant::now();
        assert!(l
            .check_at(group("2001:db8::1".parse().unwrap()), t0)
            .is_ok());
        assert!(l
            .check_at(group("2001:db8::2".parse().unwrap()), t0)
            .is_err());
        assert!(l
            .check_at(group("2001:db8:0:1::1".parse().unwrap()), t0)
            .is_ok());
        let off = RateLimit::new("t", 0);
        for _ in 0..1000 {
            assert!(off.check_at(group("1.1.1.1".parse().unwrap()), t0).is_ok());
        }
        assert_eq!(off.tracked(), 0);
    }

    #[test]
    fn the_table_stays_bounded() {
        let l = RateLimit::new("t", 10);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let ip = IpAddr::V4(i.into());
            let _ = l.check_at(group(ip), t0);
        }
        assert!(l.tracked() <= MAX_TRACKED);
    }
}
