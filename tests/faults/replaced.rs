//! A database file replaced under the server (issue 18 §3): overwritten in place while serving
//! (`cp backup.db hallpass.db`, same inode), and something other than the database left at its
//! path after a `kill -9`, beside the WAL of acknowledged writes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{assert_db_consistent, assert_oauth_error, serial, Http, Node};

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// `cp backup.db hallpass.db` over the live file: every later request is refused (503, none
/// acknowledged), `/healthz` says why, the log says what to do, and the copied file is left
/// exactly as copied, through the server's shutdown too. Then, as the log says (the old
/// file's -wal and -shm removed), the server starts on the copy.
#[test]
fn a_database_file_overwritten_while_serving_is_refused_and_left_as_copied() {
    if crate::harness::on_postgres() {
        return; // replaces the SQLite file under the server
    }
    let _serial = serial();
    let mut node = Node::start(&[]);
    node.add_user("alice");
    let client = node.add_client("replaced", "read");
    let http = Http::new(Duration::from_secs(15));
    let db = node.db_path();
    let backup = node.dir.path().join("backup.db");
    let out = node.cli(&["backup", backup.to_str().unwrap()], None);
    assert!(out.status.success(), "{out:?}");
    let mut pending = Vec::new();
    for _ in 0..20 {
        let r = http.start(&node, &client, "read").unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        pending.push(r.body["device_code"].as_str().unwrap().to_string());
    }

    let inode = std::fs::metadata(&db).unwrap().ino();
    let cp = Command::new("cp").arg(&backup).arg(&db).status().unwrap();
    assert!(cp.success());
    assert_eq!(std::fs::metadata(&db).unwrap().ino(), inode, "same inode");
    let copied = std::fs::read(&db).unwrap();

    for i in 0..30 {
        let r = http.start(&node, &client, "read").expect("answers");
        assert_oauth_error(&r, &[503], &["temporarily_unavailable"]);
        assert!(
            r.took < Duration::from_secs(5),
            "request {i} took {:?}",
            r.took
        );
    }
    let p = http.poll(&node, &client, &pending[0]).expect("answers");
    assert_oauth_error(&p, &[503], &["temporarily_unavailable"]);
    let h = http.get(&node, "/healthz").expect("answers");
    assert_eq!(h.status, 503, "{}", h.text);
    let reason = h.body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&db.display().to_string()) && reason.contains("changed"),
        "{}",
        h.text
    );
    node.alive().expect("the server stays up");
    let log = node.log();
    assert!(
        log.contains("ERROR") && log.contains(&format!("{}-wal", db.display())),
        "the log says what happened and what to do: {log}"
    );
    node.stop();
    assert!(
        std::fs::read(&db).unwrap() == copied,
        "the server wrote into the copied file"
    );

    // As the log says: the old file's WAL and shared memory go, and the copy is served.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sibling(&db, suffix));
    }
    node.restart();
    let r = http.start(&node, &client, "read").unwrap();
    assert_eq!(r.status, 200, "the copy's client works: {}", r.text);
    node.stop();
    assert_db_consistent(&db);
}

/// Checkpoints of the server's own connections (the writer's at 4,000 WAL pages, the pooled
/// ones' at 1,000), the reaper, and admin commands writing beside it are not taken for a
/// replacement.
#[test]
fn checkpoints_and_admin_commands_beside_the_server_are_not_a_replacement() {
    if crate::harness::on_postgres() {
        return; // replaces the SQLite file under the server
    }
    let _serial = serial();
    let node = Node::start(&[
        ("HALLPASS_REAPER_INTERVAL", "1s"),
        ("HALLPASS_LIMITS_MAX_PENDING_CODES_PER_CLIENT", "100000"),
    ]);
    node.add_user("alice");
    let client = node.add_client("busy", "read");
    let db = node.db_path();
    let size_before = std::fs::metadata(&db).unwrap().len();
    let stop = Arc::new(AtomicBool::new(false));
    let cli_runs = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        let (stop2, runs) = (stop.clone(), cli_runs.clone());
        let node = &node;
        s.spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let out = node.cli(
                    &["client", "add", "--name", "beside", "--scope", "read"],
                    None,
                );
                assert!(out.status.success(), "{out:?}");
                runs.fetch_add(1, Ordering::Relaxed);
            }
        });
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let client = client.clone();
                s.spawn(move || {
                    let http = Http::new(Duration::from_secs(15));
                    (0..1500)
                        .map(|_| http.start(node, &client, "read").expect("answers"))
                        .find(|r| r.status != 200)
                })
            })
            .collect();
        let failed: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        stop.store(true, Ordering::Relaxed);
        for f in failed {
            if let Some(r) = f.expect("worker") {
                panic!("a device authorization failed: {} {}", r.status, r.text);
            }
        }
    });
    let http = Http::new(Duration::from_secs(15));
    let h = http.get(&node, "/healthz").unwrap();
    assert_eq!(h.status, 200, "{}", h.text);
    let size_after = std::fs::metadata(&db).unwrap().len();
    eprintln!(
        "6,000 device authorizations and {} admin commands: database file {size_before} -> \
         {size_after} bytes",
        cli_runs.load(Ordering::Relaxed)
    );
    assert!(
        size_after > size_before,
        "no checkpoint reached the database file"
    );
    assert!(cli_runs.load(Ordering::Relaxed) > 0);
}

/// A SQLite file of another program (no application id, a table of its own).
fn other_sqlite_file(dir: &Path) -> Vec<u8> {
    let p = dir.join("other-program.db");
    let conn = rusqlite::Connection::open(&p).unwrap();
    conn.execute_batch("CREATE TABLE notes (x TEXT); INSERT INTO notes VALUES ('mine');")
        .unwrap();
    drop(conn);
    std::fs::read(&p).unwrap()
}

/// After a `kill -9`, something else at the database's path (a text file, another program's
/// SQLite file, an empty file): start-up is refused, and the file, the WAL of acknowledged
/// writes and the shared-memory file are left byte for byte. With the database back, every
/// acknowledged write is there.
#[test]
fn startup_refuses_a_file_left_in_place_of_the_database_and_touches_neither_it_nor_the_wal() {
    if crate::harness::on_postgres() {
        return; // replaces the SQLite file under the server
    }
    let _serial = serial();
    let mut node = Node::start(&[]);
    node.add_user("alice");
    let client = node.add_client("crashed", "read");
    let http = Http::new(Duration::from_secs(15));
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = http.start(&node, &client, "read").unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        codes.push(r.body["device_code"].as_str().unwrap().to_string());
    }
    node.kill9();
    let db = node.db_path();
    let (wal, shm) = (sibling(&db, "-wal"), sibling(&db, "-shm"));
    let wal_bytes = std::fs::read(&wal).expect("the acknowledged writes are in the WAL");
    assert!(!wal_bytes.is_empty());
    let shm_bytes = std::fs::read(&shm).unwrap();
    let original = std::fs::read(&db).unwrap();

    let others: [(&str, Vec<u8>); 3] = [
        ("a text file", b"this is not a database\n".to_vec()),
        (
            "another program's SQLite file",
            other_sqlite_file(node.dir.path()),
        ),
        ("an empty file", Vec::new()),
    ];
    for (what, bytes) in &others {
        std::fs::write(&db, bytes).unwrap();
        let out = node.serve_refused();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains(&db.display().to_string()) && stderr.contains("refusing"),
            "{what}: {stderr}"
        );
        // (Compared without printing: the files are large.)
        let unchanged =
            |file: &Path, want: &[u8]| std::fs::read(file).ok().as_deref() == Some(want);
        assert!(unchanged(&db, bytes), "{what}: the file was changed");
        assert!(
            unchanged(&wal, &wal_bytes),
            "{what}: the WAL was changed or removed"
        );
        assert!(unchanged(&shm, &shm_bytes), "{what}: -shm changed");
        // The admin commands refuse it too.
        let out = node.cli(&["client", "list"], None);
        assert!(!out.status.success(), "{what}: {out:?}");
        assert!(
            unchanged(&wal, &wal_bytes),
            "{what}: the WAL was changed by a command"
        );
    }

    std::fs::write(&db, &original).unwrap();
    node.restart();
    for code in &codes {
        let p = http.poll(&node, &client, code).unwrap();
        assert_oauth_error(&p, &[400], &["authorization_pending"]);
    }
    node.stop();
    assert_db_consistent(&db);
}
