//! The OAuth endpoints: device authorization (RFC 8628 §3.1), token (RFC 8628 §3.4, RFC 6749
//! §5: device code, refresh token, client credentials), revocation (RFC 7009), introspection
//! (RFC 7662), server metadata (RFC 8414) and the JWKS. Protocol decisions live in [`crate::protocol`]
//! and [`crate::flow`]; this file reads requests and writes responses.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hyper::header::{self, HeaderMap};
use hyper::StatusCode;

use super::{json, no_store, read_body, Error, Form, PeerAddr, Request, Response};
use crate::clock;
use crate::db::device_authorizations as auths;
use crate::db::{clients, signing_keys, DbError};
use crate::domain::model::{Client, DeviceFacts, PollOutcome, Target};
use crate::flow;
use crate::limits::{Admit, RateLimit, Recount};
use crate::metrics::Outcome;
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::grant;
use crate::protocol::jwt::{AccessClaims, Audience, PublicKey};
use crate::protocol::poll::PollDecision;
use crate::protocol::resource;
use crate::protocol::scope::{self, Scope};
use crate::state::AppState;
use crate::tokens;
use rusqlite::Connection;
use std::sync::Arc;

const FORM: &str = "application/x-www-form-urlencoded";

/// Reads a POSTed form body, enforcing content type and size.
async fn read_form(
    state: &AppState,
    req: Request,
) -> Result<(HeaderMap, Option<PeerAddr>, Form), Error> {
    if !super::has_content_type(req.headers(), FORM) {
        return Err(Error::UnsupportedMediaType(FORM));
    }
    let (parts, body) = read_body(req, state.config.max_body_size).await?;
    let form = Form::parse(&body)?;
    let peer = parts.extensions.get::<PeerAddr>().copied();
    Ok((parts.headers, peer, form))
}

/// The request's `resource` parameters (RFC 8707 §2), checked as URIs: a malformed one is
/// `invalid_target`.
fn resources(form: &Form) -> Result<Option<Vec<String>>, Error> {
    resource::parse_params(form.get_all("resource"))
        .map_err(|e| Error::oauth(ErrorCode::InvalidTarget, e))
}

/// `POST /oauth/device_authorization` (RFC 8628 §3.1–3.2), with RFC 8707 resource indicators:
/// the resources named here are the grant's.
pub async fn device_authorization(state: AppState, req: Request) -> Result<Response, Error> {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect::<String>());
    let via_proxy = req
        .extensions()
        .get::<super::ViaTrustedProxy>()
        .is_some_and(|v| v.0);
    let (headers, peer, form) = read_form(&state, req).await?;
    limit(&state.limits.device_authorization, peer)?;
    let location = peer
        .map(|p| state.locator.locate(p.0.ip(), &headers, via_proxy))
        .unwrap_or_default();
    let creds = credentials(&headers, &form)?;
    let asked = form.get("scope").unwrap_or("").to_string();
    let facts = DeviceFacts {
        name: form.name("device_name", 100)?,
        os: form.name("os", 100)?,
        hostname: form.name("hostname", 255)?,
        ip_address: peer.map(|p| p.0.ip().to_string()),
        user_agent,
        location,
        resource: resources(&form)?,
    };
    let config = state.config.clone();
    let limits = state.limits.clone();
    let from = peer.map(|p| p.0.ip());
    let audience = state.audience.clone();
    let (_, (started, evicted)) = with_client(
        &state,
        Caller::Presented(creds),
        None,
        grant::DEVICE_CODE,
        Trip::Write,
        |_| false,
        move |conn, client| {
            let scope = match requested_scope(&asked, client) {
                Ok(s) => s.to_string(),
                Err(e) => return Ok(Err(e)),
            };
            if let Some(asked) = &facts.resource {
                if let Err(e) = client.allowed(&audience).check(asked) {
                    return Ok(Err(Error::oauth(ErrorCode::InvalidTarget, e)));
                }
            }
            let now = clock::now_ms();
            let pending = &limits.pending_codes;
            let mut admit = pending.admit(&client.client_id, from, now);
            if let Admit::Recount { addresses } = admit {
                let cid = &client.client_id;
                let read = |addresses| {
                    let mut counted = Recount::default();
                    auths::pending_for_client(
                        conn,
                        cid,
                        now,
                        pending.cap(),
                        addresses,
                        |i, e, a| counted.add(i, e, a),
                    )?;
                    Ok::<_, DbError>(counted)
                };
                let mut counted = read(addresses)?;
                // Read without addresses (a client not seen since start-up) and at the cap:
                // sharing it needs them after all.
                if !addresses && counted.len() >= pending.cap() {
                    counted = read(true)?;
                }
                pending.recounted(cid, counted);
                admit = pending.admit(cid, from, now);
            }
            // At the cap, the address holding the most gives up its oldest code to an address
            // holding fewer (limits::PendingCap): a flood cannot lock other devices out.
            let evicted = match admit {
                Admit::Yes => false,
                Admit::Evict(id) => auths::evict(conn, &id, now)?,
                Admit::Full | Admit::Recount { .. } => return Ok(Err(Error::TooManyRequests(60))),
            };
            let started = flow::start(conn, &config, &client.client_id, &scope, &facts, now)?;
            pending.issued(
                &client.client_id,
                from,
                &started.authorization.id,
                started.authorization.expires_at,
            );
            Ok(Ok((started, evicted)))
        },
    )
    .await?;
    state.metrics.authorization(Outcome::Issued);
    if evicted {
        state.metrics.pending_code_evicted();
    }
    let user_code = started.user_code.to_string();
    let verification_uri = state.url("/device");
    let body = serde_json::json!({
        "device_code": started.device_code.0,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
        "expires_in": state.config.device_code_lifetime.as_secs(),
        "interval": started.authorization.poll_interval_seconds,
    });
    Ok(no_store(json(StatusCode::OK, &body)))
}

/// Applies a per-address rate limit: 429 with Retry-After when exhausted.
fn limit(limit: &RateLimit, peer: Option<PeerAddr>) -> Result<(), Error> {
    match peer {
        Some(p) => limit.check(p.0.ip()).map_err(Error::TooManyRequests),
        None => Ok(()),
    }
}

/// The scope a client asks for: optional (RFC 8628 §3.1), and within the client's allowed
/// scopes (RFC 6749 §3.3).
fn requested_scope(asked: &str, client: &Client) -> Result<Scope, Error> {
    let asked = Scope::parse(asked)
        .ok_or_else(|| Error::oauth(ErrorCode::InvalidScope, "scope has a forbidden character"))?;
    let allowed = Scope::parse(&client.allowed_scopes).unwrap_or_default();
    let outside = asked.outside(&allowed);
    if !outside.is_empty() {
        return Err(Error::oauth(
            ErrorCode::InvalidScope,
            format!("scope not allowed for this client: {}", outside.join(" ")),
        ));
    }
    Ok(asked)
}

/// `POST /oauth/token` (RFC 6749 §5; RFC 8628 §3.4–3.5).
pub async fn token(state: AppState, req: Request) -> Result<Response, Error> {
    let (headers, peer, form) = read_form(&state, req).await?;
    limit(&state.limits.token, peer)?;
    let grant_type = form.require("grant_type")?;
    let Some(grant_type) = grant::ALL.iter().copied().find(|g| *g == grant_type) else {
        return Err(Error::oauth(
            ErrorCode::UnsupportedGrantType,
            format!("unsupported grant_type `{grant_type}`"),
        ));
    };
    let presented = presented_credentials(&headers, &form)?;
    let resources = resources(&form)?;
    let (client, issued) = match grant_type {
        // RFC 6749 §6: only a confidential client must authenticate to refresh, so a public
        // client may send no client_id (requests-oauthlib's OAuth2Session.refresh_token()
        // does not); its refresh token says which client it is.
        grant::REFRESH_TOKEN => {
            let token = form.require("refresh_token")?.to_string();
            let caller = match presented {
                Some(creds) => Caller::Presented(creds),
                None => Caller::RefreshTokenOwner(token.clone()),
            };
            refresh_token_grant(&state, caller, token, &form, resources, peer).await?
        }
        grant::DEVICE_CODE => {
            let creds = required(presented)?;
            // One stamp for the poll, taken before anything it reads; a client read within
            // FRESH is authenticated here, once, for both the memory and the database path.
            let stamp = state.polls.stamp();
            // A missing code is invalid_request whatever the credentials, as on the database
            // path, where the parameter is read before the client.
            form.require("device_code")?;
            let known = match state.polls.cached_client(&creds.client_id, &stamp) {
                Some(client) => {
                    check_credentials(&client, &creds)?;
                    if let Some(refusal) = poll_from_memory(&state, &client, &form, &stamp) {
                        return Err(refusal);
                    }
                    Some(client)
                }
                None => None,
            };
            device_code_grant(&state, creds, known, &form, resources, stamp).await?
        }
        _ => client_credentials_grant(&state, required(presented)?, &form, resources).await?,
    };
    token_response(&state, &client, issued).await
}

/// What a successful grant yields: the access token's subject, device, scope and audience, and
/// a refresh token when the grant has one.
struct Issued {
    sub: String,
    device_id: Option<String>,
    scope: String,
    audience: Vec<String>,
    refresh_token: Option<String>,
}

/// Mints the access token (RFC 9068 claims), signed with the client's algorithm, and writes
/// the RFC 6749 §5.1 response.
async fn token_response(
    state: &AppState,
    client: &Client,
    issued: Issued,
) -> Result<Response, Error> {
    let algorithm = client.algorithm(state.config.signing_algorithm);
    let signer = state.keys.signer(&state.db, algorithm).await?;
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
    let mut body = serde_json::json!({
        "access_token": signer.sign(&claims),
        "token_type": "Bearer",
        "expires_in": lifetime,
    });
    if let Some(refresh) = issued.refresh_token {
        body["refresh_token"] = refresh.into();
    }
    if !issued.scope.is_empty() {
        body["scope"] = issued.scope.into();
    }
    Ok(no_store(json(StatusCode::OK, &body)))
}

/// `grant_type=urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4–3.5): a read
/// ([`flow::poll_read`], in place, see [`crate::db::Db::read`]) answers every poll that gets no
/// tokens; an approved code is then exchanged in the group-commit writer.
async fn device_code_grant(
    state: &AppState,
    creds: Credentials,
    known: Option<Arc<Client>>,
    form: &Form,
    resources: Option<Vec<String>>,
    stamp: crate::polls::Stamp,
) -> Result<(Arc<Client>, Issued), Error> {
    let device_code = form.require("device_code")?.to_string();
    let polls = state.polls.clone();
    let code = device_code.clone();
    let (client, step) = with_client(
        state,
        Caller::Presented(creds),
        known,
        grant::DEVICE_CODE,
        Trip::Read(stamp),
        |_| false,
        move |conn, client| {
            let now = clock::now_ms();
            flow::poll_read(conn, &polls, &code, &client.client_id, now, stamp).map(Ok)
        },
    )
    .await?;
    let (error, interval) = match step {
        flow::PollStep::Refuse { error, interval } => (error, interval),
        flow::PollStep::Exchange => {
            let config = state.config.clone();
            let keys = state.keys.clone();
            let client_id = client.client_id.clone();
            let algorithm = client.algorithm(config.signing_algorithm);
            let audience = state.audience.clone();
            let outcome = state
                .db
                .write(move |conn| {
                    let now = clock::now_ms();
                    let target = Target {
                        asked: resources.as_deref(),
                        server_default: &audience,
                    };
                    let outcome =
                        flow::exchange(conn, &config, &device_code, &client_id, target, now)?;
                    if matches!(outcome, PollOutcome::Issued(_)) {
                        // Which key is active, in the same trip: see KeyRing::observe.
                        let kid = signing_keys::active_kid(conn, algorithm)?;
                        keys.observe(algorithm, kid.as_deref());
                    }
                    Ok(outcome)
                })
                .await?;
            match outcome {
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
                    return Ok((client, issued));
                }
                PollOutcome::Refused { error, interval } => (error, interval),
                PollOutcome::BadTarget(e) => {
                    state.metrics.poll(e.error.as_str());
                    return Err(Error::OAuth(e));
                }
            }
        }
    };
    Err(poll_refusal(state, error, interval))
}

/// The answer to a poll that gets no tokens (RFC 8628 §3.5), counted in the metrics.
fn poll_refusal(state: &AppState, error: ErrorCode, interval: Option<i64>) -> Error {
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
    Error::OAuth(OAuthError {
        error,
        error_description: description,
        interval,
    })
}

/// A poll answered from memory: `client` (authenticated) and the pending code were read from
/// the database within [`crate::polls::FRESH`]. `None` sends the poll to the database.
fn poll_from_memory(
    state: &AppState,
    client: &Client,
    form: &Form,
    stamp: &crate::polls::Stamp,
) -> Option<Error> {
    let device_code = form.get("device_code")?;
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
        } => Some(poll_refusal(state, error, new_interval)),
        PollDecision::Issue => None,
    }
}

/// `grant_type=refresh_token` (RFC 6749 §6), with rotation and reuse detection.
async fn refresh_token_grant(
    state: &AppState,
    caller: Caller,
    token: String,
    form: &Form,
    resources: Option<Vec<String>>,
    peer: Option<PeerAddr>,
) -> Result<(Arc<Client>, Issued), Error> {
    let asked = match form.get("scope") {
        Some(s) => Some(Scope::parse(s).ok_or_else(|| {
            Error::oauth(ErrorCode::InvalidScope, "scope has a forbidden character")
        })?),
        None => None,
    };
    let config = state.config.clone();
    let audience = state.audience.clone();
    let ip = peer.map(|p| p.0.ip().to_string());
    let signs = |g: &Result<_, Error>| g.is_ok();
    let result = with_client(
        state,
        caller,
        None,
        grant::REFRESH_TOKEN,
        Trip::Write,
        signs,
        move |conn, client| {
            let now = clock::now_ms();
            let target = Target {
                asked: resources.as_deref(),
                server_default: &audience,
            };
            let grant = tokens::refresh(
                conn,
                &config,
                &token,
                client,
                asked.as_ref(),
                target,
                ip.as_deref(),
                now,
            )?;
            Ok(Ok(grant.map_err(Error::OAuth)))
        },
    )
    .await;
    let (client, grant) = result?;
    state.metrics.refresh(grant.is_ok());
    let grant = grant?;
    Ok((
        client,
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
async fn client_credentials_grant(
    state: &AppState,
    creds: Credentials,
    form: &Form,
    resources: Option<Vec<String>>,
) -> Result<(Arc<Client>, Issued), Error> {
    let (client, ()) = with_client(
        state,
        Caller::Presented(creds),
        None,
        grant::CLIENT_CREDENTIALS,
        Trip::Read(state.polls.stamp()),
        |_| true,
        |_, _| Ok(Ok(())),
    )
    .await?;
    if !client.is_confidential() {
        return Err(Error::oauth(
            ErrorCode::UnauthorizedClient,
            "client_credentials is only for confidential clients",
        ));
    }
    let scope = requested_scope(form.get("scope").unwrap_or(""), &client)?;
    // `admin` and `devices` act for a person (issue 4's reserved scopes); a client acting for
    // itself has no person behind it, so it cannot hold them.
    if let Some(reserved) = [scope::ADMIN, scope::DEVICES]
        .into_iter()
        .find(|r| scope.contains(r))
    {
        return Err(Error::oauth(
            ErrorCode::InvalidScope,
            format!("`{reserved}` is granted only by a person approving a device, not by client_credentials"),
        ));
    }
    let audience = client
        .allowed(&state.audience)
        .audience(resources.as_deref(), None)
        .map_err(|e| Error::oauth(ErrorCode::InvalidTarget, e))?;
    let issued = Issued {
        sub: client.client_id.clone(),
        device_id: None,
        scope: scope.to_string(),
        audience,
        refresh_token: None,
    };
    Ok((client, issued))
}

/// Client credentials as presented, not yet checked.
struct Credentials {
    client_id: String,
    secret: Option<String>,
}

/// Who a token request comes from.
enum Caller {
    /// Client credentials as presented, not yet checked.
    Presented(Credentials),
    /// No credentials and no `client_id`, on a refresh: the client the refresh token was
    /// issued to, which must be public (RFC 6749 §6).
    RefreshTokenOwner(String),
}

/// Reads client credentials (RFC 6749 §2.3.1): HTTP Basic or `client_id`/`client_secret` in
/// the body, never both; a public client identifies itself with `client_id` alone (RFC 8628
/// §3.1).
fn credentials(headers: &HeaderMap, form: &Form) -> Result<Credentials, Error> {
    required(presented_credentials(headers, form)?)
}

/// Credentials, or the `invalid_request` for a missing `client_id`.
fn required(presented: Option<Credentials>) -> Result<Credentials, Error> {
    presented
        .ok_or_else(|| Error::oauth(ErrorCode::InvalidRequest, "missing parameter `client_id`"))
}

/// [`credentials`], or `None` when the request carries none at all: no Authorization header,
/// no `client_id` and no `client_secret`.
fn presented_credentials(headers: &HeaderMap, form: &Form) -> Result<Option<Credentials>, Error> {
    if headers.get(header::AUTHORIZATION).is_none()
        && form.get("client_id").is_none()
        && form.get("client_secret").is_none()
    {
        return Ok(None);
    }
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(v) => Some(parse_basic(v.as_bytes()).ok_or_else(|| {
            Error::oauth(ErrorCode::InvalidClient, "malformed Authorization header")
        })?),
        None => None,
    };
    Ok(Some(match basic {
        Some((id, secret)) => {
            if form.get("client_secret").is_some() {
                return Err(Error::oauth(
                    ErrorCode::InvalidRequest,
                    "use one client authentication method, not both",
                ));
            }
            if form.get("client_id").is_some_and(|body_id| body_id != id) {
                return Err(Error::oauth(
                    ErrorCode::InvalidRequest,
                    "client_id in the body differs from the Authorization header",
                ));
            }
            Credentials {
                client_id: id,
                secret: Some(secret).filter(|s| !s.is_empty()),
            }
        }
        None => Credentials {
            client_id: form.require("client_id")?.to_string(),
            secret: form.get("client_secret").map(str::to_string),
        },
    }))
}

/// Checks credentials against the stored client (secrets compared in constant time, as
/// hashes). Runs on a database thread, so a grant can authenticate and act in one trip.
fn verify_client(conn: &Connection, creds: &Credentials) -> Result<Result<Client, Error>, DbError> {
    let client = if creds.client_id.len() > 200 {
        None
    } else {
        clients::find(conn, &creds.client_id)?
    };
    let Some(client) = client else {
        return Ok(Err(Error::oauth(
            ErrorCode::InvalidClient,
            "unknown client",
        )));
    };
    Ok(check_credentials(&client, creds).map(|()| client))
}

/// The client of a refresh token presented without credentials, if it is public (RFC 6749 §6).
/// A confidential client's token is `invalid_client`, before anything is rotated or counted as
/// reuse: the caller proved nothing, so it must not be able to revoke a family either.
fn refresh_token_owner(conn: &Connection, token: &str) -> Result<Result<Client, Error>, DbError> {
    let client = match tokens::refresh_token_client(conn, token)? {
        Some(client_id) => clients::find(conn, &client_id)?,
        None => None,
    };
    let Some(client) = client else {
        return Ok(Err(Error::oauth(
            ErrorCode::InvalidGrant,
            "unknown refresh token",
        )));
    };
    if client.is_confidential() {
        return Ok(Err(Error::oauth(
            ErrorCode::InvalidClient,
            "this refresh token's client is confidential and must authenticate with its secret",
        )));
    }
    Ok(Ok(client))
}

/// Checks presented credentials against a client read from the database (or remembered).
fn check_credentials(client: &Client, creds: &Credentials) -> Result<(), Error> {
    let invalid = |m: &'static str| Err(Error::oauth(ErrorCode::InvalidClient, m));
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

/// Authenticates the client of a request.
async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Client, Error> {
    let creds = credentials(headers, form)?;
    state
        .db
        .run(move |conn| verify_client(conn, &creds))
        .await?
}

/// Authenticates the client (unless `known`, authenticated already), checks it may use
/// `grant_type` (at every request, so a changed client applies to the next one), and runs `f`
/// — all in one trip to the database, which matters on the token endpoint's hot path. When
/// `signs` says `f`'s result will be signed, the active key is read in the same trip (see
/// KeyRing::observe); a refused poll skips that read.
///
/// A write trip authenticates in the writer too. Authenticating with a read first, on the
/// receiving thread, to spare the serial writer the lookup, was tried (3e182a4) and measured
/// slower: W1 17,088 / 15,831 / 18,292 → 13,775 / 15,426 / 13,545 req/s in alternating runs.
async fn with_client<T, F>(
    state: &AppState,
    caller: Caller,
    known: Option<Arc<Client>>,
    grant_type: &'static str,
    trip: Trip,
    signs: fn(&T) -> bool,
    f: F,
) -> Result<(Arc<Client>, T), Error>
where
    T: Send + 'static,
    F: Fn(&mut Connection, &Client) -> Result<Result<T, Error>, DbError> + Send + 'static,
{
    let keys = state.keys.clone();
    let default_algorithm = state.config.signing_algorithm;
    let polls = state.polls.clone();
    // A read trip may use the client as read within FRESH (the same rule as polls answered
    // from memory); a write trip commits, which changes the stamp at once, so remembering its
    // read would only cost the writer a stat.
    let stamp = match trip {
        Trip::Read(stamp) => Some(stamp),
        Trip::Write => None,
    };
    let cached = match (&known, &caller) {
        (None, Caller::Presented(creds)) => {
            stamp.and_then(|s| polls.cached_client(&creds.client_id, &s))
        }
        _ => None,
    };
    let job = move |conn: &mut Connection| {
        let client = match (&known, &cached, &caller) {
            (Some(c), _, _) => c.clone(),
            (None, Some(c), Caller::Presented(creds)) => match check_credentials(c, creds) {
                Ok(()) => c.clone(),
                Err(e) => return Ok(Err(e)),
            },
            (None, _, caller) => {
                let read = match caller {
                    Caller::Presented(creds) => verify_client(conn, creds)?,
                    Caller::RefreshTokenOwner(token) => refresh_token_owner(conn, token)?,
                };
                match read {
                    Ok(c) => {
                        let c = Arc::new(c);
                        if let Some(stamp) = stamp {
                            polls.remember_client(&c, stamp);
                        }
                        c
                    }
                    Err(e) => return Ok(Err(e)),
                }
            }
        };
        if !client.allows_grant(grant_type) {
            return Ok(Err(Error::oauth(
                ErrorCode::UnauthorizedClient,
                format!("this client may not use grant_type `{grant_type}`"),
            )));
        }
        let result = f(conn, &client)?;
        if result.as_ref().is_ok_and(signs) {
            // Which key is active, in the same trip: see KeyRing::observe.
            let algorithm = client.algorithm(default_algorithm);
            let kid = signing_keys::active_kid(conn, algorithm)?;
            keys.observe(algorithm, kid.as_deref());
        }
        Ok(result.map(|t| (client, t)))
    };
    match trip {
        Trip::Read(_) => state.db.read(job).await?,
        Trip::Write => state.db.write(job).await?,
    }
}

/// How a grant reaches the database.
#[derive(Clone, Copy)]
enum Trip {
    /// Only reads (a poll, client credentials): in place when a connection is idle (see
    /// `db::Db::read`), with the [`crate::polls::Stamp`] taken before it.
    Read(crate::polls::Stamp),
    /// Always writes (a new authorization, a rotation): the group-commit writer, so concurrent
    /// requests share a commit (see `db::Db::write`).
    Write,
}

/// Parses `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1). Public only for
/// the fuzz targets under `fuzz/`.
#[doc(hidden)]
pub fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = B64.decode(rest.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    // Decoded as the value of one form field: a raw `&` in it must not end the field.
    let unescape = |s: &str| {
        form_urlencoded::parse(format!("x={}", s.replace('&', "%26")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414 §2). `protected_resources` (RFC 9728
/// §4) lists every resource a token may be for: each client's allowed resources and default
/// audience, and the server's default, where they are URIs.
pub async fn metadata(state: AppState) -> Result<Response, Error> {
    let audience = state.audience.clone();
    let (scopes, resources) = state
        .db
        .run(move |conn| {
            let mut scopes = std::collections::BTreeSet::new();
            let mut resources = std::collections::BTreeSet::new();
            resources.insert(audience.to_string());
            for c in clients::list(conn)? {
                scopes.extend(c.allowed_scopes.split_whitespace().map(str::to_string));
                resources.extend(c.allowed_resources.iter().cloned());
                resources.extend(c.audience.clone());
            }
            resources.retain(|r| resource::check_uri(r).is_ok());
            Ok((scopes, resources))
        })
        .await?;
    let auth_methods = ["none", "client_secret_basic", "client_secret_post"];
    let body = serde_json::json!({
        "issuer": &*state.issuer,
        "device_authorization_endpoint": state.url("/oauth/device_authorization"),
        "token_endpoint": state.url("/oauth/token"),
        "revocation_endpoint": state.url("/oauth/revoke"),
        "introspection_endpoint": state.url("/oauth/introspect"),
        "jwks_uri": state.url("/oauth/jwks"),
        "grant_types_supported": grant::ALL,
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes,
        "protected_resources": resources,
    });
    Ok(json(StatusCode::OK, &body))
}

/// The keys tokens may be verified with: the active one and retired ones whose tokens may
/// still be live.
async fn published_keys(state: &AppState) -> Result<Vec<PublicKey>, Error> {
    let grace = clock::ms(state.config.access_token_lifetime);
    Ok(state
        .db
        .run(move |conn| signing_keys::published(conn, clock::now_ms(), grace))
        .await?)
}

/// `GET /oauth/jwks`: every published public key (RFC 7517).
pub async fn jwks(state: AppState) -> Result<Response, Error> {
    let keys = published_keys(&state).await?;
    let keys: Vec<_> = keys.iter().filter_map(crate::protocol::jwt::jwk).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "keys": keys })))
}

/// `POST /oauth/revoke` (RFC 7009). Always 200 for an authenticated client, whether or not the
/// token existed (§2.2).
pub async fn revoke(state: AppState, req: Request) -> Result<Response, Error> {
    let (headers, peer, form) = read_form(&state, req).await?;
    limit(&state.limits.token, peer)?;
    let client = authenticate_client(&state, &headers, &form).await?;
    let token = form.require("token")?.to_string();
    let hint = form.get("token_type_hint").map(str::to_string);
    let keys = published_keys(&state).await?;
    state
        .db
        .run(move |conn| {
            tokens::revoke(
                conn,
                &token,
                hint.as_deref(),
                &client.client_id,
                &keys,
                clock::now_ms(),
            )
        })
        .await?;
    Ok(no_store(json(StatusCode::OK, &serde_json::json!({}))))
}

/// `POST /oauth/introspect` (RFC 7662), for authenticated confidential clients (§2.1: the
/// endpoint must be protected, or anyone could test stolen tokens). Resource servers may call
/// it on every request they serve, so it is one read in place (see [`crate::db::Db::read`]):
/// the client, the published keys and the token together.
pub async fn introspect(state: AppState, req: Request) -> Result<Response, Error> {
    let (headers, peer, form) = read_form(&state, req).await?;
    limit(&state.limits.token, peer)?;
    let creds = credentials(&headers, &form)?;
    let token = form.get("token").map(str::to_string);
    let grace = clock::ms(state.config.access_token_lifetime);
    let ring = state.keys.clone();
    let body = state
        .db
        .read(move |conn| {
            let client = match verify_client(conn, &creds)? {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            if !client.is_confidential() {
                return Ok(Err(Error::oauth(
                    ErrorCode::InvalidClient,
                    "introspection requires a confidential client's credentials",
                )));
            }
            let Some(token) = &token else {
                return Ok(Err(Error::oauth(
                    ErrorCode::InvalidRequest,
                    "missing parameter `token`",
                )));
            };
            let now = clock::now_ms();
            let keys = signing_keys::published(conn, now, grace)?;
            Ok(Ok(tokens::introspect(
                conn,
                token,
                &keys,
                &ring.verified,
                now,
            )?))
        })
        .await??;
    Ok(no_store(json(StatusCode::OK, &body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_url_decoded() {
        let v = format!("Basic {}", B64.encode("my%20id:s%3Acret"));
        assert_eq!(
            parse_basic(v.as_bytes()),
            Some(("my id".to_string(), "s:cret".to_string()))
        );
        assert_eq!(parse_basic(b"Bearer abc"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        let v = format!("Basic {}", B64.encode("nocolon"));
        assert_eq!(parse_basic(v.as_bytes()), None);
    }

    #[test]
    fn basic_auth_keeps_a_raw_ampersand() {
        // Found by fuzz/fuzz_targets/basic_auth.rs: everything from a raw `&` on was dropped,
        // so `s3cret&anything` authenticated as `s3cret`.
        let v = format!("Basic {}", B64.encode("a&b:s3cret&x%26y"));
        assert_eq!(
            parse_basic(v.as_bytes()),
            Some(("a&b".to_string(), "s3cret&x&y".to_string()))
        );
        assert_eq!(
            parse_basic(b"basic MmA6EyYT"),
            Some(("2`".into(), "\x13&\x13".into()))
        );
    }
}
