//! The database file itself, outside SQLite (issue 18 §1 and §3): created with mode 0600,
//! checked to be a hallpass database before SQLite opens it, and watched while serving so that
//! nothing is written into a file that was removed, or replaced under the server.
//!
//! # File modes
//!
//! hallpass creates the database file with mode 0600 before SQLite opens it. SQLite's unix VFS
//! gives the `-wal`, `-shm` and `-journal` files it creates the database file's own mode
//! (`fchmod`, whatever the umask), so the one file's mode covers all of them; backups get the
//! same by [`create_private_new`]. Explicit modes rather than a umask: the crate forbids
//! `unsafe` (a umask needs a wrapper crate), a umask is process-wide, and it would not help a
//! database that already exists with mode 0644, which [`warn_if_others_may_read`] names.
//!
//! # Replaced under a running server
//!
//! SQLite in WAL mode notices nothing when the database file's contents are rewritten (`cp
//! backup.db hallpass.db` keeps the inode): it goes on reading pages from the new file and
//! writing its old WAL, whose checkpoints then copy old pages into the new file. [`FileWatch`]
//! keeps what the file looked like (device, inode, size, mtime, and its 100-byte header read
//! through a descriptor held open) and compares it before each write batch and each pooled
//! call, and after each commit before anyone is answered.
//!
//! The file legitimately changes only when a checkpoint copies the WAL into it. So that each
//! one is known, no connection of hallpass checkpoints by itself: [`note_wal_frames`] replaces
//! SQLite's automatic checkpoint (a WAL hook), and [`FileWatch::after_commit`] checkpoints
//! explicitly once the WAL is long enough, after checking the file, and takes the new snapshot
//! while no other check can run. The command line never checkpoints while a server has the
//! file open (its connections only note the WAL's length; SQLite checkpoints when the last
//! connection closes, which is never the command line's while a server runs). Another program
//! that checkpoints the file while hallpass serves (the `sqlite3` shell writing more than 1,000
//! pages, an older hallpass) is taken for a replacement.
//!
//! Once a replacement is seen the server refuses every request (503) until it is restarted, and
//! never checkpoints again (see `cli::serve`, which keeps the connections open at exit so that
//! SQLite's checkpoint on close cannot run either).

use std::cell::Cell;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::migrate::APPLICATION_ID;
use super::DbError;

/// Bytes of the SQLite database header.
const HEADER: usize = 100;

/// The first 16 bytes of every SQLite database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// `path` with `suffix` appended (`hallpass.db-wal`).
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// Creates an empty database file with mode 0600 if there is none, so that SQLite (which opens
/// it as it is) and its `-wal` and `-shm` files are readable by the owner only.
pub(super) fn create_private(path: &Path) -> Result<(), DbError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(DbError::Refused(format!(
            "cannot create the database file {}: {e}",
            path.display()
        ))),
    }
}

/// Creates `path`, which must not exist, empty and with mode 0600: the target of a backup
/// (`VACUUM INTO` writes into an empty file it finds, keeping its mode).
pub fn create_private_new(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

/// Warns, loudly and once, when the database file (or its `-wal`/`-shm`) may be read by users
/// other than its owner: it holds the signing keys and sessions. Names the `chmod` that fixes
/// it.
pub(super) fn warn_if_others_may_read(path: &Path) {
    let open: Vec<(PathBuf, u32)> = [
        path.to_path_buf(),
        sibling(path, "-wal"),
        sibling(path, "-shm"),
    ]
    .into_iter()
    .filter_map(|p| {
        let mode = std::fs::metadata(&p).ok()?.mode() & 0o777;
        (mode & 0o077 != 0).then_some((p, mode))
    })
    .collect();
    if open.is_empty() {
        return;
    }
    let names: Vec<String> = open.iter().map(|(p, _)| p.display().to_string()).collect();
    let modes: Vec<String> = open
        .iter()
        .map(|(p, m)| format!("{} {m:o}", p.display()))
        .collect();
    tracing::warn!(
        files = %modes.join(", "),
        fix = %format!("chmod 600 {}", names.join(" ")),
        "the database file can be read by other users of this machine, and it holds the private \
         signing keys (anyone who reads them can sign tokens) and sessions; fix it with: chmod 600 {}",
        names.join(" ")
    );
}

/// Checks, by reading the file itself before SQLite opens it, that `path` is a hallpass
/// database, a new one, or missing; refuses anything else, touching neither the file nor its
/// `-wal`. SQLite would replay a `-wal` left by a crash into whatever file it finds at `path`
/// and then delete it: with another file there, the acknowledged writes in that WAL are lost
/// (and the other file damaged).
pub(super) fn refuse_unless_ours(path: &Path) -> Result<(), DbError> {
    let wal = sibling(path, "-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).ok();
    let untouched = |why: String| {
        let left = match wal_len {
            Some(_) => format!(
                "; {} and {} were left as they are",
                path.display(),
                wal.display()
            ),
            None => String::new(),
        };
        DbError::Refused(format!("{why}; refusing to use it{left}"))
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if wal_len.is_some() {
                return Err(DbError::Refused(format!(
                    "{} does not exist but {} does: the database was removed while in use. \
                     Restore it (then delete the stale -wal and -shm files first if restoring a \
                     backup), or delete the -wal and -shm files to start empty",
                    path.display(),
                    wal.display()
                )));
            }
            return Ok(());
        }
        Err(e) => {
            return Err(DbError::Refused(format!(
                "cannot read the database file {}: {e}",
                path.display()
            )))
        }
    };
    let mut header = Vec::with_capacity(HEADER);
    (&mut file)
        .take(HEADER as u64)
        .read_to_end(&mut header)
        .map_err(|e| {
            DbError::Refused(format!(
                "cannot read the database file {}: {e}",
                path.display()
            ))
        })?;
    // Closed before SQLite opens the file: closing a descriptor drops every POSIX lock this
    // process holds on the file, SQLite's included.
    drop(file);
    let wal_has_frames = wal_len.is_some_and(|n| n > 0);
    if header.is_empty() {
        if wal_has_frames {
            return Err(untouched(format!(
                "{} is empty, but {} holds a write-ahead log: it belongs to another file",
                path.display(),
                wal.display()
            )));
        }
        return Ok(());
    }
    if header.len() < HEADER || header[..16] != MAGIC[..] {
        return Err(untouched(format!(
            "{} is not a SQLite database (and so not a hallpass database)",
            path.display()
        )));
    }
    let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let app_id = be32(68);
    if i64::from(app_id) == APPLICATION_ID {
        return Ok(());
    }
    if app_id != 0 {
        return Err(untouched(format!(
            "{} is a SQLite database but not a hallpass database (application_id {app_id})",
            path.display()
        )));
    }
    // No application id: a file the schema was never written into. That is a new hallpass
    // database whose first transactions are still in its WAL (one page: the header SQLite
    // wrote on switching to WAL, no user_version), or another program's file, which `migrate`
    // refuses once it is open. With a WAL beside it, only the first may be opened.
    let pages = be32(28);
    let user_version = be32(60);
    if wal_has_frames && (pages > 1 || user_version != 0) {
        return Err(untouched(format!(
            "{} is a SQLite database but not a hallpass database (no application_id, {pages} \
             pages), and {} holds a write-ahead log that belongs to another file",
            path.display(),
            wal.display()
        )));
    }
    Ok(())
}

/// What the database file looked like at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    header: [u8; HEADER],
}

/// Whether the file is the one this process opened and last wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Same file, same contents.
    InPlace,
    /// The path names no file, or another file (another inode): it may come back.
    Gone,
    /// The same file, its contents changed by someone other than this process's SQLite.
    Changed,
}

const IN_PLACE: u8 = 0;
const GONE: u8 = 1;
const REPLACED: u8 = 2;

/// How long a check that found the file in place answers [`FileWatch::check_recent`].
const RECHECK_READS: Duration = Duration::from_millis(1);

/// The database file's identity and contents as this process last knew them, and whether it
/// still has them (see the module comment).
#[derive(Debug)]
pub(super) struct FileWatch {
    /// The database file.
    pub(super) path: PathBuf,
    /// A descriptor of the file as opened, to read its header. Never closed (see [`Drop`]).
    file: Option<File>,
    /// The file as this process last checked or wrote it; `None`: nothing to compare with.
    expected: parking_lot::Mutex<Option<Snapshot>>,
    /// Held while this process checkpoints (writes the file) until the new snapshot is taken.
    writing: parking_lot::Mutex<()>,
    /// [`IN_PLACE`], [`GONE`] (may come back) or [`REPLACED`] (for good).
    state: AtomicU8,
    /// When the last check that found the file in place started.
    in_place_at: parking_lot::Mutex<Option<Instant>>,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        // Closing any descriptor of a file drops every POSIX lock this process holds on it,
        // including those of SQLite connections that may still be open: leak it instead.
        if let Some(file) = self.file.take() {
            std::mem::forget(file);
        }
    }
}

thread_local! {
    /// The WAL's length in pages after the last commit on this thread, noted by
    /// [`note_wal_frames`]; `None` if nothing was committed since [`forget_noted_commits`].
    static WAL_FRAMES: Cell<Option<i32>> = const { Cell::new(None) };
}

/// SQLite's WAL hook for every connection of hallpass (it replaces the automatic checkpoint):
/// notes the WAL's length after a commit, for [`FileWatch::after_commit`] on the same thread.
pub(super) fn note_wal_frames(
    _: &rusqlite::hooks::Wal,
    frames: std::ffi::c_int,
) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(Some(frames)));
    Ok(())
}

/// Forgets commits noted on this thread before the work that [`FileWatch::after_commit`] will
/// follow.
pub(super) fn forget_noted_commits() {
    WAL_FRAMES.with(|f| f.set(None));
}

impl FileWatch {
    /// Watches the database file at `path`, as it is now.
    pub(super) fn new(path: &Path) -> FileWatch {
        let file = File::open(path).ok();
        let mut watch = FileWatch {
            path: path.to_path_buf(),
            file,
            expected: parking_lot::Mutex::new(None),
            writing: parking_lot::Mutex::new(()),
            state: AtomicU8::new(IN_PLACE),
            in_place_at: parking_lot::Mutex::new(None),
        };
        *watch.expected.get_mut() = watch.snapshot();
        watch
    }

    /// The file now: `None` if the path names nothing.
    fn snapshot(&self) -> Option<Snapshot> {
        let meta = std::fs::metadata(&self.path).ok()?;
        let mut header = [0u8; HEADER];
        if let Some(file) = &self.file {
            // Short or failed reads leave zeros, which compare as they are.
            let _ = file.read_at(&mut header, 0);
        }
        Some(Snapshot {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            header,
        })
    }

    fn compare(&self, now: &Option<Snapshot>) -> Verdict {
        let expected = self.expected.lock();
        match (&*expected, now) {
            (None, _) => Verdict::InPlace,
            (Some(_), None) => Verdict::Gone,
            (Some(e), Some(n)) if (e.dev, e.ino) != (n.dev, n.ino) => Verdict::Gone,
            (Some(e), Some(n)) if e == n => Verdict::InPlace,
            _ => Verdict::Changed,
        }
    }

    /// [`FileWatch::check`], reusing one that found the file in place within
    /// [`RECHECK_READS`]: for reads, which acknowledge nothing into the file, and before a
    /// write batch, whose commit [`FileWatch::after_commit`] checks again.
    pub(super) fn check_recent(&self) -> bool {
        let now = Instant::now();
        if self
            .in_place_at
            .lock()
            .is_some_and(|at| now.saturating_duration_since(at) < RECHECK_READS)
        {
            return true;
        }
        self.check()
    }

    /// Whether the path still names the file that was opened, with the contents this process
    /// left in it; logs only when that changes. Cheap: one `stat` and one 100-byte read.
    pub(super) fn check(&self) -> bool {
        if self.state.load(Ordering::Relaxed) == REPLACED {
            return false;
        }
        let started = Instant::now();
        let verdict = match self.compare(&self.snapshot()) {
            Verdict::Changed => match self.writing.try_lock() {
                // This process is checkpointing: the change may be its own, and the checkpoint
                // checked the file just before it began writing.
                None => Verdict::InPlace,
                // Nobody of this process writes the file now: look again to be sure.
                Some(_writing) => self.compare(&self.snapshot()),
            },
            v => v,
        };
        let in_place = self.settle(verdict);
        *self.in_place_at.lock() = in_place.then_some(started);
        in_place
    }

    /// Records `verdict`, logging a change of state; returns whether the file is in place.
    fn settle(&self, verdict: Verdict) -> bool {
        let state = match verdict {
            Verdict::InPlace => IN_PLACE,
            Verdict::Gone => GONE,
            Verdict::Changed => REPLACED,
        };
        let was = self.state.swap(state, Ordering::Relaxed);
        let path = self.path.display();
        match (was, state) {
            (REPLACED, _) => {
                // For good, whatever the path names now.
                self.state.store(REPLACED, Ordering::Relaxed);
                return false;
            }
            (IN_PLACE, GONE) => tracing::error!(
                path = %path,
                "the database file was removed or replaced; refusing requests until it is back"
            ),
            (GONE, IN_PLACE) => tracing::warn!(path = %path, "the database file is back"),
            (_, REPLACED) => tracing::error!(
                path = %path,
                "the database file {path} was changed by something other than hallpass while \
                 serving (overwritten, e.g. by `cp backup.db {path}`?); refusing every request so \
                 that nothing more is read from or written into it, and no checkpoint copies \
                 the old file's write-ahead log into it. Stop hallpass. To use the new file, \
                 delete {path}-wal and {path}-shm before starting again (they belong to the old \
                 file, and SQLite would replay them into the new one)"
            ),
            _ => {}
        }
        state == IN_PLACE
    }

    /// The error a request gets while the file is not in place.
    pub(super) fn refusal(&self) -> DbError {
        let path = self.path.display().to_string();
        match self.state.load(Ordering::Relaxed) {
            REPLACED => DbError::Replaced(path),
            _ => DbError::Gone(path),
        }
    }

    /// Why the database cannot be used now, for `/healthz`; `None` while it can.
    pub(super) fn problem(&self) -> Option<String> {
        if self.check() {
            return None;
        }
        Some(match self.state.load(Ordering::Relaxed) {
            REPLACED => format!(
                "the database file {} was changed by another program while serving; restart \
                 hallpass (see its log)",
                self.path.display()
            ),
            _ => format!(
                "the database file {} was removed or replaced by another file",
                self.path.display()
            ),
        })
    }

    /// After work on `conn` that may have committed (noted by [`note_wal_frames`] on this
    /// thread): checkpoints if the WAL has reached `checkpoint_at` pages, else checks that the
    /// file was not changed meanwhile. An error means the commit went into a WAL that no longer
    /// belongs to the file at the path: nobody may be told it is stored.
    pub(super) fn after_commit(
        &self,
        conn: &Connection,
        checkpoint_at: i32,
    ) -> Result<(), DbError> {
        let Some(frames) = WAL_FRAMES.with(Cell::take) else {
            return Ok(());
        };
        if frames < checkpoint_at {
            return if self.check() {
                Ok(())
            } else {
                Err(self.refusal())
            };
        }
        let _writing = self.writing.lock();
        // Checked with the lock held: a change seen now is nobody's in this process.
        if !self.settle(self.compare(&self.snapshot())) {
            return Err(self.refusal());
        }
        // PASSIVE, as SQLite's automatic checkpoint: never waits for readers or writers.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "a checkpoint of the write-ahead log failed");
        }
        *self.expected.lock() = self.snapshot();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::db::{open, Db, DbOptions};

    fn db(dir: &Path) -> Db {
        let db = open(
            &dir.join("f.db"),
            &DbOptions {
                pool_size: 4,
                busy_timeout: Duration::from_secs(5),
                synchronous: crate::config::Synchronous::Normal,
            },
        )
        .unwrap();
        db.run_sync(|c| Ok(c.execute_batch("CREATE TABLE t (x BLOB)")?))
            .unwrap();
        db
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// ~8 KiB a row: two or three WAL frames.
    const INSERT: &str = "INSERT INTO t VALUES (randomblob(8000))";

    #[test]
    fn checkpoints_of_this_process_are_not_taken_for_a_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let path = dir.path().join("f.db");
        let rt = rt();
        let before = std::fs::metadata(&path).unwrap().len();
        // The writer (checkpoint at 4,000 frames) and pooled connections (1,000) at once, past
        // several checkpoints of each.
        rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..4000 {
                let db = db.clone();
                tasks.push(tokio::spawn(async move {
                    if i % 2 == 0 {
                        db.write(|c| Ok(c.execute(INSERT, []).map(drop)?)).await
                    } else {
                        db.run(|c| Ok(c.execute(INSERT, []).map(drop)?)).await
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        });
        assert!(db.check_file());
        assert!(db.file_problem().is_none());
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(
            after > before + 20_000_000,
            "checkpointed: {before} -> {after}"
        );
    }

    #[test]
    fn a_file_overwritten_in_place_is_refused_and_not_written_into() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let path = dir.path().join("f.db");
        let rt = rt();
        rt.block_on(db.write(|c| Ok(c.execute(INSERT, []).map(drop)?)))
            .unwrap();
        let copy = dir.path().join("copy.db");
        crate::store::sqlite::db::backup(&db, &copy).unwrap();
        for _ in 0..10 {
            rt.block_on(db.write(|c| Ok(c.execute(INSERT, []).map(drop)?)))
                .unwrap();
        }
        // `cp copy.db f.db`: the same inode, other contents.
        let ino = std::fs::metadata(&path).unwrap().ino();
        std::fs::copy(&copy, &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
        let copied = std::fs::read(&path).unwrap();
        let w = rt.block_on(db.write(|c| Ok(c.execute(INSERT, []).map(drop)?)));
        assert!(matches!(w, Err(DbError::Replaced(_))), "{w:?}");
        let r = rt.block_on(db.run(|c| Ok(c.execute(INSERT, []).map(drop)?)));
        assert!(matches!(r, Err(DbError::Replaced(_))), "{r:?}");
        let r = rt.block_on(db.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)));
        assert!(matches!(r, Err(DbError::Replaced(_))), "{r:?}");
        assert!(db.file_replaced());
        assert!(db.file_problem().unwrap().contains("changed"));
        // For good, even if the old contents came back.
        assert!(!db.check_file());
        assert_eq!(std::fs::read(&path).unwrap(), copied);
    }

    fn header_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn only_hallpass_databases_new_files_and_missing_ones_pass() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(refuse_unless_ours(&d.join("missing.db")).is_ok());
        assert!(refuse_unless_ours(&header_file(d, "empty.db", b"")).is_ok());
        let e = refuse_unless_ours(&header_file(d, "text.db", b"not a database\n")).unwrap_err();
        assert!(e.to_string().contains("not a SQLite database"), "{e}");
        let mut h = vec![0u8; 4096];
        h[..16].copy_from_slice(MAGIC);
        h[28..32].copy_from_slice(&7u32.to_be_bytes());
        let other = header_file(d, "other.db", &{
            let mut o = h.clone();
            o[68..72].copy_from_slice(&1234u32.to_be_bytes());
            o
        });
        assert!(refuse_unless_ours(&other).is_err());
        let ours = header_file(d, "ours.db", &{
            let mut o = h.clone();
            o[68..72].copy_from_slice(&(APPLICATION_ID as u32).to_be_bytes());
            o
        });
        assert!(refuse_unless_ours(&ours).is_ok());
        // No application id: passes alone (migrate decides), not beside a WAL.
        let plain = header_file(d, "plain.db", &h);
        assert!(refuse_unless_ours(&plain).is_ok());
        std::fs::write(sibling(&plain, "-wal"), b"frames").unwrap();
        let e = refuse_unless_ours(&plain).unwrap_err();
        assert!(e.to_string().contains("left as they are"), "{e}");
        // A new hallpass file (one page, the WAL holding the schema) beside its WAL passes.
        let fresh = header_file(d, "fresh.db", &{
            let mut o = h.clone();
            o[28..32].copy_from_slice(&1u32.to_be_bytes());
            o
        });
        std::fs::write(sibling(&fresh, "-wal"), b"frames").unwrap();
        assert!(refuse_unless_ours(&fresh).is_ok());
        // An empty file beside a WAL with frames: refused; beside an empty WAL: new.
        let empty = header_file(d, "e2.db", b"");
        std::fs::write(sibling(&empty, "-wal"), b"frames").unwrap();
        assert!(refuse_unless_ours(&empty).is_err());
        std::fs::write(sibling(&empty, "-wal"), b"").unwrap();
        assert!(refuse_unless_ours(&empty).is_ok());
    }
}
