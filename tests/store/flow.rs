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

// What the PostgreSQL backend (issue 22) must do as SQLite does, on either backend: the
// admissions of the cap, checks of a named device's code, listings, and the exactly-once
// exchange under concurrent polls.

use hallpass::domain::model::{AuthorizationState, DeviceFacts, Listing};
use hallpass::protocol::codes::DeviceCode;
use hallpass::protocol::grant;
use hallpass::store::{
    Admission, Approval, ApprovalRefused, Caller, ClientAuth, CodeLookup, Exchange, Expired,
    NewAuthorization, PendingCode, PollMark, StartOutcome,
};

use super::{on_postgres, target};

/// A device authorization for public `client` with `admission` from `ip` (none: no address)
/// at `now`, expiring at `expires_at`.
fn new_authorization(
    client: &str,
    admission: Admission,
    ip: Option<&str>,
    now: i64,
    expires_at: i64,
) -> NewAuthorization {
    NewAuthorization {
        auth: ClientAuth {
            caller: Caller::Presented(hallpass::domain::model::ClientCredentials {
                client_id: client.into(),
                secret: None,
            }),
            grant: grant::DEVICE_CODE,
            sign_default: None,
        },
        scope: String::new(),
        facts: DeviceFacts {
            ip_address: ip.map(Into::into),
            ..DeviceFacts::default()
        },
        server_audience: "https://issuer.example".into(),
        admission,
        authorization_id: uuid::Uuid::now_v7().to_string(),
        device_id: uuid::Uuid::now_v7().to_string(),
        device_code: DeviceCode::generate(),
        user_code: hallpass::protocol::codes::UserCode::generate(),
        poll_interval_seconds: 5,
        expires_at,
        now,
    }
}

/// Starts an authorization for `client` with `admission` from `ip` at `now`, expiring at
/// `expires_at`.
fn start_with(
    fx: &Fx,
    client: &str,
    admission: Admission,
    ip: &str,
    now: i64,
    expires_at: i64,
) -> StartOutcome {
    let new = new_authorization(client, admission, Some(ip), now, expires_at);
    fx.run(fx.store.start_authorization(new)).unwrap().unwrap()
}

fn exchange_of(config: &Config, code: &str, client: &str, now: i64) -> Exchange {
    Exchange {
        device_code: code.into(),
        client_id: client.into(),
        algorithm: config.signing_algorithm,
        target: target(),
        refresh_expires_at: now + clock::ms(config.refresh_token_lifetime),
        now,
    }
}

/// Of 16 exchanges of one approved code sent at once (each on its own connection on
/// PostgreSQL), exactly one gets tokens; the others are told the code was used. Five codes,
/// the exchanges of each released together.
#[test]
fn concurrent_exchanges_of_one_code_yield_one_grant() {
    let (fx, config, user, client) = setup();
    let mut consumed = 0;
    for round in 0..5 {
        let now = 1000 + round;
        let s = start(&fx, &config, &client, "", now);
        approve(&fx, &config, s.user_code.as_str(), &user, false, now).unwrap();
        let x = exchange_of(&config, &s.device_code.0, &client, now + 1);
        let outcomes = fx.run(async {
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (store, x, barrier) = (fx.store.clone(), x.clone(), barrier.clone());
                    tokio::spawn(async move {
                        // A connection each, then all at once.
                        store.probe().await.unwrap();
                        barrier.wait().await;
                        store.exchange(x).await
                    })
                })
                .collect();
            let mut outcomes = Vec::new();
            for t in tasks {
                outcomes.push(t.await.unwrap().unwrap());
            }
            outcomes
        });
        let issued: Vec<_> = outcomes
            .iter()
            .filter(|o| matches!(o.outcome, PollOutcome::Issued(_)))
            .collect();
        assert_eq!(issued.len(), 1, "{outcomes:?}");
        assert!(
            issued[0].key.is_some(),
            "the active key is read with the grant"
        );
        for o in &outcomes {
            match &o.outcome {
                PollOutcome::Issued(g) => assert_eq!(g.user_id, user),
                PollOutcome::Refused { error, .. } => {
                    assert_eq!(*error, ErrorCode::InvalidGrant);
                    assert!(o.key.is_none());
                }
                other => panic!("{other:?}"),
            }
        }
        consumed += 1;
        let (rows, n) = fx
            .run(
                fx.store
                    .authorizations(Some(AuthorizationState::Consumed), None, now + 1, 0, 10),
            )
            .unwrap();
        assert_eq!(n, consumed);
        assert_eq!(rows[0].consumed_at, Some(now + 1));
    }
}

/// The cap's admissions: `Full` issues nothing, `Recount` reads the pending codes earliest
/// expiry first (with addresses when the client holds `cap`), an eviction ends a pending code
/// and its device but never an approved one.
#[test]
fn admissions_full_recount_and_eviction() {
    let (fx, config, user, client) = setup();
    let now = 10_000;
    let started = |ip: &str, expires_at: i64| match start_with(
        &fx,
        &client,
        Admission::Issue { evict: None },
        ip,
        now,
        expires_at,
    ) {
        StartOutcome::Started { started, evicted } => {
            assert!(!evicted);
            started
        }
        other => panic!("{other:?}"),
    };
    let a = started("192.0.2.1", now + 3000);
    let b = started("192.0.2.2", now + 1000);
    let c = started("192.0.2.3", now + 2000);
    assert!(matches!(
        start_with(&fx, &client, Admission::Full, "192.0.2.9", now, now + 5000),
        StartOutcome::Full
    ));
    // A wrong client hears so even at the cap.
    let wrong = new_authorization("nobody", Admission::Full, None, now, now + 5000);
    assert!(fx
        .run(fx.store.start_authorization(wrong))
        .unwrap()
        .is_err());
    let recount = |cap, addresses| match start_with(
        &fx,
        &client,
        Admission::Recount { cap, addresses },
        "192.0.2.9",
        now,
        now + 5000,
    ) {
        StartOutcome::Recount(codes) => codes,
        other => panic!("{other:?}"),
    };
    let code = |s: &hallpass::domain::model::Started, ip: Option<&str>| PendingCode {
        id: s.authorization.id.clone(),
        expires_at: s.authorization.expires_at,
        ip_address: ip.map(str::to_string),
    };
    // Fewer than the cap: no addresses; the Full and Recount trips issued nothing.
    assert_eq!(
        recount(10, false),
        vec![code(&b, None), code(&c, None), code(&a, None)]
    );
    assert_eq!(
        recount(10, true),
        vec![
            code(&b, Some("192.0.2.2")),
            code(&c, Some("192.0.2.3")),
            code(&a, Some("192.0.2.1"))
        ]
    );
    // At the cap: read again with addresses.
    assert_eq!(
        recount(2, false),
        vec![code(&b, Some("192.0.2.2")), code(&c, Some("192.0.2.3"))]
    );
    // Evicting b: it expires now, its device's poll is told so.
    let d = match start_with(
        &fx,
        &client,
        Admission::Issue {
            evict: Some(b.authorization.id.clone()),
        },
        "192.0.2.4",
        now,
        now + 4000,
    ) {
        StartOutcome::Started { started, evicted } => {
            assert!(evicted);
            started
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        find_pending(&fx, b.user_code.as_str(), now).err(),
        Some(CodeProblem::Expired)
    );
    let t = PollTracker::default();
    assert!(matches!(
        poll(&fx, &config, &t, &b.device_code.0, &client, now),
        PollOutcome::Refused {
            error: ErrorCode::ExpiredToken,
            ..
        }
    ));
    assert_eq!(
        recount(10, false),
        vec![code(&c, None), code(&a, None), code(&d, None)]
    );
    // An approved code is never taken from its device.
    approve(&fx, &config, c.user_code.as_str(), &user, false, now).unwrap();
    match start_with(
        &fx,
        &client,
        Admission::Issue {
            evict: Some(c.authorization.id.clone()),
        },
        "192.0.2.5",
        now,
        now + 4000,
    ) {
        StartOutcome::Started { evicted, .. } => assert!(!evicted),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        poll(&fx, &config, &t, &c.device_code.0, &client, now + 10),
        PollOutcome::Issued(_)
    ));
}

/// ZenML's verify-by-device: wrong codes count against the named device; the last allowed one
/// locks it and denies its code (RFC 8628 §5.1); the right one approves.
#[test]
fn wrong_codes_for_a_device_lock_it() {
    let (fx, config, user, client) = setup();
    let approval = |typed: &str, device_id: &str, now: i64| Approval {
        typed: typed.into(),
        user_id: user.clone(),
        trusted: false,
        ip_address: Some("192.0.2.7".into()),
        device_expires: now + clock::ms(config.untrusted_device_lifetime),
        for_device: Some((device_id.into(), 3)),
        now,
    };
    let s = start(&fx, &config, &client, "", 0);
    let other = start(&fx, &config, &client, "", 0);
    let device = s.authorization.device_id.clone();
    let wrong = other.user_code.as_str();
    for remaining in [2, 1] {
        let r = fx
            .run(fx.store.approve(approval(wrong, &device, 10)))
            .unwrap();
        assert_eq!(r.err(), Some(ApprovalRefused::Wrong { remaining }));
    }
    // Not even a code: still a wrong one.
    let r = fx
        .run(fx.store.approve(approval("nonsense", &device, 10)))
        .unwrap();
    assert_eq!(r.err(), Some(ApprovalRefused::Locked));
    assert_eq!(
        find_pending(&fx, s.user_code.as_str(), 20).err(),
        Some(CodeProblem::Denied)
    );
    let r = fx
        .run(
            fx.store
                .approve(approval(s.user_code.as_str(), &device, 20)),
        )
        .unwrap();
    assert_eq!(r.err(), Some(ApprovalRefused::NoPendingCode));
    // The other device's own code, checked against it, approves it.
    let r = fx
        .run(fx.store.approve(approval(
            &other.user_code.as_str().to_lowercase(),
            &other.authorization.device_id,
            30,
        )))
        .unwrap()
        .unwrap();
    assert_eq!(r.status, DeviceStatus::Verified);
    assert_eq!(r.user_id.as_deref(), Some(user.as_str()));
    assert_eq!(r.expires, 30 + clock::ms(config.untrusted_device_lifetime));
}

/// Looking a code up tells the viewer who approved it when they did; denying by id answers the
/// authorization as it now is; the listings count every state and cut pages newest first.
#[test]
fn look_up_deny_by_id_and_listings() {
    let (fx, config, user, client) = setup();
    let admin = fx.user("root", true).id;
    let a = start(&fx, &config, &client, "", 100);
    let b = start(&fx, &config, &client, "", 200);
    let c = start(&fx, &config, &client, "", 300);
    let admin_scoped = start(
        &fx,
        &config,
        &fx.client("c2", "admin").client_id,
        "admin",
        400,
    );
    approve(&fx, &config, a.user_code.as_str(), &user, false, 500).unwrap();
    assert_eq!(
        approve(
            &fx,
            &config,
            admin_scoped.user_code.as_str(),
            &user,
            false,
            500
        )
        .err(),
        Some(CodeProblem::NeedsAdmin)
    );
    match fx
        .run(
            fx.store
                .look_up_code(b.user_code.as_str().into(), None, 600),
        )
        .unwrap()
    {
        CodeLookup::Pending {
            pending,
            client_name,
        } => {
            assert_eq!(pending.authorization.id, b.authorization.id);
            assert_eq!(pending.device.id, b.authorization.device_id);
            assert_eq!(client_name.as_deref(), Some("CLI"));
        }
        other => panic!("{other:?}"),
    }
    for (viewer, seen) in [(user.clone(), Some(500)), (admin.clone(), None)] {
        match fx
            .run(
                fx.store
                    .look_up_code(a.user_code.as_str().into(), Some(viewer.clone()), 600),
            )
            .unwrap()
        {
            CodeLookup::Problem {
                problem,
                approved_by_viewer,
            } => {
                assert_eq!(problem, CodeProblem::AlreadyUsed);
                assert_eq!(approved_by_viewer, seen);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fx.run(fx.store.approved_by(a.user_code.as_str().into(), viewer))
                .unwrap(),
            seen
        );
    }
    let actor = hallpass::domain::model::Actor {
        user_id: Some(admin.clone()),
        ip_address: None,
    };
    let denied = fx
        .run(
            fx.store
                .deny_authorization(b.authorization.id.clone(), actor.clone(), 700),
        )
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(denied.denied_at, Some(700));
    assert_eq!(
        denied.approved_by_account_id.as_deref(),
        Some(admin.as_str())
    );
    let again = fx
        .run(
            fx.store
                .deny_authorization(b.authorization.id.clone(), actor.clone(), 800),
        )
        .unwrap()
        .unwrap();
    assert_eq!(again.err(), Some(CodeProblem::Denied));
    assert!(fx
        .run(fx.store.deny_authorization("no-such-id".into(), actor, 800))
        .unwrap()
        .is_none());
    // Every code is still live at 900.
    let now = 900;
    let (all, total) = fx
        .run(fx.store.authorizations(None, None, now, 0, 10))
        .unwrap();
    assert_eq!(total, 4);
    let ids: Vec<_> = all.iter().map(|x| &x.id).collect();
    assert_eq!(
        ids,
        [
            &admin_scoped.authorization.id,
            &c.authorization.id,
            &b.authorization.id,
            &a.authorization.id
        ]
    );
    let (pending, n) = fx
        .run(fx.store.authorizations(
            Some(AuthorizationState::Pending),
            Some(client.clone()),
            now,
            0,
            10,
        ))
        .unwrap();
    assert_eq!((pending.len(), n), (1, 1));
    assert_eq!(pending[0].id, c.authorization.id);
    let (second, n) = fx
        .run(
            fx.store
                .authorizations(None, Some(client.clone()), now, 1, 1),
        )
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(second[0].id, b.authorization.id);
    let page = fx
        .run(fx.store.authorizations_page(Listing::All, None, now, 9, 3))
        .unwrap();
    assert_eq!(page.page, 2, "past the end: the last page");
    assert_eq!(
        (
            page.counts.pending,
            page.counts.approved,
            page.counts.denied,
            page.counts.consumed,
            page.counts.expired
        ),
        (2, 1, 1, 0, 0)
    );
    assert_eq!(page.rows.len(), 1);
    assert_eq!(page.rows[0].authorization.id, a.authorization.id);
    assert_eq!(page.rows[0].username.as_deref(), Some("alice"));
    assert_eq!(page.rows[0].client_name.as_deref(), Some("CLI"));
    assert_eq!(page.clients.len(), 2);
    let live = fx
        .run(
            fx.store
                .authorizations_page(Listing::Live, Some(client.clone()), now, 1, 10),
        )
        .unwrap();
    let ids: Vec<_> = live.rows.iter().map(|o| &o.authorization.id).collect();
    assert_eq!(ids, [&c.authorization.id, &a.authorization.id]);
    assert_eq!(live.rows[1].username.as_deref(), Some("alice"));
    assert_eq!(live.rows[0].username, None);
    // Expired: the undecided ones, once their time has passed.
    let later = 1000 + clock::ms(config.device_code_lifetime);
    let page = fx
        .run(fx.store.authorizations_page(
            Listing::Only(AuthorizationState::Expired),
            None,
            later,
            1,
            10,
        ))
        .unwrap();
    assert_eq!(page.counts.expired, 3);
    assert_eq!(page.rows.len(), 3);
}

/// Poll times written back never move back, and an interval never shrinks.
#[test]
fn poll_times_written_back_never_move_back() {
    let (fx, config, _user, client) = setup();
    let s = start(&fx, &config, &client, "", 0);
    let id = s.authorization.id.clone();
    fx.run(
        fx.store
            .write_poll_times(vec![(id.clone(), 5000, Some(10))]),
    )
    .unwrap();
    fx.run(fx.store.write_poll_times(vec![(id.clone(), 4000, Some(7))]))
        .unwrap();
    fx.run(fx.store.write_poll_times(vec![])).unwrap();
    let (rows, _) = fx
        .run(fx.store.authorizations(None, None, 0, 0, 10))
        .unwrap();
    assert_eq!(rows[0].last_polled_at, Some(5000));
    assert_eq!(rows[0].poll_interval_seconds, 10);
    fx.run(fx.store.write_poll_times(vec![(id, 6000, None)]))
        .unwrap();
    let (rows, _) = fx
        .run(fx.store.authorizations(None, None, 0, 0, 10))
        .unwrap();
    assert_eq!(rows[0].last_polled_at, Some(6000));
    assert_eq!(rows[0].poll_interval_seconds, 10);
}

/// A poll's read carries the code's shared poll mark on PostgreSQL (none on SQLite, whose one
/// process keeps it in memory); the reaper's batch of authorizations takes the marks of codes
/// that have expired.
#[test]
fn poll_read_carries_the_shared_mark_and_the_reaper_takes_it() {
    let (fx, config, _user, client) = setup();
    let s = start(&fx, &config, &client, "", 0);
    let evicted = start(&fx, &config, &client, "", 0);
    let read = |client: &str, code: &str| {
        let auth = ClientAuth {
            caller: Caller::Presented(hallpass::domain::model::ClientCredentials {
                client_id: client.into(),
                secret: None,
            }),
            grant: grant::DEVICE_CODE,
            sign_default: None,
        };
        fx.run(fx.store.poll_read(auth, code.into())).unwrap()
    };
    let shared = |started: &hallpass::domain::model::Started| {
        let r = read(&client, &started.device_code.0).unwrap();
        assert!(r.client.fresh);
        assert_eq!(r.authorization.unwrap().id, started.authorization.id);
        r.shared
    };
    assert_eq!(shared(&s), None);
    let mark = PollMark {
        id: s.authorization.id.clone(),
        last_polled_at: 1000,
        early_ms: 250,
        poll_interval_seconds: 10,
        expires_at: s.authorization.expires_at,
    };
    // The mark of a code whose expiry has passed (it was evicted, say).
    let gone = PollMark {
        id: evicted.authorization.id.clone(),
        expires_at: 2500,
        ..mark.clone()
    };
    fx.run(fx.store.record_poll(mark.clone())).unwrap();
    fx.run(fx.store.record_poll(gone.clone())).unwrap();
    assert_eq!(shared(&s), on_postgres().then(|| mark.clone()));
    assert_eq!(shared(&evicted), on_postgres().then(|| gone.clone()));
    assert_eq!(
        fx.run(fx.store.purge(Expired::Authorizations, 2000, 100))
            .unwrap(),
        0
    );
    assert_eq!(shared(&evicted), on_postgres().then(|| gone.clone()));
    // The next batch at or after its expiry takes it, and leaves the live one's.
    assert_eq!(
        fx.run(fx.store.purge(Expired::Authorizations, 2500, 100))
            .unwrap(),
        0
    );
    assert_eq!(shared(&evicted), None);
    assert_eq!(shared(&s), on_postgres().then(|| mark.clone()));
    // A wrong client is refused by the same read; an unknown code reads nothing.
    assert!(read("nobody", &s.device_code.0).is_err());
    let r = read(&client, "no such code").unwrap();
    assert!(r.authorization.is_none() && r.shared.is_none());
}

/// The reaper counts the expired codes never used and deletes expired rows in batches.
#[test]
fn reaper_counts_and_deletes_expired_codes_in_batches() {
    let (fx, config, user, client) = setup();
    let life = clock::ms(config.device_code_lifetime);
    let used = start(&fx, &config, &client, "", 0);
    approve(&fx, &config, used.user_code.as_str(), &user, false, 10).unwrap();
    let x = exchange_of(&config, &used.device_code.0, &client, 20);
    assert!(matches!(
        fx.run(fx.store.exchange(x)).unwrap().outcome,
        PollOutcome::Issued(_)
    ));
    let denied = start(&fx, &config, &client, "", 0);
    deny(&fx, denied.user_code.as_str(), 10).unwrap();
    for _ in 0..3 {
        start(&fx, &config, &client, "", 0);
    }
    let live = start(&fx, &config, &client, "", life);
    assert_eq!(fx.run(fx.store.count_expired_unused(life)).unwrap(), 3);
    assert_eq!(
        fx.run(fx.store.purge(Expired::Authorizations, life, 3))
            .unwrap(),
        3
    );
    assert_eq!(
        fx.run(fx.store.purge(Expired::Authorizations, life, 3))
            .unwrap(),
        2
    );
    assert_eq!(
        fx.run(fx.store.purge(Expired::Authorizations, life, 3))
            .unwrap(),
        0
    );
    let (rows, total) = fx
        .run(fx.store.authorizations(None, None, life, 0, 10))
        .unwrap();
    assert_eq!(total, 1);
    assert_eq!(rows[0].id, live.authorization.id);
    // The pending devices of the expired codes expire with them; the approved one lives on.
    let devices = fx.run(fx.store.purge(Expired::Devices, life, 100)).unwrap();
    assert_eq!(devices, 4);
    for what in [
        Expired::RefreshTokens,
        Expired::Revocations,
        Expired::Sessions,
    ] {
        assert_eq!(fx.run(fx.store.purge(what, life, 100)).unwrap(), 0);
    }
    assert_eq!(fx.run(fx.store.purge_keys(life, 0)).unwrap(), 0);
}

/// A store with public client `c1` and one device authorization of it, started at 1000 and
/// expiring at 601,000.
fn one_started() -> (Fx, hallpass::domain::model::Started) {
    let fx = Fx::new();
    fx.client("c1", "");
    let first = start_with(
        &fx,
        "c1",
        Admission::Issue { evict: None },
        "192.0.2.1",
        1000,
        601_000,
    );
    let StartOutcome::Started { started, .. } = first else {
        panic!("{first:?}");
    };
    (fx, started)
}

/// Device authorizations that arrive together may share a transaction (PostgreSQL groups
/// them, SQLite's writer commits them together): one that fails (here a device id already
/// taken, a constraint error) fails alone, and the others are started.
#[test]
fn a_failing_start_among_simultaneous_ones_fails_alone() {
    let (fx, started) = one_started();
    let taken = started.authorization.device_id.clone();
    let news: Vec<NewAuthorization> = (0..40)
        .map(|i| {
            let mut new =
                new_authorization("c1", Admission::Issue { evict: None }, None, 1000, 601_000);
            if i == 17 {
                new.device_id = taken.clone();
            }
            new
        })
        .collect();
    let outcomes = fx.run(futures_util::future::join_all(
        news.into_iter().map(|n| fx.store.start_authorization(n)),
    ));
    for (i, o) in outcomes.iter().enumerate() {
        match (i, o) {
            (17, Err(_)) => {}
            (17, other) => panic!("the taken device id was started: {other:?}"),
            (_, Ok(Ok(StartOutcome::Started { .. }))) => {}
            (_, other) => panic!("start {i} failed beside the failing one: {other:?}"),
        }
    }
}

/// Device authorizations started at once, each answered as its own: a user code already
/// stored, or drawn twice within the batch, is drawn again (its device stands, its
/// authorization gets a free code); an eviction, a recount, a full cap and an unknown client
/// among them are answered in their places. On PostgreSQL these form batches, whose plain
/// starts are inserted by one statement.
#[test]
fn simultaneous_starts_with_taken_user_codes_each_get_a_free_one() {
    let (fx, started) = one_started();
    let (stored_code, evicted_id) = (started.user_code.clone(), started.authorization.id.clone());
    let twice = hallpass::protocol::codes::UserCode::generate();
    let news: Vec<NewAuthorization> = (0..40)
        .map(|i| {
            let admission = match i {
                9 => Admission::Issue {
                    evict: Some(evicted_id.clone()),
                },
                11 => Admission::Full,
                13 => Admission::Recount {
                    cap: 10,
                    addresses: false,
                },
                _ => Admission::Issue { evict: None },
            };
            let mut new = new_authorization("c1", admission, None, 2000, 602_000);
            match i {
                3 | 20 => new.user_code = stored_code.clone(),
                5 | 6 => new.user_code = twice.clone(),
                7 => {
                    new.auth.caller =
                        Caller::Presented(hallpass::domain::model::ClientCredentials {
                            client_id: "nobody".into(),
                            secret: None,
                        })
                }
                _ => {}
            }
            new
        })
        .collect();
    let asked: Vec<(String, String)> = news
        .iter()
        .map(|n| (n.authorization_id.clone(), n.user_code.as_str().to_string()))
        .collect();
    let outcomes = fx.run(futures_util::future::join_all(
        news.into_iter().map(|n| fx.store.start_authorization(n)),
    ));
    let mut codes = std::collections::HashSet::new();
    for (i, o) in outcomes.into_iter().enumerate() {
        let o = o.unwrap();
        match (i, o) {
            (7, Err(e)) => assert_eq!(e.error, ErrorCode::InvalidClient),
            (11, Ok(StartOutcome::Full)) => {}
            // Which of the others it counts depends on the order they ran in.
            (13, Ok(StartOutcome::Recount(codes))) => assert!(codes.len() <= 10, "{codes:?}"),
            (_, Ok(StartOutcome::Started { started, evicted })) => {
                assert_eq!(evicted, i == 9, "start {i}");
                let a = &started.authorization;
                assert_eq!(a.id, asked[i].0, "start {i} answered with another's");
                assert_eq!(a.user_code, started.user_code.as_str());
                match i {
                    3 | 20 => assert_ne!(started.user_code, stored_code),
                    5 | 6 => {}
                    _ => assert_eq!(a.user_code, asked[i].1, "start {i} drew again"),
                }
                assert!(codes.insert(a.user_code.clone()), "{} twice", a.user_code);
                match fx.run(fx.store.look_up_code(a.user_code.clone(), None, 3000)) {
                    Ok(CodeLookup::Pending { pending, .. }) => {
                        assert_eq!(pending.authorization.id, a.id);
                        assert_eq!(pending.device.id, a.device_id);
                    }
                    other => panic!("start {i}'s code: {other:?}"),
                }
            }
            (_, other) => panic!("start {i}: {other:?}"),
        }
    }
    // 37 started (40 less the unknown client, the full cap and the recount); one of the two
    // given the same code kept it.
    assert_eq!(codes.len(), 37);
    assert!(codes.contains(twice.as_str()));
    assert!(!codes.contains(stored_code.as_str()));
}
