//! `postgres::transaction`: serialization failures and deadlocks are run again, never
//! answered as errors; failures are sorted into unavailable, busy and internal, and never show
//! the URL's password.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hallpass::store::postgres::{self, IsolationLevel, PgError};

use crate::{config, database, runtime};

/// Two serializable transactions that each read a counter and write it back: one of them is
/// refused by PostgreSQL (40001) and runs again, so both increments count.
#[test]
fn serialization_failures_are_retried() {
    let db = database!();
    let (client, crt) = db.client();
    crt.block_on(client.batch_execute(
        "CREATE TABLE counter (id INT PRIMARY KEY, n INT NOT NULL); INSERT INTO counter VALUES (1, 0)",
    ))
    .unwrap();
    let config = config(&db.url(), &[]);
    let rt = runtime();
    let runs = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let pool = postgres::connect(&config).await.unwrap();
        // Both first runs read before either writes.
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let (pool, barrier, runs) = (pool.clone(), barrier.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                postgres::transaction(&pool, IsolationLevel::Serializable, |tx| {
                    let barrier = barrier.clone();
                    let runs = runs.clone();
                    Box::pin(async move {
                        let first = runs.fetch_add(1, Ordering::SeqCst) < 2;
                        let n: i32 = tx
                            .query_one("SELECT n FROM counter WHERE id = 1", &[])
                            .await?
                            .get(0);
                        if first {
                            barrier.wait().await;
                        }
                        tx.execute("UPDATE counter SET n = $1 WHERE id = 1", &[&(n + 1)])
                            .await?;
                        Ok(n + 1)
                    })
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    let n: i32 = crt
        .block_on(client.query_one("SELECT n FROM counter", &[]))
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "both increments stored");
    assert_eq!(runs.load(Ordering::SeqCst), 3, "one run was repeated");
}

/// Two transactions that lock two rows in opposite orders deadlock; PostgreSQL aborts one
/// (40P01) after deadlock_timeout (1 s), and it runs again.
#[test]
fn deadlocks_are_retried() {
    let db = database!();
    let (client, crt) = db.client();
    crt.block_on(client.batch_execute(
        "CREATE TABLE pair (id INT PRIMARY KEY, n INT NOT NULL); INSERT INTO pair VALUES (1, 0), (2, 0)",
    ))
    .unwrap();
    let config = config(&db.url(), &[("HALLPASS_DATABASE_BUSY_TIMEOUT", "10s")]);
    let rt = runtime();
    let runs = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let pool = postgres::connect(&config).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for (a, b) in [(1, 2), (2, 1)] {
            let (pool, barrier, runs) = (pool.clone(), barrier.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                postgres::transaction(&pool, IsolationLevel::ReadCommitted, |tx| {
                    let barrier = barrier.clone();
                    let runs = runs.clone();
                    Box::pin(async move {
                        let first = runs.fetch_add(1, Ordering::SeqCst) < 2;
                        tx.execute("UPDATE pair SET n = n + 1 WHERE id = $1", &[&a])
                            .await?;
                        if first {
                            barrier.wait().await;
                        }
                        tx.execute("UPDATE pair SET n = n + 1 WHERE id = $1", &[&b])
                            .await?;
                        Ok(())
                    })
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    let total: i64 = crt
        .block_on(client.query_one("SELECT sum(n) FROM pair", &[]))
        .unwrap()
        .get(0);
    assert_eq!(total, 4, "both transactions stored both updates");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "the deadlock victim ran again"
    );
}

/// Errors keep their meaning: a statement that is wrong is internal (500) and not retried; a
/// held lock past busy_timeout (lock_timeout) is busy; every pooled connection held past it
/// is busy; a server that is not there is unavailable, named without its password.
#[test]
fn failures_are_sorted_and_never_show_the_password() {
    let db = database!();
    let (client, crt) = db.client();
    crt.block_on(client.batch_execute("CREATE TABLE t (id INT PRIMARY KEY)"))
        .unwrap();
    let url = format!(
        "postgres://postgres:pw-Hush42@127.0.0.1:{}/{}?sslmode=disable",
        db.cluster.port, db.name
    );
    let config = config(
        &url,
        &[
            ("HALLPASS_DATABASE_BUSY_TIMEOUT", "300ms"),
            ("HALLPASS_DATABASE_POOL_SIZE", "2"),
        ],
    );
    let rt = runtime();
    rt.block_on(async {
        let pool = postgres::connect(&config).await.unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let e = postgres::transaction(&pool, IsolationLevel::ReadCommitted, move |tx| {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tx.execute("INSERT INTO no_such_table VALUES (1)", &[])
                    .await?;
                Ok(())
            })
        })
        .await
        .unwrap_err();
        assert!(matches!(e, PgError::Internal(_)), "{e:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        // A row lock held elsewhere: lock_timeout (= busy_timeout) answers busy.
        let holder = pool.get().await.unwrap();
        holder
            .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let e = postgres::transaction(&pool, IsolationLevel::ReadCommitted, |tx| {
            Box::pin(async move {
                tx.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", &[])
                    .await?;
                Ok(())
            })
        })
        .await
        .unwrap_err();
        assert!(matches!(e, PgError::Busy(_)), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // Both connections held: the wait for one ends at busy_timeout, busy.
        let other = pool.get().await.unwrap();
        let e = postgres::transaction(&pool, IsolationLevel::ReadCommitted, |_| {
            Box::pin(async move { Ok(()) })
        })
        .await
        .unwrap_err();
        assert!(matches!(e, PgError::Busy(_)), "{e:?}");
        assert!(e.is_transient());
        drop((holder, other));
    });

    // Nobody listening: unavailable, the URL shown without its password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = config_for_port(port);
    let e = rt.block_on(postgres::connect(&down)).unwrap_err();
    assert!(matches!(e, PgError::Unavailable(_)), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(text.contains("postgres://postgres:***@127.0.0.1"), "{text}");
    assert!(!text.contains("Hush42"), "{text}");
}

fn config_for_port(port: u16) -> hallpass::config::Config {
    config(
        &format!("postgres://postgres:pw-Hush42@127.0.0.1:{port}/x?sslmode=disable"),
        &[("HALLPASS_DATABASE_CONNECT_TIMEOUT", "2s")],
    )
}
