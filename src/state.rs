//! The state every handler receives: one cloneable struct of shared handles, passed in
//! explicitly (no globals).

use std::sync::Arc;

use crate::config::Config;
use crate::db::Db;
use crate::keys::KeyRing;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::polls::PollTracker;

/// Shared server state. Cloning copies a few pointers.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The database pool.
    pub db: Db,
    /// This server's public base URL without a trailing slash: the token issuer and the prefix
    /// of every URL we hand out. Resolved once the listener is bound (port 0 → real port).
    pub issuer: Arc<str>,
    /// The default `aud` of access tokens for clients without their own: `oauth.audience`,
    /// else the issuer (RFC 9068 §3 wants a default resource indicator; see
    /// [`crate::protocol::resource`]).
    pub audience: Arc<str>,
    /// Per-address rate limits.
    pub limits: Arc<Limits>,
    /// Counters for `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// When each device last polled (RFC 8628 `slow_down`), in memory.
    pub polls: Arc<PollTracker>,
    /// The key that signs new access tokens, cached.
    pub keys: Arc<KeyRing>,
    /// Where devices are, from local sources only.
    pub locator: Arc<crate::location::Locator>,
}

impl AppState {
    /// An absolute URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}
