//! The PostgreSQL store: [`PgStore`], the `Store::Postgres` variant. Its methods, one per
//! transaction the product needs, live beside the SQL they run: [`super::flow`] (the device
//! flow and the reaper's batches), [`super::tokens`] (client authentication, token grants,
//! revocation, introspection, signing keys) and [`super::admin`] (sessions, users, clients,
//! devices). This file holds what they share: the pool, the change stamp, the instance's id
//! for leases, and the operations that are not transactions.
//!
//! The change stamp ([`crate::store::Stamp`]): SQLite answers "was anything committed since?"
//! from its write-ahead log; here this instance's own changes move the stamp at once
//! ([`PgStore::changed`]), a connection listening for `NOTIFY hallpass_changes` moves it when
//! another instance or a command commits a change, and a task reads the change counters
//! (schema.sql) every [`STAMP_EVERY`] in case a notification is lost (PgBouncer's transaction
//! mode does not carry LISTEN). So a cache here never outlives a change made here, and one made
//! elsewhere by more than [`STAMP_EVERY`] plus a round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

use super::hot::{Groups, PollWork};
use super::{coordination, PgError};
use crate::config::Config;
use crate::store::{PollMark, Purpose, Stamp, StoreError};

/// How often a serving instance reads the change counters.
pub const STAMP_EVERY: Duration = Duration::from_millis(250);

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pub(super) pool: Pool,
    /// An admin command's store: no stamp task, no leases.
    pub(super) command: bool,
    /// This instance's id as a lease holder: random, new at each start.
    pub(super) instance: Arc<str>,
    marks: Arc<Marks>,
    pub(super) groups: Groups,
}

/// The two halves of the stamp.
#[derive(Default)]
struct Marks {
    /// The sum of the change counters at the last read.
    counters: AtomicU64,
    /// Changes this instance committed.
    local: AtomicU64,
    /// Notifications of changes received.
    notified: AtomicU64,
}

impl PgStore {
    /// Connects to `database.url`. For the server, creates or migrates the schema and starts
    /// the stamp task (on the current Tokio runtime); for a command, refuses a database that
    /// is not a hallpass database at this binary's version, and creates nothing.
    pub async fn open(config: &Config, purpose: Purpose) -> Result<PgStore, StoreError> {
        let pool = match purpose {
            Purpose::Serve => super::open(config).await?,
            Purpose::Command => {
                let pool = super::connect(config).await?;
                let conn = pool.get().await.map_err(PgError::from)?;
                match super::schema::inspect(&conn).await? {
                    super::schema::Found::Hallpass { version, .. }
                        if version == super::schema::CURRENT_VERSION => {}
                    super::schema::Found::Hallpass { version, .. } => {
                        return Err(StoreError::Refused(format!(
                            "the PostgreSQL database has hallpass schema version {version}, \
                             this binary uses {}: start `hallpass serve` of this version \
                             once to migrate it, or use a matching binary",
                            super::schema::CURRENT_VERSION
                        )))
                    }
                    super::schema::Found::Empty { schema } => {
                        return Err(StoreError::Refused(format!(
                            "schema {schema:?} of the PostgreSQL database is empty; \
                             `hallpass serve` creates the tables"
                        )))
                    }
                    super::schema::Found::Foreign { schema, tables } => {
                        return Err(StoreError::Refused(format!(
                            "schema {schema:?} holds {tables} table(s) but is not a hallpass \
                             database"
                        )))
                    }
                }
                drop(conn);
                pool
            }
        };
        let store = PgStore {
            command: purpose == Purpose::Command,
            instance: crate::secrets::new_token().into(),
            marks: Arc::new(Marks::default()),
            groups: Groups::start(&pool),
            pool,
        };
        store.read_counters().await?;
        if purpose == Purpose::Serve {
            store.listen(config);
            let watcher = store.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(STAMP_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = watcher.read_counters().await {
                        // The next request meets the same failure and answers 503; caches
                        // keep their stamp, and FRESH still bounds what they answer.
                        tracing::debug!(error = %e, "could not read the change counters");
                    }
                }
            });
        }
        Ok(store)
    }

    /// Listens for `NOTIFY hallpass_changes` (sent by every transaction that moves a change
    /// counter, in any instance or command) on a connection of its own, and moves the stamp at
    /// each one: a change made elsewhere is seen within a round trip rather than at the next
    /// read of the counters. Where LISTEN cannot work (PgBouncer's transaction mode, a lost
    /// connection), those reads still bound the delay; the connection is made again after a
    /// pause.
    fn listen(&self, config: &Config) {
        let Some(url) = config.database_url.clone() else {
            return;
        };
        let (Ok(pg), Ok(tls)) = (
            super::driver_config(config, &url),
            super::tls::connector(url.sslmode(), url.ca(config.database_ca.as_ref())),
        ) else {
            return;
        };
        let marks = self.marks.clone();
        tokio::spawn(async move {
            loop {
                match pg.connect(tls.clone()).await {
                    Ok((client, mut connection)) => {
                        let notes = marks.clone();
                        let messages = tokio::spawn(async move {
                            let mut stream = futures_util::stream::poll_fn(move |cx| {
                                connection.poll_message(cx)
                            });
                            use futures_util::StreamExt;
                            while let Some(message) = stream.next().await {
                                match message {
                                    Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                                        notes.notified.fetch_add(1, Ordering::AcqRel);
                                    }
                                    Ok(_) => {}
                                    Err(_) => break,
                                }
                            }
                        });
                        if client
                            .batch_execute("LISTEN hallpass_changes")
                            .await
                            .is_ok()
                        {
                            // Whatever was notified while nobody listened is unknown: caches
                            // drop what they hold, now and when this connection closes.
                            marks.notified.fetch_add(1, Ordering::AcqRel);
                            let _ = messages.await;
                        }
                        marks.notified.fetch_add(1, Ordering::AcqRel);
                        tracing::debug!("the connection listening for changes closed");
                    }
                    Err(e) => tracing::debug!(error = %e, "could not listen for changes"),
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }

    async fn read_counters(&self) -> Result<(), StoreError> {
        let conn = self.pool.get().await.map_err(PgError::from)?;
        let counters = coordination::read_changes(&conn).await?;
        let sum = counters
            .values()
            .map(|&v| v as u64)
            .fold(0u64, u64::wrapping_add);
        self.marks.counters.store(sum, Ordering::Release);
        Ok(())
    }

    /// See [`crate::store::Store::stamp`].
    pub fn stamp(&self) -> Stamp {
        let counters = self.marks.counters.load(Ordering::Acquire);
        let local = self
            .marks
            .local
            .load(Ordering::Acquire)
            .wrapping_add(self.marks.notified.load(Ordering::Acquire) << 32);
        Stamp::new(Some((u128::from(counters) << 64) | u128::from(local)))
    }

    /// Moves the stamp: call after committing anything a cache may hold (a client, a user, a
    /// device, a key, a decision on a code).
    pub(super) fn changed(&self) {
        self.marks.local.fetch_add(1, Ordering::AcqRel);
    }

    /// See [`crate::store::Store::with_metrics`]: nothing counted yet on PostgreSQL.
    pub fn with_metrics(self, _metrics: Arc<crate::metrics::Metrics>) -> PgStore {
        self
    }

    /// A pooled connection.
    pub(super) async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await.map_err(PgError::from)?)
    }

    /// Reads something, to tell `/healthz` the database answers.
    pub(crate) async fn probe(&self) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.query_one("SELECT 1", &[])
            .await
            .map_err(PgError::from)?;
        Ok(())
    }

    /// `hallpass backup` copies a SQLite file; PostgreSQL has its own tools.
    pub(crate) async fn backup(&self, _target: std::path::PathBuf) -> Result<(), StoreError> {
        Err(StoreError::Refused(
            "the database is PostgreSQL: back it up with `pg_dump` (see docs/postgres.md)".into(),
        ))
    }

    /// Takes or renews the lease `name` for this instance for `ttl_ms`: true while this
    /// instance holds it. A command holds none.
    pub(crate) async fn lease(&self, name: String, ttl_ms: i64) -> Result<bool, StoreError> {
        if self.command {
            return Ok(false);
        }
        let conn = self.conn().await?;
        Ok(coordination::try_lease(&conn, &name, &self.instance, ttl_ms).await?)
    }

    /// Gives the lease `name` up, if this instance holds it (a clean shutdown).
    pub(crate) async fn release(&self, name: String) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        Ok(coordination::release_lease(&conn, &name, &self.instance).await?)
    }

    /// See [`crate::store::Store::take_shared_token`].
    pub(crate) async fn take_token(
        &self,
        limit: &'static str,
        subject: u128,
        per_minute: u32,
        now: i64,
    ) -> Result<Result<(), u64>, StoreError> {
        let conn = self.conn().await?;
        let subject = subject.to_be_bytes();
        Ok(coordination::take_token(&conn, limit, &subject, per_minute, now).await?)
    }

    /// See [`crate::store::Store::refund_shared_token`].
    pub(crate) async fn refund_token(
        &self,
        limit: &'static str,
        subject: u128,
        per_minute: u32,
        _now: i64,
    ) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let subject = subject.to_be_bytes();
        Ok(coordination::refund_token(&conn, limit, &subject, per_minute).await?)
    }

    /// See [`crate::store::Store::record_poll`]: written with the other polls of the moment
    /// ([`super::flow::poll_batch`]).
    pub(crate) async fn record_poll(&self, mark: PollMark) -> Result<(), StoreError> {
        self.groups.polls.call(PollWork::Mark(mark)).await?;
        Ok(())
    }

    /// See [`crate::store::Store::record_poll_later`].
    pub(crate) fn record_poll_later(&self, mark: PollMark) {
        self.groups.polls.send(PollWork::Mark(mark));
    }
}
