//! The database file removed, or made read-only, under a running server.
//!
//! Read-only: as root (tests often run as root) `chmod` stops nothing, so the files are made
//! immutable with `chattr +i` instead, which the kernel enforces even on already-open
//! descriptors; if `chattr` is not permitted (no CAP_LINUX_IMMUTABLE, or a filesystem without
//! it) the case is skipped with a note. As another user, `chmod` is used (it only affects new
//! opens, so writes through open connections may still succeed, which is fine).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{
    assert_api_error, assert_db_consistent, assert_oauth_error, eventually, serial, Http, Node,
};

/// How a file is made read-only, undone on drop (so a failing test still cleans up).
struct ReadOnly {
    paths: Vec<PathBuf>,
    immutable: bool,
}

fn euid_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl ReadOnly {
    /// Makes `paths` read-only; `None` (with a note) when this machine cannot.
    fn apply(paths: &[PathBuf]) -> Option<ReadOnly> {
        let immutable = euid_is_root();
        let mut done = ReadOnly {
            paths: Vec::new(),
            immutable,
        };
        for p in paths {
            let ok = if immutable {
                Command::new("chattr")
                    .arg("+i")
                    .arg(p)
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            } else {
                let mode = if p.is_dir() { "0555" } else { "0444" };
                Command::new("chmod")
                    .arg(mode)
                    .arg(p)
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !ok {
                eprintln!(
                    "NOTE: skipped: running as root and `chattr +i {}` is not permitted here, \
                     so the file cannot be made read-only for this process",
                    p.display()
                );
                return None;
            }
            done.paths.push(p.clone());
        }
        Some(done)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        for p in self.paths.drain(..).rev() {
            let _ = if self.immutable {
                Command::new("chattr").arg("-i").arg(&p).status()
            } else {
                let mode = if p.is_dir() { "0700" } else { "0644" };
                Command::new("chmod").arg(mode).arg(&p).status()
            };
        }
    }
}

/// `hallpass.db` + `suffix`.
fn sibling(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// A server with a client, user `alice` with a `devices` token, and one pending code.
struct Setup {
    node: Node,
    http: Http,
    client: String,
    alice: String,
    device_code: String,
    user_code: String,
}

fn setup() -> Setup {
    let node = Node::start(&[]);
    node.add_user("alice");
    let client = node.add_client("files", "devices read");
    let http = Http::new(Duration::from_secs(15));
    let alice = node.login(&http, &client, "alice", "devices");
    let r = http.start(&node, &client, "read").unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    Setup {
        device_code: r.body["device_code"].as_str().unwrap().into(),
        user_code: r.body["user_code"].as_str().unwrap().into(),
        node,
        http,
        client,
        alice,
    }
}

/// A write that cannot be stored: a prompt 5xx whose body says so in the surface's shape.
fn assert_write_refused(r: &crate::Resp) {
    assert_oauth_error(r, &[500, 503], &["server_error", "temporarily_unavailable"]);
    assert!(r.took < Duration::from_secs(5), "took {:?}", r.took);
}

/// Database file, WAL and directory read-only: writes get a clear 5xx at once, reads go on,
/// the process lives, and once writable again the server carries on without a restart.
#[test]
fn database_made_read_only_gets_clear_errors_and_recovers_without_restart() {
    let _serial = serial();
    let Setup {
        mut node,
        http,
        client,
        alice,
        device_code,
        user_code,
    } = setup();
    let db = node.db_path();
    let targets = [
        db.clone(),
        sibling(&db, "-wal"),
        node.dir.path().to_path_buf(),
    ];
    let Some(ro) = ReadOnly::apply(&targets) else {
        return;
    };

    for _ in 0..3 {
        let r = http.start(&node, &client, "read").expect("answers");
        if ro.immutable {
            assert_write_refused(&r);
        } else if r.status != 200 {
            // chmod does not affect open descriptors: a write may still be stored.
            assert_write_refused(&r);
        }
    }
    let v = http.verify(&node, &alice, &user_code).expect("answers");
    if ro.immutable || v.status != 200 {
        assert_api_error(&v, &[500, 503], &["internal", "unavailable"]);
    }
    let approved_while_read_only = v.status == 200;
    // Reads still work.
    let p = http.poll(&node, &client, &device_code).expect("answers");
    if !approved_while_read_only {
        assert_oauth_error(&p, &[400], &["authorization_pending"]);
    }
    let h = http.get(&node, "/healthz").expect("healthz answers");
    assert!([200, 503].contains(&h.status), "healthz: {}", h.text);
    assert!(h.took < Duration::from_secs(2), "healthz took {:?}", h.took);
    node.alive().expect("server alive while read-only");
    eprintln!(
        "read-only ({}): device_authorization and verify answered 5xx, healthz {}",
        if ro.immutable { "chattr +i" } else { "chmod" },
        h.status
    );

    drop(ro);
    let r = eventually(Duration::from_secs(5), || {
        let r = http.start(&node, &client, "read").ok()?;
        (r.status == 200).then_some(r)
    });
    assert!(
        r.is_some(),
        "no recovery within 5 s of the files becoming writable"
    );
    if !approved_while_read_only {
        let v = http.verify(&node, &alice, &user_code).unwrap();
        assert_eq!(v.status, 200, "{}", v.text);
    }
    let t = http.poll(&node, &client, &device_code).unwrap();
    assert_eq!(t.status, 200, "{}", t.text);
    node.alive().expect("alive");
    node.stop();
    assert_db_consistent(&db);
}

/// The WAL index (`hallpass.db-shm`, which SQLite maps into memory) made read-only too.
#[test]
#[ignore = "known limitation, not fixed: SQLite maps the WAL index (hallpass.db-shm) into memory, so a filesystem that stops writes to it kills the process with SIGBUS; avoiding that means giving up WAL and the command line working beside the server"]
fn shared_memory_file_made_read_only_does_not_kill_the_server() {
    let _serial = serial();
    let Setup {
        mut node,
        http,
        client,
        device_code,
        ..
    } = setup();
    if !euid_is_root() {
        eprintln!("NOTE: skipped: needs root for chattr (chmod does not affect a mapping)");
        return;
    }
    let db = node.db_path();
    let Some(ro) = ReadOnly::apply(&[sibling(&db, "-shm")]) else {
        return;
    };
    // A read: a poll of a pending code.
    let p = http.poll(&node, &client, &device_code);
    std::thread::sleep(Duration::from_millis(300));
    let alive = node.alive();
    eprintln!("poll with a read-only -shm: {p:?}; process: {alive:?}");
    alive.expect("server alive after a read with a read-only -shm");
    let p = p.expect("poll answers");
    if p.status != 400 {
        assert_write_refused(&p);
    }
    let w = http.start(&node, &client, "read").expect("answers");
    if w.status != 200 {
        assert_write_refused(&w);
    }
    node.alive().expect("server alive after a write");
    drop(ro);
    let r = http.start(&node, &client, "read").unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
}

/// `rm hallpass.db` under a running server: it keeps answering (no crash, no hang), and the
/// operator's way back — stop, put a backup in place (without the stale -wal/-shm), start —
/// works.
#[test]
fn database_file_removed_no_crash_and_a_restored_backup_starts_cleanly() {
    let _serial = serial();
    let Setup {
        mut node,
        http,
        client,
        ..
    } = setup();
    let db = node.db_path();
    let backup = node.dir.path().join("backup.db");
    let out = node.cli(&["backup", backup.to_str().unwrap()], None);
    assert!(out.status.success(), "{out:?}");
    std::fs::remove_file(&db).unwrap();

    for _ in 0..3 {
        let r = http.start(&node, &client, "read").expect("answers");
        assert!(r.took < Duration::from_secs(5), "took {:?}", r.took);
        if r.status != 200 {
            assert_write_refused(&r);
        }
    }
    let p = http
        .poll(&node, &client, "NOT-A-REAL-DEVICE-CODE")
        .expect("answers");
    assert!(p.took < Duration::from_secs(5));
    let h = http.get(&node, "/healthz").expect("healthz answers");
    assert!([200, 503].contains(&h.status), "healthz: {}", h.text);
    node.alive()
        .expect("server alive after the file was removed");
    node.stop();

    // Restore: the backup, and no WAL or shared-memory file of the removed database (SQLite
    // would replay that WAL into the restored file).
    std::fs::copy(&backup, &db).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sibling(&db, suffix));
    }
    node.restart();
    let r = http.start(&node, &client, "read").unwrap();
    assert_eq!(
        r.status, 200,
        "the client from the backup works: {}",
        r.text
    );
    node.stop();
    assert_db_consistent(&db);
}

/// Writes after `rm hallpass.db` go to a file no one will ever open again: the server must say
/// so (a clear 5xx) instead of acknowledging them.
#[test]
fn database_file_removed_writes_are_refused_not_acknowledged_and_lost() {
    let _serial = serial();
    let Setup {
        mut node,
        http,
        client,
        alice,
        device_code,
        user_code,
    } = setup();
    let db = node.db_path();
    std::fs::remove_file(&db).unwrap();
    let r = http.start(&node, &client, "read").expect("answers");
    let v = http.verify(&node, &alice, &user_code).expect("answers");
    eprintln!(
        "after rm: device_authorization {} {}; verify {} {}",
        r.status, r.text, v.status, v.text
    );
    node.alive().expect("alive");
    if r.status == 200 && v.status == 200 {
        // Both acknowledged: then they must survive a restart.
        node.stop();
        node.restart();
        let p = http.poll(&node, &client, &device_code).unwrap();
        assert_eq!(
            p.status, 200,
            "approval acknowledged after rm, gone after restart: {}",
            p.text
        );
    }
    assert_write_refused(&r);
    assert_api_error(&v, &[500, 503], &["internal", "unavailable"]);
}
