//! The coordination tables through src/postgres/coordination.rs: a lease has one holder and
//! lapses when its holder stops renewing; failure buckets are shared and exact across
//! instances; change counters move with the change's commit and notify listeners.

use std::time::Duration;

use futures_util::StreamExt;
use hallpass::store::postgres::{self, coordination as co};

use crate::{config, database, runtime};

#[test]
fn a_lease_has_one_holder_and_lapses_when_not_renewed() {
    let db = database!();
    let config = config(&db.url(), &[]);
    runtime().block_on(async {
        let pool = postgres::open(&config).await.unwrap();
        let a = pool.get().await.unwrap();
        let b = pool.get().await.unwrap();
        assert!(co::try_lease(&a, "reaper", "A", 400).await.unwrap());
        assert!(!co::try_lease(&b, "reaper", "B", 400).await.unwrap());
        // Renewing is taking again.
        assert!(co::try_lease(&a, "reaper", "A", 400).await.unwrap());
        assert!(!co::try_lease(&b, "reaper", "B", 400).await.unwrap());
        // A stops renewing (dies): B takes over once it lapses, and A has lost it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(co::try_lease(&b, "reaper", "B", 400).await.unwrap());
        assert!(!co::try_lease(&a, "reaper", "A", 400).await.unwrap());
        // Given up on shutdown: free at once.
        co::release_lease(&a, "reaper", "A").await.unwrap(); // not A's: nothing
        assert!(!co::try_lease(&a, "reaper", "A", 400).await.unwrap());
        co::release_lease(&b, "reaper", "B").await.unwrap();
        assert!(co::try_lease(&a, "reaper", "A", 400).await.unwrap());
        // Other leases are independent.
        assert!(co::try_lease(&b, "other", "B", 400).await.unwrap());
    });
}

/// Two instances (two pools) share one bucket: 5 a minute is 5 in all, not 5 each, also when
/// 40 takes race; it refills at 1 per 12 s; a refund gives one back.
#[test]
fn failure_buckets_are_shared_and_exact_across_instances() {
    let db = database!();
    let config = config(&db.url(), &[]);
    runtime().block_on(async {
        let a = postgres::open(&config).await.unwrap();
        let b = postgres::connect(&config).await.unwrap();
        let t0 = 1_000_000_000i64;
        let subject = [10u8, 0, 0, 1];
        for (i, pool) in [&a, &b, &a, &b, &a].iter().enumerate() {
            let c = pool.get().await.unwrap();
            let got = co::take_token(&c, "code_entry", &subject, 5, t0)
                .await
                .unwrap();
            assert_eq!(got, Ok(()), "take {i}");
        }
        let c = b.get().await.unwrap();
        assert_eq!(
            co::take_token(&c, "code_entry", &subject, 5, t0)
                .await
                .unwrap(),
            Err(12),
            "empty: one token in 12 s"
        );
        // Another subject, another limit: their own buckets.
        assert_eq!(
            co::take_token(&c, "code_entry", &[9], 5, t0).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            co::take_token(&c, "sign_in", &subject, 5, t0)
                .await
                .unwrap(),
            Ok(())
        );
        // 6 s later half a token: wait 6 s more. 12 s later one.
        assert_eq!(
            co::take_token(&c, "code_entry", &subject, 5, t0 + 6_000)
                .await
                .unwrap(),
            Err(6)
        );
        assert_eq!(
            co::take_token(&c, "code_entry", &subject, 5, t0 + 12_000)
                .await
                .unwrap(),
            Ok(())
        );
        co::refund_token(&c, "code_entry", &subject, 5)
            .await
            .unwrap();
        assert_eq!(
            co::take_token(&c, "code_entry", &subject, 5, t0 + 12_000)
                .await
                .unwrap(),
            Ok(())
        );

        // A race from both instances on a fresh subject: exactly 5 of 40 get through.
        let mut tasks = Vec::new();
        for i in 0..40 {
            let pool = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let c = pool.get().await.unwrap();
                co::take_token(&c, "code_entry", b"race", 5, t0)
                    .await
                    .unwrap()
            }));
        }
        let mut granted = 0;
        for t in tasks {
            granted += usize::from(t.await.unwrap().is_ok());
        }
        assert_eq!(granted, 5);

        // Buckets untouched for a minute are full: the reaper may drop them.
        let c = a.get().await.unwrap();
        let gone = co::reap_buckets(&c, t0 + 60_000, 100).await.unwrap();
        assert_eq!(
            gone, 3,
            "code_entry/[9], sign_in and race; not the one touched at +12 s"
        );
    });
}

/// A counter moved in a transaction is seen only once it commits (so a cache that read the
/// old counter and then data never keeps data older than the counter), and listeners are told.
#[test]
fn change_counters_move_with_the_commit_and_notify() {
    let db = database!();
    let config = config(&db.url(), &[]);
    runtime().block_on(async {
        let pool = postgres::open(&config).await.unwrap();
        let (listener, mut connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let (tx_note, mut notes) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = m {
                    let _ = tx_note.send(n.payload().to_string());
                }
            }
        });
        listener
            .batch_execute("LISTEN hallpass_changes")
            .await
            .unwrap();

        let reader = pool.get().await.unwrap();
        let before = co::read_changes(&reader).await.unwrap();
        assert_eq!(before.len(), co::CHANGE_KINDS.len());
        assert!(before.values().all(|&n| n == 0));

        let mut writer = pool.get().await.unwrap();
        let tx = writer.transaction().await.unwrap();
        co::bump_changes(&tx, "keys").await.unwrap();
        assert_eq!(
            co::read_changes(&reader).await.unwrap(),
            before,
            "not yet committed"
        );
        tx.commit().await.unwrap();
        let after = co::read_changes(&reader).await.unwrap();
        assert_eq!(after["keys"], 1);
        assert_eq!(after["clients"], 0);
        let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
            .await
            .expect("a notification within 5 s")
            .unwrap();
        assert_eq!(note, "keys");

        // Rolled back: no count, no notification.
        let tx = writer.transaction().await.unwrap();
        co::bump_changes(&tx, "users").await.unwrap();
        drop(tx);
        assert_eq!(co::read_changes(&reader).await.unwrap()["users"], 0);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), notes.recv())
                .await
                .is_err()
        );
        assert!(co::bump_changes(&reader, "nonsense").await.is_err());
    });
}
