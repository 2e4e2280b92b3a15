//! The device flow's steps (were `flow.rs`'s unit tests).

use hallpass::app::polls::PollTracker;
use hallpass::clock;
use hallpass::config::Config;
use hallpass::domain::model::{CodeProblem, DeviceStatus, PollOutcome};
use hallpass::protocol::error::ErrorCode;

use super::{approve, deny, find_pending, poll, start, Fx};

/// A store with a user and a public client: (store, config, user id, client id).
fn setup() -> (Fx, Config, String, String) {
    let fx = Fx::new();
    let user = fx.user("alice", false);
    let client = fx.client("c1", "");
    (fx, Config::default(), user.id, client.client_id)
}

#[test]
fn approve_then_exchange_exactly_once() {
    let (fx, config, user, client) = setup();
    let t = PollTracker::default();
    let s = start(&fx, &config, &client, "", 1000);
    let code = s.device_code.0.clone();
    let p = poll(&fx, &config, &t, &code, &client, 1000);
    assert!(matches!(
        p,
        PollOutcome::Refused {
            error: ErrorCode::AuthorizationPending,
            ..
        }
    ));
    let typed = s.user_code.as_str().to_lowercase();
    let d = approve(&fx, &config, &typed, &user, true, 2000).unwrap();
    assert_eq!(d.status, DeviceStatus::Verified);
    assert!(d.trusted_device);
    assert_eq!(
        approve(&fx, &config, &typed, &user, true, 2000).err(),
        Some(CodeProblem::AlreadyUsed)
    );
    // Polled 1 s after the last poll, but approval is answered at once.
    let p = poll(&fx, &config, &t, &code, &client, 2000);
    let PollOutcome::Issued(g) = p else {
        panic!("{p:?}")
    };
    assert_eq!(g.user_id, user);
    let p = poll(&fx, &config, &t, &code, &client, 9000);
    assert!(matches!(
        p,
        PollOutcome::Refused {
            error: ErrorCode::InvalidGrant,
            ..
        }
    ));
}

#[test]
fn locked_or_disabled_after_approval_is_denied() {
    if crate::on_postgres() {
        return; // reaches into the SQLite file
    }
    let (fx, config, user, client) = setup();
    let t = PollTracker::default();
    let s = start(&fx, &config, &client, "", 0);
    approve(&fx, &config, s.user_code.as_str(), &user, false, 0).unwrap();
    // Another program disables the user behind the store's back.
    fx.sql()
        .execute("UPDATE users SET disabled = 1", [])
        .unwrap();
    let p = poll(&fx, &config, &t, &s.device_code.0, &client, 10);
    assert!(matches!(
        p,
        PollOutcome::Refused {
            error: ErrorCode::AccessDenied,
            ..
        }
    ));
}

#[test]
fn other_client_and_expiry() {
    let (fx, config, _user, client) = setup();
    let t = PollTracker::default();
    let s = start(&fx, &config, &client, "", 0);
    let p = poll(&fx, &config, &t, &s.device_code.0, "someone-else", 0);
    assert!(matches!(
        p,
        PollOutcome::Refused {
            error: ErrorCode::InvalidGrant,
            ..
        }
    ));
    let later = clock::ms(config.device_code_lifetime);
    let p = poll(&fx, &config, &t, &s.device_code.0, &client, later);
    assert!(matches!(
        p,
        PollOutcome::Refused {
            error: ErrorCode::ExpiredToken,
            ..
        }
    ));
    assert_eq!(
        find_pending(&fx, s.user_code.as_str(), later).err(),
        Some(CodeProblem::Expired)
    );
    assert_eq!(deny(&fx, "BBBB-BBBB", 0).err(), Some(CodeProblem::Unknown));
}
