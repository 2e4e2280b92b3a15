//! The signer cache. Signing keys live in the store so the command line can rotate, import or
//! revoke them while the server runs; the server keeps the
//! active key of each algorithm parsed in memory and checks at most once a second whether it is
//! still the active one.
//!
//! Each client's tokens are signed with its algorithm (the server's default unless the client
//! has its own), so there is one active key per algorithm in use. A key is made the first time
//! a token of its algorithm is signed, and the default algorithm's at start-up: before the
//! server listens, or for RSA (a prime search: 40-400 ms of CPU, which start-up does not wait for) in
//! the background right after ([`KeyRing::warm_up`]). One task per process generates a key (the
//! others wait for it) and the database keeps one key per algorithm across processes
//! ([`Store::signing_key`]). A key sealed at rest (see [`crate::sealing`]) is opened
//! here, once per load, never per token.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock;
use crate::protocol::jwt::{Algorithm, SigningKey, Verified};
use crate::sealing::Sealer;
use crate::store::{ActiveKey, Store, StoreError};

/// How stale a cached signer may be: a rotation from the command line takes effect within it.
const RECHECK: Duration = Duration::from_secs(1);

/// One algorithm's cached key and when the database last confirmed it was active (`None`:
/// reload before signing).
struct Cached {
    confirmed: Option<Instant>,
    key: Arc<SigningKey>,
}

/// The active signing keys, cached, one per algorithm.
pub struct KeyRing {
    /// The algorithm of clients without their own (`oauth.signing_algorithm`).
    default: Algorithm,
    /// Per algorithm (indexed by [`Algorithm::index`]): its key, once loaded.
    cached: Mutex<[Option<Cached>; 3]>,
    /// Per algorithm: held while its key is loaded or created, so that a burst of first tokens
    /// of an algorithm generates one key, not one per request (an RSA key costs 40-400 ms).
    loading: [tokio::sync::Mutex<()>; 3],
    /// Opens stored keys and seals new ones.
    sealer: Arc<Sealer>,
    /// Access tokens verified recently, for introspection and the management API's bearer
    /// check (see [`Verified`]).
    pub verified: Arc<Verified>,
}

impl KeyRing {
    /// Starts with the key loaded at start-up, if the database had one.
    pub fn new(default: Algorithm, key: Option<SigningKey>, sealer: Arc<Sealer>) -> KeyRing {
        let mut cached: [Option<Cached>; 3] = Default::default();
        if let Some(key) = key {
            let slot = key.algorithm.index();
            cached[slot] = Some(Cached {
                confirmed: Some(Instant::now()),
                key: Arc::new(key),
            });
        }
        KeyRing {
            default,
            cached: Mutex::new(cached),
            loading: Default::default(),
            sealer,
            verified: Arc::new(Verified::new()),
        }
    }

    /// The algorithm of clients without their own.
    pub fn default_algorithm(&self) -> Algorithm {
        self.default
    }

    /// What opens and seals the stored keys (for rotation through the API).
    pub fn sealer(&self) -> Arc<Sealer> {
        self.sealer.clone()
    }

    /// Makes sure the default algorithm has a key, creating it if needed: run in the
    /// background after start-up, so the first token rarely waits for a key (and, if it comes
    /// first, waits for this one rather than making another).
    pub async fn warm_up(&self, store: &Store) {
        if let Err(e) = self.signer(store, self.default).await {
            tracing::error!(error = %e, "could not load or create the signing key");
        }
    }

    /// Tells the cache which kid the database calls active for `algorithm` right now (read in
    /// the same database trip as a grant): the same kid confirms the cache, another (or none,
    /// after a revocation) makes the next [`KeyRing::signer`] reload, so a revoked key never
    /// signs a token issued after the revocation was seen.
    pub fn observe(&self, active: &ActiveKey) {
        let mut cached = self.cached.lock().expect("key cache poisoned");
        if let Some(c) = &mut cached[active.algorithm.index()] {
            c.confirmed = (active.kid.as_deref() == Some(c.key.kid.as_str())).then(Instant::now);
        }
    }

    /// The cached key of `algorithm` if the database confirmed it within [`RECHECK`].
    fn fresh(&self, algorithm: Algorithm) -> Option<Arc<SigningKey>> {
        let cached = self.cached.lock().expect("key cache poisoned");
        cached[algorithm.index()]
            .as_ref()
            .filter(|c| c.confirmed.is_some_and(|at| at.elapsed() < RECHECK))
            .map(|c| c.key.clone())
    }

    /// The key that signs new tokens of `algorithm`, created if there is none yet.
    pub async fn signer(
        &self,
        store: &Store,
        algorithm: Algorithm,
    ) -> Result<Arc<SigningKey>, StoreError> {
        if let Some(key) = self.fresh(algorithm) {
            return Ok(key);
        }
        let _loading = self.loading[algorithm.index()].lock().await;
        // Whoever held the lock may have just loaded it.
        if let Some(key) = self.fresh(algorithm) {
            return Ok(key);
        }
        let current = {
            let cached = self.cached.lock().expect("key cache poisoned");
            cached[algorithm.index()]
                .as_ref()
                .map(|c| c.key.kid.clone())
        };
        let fresh = store
            .signing_key(self.sealer.clone(), algorithm, current, clock::now_ms())
            .await?;
        let mut cached = self.cached.lock().expect("key cache poisoned");
        let slot = &mut cached[algorithm.index()];
        match (fresh, slot.as_mut()) {
            (Some(key), _) => {
                tracing::info!(kid = %key.kid, algorithm = algorithm.as_str(), "signing with a new key");
                *slot = Some(Cached {
                    confirmed: Some(Instant::now()),
                    key: Arc::new(key),
                });
            }
            (None, Some(c)) => c.confirmed = Some(Instant::now()),
            (None, None) => unreachable!("no kid was cached, so the database answered a key"),
        }
        Ok(slot.as_ref().expect("just filled").key.clone())
    }
}
