//! The database write-locked by another process (`BEGIN EXCLUSIVE` held for seconds).

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{assert_api_error, assert_db_consistent, assert_oauth_error, serial, Http, Node};

/// Opens the database like another program would and holds its write lock for `hold`.
/// Returns once the lock is taken; the handle finishes when it is released.
fn hold_write_lock(db: &Path, hold: Duration) -> JoinHandle<Instant> {
    let db = db.to_path_buf();
    let (taken_tx, taken_rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).expect("open database");
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE")
            .expect("take the write lock");
        taken_tx.send(()).unwrap();
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").expect("release");
        Instant::now()
    });
    taken_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("lock taken");
    handle
}

/// Lock held past `database.busy_timeout`: writes answer 503 quickly, in the shape of their
/// surface; reads keep working; once the lock goes the server recovers by itself.
#[test]
fn write_lock_past_busy_timeout_gets_fast_503_then_recovers_without_restart() {
    if crate::harness::on_postgres() {
        return; // holds SQLite's write lock on the file
    }
    let _serial = serial();
    let node = Node::start(&[
        ("HALLPASS_DATABASE_BUSY_TIMEOUT", "1s"),
        ("HALLPASS_SERVER_REQUEST_TIMEOUT", "10s"),
    ]);
    node.add_user("alice");
    let client = node.add_client("locked", "devices read");
    let http = Http::new(Duration::from_secs(15));
    let alice = node.login(&http, &client, "alice", "devices");
    let pending = http.start(&node, &client, "read").unwrap();
    assert_eq!(pending.status, 200, "{}", pending.text);
    let device_code = pending.body["device_code"].as_str().unwrap().to_string();
    let user_code = pending.body["user_code"].as_str().unwrap().to_string();

    let locked_at = Instant::now();
    let locker = hold_write_lock(&node.db_path(), Duration::from_secs(4));

    // Four devices ask for codes at once while the lock is held.
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (base, client) = (node.base.clone(), client.clone());
            std::thread::spawn(move || {
                let http = Http::new(Duration::from_secs(15));
                http.start(base.as_str(), &client, "read")
                    .expect("device_authorization answers")
            })
        })
        .collect();
    let health = http.get(&node, "/healthz").expect("healthz answers");
    let poll = http
        .poll(&node, &client, &device_code)
        .expect("poll answers");
    let list = http
        .api(&node, "GET", "/api/v1/devices", &alice, None)
        .expect("list answers");
    let verify = http
        .verify(&node, &alice, &user_code)
        .expect("verify answers");
    let answers: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let in_lock = locked_at.elapsed();
    eprintln!(
        "during the lock ({in_lock:?}): device_authorization {:?}, healthz {} in {:?}, poll {} in {:?}, list {} in {:?}, verify {} in {:?}",
        answers.iter().map(|a| (a.status, a.took)).collect::<Vec<_>>(),
        health.status,
        health.took,
        poll.status,
        poll.took,
        list.status,
        list.took,
        verify.status,
        verify.took
    );
    assert!(
        in_lock < Duration::from_secs(4),
        "the checks ran while the lock was held"
    );

    // Writes: 503 temporarily_unavailable with Retry-After, about busy_timeout after asking.
    for a in &answers {
        assert_oauth_error(a, &[503], &["temporarily_unavailable"]);
        assert!(a.retry_after.is_some(), "503 without Retry-After");
        assert!(
            a.took < Duration::from_millis(2500),
            "503 should come after ~busy_timeout (1 s), took {:?}",
            a.took
        );
    }
    assert_api_error(&verify, &[503], &["unavailable"]);
    assert!(
        verify.took < Duration::from_millis(2500),
        "{:?}",
        verify.took
    );
    // Reads: unaffected by a writer in WAL mode.
    assert_eq!(health.status, 200, "{}", health.text);
    assert!(health.took < Duration::from_secs(1), "{:?}", health.took);
    assert_oauth_error(&poll, &[400], &["authorization_pending"]);
    assert!(poll.took < Duration::from_secs(1), "{:?}", poll.took);
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(list.took < Duration::from_secs(1), "{:?}", list.took);

    // Released: the next requests succeed, without a restart, and the failed approval left
    // nothing behind.
    locker.join().unwrap();
    let recovered = Instant::now();
    for _ in 0..12 {
        let r = http.start(&node, &client, "read").unwrap();
        assert_eq!(r.status, 200, "after the lock is released: {}", r.text);
    }
    assert_oauth_error(
        &http.poll(&node, &client, &device_code).unwrap(),
        &[400],
        &["authorization_pending", "slow_down"],
    );
    let v = http.verify(&node, &alice, &user_code).unwrap();
    assert_eq!(v.status, 200, "{}", v.text);
    let t = http.poll(&node, &client, &device_code).unwrap();
    assert_eq!(t.status, 200, "{}", t.text);
    eprintln!(
        "recovered: 12 writes and a flow in {:?}",
        recovered.elapsed()
    );
    let mut node = node;
    node.stop();
    assert_db_consistent(&node.db_path());
}

/// Lock held for less than `database.busy_timeout` (default 5 s): writes wait and succeed.
#[test]
fn write_lock_shorter_than_busy_timeout_is_waited_out() {
    if crate::harness::on_postgres() {
        return; // holds SQLite's write lock on the file
    }
    let _serial = serial();
    let mut node = Node::start(&[]);
    let client = node.add_client("patient", "read");
    let http = Http::new(Duration::from_secs(15));
    let locker = hold_write_lock(&node.db_path(), Duration::from_secs(2));
    let r = http.start(&node, &client, "read").unwrap();
    let released = locker.join().unwrap();
    assert_eq!(r.status, 200, "waited for the lock: {}", r.text);
    assert!(
        r.took >= Duration::from_millis(1500) && Instant::now() >= released,
        "answered before the lock was released? {:?}",
        r.took
    );
    eprintln!("device_authorization waited {:?} for the lock", r.took);
    node.stop();
    assert_db_consistent(&node.db_path());
}

/// `server.request_timeout` shorter than the lock: 503 at the request timeout, not a hang.
#[test]
fn request_timeout_bounds_a_wait_for_the_lock() {
    if crate::harness::on_postgres() {
        return; // holds SQLite's write lock on the file
    }
    let _serial = serial();
    let mut node = Node::start(&[
        ("HALLPASS_SERVER_REQUEST_TIMEOUT", "1s"),
        ("HALLPASS_DATABASE_BUSY_TIMEOUT", "10s"),
    ]);
    let client = node.add_client("impatient", "read");
    let http = Http::new(Duration::from_secs(15));
    let locker = hold_write_lock(&node.db_path(), Duration::from_secs(3));
    let r = http.start(&node, &client, "read").unwrap();
    assert_oauth_error(&r, &[503], &["temporarily_unavailable"]);
    assert!(
        r.took < Duration::from_millis(2000),
        "503 at request_timeout (1 s), took {:?}",
        r.took
    );
    locker.join().unwrap();
    let r = http.start(&node, &client, "read").unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    node.stop();
    assert_db_consistent(&node.db_path());
}

/// More writers waiting for the lock than `database.pool_size` (8): the ones that cannot even
/// get a pooled connection are just as "busy", and reads must not turn into internal errors.
#[test]
fn write_lock_with_more_writers_than_the_pool_still_gets_503() {
    if crate::harness::on_postgres() {
        return; // holds SQLite's write lock on the file
    }
    let _serial = serial();
    let node = Node::start(&[
        ("HALLPASS_DATABASE_BUSY_TIMEOUT", "1s"),
        ("HALLPASS_SERVER_REQUEST_TIMEOUT", "10s"),
    ]);
    let client = node.add_client("crowd", "read");
    let http = Http::new(Duration::from_secs(15));
    let pending = http.start(&node, &client, "read").unwrap();
    let device_code = pending.body["device_code"].as_str().unwrap().to_string();

    let locker = hold_write_lock(&node.db_path(), Duration::from_secs(4));
    let writers: Vec<_> = (0..20)
        .map(|_| {
            let (base, client) = (node.base.clone(), client.clone());
            std::thread::spawn(move || {
                Http::new(Duration::from_secs(15))
                    .start(base.as_str(), &client, "read")
                    .expect("device_authorization answers")
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let poll = http
        .poll(&node, &client, &device_code)
        .expect("poll answers");
    let health = http.get(&node, "/healthz").expect("healthz answers");
    let answers: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    eprintln!(
        "20 writers during the lock: {:?}; poll {} in {:?}; healthz {} in {:?}",
        answers
            .iter()
            .map(|a| (a.status, a.body["error"].as_str().unwrap_or("").to_string()))
            .collect::<Vec<_>>(),
        poll.status,
        poll.took,
        health.status,
        health.took
    );
    for a in &answers {
        assert_oauth_error(a, &[503], &["temporarily_unavailable"]);
    }
    // A read may have to wait for a connection, but it is never an internal error.
    if poll.status == 400 {
        assert_oauth_error(&poll, &[400], &["authorization_pending"]);
    } else {
        assert_oauth_error(&poll, &[503], &["temporarily_unavailable"]);
    }
    assert!(
        [200, 503].contains(&health.status),
        "healthz: {}",
        health.text
    );
    locker.join().unwrap();
    let r = http.start(&node, &client, "read").unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
}
