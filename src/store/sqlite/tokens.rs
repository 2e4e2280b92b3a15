//! The life of tokens after the device flow, on SQLite: refresh rotation with reuse detection
//! (RFC 6749 §6, RFC 9700 §4.14), revocation (RFC 7009), introspection (RFC 7662) and the
//! management API's bearer check. Each entry point is one transaction; who may still hold
//! tokens is [`rules::device_holder`].

use rusqlite::Connection;

use super::db::refresh_tokens::{self, NewRefreshToken};
use super::db::{self, audit, clients, devices, users, DbError};
use crate::domain::model::{Client, Device, Grant, User};
use crate::domain::rules::{self, effective_scope};
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::jwt::{self, PublicKey, Verified};
use crate::protocol::scope::Scope;
use crate::secrets;
use crate::store::{Bearer, Introspection, Refresh, Revocation};

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
pub fn refresh(
    conn: &mut Connection,
    r: &Refresh,
    client: &Client,
) -> Result<Result<Grant, OAuthError>, DbError> {
    let (token, now, ip_address) = (r.token.as_str(), r.now, r.ip_address.as_deref());
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
    let asked = match &r.scope {
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
    let audience = match rules::audience(client, &r.target, device.resource.as_deref()) {
        Ok(aud) => aud,
        Err(e) => return Ok(Err(e)),
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
            expires_at: r.refresh_expires_at,
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
pub fn revoke(conn: &mut Connection, r: &Revocation, keys: &[PublicKey]) -> Result<(), DbError> {
    let (token, client_id, now) = (r.token.as_str(), r.client_id.as_str(), r.now);
    let tx = db::write_tx(conn)?;
    let try_refresh_first = r.hint.as_deref() != Some("access_token");
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

/// RFC 7662 §2.2: what `token` is now. Anything not currently valid is
/// [`Introspection::Inactive`]. `verified` spares a token seen before its signature check
/// (see [`jwt::Verified`]).
pub fn introspect(
    conn: &Connection,
    token: &str,
    keys: &[PublicKey],
    verified: &Verified,
    now: i64,
) -> Result<Introspection, DbError> {
    if let Some(claims) = verified.verify(token, keys) {
        if claims.exp * 1000 <= now || refresh_tokens::is_access_token_revoked(conn, &claims.jti)? {
            return Ok(Introspection::Inactive);
        }
        let user = match &claims.device_id {
            Some(device_id) => {
                let Some(device) = devices::find(conn, device_id)? else {
                    return Ok(Introspection::Inactive);
                };
                let Some(user) = device_holder(conn, &device, now)? else {
                    return Ok(Introspection::Inactive);
                };
                if refresh_tokens::grant_revoked(conn, device_id)? {
                    return Ok(Introspection::Inactive);
                }
                Some(user)
            }
            // client_credentials: valid while the client exists.
            None => {
                if clients::find(conn, &claims.client_id)?.is_none() {
                    return Ok(Introspection::Inactive);
                }
                None
            }
        };
        return Ok(Introspection::Access { claims, user });
    }
    let Some(stored) = refresh_tokens::find(conn, &secrets::token_key(token))? else {
        return Ok(Introspection::Inactive);
    };
    if stored.used_at.is_some() || stored.revoked_at.is_some() || stored.expires_at <= now {
        return Ok(Introspection::Inactive);
    }
    let Some(device) = devices::find(conn, &stored.device_id)? else {
        return Ok(Introspection::Inactive);
    };
    let Some(user) = device_holder(conn, &device, now)? else {
        return Ok(Introspection::Inactive);
    };
    Ok(Introspection::Refresh {
        token: stored,
        device,
        user,
    })
}

/// A bearer access token for the management API, if it is live: signed by one of `keys`, not
/// expired or revoked, and (for a device's token) its grant not revoked and its device's holder
/// still allowed. A client's own token acts for no user.
pub fn bearer(
    conn: &Connection,
    token: &str,
    keys: &[PublicKey],
    verified: &Verified,
    now: i64,
) -> Result<Option<Bearer>, DbError> {
    let Some(claims) = verified.verify(token, keys) else {
        return Ok(None);
    };
    if claims.exp * 1000 <= now || refresh_tokens::is_access_token_revoked(conn, &claims.jti)? {
        return Ok(None);
    }
    let user = match &claims.device_id {
        Some(device_id) => {
            let Some(device) = devices::find(conn, device_id)? else {
                return Ok(None);
            };
            if refresh_tokens::grant_revoked(conn, device_id)? {
                return Ok(None);
            }
            match device_holder(conn, &device, now)? {
                Some(u) => Some(u),
                None => return Ok(None),
            }
        }
        None => None,
    };
    Ok(Some((claims, user)))
}
