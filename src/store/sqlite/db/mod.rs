//! The SQLite file behind an r2d2 pool: the machinery of the SQLite backend.
//!
//! The SQL of each table is one file under this module; the transactions the store's methods
//! run are in the backend's other files ([`crate::store::sqlite`]). Async code reaches the database
//! through [`Db::run`], which moves the closure onto tokio's blocking threads so a slow disk
//! never stalls the reactor; through [`Db::write`], the group-commit writer thread; and, for the
//! token endpoint's few indexed point reads only, through [`Db::read`], which runs them in place
//! when a connection is idle. Writes that read before they write use `BEGIN IMMEDIATE`
//! ([`write_tx`]) so two writers never deadlock on a lock upgrade.
//!
//! [`open`] refuses a file that is not a hallpass database (reading it before SQLite does, so a
//! crash's WAL is never replayed into another file) or that a newer binary wrote, creates a new
//! one with mode 0600, and brings an older one up to date in a transaction (see [`migrate`]).
//! While serving, [`file::FileWatch`] refuses requests once the file was removed or replaced.
//!
//! A file that cannot take writes for a while (made read-only, a full disk, I/O errors) is
//! answered [`DbError::is_unavailable`] (503) and noted in [`WriteHealth`], which `/healthz`
//! reports; connections that SQLite opened read-only in the meantime are replaced, so service
//! comes back by itself once the file takes writes again, without a restart.

pub mod audit;
pub mod clients;
pub mod device_authorizations;
pub mod devices;
pub mod file;
pub mod migrate;
pub mod refresh_tokens;
pub mod sessions;
pub mod signing_keys;
pub mod users;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::config::Synchronous;
use crate::metrics::Metrics;

/// A database failure, kept apart from what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// An error from SQLite itself.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// No pooled connection became free in time.
    #[error("database pool: {0}")]
    Pool(#[from] r2d2::Error),
    /// The blocking task panicked or was cancelled.
    #[error("database task: {0}")]
    Task(String),
    /// The file cannot be used as a hallpass database.
    #[error("{0}")]
    Refused(String),
    /// The database file was removed or replaced while the server ran: writes would go to a
    /// file nobody can open again, so nothing is answered until it is back (or a restart).
    #[error("the database file {0} was removed or replaced while serving")]
    Gone(String),
    /// Nothing can be stored now for a reason that is not SQLite's own (the writer thread
    /// stopped while running the write): answered 503, as a full disk is.
    #[error("the database cannot store writes now: {0}")]
    Unavailable(String),
    /// The database file's contents were changed behind SQLite while the server ran (e.g. `cp`
    /// over it): nothing is read or written until a restart (see [`file`]).
    #[error("the database file {0} was changed by another program while serving")]
    Replaced(String),
}

impl DbError {
    /// True when the failure is another writer holding the lock past the busy timeout, or every
    /// pooled connection being held (by requests waiting for that lock) past it: both pass.
    pub fn is_busy(&self) -> bool {
        match self {
            DbError::Pool(_) => true,
            DbError::Sqlite(e) => is_sqlite_busy(e),
            _ => false,
        }
    }

    /// True when the failure says the file cannot take writes now (read-only, full disk, I/O
    /// error, cannot be opened) or the writer stopped: answered 503 like busy, and reported by
    /// `/healthz` until a write succeeds again. Not for busy: another writer holding the lock
    /// is a wait, not a failure of the disk.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unavailable(_) => true,
            DbError::Sqlite(e) => is_storage_failure(e),
            _ => false,
        }
    }
}

/// True when SQLite says the file cannot be written, or read, now: `SQLITE_READONLY*`,
/// `SQLITE_IOERR*`, `SQLITE_FULL`, `SQLITE_CANTOPEN`. A connection that met one is reopened
/// (see [`writer`]): SQLite opens a file it cannot write read-only without saying so, and
/// such a connection stays read-only after the file is writable again.
fn is_storage_failure(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::ReadOnly
            | rusqlite::ErrorCode::SystemIoFailure
            | rusqlite::ErrorCode::DiskFull
            | rusqlite::ErrorCode::CannotOpen))
}

/// A `SQLITE_READONLY` failure saying why.
fn read_only(why: &str) -> DbError {
    DbError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
        Some(why.into()),
    ))
}

/// Whether writes are known to fail, and why: what `GET /healthz` reports. Set by any write
/// (group-commit batch or pooled) that fails with [`DbError::is_unavailable`], or by the writer
/// thread stopping; cleared by a committed batch that wrote, or by [`Db::writes_failing`]'s
/// probe. Reading it costs one atomic load while all is well.
#[derive(Debug, Default)]
pub struct WriteHealth {
    failing: std::sync::atomic::AtomicBool,
    /// Why, while `failing`.
    reason: parking_lot::Mutex<String>,
    /// How many times `failing` changed: pooled connections opened in an earlier epoch are
    /// replaced once writes work (see [`Manager`]).
    epoch: std::sync::atomic::AtomicU64,
}

impl WriteHealth {
    /// Writes failed with `e`; logged when the state changes, not at every failure.
    fn fail(&self, e: &DbError) {
        *self.reason.lock() = e.to_string();
        if !self
            .failing
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.epoch
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                error = %e,
                "database writes are failing; /healthz answers 503 until one succeeds"
            );
        }
    }

    /// A write was stored.
    fn recovered(&self) {
        if self.failing.load(std::sync::atomic::Ordering::Relaxed)
            && self
                .failing
                .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.epoch
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!("database writes succeed again");
        }
    }

    /// See the field.
    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether writes are known to fail.
    fn is_failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why writes are failing, or `None` while they are not known to.
    fn failing(&self) -> Option<String> {
        self.failing
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| self.reason.lock().clone())
    }
}

/// True when SQLite answered busy or locked.
fn is_sqlite_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// True when `e` is a UNIQUE or PRIMARY KEY constraint violation.
pub fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// How a database is opened.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Pooled connections.
    pub pool_size: u32,
    /// `PRAGMA busy_timeout`.
    pub busy_timeout: Duration,
    /// `PRAGMA synchronous`.
    pub synchronous: Synchronous,
}

/// r2d2's SQLite connection manager, plus checks that keep connections SQLite left read-only
/// out of the pool.
///
/// SQLite opens a file it cannot open for writing (made read-only, `chattr +i`) read-only
/// without saying so, and such a connection refuses writes for the rest of its life: the main
/// file when the connection is opened, the `-wal` at the connection's first read (so even a
/// connection opened before the file turned read-only can be left so, and SQLite does not
/// report that one). So a connection is dropped instead of given back when it met a failure
/// saying the file cannot take writes ([`DbError::is_unavailable`]) or SQLite reports it
/// read-only; and once writes work again after they were known to fail ([`WriteHealth`]), every
/// connection opened before that is replaced when next checked out. While writes fail, the
/// connections stay in use: reads go on. Each check is a flag or counter lookup, no I/O.
#[derive(Debug)]
struct Manager {
    sqlite: SqliteConnectionManager,
    health: Arc<WriteHealth>,
}

/// A pooled connection, and what decides whether it may be used again.
struct Pooled {
    conn: Connection,
    /// Set when it met a failure saying the file cannot take writes now.
    broken: bool,
    /// [`WriteHealth::epoch`] when it was opened.
    epoch: u64,
}

impl std::ops::Deref for Pooled {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Pooled;
    type Error = rusqlite::Error;

    fn connect(&self) -> Result<Pooled, rusqlite::Error> {
        let epoch = self.health.epoch();
        Ok(Pooled {
            conn: self.sqlite.connect()?,
            broken: false,
            epoch,
        })
    }

    /// At checkout: a connection opened before writes last failed or recovered, now that they
    /// work, may have been left read-only; it is replaced by a fresh one.
    fn is_valid(&self, conn: &mut Pooled) -> Result<(), rusqlite::Error> {
        if conn.epoch != self.health.epoch() && !self.health.is_failing() {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                Some("opened while database writes were failing; replaced".into()),
            ));
        }
        Ok(())
    }

    /// At checkin.
    fn has_broken(&self, conn: &mut Pooled) -> bool {
        conn.broken || conn.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true)
    }
}

/// Where r2d2 reports connections it could not open or threw away.
#[derive(Debug)]
struct PoolErrors;

impl r2d2::HandleError<rusqlite::Error> for PoolErrors {
    fn handle_error(&self, error: rusqlite::Error) {
        tracing::warn!(%error, "database pool: a connection could not be opened, or was replaced");
    }
}

/// The shared handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool<Manager>,
    /// Where connection waits are counted, when serving.
    metrics: Option<Arc<Metrics>>,
    /// The file as opened, to notice its removal or replacement (see [`file`]).
    file: Arc<file::FileWatch>,
    /// The group-commit writer (see [`writer`]), started on first use, and again if its thread
    /// ever stops.
    writer: Arc<parking_lot::Mutex<Option<writer::Writer>>>,
    /// What the writer's connection is opened with.
    options: Arc<DbOptions>,
    /// Whether writes are known to fail, for `/healthz`.
    health: Arc<WriteHealth>,
}

/// A pooled connection with SQLite's busy handler switched off, for [`Db::read`]. Dropping it
/// switches the handler back on before the connection returns to the pool, also when the read
/// panics: a connection left at `busy_timeout = 0` would make the next write on it answer busy
/// (503) at once instead of waiting its turn for the lock.
struct BusyHandlerOff {
    conn: r2d2::PooledConnection<Manager>,
    busy_timeout: Duration,
}

impl BusyHandlerOff {
    fn new(conn: r2d2::PooledConnection<Manager>, busy_timeout: Duration) -> Result<Self, DbError> {
        conn.busy_timeout(Duration::ZERO)?;
        Ok(BusyHandlerOff { conn, busy_timeout })
    }
}

impl Drop for BusyHandlerOff {
    fn drop(&mut self) {
        if let Err(e) = self.conn.busy_timeout(self.busy_timeout) {
            // Cannot happen short of a broken connection; still, do not hand it back to the pool
            // at 0 silently.
            tracing::error!(error = %e, "could not restore the busy timeout of a pooled connection");
        }
    }
}

impl Db {
    /// Runs `f` with a pooled connection on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let metrics = self.metrics.clone();
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            // One stat per call: a removed or replaced file is refused before anything is
            // acknowledged into it.
            if !db.check_file() {
                return Err(db.file.refusal());
            }
            let started = std::time::Instant::now();
            let mut conn = pool.get()?;
            if let Some(m) = metrics {
                m.pool_wait(started.elapsed());
            }
            file::forget_noted_commits();
            let changes = conn.total_changes();
            let result = f(&mut conn.conn);
            db.noted(&mut conn, changes, &result);
            // A commit in `f` may call for a checkpoint, and is not acknowledged if the file
            // changed under it.
            db.file.after_commit(&conn.conn, POOL_CHECKPOINT_FRAMES)?;
            result
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Notes in [`WriteHealth`] what `result`, from `conn`, says: a failure that says the file
    /// cannot take writes now (and `conn` is not given back to the pool), or a success that
    /// wrote (`conn`'s change count moved from `changes`), so writes work.
    fn noted<T>(&self, conn: &mut Pooled, changes: u64, result: &Result<T, DbError>) {
        match result {
            Err(e) if e.is_unavailable() => {
                conn.broken = true;
                self.health.fail(e);
            }
            Ok(_) if conn.total_changes() != changes => self.health.recovered(),
            _ => {}
        }
    }

    /// Runs a short read-only `f` (a few indexed point lookups, such as a device's poll) right
    /// here on the calling thread, with a pooled connection that is idle now, instead of handing
    /// it to a blocking thread: the hand-off (two thread wake-ups) cost more than the read
    /// itself (issue 7: a trial build running every read in place took W2 polls over 100,000
    /// codes from 58 to 38 µs of CPU each). WAL readers never wait for the writer, so what can
    /// stall the caller is a page that is in neither SQLite's cache nor the OS's, read from
    /// disk. Falls back to [`Db::run`] when no connection is idle, and when SQLite reports busy
    /// (the busy handler would sleep, so it is switched off here): `f` must only read, as it may
    /// run twice.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        if let Some(conn) = self.pool.try_get() {
            if !self.file.check_recent() {
                return Err(self.file.refusal());
            }
            let mut conn = BusyHandlerOff::new(conn, self.options.busy_timeout)?;
            let result = f(&mut conn.conn.conn);
            if let Err(e) = &result {
                if e.is_unavailable() {
                    conn.conn.broken = true;
                    self.health.fail(e);
                }
            }
            drop(conn);
            match result {
                Err(DbError::Sqlite(e)) if is_sqlite_busy(&e) => {}
                done => return done,
            }
        }
        self.run(f).await
    }

    /// Checks that the database path still names the file that was opened, with the contents
    /// this process left in it; while it does not, [`Db::run`] fails with [`DbError::Gone`]
    /// (removed, may come back) or [`DbError::Replaced`] (changed, for good), both 503. Returns
    /// whether the file is in place. Cheap: one `stat` and a 100-byte read; logs only when the
    /// answer changes.
    pub fn check_file(&self) -> bool {
        self.file.check()
    }

    /// Why the database file cannot be used now (removed, or replaced under the server), for
    /// `/healthz`; `None` while it can.
    pub fn file_problem(&self) -> Option<String> {
        self.file.problem()
    }

    /// Whether the database file was replaced under this process: then its connections must
    /// not be closed before the process exits (SQLite's last close would checkpoint the old
    /// WAL into the new file), see `cli::serve`.
    pub fn file_replaced(&self) -> bool {
        matches!(self.file.refusal(), DbError::Replaced(_))
    }

    /// Runs `f` in the group-commit writer (see [`writer`]): in a batch with other queued
    /// writes, one transaction and one commit for all, `f` as atomic as a transaction of its
    /// own. For the write paths that many requests take at once; [`write_tx`] inside `f` nests.
    /// `f` may run twice (when another job in its batch needs an undo), so its effects outside
    /// the database must bear repeating; the answer is its last run's, and comes after the
    /// batch committed. A batch that fails fails every job in it.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let writer = self.writer()?;
        writer.write(f).await
    }

    /// The running group-commit writer: started on first use, and started again if its thread
    /// has stopped (it survives a failing or panicking batch, so that takes a panic where none
    /// is caught; a stopped writer must not leave every write failing until a restart).
    fn writer(&self) -> Result<writer::Writer, DbError> {
        let mut slot = self.writer.lock();
        if let Some(w) = &*slot {
            if w.running() {
                return Ok(w.clone());
            }
            tracing::error!("the database writer thread had stopped; starting a new one");
        }
        let path = self.file.path.clone();
        let options = self.options.clone();
        let w = writer::Writer::start(
            Box::new(move || open_writer(&path, &options)),
            self.file.clone(),
            self.options.busy_timeout,
            self.metrics.clone(),
            self.health.clone(),
        )
        .map_err(|e| DbError::Unavailable(format!("the database writer did not start: {e}")))?;
        *slot = Some(w.clone());
        Ok(w)
    }

    /// Why writes cannot succeed now, for `/healthz`; `None` when they can. While writes are
    /// not known to fail this costs one atomic load and writes nothing. Once a write has failed
    /// (read-only file, full disk, I/O error, a stopped writer), each call tries one small
    /// write through the writer (it rewrites `PRAGMA application_id` with its own value, one
    /// page), so the answer turns back by itself as soon as writes can be stored, even with no
    /// other traffic.
    pub async fn writes_failing(&self) -> Option<String> {
        self.health.failing()?;
        let probe = self
            .write(|conn| {
                conn.pragma_update(None, "application_id", migrate::APPLICATION_ID)?;
                Ok(())
            })
            .await;
        match probe {
            Ok(()) => {
                self.health.recovered();
                None
            }
            Err(e) => {
                if e.is_unavailable() {
                    self.health.fail(&e);
                }
                // A busy answer says nothing new: report the failure already known.
                Some(self.health.failing().unwrap_or_else(|| e.to_string()))
            }
        }
    }

    /// Counts connection waits, and the writer's batches, in `metrics` from now on.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Db {
        self.metrics = Some(metrics);
        self
    }

    /// Runs `f` with a pooled connection on the current thread (for the command line).
    pub fn run_sync<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut conn = self.pool.get()?;
        f(&mut conn.conn)
    }
}

/// WAL frames (pages) past which a commit of the group-commit writer checkpoints (through
/// [`file::FileWatch::after_commit`]). SQLite's default is 1,000, which the pooled connections
/// keep ([`POOL_CHECKPOINT_FRAMES`]). A longer WAL lets a checkpoint copy each hot page once for
/// more commits (issue 7, three alternating runs: W1 18,433 / 16,878 / 16,352 → 21,381 /
/// 18,034 / 21,173 req/s, W4 9,850 / 8,717 / 10,011 → 10,339 / 10,472 / 11,792; 10,000 frames
/// gained nothing more). The cost: a WAL file of up to ~16 MiB, and a longer pause in the
/// commit that checkpoints (W1 p99 8.6–9.8 → 10.9–12.1 ms).
const WRITER_CHECKPOINT_FRAMES: i32 = 4000;

/// WAL frames past which a commit on a pooled connection (in [`Db::run`]) checkpoints:
/// SQLite's own default.
const POOL_CHECKPOINT_FRAMES: i32 = 1000;

/// Opens the group-commit writer's connection (on the writer's thread). Never creates the file:
/// a missing one is refused, not replaced by an empty database. Refuses a connection SQLite
/// could only open read-only (it falls back to that silently when the file cannot be opened for
/// writing, and the connection would stay read-only after the file is writable again): the
/// writer tries again at its next batch.
fn open_writer(path: &Path, options: &DbOptions) -> Result<Connection, DbError> {
    let flags = rusqlite::OpenFlags::default() - rusqlite::OpenFlags::SQLITE_OPEN_CREATE;
    let conn = Connection::open_with_flags(path, flags)?;
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(read_only(&format!(
            "{} cannot be opened for writing",
            path.display()
        )));
    }
    configure(&conn, options)?;
    // Savepoints (one per job in a guarded batch, and SQLite's own per statement) journal pages
    // in memory, not in a temp file: a spilled sub-journal cost the writer ~8% in write
    // syscalls.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // No `wal_autocheckpoint` here: it would replace the WAL hook that `configure` installs.
    // The writer checkpoints at WRITER_CHECKPOINT_FRAMES through the file watch (see file).
    Ok(conn)
}

/// Writers of this process queue here before asking SQLite for its write lock. SQLite's busy
/// handler retries by sleeping (1 ms, 2 ms, ... up to 100 ms), so under many concurrent writers
/// an unlucky one could sleep for seconds while others kept winning; a queue hands the lock
/// over at once and in turn. Other processes (the command line) still meet the busy handler.
static WRITERS: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// How long a writer waits in [`WRITERS`]: the configured busy timeout (set by [`open`]).
static WRITER_WAIT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(5_000);

/// A write transaction: either its own, holding this process's writer turn, or — inside a
/// group-commit job (see [`writer`]), where the batch's transaction is already open — a
/// savepoint in it, or in an optimistic job a plain scope in it. Derefs to the connection.
/// Dropping it without [`WriteTx::commit`] rolls back (to the savepoint; an optimistic job's
/// batch is replayed guarded to give the same undo), then gives up the turn.
pub struct WriteTx<'c> {
    // Field order matters: the transaction ends before the turn is released.
    tx: Scope<'c>,
    _turn: Option<parking_lot::MutexGuard<'static, ()>>,
}

enum Scope<'c> {
    Own(Transaction<'c>),
    Nested(rusqlite::Savepoint<'c>),
    Optimistic(OptimisticScope<'c>),
}

/// A `write_tx` in an optimistic group-commit job: no savepoint, only the count of changes when
/// it began, to tell the writer when a drop without commit asks to undo writes.
struct OptimisticScope<'c> {
    conn: &'c Connection,
    changes: u64,
    committed: bool,
}

impl Drop for OptimisticScope<'_> {
    fn drop(&mut self) {
        if !self.committed && self.conn.total_changes() != self.changes {
            writer::undo_asked();
        }
    }
}

impl WriteTx<'_> {
    /// Commits (or releases the savepoint into the batch), then gives up the turn.
    pub fn commit(self) -> Result<(), rusqlite::Error> {
        match self.tx {
            Scope::Own(tx) => tx.commit(),
            Scope::Nested(sp) => sp.commit(),
            Scope::Optimistic(mut scope) => {
                scope.committed = true;
                Ok(())
            }
        }
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match &self.tx {
            Scope::Own(tx) => tx,
            Scope::Nested(sp) => sp,
            Scope::Optimistic(scope) => scope.conn,
        }
    }
}

/// A busy failure (answered 503) saying why.
fn busy(why: &str) -> DbError {
    DbError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        Some(why.into()),
    ))
}

/// Waits (up to the busy timeout) for this process's writer turn.
fn writer_turn() -> Option<parking_lot::MutexGuard<'static, ()>> {
    let wait = Duration::from_millis(WRITER_WAIT_MS.load(std::sync::atomic::Ordering::Relaxed));
    WRITERS.try_lock_for(wait)
}

/// Starts a write transaction that takes the write lock at once, after this process's other
/// writers (see [`WRITERS`]). Waiting longer than the busy timeout is a busy error (503).
/// Inside a group-commit job, where the batch's transaction is open, it is a savepoint, or in an
/// optimistic job no savepoint at all (see [`writer`]).
pub fn write_tx(conn: &mut Connection) -> Result<WriteTx<'_>, DbError> {
    if !conn.is_autocommit() && writer::optimistic() {
        let changes = conn.total_changes();
        return Ok(WriteTx {
            tx: Scope::Optimistic(OptimisticScope {
                conn,
                changes,
                committed: false,
            }),
            _turn: None,
        });
    }
    if !conn.is_autocommit() {
        return Ok(WriteTx {
            tx: Scope::Nested(conn.savepoint()?),
            _turn: None,
        });
    }
    let Some(turn) = writer_turn() else {
        return Err(busy("timed out waiting for this process's other writers"));
    };
    Ok(WriteTx {
        tx: Scope::Own(conn.transaction_with_behavior(TransactionBehavior::Immediate)?),
        _turn: Some(turn),
    })
}

/// Opens (creating if needed) the database at `path`, checks that it is ours, migrates it, and
/// returns a pool whose connections all have the same PRAGMAs.
pub fn open(path: &Path, options: &DbOptions) -> Result<Db, DbError> {
    // One connection first, outside the pool, to check the file and migrate it; the pool is
    // built only from a file known to be a current hallpass database.
    // A -wal file without its database means the database was removed (SQLite removes the
    // WAL when the last connection closes cleanly): starting on a new empty file would lose
    // every acknowledged write still in that WAL, and a copy restored next to it would be
    // read as corrupt.
    // The file is read before SQLite opens it: a file that is not a hallpass database is
    // refused before SQLite could replay a WAL beside it into it (see file::refuse_unless_ours).
    file::refuse_unless_ours(path)?;
    // A new file is created with mode 0600 (its -wal and -shm inherit it); an existing one
    // readable by others is named in a warning.
    file::create_private(path)?;
    file::warn_if_others_may_read(path);
    WRITER_WAIT_MS.store(
        options.busy_timeout.as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    {
        let mut conn = Connection::open(path)?;
        configure(&conn, options).map_err(|e| refuse_unreadable(path, e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| refuse_unreadable(path, e))?;
        migrate::migrate(&mut conn, path)?;
    }
    let opts = options.clone();
    let health: Arc<WriteHealth> = Arc::default();
    let sqlite = SqliteConnectionManager::file(path).with_init(move |c| {
        configure(c, &opts)?;
        // 1 MiB of page cache per pooled connection instead of SQLite's 2 MiB: a pooled
        // connection does point reads, which the OS's page cache serves nearly as fast, and
        // eight full caches were a third of the peak RSS with 100,000 live codes (issue 7:
        // 54/60 -> 48/43 MiB in alternating W2 runs, CPU per poll unchanged).
        c.pragma_update(None, "cache_size", -1024)
    });
    let manager = Manager {
        sqlite,
        health: health.clone(),
    };
    let pool = Pool::builder()
        .max_size(options.pool_size)
        .min_idle(Some(1))
        // SQLite connections to a local file do not go stale, so the check at checkout is only
        // Manager::is_valid's counter comparison (r2d2_sqlite's ran an empty statement).
        .test_on_check_out(true)
        .error_handler(Box::new(PoolErrors))
        // Connections stay open for the life of the pool: a connection closed while others
        // are open could be SQLite's last one of the file for a moment, and checkpoint on close
        // behind the file watch's back (see file). Only a broken one is dropped (Manager).
        .idle_timeout(None)
        .max_lifetime(None)
        .connection_timeout(options.busy_timeout.max(Duration::from_secs(1)))
        .build(manager)?;
    Ok(Db {
        pool,
        writer: Arc::new(parking_lot::Mutex::new(None)),
        options: Arc::new(options.clone()),
        health,
        metrics: None,
        file: Arc::new(file::FileWatch::new(path)),
    })
}

/// Writes a consistent copy of the database to `target` (`VACUUM INTO`: one read transaction,
/// so it never blocks the server's writers for long), created first, empty and with mode 0600,
/// so the copy, which holds the signing keys, is never readable by others. `target` must not
/// exist.
pub fn backup(db: &Db, target: &Path) -> Result<(), DbError> {
    file::create_private_new(target).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            DbError::Refused(format!("{} already exists", target.display()))
        }
        _ => DbError::Refused(format!("cannot create {}: {e}", target.display())),
    })?;
    let name = target.to_string_lossy().to_string();
    let copied = db.run_sync(|c| Ok(c.execute("VACUUM INTO ?1", [&name]).map(drop)?));
    if copied.is_err() {
        let _ = std::fs::remove_file(target);
    }
    copied
}

fn refuse_unreadable(path: &Path, e: rusqlite::Error) -> DbError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
            DbError::Refused(format!(
                "{} is not a SQLite database (and so not a hallpass database); refusing to use it",
                path.display()
            ))
        }
        _ => DbError::Sqlite(e),
    }
}

/// PRAGMAs every connection needs. `foreign_keys` and `busy_timeout` are per connection.
fn configure(conn: &Connection, options: &DbOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(options.busy_timeout)?;
    // No automatic checkpoints: Db::run and the writer checkpoint through the file watch,
    // which must know of every write to the database file; the command line never does.
    conn.wal_hook(Some(file::note_wal_frames));
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", options.synchronous.as_sql())?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &tempfile::TempDir) -> Db {
        let db = open(
            &dir.path().join("r.db"),
            &DbOptions {
                pool_size: 4,
                busy_timeout: Duration::from_secs(5),
                synchronous: Synchronous::Full,
            },
        )
        .unwrap();
        db.run_sync(|c| {
            Ok(c.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7)")?)
        })
        .unwrap();
        db
    }

    fn count(conn: &mut Connection) -> Result<i64, DbError> {
        Ok(conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
    }

    /// A database, a single-threaded runtime on this thread, and this thread's id.
    fn setup() -> (
        tempfile::TempDir,
        Db,
        tokio::runtime::Runtime,
        std::thread::ThreadId,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        (dir, db, rt, std::thread::current().id())
    }

    #[test]
    fn reads_run_in_place_when_a_connection_is_idle() {
        let (_dir, db, rt, here) = setup();
        let (ran_on, n) = rt
            .block_on(db.read(|c| Ok((std::thread::current().id(), count(c)?))))
            .unwrap();
        assert_eq!(ran_on, here, "no hand-off to a blocking thread");
        assert_eq!(n, 1);
    }

    #[test]
    fn a_read_that_panics_gives_its_connection_back_with_the_busy_timeout() {
        let (_dir, db, rt, _) = setup();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(db.read(|c| -> Result<(), DbError> {
                let t: i64 = c.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
                assert_eq!(t, 0, "in place, the busy handler is off");
                panic!("a read that panics");
            }))
        }));
        assert!(panicked.is_err());
        // Every connection in the pool, the one the panic left included, waits for locks again.
        let conns: Vec<_> = (0..4).map(|_| db.pool.get().unwrap()).collect();
        for c in &conns {
            let t: i64 = c
                .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
                .unwrap();
            assert_eq!(t, 5000);
        }
    }

    #[test]
    fn a_busy_read_is_retried_on_a_blocking_thread_with_the_busy_timeout() {
        let (_dir, db, rt, here) = setup();
        // In place the busy handler is off, so SQLite never sleeps on the async thread: a lock
        // conflict comes back at once as SQLITE_BUSY (stood for here by the closure itself),
        // and the read runs again on a blocking thread, where the busy timeout applies.
        let timeouts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = timeouts.clone();
        let n = rt
            .block_on(db.read(move |c| {
                let t: i64 = c.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
                seen.lock()
                    .unwrap()
                    .push((std::thread::current().id() == here, t));
                if std::thread::current().id() == here {
                    return Err(busy("stand-in for a lock conflict"));
                }
                count(c)
            }))
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(*timeouts.lock().unwrap(), vec![(true, 0), (false, 5000)]);
        // The connection used in place got its busy timeout back.
        let n = db
            .run_sync(|c| Ok(c.query_row("PRAGMA busy_timeout", [], |r| r.get::<_, i64>(0))?))
            .unwrap();
        assert_eq!(n, 5000);
        // Other errors are answered as they are, without a second run.
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = runs.clone();
        let e = rt.block_on(db.read(move |_| -> Result<(), DbError> {
            r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(DbError::Refused("no".into()))
        }));
        assert!(matches!(e, Err(DbError::Refused(_))));
        assert_eq!(runs.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
