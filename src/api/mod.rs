//! The JSON management API under `/api/v1`: a user's authorized devices (ZenML's document), and
//! for admins the device authorizations, clients, users and signing keys (Storyden's document).
//! Errors are `{error, message, suggested, metadata}` (see [`crate::http::Error`]).
//!
//! Routing is one table, [`ROUTES`], used both to dispatch and to answer 405 with `Allow`; the
//! OpenAPI document served at `/api/v1/openapi.json` is checked against it by a test, so a route
//! cannot exist undocumented or be documented without existing.
//!
//! Callers authenticate with a bearer access token from hallpass (scope `devices` for their own
//! devices, `admin` for the admin routes) or with a browser session, which must send the
//! session's CSRF token in `X-CSRF-Token` on every state-changing request.

mod admin;
/// The JSON of a client and of a key rotation, shared with `hallpass client` and `hallpass keys`.
pub use admin::{client_json, rotation_json};
mod devices;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};

use crate::app::AppState;
use crate::clock;
use crate::domain::model::User;
use crate::http::{self, read_body, Error, Request, Response};
use crate::protocol::scope::{self, Scope};

/// One API operation; [`ROUTES`] maps method and path template to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The OpenAPI document.
    OpenApi,
    /// List the caller's devices (admins: anyone's).
    ListDevices,
    /// Approve a pending device by user code.
    VerifyDevice,
    /// One device, by id or by pending user code.
    GetDevice,
    /// Rename, set metadata, lock or unlock.
    UpdateDevice,
    /// Remove a device and its tokens.
    DeleteDevice,
    /// Storyden's admin list of device authorizations.
    ListAuthorizations,
    /// Deny a pending authorization.
    DenyAuthorization,
    /// List clients.
    ListClients,
    /// Create a client.
    CreateClient,
    /// One client.
    GetClient,
    /// Change a client's name, grants or scopes.
    UpdateClient,
    /// Delete a client and everything of its devices.
    DeleteClient,
    /// New secret for a confidential client.
    RotateClientSecret,
    /// List users.
    ListUsers,
    /// Create a user.
    CreateUser,
    /// One user.
    GetUser,
    /// Change admin flag, disabled, password.
    UpdateUser,
    /// Delete a user.
    DeleteUser,
    /// List signing keys.
    ListKeys,
    /// Rotate the signing key.
    RotateKey,
    /// Revoke (delete) a signing key.
    RevokeKey,
}

/// Every route: method, path template (OpenAPI syntax), operation. Literal segments win over
/// parameters because earlier entries are tried first.
pub const ROUTES: &[(&str, &str, Op)] = &[
    ("GET", "/api/v1/openapi.json", Op::OpenApi),
    ("GET", "/api/v1/devices", Op::ListDevices),
    ("PUT", "/api/v1/devices/verify", Op::VerifyDevice),
    // OpenAPI forbids two templates that differ only in a parameter's name, so GET shares
    // `{device_id}`; it also accepts a pending device's user code (ZenML's
    // device_id_or_user_code).
    ("GET", "/api/v1/devices/{device_id}", Op::GetDevice),
    ("PUT", "/api/v1/devices/{device_id}", Op::UpdateDevice),
    ("DELETE", "/api/v1/devices/{device_id}", Op::DeleteDevice),
    (
        "GET",
        "/api/v1/admin/oauth/device-authorizations",
        Op::ListAuthorizations,
    ),
    (
        "POST",
        "/api/v1/admin/oauth/device-authorizations/{id}/deny",
        Op::DenyAuthorization,
    ),
    ("GET", "/api/v1/admin/oauth/clients", Op::ListClients),
    ("POST", "/api/v1/admin/oauth/clients", Op::CreateClient),
    (
        "GET",
        "/api/v1/admin/oauth/clients/{client_id}",
        Op::GetClient,
    ),
    (
        "PATCH",
        "/api/v1/admin/oauth/clients/{client_id}",
        Op::UpdateClient,
    ),
    (
        "DELETE",
        "/api/v1/admin/oauth/clients/{client_id}",
        Op::DeleteClient,
    ),
    (
        "POST",
        "/api/v1/admin/oauth/clients/{client_id}/secret",
        Op::RotateClientSecret,
    ),
    ("GET", "/api/v1/admin/users", Op::ListUsers),
    ("POST", "/api/v1/admin/users", Op::CreateUser),
    ("GET", "/api/v1/admin/users/{user_id}", Op::GetUser),
    ("PATCH", "/api/v1/admin/users/{user_id}", Op::UpdateUser),
    ("DELETE", "/api/v1/admin/users/{user_id}", Op::DeleteUser),
    ("GET", "/api/v1/admin/keys", Op::ListKeys),
    ("POST", "/api/v1/admin/keys/rotate", Op::RotateKey),
    ("DELETE", "/api/v1/admin/keys/{kid}", Op::RevokeKey),
];

/// The path parameters of `path` if it fits `template`.
fn matches<'p>(template: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut params = Vec::new();
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) if ts.starts_with('{') && !ps.is_empty() => params.push(ps),
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

/// The route template a path belongs to, for metrics labels (bounded: never the raw path).
pub fn template_of(path: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .find(|(_, t, _)| matches(t, path).is_some())
        .map(|(_, t, _)| *t)
}

/// Finds the operation for a request, or the error for a path without it.
///
/// Of the templates a path fits, only the most specific ones (most literal segments) count:
/// `GET /api/v1/devices/verify` is a wrong method on the `verify` route (405, `Allow: PUT`),
/// not a lookup of a device called "verify".
pub fn resolve<'p>(method: &Method, path: &'p str) -> Result<(Op, Vec<&'p str>), Error> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let literal = |t: &str| t.split('/').filter(|s| !s.starts_with('{')).count();
    let fitting: Vec<_> = ROUTES
        .iter()
        .filter_map(|(m, t, op)| matches(t, path).map(|params| (*m, literal(t), *op, params)))
        .collect();
    let Some(best) = fitting.iter().map(|f| f.1).max() else {
        return Err(Error::NotFound("no such endpoint"));
    };
    let mut allowed: Vec<&str> = Vec::new();
    for (m, specificity, op, params) in fitting {
        if specificity != best {
            continue;
        }
        if m == method {
            return Ok((op, params));
        }
        allowed.push(m);
    }
    // A stable order, HEAD wherever GET is.
    const ORDER: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    let mut names: Vec<&str> = Vec::new();
    for m in ORDER {
        if allowed.contains(&m) {
            names.push(m);
            if m == "GET" {
                names.push("HEAD");
            }
        }
    }
    Err(Error::MethodNotAllowed(names.join(", ").into()))
}

/// Handles a request under `/api/`.
pub async fn route(state: AppState, req: Request) -> Result<Response, Error> {
    let path = req.uri().path().to_string();
    let (op, params) = resolve(req.method(), &path)?;
    let params: Vec<String> = params.into_iter().map(str::to_string).collect();
    if op == Op::OpenApi {
        return Ok(openapi());
    }
    let caller = Caller::authenticate(&state, &req).await?;
    // A session's CSRF token, for a front end that reads it from any GET.
    let csrf = caller.session.as_ref().map(|(_, t)| t.clone());
    let mut resp = dispatch(state, caller, req, op, params).await?;
    if let Some(v) = csrf.and_then(|t| HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert("x-csrf-token", v);
    }
    Ok(resp)
}

async fn dispatch(
    state: AppState,
    caller: Caller,
    req: Request,
    op: Op,
    params: Vec<String>,
) -> Result<Response, Error> {
    let p = |i: usize| params.get(i).cloned().unwrap_or_default();
    match op {
        Op::OpenApi => Ok(openapi()),
        Op::ListDevices => devices::list(state, caller, req).await,
        Op::VerifyDevice => devices::verify(state, caller, req).await,
        Op::GetDevice => devices::get(state, caller, p(0)).await,
        Op::UpdateDevice => devices::update(state, caller, req, p(0)).await,
        Op::DeleteDevice => devices::delete(state, caller, p(0)).await,
        Op::ListAuthorizations => admin::list_authorizations(state, caller, req).await,
        Op::DenyAuthorization => admin::deny_authorization(state, caller, req, p(0)).await,
        Op::ListClients => admin::list_clients(state, caller, req).await,
        Op::CreateClient => admin::create_client(state, caller, req).await,
        Op::GetClient => admin::get_client(state, caller, p(0)).await,
        Op::UpdateClient => admin::update_client(state, caller, req, p(0)).await,
        Op::DeleteClient => admin::delete_client(state, caller, p(0)).await,
        Op::RotateClientSecret => admin::rotate_client_secret(state, caller, p(0)).await,
        Op::ListUsers => admin::list_users(state, caller, req).await,
        Op::CreateUser => admin::create_user(state, caller, req).await,
        Op::GetUser => admin::get_user(state, caller, p(0)).await,
        Op::UpdateUser => admin::update_user(state, caller, req, p(0)).await,
        Op::DeleteUser => admin::delete_user(state, caller, p(0)).await,
        Op::ListKeys => admin::list_keys(state, caller).await,
        Op::RotateKey => admin::rotate_key(state, caller, req).await,
        Op::RevokeKey => admin::revoke_key(state, caller, p(0)).await,
    }
}

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

fn openapi() -> Response {
    let mut resp = Response::new(http_body_util::Full::new(Bytes::from_static(
        OPENAPI.as_bytes(),
    )));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Who is calling, and with which rights.
pub struct Caller {
    /// The user acting; `None` for a client_credentials token.
    pub user: Option<User>,
    /// Granted scopes: a token's scope, or for a browser session `devices` (and `admin` for
    /// an admin).
    pub scopes: Scope,
    /// The caller's IP address, for audit records.
    pub ip: Option<String>,
    /// The same address, for rate limits.
    pub addr: Option<std::net::IpAddr>,
    /// For a browser session: its rate-limit key and CSRF token.
    pub session: Option<(u128, String)>,
}

impl Caller {
    /// Authenticates a request: a bearer token, else a browser session (with `X-CSRF-Token` on
    /// anything but GET/HEAD). 401 without valid credentials.
    async fn authenticate(state: &AppState, req: &Request) -> Result<Caller, Error> {
        let addr = req.extensions().get::<http::PeerAddr>().map(|p| p.0.ip());
        let ip = addr.map(|a| a.to_string());
        if let Some(value) = req.headers().get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer ").or(v.strip_prefix("bearer ")))
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.len() < 8192)
                .ok_or(Error::Unauthorized(
                    "the Authorization header must be `Bearer <access token>`",
                ))?
                .to_string();
            let grace = clock::ms(state.config.access_token_lifetime);
            let found = state
                .store
                .bearer(token, state.keys.verified.clone(), grace, clock::now_ms())
                .await?;
            let (claims, user) = found.ok_or(Error::Unauthorized(
                "the access token is invalid or expired",
            ))?;
            // An admin scope outlives a demotion only until the check here; a client's own
            // token (client_credentials) never acts as a person or an admin, even if an older
            // release let it carry those scopes. Introspection reports the same.
            let scopes = Scope::parse(&crate::domain::rules::current_scope(
                &claims.scope,
                user.as_ref(),
            ))
            .unwrap_or_default();
            return Ok(Caller {
                user,
                scopes,
                ip,
                addr,
                session: None,
            });
        }
        // A browser session: the same rights as a token with `devices` (and `admin` for an
        // admin); anything but GET/HEAD must carry the session's CSRF token, which a page of
        // another site cannot read.
        if let Some(s) = crate::web::session(state, req.headers()).await? {
            if !matches!(*req.method(), Method::GET | Method::HEAD) {
                let presented = req
                    .headers()
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok());
                if !crate::web::csrf_ok(&s, presented) {
                    return Err(Error::Forbidden(
                        "a browser session must send its CSRF token in X-CSRF-Token".into(),
                    ));
                }
            }
            let names = if s.user.is_admin {
                "devices admin"
            } else {
                "devices"
            };
            return Ok(Caller {
                scopes: Scope::parse(names).unwrap_or_default(),
                session: Some((crate::app::limits::session_key(&s.id_hash), s.csrf_token)),
                user: Some(s.user),
                ip,
                addr,
            });
        }
        Err(Error::Unauthorized(
            "send a bearer access token, or sign in and use the session cookie",
        ))
    }

    /// The user, for routes about the caller's own devices (scope `devices`).
    fn device_user(&self) -> Result<&User, Error> {
        if !self.scopes.contains(scope::DEVICES) && !self.scopes.contains(scope::ADMIN) {
            return Err(Error::Forbidden("this needs the `devices` scope".into()));
        }
        self.user
            .as_ref()
            .ok_or_else(|| Error::Forbidden("this needs a user's token, not a client's".into()))
    }

    /// Whether the caller may act on every user's devices.
    fn is_admin(&self) -> bool {
        self.scopes.contains(scope::ADMIN)
    }

    /// Refuses a caller without the `admin` scope.
    fn require_admin(&self) -> Result<(), Error> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::Forbidden("this needs the `admin` scope".into()))
        }
    }

    /// The acting user's id, for audit records.
    fn user_id(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.id.as_str())
    }
}

/// Largest JSON body the API accepts, whatever `server.max_body_size` says.
const MAX_JSON: usize = 64 * 1024;

/// Reads a JSON object body, allowing only `fields`. 415 for another content type, 400 (naming
/// the field) for malformed JSON or an unknown field.
async fn read_object(
    state: &AppState,
    req: Request,
    fields: &[&str],
) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    if !http::has_content_type(req.headers(), "application/json") {
        return Err(Error::UnsupportedMediaType("application/json"));
    }
    let (_, body) = read_body(req, state.config.max_body_size.min(MAX_JSON)).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Error::bad_request("body", format!("malformed JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(Error::bad_request("body", "expected a JSON object"));
    };
    if let Some(unknown) = map.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(Error::bad_request(
            unknown,
            format!("unknown field `{unknown}`; allowed: {}", fields.join(", ")),
        ));
    }
    Ok(map)
}

/// An optional string field: absent → `None`, null → `Some(None)` when `nullable`. Control
/// and invisible characters ([`crate::text`]) are refused, naming the field.
fn opt_string(
    map: &serde_json::Map<String, serde_json::Value>,
    field: &str,
    max_chars: usize,
    nullable: bool,
) -> Result<Option<Option<String>>, Error> {
    if let Some(why) = map
        .get(field)
        .and_then(serde_json::Value::as_str)
        .and_then(|s| crate::text::hidden_refusal(&format!("`{field}`"), s))
    {
        return Err(Error::bad_request(field, why));
    }
    match map.get(field) {
        None => Ok(None),
        Some(serde_json::Value::Null) if nullable => Ok(Some(None)),
        Some(serde_json::Value::String(s))
            if s.chars().count() <= max_chars && !s.chars().any(char::is_control) =>
        {
            Ok(Some(Some(s.trim().to_string())))
        }
        Some(_) => Err(Error::bad_request(
            field,
            format!("`{field}` must be a string of at most {max_chars} characters"),
        )),
    }
}

/// An optional boolean field.
fn opt_bool(
    map: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<Option<bool>, Error> {
    match map.get(field) {
        None => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::bad_request(
            field,
            format!("`{field}` must be a boolean"),
        )),
    }
}

/// Query parameters, decoded; a repeated parameter is refused.
fn query(req: &Request) -> Result<std::collections::HashMap<String, String>, Error> {
    let mut out = std::collections::HashMap::new();
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(Error::bad_request(&k, format!("`{k}` is repeated")));
        }
    }
    Ok(out)
}

/// `offset` (default 0) and `limit` (default 100, at most 1000) from the query.
fn page(q: &std::collections::HashMap<String, String>) -> Result<(u32, u32), Error> {
    let num = |name: &str, default: u32, min: u32, max: u32| match q.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                Error::bad_request(
                    name,
                    format!("`{name}` must be an integer from {min} to {max}"),
                )
            }),
    };
    Ok((num("offset", 0, 0, u32::MAX)?, num("limit", 100, 1, 1000)?))
}

/// A 200 (or other) JSON response.
fn ok(status: StatusCode, value: serde_json::Value) -> Result<Response, Error> {
    Ok(http::json(status, &value))
}

/// Whether `s` is a UUID as we write them.
fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

/// The users of a page, for admin listings.
/// A user as the admin API and the command line show it.
pub fn user_json(u: &User) -> serde_json::Value {
    serde_json::json!({
        "id": u.id,
        "username": u.username,
        "is_admin": u.is_admin,
        "disabled": u.disabled,
        "created": http::rfc3339(u.created),
        "updated": http::rfc3339(u.updated),
    })
}

/// Looks a user up for the admin routes.
async fn find_user(state: &AppState, id: String) -> Result<User, Error> {
    if !is_uuid(&id) {
        return Err(Error::NotFound("no such user"));
    }
    state
        .store
        .user(id)
        .await?
        .ok_or(Error::NotFound("no such user"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_win_and_405_lists_methods() {
        let (op, _) = resolve(&Method::PUT, "/api/v1/devices/verify").unwrap();
        assert_eq!(op, Op::VerifyDevice);
        let (op, p) = resolve(&Method::PUT, "/api/v1/devices/abc").unwrap();
        assert_eq!((op, p), (Op::UpdateDevice, vec!["abc"]));
        let (op, p) = resolve(
            &Method::POST,
            "/api/v1/admin/oauth/device-authorizations/x/deny",
        )
        .unwrap();
        assert_eq!((op, p), (Op::DenyAuthorization, vec!["x"]));
        assert!(matches!(
            resolve(&Method::POST, "/api/v1/devices/abc"),
            Err(Error::MethodNotAllowed(a)) if a == "GET, HEAD, PUT, DELETE"
        ));
        assert!(matches!(
            resolve(&Method::GET, "/api/v1/devices/verify"),
            Err(Error::MethodNotAllowed(a)) if a == "PUT"
        ));
        assert!(matches!(
            resolve(&Method::DELETE, "/api/v1/admin/keys/rotate"),
            Err(Error::MethodNotAllowed(a)) if a == "POST"
        ));
        assert!(matches!(
            resolve(&Method::GET, "/api/v1/devices/"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            resolve(&Method::GET, "/api/v1/nope"),
            Err(Error::NotFound(_))
        ));
    }

    /// Every route is in the OpenAPI document and every documented operation is a route.
    #[test]
    fn openapi_matches_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in ["get", "put", "post", "patch", "delete"] {
                if item.get(method).is_some() {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut routed: Vec<_> = ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
    }
}
