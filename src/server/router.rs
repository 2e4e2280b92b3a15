//! The router: one `match` on method and path. A known path with the wrong method gets 405 with
//! `Allow`; anything else falls through to 404.

use std::time::Instant;

use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};

use crate::app::AppState;
use crate::http::{self, json, oauth, Error, PeerAddr, Request, Response, Surface};

/// Handles one request. Never fails: errors become responses in the shape of their surface.
pub async fn route(state: AppState, mut req: Request) -> Response {
    let started = Instant::now();
    let request_id = state.metrics.next_request_id();
    if let Some(peer) = req.extensions().get::<PeerAddr>().copied() {
        let trusted = &state.config.trusted_proxies;
        let ip = http::client_ip(peer.0.ip(), req.headers(), trusted);
        let via_proxy = trusted.iter().any(|c| c.contains(peer.0.ip()));
        req.extensions_mut()
            .insert(PeerAddr(std::net::SocketAddr::new(ip, peer.0.port())));
        req.extensions_mut()
            .insert(http::ViaTrustedProxy(via_proxy));
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let surface = Surface::of(&path);
    let timeout = state.config.request_timeout;
    let metrics = state.metrics.clone();
    // Pinned where it is rather than moved into the timeout.
    let handler = std::pin::pin!(dispatch(state, req, &method, &path));
    let result = match tokio::time::timeout(timeout, handler).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout),
    };
    let mut resp = result.unwrap_or_else(|e| e.into_response(surface));
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let elapsed = started.elapsed();
    let route = route_label(&path);
    metrics.request(route, resp.status().as_u16(), elapsed);
    resp.headers_mut()
        .insert("x-request-id", HeaderValue::from(request_id));
    // The route template, never the path or query: those can carry user codes.
    tracing::info!(
        request_id,
        %method,
        route,
        status = resp.status().as_u16(),
        micros = elapsed.as_micros() as u64,
        "request"
    );
    resp
}

async fn dispatch(
    state: AppState,
    req: Request,
    method: &Method,
    path: &str,
) -> Result<Response, Error> {
    let get = *method == Method::GET || *method == Method::HEAD;
    match (method, path) {
        (_, "/healthz") if get => health(state).await,
        (_, "/metrics") if get => Ok(metrics(&state)),
        (&Method::POST, "/oauth/device_authorization") => {
            oauth::device_authorization(state, req).await
        }
        (&Method::POST, "/oauth/token") => oauth::token(state, req).await,
        (&Method::POST, "/oauth/revoke") => oauth::revoke(state, req).await,
        (&Method::POST, "/oauth/introspect") => oauth::introspect(state, req).await,
        (_, "/.well-known/oauth-authorization-server") if get => oauth::metadata(state).await,
        (_, "/oauth/jwks") if get => oauth::jwks(state).await,
        // Boxed: the largest futures (4 KiB and 3 KiB), which would size every request's.
        _ if path.starts_with("/api/") => Box::pin(crate::api::route(state, req)).await,
        _ if crate::web::owns(path) => Ok(Box::pin(crate::web::route(state, req)).await),
        _ => {
            let e = match allowed_methods(path) {
                Some(allow) => Error::MethodNotAllowed(allow.into()),
                None => Error::NotFound("no such endpoint"),
            };
            // A browser that lands here gets a page in the site's layout; a program, JSON.
            if Surface::of(path) == Surface::Other && crate::web::wants_html(req.headers()) {
                return Ok(crate::web::error_response(&state, req.headers(), e).await);
            }
            Err(e)
        }
    }
}

/// The methods a known path accepts, for 405's `Allow` header.
fn allowed_methods(path: &str) -> Option<&'static str> {
    match path {
        "/healthz" | "/metrics" | "/.well-known/oauth-authorization-server" | "/oauth/jwks" => {
            Some("GET, HEAD")
        }
        "/oauth/device_authorization" | "/oauth/token" | "/oauth/revoke" | "/oauth/introspect" => {
            Some("POST")
        }
        _ => None,
    }
}

/// The metrics label of a path: a known route or template, else `other` (labels stay bounded
/// whatever paths clients send).
fn route_label(path: &str) -> &'static str {
    const PATHS: &[&str] = &[
        "/healthz",
        "/metrics",
        "/oauth/device_authorization",
        "/oauth/token",
        "/oauth/revoke",
        "/oauth/introspect",
        "/oauth/jwks",
        "/.well-known/oauth-authorization-server",
        "/device",
        "/device/approved",
        "/device/denied",
        "/device/qr",
        "/favicon.ico",
        "/devices",
        "/login",
        "/logout",
        "/",
        "/static/hallpass.css",
        "/admin/authorizations",
    ];
    if let Some(p) = PATHS.iter().find(|p| **p == path) {
        return p;
    }
    if path.starts_with("/api/") {
        return crate::api::template_of(path).unwrap_or("/api/other");
    }
    if path.starts_with("/devices/") {
        return "/devices/{id}/{action}";
    }
    if path.starts_with("/admin/authorizations/") {
        return "/admin/authorizations/{id}/deny";
    }
    "other"
}

/// `GET /metrics`: Prometheus text exposition.
fn metrics(state: &AppState) -> Response {
    let mut resp = http::text(StatusCode::OK, state.metrics.render());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// `GET /healthz`: 200 `{"status":"ok"}` when the database answers and writes are not known to
/// fail; otherwise 503 `{"status":"unavailable","reason":"..."}` (with `Retry-After`), for a
/// load balancer or monitor to act on. While all is well this reads one row and writes nothing;
/// once writes have failed (read-only file, full disk, I/O errors, a stopped writer) each check
/// tries one small write, so the answer turns back to 200 by itself when they can be stored.
async fn health(state: AppState) -> Result<Response, Error> {
    if let Some(reason) = state.store.problem() {
        return Ok(unhealthy(reason));
    }
    if let Some(reason) = state.store.writes_failing().await {
        return Ok(unhealthy(format!("database writes are failing: {reason}")));
    }
    match state.store.probe().await {
        Ok(_) => Ok(json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))),
        Err(e) if e.is_busy() => Ok(unhealthy(format!("the database is busy: {e}"))),
        Err(e) => Ok(unhealthy(format!("the database cannot be read: {e}"))),
    }
}

/// A 503 answer of `/healthz` saying why.
fn unhealthy(reason: String) -> Response {
    let mut resp = json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({ "status": "unavailable", "reason": reason }),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}
