//! The web pages over plain HTTP (issue 3): CSRF on every form, the code-guessing limits,
//! escaping of what devices report, the security headers of every page, browser sessions, the
//! approval flow, "My devices", the admins' authorizations page and the QR code.
//!
//! Runs the real binary through the API tests' harness. Cookies are handled by hand: each
//! [`Session`] carries its cookie and CSRF token, and redirects are never followed, so every
//! `303` and `Set-Cookie` is asserted as sent.

#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;
#[path = "../support/pg.rs"]
mod pg;

mod csrf;
mod devices;
mod escaping;
mod evicted;
mod flow;
mod guessing;
mod headers;
mod invisible;
mod limits;
mod person;
mod qr;
mod sessions;

use std::sync::OnceLock;
use std::time::Duration;

use harness::{Server, Started, PASSWORD};
use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// One HTTP client for every test: no redirects followed, no cookie store.
fn http() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(harness::USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client")
    })
}

/// An answer from a page.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Page {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Location`, which a 303 must have.
    pub fn location(&self) -> &str {
        self.header("location")
            .unwrap_or_else(|| panic!("no Location ({}): {}", self.status, self.text))
    }

    /// Every `Set-Cookie` line.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The `Set-Cookie` line of the cookie called `name`.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.split('=').next() == Some(name))
    }

    /// The value of the hidden form field `name` (the first one on the page).
    pub fn hidden(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.text.find(&marker)? + marker.len();
        let len = self.text[start..].find('"')?;
        Some(unescape(&self.text[start..start + len]))
    }

    /// The text of the first notice box (`<div class="notice …">…</div>`).
    pub fn notice(&self) -> Option<&str> {
        let start = self.text.find("<div class=\"notice")?;
        let open = start + self.text[start..].find('>')? + 1;
        let len = self.text[open..].find("</div>")?;
        Some(&self.text[open..open + len])
    }

    /// Asserts the status, printing the page otherwise.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Page {
        assert_eq!(
            self.status, status,
            "unexpected status; page:\n{}",
            self.text
        );
        self
    }
}

/// Undoes [`esc`]-style escaping of an attribute value.
pub fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Sends one request: `form` is sent urlencoded; `cookie` as the `Cookie` header.
pub fn send(
    server: &Server,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
    headers: &[(&str, &str)],
) -> Page {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http().request(method, server.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(f) = form {
        req = req.form(f);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().expect("body");
    Page {
        status,
        headers,
        text,
    }
}

/// A GET without cookies.
pub fn get(server: &Server, path: &str) -> Page {
    send(server, "GET", path, None, None, &[])
}

/// A signed-in browser: its session cookie, CSRF token and (behind a trusted proxy) the client
/// address it sends in `X-Forwarded-For`.
#[derive(Debug, Clone)]
pub struct Session {
    /// `name=value`, as sent in `Cookie`.
    pub cookie: String,
    /// The cookie's name (`hallpass_session` or `__Host-hallpass_session`).
    pub name: String,
    /// The cookie's value (the session id).
    pub value: String,
    /// The session's CSRF token, as the pages' forms carry it.
    pub csrf: String,
    /// The whole `Set-Cookie` line that started the session.
    pub set_cookie: String,
    /// `X-Forwarded-For` to send, if any.
    pub xff: Option<String>,
}

impl Session {
    fn extra(&self) -> Vec<(&str, &str)> {
        self.xff
            .as_deref()
            .map(|x| vec![("x-forwarded-for", x)])
            .unwrap_or_default()
    }

    /// GET a page with this session.
    pub fn get(&self, server: &Server, path: &str) -> Page {
        send(server, "GET", path, Some(&self.cookie), None, &self.extra())
    }

    /// GET from another client address (behind the trusted proxy).
    pub fn get_from(&self, server: &Server, path: &str, xff: &str) -> Page {
        send(
            server,
            "GET",
            path,
            Some(&self.cookie),
            None,
            &[("x-forwarded-for", xff)],
        )
    }

    /// POST a form with this session's cookie, the fields exactly as given (no CSRF added).
    pub fn post_raw(&self, server: &Server, path: &str, fields: &[(&str, &str)]) -> Page {
        send(
            server,
            "POST",
            path,
            Some(&self.cookie),
            Some(fields),
            &self.extra(),
        )
    }

    /// Follows a `303 See Other` as a browser does (post/redirect/get): GETs its `Location`
    /// with this session. The redirect itself must carry the pages' security headers.
    #[track_caller]
    pub fn follow(&self, server: &Server, r: &Page) -> Page {
        assert_eq!(r.status, 303, "not a redirect: {}", r.text);
        assert_secure_headers(r);
        self.get(server, r.location())
    }

    /// POST a form with this session's cookie and its CSRF token.
    pub fn post(&self, server: &Server, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(server, path, &all)
    }

    /// A JSON API call with the session cookie and, if given, `X-CSRF-Token`.
    pub fn api(
        &self,
        server: &Server,
        method: &str,
        path: &str,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> harness::Resp {
        let mut headers = vec![("cookie", self.cookie.as_str())];
        if let Some(t) = csrf {
            headers.push(("x-csrf-token", t));
        }
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        server.raw(
            method,
            path,
            &headers,
            body.map(|b| b.to_string().into_bytes()),
        )
    }
}

/// The sign-in form: its page, the double-submit cookie (`name=value`) and the form's token.
pub fn login_form(server: &Server, next: &str, xff: Option<&str>) -> (Page, String, String) {
    let headers: Vec<(&str, &str)> = xff
        .map(|x| vec![("x-forwarded-for", x)])
        .unwrap_or_default();
    let path = format!("/login?next={}", enc(next));
    let page = send(server, "GET", &path, None, None, &headers);
    page.expect(200);
    let line = page
        .set_cookies()
        .into_iter()
        .find(|c| {
            c.split('=')
                .next()
                .is_some_and(|n| n.ends_with("hallpass_login"))
        })
        .unwrap_or_else(|| panic!("no sign-in cookie: {:?}", page.headers))
        .to_string();
    let cookie = line.split(';').next().unwrap().trim().to_string();
    let token = page.hidden("csrf").expect("csrf field on the sign-in form");
    (page, cookie, token)
}

/// Posts the sign-in form (username, password, csrf, next) with `cookie`.
pub fn post_login(
    server: &Server,
    cookie: Option<&str>,
    csrf: &str,
    username: &str,
    password: &str,
    next: &str,
    xff: Option<&str>,
) -> Page {
    let headers: Vec<(&str, &str)> = xff
        .map(|x| vec![("x-forwarded-for", x)])
        .unwrap_or_default();
    send(
        server,
        "POST",
        "/login",
        cookie,
        Some(&[
            ("username", username),
            ("password", password),
            ("csrf", csrf),
            ("next", next),
        ]),
        &headers,
    )
}

/// Signs in as `username` (password [`PASSWORD`]) and reads the CSRF token from /devices.
pub fn sign_in(server: &Server, username: &str) -> Session {
    sign_in_via(server, username, None)
}

/// [`sign_in`] with `X-Forwarded-For: xff` on every request of the session.
pub fn sign_in_via(server: &Server, username: &str, xff: Option<&str>) -> Session {
    let (_, login_cookie, token) = login_form(server, "/devices", xff);
    let r = post_login(
        server,
        Some(&login_cookie),
        &token,
        username,
        PASSWORD,
        "/devices",
        xff,
    );
    assert_eq!(r.status, 303, "sign-in as {username}: {}", r.text);
    assert_eq!(r.location(), "/devices");
    let line = r
        .set_cookies()
        .into_iter()
        .find(|c| {
            c.split('=')
                .next()
                .is_some_and(|n| n.ends_with("hallpass_session"))
        })
        .unwrap_or_else(|| panic!("no session cookie: {:?}", r.headers))
        .to_string();
    let pair = line.split(';').next().unwrap().trim().to_string();
    let (name, value) = pair.split_once('=').unwrap();
    let mut s = Session {
        cookie: pair.clone(),
        name: name.to_string(),
        value: value.to_string(),
        csrf: String::new(),
        set_cookie: line.clone(),
        xff: xff.map(str::to_string),
    };
    let page = s.get(server, "/devices");
    page.expect(200);
    s.csrf = page.hidden("csrf").expect("csrf token in the page's forms");
    assert!(!s.csrf.is_empty());
    s
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/device?user_code=…`.
pub fn confirm_path(code: &str) -> String {
    format!("/device?user_code={}", enc(code))
}

/// A user code of the right shape that is not `except` (derived from it by changing letters).
pub fn other_code(except: &str, n: usize) -> String {
    const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let raw: Vec<u8> = except.bytes().filter(|b| *b != b'-').collect();
    let mut out = raw.clone();
    // Change the last two letters: `n` picks a different pair each time.
    let i = ALPHABET.iter().position(|c| *c == raw[7]).unwrap();
    let j = ALPHABET.iter().position(|c| *c == raw[6]).unwrap();
    out[7] = ALPHABET[(i + 1 + n % 19) % 20];
    out[6] = ALPHABET[(j + 1 + n / 19) % 20];
    let s = String::from_utf8(out).unwrap();
    assert_ne!(s, String::from_utf8(raw).unwrap());
    format!("{}-{}", &s[..4], &s[4..])
}

/// One poll's `error` (or `"ok"` for tokens).
pub fn poll_outcome(server: &Server, client: &str, s: &Started) -> String {
    let r = server.poll(client, &s.device_code);
    if r.status == 200 {
        return "ok".into();
    }
    r.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("poll: {} {}", r.status, r.text))
        .to_string()
}

/// The user's devices from the command line (`device list --user`).
pub fn cli_devices(server: &Server, user: &str) -> Vec<Value> {
    let out = server.cli_ok(&["device", "list", "--user", user], None);
    let v: Value = serde_json::from_str(&out).expect("device list prints JSON");
    match v {
        Value::Array(a) => a,
        Value::Object(ref o) if o.contains_key("items") => {
            v["items"].as_array().cloned().unwrap_or_default()
        }
        other => panic!("unexpected device list: {other}"),
    }
}

/// One device of `user` by id from the command line.
pub fn cli_device(server: &Server, user: &str, id: &str) -> Option<Value> {
    cli_devices(server, user)
        .into_iter()
        .find(|d| d["id"].as_str() == Some(id))
}

/// Asserts what every HTML page must carry: the security headers, the content type, and no
/// markup the Content-Security-Policy would block (inline styles, scripts, event handlers).
#[track_caller]
pub fn assert_secure_page(p: &Page) {
    assert_secure_headers(p);
    assert_eq!(
        p.header("content-type"),
        Some("text/html; charset=utf-8"),
        "content type ({})",
        p.status
    );
    assert_no_inline_code(&p.text);
}

/// The headers every response of the pages carries (HTML or not).
#[track_caller]
pub fn assert_secure_headers(p: &Page) {
    let csp = p
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("no CSP on a {} page: {:?}", p.status, p.headers));
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    assert!(
        directives.contains(&"frame-ancestors 'none'"),
        "CSP without frame-ancestors 'none': {csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(
        directives
            .iter()
            .any(|d| d.starts_with("default-src") || d.starts_with("script-src")),
        "CSP does not restrict scripts: {csp}"
    );
    assert!(!csp.contains('*'), "wildcard in CSP: {csp}");
    assert_eq!(p.header("x-frame-options"), Some("DENY"));
    let referrer = p.header("referrer-policy").expect("Referrer-Policy");
    assert!(
        ["no-referrer", "same-origin", "strict-origin"].contains(&referrer),
        "Referrer-Policy {referrer}"
    );
    assert_eq!(p.header("cache-control"), Some("no-store"));
    assert_eq!(p.header("x-content-type-options"), Some("nosniff"));
}

/// No `<script>`, no `style=` attribute, no `on…=` event handler in any tag.
#[track_caller]
pub fn assert_no_inline_code(html: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script element:\n{html}");
    assert!(!lower.contains("<style"), "a style element:\n{html}");
    assert!(!lower.contains("javascript:"), "a javascript: URL:\n{html}");
    let mut rest = lower.as_str();
    while let Some(open) = rest.find('<') {
        let tag_end = rest[open..].find('>').map_or(rest.len(), |e| open + e);
        let tag = &rest[open + 1..tag_end];
        // Attribute names: words before `=` outside quotes.
        let mut in_quote = false;
        let mut word = String::new();
        for c in tag.chars() {
            match c {
                '"' => {
                    in_quote = !in_quote;
                    word.clear();
                }
                _ if in_quote => {}
                '=' => {
                    assert!(
                        word != "style" && !word.starts_with("on"),
                        "inline `{word}=` in <{tag}>"
                    );
                    word.clear();
                }
                c if c.is_whitespace() || c == '/' => word.clear(),
                c => word.push(c),
            }
        }
        rest = &rest[tag_end.min(rest.len())..];
        if rest.is_empty() {
            break;
        }
        rest = &rest[1..];
    }
}

/// A server with users `root` (admin), `alice`, `bob` and the public client `cli` (scopes
/// `devices admin`); `env` overrides configuration.
pub struct Site {
    pub server: Server,
    pub cli: String,
    pub alice_id: String,
    pub bob_id: String,
    pub root_id: String,
}

impl Site {
    pub fn new(env: &[(&str, &str)]) -> Site {
        let server = Server::start_with(env);
        let root_id = server.add_user("root", true);
        let alice_id = server.add_user("alice", false);
        let bob_id = server.add_user("bob", false);
        let (cli, _) = server.add_client("cli", "devices admin", &[]);
        Site {
            server,
            cli,
            alice_id,
            bob_id,
            root_id,
        }
    }

    /// A device of `user`, approved from the command line, with its tokens.
    pub fn device(&self, user: &str, name: &str) -> harness::Tokens {
        self.server
            .login_named(&self.cli, user, "devices", name, false)
    }

    /// A pending code from `cli`.
    pub fn pending(&self, name: &str) -> Started {
        self.server.start_device(&self.cli, "devices", name)
    }
}

impl std::ops::Deref for Site {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

#[test]
fn inline_code_detector_catches_what_csp_blocks() {
    for bad in [
        "<p style=\"color:red\">x</p>",
        "<img src=x onerror=alert(1)>",
        "<SCRIPT>alert(1)</SCRIPT>",
        "<a href=\"javascript:alert(1)\">x</a>",
        "<body onload=\"x()\">",
    ] {
        let caught = std::panic::catch_unwind(|| assert_no_inline_code(bad)).is_err();
        assert!(caught, "{bad}");
    }
    assert_no_inline_code(
        "<p class=\"x\" data-on=\"1\">&lt;img src=x onerror=alert(1)&gt; style=&quot;</p>",
    );
}
