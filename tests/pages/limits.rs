//! Guessing user codes (RFC 8628 §5.1): failed entries are limited per address and per browser
//! session, the person is told how long to wait, and device polling is never slowed by it.
//! Sign-in attempts are limited per address.

use serde_json::json;

use crate::*;

/// Asserts a 429 page that says how long to wait, in the same seconds as `Retry-After`.
#[track_caller]
fn assert_wait_page(r: &Page) -> u64 {
    r.expect(429);
    assert_secure_page(r);
    let secs: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    assert!(
        r.text.contains(&format!("Wait {secs} seconds")),
        "the page says how long to wait ({secs} s):\n{}",
        r.text
    );
    assert!(
        !r.text.contains("Approve this device?"),
        "no confirmation while limited"
    );
    secs
}

#[test]
fn failed_code_entries_are_limited_per_address_but_polling_is_not() {
    let site = Site::new(&[("HALLPASS_OAUTH_POLL_INTERVAL", "1s")]);
    let alice = sign_in(&site, "alice");
    let bob = sign_in(&site, "bob");
    let alice_token = site.device("alice", "laptop");
    let good = site.pending("tv");

    // The default limit: five failed entries a minute. X-Forwarded-For from a peer that is not
    // a trusted proxy changes nothing: the socket's address counts.
    for n in 0..5 {
        let r = alice.get_from(
            &site,
            &confirm_path(&other_code(&good.user_code, n)),
            &format!("10.9.0.{n}"),
        );
        assert_eq!(r.status, 404, "failed entry {n}: {}", r.text);
    }
    assert_wait_page(&alice.get(&site, &confirm_path(&other_code(&good.user_code, 5))));
    // Even the right code is refused now, on the page and when posted.
    assert_wait_page(&alice.get(&site, &confirm_path(&good.user_code)));
    let r = alice.post(
        &site,
        "/device",
        &[
            ("user_code", &good.user_code),
            ("action", "approve"),
            ("trusted", "on"),
        ],
    );
    assert_wait_page(&r);
    // Another session from the same address is limited too (whatever address it claims).
    assert_wait_page(&bob.get(&site, &confirm_path(&good.user_code)));
    assert_wait_page(&bob.get_from(&site, &confirm_path(&good.user_code), "10.9.9.9"));
    let r = bob.post(
        &site,
        "/device",
        &[("user_code", &good.user_code), ("action", "deny")],
    );
    assert_wait_page(&r);
    // So is the API's code lookup and verification from this address.
    let r = site.get(
        &format!("/api/v1/devices/{}", good.user_code),
        &alice_token.access,
    );
    harness::assert_error(&r, 429, "too_many_requests");
    let r = site.put(
        "/api/v1/devices/verify",
        &alice_token.access,
        json!({ "user_code": good.user_code }),
    );
    harness::assert_error(&r, 429, "too_many_requests");
    assert!(r.header("retry-after").is_some());
    // The entry form itself still shows.
    alice.get(&site, "/device").expect(200);

    // The device polls as usual: pending (not slowed, not limited), then its tokens once the
    // code is approved elsewhere.
    assert_eq!(
        poll_outcome(&site, &site.cli, &good),
        "authorization_pending"
    );
    site.approve(&good.user_code, "alice", false);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = site.poll(&site.cli, &good.device_code);
    assert_eq!(
        r.status, 200,
        "polling was slowed by the entry limit: {}",
        r.text
    );
}

#[test]
fn the_limit_can_be_configured_and_the_wait_it_names_is_enough() {
    // 30 a minute: one failed entry back every 2 s.
    let site = Site::new(&[("HALLPASS_LIMITS_CODE_ENTRY_FAILURES_PER_MINUTE", "30")]);
    let alice = sign_in(&site, "alice");
    let good = site.pending("tv");
    for n in 0..30 {
        alice
            .get(&site, &confirm_path(&other_code(&good.user_code, n)))
            .expect(404);
    }
    let secs = assert_wait_page(&alice.get(&site, &confirm_path(&good.user_code)));
    assert!(secs <= 2, "Retry-After {secs} for 30 a minute");
    std::thread::sleep(std::time::Duration::from_millis(secs * 1000 + 100));
    let r = alice.get(&site, &confirm_path(&good.user_code));
    r.expect(200);
    assert!(r.text.contains("Approve this device?"));
}

#[test]
fn failed_code_entries_are_limited_per_session_across_addresses() {
    let site = Site::new(&[("HALLPASS_SERVER_TRUSTED_PROXIES", "127.0.0.1/32")]);
    let alice = sign_in_via(&site, "alice", Some("10.1.0.1"));
    let bob = sign_in_via(&site, "bob", Some("10.2.0.1"));
    let good = site.pending("tv");
    // Each failure from a different client address.
    for n in 0..5 {
        let r = alice.get_from(
            &site,
            &confirm_path(&other_code(&good.user_code, n)),
            &format!("10.1.1.{n}"),
        );
        assert_eq!(r.status, 404, "failed entry {n}: {}", r.text);
    }
    // A fresh address does not help the session.
    assert_wait_page(&alice.get_from(&site, &confirm_path(&good.user_code), "10.1.2.1"));
    let r = send(
        &site,
        "POST",
        "/device",
        Some(&alice.cookie),
        Some(&[
            ("csrf", alice.csrf.as_str()),
            ("user_code", good.user_code.as_str()),
            ("action", "approve"),
        ]),
        &[("x-forwarded-for", "10.1.3.1")],
    );
    assert_wait_page(&r);
    // Another person behind the same proxy, from their own address, is not limited (so the
    // limit above was the session's, not the proxy's address).
    let r = bob.get(&site, &confirm_path(&good.user_code));
    r.expect(200);
    assert!(r.text.contains("Approve this device?"));
}

#[test]
fn sign_in_attempts_are_limited_per_address() {
    let site = Site::new(&[("HALLPASS_LIMITS_SIGN_IN_PER_MINUTE", "3")]);
    let (_, cookie, token) = login_form(&site, "/devices", None);
    for _ in 0..3 {
        let r = post_login(
            &site,
            Some(&cookie),
            &token,
            "alice",
            "wrong password",
            "/devices",
            None,
        );
        r.expect(401);
    }
    // The right password does not get through while limited.
    let r = post_login(
        &site,
        Some(&cookie),
        &token,
        "alice",
        PASSWORD,
        "/devices",
        None,
    );
    r.expect(429);
    assert_secure_page(&r);
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        r.text.contains(&format!("Wait {secs} seconds")),
        "{}",
        r.text
    );
    assert!(r.set_cookie("hallpass_session").is_none());
}
