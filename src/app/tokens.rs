//! The token endpoint's grants and their neighbours as use cases: a device's poll (RFC 8628
//! §3.4–3.5), a refresh (RFC 6749 §6), client credentials (§4.4), the access token they mint
//! (RFC 9068), revocation (RFC 7009) and introspection (RFC 7662).
//!
//! A poll that gets no tokens is decided here from one read of the store and what this process
//! remembers of earlier polls ([`crate::app::polls`]); a device polling far too fast is
//! answered from memory alone. Only an approved code goes on to the exchange, a write. Each
//! trip authenticates the client itself, and a trip that ends in a token reads which signing
//! key is active, so the signer cache ([`crate::app::keys`]) needs no trip of its own.

use std::sync::Arc;

use crate::app::{AppState, Refused};
use crate::clock;
use crate::domain::model::{Client, ClientCredentials, PollOutcome, Target};
use crate::domain::rules::{self, current_scope};
use crate::metrics::Outcome;
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::grant;
use crate::protocol::jwt::{AccessClaims, Audience};
use crate::protocol::poll::PollDecision;
use crate::protocol::scope::{self, Scope};
use crate::store::{
    Caller, ClientAuth, Exchange, Introspect, Introspection, PollMark, Refresh, Revocation, Stamp,
    StoreError,
};

/// What a successful grant yields: the access token's subject, device, scope and audience, and
/// a refresh token when the grant has one.
#[derive(Debug)]
pub struct Issued {
    /// `sub`: the user, or the client itself.
    pub sub: String,
    /// The device, for a person's grant.
    pub device_id: Option<String>,
    /// The granted scope.
    pub scope: String,
    /// `aud`, never empty.
    pub audience: Vec<String>,
    /// The new refresh token, in clear, to send once.
    pub refresh_token: Option<String>,
}

/// A minted access token with what goes beside it (RFC 6749 §5.1).
#[derive(Debug)]
pub struct Minted {
    /// The signed JWT.
    pub access_token: String,
    /// Its lifetime, seconds.
    pub expires_in: i64,
    /// The refresh token, if the grant has one.
    pub refresh_token: Option<String>,
    /// The granted scope (empty: none).
    pub scope: String,
}

/// The server's default audience and the request's `resource`s.
fn target(state: &AppState, resources: Option<Vec<String>>) -> Target {
    Target {
        asked: resources,
        server_default: state.audience.clone(),
    }
}

/// Who the caller is, sparing the store a read of a client read within
/// [`crate::app::polls::FRESH`] (the same rule as polls answered from memory).
fn caller(state: &AppState, creds: ClientCredentials, stamp: &Stamp) -> Result<Caller, Refused> {
    Ok(match state.polls.cached_client(&creds.client_id, stamp) {
        Some(client) => {
            rules::check_credentials(&client, &creds)?;
            Caller::Known(client)
        }
        None => Caller::Presented(creds),
    })
}

/// `grant_type=urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4–3.5): one read of
/// the store (in place) answers every poll that gets no tokens; an approved code is then
/// exchanged, a write.
pub async fn poll(
    state: &AppState,
    creds: ClientCredentials,
    device_code: String,
    resources: Option<Vec<String>>,
) -> Result<(Arc<Client>, Issued), Refused> {
    // One stamp for the poll, taken before anything it reads; a client read within FRESH is
    // authenticated here, once, for both the memory and the store path.
    let stamp = state.store.stamp();
    let caller = match state.polls.cached_client(&creds.client_id, &stamp) {
        Some(client) => {
            rules::check_credentials(&client, &creds)?;
            if let Some(refusal) = poll_from_memory(state, &client, &device_code, &stamp) {
                return Err(Refused::OAuth(refusal));
            }
            Caller::Known(client)
        }
        None => caller(state, creds, &stamp)?,
    };
    let auth = ClientAuth {
        caller,
        grant: grant::DEVICE_CODE,
        sign_default: None,
    };
    let read = state.store.poll_read(auth, device_code.clone()).await??;
    let client = read.client.client;
    if read.client.fresh {
        state.polls.remember_client(&client, stamp);
    }
    let Some(a) = read.authorization else {
        return Err(poll_refusal(state, ErrorCode::InvalidGrant, None));
    };
    let now = clock::now_ms();
    let mut state_of = rules::poll_state(&a, &client.client_id);
    // Several instances on one database: the last judged poll any of them saw (RFC 8628 §3.5:
    // `slow_down` holds across instances), when it is later than the row's.
    if let Some(shared) = &read.shared {
        if state_of
            .last_polled_at
            .is_none_or(|t| shared.last_polled_at >= t)
        {
            state_of.last_polled_at = Some(shared.last_polled_at);
            state_of.early_ms = shared.early_ms;
        }
        state_of.poll_interval_seconds = state_of
            .poll_interval_seconds
            .max(shared.poll_interval_seconds);
    }
    // Only a code polled again within the freshness window is worth remembering: a device
    // polling at its interval would never be answered from memory, and keeping its read would
    // cost ~350 bytes per live code for nothing (issue 7: peak RSS with 100,000 codes).
    // Another instance's poll counts (several instances behind a round-robin each see a
    // device half as often).
    let fresh_ms = crate::app::polls::FRESH.as_millis() as i64;
    let shared_recently =
        (read.shared.as_ref()).is_some_and(|m| m.last_polled_at >= now - fresh_ms);
    if shared_recently || state.polls.polled_since(&a.id, now - fresh_ms) {
        // Remembered under the SHA-256 alone, as a poll looks it up before any trip.
        let key = crate::secrets::token_key(&device_code);
        if let Ok(digest) = <[u8; 32]>::try_from(&key[key.len() - 32..]) {
            let polls = &state.polls;
            polls.remember_code(digest, &a.id, &a.user_code, &a.client_id, &state_of, stamp);
        }
    }
    match state.polls.decide(&a.id, &state_of, now) {
        // The grown interval is written back with the poll times (app::polls).
        PollDecision::Refuse {
            error,
            new_interval,
            record_poll,
            early_ms,
        } => {
            if record_poll && state.store.is_shared() {
                let mark = PollMark {
                    id: a.id.clone(),
                    last_polled_at: now,
                    early_ms,
                    poll_interval_seconds: new_interval.unwrap_or(state_of.poll_interval_seconds),
                    expires_at: a.expires_at,
                };
                if error == ErrorCode::SlowDown {
                    // Its previous poll was too recent. This one's time is shared with the
                    // next batch rather than before the answer: another instance reading the
                    // code meanwhile judges the device's next poll against the one before (as
                    // it does after a poll answered here from memory, which is not shared).
                    // Waiting would double a refused poll's time on the database path.
                    state.store.record_poll_later(mark);
                } else if let Err(e) = state.store.record_poll(mark).await {
                    // Awaited, so a device that turns to another instance at once meets this
                    // poll; lost, it lets one poll there through unjudged.
                    tracing::debug!(error = %e, "could not share a poll's time");
                }
            }
            return Err(poll_refusal(state, error, new_interval));
        }
        PollDecision::Issue => {}
    }
    let now = clock::now_ms();
    let exchanged = state
        .store
        .exchange(Exchange {
            device_code,
            client_id: client.client_id.clone(),
            algorithm: client.algorithm(state.config.signing_algorithm),
            target: target(state, resources),
            refresh_expires_at: now + clock::ms(state.config.refresh_token_lifetime),
            now,
        })
        .await?;
    if let Some(key) = &exchanged.key {
        state.keys.observe(key);
    }
    match exchanged.outcome {
        PollOutcome::Issued(grant) => {
            state.metrics.poll("issued");
            state.metrics.authorization(Outcome::Exchanged);
            let issued = Issued {
                sub: grant.user_id,
                device_id: Some(grant.device_id),
                scope: grant.scope,
                audience: grant.audience,
                refresh_token: Some(grant.refresh_token),
            };
            Ok((client, issued))
        }
        PollOutcome::Refused { error, interval } => Err(poll_refusal(state, error, interval)),
        PollOutcome::BadTarget(e) => {
            state.metrics.poll(e.error.as_str());
            Err(Refused::OAuth(e))
        }
    }
}

/// The answer to a poll that gets no tokens (RFC 8628 §3.5), counted in the metrics.
fn poll_refusal(state: &AppState, error: ErrorCode, interval: Option<i64>) -> Refused {
    Refused::OAuth(refusal_of_poll(state, error, interval))
}

fn refusal_of_poll(state: &AppState, error: ErrorCode, interval: Option<i64>) -> OAuthError {
    state.metrics.poll(error.as_str());
    let description = match (error, interval) {
        (ErrorCode::SlowDown, Some(i)) => {
            format!("polling too fast; wait at least {i} seconds between polls").into()
        }
        (ErrorCode::AuthorizationPending, _) => "the person has not approved this code yet".into(),
        (ErrorCode::AccessDenied, _) => "the authorization was denied".into(),
        (ErrorCode::ExpiredToken, _) => {
            "the device code has expired; start a new authorization".into()
        }
        _ => "the device code is invalid, was already used, or belongs to another client".into(),
    };
    OAuthError {
        error,
        error_description: description,
        interval,
    }
}

/// A poll answered from memory: `client` (authenticated) and the pending code were read from
/// the store within [`crate::app::polls::FRESH`]. `None` sends the poll to the store.
fn poll_from_memory(
    state: &AppState,
    client: &Client,
    device_code: &str,
    stamp: &Stamp,
) -> Option<OAuthError> {
    if !client.allows_grant(grant::DEVICE_CODE) {
        return None;
    }
    let hash = <[u8; 32]>::try_from(crate::secrets::hash_token(device_code).as_slice()).ok()?;
    match state
        .polls
        .decide_cached(&hash, &client.client_id, clock::now_ms(), stamp)?
    {
        PollDecision::Refuse {
            error,
            new_interval,
            ..
        } => Some(refusal_of_poll(state, error, new_interval)),
        PollDecision::Issue => None,
    }
}

/// `grant_type=refresh_token` (RFC 6749 §6), with rotation and reuse detection. `caller` is the
/// presented credentials, or (a public client sending none) the refresh token's owner.
pub async fn refresh(
    state: &AppState,
    caller: Caller,
    token: String,
    scope: Option<Scope>,
    resources: Option<Vec<String>>,
    ip_address: Option<String>,
) -> Result<(Arc<Client>, Issued), Refused> {
    let now = clock::now_ms();
    let refreshed = state
        .store
        .refresh(Refresh {
            auth: ClientAuth {
                caller,
                grant: grant::REFRESH_TOKEN,
                sign_default: Some(state.config.signing_algorithm),
            },
            token,
            scope,
            target: target(state, resources),
            ip_address,
            refresh_expires_at: now + clock::ms(state.config.refresh_token_lifetime),
            now,
        })
        .await??;
    if let Some(key) = &refreshed.key {
        state.keys.observe(key);
    }
    state.metrics.refresh(refreshed.grant.is_ok());
    let grant = refreshed.grant?;
    Ok((
        refreshed.client,
        Issued {
            sub: grant.user_id,
            device_id: Some(grant.device_id),
            scope: grant.scope,
            audience: grant.audience,
            refresh_token: Some(grant.refresh_token),
        },
    ))
}

/// `grant_type=client_credentials` (RFC 6749 §4.4): confidential clients only, no refresh
/// token (§4.4.3), the client itself as subject; for the resources it names, among those it
/// may ask for, or its default audience.
pub async fn client_credentials(
    state: &AppState,
    creds: ClientCredentials,
    scope: &str,
    resources: Option<Vec<String>>,
) -> Result<(Arc<Client>, Issued), Refused> {
    let stamp = state.store.stamp();
    let auth = ClientAuth {
        caller: caller(state, creds, &stamp)?,
        grant: grant::CLIENT_CREDENTIALS,
        sign_default: Some(state.config.signing_algorithm),
    };
    let read = state.store.client_grant(auth).await??;
    let client = read.client;
    if read.fresh {
        state.polls.remember_client(&client, stamp);
    }
    if let Some(key) = &read.key {
        state.keys.observe(key);
    }
    if !client.is_confidential() {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "client_credentials is only for confidential clients",
        )
        .into());
    }
    let scope = rules::requested_scope(scope, &client)?;
    // `admin` and `devices` act for a person (issue 4's reserved scopes); a client acting for
    // itself has no person behind it, so it cannot hold them.
    if let Some(reserved) = [scope::ADMIN, scope::DEVICES]
        .into_iter()
        .find(|r| scope.contains(r))
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            format!("`{reserved}` is granted only by a person approving a device, not by client_credentials"),
        )
        .into());
    }
    let audience = rules::audience(&client, &target(state, resources), None)?;
    let issued = Issued {
        sub: client.client_id.clone(),
        device_id: None,
        scope: scope.to_string(),
        audience,
        refresh_token: None,
    };
    Ok((client, issued))
}

/// Mints the access token of a grant (RFC 9068 claims), signed with the client's algorithm.
pub async fn mint(state: &AppState, client: &Client, issued: Issued) -> Result<Minted, StoreError> {
    let algorithm = client.algorithm(state.config.signing_algorithm);
    let signer = state.keys.signer(&state.store, algorithm).await?;
    let now = clock::now_ms() / 1000;
    let lifetime = state.config.access_token_lifetime.as_secs() as i64;
    let claims = AccessClaims {
        iss: state.issuer.to_string(),
        sub: issued.sub,
        aud: Audience(issued.audience),
        client_id: client.client_id.clone(),
        scope: issued.scope.clone(),
        iat: now,
        exp: now + lifetime,
        jti: uuid::Uuid::new_v4().to_string(),
        device_id: issued.device_id,
    };
    Ok(Minted {
        access_token: signer.sign(&claims),
        expires_in: lifetime,
        refresh_token: issued.refresh_token,
        scope: issued.scope,
    })
}

/// RFC 7009: an authenticated client revokes one of its tokens. Unknown tokens, and other
/// clients' tokens, change nothing, and the answer is the same (§2.2).
pub async fn revoke(
    state: &AppState,
    creds: ClientCredentials,
    token: Option<String>,
    hint: Option<String>,
) -> Result<(), Refused> {
    let client = state.store.authenticate_client(creds).await??;
    let token = token
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidRequest, "missing parameter `token`"))?;
    state
        .store
        .revoke(Revocation {
            token,
            hint,
            client_id: client.client_id,
            now: clock::now_ms(),
            grace_ms: clock::ms(state.config.access_token_lifetime),
        })
        .await?;
    Ok(())
}

/// RFC 7662: the introspection response for `token`, for an authenticated confidential client.
/// Resource servers may call it on every request they serve, so it is one trip.
pub async fn introspect(
    state: &AppState,
    creds: ClientCredentials,
    token: Option<String>,
) -> Result<serde_json::Value, Refused> {
    let found = state
        .store
        .introspect(Introspect {
            creds,
            token,
            verified: state.keys.verified.clone(),
            grace_ms: clock::ms(state.config.access_token_lifetime),
            now: clock::now_ms(),
        })
        .await??;
    Ok(introspection_json(found))
}

/// RFC 7662 §2.2: what a token is now, as the response says it. Anything not currently valid
/// is `{"active": false}` and nothing more. The scope reported is [`current_scope`].
pub fn introspection_json(found: Introspection) -> serde_json::Value {
    match found {
        Introspection::Inactive => serde_json::json!({ "active": false }),
        Introspection::Access { claims, user } => {
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
            out
        }
        // No `token_type`: RFC 7662 §2.2 defines it as the "Type of the token as defined in
        // Section 5.1 of OAuth 2.0", where token_type is the access token's type (RFC 6749
        // §7.1, e.g. "Bearer": how to present it to a resource server). A refresh token is
        // presented to no resource server and has no such type; the member is OPTIONAL, so it
        // is left out rather than given a value outside that registry ("refresh_token" is a
        // token type *hint*, RFC 7009 §2.1, another registry). Nor an `aud`: the resources a
        // refresh token's access tokens are for are not its audience; it is used only at this
        // server's token endpoint.
        Introspection::Refresh {
            token,
            device,
            user,
        } => serde_json::json!({
            "active": true,
            "scope": current_scope(&token.scope, Some(&user)),
            "client_id": device.client_id,
            "sub": user.id,
            "username": user.username,
            "iat": token.created_at / 1000,
            "exp": token.expires_at.min(device.expires) / 1000,
            "device_id": device.id,
        }),
    }
}
