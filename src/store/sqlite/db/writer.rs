//! Group commit: one thread owns one connection and runs the queued write jobs of the hot paths
//! (device authorizations, refresh rotations, approvals) in batches, one transaction per batch,
//! so many requests share one commit and its fsync.
//!
//! A job is as atomic as a transaction of its own: a job that fails, panics, or drops a
//! [`super::write_tx`] without committing it leaves none of its writes behind, and the others'
//! writes stand. Nobody is answered before the batch's `COMMIT` returns: a job's answer promises
//! exactly what a transaction of its own would have (README, "Durability").
//!
//! How that is kept cheaply: a batch first runs its jobs *optimistically*, without a savepoint
//! per job. A savepoint makes SQLite copy every page a job touches into its statement journal
//! before the first change (issue 7: 36% of the time of a device authorization's two inserts,
//! a fifth of the writer's CPU under W1), and nearly every job succeeds, so the copy is nearly
//! always wasted. Inside an optimistic job, [`super::write_tx`] is a plain scope in the batch's
//! transaction. SQLite still makes every single statement atomic, so a job that fails having
//! written nothing (counted by `sqlite3_total_changes`) needs no undo. A job that does need one
//! (it fails or panics after writing, or drops a `write_tx` it wrote in) makes the writer roll
//! the whole batch back and run it again from its first job, this time *guarded*: each job in
//! `SAVEPOINT job`, and `write_tx` a nested savepoint, as a pooled connection would have it. So
//! a job may run twice (`Db::write` takes `Fn`); only the last run's result is answered, and
//! only after the commit. Replays should be rare: no job of hallpass writes before it decides to
//! refuse, so only a database error in the middle of a job causes one.
//!
//! A batch is whatever was queued when the previous one committed (at most [`MAX_BATCH`]): no
//! job ever waits for others to arrive, so a lone request costs what it did without batching.
//!
//! The writer outlives what goes wrong in a batch (issue 18: a full disk under the log used to
//! end the thread, and every write answered 500 until a restart). A batch that fails, or panics
//! anywhere (in a job, or in the writer's own bookkeeping), is rolled back whole and its callers
//! are answered with an error; the next batch runs. Its connection is opened on the thread, and
//! opened again after a failure that says the file cannot take writes now (read-only, full
//! disk, I/O error, cannot open; see [`super::DbError::is_unavailable`]): a connection SQLite
//! opened read-only stays read-only for good. Should the thread stop all the same,
//! [`Writer::running`] says so and `Db::write` starts another.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::file::{self, FileWatch};
use super::{DbError, WriteHealth};
use crate::metrics::Metrics;

/// Opens the writer's connection: called on the writer's thread before its first batch, and
/// again after a failure that needs a fresh connection.
pub(super) type Open = Box<dyn Fn() -> Result<Connection, DbError> + Send>;

/// Jobs per transaction at most, so one batch holds the write lock for milliseconds, not more.
const MAX_BATCH: usize = 256;

thread_local! {
    /// On the writer thread, while a job runs optimistically: [`super::write_tx`] then opens no
    /// savepoint.
    static OPTIMISTIC: Cell<bool> = const { Cell::new(false) };
    /// Set when an optimistic job dropped a `write_tx` after writing in it: an undo that only a
    /// guarded run can give.
    static UNDO_ASKED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling code runs in an optimistic job (see the module comment).
pub(super) fn optimistic() -> bool {
    OPTIMISTIC.with(Cell::get)
}

/// Called by an optimistic `write_tx` dropped without commit after its writes.
pub(super) fn undo_asked() {
    UNDO_ASKED.with(|u| u.set(true));
}

/// What the writer asks of a queued job.
enum Call<'c> {
    /// Run (or run again) on the writer's connection, inside the batch's transaction; keep the
    /// result for the answer and return a copy of its error, if any.
    Run(&'c mut Connection),
    /// Send the kept result: `None` when the batch committed, or why the batch failed (then a
    /// job that had succeeded is answered with that error instead).
    Answer(Option<&'c DbError>),
    /// Answer with this error without running (queued past the wait, the batch never began, or
    /// the job panicked).
    Refuse(DbError),
}

/// A queued job: one closure that keeps its result between [`Call`]s.
struct Job {
    queued: Instant,
    call: Box<dyn FnMut(Call<'_>) -> Option<DbError> + Send>,
}

impl Job {
    fn refuse(mut self, e: DbError) {
        (self.call)(Call::Refuse(e));
    }

    fn answer(mut self, batch_failed: Option<&DbError>) {
        (self.call)(Call::Answer(batch_failed));
    }
}

/// The handle async code queues write jobs through. Cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    /// False once the thread has ended (it only ends by a panic that escaped, or when every
    /// handle is gone).
    running: Arc<AtomicBool>,
}

/// Marks the writer stopped when its thread ends, also by a panic.
struct Stopped {
    running: Arc<AtomicBool>,
    health: Arc<WriteHealth>,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        if std::thread::panicking() {
            self.health.fail(&DbError::Unavailable(
                "the database writer thread stopped".into(),
            ));
        }
    }
}

impl Writer {
    /// Starts the writer thread; it opens its connection with `open` (configured like the
    /// pool's) when its first batch comes. `wait` bounds both a job's time in the queue and the
    /// wait for this process's writer turn; past it the job is answered busy (503), as a pooled
    /// writer would be.
    pub(super) fn start(
        open: Open,
        file: Arc<FileWatch>,
        wait: Duration,
        metrics: Option<Arc<Metrics>>,
        health: Arc<WriteHealth>,
    ) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let running = Arc::new(AtomicBool::new(true));
        let stopped = Stopped {
            running: running.clone(),
            health: health.clone(),
        };
        std::thread::Builder::new()
            .name("hallpass-writer".into())
            .spawn(move || {
                let _stopped = stopped;
                serve(open, queue, &file, wait, metrics.as_deref(), &health);
            })?;
        Ok(Writer { jobs, running })
    }

    /// Whether the writer's thread is still there to run jobs.
    pub(super) fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Queues `f` and waits for its answer, given only after its batch committed. `f` may run
    /// twice (see the module comment); the answer is its last run's.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        // A send fails only when the request went away; its write stands.
        let (send, answer) = tokio::sync::oneshot::channel::<Result<T, DbError>>();
        let mut send = Some(send);
        let mut result: Option<Result<T, DbError>> = None;
        let job = Job {
            queued: Instant::now(),
            call: Box::new(move |call| match call {
                Call::Run(conn) => {
                    result = None;
                    let r = f(conn);
                    let failed = r.as_ref().err().map(copy);
                    result = Some(r);
                    failed
                }
                Call::Answer(batch_failed) => {
                    let r = match (result.take(), batch_failed) {
                        // A job that had succeeded, or never ran (the batch broke first),
                        // hears why the batch failed.
                        (Some(Ok(_)) | None, Some(e)) => Err(copy(e)),
                        (Some(r), _) => r,
                        (None, None) => {
                            Err(DbError::Task("a database write job did not run".into()))
                        }
                    };
                    if let Some(send) = send.take() {
                        let _ = send.send(r);
                    }
                    None
                }
                Call::Refuse(e) => {
                    if let Some(send) = send.take() {
                        let _ = send.send(Err(e));
                    }
                    None
                }
            }),
        };
        self.jobs
            .send(job)
            .map_err(|_| DbError::Unavailable("the database writer has stopped".into()))?;
        // No answer: the batch panicked outside the job's own run (its transaction was rolled
        // back unless it had committed) or the thread stopped.
        answer.await.map_err(|_| {
            DbError::Unavailable("the database writer failed while running this write".into())
        })?
    }
}

/// The writer thread: one batch per turn until every [`Writer`] handle is gone. Its connection
/// is opened with `open` for the first batch, and again after a failure that needs a fresh one.
/// A batch that panics outside its jobs' runs (those are caught one by one) is caught here: the
/// jobs not yet answered are dropped, so their callers hear that the write failed; the
/// connection is closed, which rolls back a transaction left open, and opened afresh for the
/// next batch.
fn serve(
    open: Open,
    queue: mpsc::Receiver<Job>,
    file: &FileWatch,
    wait: Duration,
    metrics: Option<&Metrics>,
    health: &WriteHealth,
) {
    let mut conn: Option<Connection> = None;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_batch(&mut conn, &open, batch, file, wait, metrics, health)
        }));
        if let Err(panic) = ran {
            tracing::error!(
                panic = panic_text(&panic),
                "a write batch panicked; nothing in it was kept, and the writer goes on"
            );
            conn = None;
            health.fail(&DbError::Unavailable("a write batch panicked".into()));
        }
    }
}

/// How one run of a job went.
enum Ran {
    /// Done (its own error, if any, is in its kept result); answer it after the commit.
    Done,
    /// Panicked, its writes undone: answer it now.
    Panicked,
    /// Optimistic, and it needs an undo: replay the batch guarded.
    NeedsUndo,
    /// The batch's transaction cannot go on.
    Broken(DbError),
}

/// Runs one batch in one transaction on the connection in `slot` (opened with `open` if there
/// is none) and answers every job in it.
fn run_batch(
    slot: &mut Option<Connection>,
    open: &Open,
    batch: Vec<Job>,
    file: &FileWatch,
    wait: Duration,
    metrics: Option<&Metrics>,
    health: &WriteHealth,
) {
    // Jobs that waited past the busy timeout are answered busy without running: their callers
    // would have given up on a pooled connection by now.
    let (batch, stale): (Vec<Job>, Vec<Job>) =
        batch.into_iter().partition(|j| j.queued.elapsed() <= wait);
    for job in stale {
        job.refuse(super::busy(
            "waited in the write queue past the busy timeout",
        ));
    }
    if batch.is_empty() {
        return;
    }
    // A check within the last millisecond (the previous batch's, after its commit) will do:
    // this batch's commit is checked again before anyone is answered.
    if !file.check_recent() {
        for job in batch {
            job.refuse(file.refusal());
        }
        return;
    }
    let conn = match slot {
        Some(conn) => conn,
        None => match open() {
            Ok(conn) => slot.insert(conn),
            Err(e) => {
                health.fail(&e);
                for job in batch {
                    job.refuse(copy(&e));
                }
                return;
            }
        },
    };
    let Some(turn) = super::writer_turn() else {
        for job in batch {
            job.refuse(super::busy(
                "timed out waiting for this process's other writers",
            ));
        }
        return;
    };
    let changes = conn.total_changes();
    let mut queue: VecDeque<Job> = batch.into();
    // Jobs that ran in the open transaction, in order, to answer once it is decided.
    let mut ran: Vec<Job> = Vec::with_capacity(queue.len());
    // A job's own failure that says the file cannot take writes now.
    let mut storage_failure: Option<DbError> = None;
    file::forget_noted_commits();
    let mut broken = conn
        .execute_batch("BEGIN IMMEDIATE")
        .err()
        .map(DbError::from);
    let mut guarded = false;
    while broken.is_none() {
        let Some(mut job) = queue.pop_front() else {
            break;
        };
        match run_job(conn, &mut job, guarded, &mut storage_failure) {
            Ran::Done => ran.push(job),
            Ran::Panicked => job.refuse(DbError::Task("a database write job panicked".into())),
            Ran::NeedsUndo => {
                // Undo everything, then run every job so far again, this one included, each
                // in a savepoint of its own.
                tracing::debug!(
                    jobs = ran.len() + 1,
                    "a write job needs an undo: batch replayed"
                );
                ran.push(job);
                queue = ran.drain(..).chain(queue).collect();
                guarded = true;
                broken = conn
                    .execute_batch("ROLLBACK; BEGIN IMMEDIATE")
                    .err()
                    .map(DbError::from);
            }
            Ran::Broken(e) => {
                ran.push(job);
                broken = Some(e);
            }
        }
    }
    let outcome = match broken {
        Some(e) => Err(e),
        None => conn.execute_batch("COMMIT").map_err(DbError::from),
    };
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let wrote = conn.total_changes() != changes;
    // Checkpoints when the WAL is long enough, and checks that the file was not replaced
    // while the batch ran: then its commit went into a WAL that belongs to another file, and
    // nobody in it hears "stored" (see file::FileWatch).
    let outcome = outcome.and_then(|()| file.after_commit(conn, super::WRITER_CHECKPOINT_FRAMES));
    drop(turn);
    if let Err(e) = &outcome {
        if e.is_unavailable() {
            storage_failure = Some(copy(e));
        }
    }
    match &storage_failure {
        Some(e) => {
            // Opened again for the next batch: a connection SQLite opened read-only stays so,
            // and a fresh one is cheap next to a failing disk.
            health.fail(e);
            *slot = None;
        }
        None if outcome.is_ok() && wrote => health.recovered(),
        None => {}
    }
    match outcome {
        Ok(()) => {
            if let Some(m) = metrics {
                m.write_batch(ran.len(), guarded);
            }
            ran.into_iter().for_each(|j| j.answer(None));
        }
        Err(e) => {
            tracing::error!(error = %e, jobs = ran.len(), "a write batch failed; nothing in it was kept");
            ran.into_iter().for_each(|j| j.answer(Some(&e)));
            for job in queue {
                job.refuse(copy(&e));
            }
        }
    }
}

/// Runs `job` once in the batch's open transaction: optimistically, or `guarded` in a savepoint.
/// A failure of the job's own that says the file cannot take writes now is kept in
/// `storage_failure`.
fn run_job(
    conn: &mut Connection,
    job: &mut Job,
    guarded: bool,
    storage_failure: &mut Option<DbError>,
) -> Ran {
    if guarded {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            return Ran::Broken(e.into());
        }
    }
    let changes = conn.total_changes();
    OPTIMISTIC.with(|o| o.set(!guarded));
    UNDO_ASKED.with(|u| u.set(false));
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| (job.call)(Call::Run(conn))));
    OPTIMISTIC.with(|o| o.set(false));
    let undo_asked = UNDO_ASKED.with(Cell::get);
    if let Ok(Some(e)) = &run {
        if e.is_unavailable() {
            *storage_failure = Some(copy(e));
        }
    }
    if conn.is_autocommit() {
        // An I/O error or a full disk may have ended the whole transaction already (SQLite
        // rolls it back); then the batch is lost and everyone in it hears so.
        let e = match run {
            Ok(Some(e)) => e,
            _ => DbError::Task("a write job ended the batch's transaction".into()),
        };
        return Ran::Broken(e);
    }
    let failed = !matches!(run, Ok(None));
    if let Err(panic) = &run {
        tracing::error!(panic = ?panic_text(panic), "a database write job panicked");
    }
    if !guarded {
        let wrote = conn.total_changes() != changes;
        return match run {
            _ if undo_asked || (failed && wrote) => Ran::NeedsUndo,
            Err(_) => Ran::Panicked,
            Ok(_) => Ran::Done,
        };
    }
    let end = if failed {
        "ROLLBACK TO job; RELEASE job"
    } else {
        "RELEASE job"
    };
    if let Err(e) = conn.execute_batch(end) {
        return Ran::Broken(e.into());
    }
    match run {
        Err(_) => Ran::Panicked,
        Ok(_) => Ran::Done,
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

/// A second [`DbError`] saying the same (the error types are not `Clone`): SQLite's codes are
/// kept, so a busy or full database is still answered as one.
fn copy(e: &DbError) -> DbError {
    match e {
        DbError::Sqlite(rusqlite::Error::SqliteFailure(f, m)) => {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(*f, m.clone()))
        }
        DbError::Sqlite(other) => DbError::Task(other.to_string()),
        DbError::Pool(_) => super::busy("no database connection became free in time"),
        DbError::Task(m) => DbError::Task(m.clone()),
        DbError::Refused(m) => DbError::Refused(m.clone()),
        DbError::Gone(m) => DbError::Gone(m.clone()),
        DbError::Unavailable(m) => DbError::Unavailable(m.clone()),
        DbError::Replaced(m) => DbError::Replaced(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{open, write_tx, Db, DbError, DbOptions};
    use crate::config::Synchronous;
    use std::time::Duration;

    fn db(dir: &tempfile::TempDir) -> Db {
        let db = open(
            &dir.path().join("w.db"),
            &DbOptions {
                pool_size: 4,
                busy_timeout: Duration::from_secs(5),
                synchronous: Synchronous::Full,
            },
        )
        .unwrap();
        db.run_sync(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER UNIQUE)")?))
            .unwrap();
        db
    }

    fn rows(db: &Db) -> Vec<i64> {
        db.run_sync(|c| {
            let mut s = c.prepare("SELECT x FROM t ORDER BY x")?;
            let v = s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(v)
        })
        .unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn concurrent_jobs_share_batches_and_a_failed_job_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let results = rt().block_on(async {
            let mut tasks = Vec::new();
            for i in 0..200i64 {
                let db = db.clone();
                tasks.push(tokio::spawn(async move {
                    db.write(move |c| {
                        c.execute("INSERT INTO t VALUES (?1)", [i])?;
                        match i {
                            // Fails after writing: its row must go.
                            7 => Err(DbError::Task("refused".into())),
                            // A constraint error after a write of its own.
                            13 => {
                                c.execute("INSERT INTO t VALUES (1000)", [])?;
                                c.execute("INSERT INTO t VALUES (1000)", [])?;
                                Ok(())
                            }
                            // Nested transaction dropped without commit: rolled back, while the
                            // job's own write stands.
                            21 => {
                                let tx = write_tx(c)?;
                                tx.execute("INSERT INTO t VALUES (2000)", [])?;
                                drop(tx);
                                Ok(())
                            }
                            // Nested transaction committed: kept.
                            22 => {
                                let tx = write_tx(c)?;
                                tx.execute("INSERT INTO t VALUES (3000)", [])?;
                                tx.commit()?;
                                Ok(())
                            }
                            _ => Ok(()),
                        }
                    })
                    .await
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_err(), i == 7 || i == 13, "job {i}: {r:?}");
        }
        let expected: Vec<i64> = (0..200)
            .filter(|i| *i != 7 && *i != 13)
            .chain([3000])
            .collect();
        // Read on another connection: every answered write is committed.
        assert_eq!(rows(&db), expected);
    }

    /// Runs `jobs` in one batch: the writer is kept busy by a slow job while they queue.
    /// Returns each job's answer.
    fn one_batch<F>(db: &Db, rt: &tokio::runtime::Runtime, jobs: Vec<F>) -> Vec<Result<(), DbError>>
    where
        F: Fn(&mut rusqlite::Connection) -> Result<(), DbError> + Send + 'static,
    {
        rt.block_on(async {
            let slow = {
                let db = db.clone();
                tokio::spawn(async move {
                    db.write(|_| {
                        std::thread::sleep(Duration::from_millis(300));
                        Ok(())
                    })
                    .await
                })
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
            let tasks: Vec<_> = jobs
                .into_iter()
                .map(|f| {
                    let db = db.clone();
                    tokio::spawn(async move { db.write(f).await })
                })
                .collect();
            slow.await.unwrap().unwrap();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        })
    }

    #[test]
    fn jobs_run_once_without_savepoints_until_one_needs_an_undo() {
        use std::sync::{Arc, Mutex};
        let dir = tempfile::tempdir().unwrap();
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
        let db = db(&dir).with_metrics(metrics.clone());
        let rt = rt();
        // Each job records, per run, whether it ran optimistically (no savepoint).
        let runs: Arc<Mutex<Vec<Vec<bool>>>> = Arc::new(Mutex::new(vec![Vec::new(); 10]));
        let job = |i: i64, fail_after_write: bool| {
            let runs = runs.clone();
            move |c: &mut rusqlite::Connection| -> Result<(), DbError> {
                runs.lock().unwrap()[i as usize].push(super::optimistic());
                c.execute("INSERT INTO t VALUES (?1)", [i])?;
                if fail_after_write {
                    return Err(DbError::Task("refused after writing".into()));
                }
                Ok(())
            }
        };
        // A batch where every job succeeds: each ran once, without a savepoint.
        let answers = one_batch(&db, &rt, (0..5).map(|i| job(i, false)).collect());
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        for i in 0..5 {
            assert_eq!(runs.lock().unwrap()[i], vec![true], "job {i}");
        }
        // A batch where job 7 fails after writing: the batch is rolled back and replayed
        // guarded. Job 7 ran twice, the second time in a savepoint; jobs queued before it ran
        // twice, those after it once, guarded (or once, optimistically, had a slow machine
        // queued them into another batch).
        let answers = one_batch(&db, &rt, (5..10).map(|i| job(i, i == 7)).collect());
        for (i, a) in (5..10).zip(&answers) {
            assert_eq!(a.is_err(), i == 7, "job {i}: {a:?}");
        }
        let runs = runs.lock().unwrap();
        assert_eq!(runs[7], vec![true, false]);
        for (i, r) in runs.iter().enumerate().skip(5) {
            assert!(
                [vec![true, false], vec![false], vec![true]].contains(r),
                "job {i} ran {r:?}"
            );
        }
        assert_eq!(rows(&db), vec![0, 1, 2, 3, 4, 5, 6, 8, 9]);
        // Operators see it: two slow jobs and ten others answered, one batch replayed.
        let text = metrics.render();
        assert!(text.contains("hallpass_db_write_jobs_total 12\n"), "{text}");
        assert!(
            text.contains("hallpass_db_write_replays_total 1\n"),
            "{text}"
        );
    }

    #[test]
    fn an_optimistic_job_that_drops_its_write_tx_after_writing_gets_its_undo() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let rt = rt();
        db.run_sync(|c| Ok(c.execute("INSERT INTO t VALUES (100)", []).map(drop)?))
            .unwrap();
        let answers = one_batch(
            &db,
            &rt,
            vec![
                Box::new(|c: &mut rusqlite::Connection| -> Result<(), DbError> {
                    c.execute("INSERT INTO t VALUES (1)", [])?;
                    Ok(())
                })
                    as Box<dyn Fn(&mut rusqlite::Connection) -> Result<(), DbError> + Send>,
                // Writes in a write_tx, then drops it and answers Ok (a refusal decided after
                // writing): only its other write stays.
                Box::new(|c: &mut rusqlite::Connection| {
                    c.execute("INSERT INTO t VALUES (2)", [])?;
                    let tx = write_tx(c)?;
                    tx.execute("INSERT INTO t VALUES (3)", [])?;
                    drop(tx);
                    Ok(())
                }),
                // Fails having written nothing (a constraint): no replay is needed for it.
                Box::new(|c: &mut rusqlite::Connection| {
                    c.execute("INSERT INTO t VALUES (100)", [])?;
                    Ok(())
                }),
            ],
        );
        assert!(answers[0].is_ok() && answers[1].is_ok(), "{answers:?}");
        assert!(answers[2].is_err(), "{answers:?}");
        assert_eq!(rows(&db), vec![1, 2, 100]);
    }

    #[test]
    fn a_panicking_job_is_answered_undone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let rt = rt();
        let panicked = rt.block_on(db.write(|c| -> Result<(), DbError> {
            c.execute("INSERT INTO t VALUES (1)", [])?;
            panic!("a bug in a job");
        }));
        assert!(matches!(panicked, Err(DbError::Task(_))), "{panicked:?}");
        rt.block_on(db.write(|c| Ok(c.execute("INSERT INTO t VALUES (2)", [])?)))
            .unwrap();
        assert_eq!(rows(&db), vec![2]);
    }

    /// A panic payload whose drop panics again, `depth` times: a panic the writer catches, but
    /// whose clean-up panics where no job's guard is.
    struct PanicsWhenDropped(u32);

    impl Drop for PanicsWhenDropped {
        fn drop(&mut self) {
            if self.0 > 0 {
                std::panic::panic_any(PanicsWhenDropped(self.0 - 1));
            }
        }
    }

    /// A job that inserts `x` and then panics with a payload that panics `depth` more times.
    fn panics_after_writing(
        x: i64,
        depth: u32,
    ) -> impl Fn(&mut rusqlite::Connection) -> Result<(), DbError> {
        move |c| {
            c.execute("INSERT INTO t VALUES (?1)", [x])?;
            std::panic::panic_any(PanicsWhenDropped(depth));
        }
    }

    #[test]
    fn a_batch_that_panics_outside_its_jobs_is_rolled_back_and_the_next_batch_runs() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let rt = rt();
        // The job's own panic is caught, but dropping its payload panics in the writer's code,
        // in the middle of the batch's open transaction, with the job's row written.
        let answers = one_batch(
            &db,
            &rt,
            vec![
                Box::new(|c: &mut rusqlite::Connection| -> Result<(), DbError> {
                    c.execute("INSERT INTO t VALUES (1)", [])?;
                    Ok(())
                })
                    as Box<dyn Fn(&mut rusqlite::Connection) -> Result<(), DbError> + Send>,
                Box::new(panics_after_writing(2, 1)),
            ],
        );
        // Both callers are told their write failed (the unavailable kind: 503), none hangs.
        for a in &answers {
            assert!(matches!(a, Err(e) if e.is_unavailable()), "{answers:?}");
        }
        // The writer goes on: the next job runs, and nothing of the panicked batch was kept.
        rt.block_on(db.write(|c| Ok(c.execute("INSERT INTO t VALUES (3)", [])?)))
            .unwrap();
        assert_eq!(rows(&db), vec![3]);
    }

    #[test]
    fn a_writer_thread_that_stops_is_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let rt = rt();
        rt.block_on(db.write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", [])?)))
            .unwrap();
        let first = db.writer.lock().clone().unwrap();
        // One panic more than the writer's own guard catches: its thread ends.
        let r = rt.block_on(db.write(panics_after_writing(2, 2)));
        assert!(matches!(&r, Err(e) if e.is_unavailable()), "{r:?}");
        let stopped = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            !first.running()
        });
        assert!(stopped, "the writer thread should have ended");
        // Writes go on through a new writer, without a restart of the process; /healthz had
        // been told, and hears it is over at its next check.
        assert!(db.health.failing().is_some());
        rt.block_on(db.write(|c| Ok(c.execute("INSERT INTO t VALUES (3)", [])?)))
            .unwrap();
        assert!(db.writer.lock().as_ref().unwrap().running());
        assert_eq!(rt.block_on(db.writes_failing()), None);
        assert_eq!(rows(&db), vec![1, 3]);
    }

    #[test]
    fn a_connection_that_cannot_write_is_replaced_for_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let rt = rt();
        // `query_only` stands in for a connection SQLite opened read-only: every write on it
        // fails with SQLITE_READONLY, for as long as it lives.
        let r = rt.block_on(db.write(|c| {
            c.pragma_update(None, "query_only", true)?;
            Ok(c.execute("INSERT INTO t VALUES (1)", [])?)
        }));
        assert!(matches!(&r, Err(e) if e.is_unavailable()), "{r:?}");
        assert!(db.health.failing().is_some(), "writes are known to fail");
        // The next batch has a fresh connection.
        rt.block_on(db.write(|c| Ok(c.execute("INSERT INTO t VALUES (2)", [])?)))
            .unwrap();
        assert_eq!(db.health.failing(), None, "a committed write clears it");
        assert_eq!(rows(&db), vec![2]);
    }

    #[test]
    fn writes_failing_probes_only_once_writes_have_failed() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let rt = rt();
        // All well: no write, not even a writer thread.
        assert_eq!(rt.block_on(db.writes_failing()), None);
        assert!(db.writer.lock().is_none());
        // Known to fail: the probe is a real write through the writer, and it succeeds here.
        db.health
            .fail(&DbError::Unavailable("a stand-in failure".into()));
        assert_eq!(rt.block_on(db.writes_failing()), None);
        assert!(db.writer.lock().is_some());
        assert_eq!(db.health.failing(), None);
    }

    #[test]
    fn the_writers_commits_checkpoint_the_wal_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let main = dir.path().join("w.db");
        db.run_sync(|c| Ok(c.execute_batch("CREATE TABLE b (x BLOB)")?))
            .unwrap();
        let rt = rt();
        // ~20 MiB through the writer, past its checkpoint threshold (4,000 frames of 4 KiB):
        // the WAL does not grow without bound, its pages reach the database file.
        for _ in 0..5 {
            rt.block_on(
                db.write(|c| Ok(c.execute("INSERT INTO b VALUES (randomblob(4000000))", [])?)),
            )
            .unwrap();
        }
        let size = std::fs::metadata(&main).unwrap().len();
        assert!(
            size > 15_000_000,
            "main file {size} bytes: not checkpointed"
        );
    }

    #[test]
    fn a_missing_file_is_refused_not_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let path = dir.path().join("w.db");
        std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
        let r = rt().block_on(db.write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", [])?)));
        assert!(matches!(r, Err(DbError::Gone(_))), "{r:?}");
        assert!(!path.exists());
    }
}
