//! What is committed, stamped by the write-ahead log: every commit, by this process or another
//! (the command line), changes the log's size or, after a checkpoint rewrote it from the
//! start, its modification time. Caches above the store compare stamps
//! ([`crate::store::Stamp`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::store::Stamp;

/// A stamp is reused for this long before the log is looked at again: one `stat` per
/// millisecond instead of one per poll. A commit is thus noticed up to this much later, as if
/// the poll had come that much earlier.
pub const STAMP_REUSE: Duration = Duration::from_millis(1);

/// The log of one database file, and its last stamp.
pub struct WalStamp {
    /// `<database>-wal`.
    wal: PathBuf,
    /// The last stamp, and when the `stat` behind it started.
    last: Mutex<Option<(Instant, Stamp)>>,
}

impl WalStamp {
    /// The log of the database at `db_path`.
    pub fn new(db_path: &Path) -> WalStamp {
        let mut wal = db_path.as_os_str().to_owned();
        wal.push("-wal");
        WalStamp {
            wal: wal.into(),
            last: Mutex::new(None),
        }
    }

    /// The current stamp (at most [`STAMP_REUSE`] old): the log's size and modification time,
    /// or nothing while there is no log.
    pub fn stamp(&self) -> Stamp {
        let now = Instant::now();
        if let Some((at, stamp)) = *self.last.lock().expect("stamp poisoned") {
            if now.saturating_duration_since(at) < STAMP_REUSE {
                return stamp;
            }
        }
        let mark = std::fs::metadata(&self.wal).ok().and_then(|m| {
            let modified = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
            Some(u128::from(m.len()) << 64 | modified.as_nanos() & u128::from(u64::MAX))
        });
        let stamp = Stamp::new(mark);
        *self.last.lock().expect("stamp poisoned") = Some((now, stamp));
        stamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit by anyone (the log changes) changes the stamp, seen within [`STAMP_REUSE`].
    #[test]
    fn a_change_of_the_log_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let stamps = WalStamp::new(&dir.path().join("h.db"));
        let none = stamps.stamp();
        std::thread::sleep(STAMP_REUSE);
        assert_eq!(stamps.stamp(), none, "no log, no change");
        std::fs::write(dir.path().join("h.db-wal"), b"a commit").unwrap();
        std::thread::sleep(STAMP_REUSE);
        let first = stamps.stamp();
        assert_ne!(first, none);
        assert_eq!(
            stamps.stamp(),
            first,
            "reused within a millisecond, then unchanged"
        );
        std::fs::write(dir.path().join("h.db-wal"), b"a commit, and another").unwrap();
        std::thread::sleep(STAMP_REUSE);
        assert_ne!(stamps.stamp(), first);
    }
}
