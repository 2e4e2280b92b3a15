//! The life of tokens after the device flow (were `tokens.rs`'s unit tests).

use hallpass::app::polls::PollTracker;
use hallpass::clock;
use hallpass::config::Config;
use hallpass::domain::model::{Client, ClientCredentials, Grant, PollOutcome};
use hallpass::protocol::error::{ErrorCode, OAuthError};
use hallpass::protocol::scope::Scope;
use hallpass::secrets;

use super::{approve, introspect, poll, refresh, start, Fx};

/// A store with a user, a public client "c1" allowed `read write admin`, and a resource
/// server: (store, config, client, user id, the resource server's credentials).
fn setup() -> (Fx, Config, Client, String, ClientCredentials) {
    let fx = Fx::new();
    let user = fx.user("alice", false);
    let client = fx.client("c1", "read write admin");
    let rs = fx.resource_server();
    (fx, Config::default(), client, user.id, rs)
}

fn issued(fx: &Fx, config: &Config, user: &str) -> Grant {
    let s = start(fx, config, "c1", "read write", 0);
    approve(fx, config, s.user_code.as_str(), user, false, 0).unwrap();
    match poll(
        fx,
        config,
        &PollTracker::default(),
        &s.device_code.0,
        "c1",
        1,
    ) {
        PollOutcome::Issued(g) => g,
        other => panic!("{other:?}"),
    }
}

/// A rotation with no narrower scope and no address.
fn rotate(
    fx: &Fx,
    config: &Config,
    client: &Client,
    token: &str,
    now: i64,
) -> Result<Grant, OAuthError> {
    refresh(fx, config, token, client, None, now)
}

/// Whether introspection (no signing keys: refresh tokens only) calls `token` active.
fn active(fx: &Fx, rs: &ClientCredentials, token: &str, now: i64) -> bool {
    introspect(fx, rs, token, now)["active"] == true
}

#[test]
fn credentials_issued_before_ordered_tokens_still_work() {
    if crate::on_postgres() {
        return; // reaches into the SQLite file
    }
    // A database upgraded with live 52-character credentials stored under their plain
    // SHA-256: rewrite a fresh grant's rows that way (as an older hallpass wrote them), then
    // use them.
    let (fx, config, client, user, _) = setup();
    let g = issued(&fx, &config, &user);
    let old_refresh = secrets::new_token();
    fx.sql()
        .execute(
            "UPDATE refresh_tokens SET token_hash = ?1 WHERE token_hash = ?2",
            rusqlite::params![
                secrets::hash_token(&old_refresh),
                secrets::token_key(&g.refresh_token)
            ],
        )
        .unwrap();
    let r = rotate(&fx, &config, &client, &old_refresh, 10).unwrap();
    assert_eq!(r.refresh_token.len(), 61, "rotated into an ordered token");

    let s = start(&fx, &config, "c1", "read", 0);
    let old_code = secrets::new_token();
    fx.sql()
        .execute(
            "UPDATE device_authorizations SET device_code_hash = ?1 WHERE device_code_hash = ?2",
            rusqlite::params![secrets::hash_token(&old_code), s.device_code.key()],
        )
        .unwrap();
    let p = poll(&fx, &config, &PollTracker::default(), &old_code, "c1", 1);
    assert!(
        matches!(
            p,
            PollOutcome::Refused {
                error: ErrorCode::AuthorizationPending,
                ..
            }
        ),
        "{p:?}"
    );
}

#[test]
fn rotation_and_reuse_revokes_the_family() {
    if crate::on_postgres() {
        return; // reaches into the SQLite file
    }
    let (fx, config, client, user, _) = setup();
    let g = issued(&fx, &config, &user);
    let r1 = rotate(&fx, &config, &client, &g.refresh_token, 10).unwrap();
    assert_eq!(r1.scope, "read write");
    let narrowed = Scope::parse("read").unwrap();
    let r2 = refresh(
        &fx,
        &config,
        &r1.refresh_token,
        &client,
        Some(&narrowed),
        20,
    )
    .unwrap();
    assert_eq!(r2.scope, "read");
    // Reusing r1 (already rotated) revokes r2 too.
    let e = rotate(&fx, &config, &client, &r1.refresh_token, 30).unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidGrant);
    let e = rotate(&fx, &config, &client, &r2.refresh_token, 40).unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidGrant);
    // The audit record, read as another program would.
    let reuse: i64 = fx
        .sql()
        .query_row(
            "SELECT count(*) FROM audit_events WHERE action = 'refresh_token.reuse'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reuse, 1);
}

/// Reuse revokes its own family only: another device's tokens, of the same user and client,
/// keep working.
#[test]
fn reuse_revokes_no_other_family() {
    let (fx, config, client, user, _) = setup();
    let mine = issued(&fx, &config, &user);
    let other = issued(&fx, &config, &user);
    let r1 = rotate(&fx, &config, &client, &mine.refresh_token, 10).unwrap();
    rotate(&fx, &config, &client, &mine.refresh_token, 20).unwrap_err();
    let e = rotate(&fx, &config, &client, &r1.refresh_token, 30).unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidGrant, "{e:?}");
    let o = rotate(&fx, &config, &client, &other.refresh_token, 40).unwrap();
    assert_eq!(o.device_id, other.device_id);
}

/// A refresh token stored with the whole refresh lifetime still ends with its device: its
/// introspected `exp` is the device's expiry, and past it neither refresh nor introspection
/// accepts it.
#[test]
fn refresh_tokens_end_with_their_device() {
    let (fx, config, client, user, rs) = setup();
    assert!(config.untrusted_device_lifetime < config.refresh_token_lifetime);
    let g = issued(&fx, &config, &user);
    let device_expires = clock::ms(config.untrusted_device_lifetime);
    let info = introspect(&fx, &rs, &g.refresh_token, 10);
    assert_eq!(info["active"], true);
    assert_eq!(info["exp"], device_expires / 1000);
    assert!(!active(&fx, &rs, &g.refresh_token, device_expires));
    let e = rotate(&fx, &config, &client, &g.refresh_token, device_expires).unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidGrant);
}

#[test]
fn widening_scope_and_locked_devices_fail() {
    if crate::on_postgres() {
        return; // reaches into the SQLite file
    }
    let (fx, config, client, user, rs) = setup();
    let g = issued(&fx, &config, &user);
    let wider = Scope::parse("read write admin").unwrap();
    let e = refresh(&fx, &config, &g.refresh_token, &client, Some(&wider), 10).unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidScope);
    fx.sql()
        .execute("UPDATE devices SET status = 'locked'", [])
        .unwrap();
    let e = rotate(&fx, &config, &client, &g.refresh_token, 10).unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidGrant);
    assert!(!active(&fx, &rs, &g.refresh_token, 10));
}

#[test]
fn client_scope_changes_narrow_future_refreshes() {
    let (fx, config, mut client, user, rs) = setup();
    let g = issued(&fx, &config, &user);
    assert!(active(&fx, &rs, &g.refresh_token, 10));
    client.allowed_scopes = "read".into();
    let r = rotate(&fx, &config, &client, &g.refresh_token, 10).unwrap();
    assert_eq!(r.scope, "read");
}

// What several instances on one database must agree on (issue 22), and the token paths the
// device flow's tests do not reach. The grant is written with SQL (the same statements on both
// backends) so that these tests stand on the token methods alone.

/// A second store on `fx`'s database, as another instance (or process) opens it.
fn second_store(fx: &Fx) -> hallpass::store::Store {
    let mut config = Config {
        database_path: fx.path.clone(),
        ..Config::default()
    };
    if let Some(db) = &fx._pg {
        config.set_flag("database.url", &db.url()).unwrap();
    }
    fx.run(hallpass::store::Store::open(
        &config,
        hallpass::store::Purpose::Serve,
    ))
    .unwrap()
}

/// A user "u1", a public client "c1" (`read write`), its device "d1" approved by u1 and live
/// until far ahead, and one refresh token of it (`read write`): the client and the token.
fn seeded_grant(fx: &Fx) -> (Client, String) {
    let token = secrets::new_ordered_token();
    let hash = secrets::token_key(&token);
    let far = 4_000_000_000_000i64;
    let grants = seeded_client().allowed_grants.join(" ");
    let statements = [
        "INSERT INTO users (id, username, password_hash, is_admin, disabled, created, updated) \
         VALUES ('u1', 'alice', 'x', FALSE, FALSE, 0, 0)",
        "INSERT INTO oauth_clients (client_id, name, allowed_grants, allowed_scopes, created, \
         updated) VALUES ('c1', 'CLI', $1, 'read write', 0, 0)",
        "INSERT INTO devices (id, client_id, user_id, status, trusted_device, expires, created, \
         updated) VALUES ('d1', 'c1', 'u1', 'active', FALSE, $1, 0, 0)",
        "INSERT INTO refresh_tokens (token_hash, device_id, family, scope, created_at, \
         expires_at) VALUES ($1, 'd1', 'f1', 'read write', 0, $2)",
    ];
    match &fx._pg {
        Some(db) => {
            let (client, rt) = db.client();
            rt.block_on(async {
                client.execute(statements[0], &[]).await.unwrap();
                client.execute(statements[1], &[&grants]).await.unwrap();
                client.execute(statements[2], &[&far]).await.unwrap();
                client.execute(statements[3], &[&hash, &far]).await.unwrap();
            });
        }
        None => {
            let sql = fx.sql();
            let sqlite = |s: &str| s.replace('$', "?");
            sql.execute(&sqlite(statements[0]), []).unwrap();
            sql.execute(&sqlite(statements[1]), [&grants]).unwrap();
            sql.execute(&sqlite(statements[2]), [far]).unwrap();
            sql.execute(&sqlite(statements[3]), rusqlite::params![hash, far])
                .unwrap();
        }
    }
    (seeded_client(), token)
}

/// A refresh of `token` by the known `client` on `store` at `now`.
async fn refresh_on(
    store: &hallpass::store::Store,
    client: &Client,
    token: &str,
    now: i64,
) -> Result<Grant, OAuthError> {
    let r = hallpass::store::Refresh {
        auth: hallpass::store::ClientAuth {
            caller: hallpass::store::Caller::Known(std::sync::Arc::new(client.clone())),
            grant: hallpass::protocol::grant::REFRESH_TOKEN,
            sign_default: Some(hallpass::protocol::jwt::Algorithm::EdDSA),
        },
        token: token.into(),
        scope: None,
        target: crate::target(),
        ip_address: None,
        refresh_expires_at: now + 3_600_000,
        now,
    };
    store.refresh(r).await.unwrap().unwrap().grant
}

/// Simultaneous refreshes of one token, spread over two instances of one database: exactly
/// one rotates; every other is taken for reuse (RFC 9700 §4.14.2), so the family is revoked and
/// the winner's new token is dead too. Never two live tokens from one.
#[test]
fn simultaneous_refreshes_of_one_token_rotate_once() {
    for round in 0..3 {
        let fx = Fx::new();
        let other = second_store(&fx);
        let (client, token) = seeded_grant(&fx);
        let results = fx.run(futures_util::future::join_all((0..8).map(|i| {
            let store = if i % 2 == 0 { &fx.store } else { &other };
            refresh_on(store, &client, &token, 10)
        })));
        let won: Vec<&Grant> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(e.error, ErrorCode::InvalidGrant, "{e:?}");
        }
        let again = fx.run(refresh_on(&fx.store, &client, &won[0].refresh_token, 20));
        assert_eq!(
            again.unwrap_err().error,
            ErrorCode::InvalidGrant,
            "round {round}: the losers' reuse revoked the winner's new token"
        );
    }
}

/// The client [`seeded_grant`] writes, as the store answers it.
fn seeded_client() -> Client {
    Client {
        client_id: "c1".into(),
        name: "CLI".into(),
        secret_hash: None,
        allowed_grants: vec![
            hallpass::protocol::grant::DEVICE_CODE.into(),
            hallpass::protocol::grant::REFRESH_TOKEN.into(),
        ],
        allowed_scopes: "read write".into(),
        owner_user_id: None,
        signing_algorithm: None,
        audience: None,
        allowed_resources: Vec::new(),
        created: 0,
        updated: 0,
    }
}

/// Two instances starting together on an empty database, each asking twice at once for the
/// RS256 key (the slowest to make), make one key and all sign with it.
#[test]
fn simultaneous_first_keys_on_two_instances_make_one() {
    use hallpass::protocol::jwt::Algorithm;
    use hallpass::sealing::Sealer;
    let fx = Fx::new();
    let other = second_store(&fx);
    let sealer = std::sync::Arc::new(Sealer::none());
    let kids = fx.run(futures_util::future::join_all((0..4).map(|i| {
        let store = if i % 2 == 0 { &fx.store } else { &other };
        store.signing_key(sealer.clone(), Algorithm::RS256, None, 1000)
    })));
    let kids: std::collections::BTreeSet<String> = kids
        .into_iter()
        .map(|k| k.unwrap().expect("a key").kid)
        .collect();
    assert_eq!(kids.len(), 1, "{kids:?}");
    let listed = fx.run(other.keys()).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    // The kid the caller holds is current: nothing to load.
    let kid = kids.into_iter().next().unwrap();
    let again = fx.run(
        fx.store
            .signing_key(sealer, Algorithm::RS256, Some(kid), 2000),
    );
    assert!(again.unwrap().is_none());
}

/// A key's life through the store: imported on standby (published, not signing), activated
/// (the old one retired, still published within the grace), rotated, revoked; a store that
/// cannot open the keys refuses before making one.
#[test]
fn key_life_through_the_store() {
    use hallpass::domain::model::{Activation, Imported};
    use hallpass::protocol::jwt::{Algorithm, SigningKey};
    use hallpass::sealing::Sealer;
    use std::sync::Arc;
    let fx = Fx::new();
    let s = &fx.store;
    let none = Arc::new(Sealer::none());
    let first = fx
        .run(s.signing_key(none.clone(), Algorithm::EdDSA, None, 1000))
        .unwrap()
        .unwrap();
    let (key, pkcs8) = SigningKey::generate(Algorithm::EdDSA);
    let key = Arc::new(key);
    let import = |standby, now| {
        fx.run(s.import_key(none.clone(), key.clone(), pkcs8.clone(), standby, now))
            .unwrap()
    };
    assert_eq!(import(true, 2000), Imported::Standby);
    assert_eq!(import(false, 2000), Imported::Duplicate);
    let published = |now| -> Vec<String> {
        fx.run(s.published_keys(now, 1000))
            .unwrap()
            .into_iter()
            .map(|k| k.kid)
            .collect()
    };
    assert_eq!(published(3000), [first.kid.clone(), key.kid.clone()]);
    let active = fx
        .run(s.active_key(none.clone(), Algorithm::EdDSA))
        .unwrap();
    assert_eq!(active.unwrap().kid, first.kid);
    assert_eq!(
        fx.run(s.activate_key(key.kid.clone(), 4000)).unwrap(),
        Activation::Activated {
            algorithm: "EdDSA".into(),
            retired: Some(first.kid.clone())
        }
    );
    assert_eq!(published(4500), [key.kid.clone(), first.kid.clone()]);
    assert_eq!(published(5001), std::slice::from_ref(&key.kid));
    assert_eq!(
        fx.run(s.activate_key(key.kid.clone(), 6000)).unwrap(),
        Activation::AlreadyActive
    );
    assert_eq!(
        fx.run(s.activate_key(first.kid.clone(), 6000)).unwrap(),
        Activation::Retired
    );
    assert_eq!(
        fx.run(s.activate_key("nope".into(), 6000)).unwrap(),
        Activation::NotFound
    );
    // Rotation: the default's key first, made new; every algorithm in use rotated.
    fx.run(s.signing_key(none.clone(), Algorithm::ES256, None, 7000))
        .unwrap()
        .unwrap();
    let rotated = fx
        .run(s.rotate_keys(none.clone(), None, Algorithm::EdDSA, 8000))
        .unwrap();
    let algs: Vec<Algorithm> = rotated.iter().map(|k| k.algorithm).collect();
    assert_eq!(algs, [Algorithm::EdDSA, Algorithm::ES256]);
    let listed = fx.run(s.keys()).unwrap();
    assert_eq!(listed.len(), 5);
    assert_eq!(listed.iter().filter(|k| k.retired.is_none()).count(), 2);
    assert!(listed.iter().all(|k| !k.sealed));
    assert_eq!(fx.run(s.check_sealing(none.clone())).unwrap(), 5);
    // Sealing every key with a secret; then a store without it refuses to make one.
    let sealer = Arc::new(Sealer::from_text(&"k".repeat(64)).unwrap());
    let done = fx.run(s.reseal_keys(sealer.clone())).unwrap();
    assert_eq!(done.resealed.len(), 5);
    assert!(fx.run(s.keys()).unwrap().iter().all(|k| k.sealed));
    assert_eq!(fx.run(s.check_sealing(sealer.clone())).unwrap(), 0);
    assert!(fx.run(s.check_sealing(none.clone())).is_err());
    assert!(fx
        .run(s.signing_key(none.clone(), Algorithm::RS256, None, 9000))
        .is_err());
    // Revoked: gone at once.
    assert!(fx.run(s.revoke_key(key.kid.clone())).unwrap());
    assert!(!fx.run(s.revoke_key(key.kid.clone())).unwrap());
    assert!(!published(9000).contains(&key.kid));
}

/// An access token and a refresh token of a device, revoked (RFC 7009) through the store:
/// introspection (RFC 7662) and the management API's bearer check see each go inactive; a
/// client cannot revoke another client's token.
#[test]
fn revocation_reaches_introspection_and_bearer() {
    use hallpass::protocol::jwt::{AccessClaims, Algorithm, Audience, Verified};
    use hallpass::store::Revocation;
    use std::sync::Arc;
    let fx = Fx::new();
    let (client, refresh_token) = seeded_grant(&fx);
    let rs = fx.resource_server();
    let key = fx
        .run(fx.store.signing_key(
            Arc::new(hallpass::sealing::Sealer::none()),
            Algorithm::EdDSA,
            None,
            0,
        ))
        .unwrap()
        .unwrap();
    let now = 1_000_000;
    let access = key.sign(&AccessClaims {
        iss: "https://issuer.example".into(),
        sub: "u1".into(),
        aud: Audience::one("https://issuer.example"),
        client_id: client.client_id.clone(),
        scope: "read".into(),
        iat: now / 1000,
        exp: now / 1000 + 600,
        jti: "jti-1".into(),
        device_id: Some("d1".into()),
    });
    let bearer = |token: &str| {
        fx.run(
            fx.store
                .bearer(token.into(), Arc::new(Verified::new()), 600_000, now),
        )
        .unwrap()
    };
    let revoke = |token: &str, hint: Option<&str>, client_id: &str| {
        fx.run(fx.store.revoke(Revocation {
            token: token.into(),
            hint: hint.map(str::to_string),
            client_id: client_id.into(),
            now,
            grace_ms: 600_000,
        }))
        .unwrap()
    };
    let info = introspect(&fx, &rs, &access, now);
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["username"], "alice", "{info}");
    assert_eq!(bearer(&access).unwrap().1.unwrap().id, "u1");
    assert!(active(&fx, &rs, &refresh_token, now));
    // Another client's revocation changes nothing.
    revoke(&access, Some("access_token"), "rs");
    revoke(&refresh_token, None, "rs");
    assert!(active(&fx, &rs, &access, now));
    assert!(active(&fx, &rs, &refresh_token, now));
    // The access token alone: the refresh token lives on.
    revoke(&access, None, "c1");
    assert!(!active(&fx, &rs, &access, now));
    assert!(bearer(&access).is_none());
    assert!(active(&fx, &rs, &refresh_token, now));
    // The refresh token: its family, and every access token of the grant (RFC 7009 §2.1).
    let second = key.sign(&AccessClaims {
        jti: "jti-2".into(),
        ..verify_claims(&access, &key)
    });
    assert!(active(&fx, &rs, &second, now));
    revoke(&refresh_token, Some("refresh_token"), "c1");
    assert!(!active(&fx, &rs, &refresh_token, now));
    assert!(!active(&fx, &rs, &second, now));
    assert!(bearer(&second).is_none());
    let e = rotate(&fx, &Config::default(), &client, &refresh_token, now).unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidGrant);
}

/// The claims of `token`, signed by `key`.
fn verify_claims(
    token: &str,
    key: &hallpass::protocol::jwt::SigningKey,
) -> hallpass::protocol::jwt::AccessClaims {
    hallpass::protocol::jwt::verify(token, &[key.public()]).unwrap()
}
