//! The use cases: what hallpass does for a request, above the store and below the front ends.
//! The token endpoint's grants and the device authorization ([`tokens`], [`authorize`]), the
//! administration rules that need a slow hash or a fresh secret ([`admin`]), and the state
//! kept in memory beside the store: the signer cache ([`keys`]), when each device last polled
//! ([`polls`]), the per-address limits and the pending-code cap ([`limits`]), and the
//! [`reaper`] that deletes expired rows.
//!
//! [`AppState`] is the one cloneable struct of shared handles every handler receives, passed in
//! explicitly (no globals).

pub mod admin;
pub mod authorize;
pub mod keys;
pub mod limits;
pub mod polls;
pub mod reaper;
pub mod tokens;

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::error::OAuthError;
use crate::store::{Store, StoreError};
use keys::KeyRing;
use limits::Limits;
use polls::PollTracker;

/// Shared server state. Cloning copies a few pointers.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Everything hallpass keeps.
    pub store: Store,
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

/// Why a use case of the OAuth endpoints gave no answer of its own: a protocol error to send,
/// a limit to wait for, or a store that cannot answer now.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// An RFC 6749 error.
    #[error("{}: {}", .0.error.as_str(), .0.error_description)]
    OAuth(OAuthError),
    /// Too many requests; retry after the given seconds.
    #[error("too many requests; retry in {0} seconds")]
    TooManyRequests(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<OAuthError> for Refused {
    fn from(e: OAuthError) -> Refused {
        Refused::OAuth(e)
    }
}
