//! The pages a person uses (issues 3 and 21): sign in, enter a code, confirm, manage devices,
//! and for admins the device authorizations (`admin.rs`). Server-rendered HTML, no JavaScript,
//! one style sheet. Every successful form answers `303 See Other` to a page that says what
//! happened (post/redirect/get), so Reload and Back never send a form again; every error a
//! browser can land on, here or on an unknown path, is a page in the same layout.
//!
//! Safety (RFC 8628 §5): every form carries a CSRF token bound to the session (the sign-in
//! form, which has no session yet, a double-submit cookie); failed code entries are limited per
//! address and per session ([`crate::app::limits`]); every page is sent with a strict
//! Content-Security-Policy, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` and
//! `Cache-Control: no-store`; everything a device reported is escaped ([`html::esc`]).

mod account;
mod admin;
mod device;
pub mod html;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};

use crate::app::AppState;
use crate::domain::model::Session;
use crate::http::{Error, Form, PeerAddr, Request, Response, Surface};
use html::Viewer;

/// Name of the session cookie. With an https public URL it is `__Host-` prefixed (RFC 6265bis
/// §4.1.3.2: Secure, Path=/, no Domain), so a sibling subdomain cannot plant one.
const SESSION_COOKIE: &str = "hallpass_session";
const SECURE_SESSION_COOKIE: &str = "__Host-hallpass_session";
/// The double-submit cookie of the sign-in form.
const LOGIN_COOKIE: &str = "hallpass_login";
const SECURE_LOGIN_COOKIE: &str = "__Host-hallpass_login";
/// A one-time notice for the next page (only "signed_out" today): set with the redirect,
/// cleared by the page that shows it, so a reload shows the page without it.
const NOTICE_COOKIE: &str = "hallpass_notice";
const SECURE_NOTICE_COOKIE: &str = "__Host-hallpass_notice";

/// Whether a path is one of the pages (so the router sends it here).
pub fn owns(path: &str) -> bool {
    matches!(
        path,
        "/" | "/login"
            | "/logout"
            | "/device"
            | "/device/approved"
            | "/device/denied"
            | "/device/qr"
            | "/devices"
            | "/static/hallpass.css"
            | "/favicon.ico"
    ) || path.starts_with("/devices/")
        || path == "/admin/authorizations"
        || path.starts_with("/admin/authorizations/")
}

/// Handles a page request. Errors become HTML pages here, not in the router.
pub async fn route(state: AppState, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    // Kept for the error page's navigation: the request itself is consumed by the handler.
    let headers = req.headers().clone();
    let result = match path.as_str() {
        "/" if get => Ok(redirect("/device")),
        "/static/hallpass.css" if get => Ok(css()),
        "/favicon.ico" if get => Ok(favicon()),
        "/login" if get => account::login_form(state.clone(), req).await,
        "/login" if post => account::login(state.clone(), req).await,
        "/logout" if post => account::logout(state.clone(), req).await,
        "/device" if get => device::enter(state.clone(), req).await,
        "/device" if post => device::decide(state.clone(), req).await,
        "/device/approved" if get => device::approved(state.clone(), req).await,
        "/device/denied" if get => device::denied(state.clone(), req).await,
        "/device/qr" if get => device::qr(state.clone(), req).await,
        "/devices" if get => account::devices(state.clone(), req).await,
        "/admin/authorizations" if get => admin::authorizations(state.clone(), req).await,
        p if post && p.starts_with("/devices/") => {
            let rest = p["/devices/".len()..].to_string();
            account::device_action(state.clone(), req, rest).await
        }
        p if post && p.starts_with("/admin/authorizations/") => {
            let rest = p["/admin/authorizations/".len()..].to_string();
            admin::deny_authorization(state.clone(), req, rest).await
        }
        _ => Err(match allowed(&path) {
            Some(allow) => Error::MethodNotAllowed(allow.into()),
            None => Error::NotFound("no such page"),
        }),
    };
    match result {
        Ok(mut resp) => {
            secure_headers(resp.headers_mut());
            resp
        }
        Err(e) => error_response(&state, &headers, e).await,
    }
}

/// Whether a request asks for HTML (`Accept: text/html`, as a browser navigating sends), so
/// an error outside the pages is shown as a page rather than JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let html = media.eq_ignore_ascii_case("text/html")
                || media.eq_ignore_ascii_case("application/xhtml+xml");
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            html && !refused
        })
}

/// An error as a page in the site's layout, with the navigation of whoever asked (looked up
/// from the session cookie in `headers`), and the security headers of every page.
pub async fn error_response(state: &AppState, headers: &HeaderMap, e: Error) -> Response {
    // A failed lookup must not hide the original error: the page is then shown signed out.
    let who = session(state, headers).await.ok().flatten();
    let mut resp = error_page(who.as_ref(), e);
    secure_headers(resp.headers_mut());
    resp
}

/// The methods a page path accepts.
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/"
        | "/device/qr"
        | "/device/approved"
        | "/device/denied"
        | "/devices"
        | "/static/hallpass.css"
        | "/favicon.ico"
        | "/admin/authorizations" => Some("GET, HEAD"),
        "/login" | "/device" => Some("GET, HEAD, POST"),
        "/logout" => Some("POST"),
        p if p.starts_with("/devices/") || p.starts_with("/admin/authorizations/") => Some("POST"),
        _ => None,
    }
}

/// Headers every page carries.
fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// An HTML response.
fn page(status: StatusCode, html: String) -> Response {
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// 303 See Other to a local path.
fn redirect(location: &str) -> Response {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn css() -> Response {
    static_file(html::CSS.as_bytes(), "text/css; charset=utf-8")
}

fn favicon() -> Response {
    static_file(html::favicon(), "image/x-icon")
}

/// A file that is the same for everyone: cached for an hour.
fn static_file(bytes: &'static [u8], content_type: &'static str) -> Response {
    let mut resp = Response::new(Full::new(Bytes::from_static(bytes)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp
}

/// An error as a page, with the status (and `Allow`/`Retry-After`) the router would send, in
/// the same layout as every page: the navigation of the person who asked (or the way to sign
/// in), the problem in a notice, and where to go from here as buttons.
fn error_page(who: Option<&Session>, e: Error) -> Response {
    let (title, message) = match &e {
        Error::NotFound(_) => (
            "Not found",
            "There is no such page. It may have been removed, or the link may be mistyped."
                .to_string(),
        ),
        Error::MethodNotAllowed(_) => (
            "Not allowed",
            "This page does not accept that kind of request.".to_string(),
        ),
        Error::TooManyRequests(secs) => (
            "Too many attempts",
            format!(
                "Too many attempts from here. Wait {secs} seconds, then try again. Nothing \
                 else is wrong: this limit only slows down guessing."
            ),
        ),
        Error::Forbidden(m) => ("Not allowed", m.clone()),
        Error::Conflict(m) => ("Not possible", m.clone()),
        Error::Unprocessable { message, .. } => ("Not possible", message.clone()),
        Error::BadRequest { message, .. } => {
            ("Something is wrong with the request", message.clone())
        }
        Error::OAuth(o) => (
            "Something is wrong with the request",
            o.error_description.to_string(),
        ),
        Error::PayloadTooLarge(_) => ("Too large", "The form was too large.".to_string()),
        Error::UnsupportedMediaType(_) => (
            "Unsupported form",
            "The form was sent in a format this page does not read.".to_string(),
        ),
        Error::Timeout => (
            "Try again",
            "The server took too long to answer. Try again in a moment.".to_string(),
        ),
        Error::Store(e) if e.is_busy() => (
            "Try again",
            "The server is busy. Try again in a moment.".to_string(),
        ),
        Error::Store(e) if e.is_unavailable() => (
            "Try again later",
            "The server cannot save anything right now. Try again later.".to_string(),
        ),
        _ => (
            "Something went wrong",
            "Something went wrong on the server. Try again in a moment.".to_string(),
        ),
    };
    // The router's rendering decides status and headers (and logs an internal cause once).
    let reference = e.into_response(Surface::Other);
    let next = match who {
        Some(_) => {
            r#"<a class="button primary" href="/device">Enter a code</a><a class="button" href="/devices">My devices</a>"#
        }
        None => {
            r#"<a class="button primary" href="/device">Enter a code</a><a class="button" href="/login">Sign in</a>"#
        }
    };
    let status = reference.status();
    let body = format!(
        "<h1>{}</h1>{}<div class=\"actions\">{next}</div><p class=\"hint\">Error {}.</p>",
        html::esc(title),
        html::notice("error", &html::esc(&message)),
        status.as_u16(),
    );
    let body = match who {
        Some(s) => html::layout(title, Some(&viewer(s)), &body),
        None => html::layout(title, html::Nav::SignedOut, &body),
    };
    let mut resp = page(status, body);
    for name in [header::ALLOW, header::RETRY_AFTER, header::CONNECTION] {
        if let Some(v) = reference.headers().get(&name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    resp
}

/// Reads one cookie's value.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Whether cookies get `Secure` (and the `__Host-` names): the public URL is https.
fn secure(state: &AppState) -> bool {
    state.issuer.starts_with("https://")
}

fn session_cookie_name(state: &AppState) -> &'static str {
    if secure(state) {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

fn login_cookie_name(state: &AppState) -> &'static str {
    if secure(state) {
        SECURE_LOGIN_COOKIE
    } else {
        LOGIN_COOKIE
    }
}

fn notice_cookie_name(state: &AppState) -> &'static str {
    if secure(state) {
        SECURE_NOTICE_COOKIE
    } else {
        NOTICE_COOKIE
    }
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, Secure on https.
fn set_cookie(state: &AppState, name: &str, value: &str, max_age_secs: u64) -> HeaderValue {
    let secure = if secure(state) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("cookie characters are safe")
}

/// The session a request carries, if it is live and its user enabled. Works for the API too.
pub async fn session(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, Error> {
    let Some(id) = cookie(headers, session_cookie_name(state)) else {
        return Ok(None);
    };
    if id.is_empty() || id.len() > 128 {
        return Ok(None);
    }
    let hash = crate::secrets::hash_token(id);
    Ok(state.store.session(hash, crate::clock::now_ms()).await?)
}

/// Whether `presented` is the session's CSRF token (constant-time).
pub fn csrf_ok(session: &Session, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| {
        crate::secrets::constant_time_eq(p.as_bytes(), session.csrf_token.as_bytes())
    })
}

/// The address of the request (after trusted-proxy resolution), for audit records.
pub fn peer_ip(req: &Request) -> Option<String> {
    req.extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip().to_string())
}

/// The refusal of a form without a valid CSRF token.
pub fn csrf_refused() -> Error {
    Error::Forbidden(
        "This form expired or came from another site, so nothing was changed. Reload the page and try again."
            .into(),
    )
}

/// The layout's view of a session.
fn viewer(s: &Session) -> Viewer<'_> {
    Viewer {
        username: &s.user.username,
        is_admin: s.user.is_admin,
        csrf: &s.csrf_token,
    }
}

/// The path and query of a request, to come back to after signing in.
fn here(req: &Request) -> String {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into())
}

/// Where to go after signing in: only a local path (`/x`, not `//host` or `/\host`), else
/// `/device`.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_string()
        }
        _ => "/device".to_string(),
    }
}

/// Sends a person without a session to sign in, coming back here afterwards.
fn to_login(req: &Request) -> Response {
    redirect(&format!("/login?next={}", html::query_value(&here(req))))
}

/// Reads a POSTed form (urlencoded, within the body limit).
async fn read_form(
    state: &AppState,
    req: Request,
) -> Result<(HeaderMap, Option<PeerAddr>, Form), Error> {
    if !crate::http::has_content_type(req.headers(), "application/x-www-form-urlencoded") {
        return Err(Error::UnsupportedMediaType(
            "application/x-www-form-urlencoded",
        ));
    }
    let peer = req.extensions().get::<PeerAddr>().copied();
    let (parts, body) = crate::http::read_body(req, state.config.max_body_size).await?;
    Ok((parts.headers, peer, Form::parse(&body)?))
}

/// The query string as a form.
fn query(req: &Request) -> Result<Form, Error> {
    Form::parse(req.uri().query().unwrap_or("").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(
            local_path(Some("/device?user_code=ABCD-EFGH")),
            "/device?user_code=ABCD-EFGH"
        );
        assert_eq!(local_path(Some("/devices")), "/devices");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "evil",
            "",
            "/a\r\nb",
        ] {
            assert_eq!(local_path(Some(bad)), "/device", "{bad:?}");
        }
        assert_eq!(local_path(None), "/device");
    }

    #[test]
    fn html_is_wanted_by_browsers_only() {
        let accept = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_static(v));
            wants_html(&h)
        };
        assert!(accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(accept("Text/HTML"));
        assert!(!accept("application/json"));
        assert!(!accept("*/*"));
        assert!(!accept("text/html;q=0, application/json"));
        assert!(!wants_html(&HeaderMap::new()));
    }

    #[test]
    fn reads_cookies() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; hallpass_session=abc ; b=2"),
        );
        assert_eq!(cookie(&h, "hallpass_session"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
