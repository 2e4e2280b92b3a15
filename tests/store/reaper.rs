//! The reaper's write-back of poll times (was `reaper.rs`'s unit test).

use hallpass::app::polls::PollTracker;
use hallpass::app::reaper::write_back_polls;
use hallpass::clock;
use hallpass::config::Config;
use hallpass::protocol::poll::PollState;

use super::{start, Fx};

fn pending(expires_at: i64) -> PollState {
    PollState {
        same_client: true,
        expires_at,
        poll_interval_seconds: 5,
        last_polled_at: None,
        early_ms: 0,
        approved_at: None,
        denied_at: None,
        consumed_at: None,
    }
}

/// `last_polled_at` of every authorization, in id order.
fn stored_poll_times(fx: &Fx) -> Vec<Option<i64>> {
    let conn = fx.sql();
    let mut s = conn
        .prepare("SELECT last_polled_at FROM device_authorizations ORDER BY id")
        .unwrap();
    let v = s
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    v
}

#[test]
fn poll_times_are_written_back_in_batches_and_a_failed_batch_is_kept() {
    if crate::on_postgres() {
        return; // reaches into the SQLite file
    }
    let fx = Fx::new();
    let now = clock::now_ms();
    let config = Config::default();
    fx.client("c", "");
    let ids: Vec<String> = (0..5)
        .map(|_| start(&fx, &config, "c", "", now).authorization.id)
        .collect();
    let expires = now + 600_000;
    let polls = PollTracker::default();
    for (i, id) in ids.iter().enumerate() {
        polls.decide(id, &pending(expires), now + i as i64);
    }
    // The fourth code's update fails (a trigger stands for a failing write): its batch (the
    // 3rd and 4th, in id order) writes nothing, the 5th is not tried, and the earlier batch
    // stands.
    fx.sql()
        .execute_batch(&format!(
            "CREATE TRIGGER fail BEFORE UPDATE ON device_authorizations \
             WHEN NEW.id = '{}' BEGIN SELECT RAISE(ABORT, 'refused'); END",
            ids[3]
        ))
        .unwrap();
    assert!(fx.run(write_back_polls(&fx.store, &polls, 2)).is_err());
    assert_eq!(
        stored_poll_times(&fx),
        vec![Some(now), Some(now + 1), None, None, None]
    );
    // The next pass writes what the failed one could not, and only that.
    fx.sql().execute_batch("DROP TRIGGER fail").unwrap();
    let mut left: Vec<String> = polls.take_dirty().into_iter().map(|t| t.0).collect();
    left.sort();
    assert_eq!(left, ids[2..]);
    polls.restore_dirty(
        &ids[2..]
            .iter()
            .map(|id| (id.clone(), 0, None))
            .collect::<Vec<_>>(),
    );
    fx.run(write_back_polls(&fx.store, &polls, 2)).unwrap();
    assert_eq!(
        stored_poll_times(&fx),
        (0..5).map(|i| Some(now + i)).collect::<Vec<_>>()
    );
    assert!(polls.take_dirty().is_empty());
}
