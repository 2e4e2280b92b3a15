//! The OAuth endpoints: device authorization (RFC 8628 §3.1), token (RFC 8628 §3.4, RFC 6749
//! §5), server metadata (RFC 8414) and the JWKS. Protocol decisions live in [`crate::oauth`]
//! and [`crate::flow`]; this file reads requests and writes responses.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hyper::header::{self, HeaderMap};
use hyper::StatusCode;

use super::{json, no_store, read_body, Error, Form, PeerAddr, Request, Response};
use crate::db::clients::{self, Client};
use crate::db::{self, signing_keys};
use crate::flow::{self, DeviceFacts, PollOutcome};
use crate::oauth::error::ErrorCode;
use crate::oauth::grant;
use crate::oauth::jwt::AccessClaims;
use crate::oauth::scope::Scope;
use crate::state::AppState;

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

/// `POST /oauth/device_authorization` (RFC 8628 §3.1–3.2).
pub async fn device_authorization(state: AppState, req: Request) -> Result<Response, Error> {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect::<String>());
    let (headers, peer, form) = read_form(&state, req).await?;
    let client = authenticate_client(&state, &headers, &form).await?;
    if !client.allows_grant(grant::DEVICE_CODE) {
        return Err(Error::oauth(
            ErrorCode::UnauthorizedClient,
            "this client may not use the device authorization grant",
        ));
    }
    let scope = requested_scope(&form, &client)?;
    let facts = DeviceFacts {
        name: form.text("device_name", 100)?,
        os: form.text("os", 100)?,
        hostname: form.text("hostname", 255)?,
        ip_address: peer.map(|p| p.0.ip().to_string()),
        user_agent,
    };
    let config = state.config.clone();
    let client_id = client.client_id.clone();
    let started = state
        .db
        .run(move |conn| {
            flow::start(
                conn,
                &config,
                &client_id,
                &scope.to_string(),
                &facts,
                db::now_ms(),
            )
        })
        .await?;
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

/// The scope a client asks for: optional (RFC 8628 §3.1), and within the client's allowed
/// scopes (RFC 6749 §3.3).
fn requested_scope(form: &Form, client: &Client) -> Result<Scope, Error> {
    let asked = Scope::parse(form.get("scope").unwrap_or(""))
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
    let (headers, _peer, form) = read_form(&state, req).await?;
    let grant_type = form.require("grant_type")?.to_string();
    if !grant::ALL.contains(&grant_type.as_str()) {
        return Err(Error::oauth(
            ErrorCode::UnsupportedGrantType,
            format!("unsupported grant_type `{grant_type}`"),
        ));
    }
    let client = authenticate_client(&state, &headers, &form).await?;
    if !client.allows_grant(&grant_type) {
        return Err(Error::oauth(
            ErrorCode::UnauthorizedClient,
            format!("this client may not use grant_type `{grant_type}`"),
        ));
    }
    match grant_type.as_str() {
        grant::DEVICE_CODE => device_code_grant(state, client, &form).await,
        _ => Err(Error::oauth(
            ErrorCode::UnsupportedGrantType,
            format!("grant_type `{grant_type}` is not supported by this server yet"),
        )),
    }
}

async fn device_code_grant(
    state: AppState,
    client: Client,
    form: &Form,
) -> Result<Response, Error> {
    let device_code = form.require("device_code")?.to_string();
    let config = state.config.clone();
    let client_id = client.client_id.clone();
    let outcome = state
        .db
        .run(move |conn| flow::poll(conn, &config, &device_code, &client_id, db::now_ms()))
        .await?;
    let grant = match outcome {
        PollOutcome::Issued(grant) => grant,
        PollOutcome::Refused { error, interval } => {
            let description = match (error, interval) {
                (ErrorCode::SlowDown, Some(i)) => {
                    format!("polling too fast; wait at least {i} seconds between polls")
                }
                (ErrorCode::AuthorizationPending, _) => {
                    "the person has not approved this code yet".to_string()
                }
                (ErrorCode::AccessDenied, _) => "the authorization was denied".to_string(),
                (ErrorCode::ExpiredToken, _) => {
                    "the device code has expired; start a new authorization".to_string()
                }
                _ => "the device code is invalid, was already used, or belongs to another client"
                    .to_string(),
            };
            let mut body = serde_json::json!({ "error": error, "error_description": description });
            if let Some(i) = interval {
                // Not in RFC 8628, but a client that reads it needs no arithmetic.
                body["interval"] = i.into();
            }
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let resp = json(status, &body);
            return Ok(no_store(resp));
        }
    };
    let now = db::now_ms() / 1000;
    let lifetime = state.config.access_token_lifetime.as_secs() as i64;
    let claims = AccessClaims {
        iss: state.issuer.to_string(),
        sub: grant.user_id,
        aud: None,
        client_id: client.client_id,
        scope: grant.scope.clone(),
        iat: now,
        exp: now + lifetime,
        jti: uuid::Uuid::new_v4().to_string(),
        device_id: Some(grant.device_id),
    };
    let access_token = state.signing_key.sign(&claims);
    let mut body = serde_json::json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "refresh_token": grant.refresh_token,
    });
    if !grant.scope.is_empty() {
        body["scope"] = grant.scope.into();
    }
    Ok(no_store(json(StatusCode::OK, &body)))
}

/// Client authentication (RFC 6749 §2.3.1): HTTP Basic or `client_id`/`client_secret` in the
/// body, never both; a public client identifies itself with `client_id` alone (RFC 8628 §3.1).
async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Client, Error> {
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(v) => Some(parse_basic(v.as_bytes()).ok_or_else(|| {
            Error::oauth(ErrorCode::InvalidClient, "malformed Authorization header")
        })?),
        None => None,
    };
    let (client_id, secret) = match basic {
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
            (id, Some(secret).filter(|s| !s.is_empty()))
        }
        None => (
            form.require("client_id")?.to_string(),
            form.get("client_secret").map(str::to_string),
        ),
    };
    let lookup_id = client_id.clone();
    let client = if client_id.len() > 200 {
        None
    } else {
        state
            .db
            .run(move |conn| clients::find(conn, &lookup_id))
            .await?
    };
    let Some(client) = client else {
        return Err(Error::oauth(ErrorCode::InvalidClient, "unknown client"));
    };
    match (&client.secret_hash, secret) {
        (Some(stored), Some(given)) => {
            if !crate::secrets::constant_time_eq(stored, &crate::secrets::hash_token(&given)) {
                return Err(Error::oauth(
                    ErrorCode::InvalidClient,
                    "client authentication failed",
                ));
            }
        }
        (Some(_), None) => {
            return Err(Error::oauth(
                ErrorCode::InvalidClient,
                "this client is confidential and must authenticate with its secret",
            ))
        }
        (None, Some(_)) => {
            return Err(Error::oauth(
                ErrorCode::InvalidClient,
                "this client is public and has no secret; send only client_id",
            ))
        }
        (None, None) => {}
    }
    Ok(client)
}

/// Parses `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = B64.decode(rest.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414 §2).
pub async fn metadata(state: AppState) -> Result<Response, Error> {
    let scopes = state
        .db
        .run(|conn| {
            let mut all = std::collections::BTreeSet::new();
            for c in clients::list(conn)? {
                all.extend(c.allowed_scopes.split_whitespace().map(str::to_string));
            }
            Ok(all)
        })
        .await?;
    let body = serde_json::json!({
        "issuer": &*state.issuer,
        "device_authorization_endpoint": state.url("/oauth/device_authorization"),
        "token_endpoint": state.url("/oauth/token"),
        "jwks_uri": state.url("/oauth/jwks"),
        "grant_types_supported": [grant::DEVICE_CODE],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes,
    });
    Ok(json(StatusCode::OK, &body))
}

/// `GET /oauth/jwks`: every published public key (RFC 7517).
pub async fn jwks(state: AppState) -> Result<Response, Error> {
    let keys = state.db.run(|conn| signing_keys::published(conn)).await?;
    let keys: Vec<_> = keys
        .iter()
        .map(|(kid, public)| crate::oauth::jwt::jwk(kid, public))
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "keys": keys })))
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
}
