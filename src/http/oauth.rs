//! The OAuth endpoints: device authorization (RFC 8628 §3.1), token (RFC 8628 §3.4, RFC 6749
//! §5: device code, refresh token, client credentials), revocation (RFC 7009), introspection
//! (RFC 7662), server metadata (RFC 8414) and the JWKS. This file reads requests and writes
//! responses; what they do is [`crate::app::tokens`]' and [`crate::app::authorize`]'s.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hyper::header::{self, HeaderMap};
use hyper::StatusCode;

use super::{json, no_store, read_body, Error, Form, PeerAddr, Request, Response};
use crate::app::authorize::{self, AuthorizationRequest};
use crate::app::limits::RateLimit;
use crate::app::tokens::{self, Issued};
use crate::app::AppState;
use crate::clock;
use crate::domain::model::{Client, ClientCredentials, DeviceFacts};
use crate::metrics::Outcome;
use crate::protocol::error::ErrorCode;
use crate::protocol::grant;
use crate::protocol::resource;
use crate::protocol::scope::Scope;
use crate::store::Caller;

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
    let facts = DeviceFacts {
        name: form.name("device_name", 100)?,
        os: form.name("os", 100)?,
        hostname: form.name("hostname", 255)?,
        ip_address: peer.map(|p| p.0.ip().to_string()),
        user_agent,
        location,
        resource: resources(&form)?,
    };
    let request = AuthorizationRequest {
        creds,
        scope: form.get("scope").unwrap_or("").to_string(),
        facts,
        from: peer.map(|p| p.0.ip()),
    };
    let authorized = authorize::authorize(&state, request).await?;
    state.metrics.authorization(Outcome::Issued);
    if authorized.evicted {
        state.metrics.pending_code_evicted();
    }
    let started = authorized.started;
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
            let scope = match form.get("scope") {
                Some(s) => Some(Scope::parse(s).ok_or_else(|| {
                    Error::oauth(ErrorCode::InvalidScope, "scope has a forbidden character")
                })?),
                None => None,
            };
            let ip = peer.map(|p| p.0.ip().to_string());
            tokens::refresh(&state, caller, token, scope, resources, ip).await?
        }
        grant::DEVICE_CODE => {
            let creds = required(presented)?;
            let device_code = form.require("device_code")?.to_string();
            tokens::poll(&state, creds, device_code, resources).await?
        }
        _ => {
            let creds = required(presented)?;
            let scope = form.get("scope").unwrap_or("");
            tokens::client_credentials(&state, creds, scope, resources).await?
        }
    };
    token_response(&state, &client, issued).await
}

/// Mints the access token and writes the RFC 6749 §5.1 response.
async fn token_response(
    state: &AppState,
    client: &Client,
    issued: Issued,
) -> Result<Response, Error> {
    let minted = tokens::mint(state, client, issued).await?;
    let mut body = serde_json::json!({
        "access_token": minted.access_token,
        "token_type": "Bearer",
        "expires_in": minted.expires_in,
    });
    if let Some(refresh) = minted.refresh_token {
        body["refresh_token"] = refresh.into();
    }
    if !minted.scope.is_empty() {
        body["scope"] = minted.scope.into();
    }
    Ok(no_store(json(StatusCode::OK, &body)))
}

/// Reads client credentials (RFC 6749 §2.3.1): HTTP Basic or `client_id`/`client_secret` in
/// the body, never both; a public client identifies itself with `client_id` alone (RFC 8628
/// §3.1).
fn credentials(headers: &HeaderMap, form: &Form) -> Result<ClientCredentials, Error> {
    required(presented_credentials(headers, form)?)
}

/// Credentials, or the `invalid_request` for a missing `client_id`.
fn required(presented: Option<ClientCredentials>) -> Result<ClientCredentials, Error> {
    presented
        .ok_or_else(|| Error::oauth(ErrorCode::InvalidRequest, "missing parameter `client_id`"))
}

/// [`credentials`], or `None` when the request carries none at all: no Authorization header,
/// no `client_id` and no `client_secret`.
fn presented_credentials(
    headers: &HeaderMap,
    form: &Form,
) -> Result<Option<ClientCredentials>, Error> {
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
            ClientCredentials {
                client_id: id,
                secret: Some(secret).filter(|s| !s.is_empty()),
            }
        }
        None => ClientCredentials {
            client_id: form.require("client_id")?.to_string(),
            secret: form.get("client_secret").map(str::to_string),
        },
    }))
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
    let mut scopes = std::collections::BTreeSet::new();
    let mut resources = std::collections::BTreeSet::new();
    resources.insert(state.audience.to_string());
    for c in state.store.clients().await? {
        scopes.extend(c.allowed_scopes.split_whitespace().map(str::to_string));
        resources.extend(c.allowed_resources.iter().cloned());
        resources.extend(c.audience.clone());
    }
    resources.retain(|r| resource::check_uri(r).is_ok());
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

/// `GET /oauth/jwks`: every published public key (RFC 7517).
pub async fn jwks(state: AppState) -> Result<Response, Error> {
    let grace = clock::ms(state.config.access_token_lifetime);
    let keys = state.store.published_keys(clock::now_ms(), grace).await?;
    let keys: Vec<_> = keys.iter().filter_map(crate::protocol::jwt::jwk).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "keys": keys })))
}

/// `POST /oauth/revoke` (RFC 7009). Always 200 for an authenticated client, whether or not the
/// token existed (§2.2).
pub async fn revoke(state: AppState, req: Request) -> Result<Response, Error> {
    let (headers, peer, form) = read_form(&state, req).await?;
    limit(&state.limits.token, peer)?;
    let creds = credentials(&headers, &form)?;
    let token = form.get("token").map(str::to_string);
    let hint = form.get("token_type_hint").map(str::to_string);
    tokens::revoke(&state, creds, token, hint).await?;
    Ok(no_store(json(StatusCode::OK, &serde_json::json!({}))))
}

/// `POST /oauth/introspect` (RFC 7662), for authenticated confidential clients (§2.1: the
/// endpoint must be protected, or anyone could test stolen tokens).
pub async fn introspect(state: AppState, req: Request) -> Result<Response, Error> {
    let (headers, peer, form) = read_form(&state, req).await?;
    limit(&state.limits.token, peer)?;
    let creds = credentials(&headers, &form)?;
    let token = form.get("token").map(str::to_string);
    let body = tokens::introspect(&state, creds, token).await?;
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
