//! The rules of administration, as the store keeps them (were `admin.rs`'s unit tests).

use hallpass::app::admin::{create_client, update_user};
use hallpass::clock;
use hallpass::config::Config;
use hallpass::domain::admin::{ClientChange, ClientSpec, Refusal, UserChange};
use hallpass::domain::model::{Actor, DeviceFilter, DeviceStatus};
use hallpass::protocol::grant;
use hallpass::protocol::jwt::Algorithm;
use hallpass::store::{DeviceRefused, DeviceUpdate, NewSession, NewUser, UserUpdate};

use super::{approve, start, Fx};

#[test]
fn the_last_admin_stays() {
    let fx = Fx::new();
    let a = fx.user("root", true);
    let demote = UserChange {
        is_admin: Some(false),
        ..Default::default()
    };
    assert!(matches!(
        fx.run(update_user(&fx.store, &a.id, demote.clone()))
            .unwrap(),
        Err(Refusal::Conflict(_))
    ));
    assert!(matches!(
        fx.run(fx.store.delete_user(a.id.clone())).unwrap(),
        Err(Refusal::Conflict(_))
    ));
    fx.user("root2", true);
    assert!(fx
        .run(update_user(&fx.store, &a.id, demote))
        .unwrap()
        .is_ok());
}

#[test]
fn client_rules() {
    let fx = Fx::new();
    let user = fx.user("bob", false);
    let spec = |grants: &[&str], scopes: &str, owner: Option<&str>| ClientSpec {
        name: "n".into(),
        grants: grants.iter().map(|g| g.to_string()).collect(),
        scopes: scopes.into(),
        owner_user_id: owner.map(str::to_string),
        ..Default::default()
    };
    let create =
        |spec: ClientSpec, confidential: bool| fx.run(create_client(&fx.store, spec, confidential));
    let cc = [grant::CLIENT_CREDENTIALS];
    assert!(create(spec(&cc, "", None), false).unwrap().is_err());
    assert!(create(spec(&cc, "", None), true).unwrap().is_ok());
    assert!(create(spec(&["nope"], "", None), true).unwrap().is_err());
    let owned = spec(&[], "read admin", Some(&user.id));
    assert!(create(owned, false).unwrap().is_err());
    let (client, secret) = create(spec(&[], "b a", None), false).unwrap().unwrap();
    assert_eq!(client.allowed_scopes, "a b");
    assert!(secret.is_none());
    assert_eq!(client.allowed_grants.len(), 2);
}

#[test]
fn client_algorithm_audience_and_resources() {
    let fx = Fx::new();
    let spec = ClientSpec {
        name: "api client".into(),
        signing_algorithm: Some(Algorithm::ES256),
        audience: Some("https://api.example".into()),
        resources: vec!["https://a".into(), "urn:b".into(), "https://a".into()],
        ..Default::default()
    };
    let create = |spec: ClientSpec| fx.run(create_client(&fx.store, spec, false));
    let find = |id: &str| fx.run(fx.store.client(id.into())).unwrap().unwrap();
    let (client, _) = create(spec.clone()).unwrap().unwrap();
    let stored = find(&client.client_id);
    assert_eq!(stored.signing_algorithm, Some(Algorithm::ES256));
    assert_eq!(stored.audience.as_deref(), Some("https://api.example"));
    assert_eq!(stored.allowed_resources, ["https://a", "urn:b"]);
    assert_eq!(stored.algorithm(Algorithm::RS256), Algorithm::ES256);
    // Back to the server's defaults.
    let change = ClientChange {
        signing_algorithm: Some(None),
        audience: Some(None),
        resources: Some(Vec::new()),
        ..Default::default()
    };
    let updated = fx
        .run(
            fx.store
                .update_client(client.client_id.clone(), change, clock::now_ms()),
        )
        .unwrap()
        .unwrap();
    assert_eq!(updated.algorithm(Algorithm::RS256), Algorithm::RS256);
    let stored = find(&client.client_id);
    assert_eq!(
        (
            stored.signing_algorithm,
            stored.audience,
            stored.allowed_resources.len()
        ),
        (None, None, 0)
    );
    // Malformed resources and audiences are refused, naming the field.
    for (field, bad) in [
        (
            "allowed_resources",
            ClientSpec {
                resources: vec!["no-scheme".into()],
                ..spec.clone()
            },
        ),
        (
            "allowed_resources",
            ClientSpec {
                resources: vec!["https://a#f".into()],
                ..spec.clone()
            },
        ),
        (
            "audience",
            ClientSpec {
                audience: Some("has space".into()),
                ..spec.clone()
            },
        ),
    ] {
        match create(bad).unwrap() {
            Err(Refusal::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

/// Whether `id` is an enabled administrator now.
fn is_active_admin(fx: &Fx, id: &str) -> bool {
    fx.run(fx.store.user(id.into()))
        .unwrap()
        .is_some_and(|u| u.is_admin && !u.disabled)
}

/// Two administrators, the last two, each demoted (or disabled, or deleted) at the same moment
/// by two requests: one change passes and the other is refused, never both (on PostgreSQL two
/// instances, or two connections of one, would each count two admins and each go ahead
/// without a serializable check).
#[test]
fn concurrent_removals_of_the_last_two_admins_leave_one() {
    let fx = Fx::new();
    let mut survivor = fx.user("root", true).id;
    for round in 0..24 {
        let other = fx.user(&format!("root{round}"), true).id;
        let change = match round % 3 {
            0 => Some(UserUpdate {
                is_admin: Some(false),
                ..Default::default()
            }),
            1 => Some(UserUpdate {
                disabled: Some(true),
                ..Default::default()
            }),
            _ => None,
        };
        let (x, y) = fx.run(async {
            let remove = |id: String| {
                let change = change.clone();
                let store = fx.store.clone();
                async move {
                    match change {
                        Some(c) => store.update_user(id, c, 1).await.unwrap().map(drop),
                        None => store.delete_user(id).await.unwrap(),
                    }
                }
            };
            tokio::join!(remove(survivor.clone()), remove(other.clone()))
        });
        assert!(
            x.is_ok() != y.is_ok(),
            "round {round}: exactly one of the two passes: {x:?} {y:?}"
        );
        let refused = if x.is_err() { &x } else { &y };
        assert!(matches!(refused, Err(Refusal::Conflict(_))), "{refused:?}");
        let kept = if x.is_err() { survivor } else { other };
        assert!(is_active_admin(&fx, &kept), "round {round}");
        let (users, _) = fx.run(fx.store.users(0, 100)).unwrap();
        assert_eq!(
            users.iter().filter(|u| u.is_admin && !u.disabled).count(),
            1,
            "round {round}"
        );
        survivor = kept;
    }
}

/// Names are unique as SQLite's `COLLATE NOCASE` makes them: ASCII letters fold, nothing else
/// does; a taken name is a conflict, not an error.
#[test]
fn usernames_are_unique_ignoring_ascii_case_only() {
    let fx = Fx::new();
    let alice = fx.user("Alice", false);
    let again = fx
        .run(fx.store.create_user(NewUser {
            username: "aLICE".into(),
            password_hash: "x".into(),
            is_admin: false,
            now: 0,
        }))
        .unwrap();
    assert!(matches!(again, Err(Refusal::Conflict(_))), "{again:?}");
    let found = fx.run(fx.store.user_by_name("ALICE".into())).unwrap();
    assert_eq!(found.map(|u| u.id), Some(alice.id));
    // É and é are two names to NOCASE.
    let upper = fx.user("Émile", false);
    let lower = fx.user("émile", false);
    assert_ne!(upper.id, lower.id);
    let found = fx.run(fx.store.user_by_name("émile".into())).unwrap();
    assert_eq!(found.map(|u| u.id), Some(lower.id));
    assert!(fx
        .run(fx.store.user_by_name("EMILE".into()))
        .unwrap()
        .is_none());
    assert_eq!(fx.run(fx.store.count_users()).unwrap(), 3);
}

/// The users' listing is ordered as SQLite orders `username COLLATE NOCASE` (ASCII letters
/// folded, then byte order), whatever the database's locale, and its total counts every user.
#[test]
fn users_are_listed_by_folded_name_with_the_total() {
    let fx = Fx::new();
    for name in ["carol", "Zed", "bob", "_x", "Alice", "émile"] {
        fx.user(name, false);
    }
    let names = |offset, limit| {
        let (users, total) = fx.run(fx.store.users(offset, limit)).unwrap();
        (
            users.into_iter().map(|u| u.username).collect::<Vec<_>>(),
            total,
        )
    };
    assert_eq!(
        names(0, 100),
        (
            vec!["_x", "Alice", "bob", "carol", "Zed", "émile"]
                .into_iter()
                .map(String::from)
                .collect(),
            6
        )
    );
    assert_eq!(names(1, 2), (vec!["Alice".into(), "bob".into()], 6));
    assert_eq!(names(10, 5), (vec![], 6));
}

/// A session is found until it expires, while its user is enabled; a new password or a
/// disabled account ends the user's sessions; signing out ends one.
#[test]
fn sessions_live_with_their_user() {
    let fx = Fx::new();
    fx.user("root", true);
    let bob = fx.user("bob", false);
    let open = |hash: &[u8]| {
        fx.run(fx.store.create_session(NewSession {
            id_hash: hash.to_vec(),
            user_id: bob.id.clone(),
            csrf_token: "csrf".into(),
            now: 1000,
            expires_at: 5000,
        }))
        .unwrap()
    };
    let find = |hash: &[u8], now| fx.run(fx.store.session(hash.to_vec(), now)).unwrap();
    open(b"one");
    let s = find(b"one", 4999).unwrap();
    assert_eq!(
        (s.user.id.as_str(), s.csrf_token.as_str()),
        (bob.id.as_str(), "csrf")
    );
    assert_eq!(s.expires_at, 5000);
    assert!(find(b"one", 5000).is_none(), "expired");
    assert!(find(b"two", 2000).is_none());
    fx.run(fx.store.end_session(b"one".to_vec())).unwrap();
    assert!(find(b"one", 2000).is_none(), "signed out");
    // A new password ends every session.
    open(b"one");
    open(b"two");
    let password = UserUpdate {
        password_hash: Some("y".into()),
        ..Default::default()
    };
    fx.run(fx.store.update_user(bob.id.clone(), password, 2000))
        .unwrap()
        .unwrap();
    assert!(find(b"one", 2000).is_none() && find(b"two", 2000).is_none());
    // So does disabling, and a session of a disabled user is not found.
    open(b"three");
    let disable = UserUpdate {
        disabled: Some(true),
        ..Default::default()
    };
    let u = fx
        .run(fx.store.update_user(bob.id.clone(), disable, 3000))
        .unwrap()
        .unwrap();
    assert!(u.disabled && u.updated == 3000);
    assert!(find(b"three", 3000).is_none());
    // An admin change alone keeps them.
    let enable = UserUpdate {
        disabled: Some(false),
        ..Default::default()
    };
    fx.run(fx.store.update_user(bob.id.clone(), enable, 3000))
        .unwrap()
        .unwrap();
    open(b"four");
    let promote = UserUpdate {
        is_admin: Some(true),
        ..Default::default()
    };
    fx.run(fx.store.update_user(bob.id.clone(), promote, 3000))
        .unwrap()
        .unwrap();
    assert!(find(b"four", 3000).is_some_and(|s| s.user.is_admin));
    assert!(matches!(
        fx.run(
            fx.store
                .update_user("nobody".into(), UserUpdate::default(), 0)
        )
        .unwrap(),
        Err(Refusal::NotFound(_))
    ));
}

/// Clients are listed oldest first, ties by id; a secret is rotated only for a confidential
/// client; a deleted client is gone with its devices.
#[test]
fn clients_listing_secrets_and_deletion() {
    let fx = Fx::new();
    let config = Config::default();
    let user = fx.user("alice", false);
    for id in ["b", "a", "c"] {
        fx.client(id, "");
    }
    let rs = fx.resource_server();
    let ids: Vec<String> = fx
        .run(fx.store.clients())
        .unwrap()
        .into_iter()
        .map(|c| c.client_id)
        .collect();
    assert_eq!(ids, ["a", "b", "c", "rs"]);
    // Secrets.
    assert!(matches!(
        fx.run(fx.store.set_client_secret("a".into(), vec![1; 32], 5))
            .unwrap(),
        Err(Refusal::Conflict(_))
    ));
    assert!(matches!(
        fx.run(fx.store.set_client_secret("zz".into(), vec![1; 32], 5))
            .unwrap(),
        Err(Refusal::NotFound(_))
    ));
    fx.run(
        fx.store
            .set_client_secret(rs.client_id.clone(), vec![7; 32], 5),
    )
    .unwrap()
    .unwrap();
    let stored = fx
        .run(fx.store.client(rs.client_id.clone()))
        .unwrap()
        .unwrap();
    assert_eq!((stored.secret_hash, stored.updated), (Some(vec![7; 32]), 5));
    // Deletion takes the client's devices.
    let s = start(&fx, &config, "a", "", 1000);
    let typed = s.user_code.as_str().to_string();
    let device = approve(&fx, &config, &typed, &user.id, false, 1000).unwrap();
    let deleted = fx
        .run(fx.store.delete_client("a".into(), Actor::default(), 2000))
        .unwrap()
        .unwrap();
    assert_eq!(deleted.client_id, "a");
    assert!(fx.run(fx.store.client("a".into())).unwrap().is_none());
    assert!(fx
        .run(fx.store.device(device.id.clone(), None))
        .unwrap()
        .is_none());
    assert!(matches!(
        fx.run(fx.store.delete_client("a".into(), Actor::default(), 2000))
            .unwrap(),
        Err(Refusal::NotFound(_))
    ));
    // An owned client whose owner does not exist is refused, naming the field.
    let owned = ClientSpec {
        name: "owned".into(),
        owner_user_id: Some("nobody".into()),
        ..Default::default()
    };
    match fx
        .run(fx.store.create_client(owned, "o".into(), None, 0))
        .unwrap()
    {
        Err(Refusal::Invalid { field, .. }) => assert_eq!(field, "owner_user_id"),
        other => panic!("{other:?}"),
    }
    let change = ClientChange {
        owner_user_id: Some(Some("nobody".into())),
        ..Default::default()
    };
    assert!(matches!(
        fx.run(fx.store.update_client("b".into(), change, 0))
            .unwrap(),
        Err(Refusal::Invalid {
            field: "owner_user_id",
            ..
        })
    ));
}

/// Devices as their owner and the admins see them: someone else's device is as missing as a
/// missing one (found, locked, updated or removed); locks are undone to what the device was;
/// a pending device cannot be locked; listings are newest first with their filters and totals.
#[test]
fn devices_are_managed_by_their_owner_or_an_admin() {
    let fx = Fx::new();
    let config = Config::default();
    let alice = fx.user("alice", false);
    let bob = fx.user("bob", false);
    fx.client("c1", "");
    fx.client("c2", "");
    let mut claimed = Vec::new();
    for (i, (client, user)) in [("c1", &alice), ("c2", &alice), ("c1", &bob)]
        .into_iter()
        .enumerate()
    {
        let now = 1000 * (i as i64 + 1);
        let s = start(&fx, &config, client, "", now);
        let typed = s.user_code.as_str().to_string();
        claimed.push(approve(&fx, &config, &typed, &user.id, i == 0, now).unwrap());
    }
    let pending = start(&fx, &config, "c2", "", 9000);
    let pending_id = pending.authorization.device_id.clone();
    let (a1, a2, b1) = (&claimed[0], &claimed[1], &claimed[2]);
    let device = |id: &str, owner: Option<&str>| {
        fx.run(fx.store.device(id.into(), owner.map(str::to_string)))
            .unwrap()
    };
    assert!(device(&a1.id, Some(&alice.id)).is_some());
    assert!(device(&a1.id, None).is_some());
    assert!(device(&a1.id, Some(&bob.id)).is_none());
    assert!(device("missing", None).is_none());

    // Locking: not someone else's; back to verified when it never held tokens.
    let lock = |id: &str, owner: Option<&str>, locked| {
        fx.run(fx.store.set_device_locked(
            id.into(),
            owner.map(str::to_string),
            locked,
            Actor::default(),
            20_000,
        ))
        .unwrap()
    };
    assert!(lock(&a1.id, Some(&bob.id), true).is_none());
    assert_eq!(device(&a1.id, None).unwrap().status, DeviceStatus::Verified);
    let locked = lock(&a1.id, Some(&alice.id), true).unwrap();
    assert_eq!(
        (locked.status, locked.updated),
        (DeviceStatus::Locked, 20_000)
    );
    assert_eq!(
        lock(&a1.id, None, false).unwrap().status,
        DeviceStatus::Verified
    );
    // A pending device is not locked by set_device_locked, and refused by an update.
    assert_eq!(
        lock(&pending_id, None, true).unwrap().status,
        DeviceStatus::Pending
    );
    let update = |u: DeviceUpdate| fx.run(fx.store.update_device(u)).unwrap();
    assert_eq!(
        update(DeviceUpdate {
            id: pending_id.clone(),
            locked: Some(true),
            ..Default::default()
        })
        .err(),
        Some(DeviceRefused::Pending)
    );
    // Updates: not someone else's; an empty name is none; lock in the same change.
    assert_eq!(
        update(DeviceUpdate {
            id: a2.id.clone(),
            owner: Some(bob.id.clone()),
            name: Some(Some("mine".into())),
            ..Default::default()
        })
        .err(),
        Some(DeviceRefused::NotFound)
    );
    let named = update(DeviceUpdate {
        id: a2.id.clone(),
        owner: Some(alice.id.clone()),
        name: Some(Some("laptop".into())),
        metadata: Some(r#"{"k":"v"}"#.into()),
        locked: Some(true),
        now: 30_000,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(named.name.as_deref(), Some("laptop"));
    assert_eq!(named.device_metadata, r#"{"k":"v"}"#);
    assert_eq!(
        (named.status, named.updated),
        (DeviceStatus::Locked, 30_000)
    );
    let unnamed = update(DeviceUpdate {
        id: a2.id.clone(),
        name: Some(Some(String::new())),
        now: 31_000,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(unnamed.name, None);
    assert_eq!(unnamed.device_metadata, r#"{"k":"v"}"#);

    // Listings: claimed devices only, newest first, filtered, with totals.
    let list = |filter: DeviceFilter, offset, limit| {
        let (devices, total) = fx.run(fx.store.devices(filter, offset, limit)).unwrap();
        (devices.into_iter().map(|d| d.id).collect::<Vec<_>>(), total)
    };
    assert_eq!(
        list(DeviceFilter::default(), 0, 10),
        (vec![b1.id.clone(), a2.id.clone(), a1.id.clone()], 3)
    );
    assert_eq!(
        list(DeviceFilter::default(), 1, 1),
        (vec![a2.id.clone()], 3)
    );
    assert_eq!(list(DeviceFilter::default(), 5, 1), (vec![], 3));
    let of = |user_id: Option<&str>, status, trusted, client: Option<&str>| DeviceFilter {
        user_id: user_id.map(str::to_string),
        status,
        trusted_device: trusted,
        client_id: client.map(str::to_string),
    };
    assert_eq!(
        list(of(Some(&alice.id), None, None, None), 0, 10),
        (vec![a2.id.clone(), a1.id.clone()], 2)
    );
    assert_eq!(
        list(of(None, Some(DeviceStatus::Locked), None, None), 0, 10),
        (vec![a2.id.clone()], 1)
    );
    assert_eq!(
        list(of(None, None, Some(true), None), 0, 10),
        (vec![a1.id.clone()], 1)
    );
    assert_eq!(
        list(of(Some(&alice.id), None, Some(false), Some("c1")), 0, 10),
        (vec![], 0)
    );
    assert_eq!(
        list(of(None, None, None, Some("c1")), 0, 10),
        (vec![b1.id.clone(), a1.id.clone()], 2)
    );
    let mine = fx.run(fx.store.devices_of(alice.id.clone())).unwrap();
    assert_eq!(
        mine.devices
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        [a2.id.as_str(), a1.id.as_str()]
    );
    assert_eq!(mine.client_names.len(), 2);
    assert_eq!(mine.client_names["c1"].as_deref(), Some("CLI"));

    // Removal: not someone else's; then gone.
    let remove = |id: &str, owner: Option<&str>| {
        fx.run(fx.store.remove_device(
            id.into(),
            owner.map(str::to_string),
            Actor::default(),
            40_000,
        ))
        .unwrap()
    };
    assert!(!remove(&b1.id, Some(&alice.id)));
    assert!(device(&b1.id, None).is_some());
    assert!(remove(&b1.id, Some(&bob.id)));
    assert!(!remove(&b1.id, None));
    assert!(device(&b1.id, None).is_none());
    // Deleting a user takes their devices.
    fx.run(fx.store.delete_user(alice.id.clone()))
        .unwrap()
        .unwrap();
    assert_eq!(list(DeviceFilter::default(), 0, 10), (vec![], 0));
    assert!(matches!(
        fx.run(fx.store.delete_user(alice.id.clone())).unwrap(),
        Err(Refusal::NotFound(_))
    ));
}
