//! The life of tokens after the device flow: refresh rotation with reuse detection (RFC 6749
//! §6, RFC 9700 §4.14), revocation (RFC 7009), introspection (RFC 7662), and the one rule that
//! decides whether a device may still hold tokens. Each entry point is one transaction.

use rusqlite::Connection;

use crate::clock;
use crate::config::Config;
use crate::db::refresh_tokens::{self, NewRefreshToken};
use crate::db::{self, audit, clients, devices, users, DbError};
use crate::domain::model::{Client, Device, Grant, Target, User};
use crate::domain::rules::{self, current_scope, effective_scope};
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::jwt::{self, PublicKey};
use crate::protocol::scope::Scope;
use crate::secrets;

/// [`rules::device_holder`] with the user read from `conn`.
pub fn device_holder(
    conn: &Connection,
    device: &Device,
    now: i64,
) -> Result<Option<User>, DbError> {
    rules::device_holder(device, now, |id| users::find_by_id(conn, id))
}

fn refused(
    code: ErrorCode,
    description: &'static str,
) -> Result<Result<Grant, OAuthError>, DbError> {
    Ok(Err(OAuthError::new(code, description)))
}

/// Exchanges a refresh token for a new one and returns the grant to mint an access token for.
///
/// Rotation: the presented token is marked used and a new one of the same family issued. A
/// used token presented again means two parties hold it, so the whole family is revoked, the
/// attempt is recorded, and the answer is `invalid_grant` (RFC 9700 §4.14.2).
///
/// The access token is for the grant's resources, or those of them the request's `resource`
/// names (`target`, RFC 8707 §2.2); the new refresh token keeps the grant's, which live on its
/// device. A resource outside them is `invalid_target`, before the token is used.
#[allow(clippy::too_many_arguments)]
pub fn refresh(
    conn: &mut Connection,
    config: &Config,
    token: &str,
    client: &Client,
    asked: Option<&Scope>,
    target: Target<'_>,
    ip_address: Option<&str>,
    now: i64,
) -> Result<Result<Grant, OAuthError>, DbError> {
    let tx = db::write_tx(conn)?;
    let hash = secrets::token_key(token);
    let Some(stored) = refresh_tokens::find(&tx, &hash)? else {
        return refused(ErrorCode::InvalidGrant, "unknown refresh token");
    };
    let Some(device) = devices::find(&tx, &stored.device_id)? else {
        return refused(ErrorCode::InvalidGrant, "unknown refresh token");
    };
    if device.client_id != client.client_id {
        return refused(
            ErrorCode::InvalidGrant,
            "the refresh token was issued to another client",
        );
    }
    if stored.revoked_at.is_some() {
        return refused(ErrorCode::InvalidGrant, "the refresh token was revoked");
    }
    if stored.used_at.is_some() {
        let revoked = refresh_tokens::revoke_family(&tx, &stored.device_id, &stored.family, now)?;
        audit::record(
            &tx,
            now,
            device.user_id.as_deref(),
            "refresh_token.reuse",
            &device.id,
            ip_address,
            &serde_json::json!({ "family": stored.family, "revoked": revoked }),
        )?;
        tx.commit()?;
        tracing::warn!(device_id = %device.id, "refresh token reused: family revoked");
        return refused(
            ErrorCode::InvalidGrant,
            "the refresh token was already used; every token of this sign-in is now revoked",
        );
    }
    if stored.expires_at <= now {
        return refused(ErrorCode::InvalidGrant, "the refresh token has expired");
    }
    let Some(user) = device_holder(&tx, &device, now)? else {
        return refused(
            ErrorCode::InvalidGrant,
            "the device is locked, removed or expired, or its user is disabled",
        );
    };
    let original = Scope::parse(&stored.scope).unwrap_or_default();
    let asked = match asked {
        Some(a) if !a.is_subset(&original) => {
            // RFC 6749 §6: the new scope must not include any scope not originally granted.
            return refused(
                ErrorCode::InvalidScope,
                "scope exceeds the one originally granted",
            );
        }
        Some(a) => a.clone(),
        None => original.clone(),
    };
    let scope = effective_scope(&asked, &client.allowed_scopes, user.is_admin).to_string();
    // RFC 6749 §6: a narrower `scope` parameter narrows only this access token; the new
    // refresh token keeps the grant's scope, less only what the client or the user may no
    // longer have.
    let kept = effective_scope(&original, &client.allowed_scopes, user.is_admin).to_string();
    let audience = match client
        .allowed(target.server_default)
        .audience(target.asked, device.resource.as_deref())
    {
        Ok(aud) => aud,
        Err(e) => return Ok(Err(OAuthError::new(ErrorCode::InvalidTarget, e))),
    };
    if !refresh_tokens::mark_used(&tx, &hash, now)? {
        return refused(
            ErrorCode::InvalidGrant,
            "the refresh token was already used",
        );
    }
    let new_token = secrets::new_ordered_token();
    refresh_tokens::insert(
        &tx,
        &NewRefreshToken {
            token_hash: &secrets::token_key(&new_token),
            device_id: &device.id,
            family: &stored.family,
            scope: &kept,
            created_at: now,
            expires_at: now + clock::ms(config.refresh_token_lifetime),
        },
    )?;
    devices::mark_active(&tx, &device.id, now)?;
    tx.commit()?;
    Ok(Ok(Grant {
        user_id: user.id,
        device_id: device.id,
        scope,
        audience,
        refresh_token: new_token,
    }))
}

/// The client a refresh token was issued to, if the token is known (whatever its state), for
/// a public client that refreshes without `client_id` (RFC 6749 §6).
pub fn refresh_token_client(conn: &Connection, token: &str) -> Result<Option<String>, DbError> {
    let Some(stored) = refresh_tokens::find(conn, &secrets::token_key(token))? else {
        return Ok(None);
    };
    Ok(devices::find(conn, &stored.device_id)?.map(|d| d.client_id))
}

/// RFC 7009 §2.1: revokes a refresh token (its whole family) or an access token (by `jti`)
/// issued to `client_id`. Unknown tokens, and tokens of other clients, are ignored: the answer
/// is the same 200 either way, so revocation reveals nothing.
pub fn revoke(
    conn: &mut Connection,
    token: &str,
    hint: Option<&str>,
    client_id: &str,
    keys: &[PublicKey],
    now: i64,
) -> Result<(), DbError> {
    let tx = db::write_tx(conn)?;
    let try_refresh_first = hint != Some("access_token");
    for attempt in 0..2 {
        let as_refresh = (attempt == 0) == try_refresh_first;
        if as_refresh {
            if let Some(stored) = refresh_tokens::find(&tx, &secrets::token_key(token))? {
                let owner = devices::find(&tx, &stored.device_id)?;
                if let Some(device) = owner.filter(|d| d.client_id == client_id) {
                    let n =
                        refresh_tokens::revoke_family(&tx, &stored.device_id, &stored.family, now)?;
                    audit::record(
                        &tx,
                        now,
                        device.user_id.as_deref(),
                        "refresh_token.revoke",
                        &device.id,
                        None,
                        &serde_json::json!({ "family": stored.family, "revoked": n }),
                    )?;
                }
                break;
            }
        } else if let Some(claims) = jwt::verify(token, keys) {
            if claims.client_id == client_id && claims.exp * 1000 > now {
                refresh_tokens::revoke_access_token(&tx, &claims.jti, claims.exp * 1000)?;
            }
            break;
        }
    }
    tx.commit()?;
    Ok(())
}

/// RFC 7662 §2.2: the introspection response for `token`. Anything not currently valid is
/// `{"active": false}` and nothing more. The scope reported is [`current_scope`].
/// `verified` spares a token seen before its signature check (see [`jwt::Verified`]).
pub fn introspect(
    conn: &Connection,
    token: &str,
    keys: &[PublicKey],
    verified: &jwt::Verified,
    now: i64,
) -> Result<serde_json::Value, DbError> {
    let inactive = serde_json::json!({ "active": false });
    if let Some(claims) = verified.verify(token, keys) {
        if claims.exp * 1000 <= now || refresh_tokens::is_access_token_revoked(conn, &claims.jti)? {
            return Ok(inactive);
        }
        let user = match &claims.device_id {
            Some(device_id) => {
                let Some(device) = devices::find(conn, device_id)? else {
                    return Ok(inactive);
                };
                let Some(user) = device_holder(conn, &device, now)? else {
                    return Ok(inactive);
                };
                if refresh_tokens::grant_revoked(conn, device_id)? {
                    return Ok(inactive);
                }
                Some(user)
            }
            // client_credentials: valid while the client exists.
            None => {
                if clients::find(conn, &claims.client_id)?.is_none() {
                    return Ok(inactive);
                }
                None
            }
        };
        let mut out = serde_json::json!({
            "active": true,
            "token_type": "Bearer",
            "scope": current_scope(&claims.scope, user.as_ref()),
            "client_id": claims.client_id,
            "sub": claims.sub,
            "iss": claims.iss,
            "iat": claims.iat,
            "exp": claims.exp,
            "jti": claims.jti,
        });
        if let Some(u) = user {
            out["username"] = u.username.into();
        }
        if let Some(d) = claims.device_id {
            out["device_id"] = d.into();
        }
        // RFC 7662 §2.2: the audience, as the token carries it (a string or an array).
        if !claims.aud.is_empty() {
            out["aud"] = claims.aud.to_json();
        }
        return Ok(out);
    }
    let Some(stored) = refresh_tokens::find(conn, &secrets::token_key(token))? else {
        return Ok(inactive);
    };
    if stored.used_at.is_some() || stored.revoked_at.is_some() || stored.expires_at <= now {
        return Ok(inactive);
    }
    let Some(device) = devices::find(conn, &stored.device_id)? else {
        return Ok(inactive);
    };
    let Some(user) = device_holder(conn, &device, now)? else {
        return Ok(inactive);
    };
    // No `token_type`: RFC 7662 §2.2 defines it as the "Type of the token as defined in
    // Section 5.1 of OAuth 2.0", where token_type is the access token's type (RFC 6749 §7.1,
    // e.g. "Bearer": how to present it to a resource server). A refresh token is presented to
    // no resource server and has no such type; the member is OPTIONAL, so it is left out
    // rather than given a value outside that registry ("refresh_token" is a token type *hint*,
    // RFC 7009 §2.1, another registry). Nor an `aud`: the resources a refresh token's access
    // tokens are for are not its audience; it is used only at this server's token endpoint.
    Ok(serde_json::json!({
        "active": true,
        "scope": current_scope(&stored.scope, Some(&user)),
        "client_id": device.client_id,
        "sub": user.id,
        "username": user.username,
        "iat": stored.created_at / 1000,
        "exp": stored.expires_at.min(device.expires) / 1000,
        "device_id": device.id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{DeviceFacts, PollOutcome};
    use crate::flow;

    const TARGET: Target<'static> = Target {
        asked: None,
        server_default: "https://issuer.example",
    };

    fn setup() -> (Connection, Config, Client, String) {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        db::migrate::migrate(&mut conn, std::path::Path::new(":memory:")).unwrap();
        let user = users::insert(&conn, "alice", "x", false, 0).unwrap();
        let client = Client::public_for_tests("c1", "read write admin");
        clients::insert(&conn, &client).unwrap();
        (conn, Config::default(), client, user.id)
    }

    fn issued(conn: &mut Connection, config: &Config, user: &str) -> Grant {
        let s = flow::start(conn, config, "c1", "read write", &DeviceFacts::default(), 0).unwrap();
        flow::approve(conn, config, s.user_code.as_str(), user, false, None, 0)
            .unwrap()
            .unwrap();
        match flow::poll(
            conn,
            config,
            &Default::default(),
            &s.device_code.0,
            "c1",
            TARGET,
            1,
        )
        .unwrap()
        {
            PollOutcome::Issued(g) => g,
            other => panic!("{other:?}"),
        }
    }

    /// A rotation with no narrower scope and no address: the outer `Result` unwrapped.
    fn rotate(
        conn: &mut Connection,
        config: &Config,
        client: &Client,
        token: &str,
        now: i64,
    ) -> Result<Grant, OAuthError> {
        refresh(conn, config, token, client, None, TARGET, None, now).unwrap()
    }

    /// Whether introspection (no signing keys: refresh tokens only) calls `token` active.
    fn active(conn: &Connection, token: &str, now: i64) -> bool {
        introspect(conn, token, &[], &jwt::Verified::new(), now).unwrap()["active"] == true
    }

    #[test]
    fn credentials_issued_before_ordered_tokens_still_work() {
        // A database upgraded with live 52-character credentials stored under their plain
        // SHA-256: rewrite a fresh grant's rows that way, then use them.
        let (mut conn, config, client, user) = setup();
        let g = issued(&mut conn, &config, &user);
        let old_refresh = secrets::new_token();
        conn.execute(
            "UPDATE refresh_tokens SET token_hash = ?1 WHERE token_hash = ?2",
            rusqlite::params![
                secrets::hash_token(&old_refresh),
                secrets::token_key(&g.refresh_token)
            ],
        )
        .unwrap();
        let r = rotate(&mut conn, &config, &client, &old_refresh, 10).unwrap();
        assert_eq!(r.refresh_token.len(), 61, "rotated into an ordered token");

        let s = flow::start(&mut conn, &config, "c1", "read", &DeviceFacts::default(), 0).unwrap();
        let old_code = secrets::new_token();
        conn.execute(
            "UPDATE device_authorizations SET device_code_hash = ?1 WHERE device_code_hash = ?2",
            rusqlite::params![secrets::hash_token(&old_code), s.device_code.key()],
        )
        .unwrap();
        let p = flow::poll(
            &mut conn,
            &config,
            &Default::default(),
            &old_code,
            "c1",
            TARGET,
            1,
        )
        .unwrap();
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
        let (mut conn, config, client, user) = setup();
        let g = issued(&mut conn, &config, &user);
        let r1 = rotate(&mut conn, &config, &client, &g.refresh_token, 10).unwrap();
        assert_eq!(r1.scope, "read write");
        let narrowed = Scope::parse("read").unwrap();
        let r2 = refresh(
            &mut conn,
            &config,
            &r1.refresh_token,
            &client,
            Some(&narrowed),
            TARGET,
            None,
            20,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r2.scope, "read");
        // Reusing r1 (already rotated) revokes r2 too.
        let e = rotate(&mut conn, &config, &client, &r1.refresh_token, 30).unwrap_err();
        assert_eq!(e.error, ErrorCode::InvalidGrant);
        let e = rotate(&mut conn, &config, &client, &r2.refresh_token, 40).unwrap_err();
        assert_eq!(e.error, ErrorCode::InvalidGrant);
        let reuse: i64 = conn
            .query_row(
                "SELECT count(*) FROM audit_events WHERE action = 'refresh_token.reuse'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(reuse, 1);
    }

    /// Reuse revokes its own family only: another device's tokens, of the same user and
    /// client, keep working.
    #[test]
    fn reuse_revokes_no_other_family() {
        let (mut conn, config, client, user) = setup();
        let mine = issued(&mut conn, &config, &user);
        let other = issued(&mut conn, &config, &user);
        let r1 = rotate(&mut conn, &config, &client, &mine.refresh_token, 10).unwrap();
        rotate(&mut conn, &config, &client, &mine.refresh_token, 20).unwrap_err();
        let e = rotate(&mut conn, &config, &client, &r1.refresh_token, 30).unwrap_err();
        assert_eq!(e.error, ErrorCode::InvalidGrant, "{e:?}");
        let o = rotate(&mut conn, &config, &client, &other.refresh_token, 40).unwrap();
        assert_eq!(o.device_id, other.device_id);
    }

    /// A refresh token stored with the whole refresh lifetime still ends with its device: its
    /// introspected `exp` is the device's expiry, and past it neither refresh nor introspection
    /// accepts it.
    #[test]
    fn refresh_tokens_end_with_their_device() {
        let (mut conn, config, client, user) = setup();
        assert!(config.untrusted_device_lifetime < config.refresh_token_lifetime);
        let g = issued(&mut conn, &config, &user);
        let device_expires = clock::ms(config.untrusted_device_lifetime);
        let info = introspect(&conn, &g.refresh_token, &[], &jwt::Verified::new(), 10).unwrap();
        assert_eq!(info["active"], true);
        assert_eq!(info["exp"], device_expires / 1000);
        assert!(!active(&conn, &g.refresh_token, device_expires));
        let e = rotate(
            &mut conn,
            &config,
            &client,
            &g.refresh_token,
            device_expires,
        )
        .unwrap_err();
        assert_eq!(e.error, ErrorCode::InvalidGrant);
    }

    #[test]
    fn widening_scope_and_locked_devices_fail() {
        let (mut conn, config, client, user) = setup();
        let g = issued(&mut conn, &config, &user);
        let wider = Scope::parse("read write admin").unwrap();
        let e = refresh(
            &mut conn,
            &config,
            &g.refresh_token,
            &client,
            Some(&wider),
            TARGET,
            None,
            10,
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(e.error, ErrorCode::InvalidScope);
        conn.execute("UPDATE devices SET status = 'locked'", [])
            .unwrap();
        let e = rotate(&mut conn, &config, &client, &g.refresh_token, 10).unwrap_err();
        assert_eq!(e.error, ErrorCode::InvalidGrant);
        assert!(!active(&conn, &g.refresh_token, 10));
    }

    #[test]
    fn client_scope_changes_narrow_future_refreshes() {
        let (mut conn, config, mut client, user) = setup();
        let g = issued(&mut conn, &config, &user);
        assert!(active(&conn, &g.refresh_token, 10));
        client.allowed_scopes = "read".into();
        let r = rotate(&mut conn, &config, &client, &g.refresh_token, 10).unwrap();
        assert_eq!(r.scope, "read");
    }
}
