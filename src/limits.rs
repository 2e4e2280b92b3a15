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

    /// Gives back a token taken with [`RateLimit::check_key`] for a request that turned out
    /// not to count (a limit on failures reserves before it knows, see [`Limits::reserve_code_entry`]).
    /// The bucket never holds more than its capacity.
    pub fn refund_key(&self, key: u128) {
        if self.per_minute == 0 {
            return;
        }
        let capacity = f64::from(self.per_minute);
        let mut buckets = self.buckets.lock().expect("rate limit poisoned");
        if let Some(b) = buckets.get_mut(&key) {
            b.tokens = (b.tokens + 1.0).min(capacity);
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
    /// The same, per user for callers with a bearer token (keyed by [`user_key`]): a user's
    /// tokens share one allowance, however many devices they hold.
    pub code_entry_user: RateLimit,
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

/// Who enters a user code, for the guessing limits (RFC 8628 §5.1): the address, and the
/// browser session or, for a bearer token, the user.
#[derive(Debug, Clone, Copy)]
pub struct Guesser {
    /// The client address (after trusted-proxy resolution).
    pub addr: Option<IpAddr>,
    /// [`session_key`] of a browser session.
    pub session: Option<u128>,
    /// [`user_key`] of a bearer token's user.
    pub user: Option<u128>,
}

impl Limits {
    /// Reserves one failed code entry for `who` *before* the code is looked up, so that a burst
    /// of concurrent guesses gets exactly the limit evaluated, never more (issue 18 §6: 300 at
    /// once had 75 evaluated when the limit was checked first and counted after each failure).
    /// `Err(seconds)` to wait, with nothing reserved. An entry that turns out not to be a
    /// failure gives its reservation back with [`Limits::refund_code_entry`].
    pub fn reserve_code_entry(&self, who: &Guesser) -> Result<(), u64> {
        let addr = who.addr.map(group);
        if let Some(a) = addr {
            self.code_entry.check_key(a)?;
        }
        let second = match (who.session, who.user) {
            (Some(s), _) => self.code_entry_session.check_key(s),
            (None, Some(u)) => self.code_entry_user.check_key(u),
            (None, None) => Ok(()),
        };
        if let Err(wait) = second {
            if let Some(a) = addr {
                self.code_entry.refund_key(a);
            }
            return Err(wait);
        }
        Ok(())
    }

    /// Gives back a reservation of [`Limits::reserve_code_entry`]: the entry succeeded (a
    /// successful entry is no guess), or failed for a reason that is not a guess.
    pub fn refund_code_entry(&self, who: &Guesser) {
        if let Some(a) = who.addr {
            self.code_entry.refund_key(group(a));
        }
        match (who.session, who.user) {
            (Some(s), _) => self.code_entry_session.refund_key(s),
            (None, Some(u)) => self.code_entry_user.refund_key(u),
            (None, None) => {}
        }
    }
}

/// The rate-limit key of a user (for bearer-token callers): the first 16 bytes of the SHA-256
/// of their id.
pub fn user_key(user_id: &str) -> u128 {
    session_key(&crate::secrets::hash_token(user_id))
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
            code_entry_user: RateLimit::new("code_entry_user", l.code_entry_failures_per_minute),
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
    fn code_entries_are_reserved_and_refunded_per_address_and_session_or_user() {
        let limits = Limits::new(&crate::config::Config::default());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let who = Guesser {
            addr: Some(ip),
            session: Some(1),
            user: None,
        };
        // Five reservations, then none: the sixth is refused whatever happens to the five.
        for _ in 0..5 {
            limits.reserve_code_entry(&who).unwrap();
        }
        assert!(limits.reserve_code_entry(&who).is_err());
        // One given back (a successful entry): exactly one more.
        limits.refund_code_entry(&who);
        limits.reserve_code_entry(&who).unwrap();
        assert!(limits.reserve_code_entry(&who).is_err());
        // Another session from the same address is limited by the address...
        let other = Guesser {
            session: Some(2),
            ..who
        };
        assert!(limits.reserve_code_entry(&other).is_err());
        // ... and a refused reservation took nothing from its session: from another address,
        // that session still has all five.
        let elsewhere = Guesser {
            addr: Some("192.0.2.8".parse().unwrap()),
            ..other
        };
        for _ in 0..5 {
            limits.reserve_code_entry(&elsewhere).unwrap();
        }
        assert!(limits.reserve_code_entry(&elsewhere).is_err());
        // A bearer-token user is limited across addresses.
        let user = |n: u8| Guesser {
            addr: Some(IpAddr::V4([198, 51, 100, n].into())),
            session: None,
            user: Some(user_key("u1")),
        };
        for n in 0..5 {
            limits.reserve_code_entry(&user(n)).unwrap();
        }
        assert!(limits.reserve_code_entry(&user(9)).is_err());
        // Refunds never raise a bucket above its capacity.
        let fresh = Guesser {
            addr: Some("203.0.113.1".parse().unwrap()),
            session: None,
            user: None,
        };
        limits.reserve_code_entry(&fresh).unwrap();
        for _ in 0..10 {
            limits.refund_code_entry(&fresh);
        }
        for _ in 0..5 {
            limits.reserve_code_entry(&fresh).unwrap();
        }
        assert!(limits.reserve_code_entry(&fresh).is_err());
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
