//! The SQLite backend: one file, an r2d2 pool of connections, and a group-commit writer thread
//! (see [`crate::store::sqlite::db`]). Each [`crate::store::Store`] method is one of the transaction bodies in
//! this folder, run on the path that suits it:
//!
//! - **in place** ([`crate::store::sqlite::db::Db::read`]): the token endpoint's few indexed point reads (a
//!   poll, client credentials, an introspection) run on the calling thread when a connection
//!   is idle; the hand-off to a blocking thread cost more than the read;
//! - **the writer** ([`crate::store::sqlite::db::Db::write`]): writes that many requests make at once (device
//!   authorizations, exchanges, refreshes, approvals) share a transaction and its fsync;
//! - **a pooled connection** on a blocking thread ([`crate::store::sqlite::db::Db::run`]): everything else.
//!
//! An admin command's store ([`Purpose::Command`]) runs every body in place on a pooled
//! connection instead: it works beside a running server and leaves checkpoints and group commit
//! to it.
//!
//! Errors of SQLite stay here: a [`DbError`] becomes a [`StoreError`] at this boundary.

mod admin;
mod auth;
pub mod db;
mod devices;
mod flow;
mod stamp;
mod tokens;

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::Connection;

use crate::config::Config;
use crate::domain::admin::{ClientChange, ClientSpec, Refusal};
use crate::domain::model::{
    Activation, Actor, AuthorizationState, Client, ClientCredentials, CodeProblem, Device,
    DeviceAuthorization, DeviceFilter, Imported, KeyInfo, Listing, PollOutcome, Resealed, Session,
    User,
};
use crate::metrics::Metrics;
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::jwt::{Algorithm, PublicKey, SigningKey, Verified};
use crate::sealing::Sealer;
use crate::store::{
    Approval, ApprovalRefused, AuthorizationsPage, Bearer, ClientAuth, ClientRead, CodeLookup,
    DeviceRefused, DeviceUpdate, DevicesOf, Exchange, Exchanged, Expired, Introspect,
    Introspection, NewAuthorization, NewSession, NewUser, PollRead, PollTime, Purpose, Refresh,
    Refreshed, Revocation, Stamp, StartOutcome, StoreError, UserUpdate,
};
use db::{device_authorizations as auths, signing_keys, Db, DbError, DbOptions};

impl From<DbError> for StoreError {
    fn from(e: DbError) -> StoreError {
        let text = e.to_string();
        if e.is_busy() {
            return StoreError::Busy(text);
        }
        match e {
            DbError::Replaced(_) => StoreError::Replaced(text),
            _ if e.is_unavailable() => StoreError::Unavailable(text),
            DbError::Gone(_) => StoreError::Gone(text),
            DbError::Refused(_) => StoreError::Refused(text),
            _ => StoreError::Internal(text),
        }
    }
}

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    db: Db,
    /// An admin command's store: every body runs in place (see the module comment).
    command: bool,
    /// The write-ahead log, whose size and time stamp what is committed.
    wal: Arc<stamp::WalStamp>,
}

impl SqliteStore {
    /// Opens (for the server: creates or migrates) the file at `database.path`. A command never
    /// creates one: a mistyped path would otherwise leave an empty database behind.
    pub fn open(config: &Config, purpose: Purpose) -> Result<SqliteStore, StoreError> {
        let path = &config.database_path;
        if purpose == Purpose::Command && !path.exists() {
            return Err(StoreError::Refused(format!(
                "no database at {}; `hallpass serve` creates one",
                path.display()
            )));
        }
        let options = DbOptions {
            pool_size: config.pool_size,
            busy_timeout: config.busy_timeout,
            synchronous: config.synchronous,
        };
        let db = db::open(path, &options)
            .map_err(|e| StoreError::Refused(format!("database {}: {e}", path.display())))?;
        Ok(SqliteStore {
            db,
            command: purpose == Purpose::Command,
            wal: Arc::new(stamp::WalStamp::new(path)),
        })
    }

    /// The database itself, for the copy into PostgreSQL (`hallpass migrate-db`).
    pub(crate) fn db(&self) -> &db::Db {
        &self.db
    }

    /// See [`crate::store::Store::with_metrics`].
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> SqliteStore {
        self.db = self.db.with_metrics(metrics);
        self
    }

    /// See [`crate::store::Store::stamp`].
    pub fn stamp(&self) -> Stamp {
        self.wal.stamp()
    }

    /// See [`crate::store::Store::problem`].
    pub fn problem(&self) -> Option<String> {
        self.db.file_problem()
    }

    /// See [`crate::store::Store::replaced`].
    pub fn replaced(&self) -> bool {
        self.db.file_replaced()
    }

    /// See [`crate::store::Store::writes_failing`].
    pub async fn writes_failing(&self) -> Option<String> {
        self.db.writes_failing().await
    }

    /// Runs `f` on a pooled connection on a blocking thread.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        if self.command {
            return Ok(self.db.run_sync(f)?);
        }
        Ok(self.db.run(f).await?)
    }

    /// Runs the read-only `f` in place when a connection is idle (it may run twice).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        if self.command {
            return Ok(self.db.run_sync(f)?);
        }
        Ok(self.db.read(f).await?)
    }

    /// Runs `f` in the group-commit writer (it may run twice; see `db::writer`).
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        if self.command {
            return Ok(self.db.run_sync(f)?);
        }
        Ok(self.db.write(f).await?)
    }

    // The device flow.

    pub(crate) async fn start_authorization(
        &self,
        new: NewAuthorization,
    ) -> Result<Result<StartOutcome, OAuthError>, StoreError> {
        // A read of the client's pending codes writes nothing: in place, not a writer job.
        if let crate::store::Admission::Recount { .. } = new.admission {
            return self
                .read(move |conn| flow::start_authorization(conn, &new))
                .await;
        }
        self.write(move |conn| flow::start_authorization(conn, &new))
            .await
    }

    pub(crate) async fn poll_read(
        &self,
        auth: ClientAuth,
        device_code: String,
    ) -> Result<Result<PollRead, OAuthError>, StoreError> {
        self.read(move |conn| flow::poll_read(conn, &auth, &device_code))
            .await
    }

    pub(crate) async fn exchange(&self, x: Exchange) -> Result<Exchanged, StoreError> {
        self.write(move |conn| {
            let outcome = flow::exchange(conn, &x)?;
            let key = match outcome {
                PollOutcome::Issued(_) => Some(crate::store::ActiveKey {
                    algorithm: x.algorithm,
                    kid: signing_keys::active_kid(conn, x.algorithm)?,
                }),
                _ => None,
            };
            Ok(Exchanged { outcome, key })
        })
        .await
    }

    pub(crate) async fn look_up_code(
        &self,
        typed: String,
        viewer: Option<String>,
        now: i64,
    ) -> Result<CodeLookup, StoreError> {
        self.run(move |conn| flow::look_up_code(conn, &typed, viewer.as_deref(), now))
            .await
    }

    pub(crate) async fn approved_by(
        &self,
        typed: String,
        user_id: String,
    ) -> Result<Option<i64>, StoreError> {
        self.run(move |conn| flow::approved_by(conn, &typed, &user_id))
            .await
    }

    pub(crate) async fn approve(
        &self,
        approval: Approval,
    ) -> Result<Result<Device, ApprovalRefused>, StoreError> {
        // Always a write (an approval, or a wrong code counted): approvals arriving together
        // share a commit.
        self.write(move |conn| flow::approve(conn, &approval)).await
    }

    pub(crate) async fn deny(
        &self,
        typed: String,
        actor: Actor,
        now: i64,
    ) -> Result<Result<(), CodeProblem>, StoreError> {
        self.run(move |conn| flow::deny(conn, &typed, &actor, now))
            .await
    }

    pub(crate) async fn deny_authorization(
        &self,
        id: String,
        actor: Actor,
        now: i64,
    ) -> Result<Option<Result<DeviceAuthorization, CodeProblem>>, StoreError> {
        self.run(move |conn| flow::deny_authorization(conn, &id, &actor, now))
            .await
    }

    pub(crate) async fn authorizations(
        &self,
        state: Option<AuthorizationState>,
        client_id: Option<String>,
        now: i64,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<DeviceAuthorization>, u64), StoreError> {
        self.run(move |conn| auths::list(conn, state, client_id.as_deref(), now, offset, limit))
            .await
    }

    pub(crate) async fn authorizations_page(
        &self,
        listing: Listing,
        client_id: Option<String>,
        now: i64,
        page: u32,
        page_size: u32,
    ) -> Result<AuthorizationsPage, StoreError> {
        self.run(move |conn| {
            let counts = auths::count_states(conn, client_id.as_deref(), now)?;
            // A page past the end (the list shrank since the link was made): the last one.
            let pages = counts.of(listing).div_ceil(u64::from(page_size)).max(1);
            let page = u64::from(page).min(pages) as u32;
            let offset = (page - 1) * page_size;
            let rows =
                auths::list_overview(conn, listing, client_id.as_deref(), now, offset, page_size)?;
            let clients = db::clients::list(conn)?;
            Ok(AuthorizationsPage {
                counts,
                rows,
                clients,
                page,
            })
        })
        .await
    }

    // Tokens.

    pub(crate) async fn client_grant(
        &self,
        auth: ClientAuth,
    ) -> Result<Result<ClientRead, OAuthError>, StoreError> {
        self.read(move |conn| {
            let (client, fresh) = match auth::authenticate(conn, &auth)? {
                Ok(read) => read,
                Err(e) => return Ok(Err(e)),
            };
            let key = match auth.sign_default {
                Some(default) => Some(auth::active_key(conn, &client, default)?),
                None => None,
            };
            Ok(Ok(ClientRead { client, fresh, key }))
        })
        .await
    }

    pub(crate) async fn refresh(
        &self,
        r: Refresh,
    ) -> Result<Result<Refreshed, OAuthError>, StoreError> {
        self.write(move |conn| {
            let (client, _) = match auth::authenticate(conn, &r.auth)? {
                Ok(read) => read,
                Err(e) => return Ok(Err(e)),
            };
            let grant = tokens::refresh(conn, &r, &client)?;
            let key = match (&grant, r.auth.sign_default) {
                (Ok(_), Some(default)) => Some(auth::active_key(conn, &client, default)?),
                _ => None,
            };
            Ok(Ok(Refreshed { client, grant, key }))
        })
        .await
    }

    pub(crate) async fn authenticate_client(
        &self,
        creds: ClientCredentials,
    ) -> Result<Result<Client, OAuthError>, StoreError> {
        self.run(move |conn| auth::verify_client(conn, &creds))
            .await
    }

    pub(crate) async fn revoke(&self, r: Revocation) -> Result<(), StoreError> {
        let keys = self.published_keys(r.now, r.grace_ms).await?;
        self.run(move |conn| tokens::revoke(conn, &r, &keys)).await
    }

    pub(crate) async fn introspect(
        &self,
        i: Introspect,
    ) -> Result<Result<Introspection, OAuthError>, StoreError> {
        // Resource servers may call it on every request they serve: one read in place, the
        // client, the published keys and the token together.
        self.read(move |conn| {
            let client = match auth::verify_client(conn, &i.creds)? {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            if !client.is_confidential() {
                return Ok(Err(OAuthError::new(
                    ErrorCode::InvalidClient,
                    "introspection requires a confidential client's credentials",
                )));
            }
            let Some(token) = &i.token else {
                return Ok(Err(OAuthError::new(
                    ErrorCode::InvalidRequest,
                    "missing parameter `token`",
                )));
            };
            let keys = signing_keys::published(conn, i.now, i.grace_ms)?;
            Ok(Ok(tokens::introspect(
                conn,
                token,
                &keys,
                &i.verified,
                i.now,
            )?))
        })
        .await
    }

    pub(crate) async fn bearer(
        &self,
        token: String,
        verified: Arc<Verified>,
        grace_ms: i64,
        now: i64,
    ) -> Result<Option<Bearer>, StoreError> {
        self.run(move |conn| {
            let keys = signing_keys::published(conn, now, grace_ms)?;
            tokens::bearer(conn, &token, &keys, &verified, now)
        })
        .await
    }

    pub(crate) async fn published_keys(
        &self,
        now: i64,
        grace_ms: i64,
    ) -> Result<Vec<PublicKey>, StoreError> {
        self.run(move |conn| signing_keys::published(conn, now, grace_ms))
            .await
    }

    // Browser sessions and users.

    pub(crate) async fn session(
        &self,
        id_hash: Vec<u8>,
        now: i64,
    ) -> Result<Option<Session>, StoreError> {
        self.run(move |conn| db::sessions::find(conn, &id_hash, now))
            .await
    }

    pub(crate) async fn create_session(&self, s: NewSession) -> Result<(), StoreError> {
        self.run(move |conn| {
            db::sessions::insert(
                conn,
                &s.id_hash,
                &s.user_id,
                &s.csrf_token,
                s.now,
                s.expires_at,
            )
        })
        .await
    }

    pub(crate) async fn end_session(&self, id_hash: Vec<u8>) -> Result<(), StoreError> {
        self.run(move |conn| db::sessions::delete(conn, &id_hash))
            .await
    }

    pub(crate) async fn user(&self, id: String) -> Result<Option<User>, StoreError> {
        self.run(move |conn| db::users::find_by_id(conn, &id)).await
    }

    pub(crate) async fn user_by_name(&self, username: String) -> Result<Option<User>, StoreError> {
        self.run(move |conn| db::users::find_by_username(conn, &username))
            .await
    }

    pub(crate) async fn users(
        &self,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<User>, u64), StoreError> {
        self.run(move |conn| db::users::list(conn, offset, limit))
            .await
    }

    pub(crate) async fn count_users(&self) -> Result<u64, StoreError> {
        self.run(|conn| Ok(conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?))
            .await
    }

    pub(crate) async fn create_user(
        &self,
        user: NewUser,
    ) -> Result<Result<User, Refusal>, StoreError> {
        self.run(move |conn| admin::create_user(conn, &user)).await
    }

    pub(crate) async fn update_user(
        &self,
        id: String,
        update: UserUpdate,
        now: i64,
    ) -> Result<Result<User, Refusal>, StoreError> {
        self.run(move |conn| admin::update_user(conn, &id, &update, now))
            .await
    }

    pub(crate) async fn delete_user(&self, id: String) -> Result<Result<(), Refusal>, StoreError> {
        self.run(move |conn| admin::delete_user(conn, &id)).await
    }

    // Clients.

    pub(crate) async fn client(&self, client_id: String) -> Result<Option<Client>, StoreError> {
        self.run(move |conn| db::clients::find(conn, &client_id))
            .await
    }

    pub(crate) async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        self.run(|conn| db::clients::list(conn)).await
    }

    pub(crate) async fn create_client(
        &self,
        spec: ClientSpec,
        client_id: String,
        secret_hash: Option<Vec<u8>>,
        now: i64,
    ) -> Result<Result<Client, Refusal>, StoreError> {
        self.run(move |conn| {
            admin::create_client(conn, &spec, &client_id, secret_hash.as_deref(), now)
        })
        .await
    }

    pub(crate) async fn update_client(
        &self,
        client_id: String,
        change: ClientChange,
        now: i64,
    ) -> Result<Result<Client, Refusal>, StoreError> {
        self.run(move |conn| admin::update_client(conn, &client_id, &change, now))
            .await
    }

    pub(crate) async fn delete_client(
        &self,
        client_id: String,
        actor: Actor,
        now: i64,
    ) -> Result<Result<Client, Refusal>, StoreError> {
        self.run(move |conn| admin::delete_client(conn, &client_id, &actor, now))
            .await
    }

    pub(crate) async fn set_client_secret(
        &self,
        client_id: String,
        secret_hash: Vec<u8>,
        now: i64,
    ) -> Result<Result<(), Refusal>, StoreError> {
        self.run(move |conn| admin::set_client_secret(conn, &client_id, &secret_hash, now))
            .await
    }

    // Devices.

    pub(crate) async fn device(
        &self,
        id: String,
        owner: Option<String>,
    ) -> Result<Option<Device>, StoreError> {
        self.run(move |conn| devices::find_managed(conn, &id, owner.as_deref()))
            .await
    }

    pub(crate) async fn devices(
        &self,
        filter: DeviceFilter,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<Device>, u64), StoreError> {
        self.run(move |conn| db::devices::list(conn, &filter, offset, limit))
            .await
    }

    pub(crate) async fn devices_of(&self, user_id: String) -> Result<DevicesOf, StoreError> {
        self.run(move |conn| devices::devices_of(conn, &user_id))
            .await
    }

    pub(crate) async fn update_device(
        &self,
        update: DeviceUpdate,
    ) -> Result<Result<Device, DeviceRefused>, StoreError> {
        self.run(move |conn| devices::update(conn, &update)).await
    }

    pub(crate) async fn set_device_locked(
        &self,
        id: String,
        owner: Option<String>,
        locked: bool,
        actor: Actor,
        now: i64,
    ) -> Result<Option<Device>, StoreError> {
        self.run(move |conn| devices::set_locked(conn, &id, owner.as_deref(), locked, &actor, now))
            .await
    }

    pub(crate) async fn remove_device(
        &self,
        id: String,
        owner: Option<String>,
        actor: Actor,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| devices::remove(conn, &id, owner.as_deref(), &actor, now))
            .await
    }

    // Signing keys.

    pub(crate) async fn keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        self.run(|conn| signing_keys::list(conn)).await
    }

    pub(crate) async fn check_sealing(&self, sealer: Arc<Sealer>) -> Result<usize, StoreError> {
        self.run(move |conn| {
            signing_keys::check_sealing(conn, &sealer)?;
            Ok(signing_keys::list(conn)?
                .iter()
                .filter(|k| !k.sealed)
                .count())
        })
        .await
    }

    pub(crate) async fn active_key(
        &self,
        sealer: Arc<Sealer>,
        algorithm: Algorithm,
    ) -> Result<Option<SigningKey>, StoreError> {
        self.run(move |conn| signing_keys::active(conn, &sealer, algorithm))
            .await
    }

    pub(crate) async fn signing_key(
        &self,
        sealer: Arc<Sealer>,
        algorithm: Algorithm,
        cached: Option<String>,
        now: i64,
    ) -> Result<Option<SigningKey>, StoreError> {
        self.run(move |conn| {
            if let Some(kid) = &cached {
                if signing_keys::active_kid(conn, algorithm)?.as_deref() == Some(kid) {
                    return Ok(None);
                }
            }
            signing_keys::active_or_create(conn, &sealer, algorithm, now).map(Some)
        })
        .await
    }

    pub(crate) async fn rotate_keys(
        &self,
        sealer: Arc<Sealer>,
        only: Option<Algorithm>,
        default: Algorithm,
        now: i64,
    ) -> Result<Vec<SigningKey>, StoreError> {
        self.run(move |conn| signing_keys::rotate(conn, &sealer, only, default, now))
            .await
    }

    pub(crate) async fn import_key(
        &self,
        sealer: Arc<Sealer>,
        key: Arc<SigningKey>,
        pkcs8: Vec<u8>,
        standby: bool,
        now: i64,
    ) -> Result<Imported, StoreError> {
        self.run(move |conn| signing_keys::import(conn, &sealer, &key, &pkcs8, standby, now))
            .await
    }

    pub(crate) async fn activate_key(
        &self,
        kid: String,
        now: i64,
    ) -> Result<Activation, StoreError> {
        self.run(move |conn| signing_keys::activate(conn, &kid, now))
            .await
    }

    pub(crate) async fn revoke_key(&self, kid: String) -> Result<bool, StoreError> {
        self.run(move |conn| signing_keys::revoke(conn, &kid)).await
    }

    pub(crate) async fn reseal_keys(&self, sealer: Arc<Sealer>) -> Result<Resealed, StoreError> {
        self.run(move |conn| signing_keys::reseal(conn, &sealer))
            .await
    }

    // The reaper.

    pub(crate) async fn write_poll_times(&self, times: Vec<PollTime>) -> Result<(), StoreError> {
        // On a pooled connection, not through the group-commit writer: as writer jobs the
        // batches shared their commits (and the writer's larger checkpoints) with the device
        // authorizations beside them, and W7's tail grew (p99.9 61 / 72 ms against 29 / 40 ms,
        // two alternating runs after W2L).
        self.run(move |conn| auths::write_poll_times(conn, &times))
            .await
    }

    pub(crate) async fn count_expired_unused(&self, now: i64) -> Result<u64, StoreError> {
        self.run(move |conn| auths::count_expired_unused(conn, now))
            .await
    }

    pub(crate) async fn purge(
        &self,
        what: Expired,
        now: i64,
        limit: u32,
    ) -> Result<usize, StoreError> {
        let delete: fn(&Connection, i64, u32) -> Result<usize, DbError> = match what {
            Expired::Authorizations => auths::delete_expired,
            Expired::RefreshTokens => db::refresh_tokens::delete_expired,
            Expired::Devices => db::devices::delete_expired,
            Expired::Revocations => db::refresh_tokens::delete_expired_revocations,
            Expired::Sessions => db::sessions::delete_expired,
        };
        self.run(move |conn| delete(conn, now, limit)).await
    }

    pub(crate) async fn purge_keys(&self, now: i64, grace_ms: i64) -> Result<usize, StoreError> {
        self.run(move |conn| signing_keys::delete_expired(conn, now, grace_ms))
            .await
    }

    // Operations.

    pub(crate) async fn probe(&self) -> Result<(), StoreError> {
        self.run(|conn| {
            Ok(conn
                .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(drop)?)
        })
        .await
    }

    pub(crate) async fn backup(&self, target: PathBuf) -> Result<(), StoreError> {
        Ok(db::backup(&self.db, &target)?)
    }
}
