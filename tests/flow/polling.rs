//! Issue 19 §1: polite clients never get `slow_down`, fast ones always do, against the real
//! binary at a 1 s interval.
//!
//! golang.org/x/oauth2 polls on a ticker, every `interval` exactly: each poll leaves on a tick
//! and arrives with the network's and the scheduler's jitter, so a poll that arrives late makes
//! the next gap short. hallpass compared arrival times strictly and answered such polls
//! `slow_down` (8 of 34 at 5 s; at 1 s, 19 of ~93).

use std::time::{Duration, Instant};

use super::{assert_oauth_error, fast_server, harness};

/// Polls `device_code` on a timer: poll `k` leaves at `start + k * interval + jitter(k)`, i.e.
/// the client sleeps the interval less the previous poll's jitter plus this one's. Returns
/// each answer's `error` with how far from its tick the poll really left (ms).
fn poll_on_a_timer(
    s: &harness::Server,
    client_id: &str,
    device_code: &str,
    polls: u32,
    jitter: impl Fn(u32) -> i64,
) -> Vec<(String, i64)> {
    let interval = Duration::from_secs(1);
    // Far enough ahead that a negative jitter of the first poll is still in the future.
    let start = Instant::now() + Duration::from_millis(500);
    (0..polls)
        .map(|k| {
            let tick = start + interval * k;
            let j = jitter(k);
            let at = if j >= 0 {
                tick + Duration::from_millis(j as u64)
            } else {
                tick - Duration::from_millis(j.unsigned_abs())
            };
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let left = Instant::now();
            let off = if left >= tick {
                (left - tick).as_millis() as i64
            } else {
                -((tick - left).as_millis() as i64)
            };
            let r = s.poll(client_id, device_code);
            assert_eq!(r.status, 400, "{}", r.text);
            (
                r.body["error"].as_str().unwrap_or_default().to_string(),
                off,
            )
        })
        .collect()
}

/// A deterministic jitter in ±`bound` ms for poll `k` of stream `seed`.
fn pseudo_random(seed: u64, k: u32, bound: i64) -> i64 {
    let mut x = (seed << 32 | u64::from(k)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    (x % (2 * bound as u64 + 1)) as i64 - bound
}

/// The `hallpass_token_polls_total` count for `answer`.
fn polls_answered(s: &harness::Server, answer: &str) -> u64 {
    let text = reqwest::blocking::get(s.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let prefix = format!("hallpass_token_polls_total{{answer=\"{answer}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn clients_polling_on_a_timer_with_jitter_never_get_slow_down() {
    let s = fast_server(&[]);
    let (client_id, _) = s.add_client("ticker", "", &[]);
    // A plain ticker (what x/oauth2 does; loopback adds a few ms either way), a ticker whose
    // polls are alternately 300 ms late and 300 ms early (gaps of 1.6 s and 0.4 s), and three
    // with pseudo-random jitter in ±300 ms: one code each, polled at once in parallel.
    let jitters: Vec<Box<dyn Fn(u32) -> i64 + Sync>> = vec![
        Box::new(|_| 0),
        Box::new(|k| if k % 2 == 0 { 300 } else { -300 }),
        Box::new(|k| pseudo_random(1, k, 300)),
        Box::new(|k| pseudo_random(2, k, 300)),
        Box::new(|k| pseudo_random(3, k, 300)),
    ];
    let codes: Vec<_> = (0..jitters.len())
        .map(|i| s.start_device(&client_id, "", &format!("tv{i}")))
        .collect();
    let answers: Vec<Vec<(String, i64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = codes
            .iter()
            .zip(&jitters)
            .map(|(code, jitter)| {
                let (s, client_id) = (&s, &client_id);
                scope.spawn(move || poll_on_a_timer(s, client_id, &code.device_code, 12, jitter))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, answers) in answers.iter().enumerate() {
        assert!(
            answers.iter().all(|(a, _)| a == "authorization_pending"),
            "client {i}: (answer, ms from its tick) {answers:?}"
        );
    }
    assert_eq!(polls_answered(&s, "slow_down"), 0);
    assert_eq!(polls_answered(&s, "authorization_pending"), 5 * 12);
}

#[test]
fn a_client_polling_at_half_the_interval_gets_slow_down_with_retry_after() {
    let s = fast_server(&[]);
    let (client_id, _) = s.add_client("hasty", "", &[]);
    let code = s.start_device(&client_id, "", "tv");
    let start = Instant::now();
    let mut answers = Vec::new();
    let slowed = (0..3).find_map(|k| {
        std::thread::sleep(
            (start + Duration::from_millis(500) * k).saturating_duration_since(Instant::now()),
        );
        let r = s.poll(&client_id, &code.device_code);
        answers.push(r.body["error"].clone());
        (r.body["error"] == "slow_down").then_some(r)
    });
    let r =
        slowed.unwrap_or_else(|| panic!("no slow_down in three polls 500 ms apart: {answers:?}"));
    assert_oauth_error(&r, 400, "slow_down");
    assert_eq!(r.body["interval"], 6, "1 s + 5 s");
    // The new interval in Retry-After too (RFC 9110 §10.2.3), for clients that read headers.
    assert_eq!(r.header("retry-after"), Some("6"), "{:?}", r.headers);
    // A pending answer says nothing of the kind.
    let later = s.start_device(&client_id, "", "tv2");
    let r = s.poll(&client_id, &later.device_code);
    assert_oauth_error(&r, 400, "authorization_pending");
    assert_eq!(r.header("retry-after"), None);
}
