//! Group commit: one thread owns one connection and runs the queued write jobs of the hot paths
//! (device authorizations, refresh rotations, approvals) in batches, one transaction per batch,
//! so many requests share one commit and its fsync.
//!
//! Each job runs inside `SAVEPOINT job`: a job that fails is rolled back to its savepoint and
//! leaves the others' writes in place, so a job is as atomic as a transaction of its own. Inside
//! a job, [`super::write_tx`] sees the open transaction and nests a savepoint instead of
//! `BEGIN IMMEDIATE`, so the code of a step is the same whether it runs here or on a pooled
//! connection. Nobody is answered before the batch's `COMMIT` returns: a job's answer promises
//! exactly what a transaction of its own would have (README, "Durability").
//!
//! A batch is whatever was queued when the previous one committed (at most [`MAX_BATCH`]): no
//! job ever waits for others to arrive, so a lone request costs what it did without batching.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{DbError, FileWatch};

/// Jobs per transaction at most, so one batch holds the write lock for milliseconds, not more.
const MAX_BATCH: usize = 256;

/// What a job reports once its batch is decided: `None` when the batch committed, or why
/// the batch failed (then a job that had succeeded is answered with that error instead).
type Answer = Box<dyn FnOnce(Option<&DbError>) + Send>;

/// What the writer does with a queued job.
enum Call<'c> {
    /// Run it on the writer's connection, inside the batch's transaction.
    Run(&'c mut Connection),
    /// Answer it with this error without running it (queued past the wait, or the batch
    /// never began).
    Refuse(DbError),
}

/// A job that ran: its error, if any (a copy), and how to answer it.
type Ran = (Option<DbError>, Answer);

/// A queued job. Run, it returns its error (a copy; its own answer keeps the original) and how
/// to answer it once the batch is decided; refused, it answers at once and returns `None`.
struct Job {
    queued: Instant,
    call: Box<dyn FnOnce(Call<'_>) -> Option<Ran> + Send>,
}

impl Job {
    fn refuse(self, e: DbError) {
        (self.call)(Call::Refuse(e));
    }
}

/// The handle async code queues write jobs through. Cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn` (already configured like the pool's connections).
    /// `wait` bounds both a job's time in the queue and the wait for this process's writer
    /// turn; past it the job is answered busy (503), as a pooled writer would be.
    pub(super) fn start(
        conn: Connection,
        file: Arc<FileWatch>,
        wait: Duration,
    ) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("hallpass-writer".into())
            .spawn(move || serve(conn, queue, &file, wait))?;
        Ok(Writer { jobs })
    }

    /// Queues `f` and waits for its answer, given only after its batch committed.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        // A send fails only when the request went away; its write stands.
        let (send, answer) = tokio::sync::oneshot::channel::<Result<T, DbError>>();
        let job = Job {
            queued: Instant::now(),
            call: Box::new(move |call| match call {
                Call::Refuse(e) => {
                    let _ = send.send(Err(e));
                    None
                }
                Call::Run(conn) => {
                    let result = f(conn);
                    let failed = result.as_ref().err().map(copy);
                    let answer: Answer = Box::new(move |batch_failed| {
                        let result = match (result, batch_failed) {
                            (Ok(_), Some(e)) => Err(copy(e)),
                            (result, _) => result,
                        };
                        let _ = send.send(result);
                    });
                    Some((failed, answer))
                }
            }),
        };
        self.jobs
            .send(job)
            .map_err(|_| DbError::Task("the database writer has stopped".into()))?;
        // A job that panicked dropped its sender in the unwind (the writer logged the panic).
        answer
            .await
            .map_err(|_| DbError::Task("a database write job panicked".into()))?
    }
}

/// The writer thread: one batch per turn until every [`Writer`] handle is gone.
fn serve(mut conn: Connection, queue: mpsc::Receiver<Job>, file: &FileWatch, wait: Duration) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, batch, file, wait);
    }
}

/// Runs one batch in one transaction and answers every job in it.
fn run_batch(conn: &mut Connection, batch: Vec<Job>, file: &FileWatch, wait: Duration) {
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
    if !file.check() {
        for job in batch {
            job.refuse(DbError::Gone(file.path.display().to_string()));
        }
        return;
    }
    let Some(turn) = super::writer_turn() else {
        for job in batch {
            job.refuse(super::busy(
                "timed out waiting for this process's other writers",
            ));
        }
        return;
    };
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = DbError::from(e);
        for job in batch {
            job.refuse(copy(&e));
        }
        return;
    }
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    let mut broken: Option<DbError> = None;
    let mut jobs = batch.into_iter();
    for job in jobs.by_ref() {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            broken = Some(e.into());
            job.refuse(copy(broken.as_ref().expect("just set")));
            break;
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| (job.call)(Call::Run(conn)))) {
            Ok(Some((None, answer))) => {
                answers.push(answer);
                if let Err(e) = conn.execute_batch("RELEASE job") {
                    broken = Some(e.into());
                }
            }
            Ok(Some((Some(failed), answer))) => {
                // The job's own failure: undo only its writes. An I/O error or a full disk
                // may have ended the whole transaction already (SQLite rolls it back); then the
                // batch is lost and everyone in it hears so.
                answers.push(answer);
                if conn.is_autocommit() {
                    broken = Some(failed);
                } else if let Err(e) = conn.execute_batch("ROLLBACK TO job; RELEASE job") {
                    broken = Some(e.into());
                }
            }
            // A run job always returns its answer; `Ok(None)` cannot happen, and is undone
            // like a panic if it ever did.
            not_run @ (Ok(None) | Err(_)) => {
                // Its writes are undone like a failure's; the others' stand. Its caller hears
                // of it through the dropped answer channel.
                if let Err(panic) = &not_run {
                    tracing::error!(panic = ?panic_text(panic), "a database write job panicked");
                }
                if !conn.is_autocommit() {
                    if let Err(e) = conn.execute_batch("ROLLBACK TO job; RELEASE job") {
                        broken = Some(e.into());
                    }
                }
            }
        }
        if broken.is_none() && conn.is_autocommit() {
            broken = Some(DbError::Task(
                "a write job ended the batch's transaction".into(),
            ));
        }
        if broken.is_some() {
            break;
        }
    }
    let outcome = match broken {
        Some(e) => Err(e),
        None => conn.execute_batch("COMMIT").map_err(DbError::from),
    };
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    drop(turn);
    match outcome {
        Ok(()) => answers.into_iter().for_each(|a| a(None)),
        Err(e) => {
            tracing::error!(error = %e, jobs = answers.len(), "a write batch failed; nothing in it was kept");
            answers.into_iter().for_each(|a| a(Some(&e)));
            for job in jobs {
                job.refuse(copy(&e));
            }
        }
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
