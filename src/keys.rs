//! The signer cache. Signing keys live in the database (see [`crate::db::signing_keys`]) so the
//! command line can rotate or revoke them while the server runs; the server keeps the active key
//! parsed in memory and checks at most once a second whether it is still the active one. A key
//! sealed at rest (see [`crate::sealing`]) is opened here, once per load, never per token.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::db::{self, signing_keys, Db, DbError};
use crate::oauth::jwt::{Algorithm, SigningKey, Verified};
use crate::sealing::Sealer;

/// How stale the cached signer may be: a rotation from the command line takes effect within it.
const RECHECK: Duration = Duration::from_secs(1);

/// The active signing key, cached.
pub struct KeyRing {
    /// The algorithm of keys created when none is active.
    algorithm: Algorithm,
    /// Opens stored keys and seals new ones.
    sealer: Arc<Sealer>,
    /// The cached key and when the database last confirmed it was active (`None`: reload).
    cached: Mutex<(Option<Instant>, Arc<SigningKey>)>,
    /// Access tokens verified recently, for introspection and the management API's bearer
    /// check (see [`Verified`]).
    pub verified: Verified,
}

impl KeyRing {
    /// Starts with a key already loaded (or created) at start-up.
    pub fn new(algorithm: Algorithm, key: SigningKey, sealer: Arc<Sealer>) -> KeyRing {
        KeyRing {
            algorithm,
            sealer,
            cached: Mutex::new((Some(Instant::now()), Arc::new(key))),
            verified: Verified::new(),
        }
    }

    /// Tells the cache which kid the database calls active right now (read in the same
    /// database trip as a grant): the same kid confirms the cache, another (or none, after a
    /// revocation) makes the next [`KeyRing::signer`] reload, so a revoked key never signs a
    /// token issued after the revocation was seen.
    pub fn observe(&self, active_kid: Option<&str>) {
        let mut cached = self.cached.lock().expect("key cache poisoned");
        cached.0 = (active_kid == Some(cached.1.kid.as_str())).then(Instant::now);
    }

    /// What opens and seals the stored keys (for rotation through the API).
    pub fn sealer(&self) -> Arc<Sealer> {
        self.sealer.clone()
    }

    /// The key that signs new tokens.
    pub async fn signer(&self, db: &Db) -> Result<Arc<SigningKey>, DbError> {
        let current = {
            let cached = self.cached.lock().expect("key cache poisoned");
            if cached.0.is_some_and(|at| at.elapsed() < RECHECK) {
                return Ok(cached.1.clone());
            }
            cached.1.clone()
        };
        let kid = current.kid.clone();
        let algorithm = self.algorithm;
        let sealer = self.sealer.clone();
        let fresh = db
            .run(move |conn| {
                if signing_keys::active_kid(conn)?.as_deref() == Some(kid.as_str()) {
                    return Ok(None);
                }
                signing_keys::active_or_create(conn, &sealer, algorithm, db::now_ms()).map(Some)
            })
            .await?;
        let mut cached = self.cached.lock().expect("key cache poisoned");
        if let Some(key) = fresh {
            tracing::info!(kid = %key.kid, "signing with a new key");
            cached.1 = Arc::new(key);
        }
        cached.0 = Some(Instant::now());
        Ok(cached.1.clone())
    }
}
