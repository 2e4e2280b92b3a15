//! A code ended early to make room under `limits.max_pending_codes_per_client` (issue 18 §4:
//! a flood from one address yields its oldest code to a device at another) reads as expired
//! to the person typing it, and to its device.

use std::net::IpAddr;

use crate::*;

/// A device authorization for `client` from `127.0.0.{n}`: its user and device codes.
fn ask_from(site: &Site, n: u8) -> Started {
    let r = reqwest::blocking::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, n]))
        .build()
        .unwrap()
        .post(site.url("/oauth/device_authorization"))
        .form(&[("client_id", site.cli.as_str()), ("device_name", "tv")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    Started {
        device_code: body["device_code"].as_str().unwrap().into(),
        user_code: body["user_code"].as_str().unwrap().into(),
    }
}

#[test]
fn an_evicted_code_says_it_has_expired() {
    let site = Site::new(&[
        ("HALLPASS_LIMITS_MAX_PENDING_CODES_PER_CLIENT", "2"),
        ("HALLPASS_LIMITS_DEVICE_AUTHORIZATION_PER_MINUTE", "0"),
    ]);
    let oldest = ask_from(&site, 2);
    let newer = ask_from(&site, 2);
    // Another address: 127.0.0.2's oldest code makes room.
    let other = ask_from(&site, 3);
    let alice = sign_in(&site, "alice");
    let r = alice.get(&site, &confirm_path(&oldest.user_code));
    r.expect(410);
    assert!(
        r.notice().unwrap().starts_with("This code has expired."),
        "{}",
        r.text
    );
    let r = alice.post(
        &site,
        "/device",
        &[("user_code", &oldest.user_code), ("action", "approve")],
    );
    r.expect(410);
    assert_eq!(poll_outcome(&site, &site.cli, &oldest), "expired_token");
    // The others are untouched.
    for live in [&newer, &other] {
        alice.get(&site, &confirm_path(&live.user_code)).expect(200);
        assert_eq!(
            poll_outcome(&site, &site.cli, live),
            "authorization_pending"
        );
    }
}
