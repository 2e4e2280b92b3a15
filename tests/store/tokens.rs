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
