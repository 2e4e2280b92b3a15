//! PostgreSQL, the second backend (issue 22): several hallpass instances on one database.
//!
//! This folder holds what every PostgreSQL store method stands on, independent of the method
//! list: [`connect`] (a pool of TLS connections from `database.url`), [`open`] (connect, then
//! create or check the schema, see [`schema`]), [`transaction`] (one transaction, retried on
//! serialization failures and deadlocks), [`PgError`] (what a failure means to a caller:
//! unavailable, busy, refused, internal; never the URL's password), and [`copy`], which moves
//! a whole SQLite database into an empty PostgreSQL one (`hallpass migrate-db`).
//!
//! Times are `BIGINT` milliseconds since the epoch, written by the instance as on SQLite
//! (`db::now_ms`); only the coordination tables' leases use the database's clock, so that
//! instances whose clocks disagree still agree on who holds a lease (see schema.sql).

mod admin;
mod admin_sql;
pub mod coordination;
pub mod copy;
mod flow;
pub mod flow_sql;
mod group;
mod hot;
pub mod rows;
pub mod schema;
pub mod store;
pub mod tls;
mod tokens;
mod tokens_keys;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use crate::config::{Config, DatabaseUrl, SslMode};

pub use deadpool_postgres::{Object as Connection, Transaction};
pub use tokio_postgres::IsolationLevel;

/// A PostgreSQL failure, sorted by what the caller does with it. Messages never contain the
/// URL's password (the URL appears only [`DatabaseUrl::redacted`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PgError {
    /// The database cannot be reached or cannot serve now: connection refused or lost, a
    /// timeout opening one, the server shutting down or starting, too many connections, a
    /// standby that refuses writes. Answered 503; passes when the database is back.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Every pooled connection stayed in use past `database.busy_timeout`, a lock was held
    /// past it, or a transaction kept losing to concurrent ones: answered 503, passes.
    #[error("the database is busy: {0}")]
    Busy(String),
    /// The settings cannot work (bad TLS files, a URL the driver refuses): exit 2 at start-up.
    #[error("{0}")]
    Config(String),
    /// The database is not one this binary may use (another program's tables, a newer
    /// schema, a non-empty target of `migrate-db`).
    #[error("{0}")]
    Refused(String),
    /// The transaction lost a race (serialization failure 40001, deadlock 40P01) and may run
    /// again as it is: [`transaction`] does so. Outside it, answered like [`PgError::Busy`].
    #[error("the transaction lost to a concurrent one: {0}")]
    Serialization(String),
    /// Anything else (a constraint or SQL error: a bug): answered 500 and logged.
    #[error("database error: {0}")]
    Internal(String),
}

impl From<PgError> for super::StoreError {
    fn from(e: PgError) -> Self {
        use super::StoreError as S;
        match e {
            PgError::Unavailable(_) => S::Unavailable(e.to_string()),
            PgError::Busy(_) | PgError::Serialization(_) => S::Busy(e.to_string()),
            PgError::Config(m) => S::Config(m),
            PgError::Refused(m) => S::Refused(m),
            PgError::Internal(_) => S::Internal(e.to_string()),
        }
    }
}

impl PgError {
    /// True for the failures answered 503 (unavailable or busy), which pass by themselves.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PgError::Unavailable(_) | PgError::Busy(_) | PgError::Serialization(_)
        )
    }
}

/// The error's text with its causes (tokio-postgres says "db error" and keeps the server's
/// message in its source).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Whether a SQLSTATE says the server cannot serve now, rather than that the statement is
/// wrong: class 08 (connection exception), 53 (insufficient resources: too many connections,
/// disk full), 57P01-57P03 (shutting down, crashed, starting), 25006 (a read-only standby,
/// e.g. right after a failover while the URL still names the old primary), 57014 (cancelled),
/// 58030 (I/O error); and, met when the pool opens a new connection, class 28 (the password or
/// role was changed) and 3D000 (the database is gone).
fn is_unavailable_state(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("08")
        || c.starts_with("53")
        || c.starts_with("28")
        || matches!(
            c,
            "57P01" | "57P02" | "57P03" | "25006" | "57014" | "58030" | "3D000"
        )
}

/// Whether a SQLSTATE says the transaction lost a race and may simply run again (issue 22:
/// "serialization failures and deadlocks are retried, never shown to a client as 500").
pub fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// Whether `e` is a unique (or primary key) violation: a domain outcome (a taken name, a
/// second active key), not a failure.
pub fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> PgError {
        let text = describe(&e);
        match e.code() {
            Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => PgError::Busy(text),
            Some(_) if is_retryable(&e) => PgError::Serialization(text),
            Some(c) if is_unavailable_state(c) => PgError::Unavailable(text),
            Some(_) => PgError::Internal(text),
            // No SQLSTATE: the connection (I/O, TLS, closed, timeout), or a bug of ours
            // (a column of the wrong type).
            None if e.is_closed() || is_connection_error(&e) => PgError::Unavailable(text),
            None => PgError::Internal(text),
        }
    }
}

/// Whether an error without a SQLSTATE is about the connection rather than about the query.
fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    // tokio-postgres keeps its error kinds private; its messages for them are stable.
    let top = e.to_string();
    [
        "error communicating with the server",
        "error performing TLS handshake",
        "error connecting to server",
        "timeout waiting for server",
        "unexpected message from server",
        "error parsing response from server",
        "authentication error",
    ]
    .iter()
    .any(|m| top.starts_with(m))
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> PgError {
        use deadpool_postgres::{PoolError as P, TimeoutType};
        match e {
            P::Backend(e) => e.into(),
            P::Timeout(TimeoutType::Wait) => PgError::Busy(
                "no pooled connection became free within database.busy_timeout".into(),
            ),
            P::Timeout(TimeoutType::Create) => PgError::Unavailable(
                "opening a connection took longer than database.connect_timeout".into(),
            ),
            P::Timeout(TimeoutType::Recycle) => {
                PgError::Unavailable("checking a pooled connection timed out".into())
            }
            P::Closed => PgError::Unavailable("the connection pool is closed".into()),
            other => PgError::Internal(describe(&other)),
        }
    }
}

/// The driver's configuration from `config`: the URL (without the sslmode and sslrootcert
/// that hallpass applies itself), plus what hallpass sets unless the URL does:
/// `application_name=hallpass` (so operators see it in `pg_stat_activity`), the connect
/// timeout, TCP keepalives and a TCP user timeout (a server that vanished without a reset is
/// noticed in ~30 s, not after the kernel's 15 minutes), and `lock_timeout` =
/// `database.busy_timeout` through the startup `options`.
pub fn driver_config(
    config: &Config,
    url: &DatabaseUrl,
) -> Result<tokio_postgres::Config, PgError> {
    let driver = url.expose_for_driver();
    let mut pg: tokio_postgres::Config = driver.parse().map_err(|e: tokio_postgres::Error| {
        PgError::Config(format!(
            "database.url {}: {}",
            url.redacted(),
            describe(&e).replace(driver, url.redacted())
        ))
    })?;
    let query = driver.split_once('?').map_or("", |(_, q)| q);
    let has = |key: &str| {
        query
            .split('&')
            .any(|p| p.split_once('=').map_or(p, |(k, _)| k) == key)
    };
    if !has("application_name") {
        pg.application_name("hallpass");
    }
    if !has("connect_timeout") {
        pg.connect_timeout(config.connect_timeout);
    }
    if !has("keepalives_idle") {
        pg.keepalives_idle(Duration::from_secs(30));
    }
    if !has("tcp_user_timeout") {
        pg.tcp_user_timeout(Duration::from_secs(30));
    }
    // lock_timeout 0 means "wait forever" to PostgreSQL, where busy_timeout 0 means "do not
    // wait" to SQLite: 1 ms is the nearest.
    let lock_ms = config.busy_timeout.as_millis().clamp(1, i32::MAX as u128);
    let options = match pg.get_options() {
        Some(o) if o.contains("lock_timeout") => o.to_string(),
        Some(o) => format!("{o} -c lock_timeout={lock_ms}"),
        None => format!("-c lock_timeout={lock_ms}"),
    };
    pg.options(options);
    pg.ssl_mode(match url.sslmode() {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    Ok(pg)
}

/// A pool of connections to the PostgreSQL database of `config` (`database.url`, which must be
/// set), with TLS as its `sslmode` says, at most `database.pool_size` connections, waiting at
/// most `database.busy_timeout` for a free one. One connection is opened before returning, so
/// a wrong host, password or certificate is reported here, at start-up.
pub async fn connect(config: &Config) -> Result<Pool, PgError> {
    let url = config
        .database_url
        .as_ref()
        .ok_or_else(|| PgError::Config("database.url is not set".into()))?;
    let pg = driver_config(config, url)?;
    let tls = tls::connector(url.sslmode(), url.ca(config.database_ca.as_ref()))
        .map_err(PgError::Config)?;
    let manager = Manager::from_config(
        pg,
        tls,
        ManagerConfig {
            // Only `is_closed` at checkout, no query: a connection the server dropped fails
            // at BEGIN, which `transaction` retries on another one.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(config.pool_size as usize)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.busy_timeout.max(Duration::from_millis(100))))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| PgError::Config(describe(&e)))?;
    let first = pool.get().await.map_err(|e| match PgError::from(e) {
        PgError::Unavailable(why) | PgError::Internal(why) | PgError::Busy(why) => {
            PgError::Unavailable(format!("cannot connect to {}: {why}", url.redacted()))
        }
        other => other,
    })?;
    drop(first);
    Ok(pool)
}

/// [`connect`], then the schema: created in an empty database, checked in one hallpass made,
/// refused in anyone else's or a newer binary's (see [`schema::migrate`]).
pub async fn open(config: &Config) -> Result<Pool, PgError> {
    let pool = connect(config).await?;
    let mut conn = pool.get().await?;
    schema::migrate(&mut conn).await?;
    drop(conn);
    Ok(pool)
}

/// `hallpass check`: connects (TLS files read, server reached, signed in) and says what the
/// database holds, changing nothing.
pub async fn probe(config: &Config) -> Result<String, PgError> {
    let pool = connect(config).await?;
    let conn = pool.get().await?;
    let version: String = conn.query_one("SHOW server_version", &[]).await?.get(0);
    let held = match schema::inspect(&conn).await? {
        schema::Found::Empty { schema } => {
            format!("schema {schema:?} is empty; `hallpass serve` creates the tables")
        }
        schema::Found::Hallpass { schema, version } => {
            let mut s = format!("schema {schema:?} holds hallpass schema version {version}");
            if version > schema::CURRENT_VERSION {
                s.push_str(&format!(
                    ", newer than this binary's {}: upgrade hallpass",
                    schema::CURRENT_VERSION
                ));
            }
            s
        }
        schema::Found::Foreign { schema, tables } => {
            return Err(PgError::Refused(format!(
                "schema {schema:?} holds {tables} table(s) but is not a hallpass database; \
                 hallpass would refuse it"
            )))
        }
    };
    Ok(format!("PostgreSQL {version}, {held}"))
}

/// The future a [`transaction`] body returns, borrowing the transaction. A box per
/// transaction: next to a round trip to the server (tens of microseconds at best) its cost
/// does not show, and it lets the body borrow the transaction, which a plain generic cannot.
pub type TxFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, PgError>> + Send + 't>>;

/// How often [`transaction`] runs a body that lost a race before giving up with
/// [`PgError::Busy`].
pub const ATTEMPTS: u32 = 8;

/// Runs `body` in one transaction at `isolation` and commits it; runs it again, in a new
/// transaction after a short random pause, when PostgreSQL aborts it as a serialization
/// failure (40001) or a deadlock (40P01), up to [`ATTEMPTS`] times (then [`PgError::Busy`],
/// a 503, never a 500). `body` must therefore bear running more than once: whatever it does
/// outside the database must be idempotent, and it should return what it read rather than act
/// on it. A connection found dead at `BEGIN` (the server restarted since it was pooled) is
/// dropped and another one tried: nothing was sent on it. A failed `COMMIT` is not retried:
/// whether it took effect is unknown, so it is answered as unavailable.
pub async fn transaction<T, F>(
    pool: &Pool,
    isolation: IsolationLevel,
    mut body: F,
) -> Result<T, PgError>
where
    F: for<'t, 'c> FnMut(&'t Transaction<'c>) -> TxFuture<'t, T>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut conn = pool.get().await?;
        let lost = match once(&mut conn, isolation, &mut body).await {
            Step::Done(value) => return Ok(value),
            Step::Failed(e) => return Err(e),
            Step::DeadConnection(e) if attempt < ATTEMPTS => {
                // Never give this connection back: it is dead.
                drop(deadpool_postgres::Object::take(conn));
                tracing::debug!(error = %e, "a pooled connection was dead at BEGIN; trying another");
                continue;
            }
            Step::DeadConnection(e) => return Err(e),
            Step::Lost(why) => why,
        };
        drop(conn);
        if attempt >= ATTEMPTS {
            return Err(PgError::Busy(format!(
                "gave up after {ATTEMPTS} attempts that lost to concurrent transactions: {lost}"
            )));
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
}

/// How one run of a [`transaction`] body ended.
enum Step<T> {
    Done(T),
    /// Lost a race (40001, 40P01): run again.
    Lost(String),
    /// The connection was dead before anything was sent on it.
    DeadConnection(PgError),
    Failed(PgError),
}

/// One run of `body` in a transaction on `conn`.
async fn once<T, F>(conn: &mut Connection, isolation: IsolationLevel, body: &mut F) -> Step<T>
where
    F: for<'t, 'c> FnMut(&'t Transaction<'c>) -> TxFuture<'t, T>,
{
    let tx = match conn
        .build_transaction()
        .isolation_level(isolation)
        .start()
        .await
    {
        Ok(tx) => tx,
        Err(e) if e.is_closed() || is_connection_error(&e) => {
            return Step::DeadConnection(e.into())
        }
        Err(e) => return Step::Failed(e.into()),
    };
    let value = match body(&tx).await {
        Ok(value) => value,
        // Dropping `tx` rolls back.
        Err(PgError::Serialization(why)) => return Step::Lost(why),
        Err(e) => return Step::Failed(e),
    };
    // A serializable transaction may be refused at COMMIT (40001): nothing was stored, so it
    // runs again. Any other failed COMMIT leaves the outcome unknown.
    match tx.commit().await {
        Ok(()) => Step::Done(value),
        Err(e) if is_retryable(&e) => Step::Lost(describe(&e)),
        Err(e) => Step::Failed(match PgError::from(e) {
            PgError::Internal(why) => PgError::Internal(why),
            other => PgError::Unavailable(format!("the commit's outcome is unknown: {other}")),
        }),
    }
}

/// A random pause before attempt `attempt + 1`: up to 1, 2, 4, ... 64 ms, so that transactions
/// that collided do not collide again in lockstep.
fn backoff(attempt: u32) -> Duration {
    let mut bytes = [0u8; 2];
    let _ = getrandom::fill(&mut bytes);
    let ceiling_us = 1000u64 << attempt.min(6);
    Duration::from_micros(u64::from(u16::from_le_bytes(bytes)) * ceiling_us / 65_536 + 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each failure means to a caller: the server's state is 503, a lost race is run
    /// again, a wrong statement is 500.
    #[test]
    fn sqlstates_sort_into_unavailable_busy_and_internal() {
        for code in [
            "08006", "08001", "53300", "53100", "57P01", "57P03", "25006", "28P01", "3D000",
        ] {
            assert!(is_unavailable_state(&SqlState::from_code(code)), "{code}");
        }
        for code in ["23505", "42P01", "22001", "40001", "40P01", "55P03"] {
            assert!(!is_unavailable_state(&SqlState::from_code(code)), "{code}");
        }
        assert!(PgError::Serialization(String::new()).is_transient());
        assert!(PgError::Busy(String::new()).is_transient());
        assert!(!PgError::Internal(String::new()).is_transient());
        assert!(!PgError::Refused(String::new()).is_transient());
    }

    #[test]
    fn backoff_stays_small_and_grows() {
        for attempt in 1..=ATTEMPTS {
            let d = backoff(attempt);
            assert!(d >= Duration::from_micros(100));
            assert!(
                d <= Duration::from_micros(100 + (1000 << attempt.min(6))),
                "{d:?}"
            );
        }
    }
}
