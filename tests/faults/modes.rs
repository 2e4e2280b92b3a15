//! File modes (issue 18 §1): the database, its `-wal` and `-shm`, and backups are readable by
//! their owner only, whatever the umask; an existing database readable by others is named in a
//! warning with the `chmod` that fixes it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{serial, Http, Node};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// Under `umask 000` (SQLite alone would create 0644 files), the server's database, `-wal`,
/// `-shm` and a backup are all 0600.
#[test]
fn database_wal_shm_and_backups_are_owner_only_even_with_umask_000() {
    if crate::harness::on_postgres() {
        return; // the modes of the SQLite file, its -wal, -shm and backups
    }
    let _serial = serial();
    let mut node = Node::create(&[], None);
    node.umask = Some("000");
    node.restart();
    node.add_user("alice");
    let client = node.add_client("modes", "read");
    let http = Http::new(Duration::from_secs(15));
    let r = http.start(&node, &client, "read").unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let db = node.db_path();
    for file in [db.clone(), sibling(&db, "-wal"), sibling(&db, "-shm")] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let backup = node.dir.path().join("backup.db");
    let out = node.cli(&["backup", backup.to_str().unwrap()], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&backup), 0o600, "backup");
    // A backup never overwrites a file.
    let again = node.cli(&["backup", backup.to_str().unwrap()], None);
    assert!(!again.status.success(), "{again:?}");
    node.stop();
    // Admin commands never create a database (tests/lifecycle/cli.rs): only the server does.
}

/// A database that others may read (made before this release, or by hand) is not changed, but
/// named at start-up and by admin commands, with the fix.
#[test]
fn an_existing_database_readable_by_others_is_warned_about() {
    if crate::harness::on_postgres() {
        return; // the modes of the SQLite file, its -wal, -shm and backups
    }
    let _serial = serial();
    let mut node = Node::start(&[]);
    node.stop();
    let db = node.db_path();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let fix = format!("chmod 600 {}", db.display());
    node.restart();
    let log = node.log();
    assert!(
        log.contains(&fix) && log.contains("WARN"),
        "no warning naming `{fix}`: {log}"
    );
    let out = node.cli(&["client", "list"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&fix), "{stderr}");
    assert_eq!(mode(&db), 0o644, "the operator's file is not changed");
    node.stop();

    // Fixed: no warning.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = node.cli(&["client", "list"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("chmod"), "{stderr}");
}
