//! The pure decisions of the product, shared by every storage backend and every front end:
//! which client is authenticated, who may still hold tokens, which scope and audience a grant
//! gets and which scope a token reports now, what a typed code's problem is. A backend reads
//! the rows, inside the transaction that acts on them; these functions decide, so every
//! backend decides alike.

use crate::domain::model::{
    Client, ClientCredentials, CodeProblem, Device, DeviceAuthorization, DeviceStatus, Target, User,
};
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::poll::PollState;
use crate::protocol::scope::{self, Scope};

/// The rule checked at exchange, at every refresh and at every introspection — not only at
/// approval: the device is approved (not pending), not locked, not expired, and its user exists
/// and is not disabled. Returns the user when all hold; `find_user` reads a user by id, and is
/// called only when the device itself passes.
pub fn device_holder<E>(
    device: &Device,
    now: i64,
    find_user: impl FnOnce(&str) -> Result<Option<User>, E>,
) -> Result<Option<User>, E> {
    if matches!(device.status, DeviceStatus::Pending | DeviceStatus::Locked)
        || device.expires <= now
    {
        return Ok(None);
    }
    let Some(user_id) = &device.user_id else {
        return Ok(None);
    };
    Ok(find_user(user_id)?.filter(|u| !u.disabled))
}

/// The scope actually granted: what was asked, within what the client may have now (changing a
/// client's scopes affects future grants and refreshes), and `admin` only for an admin.
pub fn effective_scope(asked: &Scope, client_allowed: &str, user_is_admin: bool) -> Scope {
    let allowed = Scope::parse(client_allowed).unwrap_or_default();
    let granted = asked.intersect(&allowed);
    if user_is_admin {
        granted
    } else {
        granted.without(scope::ADMIN)
    }
}

/// The scope a token reports now: what it was granted, less `admin` once its user is no admin
/// (issue 18 §5: a demotion takes effect at once, as at the management API), and less both
/// reserved scopes for a client's own token, which acts for no person.
pub fn current_scope(granted: &str, user: Option<&User>) -> String {
    let scope = Scope::parse(granted).unwrap_or_default();
    match user {
        Some(u) if u.is_admin => return granted.to_string(),
        Some(_) => scope.without(scope::ADMIN),
        None => scope.without(scope::ADMIN).without(scope::DEVICES),
    }
    .to_string()
}

/// The client that `creds` name, if `found` (read by that id) is it: secrets compared in
/// constant time, as hashes (RFC 6749 §2.3.1).
pub fn authenticate(
    found: Option<Client>,
    creds: &ClientCredentials,
) -> Result<Client, OAuthError> {
    let Some(client) = found else {
        return Err(OAuthError::new(ErrorCode::InvalidClient, "unknown client"));
    };
    check_credentials(&client, creds).map(|()| client)
}

/// Checks presented credentials against a client read from the store (or remembered).
pub fn check_credentials(client: &Client, creds: &ClientCredentials) -> Result<(), OAuthError> {
    let invalid = |m: &'static str| Err(OAuthError::new(ErrorCode::InvalidClient, m));
    match (&client.secret_hash, &creds.secret) {
        (Some(stored), Some(given)) => {
            if !crate::secrets::constant_time_eq(stored, &crate::secrets::hash_token(given)) {
                return invalid("client authentication failed");
            }
        }
        (Some(_), None) => {
            return invalid("this client is confidential and must authenticate with its secret")
        }
        (None, Some(_)) => {
            return invalid("this client is public and has no secret; send only client_id")
        }
        (None, None) => {}
    }
    Ok(())
}

/// The client of a refresh token presented without credentials (`found`: the client its device
/// belongs to), if it is public (RFC 6749 §6). A confidential client's token is
/// `invalid_client`, before anything is rotated or counted as reuse: the caller proved nothing,
/// so it must not be able to revoke a family either.
pub fn refresh_token_owner(found: Option<Client>) -> Result<Client, OAuthError> {
    let Some(client) = found else {
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "unknown refresh token",
        ));
    };
    if client.is_confidential() {
        return Err(OAuthError::new(
            ErrorCode::InvalidClient,
            "this refresh token's client is confidential and must authenticate with its secret",
        ));
    }
    Ok(client)
}

/// Whether `client` may use `grant_type`, checked at every request, so a changed client applies
/// to the next one.
pub fn check_grant(client: &Client, grant_type: &str) -> Result<(), OAuthError> {
    if client.allows_grant(grant_type) {
        return Ok(());
    }
    Err(OAuthError::new(
        ErrorCode::UnauthorizedClient,
        format!("this client may not use grant_type `{grant_type}`"),
    ))
}

/// The scope a client asks for: optional (RFC 8628 §3.1), and within the client's allowed
/// scopes (RFC 6749 §3.3).
pub fn requested_scope(asked: &str, client: &Client) -> Result<Scope, OAuthError> {
    let asked = Scope::parse(asked).ok_or_else(|| {
        OAuthError::new(ErrorCode::InvalidScope, "scope has a forbidden character")
    })?;
    let allowed = Scope::parse(&client.allowed_scopes).unwrap_or_default();
    let outside = asked.outside(&allowed);
    if !outside.is_empty() {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            format!("scope not allowed for this client: {}", outside.join(" ")),
        ));
    }
    Ok(asked)
}

/// The access token's audience (RFC 9068 §2.2, RFC 8707 §2.2): the resources the request
/// names, within those of the grant (`granted`, kept on its device) and those the client may
/// have; else the client's or the server's default. `invalid_target` otherwise.
pub fn audience(
    client: &Client,
    target: &Target,
    granted: Option<&[String]>,
) -> Result<Vec<String>, OAuthError> {
    client
        .allowed(&target.server_default)
        .audience(target.asked.as_deref(), granted)
        .map_err(|e| OAuthError::new(ErrorCode::InvalidTarget, e))
}

/// Why a stored authorization, looked up by the code a person typed, cannot be acted on at
/// `now`; `None` while it is live and undecided.
pub fn code_problem(a: &DeviceAuthorization, now: i64) -> Option<CodeProblem> {
    if now >= a.expires_at {
        return Some(CodeProblem::Expired);
    }
    if a.denied_at.is_some() {
        return Some(CodeProblem::Denied);
    }
    if a.approved_at.is_some() || a.consumed_at.is_some() {
        return Some(CodeProblem::AlreadyUsed);
    }
    None
}

/// Whether an authorization asking for `scope` needs an administrator to approve it (the
/// `admin` scope), and the approver is none.
pub fn needs_admin(scope: &str, approver_is_admin: bool) -> bool {
    let asked = Scope::parse(scope).unwrap_or_default();
    asked.contains(scope::ADMIN) && !approver_is_admin
}

/// The decision inputs of a stored authorization, for a poll by `client_id`.
pub fn poll_state(a: &DeviceAuthorization, client_id: &str) -> PollState {
    PollState {
        // The hash lookup found it, so the code matches; the client must too (RFC 6749 §5.2:
        // a grant "issued to another client" is invalid_grant).
        same_client: a.client_id == client_id,
        expires_at: a.expires_at,
        poll_interval_seconds: a.poll_interval_seconds,
        last_polled_at: a.last_polled_at,
        // Only this process's memory knows it (see the poll tracker).
        early_ms: 0,
        approved_at: a.approved_at,
        denied_at: a.denied_at,
        consumed_at: a.consumed_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_scope_needs_an_admin() {
        let asked = Scope::parse("read admin").unwrap();
        assert_eq!(
            effective_scope(&asked, "read admin", false).to_string(),
            "read"
        );
        assert_eq!(
            effective_scope(&asked, "read admin", true).to_string(),
            "admin read"
        );
        assert_eq!(effective_scope(&asked, "read", true).to_string(), "read");
    }
}
