//! The store: everything hallpass keeps, behind one interface that names what the product does
//! rather than how a database does it.
//!
//! [`Store`] is an enum over backends: SQLite ([`sqlite`]), the embedded default, and
//! PostgreSQL ([`postgres`]), which several instances can share.
//! Each async method is one transaction the product needs — start an authorization, read a
//! poll, exchange a code, approve, rotate a refresh token, introspect, an admin change, a reaper
//! batch — taking and returning the records of [`crate::domain::model`] and the request and
//! outcome types of [`types`]. A refusal the product expects (a wrong client, a used code, a
//! taken name) is an `Ok` value in those types; [`StoreError`] is only for a store that cannot
//! answer now (busy, unavailable, replaced) or fails. Nothing above this module names a
//! driver, a connection, SQL or a driver's error code.
//!
//! The rules are not the store's: a backend reads the rows inside its transaction and calls the
//! pure decisions of [`crate::domain::rules`] and [`crate::protocol`], so every backend decides
//! alike. A backend may run a method's body more than once (SQLite's group commit replays a
//! batch; PostgreSQL retries a serialization failure), so a body has no effect outside its
//! transaction; what is decided before the trip (ids, the device code, `now`, the cap's
//! admission) comes in the request.
//!
//! The hot paths (a device authorization, a poll, an exchange, a refresh, an introspection) are
//! one trip each: the client is authenticated, and the active signing key read, in the same
//! trip as the work.
//!
//! Caches above the store ask it whether anything was committed since they read ([`Stamp`]):
//! SQLite answers from its write-ahead log's size and time, another backend from a change
//! counter.

pub mod postgres;
pub mod sqlite;
mod types;

use std::path::PathBuf;
use std::sync::Arc;

pub use types::*;

use crate::config::Config;
use crate::domain::admin::{ClientChange, ClientSpec, Refusal};
use crate::domain::model::{
    Activation, Actor, AuthorizationState, Client, ClientCredentials, CodeProblem, Device,
    DeviceAuthorization, DeviceFilter, Imported, KeyInfo, Listing, Resealed, Session, User,
};
use crate::metrics::Metrics;
use crate::protocol::error::OAuthError;
use crate::protocol::jwt::{Algorithm, PublicKey, SigningKey, Verified};
use crate::sealing::Sealer;

/// A storage failure: the store cannot answer now, or failed. What the product refuses is never
/// one of these (see the module comment). Front ends map each variant to a response in one
/// exhaustive match.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer held the database past the wait, or every connection stayed taken:
    /// try again shortly (503).
    #[error("{0}")]
    Busy(String),
    /// Nothing can be stored now (a read-only file, a full disk, I/O errors, a stopped writer):
    /// 503, and `/healthz` says why until a write succeeds again.
    #[error("{0}")]
    Unavailable(String),
    /// The database was removed while serving: 503 until it is back.
    #[error("{0}")]
    Gone(String),
    /// The database was changed by another program while serving: 503 until a restart.
    #[error("{0}")]
    Replaced(String),
    /// The store cannot be used as it is: not a hallpass database, a newer schema, no
    /// database where a command expects one, a stored key that does not open.
    #[error("{0}")]
    Refused(String),
    /// Anything else: the backend failed (500; the cause is logged, never sent).
    #[error("{0}")]
    Internal(String),
    /// The settings cannot work (a database URL or TLS file the driver refuses): exit 2 at
    /// start-up.
    #[error("{0}")]
    Config(String),
}

impl StoreError {
    /// A wait, not a failure: another writer held the lock, or no connection became free.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Busy(_))
    }

    /// Nothing can be stored now (answered 503 like busy, reported by `/healthz`).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A mark of everything committed to the store up to one moment, by this process or any other:
/// two stamps are equal while nothing was committed between them. Take one *before* a read
/// that a cache will keep; the read may then be newer than its stamp says, never older, so a
/// changed stamp only makes the cache read again sooner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(Option<u128>);

impl Stamp {
    /// A stamp from a backend's own mark (`None`: nothing to compare, such as no write-ahead
    /// log yet).
    pub fn new(mark: Option<u128>) -> Stamp {
        Stamp(mark)
    }
}

/// What a store is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The server: creates a new database, migrates an old one.
    Serve,
    /// An admin command on a running server's database: never creates one, and works beside
    /// the server without taking its part (SQLite: no checkpoint, no group commit).
    Command,
}

/// The store: one variant per backend. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// One SQLite file (see [`sqlite`]).
    Sqlite(sqlite::SqliteStore),
    /// A PostgreSQL database, shareable by several instances (see [`postgres`]).
    Postgres(postgres::store::PgStore),
}

impl Store {
    /// Opens the database the configuration names, for `purpose`: PostgreSQL when
    /// `database.url` is set, else the SQLite file at `database.path`. On PostgreSQL, a
    /// server's store starts a task on the current Tokio runtime (see [`Stamp`]).
    pub async fn open(config: &Config, purpose: Purpose) -> Result<Store, StoreError> {
        match config.database_url {
            Some(_) => postgres::store::PgStore::open(config, purpose)
                .await
                .map(Store::Postgres),
            None => sqlite::SqliteStore::open(config, purpose).map(Store::Sqlite),
        }
    }

    /// Whether several instances may share this store: then what one instance would keep in
    /// memory (when each code was polled, the failure-counting limits, who runs the reaper)
    /// is kept in the store too.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Records a judged poll for the other instances (see [`PollMark`]); nothing on SQLite.
    pub async fn record_poll(&self, mark: PollMark) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.record_poll(mark).await,
        }
    }

    /// Records a judged poll for the other instances with the next ones, without waiting for
    /// it (lost if that write fails); nothing on SQLite.
    pub fn record_poll_later(&self, mark: PollMark) {
        match self {
            Store::Sqlite(_) => {}
            Store::Postgres(s) => s.record_poll_later(mark),
        }
    }

    /// Takes or renews the lease `name` for `ttl_ms`: true while this instance holds it, so
    /// work that must not run twice at once (the reaper) runs on one instance at a time.
    /// Always true on SQLite (one process).
    pub async fn lease(&self, name: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(true),
            Store::Postgres(s) => s.lease(name.to_string(), ttl_ms).await,
        }
    }

    /// Gives up the lease `name` if this instance holds it (a clean shutdown).
    pub async fn release_lease(&self, name: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.release(name.to_string()).await,
        }
    }

    /// Takes one token from the shared bucket of the failure-counting limit `limit` for
    /// `subject` (`per_minute` tokens a minute): `Ok(Err(seconds))` when it is spent. On
    /// SQLite always `Ok(Ok(()))`: the process's own buckets are the only ones.
    pub async fn take_shared_token(
        &self,
        limit: &'static str,
        subject: u128,
        per_minute: u32,
        now: i64,
    ) -> Result<Result<(), u64>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(Ok(())),
            Store::Postgres(s) => s.take_token(limit, subject, per_minute, now).await,
        }
    }

    /// Gives back a token of [`Store::take_shared_token`].
    pub async fn refund_shared_token(
        &self,
        limit: &'static str,
        subject: u128,
        per_minute: u32,
        now: i64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.refund_token(limit, subject, per_minute, now).await,
        }
    }

    /// Counts connection waits and write batches in `metrics` from now on.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Store {
        match self {
            Store::Sqlite(s) => Store::Sqlite(s.with_metrics(metrics)),
            Store::Postgres(s) => Store::Postgres(s.with_metrics(metrics)),
        }
    }

    /// A stamp of what is committed now (see [`Stamp`]). Cheap: SQLite looks at its log at most
    /// once a millisecond.
    pub fn stamp(&self) -> Stamp {
        match self {
            Store::Sqlite(s) => s.stamp(),
            Store::Postgres(s) => s.stamp(),
        }
    }

    /// Whether anything was committed since `stamp` was taken.
    pub fn changed_since(&self, stamp: &Stamp) -> bool {
        self.stamp() != *stamp
    }

    /// Why the store cannot be used now (its file removed or replaced), for `/healthz`; `None`
    /// while it can.
    pub fn problem(&self) -> Option<String> {
        match self {
            Store::Sqlite(s) => s.problem(),
            // An unreachable server is an error of each request (503), not a state.
            Store::Postgres(_) => None,
        }
    }

    /// Whether the database was replaced under this process: then it must not be closed before
    /// the process exits (see `cli::serve`).
    pub fn replaced(&self) -> bool {
        match self {
            Store::Sqlite(s) => s.replaced(),
            Store::Postgres(_) => false,
        }
    }
}

/// Writes the async methods of [`Store`], each handing its arguments to the backend's method of
/// the same name.
macro_rules! transactions {
    ($(
        $(#[$doc:meta])*
        fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    match self {
                        Store::Sqlite(s) => s.$name($($arg),*).await,
                        // Boxed: PostgreSQL's futures are large, and unboxed they would size
                        // every call's future, SQLite's hot paths included (W2 lost ~10%).
                        Store::Postgres(s) => Box::pin(s.$name($($arg),*)).await,
                    }
                }
            )*
        }
    };
}

transactions! {
    // The device flow (RFC 8628 §3).

    /// Authenticates the client, checks its scope and resources, and then acts on the cap's
    /// admission: starts a pending device and its authorization (§3.1–3.2), refuses, or reads
    /// the client's pending codes.
    fn start_authorization(&self, new: NewAuthorization) -> Result<StartOutcome, OAuthError>;

    /// The read half of a poll (§3.4): authenticates the client and reads the authorization of
    /// `device_code`. Writes nothing; the poll's answer is decided above (see `app::polls`).
    fn poll_read(&self, auth: ClientAuth, device_code: String) -> Result<PollRead, OAuthError>;

    /// Exchanges an approved code for tokens: reads the row again and consumes it
    /// conditionally, so of many simultaneous polls exactly one gets tokens. The device and
    /// its user are checked again, not only at approval.
    fn exchange(&self, exchange: Exchange) -> Exchanged;

    /// A typed user code, for the person about to decide it (`viewer`).
    fn look_up_code(&self, typed: String, viewer: Option<String>, now: i64) -> CodeLookup;

    /// When `user_id` approved the code `typed`, if they did.
    fn approved_by(&self, typed: String, user_id: String) -> Option<i64>;

    /// Approves a code: the device becomes the user's, `verified`, until `device_expires`.
    fn approve(&self, approval: Approval) -> Result<Device, ApprovalRefused>;

    /// Denies a code: the device's next poll gets `access_denied`.
    fn deny(&self, typed: String, actor: Actor, now: i64) -> Result<(), CodeProblem>;

    /// Denies an authorization by id (the admins' page and API); `None` when there is none.
    /// Answers the authorization as it now is.
    fn deny_authorization(
        &self,
        id: String,
        actor: Actor,
        now: i64,
    ) -> Option<Result<DeviceAuthorization, CodeProblem>>;

    /// A page of authorizations (Storyden's admin list), newest first, with the total.
    fn authorizations(
        &self,
        state: Option<AuthorizationState>,
        client_id: Option<String>,
        now: i64,
        offset: u32,
        limit: u32,
    ) -> (Vec<DeviceAuthorization>, u64);

    /// A page of the admins' listing, joined with devices, clients and users; `page` past the
    /// end shows the last one.
    fn authorizations_page(
        &self,
        listing: Listing,
        client_id: Option<String>,
        now: i64,
        page: u32,
        page_size: u32,
    ) -> AuthorizationsPage;

    // Tokens.

    /// Authenticates a client for `client_credentials` (RFC 6749 §4.4).
    fn client_grant(&self, auth: ClientAuth) -> Result<ClientRead, OAuthError>;

    /// Rotates a refresh token (RFC 6749 §6) with reuse detection (RFC 9700 §4.14.2): a used
    /// token presented again revokes its whole family.
    fn refresh(&self, refresh: Refresh) -> Result<Refreshed, OAuthError>;

    /// Authenticates a client by its credentials.
    fn authenticate_client(&self, creds: ClientCredentials) -> Result<Client, OAuthError>;

    /// RFC 7009 §2.1: revokes a refresh token (its whole family) or an access token of the
    /// client. Unknown tokens, and other clients' tokens, are left alone.
    fn revoke(&self, revocation: Revocation) -> ();

    /// RFC 7662: authenticates a confidential client and says what a token is now.
    fn introspect(&self, introspect: Introspect) -> Result<Introspection, OAuthError>;

    /// A bearer access token for the management API, if it is live: signed by a published
    /// key, not expired or revoked, its device's holder still allowed.
    fn bearer(
        &self,
        token: String,
        verified: Arc<Verified>,
        grace_ms: i64,
        now: i64,
    ) -> Option<Bearer>;

    /// The keys to publish and verify with: active, on standby, and retired less than
    /// `grace_ms` ago.
    fn published_keys(&self, now: i64, grace_ms: i64) -> Vec<PublicKey>;

    // Browser sessions and users.

    /// The live session with this id hash, if its user is enabled.
    fn session(&self, id_hash: Vec<u8>, now: i64) -> Option<Session>;

    /// Stores a new session.
    fn create_session(&self, session: NewSession) -> ();

    /// Ends a session (sign-out).
    fn end_session(&self, id_hash: Vec<u8>) -> ();

    /// A user by id.
    fn user(&self, id: String) -> Option<User>;

    /// A user by name.
    fn user_by_name(&self, username: String) -> Option<User>;

    /// A page of users by name, with the total.
    fn users(&self, offset: u32, limit: u32) -> (Vec<User>, u64);

    /// How many users there are.
    fn count_users(&self) -> u64;

    /// Creates a user; a taken name is [`Refusal::Conflict`].
    fn create_user(&self, user: NewUser) -> Result<User, Refusal>;

    /// Changes a user, refusing to leave no enabled administrator; a new password or a
    /// disabled account ends the user's sessions.
    fn update_user(&self, id: String, update: UserUpdate, now: i64) -> Result<User, Refusal>;

    /// Deletes a user with their devices, tokens and sessions, refusing the last enabled
    /// administrator.
    fn delete_user(&self, id: String) -> Result<(), Refusal>;

    // Clients.

    /// A client by id.
    fn client(&self, client_id: String) -> Option<Client>;

    /// Every client, oldest first.
    fn clients(&self) -> Vec<Client>;

    /// Creates a client from `spec` (checked in the transaction, its owner included), with
    /// this id and secret hash (`None`: public).
    fn create_client(
        &self,
        spec: ClientSpec,
        client_id: String,
        secret_hash: Option<Vec<u8>>,
        now: i64,
    ) -> Result<Client, Refusal>;

    /// Changes a client (checked as a whole in the transaction). Only future grants and
    /// refreshes see it.
    fn update_client(
        &self,
        client_id: String,
        change: ClientChange,
        now: i64,
    ) -> Result<Client, Refusal>;

    /// Deletes a client with its devices and their tokens, recording who did it.
    fn delete_client(&self, client_id: String, actor: Actor, now: i64) -> Result<Client, Refusal>;

    /// Replaces a confidential client's secret hash; a public client has none to replace.
    fn set_client_secret(
        &self,
        client_id: String,
        secret_hash: Vec<u8>,
        now: i64,
    ) -> Result<(), Refusal>;

    // Devices.

    /// A device `owner` may manage: their own, or any for `None`. Someone else's device is
    /// indistinguishable from a missing one.
    fn device(&self, id: String, owner: Option<String>) -> Option<Device>;

    /// A page of claimed devices matching `filter`, newest first, with the total.
    fn devices(&self, filter: DeviceFilter, offset: u32, limit: u32) -> (Vec<Device>, u64);

    /// A user's devices with their clients' names.
    fn devices_of(&self, user_id: String) -> DevicesOf;

    /// Renames a device, sets its metadata, locks or unlocks it, in one transaction.
    fn update_device(&self, update: DeviceUpdate) -> Result<Device, DeviceRefused>;

    /// Locks or unlocks a device (audited); `None` when `owner` has no such device.
    fn set_device_locked(
        &self,
        id: String,
        owner: Option<String>,
        locked: bool,
        actor: Actor,
        now: i64,
    ) -> Option<Device>;

    /// Removes a device with its tokens (audited); false when `owner` has no such device.
    fn remove_device(&self, id: String, owner: Option<String>, actor: Actor, now: i64) -> bool;

    // Signing keys.

    /// Every key, newest first.
    fn keys(&self) -> Vec<KeyInfo>;

    /// Checks that every stored key opens with `sealer`; answers how many are stored unsealed.
    fn check_sealing(&self, sealer: Arc<Sealer>) -> usize;

    /// The active key of `algorithm`, if any.
    fn active_key(&self, sealer: Arc<Sealer>, algorithm: Algorithm) -> Option<SigningKey>;

    /// The key that signs `algorithm`'s tokens now, made if there is none (one per algorithm,
    /// however many servers ask at once); `None` when it is `cached`, the kid the caller has.
    fn signing_key(
        &self,
        sealer: Arc<Sealer>,
        algorithm: Algorithm,
        cached: Option<String>,
        now: i64,
    ) -> Option<SigningKey>;

    /// Retires active keys and activates new ones: `only` that algorithm's, or every
    /// algorithm's in use; `default`'s in any case, first in the answer.
    fn rotate_keys(
        &self,
        sealer: Arc<Sealer>,
        only: Option<Algorithm>,
        default: Algorithm,
        now: i64,
    ) -> Vec<SigningKey>;

    /// Stores an operator's key: active at once (retiring its algorithm's), or on standby.
    fn import_key(
        &self,
        sealer: Arc<Sealer>,
        key: Arc<SigningKey>,
        pkcs8: Vec<u8>,
        standby: bool,
        now: i64,
    ) -> Imported;

    /// Makes a key on standby the active key of its algorithm.
    fn activate_key(&self, kid: String, now: i64) -> Activation;

    /// Deletes a key at once; false for an unknown kid.
    fn revoke_key(&self, kid: String) -> bool;

    /// Seals every stored key with `sealer`'s first secret.
    fn reseal_keys(&self, sealer: Arc<Sealer>) -> Resealed;

    // The reaper.

    /// Writes back poll times remembered in memory (never lowering a stored time or interval).
    fn write_poll_times(&self, times: Vec<PollTime>) -> ();

    /// How many expired authorizations were never exchanged or denied.
    fn count_expired_unused(&self, now: i64) -> u64;

    /// Deletes one batch of at most `limit` expired rows of one kind; answers how many went.
    fn purge(&self, what: Expired, now: i64, limit: u32) -> usize;

    /// Deletes retired keys whose every token has expired.
    fn purge_keys(&self, now: i64, grace_ms: i64) -> usize;

    // Operations.

    /// Reads something, to tell `/healthz` the store answers.
    fn probe(&self) -> ();

    /// A consistent copy of the database at `target` (which must not exist), mode 0600.
    fn backup(&self, target: PathBuf) -> ();
}

impl Store {
    /// Why writes cannot succeed now, for `/healthz`; `None` when they can. While writes are
    /// not known to fail this costs one atomic load; once they failed, each call tries one
    /// small write, so the answer turns back by itself.
    pub async fn writes_failing(&self) -> Option<String> {
        match self {
            Store::Sqlite(s) => s.writes_failing().await,
            // PostgreSQL reports a failing write on the request that made it.
            Store::Postgres(_) => None,
        }
    }
}

/// A table copied by [`copy_into_postgres`]: its name, rows and checksum.
pub use postgres::copy::Copied;

/// `hallpass check` with `database.url` set: connects to PostgreSQL and says what the database
/// holds, writing nothing.
pub async fn probe_postgres(config: &Config) -> Result<String, StoreError> {
    Ok(postgres::probe(config).await?)
}

/// `hallpass migrate-db`: the whole SQLite database at `database.path` into the empty PostgreSQL
/// database at `database.url`, in one transaction, verified table by table.
pub async fn copy_into_postgres(config: &Config) -> Result<Vec<Copied>, StoreError> {
    Ok(postgres::copy::migrate(config).await?)
}
