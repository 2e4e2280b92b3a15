//! The user-code guessing limit (RFC 8628 §5.1) reserves before it looks a code up, so a burst
//! of concurrent guesses gets exactly `limits.code_entry_failures_per_minute` evaluated, on the
//! page and in the API (issue 18 §6). A malformed code is told what a code looks like and does
//! not count (issue 21). Bearer-token callers are limited per user, as sessions are per session.

use std::net::IpAddr;
use std::sync::Barrier;

use serde_json::json;

use crate::*;

/// Runs `f(i)` for `i` in `0..n` on `n` threads released together; returns the statuses.
fn burst<F: Fn(usize) -> u16 + Sync>(n: usize, f: F) -> Vec<u16> {
    let barrier = Barrier::new(n);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, f) = (&barrier, &f);
                scope.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// How many of `statuses` are `status`.
fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[test]
fn a_burst_of_wrong_codes_at_the_api_gets_exactly_the_limit_evaluated() {
    let site = Site::new(&[]);
    let alice = site.device("alice", "laptop");
    let good = site.pending("tv");
    let verify = |code: &str| {
        site.put(
            "/api/v1/devices/verify",
            &alice.access,
            json!({ "user_code": code }),
        )
    };
    // Malformed codes: a clear 400 naming the field, and no guess counted.
    for _ in 0..10 {
        for (code, words) in [
            ("xxxx", "this has 4"),
            ("WDJB-MJHA", "no vowels or digits"),
            ("WDJB-MJHT-B", "this has 9"),
        ] {
            let r = verify(code);
            harness::assert_bad_field(&r, "user_code");
            let message = r.body["message"].as_str().unwrap();
            assert!(
                message.contains("A code has 8 letters") && message.contains(words),
                "{code}: {message}"
            );
        }
    }
    // 300 wrong codes at once from one address and one token: five are looked up.
    let statuses = burst(300, |i| {
        verify(&other_code(&good.user_code, i % 300)).status
    });
    assert_eq!(
        (count(&statuses, 404), count(&statuses, 429)),
        (5, 295),
        "{statuses:?}"
    );
    // Used up: even the right code waits now, and a lookup by code too.
    harness::assert_error(&verify(&good.user_code), 429, "too_many_requests");
    let r = site.get(
        &format!("/api/v1/devices/{}", good.user_code),
        &alice.access,
    );
    harness::assert_error(&r, 429, "too_many_requests");
    // A path that is neither a device id nor a code is no guess: 404, not 429.
    let r = site.get("/api/v1/devices/xxxx", &alice.access);
    harness::assert_error(&r, 404, "not_found");
}

#[test]
fn a_burst_of_wrong_codes_on_the_page_gets_exactly_the_limit_evaluated() {
    let site = Site::new(&[]);
    let bob = sign_in(&site, "bob");
    let good = site.pending("tv");
    // Malformed codes, typed or posted: the page says what a code looks like; no guess counted.
    for _ in 0..10 {
        let r = bob.get(&site, &confirm_path("xxxx"));
        r.expect(400);
        assert!(
            r.text
                .contains("A code has 8 letters, like WDJB-MJHT; this has 4."),
            "{}",
            r.text
        );
        let r = bob.post(
            &site,
            "/device",
            &[("user_code", "WDJB-MJHA"), ("action", "approve")],
        );
        r.expect(400);
        assert!(r.text.contains("no vowels or digits"), "{}", r.text);
    }
    // 300 wrong codes at once, typed and posted: five are looked up.
    let statuses = burst(300, |i| {
        let code = other_code(&good.user_code, i);
        if i % 2 == 0 {
            bob.get(&site, &confirm_path(&code)).status
        } else {
            bob.post(
                &site,
                "/device",
                &[("user_code", &code), ("action", "deny")],
            )
            .status
        }
    });
    assert_eq!(
        (count(&statuses, 404), count(&statuses, 429)),
        (5, 295),
        "{statuses:?}"
    );
    // The right code waits too, and the device's code was never touched.
    bob.get(&site, &confirm_path(&good.user_code)).expect(429);
    assert_eq!(
        poll_outcome(&site, &site.cli, &good),
        "authorization_pending"
    );
}

#[test]
fn right_codes_give_their_reservation_back() {
    // Ten approvals in a row from one session and address: none counts as a guess, so the five
    // wrong ones that follow are all looked up.
    let site = Site::new(&[]);
    let alice = sign_in(&site, "alice");
    for n in 0..10 {
        let code = site.pending(&format!("tv{n}")).user_code;
        alice.get(&site, &confirm_path(&code)).expect(200);
        let r = alice.post(
            &site,
            "/device",
            &[("user_code", &code), ("action", "approve")],
        );
        // 200 with the result, or 303 to it (post/redirect/get).
        assert!(matches!(r.status, 200 | 303), "{}: {}", r.status, r.text);
    }
    let good = site.pending("last");
    for n in 0..5 {
        alice
            .get(&site, &confirm_path(&other_code(&good.user_code, n)))
            .expect(404);
    }
    alice.get(&site, &confirm_path(&good.user_code)).expect(429);
}

/// An HTTP client whose connections come from `local` (a loopback address other than
/// 127.0.0.1, so the server sees another client address).
fn from(local: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(local.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// `PUT /api/v1/devices/verify` of `code` with `token`, from the client `http`.
fn verify_from(site: &Site, http: &reqwest::blocking::Client, token: &str, code: &str) -> u16 {
    http.put(site.url("/api/v1/devices/verify"))
        .bearer_auth(token)
        .json(&json!({ "user_code": code }))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn a_bearer_tokens_user_is_limited_across_addresses_and_tokens() {
    let site = Site::new(&[]);
    let laptop = site.device("alice", "laptop");
    let phone = site.device("alice", "phone");
    let bobs = site.device("bob", "tablet");
    let good = site.pending("tv");
    let (a, b) = (from("127.0.0.2"), from("127.0.0.3"));
    for n in 0..5 {
        let code = other_code(&good.user_code, n);
        assert_eq!(verify_from(&site, &a, &laptop.access, &code), 404);
    }
    // Alice's other token, from another address: still Alice, still limited.
    let code = other_code(&good.user_code, 5);
    assert_eq!(verify_from(&site, &b, &phone.access, &code), 429);
    assert_eq!(verify_from(&site, &b, &phone.access, &good.user_code), 429);
    // Bob, from that same address, is not.
    assert_eq!(verify_from(&site, &b, &bobs.access, &code), 404);
    assert_eq!(verify_from(&site, &b, &bobs.access, &good.user_code), 200);
}

#[test]
fn a_burst_of_right_codes_is_approved_whole() {
    // Reserving before the lookup must not refuse right codes that arrive together: a script
    // approving 40 devices at once with one token, from one address, gets 40 approvals (they
    // go through `limit` at a time), and the allowance is whole afterwards.
    let site = Site::new(&[("HALLPASS_LIMITS_DEVICE_AUTHORIZATION_PER_MINUTE", "0")]);
    let alice = site.device("alice", "laptop");
    let codes: Vec<String> = (0..40)
        .map(|n| site.pending(&format!("tv{n}")).user_code)
        .collect();
    let statuses = burst(codes.len(), |i| {
        site.put(
            "/api/v1/devices/verify",
            &alice.access,
            json!({ "user_code": codes[i] }),
        )
        .status
    });
    assert_eq!(count(&statuses, 200), 40, "{statuses:?}");
    // The same on the page: typed and approved together from one session.
    let bob = sign_in(&site, "bob");
    let codes: Vec<String> = (0..20)
        .map(|n| site.pending(&format!("radio{n}")).user_code)
        .collect();
    let statuses = burst(codes.len(), |i| {
        bob.post(
            &site,
            "/device",
            &[("user_code", &codes[i]), ("action", "approve")],
        )
        .status
    });
    assert_eq!(count(&statuses, 303), 20, "{statuses:?}");
    // Nothing was counted: five wrong codes are still looked up.
    let good = site.pending("last");
    for n in 0..5 {
        let r = site.put(
            "/api/v1/devices/verify",
            &alice.access,
            json!({ "user_code": other_code(&good.user_code, n) }),
        );
        assert_eq!(r.status, 404, "{}", r.text);
    }
}
