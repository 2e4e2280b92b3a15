//! HTTP plumbing shared by every endpoint: the response type and body helpers, reading bounded
//! bodies and forms, and the one [`Error`] type whose rendering depends on the surface it
//! happened on — RFC 6749 §5.2 JSON under `/oauth`, `{error, message, suggested, metadata}`
//! under `/api` and elsewhere (the pages, and a browser asking for HTML, get an HTML page from
//! [`crate::web`]).

pub mod oauth;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, StatusCode};

use crate::app::Refused;
use crate::config::Cidr;
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::store::StoreError;

/// The request type every handler sees.
pub type Request = hyper::Request<Incoming>;

/// The response type every handler returns: bodies are small and built in memory.
pub type Response = hyper::Response<Full<Bytes>>;

/// The client's address, in each request's extensions: the connection's peer, or — when the
/// peer is a trusted proxy — the address it reports in `X-Forwarded-For` (see [`client_ip`]).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Whether the connection's own peer is a trusted proxy (so its other headers count too).
#[derive(Debug, Clone, Copy)]
pub struct ViaTrustedProxy(pub bool);

/// The client address of a request from `peer`. `X-Forwarded-For` is believed only when `peer`
/// is a trusted proxy; the chain is read from the right, skipping trusted proxies, so a client
/// cannot prepend a forged address. A malformed header is ignored.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut chain = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        for item in value.split(',') {
            match item.trim().parse::<IpAddr>() {
                Ok(ip) => chain.push(ip),
                Err(_) => return peer,
            }
        }
    }
    chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(**ip))
        .or(chain.first())
        .copied()
        .unwrap_or(peer)
}

/// A JSON response with `status`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    json_bytes(status, value.to_string().into_bytes())
}

/// A JSON response with `status` from an already serialized body.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A plain-text response with `status`.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Marks a response as never to be cached (RFC 6749 §5.1 for token responses).
pub fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// Which family of endpoints a request belongs to; decides the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `/oauth/*` and `/.well-known/*`: RFC 6749 §5.2 errors.
    OAuth,
    /// `/api/*`: Storyden's `{error, message, suggested, metadata}`.
    Api,
    /// Everything else: the API's JSON shape (the pages render their own errors, and a
    /// browser asking for HTML gets a page; see the router).
    Other,
}

impl Surface {
    /// The surface of a path.
    pub fn of(path: &str) -> Surface {
        if path.starts_with("/oauth/") || path.starts_with("/.well-known/") {
            Surface::OAuth
        } else if path == "/api" || path.starts_with("/api/") {
            Surface::Api
        } else {
            Surface::Other
        }
    }
}

/// Everything a handler can fail with. [`Error::into_response`] is the one place that turns a
/// failure into a status and a body; internal causes are logged there and never sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An OAuth protocol error with its RFC 6749 code.
    #[error("{}: {}", .0.error.as_str(), .0.error_description)]
    OAuth(OAuthError),
    /// No such endpoint, or no such object the caller may see.
    #[error("{0}")]
    NotFound(&'static str),
    /// The path exists with other methods; the value is the `Allow` header.
    #[error("method not allowed")]
    MethodNotAllowed(std::borrow::Cow<'static, str>),
    /// The body is larger than `server.max_body_size`.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body has the wrong content type; the value is the expected one.
    #[error("unsupported content type, expected {0}")]
    UnsupportedMediaType(&'static str),
    /// The request is malformed; `field` names the parameter at fault.
    #[error("{message}")]
    BadRequest {
        /// What is wrong, for the caller.
        message: String,
        /// The parameter at fault.
        field: Option<String>,
    },
    /// No valid credentials (401).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Valid credentials without the right (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the current state, e.g. a taken name (409).
    #[error("{0}")]
    Conflict(String),
    /// Well-formed but cannot be carried out, e.g. an expired code (422).
    #[error("{message}")]
    Unprocessable {
        /// What is wrong.
        message: String,
        /// The field at fault.
        field: Option<String>,
    },
    /// Too many attempts; retry after the given seconds (429).
    #[error("too many attempts; retry in {0} seconds")]
    TooManyRequests(u64),
    /// The request took longer than `server.request_timeout`.
    #[error("request timed out")]
    Timeout,
    /// A storage failure; the cause is logged, the client told only that it failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Refused> for Error {
    fn from(r: Refused) -> Error {
        match r {
            Refused::OAuth(e) => Error::OAuth(e),
            Refused::TooManyRequests(secs) => Error::TooManyRequests(secs),
            Refused::Store(e) => Error::Store(e),
        }
    }
}

impl From<OAuthError> for Error {
    fn from(e: OAuthError) -> Error {
        Error::OAuth(e)
    }
}

/// How one error is shown: status, codes for each surface, a hint, and details.
struct Rendered {
    status: StatusCode,
    oauth: ErrorCode,
    api: &'static str,
    suggested: &'static str,
    message: std::borrow::Cow<'static, str>,
    metadata: serde_json::Value,
}

impl Error {
    /// An OAuth error.
    pub fn oauth(code: ErrorCode, description: impl Into<std::borrow::Cow<'static, str>>) -> Error {
        Error::OAuth(OAuthError::new(code, description))
    }

    /// A malformed request naming the parameter at fault.
    pub fn bad_request(field: &str, message: impl Into<String>) -> Error {
        Error::BadRequest {
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    /// The one exhaustive mapping from failure to status and codes.
    fn render(&self) -> Rendered {
        let none = serde_json::json!({});
        let field = |f: &Option<String>| match f {
            Some(f) => serde_json::json!({ "field": f }),
            None => serde_json::json!({}),
        };
        let r = |status, oauth, api, suggested, metadata| Rendered {
            status,
            oauth,
            api,
            suggested,
            message: self.to_string().into(),
            metadata,
        };
        match self {
            Error::OAuth(e) => Rendered {
                status: StatusCode::from_u16(e.error.status()).unwrap_or(StatusCode::BAD_REQUEST),
                oauth: e.error,
                api: "bad_request",
                suggested: "fix the request and retry",
                message: e.error_description.clone(),
                metadata: none,
            },
            Error::NotFound(_) => r(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "not_found",
                "check the path and id; /api/v1/openapi.json lists every route",
                none,
            ),
            Error::MethodNotAllowed(_) => r(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::InvalidRequest,
                "method_not_allowed",
                "use a method listed in the Allow header",
                none,
            ),
            Error::PayloadTooLarge(limit) => r(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::InvalidRequest,
                "payload_too_large",
                "send a smaller body",
                serde_json::json!({ "limit": limit }),
            ),
            Error::UnsupportedMediaType(expected) => r(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::InvalidRequest,
                "unsupported_media_type",
                "set the Content-Type header to the expected type",
                serde_json::json!({ "expected": expected }),
            ),
            Error::BadRequest { field: f, .. } => r(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "bad_request",
                "fix the field named in metadata and retry",
                field(f),
            ),
            Error::Unauthorized(_) => r(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidClient,
                "unauthenticated",
                "send a bearer access token, or sign in and send X-CSRF-Token",
                none,
            ),
            Error::Forbidden(_) => r(
                StatusCode::FORBIDDEN,
                ErrorCode::AccessDenied,
                "forbidden",
                "use an account or token with the required scope",
                none,
            ),
            Error::Conflict(_) => r(
                StatusCode::CONFLICT,
                ErrorCode::InvalidRequest,
                "conflict",
                "choose another value or reload the current state",
                none,
            ),
            Error::Unprocessable { field: f, .. } => r(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidRequest,
                "unprocessable",
                "the request is well-formed but cannot be carried out; see message",
                field(f),
            ),
            Error::TooManyRequests(secs) => r(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TemporarilyUnavailable,
                "too_many_requests",
                "wait for the time in Retry-After",
                serde_json::json!({ "retry_after": secs }),
            ),
            Error::Timeout => r(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TemporarilyUnavailable,
                "timeout",
                "retry the request",
                none,
            ),
            Error::Store(e) if e.is_busy() => {
                tracing::warn!(error = %e, "database busy");
                Rendered {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    oauth: ErrorCode::TemporarilyUnavailable,
                    api: "unavailable",
                    suggested: "retry in a moment",
                    message: "the database is busy; try again shortly".into(),
                    metadata: none,
                }
            }
            Error::Store(StoreError::Replaced(_)) => Rendered {
                // Logged once, with what to do, by the store (SQLite: its file watch).
                status: StatusCode::SERVICE_UNAVAILABLE,
                oauth: ErrorCode::TemporarilyUnavailable,
                api: "unavailable",
                suggested: "the operator must restart hallpass (see the server log)",
                message: "the database file was changed by another program while the server ran; \
                          nothing is read or stored until hallpass is restarted"
                    .into(),
                metadata: none,
            },
            Error::Store(e) if e.is_unavailable() => {
                // The state change is logged at error once by the store; each request that
                // meets it only at warn.
                tracing::warn!(error = %e, "database cannot store writes now");
                Rendered {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    oauth: ErrorCode::TemporarilyUnavailable,
                    api: "unavailable",
                    suggested: "retry later; the operator must make the database writable (disk space, file permissions)",
                    message: "the database cannot store anything right now; try again later"
                        .into(),
                    metadata: none,
                }
            }
            Error::Store(StoreError::Gone(_)) => Rendered {
                // Logged once by the store, not on every request.
                status: StatusCode::SERVICE_UNAVAILABLE,
                oauth: ErrorCode::TemporarilyUnavailable,
                api: "unavailable",
                suggested: "the operator must restore the database file",
                message: "the database file is missing; nothing can be stored until it is back"
                    .into(),
                metadata: none,
            },
            Error::Store(e) => {
                tracing::error!(error = %e, "database failure");
                Rendered {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    oauth: ErrorCode::ServerError,
                    api: "internal",
                    suggested: "retry later; report it if it persists",
                    message: "internal error; the server log has the cause".into(),
                    metadata: none,
                }
            }
        }
    }

    /// The response for this error on `surface`.
    pub fn into_response(self, surface: Surface) -> Response {
        let r = self.render();
        let mut resp = match (surface, &self) {
            // Serialized straight from the struct: the hot answer of every poll.
            (Surface::OAuth, Error::OAuth(e)) => json_bytes(
                r.status,
                serde_json::to_vec(e).expect("an OAuth error serializes"),
            ),
            (Surface::OAuth, _) => json(
                r.status,
                &serde_json::json!({ "error": r.oauth, "error_description": r.message }),
            ),
            (Surface::Api | Surface::Other, _) => json(
                r.status,
                &serde_json::json!({
                    "error": r.api,
                    "message": r.message,
                    "suggested": r.suggested,
                    "metadata": r.metadata,
                }),
            ),
        };
        if surface == Surface::OAuth {
            // RFC 6749 §5.1/§5.2: token endpoint answers, errors included, are never cached.
            resp = no_store(resp);
        }
        let headers = resp.headers_mut();
        match &self {
            Error::MethodNotAllowed(allow) => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    headers.insert(header::ALLOW, v);
                }
            }
            Error::PayloadTooLarge(_) => {
                // The rest of the body is not read, so the connection cannot be reused; say so
                // (RFC 9110 §15.5.14) instead of just dropping it.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Error::TooManyRequests(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Error::OAuth(OAuthError {
                error: ErrorCode::SlowDown,
                interval: Some(secs),
                ..
            }) => {
                // RFC 8628 §3.5 says only "increase the interval by 5 seconds"; Retry-After
                // (RFC 9110 §10.2.3) says the new interval to clients that read headers, such
                // as openid-client, which waits max(its interval + 5, Retry-After).
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            _ if r.status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        if r.status == StatusCode::UNAUTHORIZED {
            // RFC 6749 §5.2 / RFC 6750 §3: a 401 names the scheme to use.
            let scheme = if surface == Surface::Api {
                "Bearer realm=\"hallpass\""
            } else {
                "Basic realm=\"hallpass\""
            };
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
        }
        resp
    }
}

/// Reads the whole body, refusing more than `limit` bytes (early, from Content-Length, when the
/// client declares it).
pub async fn read_body(
    req: Request,
    limit: usize,
) -> Result<(hyper::http::request::Parts, Bytes), Error> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::PayloadTooLarge(limit));
    }
    let (parts, body) = req.into_parts();
    let bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Error::PayloadTooLarge(limit)
            } else {
                Error::bad_request("body", "the request body could not be read")
            }
        })?
        .to_bytes();
    Ok((parts, bytes))
}

/// True when the request's Content-Type is `expected` (parameters such as charset ignored).
pub fn has_content_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

/// Decoded `application/x-www-form-urlencoded` parameters, in the order sent. A token request
/// has a handful, so a list searched in order beats hashing each name.
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

/// The one form parameter that may be repeated (RFC 8707 §2).
const REPEATABLE: &str = "resource";

impl Form {
    /// Decodes a form body. RFC 6749 §3.1: parameters "MUST NOT be included more than once"
    /// (a repeat is an error) and "sent without a value MUST be treated as if they were omitted".
    /// The exception is `resource`, which RFC 8707 §2 lets a client repeat, one per resource.
    pub fn parse(body: &[u8]) -> Result<Form, Error> {
        let mut params: Vec<(String, String)> = Vec::new();
        // Repeats are found by comparing with every earlier name while there are few; past
        // that, through a set, so a body of thousands of parameters stays linear.
        let mut seen: Option<HashSet<String>> = None;
        for (k, v) in form_urlencoded::parse(body) {
            let repeated = match &mut seen {
                Some(seen) => !seen.insert(k.to_string()),
                None => {
                    let repeated = params.iter().any(|(name, _)| *name == k);
                    if params.len() >= 16 {
                        seen = Some(params.iter().map(|(name, _)| name.clone()).collect());
                        seen.as_mut().expect("just set").insert(k.to_string());
                    }
                    repeated
                }
            };
            if repeated && k != REPEATABLE {
                return Err(Error::oauth(
                    ErrorCode::InvalidRequest,
                    format!("parameter `{k}` is repeated"),
                ));
            }
            params.push((k.into_owned(), v.into_owned()));
        }
        params.retain(|(_, v)| !v.is_empty());
        Ok(Form(params))
    }

    /// Every value of a parameter that may be repeated (`resource`), in the order sent.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(name, _)| name == key)
            .map(|(_, v)| v.as_str())
    }

    /// An optional parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, v)| v.as_str())
    }

    /// A required parameter, or `invalid_request` naming it.
    pub fn require(&self, key: &str) -> Result<&str, Error> {
        self.get(key).ok_or_else(|| {
            Error::oauth(
                ErrorCode::InvalidRequest,
                format!("missing parameter `{key}`"),
            )
        })
    }

    /// An optional name a person will read (a device's name, OS or hostname): [`Form::text`],
    /// with invisible characters refused too ([`crate::text`]), as `invalid_request` naming
    /// the parameter.
    pub fn name(&self, key: &str, max_chars: usize) -> Result<Option<String>, Error> {
        if let Some(why) = self
            .get(key)
            .and_then(|v| crate::text::hidden_refusal(&format!("parameter `{key}`"), v))
        {
            return Err(Error::oauth(ErrorCode::InvalidRequest, why));
        }
        self.text(key, max_chars)
    }

    /// An optional free-text parameter, bounded in length, with control characters refused.
    pub fn text(&self, key: &str, max_chars: usize) -> Result<Option<String>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.chars().count() > max_chars || v.chars().any(char::is_control) => {
                Err(Error::oauth(
                    ErrorCode::InvalidRequest,
                    format!("parameter `{key}` must be at most {max_chars} characters without control characters"),
                ))
            }
            Some(v) => Ok(Some(v.trim().to_string())),
        }
    }
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's days-to-civil algorithm
/// (proleptic Gregorian, UTC).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with seconds, e.g.
/// `2026-11-22T23:00:00Z`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_388_400_123), "2026-11-22T23:00:00Z");
        assert_eq!(rfc3339(-1000), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn form_refuses_repeats_and_drops_empty() {
        let f = Form::parse(b"a=1&b=&c=x%20y+z").unwrap();
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), None);
        assert_eq!(f.get("c"), Some("x y z"));
        assert!(Form::parse(b"a=1&a=1").is_err());
        assert!(f.require("zzz").is_err());
        // A repeat is found however many parameters come between, also past the point where
        // names go into a set; an empty repeat counts too.
        for n in [3, 15, 16, 17, 40, 5000] {
            let mut body: Vec<String> = (0..n).map(|i| format!("p{i}=v")).collect();
            let many = Form::parse(body.join("&").as_bytes()).unwrap();
            assert_eq!(many.get(&format!("p{}", n - 1)), Some("v"));
            body.push("p1=".into());
            assert!(Form::parse(body.join("&").as_bytes()).is_err(), "n = {n}");
            body.pop();
            body.push(format!("p{}=w", n - 1));
            assert!(Form::parse(body.join("&").as_bytes()).is_err(), "n = {n}");
        }
    }

    /// RFC 8707 §2: `resource` may be repeated, before and after the names go into a set.
    #[test]
    fn form_keeps_every_resource() {
        let f = Form::parse(b"resource=https%3A%2F%2Fa&x=1&resource=urn%3Ab").unwrap();
        assert_eq!(
            f.get_all("resource").collect::<Vec<_>>(),
            ["https://a", "urn:b"]
        );
        let mut body: Vec<String> = (0..20).map(|i| format!("p{i}=v")).collect();
        body.extend((0..3).map(|i| format!("resource=urn:r{i}")));
        let f = Form::parse(body.join("&").as_bytes()).unwrap();
        assert_eq!(f.get_all("resource").count(), 3);
        assert_eq!(f.get_all("x").count(), 0);
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 1.2.3.4, 10.0.0.2".parse().unwrap(),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "5.5.5.5".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(proxy, &h, &trusted), proxy);
    }

    #[test]
    fn surfaces() {
        assert_eq!(Surface::of("/oauth/token"), Surface::OAuth);
        assert_eq!(
            Surface::of("/.well-known/oauth-authorization-server"),
            Surface::OAuth
        );
        assert_eq!(Surface::of("/api/v1/devices"), Surface::Api);
        assert_eq!(Surface::of("/apix"), Surface::Other);
        assert_eq!(Surface::of("/device"), Surface::Other);
    }
}
