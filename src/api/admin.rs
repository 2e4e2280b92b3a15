//! `/api/v1/admin/*`: Storyden's admin view of device authorizations, and administration of
//! clients, users and signing keys. Every route needs the `admin` scope.

use hyper::StatusCode;

use super::{
    find_user, is_uuid, ok, opt_bool, opt_string, page, query, read_object, user_json, Caller,
};
use crate::app::{admin, AppState};
use crate::clock;
use crate::domain::admin::{ClientChange, ClientSpec, Refusal, UserChange};
use crate::domain::model::{Actor, AuthorizationState, Client, DeviceAuthorization};
use crate::http::{rfc3339, Error, Request, Response};
use crate::protocol::codes::UserCode;
use crate::protocol::jwt::{Algorithm, SigningKey};

/// Storyden's device authorisation record.
fn authorization_json(a: &DeviceAuthorization) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "createdAt": rfc3339(a.created_at),
        "client_id": a.client_id,
        "user_code": UserCode::from_stored(a.user_code.clone()).to_string(),
        "scope": a.scope,
        "expires_at": rfc3339(a.expires_at),
        "poll_interval_seconds": a.poll_interval_seconds,
        "last_polled_at": a.last_polled_at.map(rfc3339),
        "approved_by_account_id": a.approved_by_account_id,
        "approved_at": a.approved_at.map(rfc3339),
        "denied_at": a.denied_at.map(rfc3339),
        "consumed_at": a.consumed_at.map(rfc3339),
    })
}

/// Maps an administrative refusal to its status.
fn refusal(r: Refusal) -> Error {
    match r {
        Refusal::Invalid { field, .. } => Error::bad_request(field, r.to_string()),
        Refusal::Conflict(m) => Error::Conflict(m),
        Refusal::NotFound(_) => Error::NotFound("no such object"),
    }
}

/// `GET /api/v1/admin/oauth/device-authorizations`: `{"device_authorisations": [...]}`, filtered
/// by `state` (pending, approved, denied, consumed, expired) and `client_id`, paginated.
pub async fn list_authorizations(
    state: AppState,
    caller: Caller,
    req: Request,
) -> Result<Response, Error> {
    caller.require_admin()?;
    let q = query(&req)?;
    let (offset, limit) = page(&q)?;
    let filter = match q.get("state") {
        None => None,
        Some(s) => Some(AuthorizationState::parse(s).ok_or_else(|| {
            Error::bad_request(
                "state",
                "`state` must be pending, approved, denied, consumed or expired",
            )
        })?),
    };
    let client_id = q.get("client_id").cloned();
    let (items, total) = state
        .store
        .authorizations(filter, client_id, clock::now_ms(), offset, limit)
        .await?;
    ok(
        StatusCode::OK,
        serde_json::json!({
            "device_authorisations": items.iter().map(authorization_json).collect::<Vec<_>>(),
            "total": total,
            "offset": offset,
            "limit": limit,
        }),
    )
}

/// `POST /api/v1/admin/oauth/device-authorizations/{id}/deny`: denies a pending authorization;
/// 409 when it is no longer pending.
pub async fn deny_authorization(
    state: AppState,
    caller: Caller,
    _req: Request,
    id: String,
) -> Result<Response, Error> {
    caller.require_admin()?;
    if !is_uuid(&id) {
        return Err(Error::NotFound("no such device authorization"));
    }
    let actor = Actor {
        user_id: caller.user_id().map(str::to_string),
        ip_address: caller.ip.clone(),
    };
    let denied = state
        .store
        .deny_authorization(id, actor, clock::now_ms())
        .await?;
    let a = match denied {
        None => return Err(Error::NotFound("no such device authorization")),
        Some(Err(problem)) => {
            return Err(Error::Conflict(format!(
                "the authorization is not pending: {problem}"
            )))
        }
        Some(Ok(a)) => a,
    };
    state.polls.decided(&a.user_code);
    state.metrics.authorization(crate::metrics::Outcome::Denied);
    ok(StatusCode::OK, authorization_json(&a))
}

/// A client as the admin API and `hallpass client list` show it. `signing_algorithm` and
/// `audience` are `null` when the client follows the server's default.
pub fn client_json(c: &Client) -> serde_json::Value {
    serde_json::json!({
        "client_id": c.client_id,
        "name": c.name,
        "confidential": c.is_confidential(),
        "allowed_grants": c.allowed_grants,
        "allowed_scopes": c.allowed_scopes.split_whitespace().collect::<Vec<_>>(),
        "owner_user_id": c.owner_user_id,
        "signing_algorithm": c.signing_algorithm.map(Algorithm::as_str),
        "audience": c.audience,
        "allowed_resources": c.allowed_resources,
        "created": rfc3339(c.created),
        "updated": rfc3339(c.updated),
    })
}

/// Reads `signing_algorithm`: absent → `None`, `null` → `Some(None)` (the server default).
fn opt_algorithm(
    body: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<Option<Algorithm>>, Error> {
    const FIELD: &str = "signing_algorithm";
    match body.get(FIELD) {
        None => Ok(None),
        Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(serde_json::Value::String(s)) => match Algorithm::parse(s) {
            Some(a) => Ok(Some(Some(a))),
            None => Err(Error::bad_request(
                FIELD,
                format!("`{FIELD}` must be {} or null", Algorithm::names()),
            )),
        },
        Some(_) => Err(Error::bad_request(
            FIELD,
            format!("`{FIELD}` must be {} or null", Algorithm::names()),
        )),
    }
}

/// Reads `allowed_grants` / `allowed_scopes`: arrays of strings.
fn string_list(
    body: &serde_json::Map<String, serde_json::Value>,
    field: &'static str,
) -> Result<Option<Vec<String>>, Error> {
    match body.get(field) {
        None => Ok(None),
        Some(serde_json::Value::Array(items)) if items.len() <= 100 => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| {
                Error::bad_request(field, format!("`{field}` must be an array of strings"))
            }),
        Some(_) => Err(Error::bad_request(
            field,
            format!("`{field}` must be an array of at most 100 strings"),
        )),
    }
}

/// `GET /api/v1/admin/oauth/clients`.
pub async fn list_clients(
    state: AppState,
    caller: Caller,
    req: Request,
) -> Result<Response, Error> {
    caller.require_admin()?;
    let (offset, limit) = page(&query(&req)?)?;
    let all = state.store.clients().await?;
    let total = all.len();
    let items: Vec<_> = all
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(client_json)
        .collect();
    ok(
        StatusCode::OK,
        serde_json::json!({ "items": items, "total": total, "offset": offset, "limit": limit }),
    )
}

/// `POST /api/v1/admin/oauth/clients`: 201 with the client and, for a confidential client, its
/// secret — shown this once.
pub async fn create_client(
    state: AppState,
    caller: Caller,
    req: Request,
) -> Result<Response, Error> {
    caller.require_admin()?;
    let body = read_object(
        &state,
        req,
        &[
            "name",
            "confidential",
            "allowed_grants",
            "allowed_scopes",
            "owner_user_id",
            "signing_algorithm",
            "audience",
            "allowed_resources",
        ],
    )
    .await?;
    let name = opt_string(&body, "name", 100, false)?
        .flatten()
        .ok_or_else(|| Error::bad_request("name", "`name` is required"))?;
    let confidential = opt_bool(&body, "confidential")?.unwrap_or(false);
    let spec = ClientSpec {
        name,
        grants: string_list(&body, "allowed_grants")?.unwrap_or_default(),
        scopes: string_list(&body, "allowed_scopes")?
            .unwrap_or_default()
            .join(" "),
        owner_user_id: opt_string(&body, "owner_user_id", 64, true)?.flatten(),
        signing_algorithm: opt_algorithm(&body)?.flatten(),
        audience: opt_string(&body, "audience", 512, true)?.flatten(),
        resources: string_list(&body, "allowed_resources")?.unwrap_or_default(),
    };
    let (client, secret) = admin::create_client(&state.store, spec, confidential)
        .await?
        .map_err(refusal)?;
    let mut out = client_json(&client);
    if let Some(secret) = secret {
        out["client_secret"] = secret.into();
    }
    ok(StatusCode::CREATED, out)
}

async fn find_client(state: &AppState, id: String) -> Result<Client, Error> {
    if !is_uuid(&id) {
        return Err(Error::NotFound("no such client"));
    }
    state
        .store
        .client(id)
        .await?
        .ok_or(Error::NotFound("no such client"))
}

/// `GET /api/v1/admin/oauth/clients/{client_id}`.
pub async fn get_client(state: AppState, caller: Caller, id: String) -> Result<Response, Error> {
    caller.require_admin()?;
    ok(StatusCode::OK, client_json(&find_client(&state, id).await?))
}

/// `PATCH /api/v1/admin/oauth/clients/{client_id}`: `{name, allowed_grants, allowed_scopes,
/// owner_user_id, signing_algorithm, audience, allowed_resources}`; `null` puts
/// `signing_algorithm` or `audience` back to the server's default. Only future authorizations,
/// exchanges and refreshes see the change; issued access tokens stay valid until they expire
/// (rotate the signing key to end them sooner).
pub async fn update_client(
    state: AppState,
    caller: Caller,
    req: Request,
    id: String,
) -> Result<Response, Error> {
    caller.require_admin()?;
    let body = read_object(
        &state,
        req,
        &[
            "name",
            "allowed_grants",
            "allowed_scopes",
            "owner_user_id",
            "signing_algorithm",
            "audience",
            "allowed_resources",
        ],
    )
    .await?;
    let name = opt_string(&body, "name", 100, false)?.flatten();
    let grants = string_list(&body, "allowed_grants")?;
    let scopes = string_list(&body, "allowed_scopes")?;
    let owner = opt_string(&body, "owner_user_id", 64, true)?;
    let algorithm = opt_algorithm(&body)?;
    let audience = opt_string(&body, "audience", 512, true)?;
    let resources = string_list(&body, "allowed_resources")?;
    if !is_uuid(&id) {
        return Err(Error::NotFound("no such client"));
    }
    let change = ClientChange {
        name,
        grants,
        scopes: scopes.map(|s| s.join(" ")),
        owner_user_id: owner,
        signing_algorithm: algorithm,
        audience,
        resources,
    };
    let client = state
        .store
        .update_client(id, change, clock::now_ms())
        .await?
        .map_err(refusal)?;
    ok(StatusCode::OK, client_json(&client))
}

/// `DELETE /api/v1/admin/oauth/clients/{client_id}`: its devices and their tokens go too.
pub async fn delete_client(state: AppState, caller: Caller, id: String) -> Result<Response, Error> {
    caller.require_admin()?;
    let client = find_client(&state, id).await?;
    let actor = Actor {
        user_id: caller.user_id().map(str::to_string),
        ip_address: caller.ip.clone(),
    };
    state
        .store
        .delete_client(client.client_id.clone(), actor, clock::now_ms())
        .await?
        .map_err(refusal)?;
    ok(
        StatusCode::OK,
        serde_json::json!({ "client_id": client.client_id, "deleted": true }),
    )
}

/// `POST /api/v1/admin/oauth/clients/{client_id}/secret`: a new secret, shown once; the old one
/// stops working at once.
pub async fn rotate_client_secret(
    state: AppState,
    caller: Caller,
    id: String,
) -> Result<Response, Error> {
    caller.require_admin()?;
    let client = find_client(&state, id).await?;
    let secret = admin::rotate_client_secret(&state.store, &client.client_id)
        .await?
        .map_err(refusal)?;
    ok(
        StatusCode::OK,
        serde_json::json!({ "client_id": client.client_id, "client_secret": secret }),
    )
}

/// `GET /api/v1/admin/users`.
pub async fn list_users(state: AppState, caller: Caller, req: Request) -> Result<Response, Error> {
    caller.require_admin()?;
    let (offset, limit) = page(&query(&req)?)?;
    let (items, total) = state.store.users(offset, limit).await?;
    ok(
        StatusCode::OK,
        serde_json::json!({
            "items": items.iter().map(user_json).collect::<Vec<_>>(),
            "total": total,
            "offset": offset,
            "limit": limit,
        }),
    )
}

/// `POST /api/v1/admin/users`: `{username, password, is_admin}`; 409 for a taken name.
pub async fn create_user(state: AppState, caller: Caller, req: Request) -> Result<Response, Error> {
    caller.require_admin()?;
    let body = read_object(&state, req, &["username", "password", "is_admin"]).await?;
    let username = opt_string(&body, "username", 64, false)?
        .flatten()
        .ok_or_else(|| Error::bad_request("username", "`username` is required"))?;
    let password = match body.get("password") {
        Some(serde_json::Value::String(p)) => p.clone(),
        _ => {
            return Err(Error::bad_request(
                "password",
                "`password` is required (a string)",
            ))
        }
    };
    let is_admin = opt_bool(&body, "is_admin")?.unwrap_or(false);
    let user = admin::create_user(&state.store, &username, &password, is_admin)
        .await?
        .map_err(refusal)?;
    ok(StatusCode::CREATED, user_json(&user))
}

/// `GET /api/v1/admin/users/{user_id}`.
pub async fn get_user(state: AppState, caller: Caller, id: String) -> Result<Response, Error> {
    caller.require_admin()?;
    ok(StatusCode::OK, user_json(&find_user(&state, id).await?))
}

/// `PATCH /api/v1/admin/users/{user_id}`: `{is_admin, disabled, password}`. Disabling a user
/// makes their devices' tokens fail at the next refresh and introspection.
pub async fn update_user(
    state: AppState,
    caller: Caller,
    req: Request,
    id: String,
) -> Result<Response, Error> {
    caller.require_admin()?;
    let body = read_object(&state, req, &["is_admin", "disabled", "password"]).await?;
    let change = UserChange {
        is_admin: opt_bool(&body, "is_admin")?,
        disabled: opt_bool(&body, "disabled")?,
        password: match body.get("password") {
            None => None,
            Some(serde_json::Value::String(p)) => Some(p.clone()),
            Some(_) => {
                return Err(Error::bad_request(
                    "password",
                    "`password` must be a string",
                ))
            }
        },
    };
    let user = find_user(&state, id).await?;
    let updated = admin::update_user(&state.store, &user.id, change)
        .await?
        .map_err(refusal)?;
    ok(StatusCode::OK, user_json(&updated))
}

/// `DELETE /api/v1/admin/users/{user_id}`: their devices, tokens and sessions go too.
pub async fn delete_user(state: AppState, caller: Caller, id: String) -> Result<Response, Error> {
    caller.require_admin()?;
    let user = find_user(&state, id).await?;
    state
        .store
        .delete_user(user.id.clone())
        .await?
        .map_err(refusal)?;
    ok(
        StatusCode::OK,
        serde_json::json!({ "id": user.id, "deleted": true }),
    )
}

/// `GET /api/v1/admin/keys`.
pub async fn list_keys(state: AppState, caller: Caller) -> Result<Response, Error> {
    caller.require_admin()?;
    let keys = state.store.keys().await?;
    let items: Vec<_> = keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "kid": k.kid,
                "algorithm": k.algorithm,
                "created": rfc3339(k.created),
                "activated": k.activated.map(rfc3339),
                "retired": k.retired.map(rfc3339),
            })
        })
        .collect();
    ok(StatusCode::OK, serde_json::json!({ "items": items }))
}

/// What a rotation made, for the API and the command line: `kid` and `algorithm` of the first
/// new key (the requested algorithm's, else the default's), and `rotated`, every new key.
pub fn rotation_json(keys: &[SigningKey]) -> serde_json::Value {
    let rotated: Vec<_> = keys
        .iter()
        .map(|k| serde_json::json!({ "kid": k.kid, "algorithm": k.algorithm.as_str() }))
        .collect();
    let mut out = rotated.first().cloned().unwrap_or_default();
    out["rotated"] = rotated.into();
    out
}

/// `POST /api/v1/admin/keys/rotate[?algorithm=ALG]`: 201 with the new keys. Every algorithm
/// with an active key (and the default's) gets a new one, or only `algorithm`'s. Retired keys
/// stay in the JWKS until the tokens they signed have expired.
pub async fn rotate_key(state: AppState, caller: Caller, req: Request) -> Result<Response, Error> {
    caller.require_admin()?;
    let q = query(&req)?;
    let only = match q.get("algorithm") {
        None => None,
        Some(a) => Some(Algorithm::parse(a).ok_or_else(|| {
            Error::bad_request(
                "algorithm",
                format!("`algorithm` must be {}", Algorithm::names()),
            )
        })?),
    };
    let default = state.config.signing_algorithm;
    let keys = state
        .store
        .rotate_keys(state.keys.sealer(), only, default, clock::now_ms())
        .await?;
    ok(StatusCode::CREATED, rotation_json(&keys))
}

/// `DELETE /api/v1/admin/keys/{kid}`: tokens the key signed stop verifying at once.
pub async fn revoke_key(state: AppState, caller: Caller, kid: String) -> Result<Response, Error> {
    caller.require_admin()?;
    if !state.store.revoke_key(kid.clone()).await? {
        return Err(Error::NotFound("no such key"));
    }
    ok(
        StatusCode::OK,
        serde_json::json!({ "kid": kid, "deleted": true }),
    )
}
