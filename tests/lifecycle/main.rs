//! Integration tests of the token lifecycle (issue 4) against the real binary: refresh rotation
//! and reuse detection (RFC 6749 §6, RFC 9700 §4.14.2), device lifetimes, client credentials
//! (RFC 6749 §4.4), per-request client rules, reserved scopes, revocation (RFC 7009),
//! introspection (RFC 7662), signing keys (rotation, revocation, ES256) checked with an
//! independent JOSE implementation, and the RFC 9068 access-token profile.
//!
//! Each test starts its own server on port 0 with a temporary database (see [`harness`]).
//! Lifetimes are shortened through `HALLPASS_*` variables so expiry takes seconds.

#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;
#[path = "../support/pg.rs"]
mod pg;
mod rfc9068;

mod cli;

use std::cell::RefCell;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::{jwt_part, keys, tokens, Resp, Server, Tokens, World};
use jsonwebtoken::jwk::{JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Seconds since the epoch.
fn now_secs() -> i64 {
    now_ms() / 1000
}

/// Sleeps until the wall clock reaches `ms` (milliseconds since the epoch).
fn sleep_until_ms(ms: i64) {
    let wait = ms - now_ms();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(wait as u64));
    }
}

/// Parses the API's `YYYY-MM-DDTHH:MM:SSZ` into seconds since the epoch.
fn rfc3339_secs(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    let n = |a: usize, b: usize| -> i64 { s[a..b].parse().expect("digits") };
    assert!(s.len() == 20 && s.ends_with('Z'), "{s}");
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19)
}

/// Checks an RFC 6749 §5.2 error: status, `error` code, a description, and no caching.
fn assert_oauth_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(
        r.status, status,
        "expected {status} {code}, got: {}",
        r.text
    );
    assert_eq!(r.body["error"], code, "{}", r.text);
    assert!(
        r.body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        r.text
    );
    assert_eq!(r.header("cache-control"), Some("no-store"), "{}", r.text);
}

/// A successful refresh for a public client.
fn refreshed(s: &Server, client_id: &str, refresh_token: &str) -> Tokens {
    let r = s.refresh(client_id, refresh_token);
    assert_eq!(r.status, 200, "refresh: {}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    tokens(&r.body)
}

/// A refresh with an explicit `scope` parameter.
fn refresh_with_scope(s: &Server, client_id: &str, refresh_token: &str, scope: &str) -> Resp {
    s.form(
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
            ("scope", scope),
        ],
    )
}

/// The full RFC 7662 answer for `token`, asked by a confidential client in the body.
fn introspection(s: &Server, client_id: &str, secret: &str, token: &str) -> Value {
    let r = s.form(
        "/oauth/introspect",
        &[
            ("token", token),
            ("client_id", client_id),
            ("client_secret", secret),
        ],
    );
    assert_eq!(r.status, 200, "introspect: {}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    r.body
}

/// `POST /oauth/revoke` as a public client.
fn revoke(s: &Server, client_id: &str, token: &str, hint: Option<&str>) -> Resp {
    let mut form = vec![("token", token), ("client_id", client_id)];
    if let Some(h) = hint {
        form.push(("token_type_hint", h));
    }
    s.form("/oauth/revoke", &form)
}

/// A device as the API shows it, read with `token`.
fn device(s: &Server, token: &str, id: &str) -> Value {
    let r = s.get(&format!("/api/v1/devices/{id}"), token);
    assert_eq!(r.status, 200, "device {id}: {}", r.text);
    r.body
}

/// A plain HTTP client for requests the harness does not make (Basic authentication).
fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// Reads a reqwest answer into the harness's shape.
fn resp(r: reqwest::blocking::Response) -> Resp {
    Server::finish(r)
}

/// POSTs a form to `path` with HTTP Basic client authentication (RFC 6749 §2.3.1).
fn form_basic(s: &Server, path: &str, id: &str, secret: &str, fields: &[(&str, &str)]) -> Resp {
    resp(
        http()
            .post(s.url(path))
            .basic_auth(id, Some(secret))
            .form(fields)
            .send()
            .expect("POST"),
    )
}

/// The published JWKS, parsed by jsonwebtoken.
fn jwks(s: &Server) -> JwkSet {
    http()
        .get(s.url("/oauth/jwks"))
        .send()
        .expect("GET jwks")
        .json()
        .expect("a JWK set")
}

/// The kids in the published JWKS.
fn published_kids(s: &Server) -> Vec<String> {
    let mut kids: Vec<String> = jwks(s)
        .keys
        .iter()
        .map(|k| k.common.key_id.clone().expect("every JWK has a kid"))
        .collect();
    kids.sort();
    kids
}

/// The `kid` of a JWT's header.
fn kid(token: &str) -> String {
    jwt_part(token, 0)["kid"]
        .as_str()
        .expect("kid in the header")
        .to_string()
}

/// Verifies `token` with jsonwebtoken against the server's current JWKS: signature with
/// `alg`, issuer, expiry, and the audience when one is given. Returns the claims.
fn verify(s: &Server, token: &str, alg: Algorithm, aud: Option<&str>) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
    let kid = header.kid.ok_or("no kid in the header")?;
    let set = jwks(s);
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWK: {e}"))?;
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[s.base.as_str()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
    validation.leeway = 0;
    match aud {
        Some(a) => validation.set_audience(&[a]),
        None => validation.validate_aud = false,
    }
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| format!("verification: {e}"))
}

/// Fresh admin access tokens for tests whose access tokens live only seconds: each call
/// rotates root's refresh token.
struct Admin<'a> {
    w: &'a World,
    refresh: RefCell<String>,
}

impl<'a> Admin<'a> {
    fn new(w: &'a World) -> Admin<'a> {
        Admin {
            w,
            refresh: RefCell::new(w.root.refresh.clone()),
        }
    }

    fn token(&self) -> String {
        let current = self.refresh.borrow().clone();
        let t = refreshed(self.w, &self.w.cli, &current);
        *self.refresh.borrow_mut() = t.refresh;
        t.access
    }
}

/// Runs `hallpass --config F ARGS…` with the same `HALLPASS_*` overrides the server got: the
/// command line reads the configuration itself (the harness's `cli` passes no environment), so
/// `device approve` and `keys rotate` need them to apply the server's lifetimes and algorithm.
fn cli_with(s: &Server, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = std::process::Command::new(harness::BIN)
        .arg("--config")
        .arg(s.db_path().with_file_name("hallpass.toml"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hallpass");
    assert!(
        out.status.success(),
        "hallpass {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// A device flow approved from the command line with `env`: start, approve, exchange.
fn login_with(
    s: &Server,
    env: &[(&str, &str)],
    client_id: &str,
    user: &str,
    name: &str,
    trusted: bool,
) -> Tokens {
    let started = s.start_device(client_id, "devices", name);
    let mut args = vec!["device", "approve", &started.user_code, "--user", user];
    if trusted {
        args.push("--trusted");
    }
    cli_with(s, env, &args);
    s.exchange(client_id, &started.device_code)
}

/// How many audit events with `action` the database holds.
fn audit_count(s: &Server, action: &str) -> i64 {
    s.query(
        "SELECT count(*) FROM audit_events WHERE action = $1",
        &[action.into()],
    )[0][0]
        .as_i64()
        .expect("count audit events")
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens
// ---------------------------------------------------------------------------------------------

#[test]
fn refresh_rotates_updates_last_login_and_reuse_revokes_the_family() {
    let w = World::new();
    let (alice_id, a0) = w.user("alice");
    let other_device = w.login(&w.cli, "alice", "devices");
    let d0 = device(&w, &a0.access, &a0.device_id);
    assert_eq!(d0["status"], "active", "exchanged: {d0}");
    let first_login = rfc3339_secs(&d0["last_login"]);

    // last_login has second precision: step past a second so the refresh must move it.
    std::thread::sleep(Duration::from_millis(1100));
    let r = w.refresh(&w.cli, &a0.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["scope"], "devices");
    assert_eq!(r.body["expires_in"], 900);
    let a1 = tokens(&r.body);
    assert_ne!(
        a1.refresh, a0.refresh,
        "rotation issues a new refresh token"
    );
    assert_ne!(a1.access, a0.access);
    assert_eq!(a1.device_id, a0.device_id, "same device");
    assert_eq!(jwt_part(&a1.access, 1)["sub"], alice_id.as_str());
    let d1 = device(&w, &a1.access, &a1.device_id);
    let second_login = rfc3339_secs(&d1["last_login"]);
    assert!(
        second_login > first_login,
        "last_login moves on refresh: {} -> {}",
        d0["last_login"],
        d1["last_login"]
    );
    assert!(
        (second_login - now_secs()).abs() <= 2,
        "{}",
        d1["last_login"]
    );

    // A used refresh token is inactive; its successor active.
    assert!(!w.active(&a0.refresh));
    assert!(w.active(&a1.refresh));
    let a2 = refreshed(&w, &w.cli, &a1.refresh);
    assert_ne!(a2.refresh, a1.refresh);
    assert!(w.active(&a2.refresh));

    // Another client cannot use alice's refresh token, and trying does not burn it.
    let (other_client, _) = w.add_client("other", "devices", &[]);
    let r = w.refresh(&other_client, &a2.refresh);
    assert_oauth_error(&r, 400, "invalid_grant");
    assert!(w.active(&a2.refresh));
    assert_eq!(audit_count(&w, "refresh_token.reuse"), 0);

    // Theft: the first token comes back. invalid_grant, and the whole family is revoked,
    // the newest member included.
    let r = w.refresh(&w.cli, &a0.refresh);
    assert_oauth_error(&r, 400, "invalid_grant");
    assert_oauth_error(&w.refresh(&w.cli, &a2.refresh), 400, "invalid_grant");
    assert_oauth_error(&w.refresh(&w.cli, &a1.refresh), 400, "invalid_grant");
    assert!(
        !w.active(&a2.refresh),
        "the newest refresh token is revoked"
    );
    assert_eq!(audit_count(&w, "refresh_token.reuse"), 1);
    // The access tokens of the stolen grant die with it (RFC 7009 §2.1's rule for revoked
    // refresh tokens applies to a family revoked for reuse too); the device record stays.
    assert!(!w.active(&a2.access), "the newest access token is revoked");
    assert_eq!(
        device(&w, &w.root.access, &a0.device_id)["status"],
        "active"
    );

    // Alice's other sign-in is another family and keeps working.
    let other = refreshed(&w, &w.cli, &other_device.refresh);
    assert!(w.active(&other.access));
}

/// Issue 19 §2: requests-oauthlib's `OAuth2Session.refresh_token()` sends no `client_id` for a
/// public client. RFC 6749 §6 asks authentication only of confidential clients, so a public
/// client is known by its refresh token, with rotation and reuse detection as usual; a
/// confidential client's refresh token without authentication is `invalid_client`, rotates
/// nothing and, as the caller proved nothing, revokes nothing even when the token was used.
#[test]
fn a_public_client_refreshes_without_client_id_a_confidential_one_must_authenticate() {
    let w = World::new();
    let bare = |token: &str| {
        w.form(
            "/oauth/token",
            &[("grant_type", "refresh_token"), ("refresh_token", token)],
        )
    };
    let (_, a0) = w.user("alice");
    let r = bare(&a0.refresh);
    assert_eq!(
        r.status, 200,
        "a public client's refresh without client_id: {}",
        r.text
    );
    let a1 = tokens(&r.body);
    assert_eq!(jwt_part(&a1.access, 1)["client_id"], w.cli.as_str());
    assert_eq!(a1.device_id, a0.device_id);
    assert_ne!(a1.refresh, a0.refresh, "rotated");
    assert!(!w.active(&a0.refresh));
    assert!(w.active(&a1.refresh));
    // The used token again, still without client_id: reuse, the family is revoked.
    assert_oauth_error(&bare(&a0.refresh), 400, "invalid_grant");
    assert!(!w.active(&a1.refresh));
    assert_eq!(audit_count(&w, "refresh_token.reuse"), 1);
    // A token nobody issued.
    assert_oauth_error(&bare("not-a-refresh-token"), 400, "invalid_grant");

    // A confidential client that may use the device flow, signed in as alice.
    let (backend, secret) = w.add_client("backend", "devices", &["--confidential"]);
    let secret = secret.expect("a secret");
    let r = form_basic(&w, "/oauth/device_authorization", &backend, &secret, &[]);
    assert_eq!(r.status, 200, "{}", r.text);
    w.approve(r.body["user_code"].as_str().unwrap(), "alice", false);
    let r = form_basic(
        &w,
        "/oauth/token",
        &backend,
        &secret,
        &[
            ("grant_type", harness::DEVICE_GRANT),
            ("device_code", r.body["device_code"].as_str().unwrap()),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let c0 = tokens(&r.body);
    // Without authentication: invalid_client (401 with a challenge), and nothing rotated.
    let r = bare(&c0.refresh);
    assert_oauth_error(&r, 401, "invalid_client");
    assert!(r.header("www-authenticate").is_some(), "{:?}", r.headers);
    assert!(w.active(&c0.refresh), "not rotated");
    // With client_id alone, as before: invalid_client.
    assert_oauth_error(&w.refresh(&backend, &c0.refresh), 401, "invalid_client");
    // Authenticated, the same token still works once.
    let refresh = |token: &str| {
        form_basic(
            &w,
            "/oauth/token",
            &backend,
            &secret,
            &[("grant_type", "refresh_token"), ("refresh_token", token)],
        )
    };
    let r = refresh(&c0.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    let c1 = tokens(&r.body);
    // The used token without authentication is not reuse: the family lives on.
    assert_oauth_error(&bare(&c0.refresh), 401, "invalid_client");
    assert!(
        w.active(&c1.refresh),
        "an unauthenticated caller revoked nothing"
    );
    assert!(w.active(&c1.access));
    assert_eq!(audit_count(&w, "refresh_token.reuse"), 1);
    // Authenticated, the used token is reuse as ever.
    assert_oauth_error(&refresh(&c0.refresh), 400, "invalid_grant");
    assert!(!w.active(&c1.refresh));
    assert_eq!(audit_count(&w, "refresh_token.reuse"), 2);
}

#[test]
fn refresh_fails_once_the_device_is_locked_removed_or_its_user_disabled() {
    let w = World::new();
    let (_, a) = w.user("alice");
    let (bob_id, b) = w.user("bob");
    assert!(w.active(&a.access));

    // Locked from the command line: refresh and introspection refuse, without using up the
    // token (a refused refresh is not a rotation, and not a reuse).
    let out = w.cli_ok(&["device", "lock", &a.device_id], None);
    assert!(out.contains("locked"), "{out}");
    assert_oauth_error(&w.refresh(&w.cli, &a.refresh), 400, "invalid_grant");
    assert!(!w.active(&a.access), "a locked device's access token");
    assert!(!w.active(&a.refresh), "a locked device's refresh token");
    w.cli_ok(&["device", "unlock", &a.device_id], None);
    assert!(w.active(&a.access));
    let a1 = refreshed(&w, &w.cli, &a.refresh);
    assert_eq!(audit_count(&w, "refresh_token.reuse"), 0);

    // Removed from the command line: its tokens, old and new, introspect inactive at once.
    assert!(w.active(&a1.access));
    let out = w.cli_ok(&["device", "remove", &a.device_id], None);
    assert!(out.contains(&a.device_id), "{out}");
    assert_oauth_error(&w.refresh(&w.cli, &a1.refresh), 400, "invalid_grant");
    assert!(!w.active(&a1.access), "removed device: access token");
    assert!(!w.active(&a.access), "removed device: earlier access token");
    assert!(!w.active(&a1.refresh), "removed device: refresh token");
    assert_eq!(w.get("/api/v1/devices", &a1.access).status, 401);
    let out = w.cli(&["device", "remove", &a.device_id], None);
    assert_eq!(out.status.code(), Some(1), "removing twice fails");

    // A disabled user's device: inactive and no refresh until the user is enabled again.
    let path = format!("/api/v1/admin/users/{bob_id}");
    let r = w.patch(&path, &w.root.access, json!({ "disabled": true }));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!w.active(&b.access));
    assert_oauth_error(&w.refresh(&w.cli, &b.refresh), 400, "invalid_grant");
    let r = w.patch(&path, &w.root.access, json!({ "disabled": false }));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(w.active(&b.access));
    refreshed(&w, &w.cli, &b.refresh);
}

#[test]
fn concurrent_refreshes_of_one_token_rotate_it_once() {
    let w = Arc::new(World::new());
    let (_, a) = w.user("alice");
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (w, barrier, token) = (w.clone(), barrier.clone(), a.refresh.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = w.refresh(&w.cli, &token);
                (
                    r.status,
                    r.body["error"].clone(),
                    r.body["refresh_token"].clone(),
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (status, error, _) in results.iter().filter(|r| r.0 != 200) {
        assert_eq!((*status, error.as_str()), (400, Some("invalid_grant")));
    }
    // The losers presented a used token: that is reuse, so the winner's token is revoked too
    // (the server cannot tell which party is legitimate).
    let new_refresh = winners[0].2.as_str().unwrap();
    assert_oauth_error(&w.refresh(&w.cli, new_refresh), 400, "invalid_grant");
    assert!(audit_count(&w, "refresh_token.reuse") >= 1);
}

#[test]
fn refresh_tokens_expire_after_their_own_lifetime_on_a_live_device() {
    let w = World::with_env(&[("HALLPASS_OAUTH_REFRESH_TOKEN_LIFETIME", "2s")]);
    let (_, a) = w.user("alice");
    let t = refreshed(&w, &w.cli, &a.refresh);
    let i = introspection(&w, &w.svc, &w.svc_secret, &t.refresh);
    let exp = i["exp"].as_i64().expect("exp");
    assert!(exp <= now_secs() + 2, "{i}");
    sleep_until_ms((exp + 1) * 1000 + 100);
    assert!(!w.active(&t.refresh));
    assert_oauth_error(&w.refresh(&w.cli, &t.refresh), 400, "invalid_grant");
    assert_eq!(
        audit_count(&w, "refresh_token.reuse"),
        0,
        "expiry is not reuse"
    );
    // The device itself, and its access token, are fine.
    assert!(w.active(&t.access));
    assert_eq!(w.get("/api/v1/devices", &t.access).status, 200);
}

/// RFC 6749 §6: "If a new refresh token is issued, the refresh token scope MUST be identical
/// to that of the refresh token included by the client in the request." A `scope` parameter
/// narrows the access token only.
#[test]
fn refresh_scope_parameter_narrows_only_the_access_token() {
    let w = World::new();
    w.add_user("alice", false);
    let t = w.login(&w.cli, "alice", "devices extra");
    assert_eq!(t.scope, "devices extra");

    // Wider than the original grant: invalid_scope, and the token is not used up.
    let r = refresh_with_scope(&w, &w.cli, &t.refresh, "devices extra admin");
    assert_oauth_error(&r, 400, "invalid_scope");

    let r = refresh_with_scope(&w, &w.cli, &t.refresh, "devices");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["scope"], "devices");
    let narrowed = tokens(&r.body);
    assert_eq!(jwt_part(&narrowed.access, 1)["scope"], "devices");

    // The new refresh token still carries the original scope.
    let r = refresh_with_scope(&w, &w.cli, &narrowed.refresh, "devices extra");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["scope"], "devices extra");
}

// ---------------------------------------------------------------------------------------------
// Device lifetimes
// ---------------------------------------------------------------------------------------------

#[test]
fn trusted_and_untrusted_device_lifetimes_bound_refresh_tokens() {
    let env = [
        ("HALLPASS_DEVICES_UNTRUSTED_LIFETIME", "3s"),
        ("HALLPASS_DEVICES_TRUSTED_LIFETIME", "1h"),
    ];
    let s = Server::start_with(&env);
    s.add_user("alice", false);
    let (cli, _) = s.add_client("cli", "devices", &[]);
    let (svc, secret) = s.add_client(
        "svc",
        "",
        &["--confidential", "--grant", "client_credentials"],
    );
    let secret = secret.expect("secret");

    let before = now_secs();
    let trusted = login_with(&s, &env, &cli, "alice", "laptop", true);
    let after = now_secs();
    let d = device(&s, &trusted.access, &trusted.device_id);
    assert_eq!(d["trusted_device"], true);
    let expires = rfc3339_secs(&d["expires"]);
    assert!(
        (before + 3600 - 1..=after + 3600 + 1).contains(&expires),
        "trusted device expires in 1h: {}",
        d["expires"]
    );
    // The refresh token (30 days by default) is cut to the device's expiry.
    let i = introspection(&s, &svc, &secret, &trusted.refresh);
    assert_eq!(i["active"], true, "{i}");
    assert!(i["exp"].as_i64().unwrap() <= expires, "{i} vs {expires}");
    // Approval through the API ("trust this device") gets the same lifetime.
    let started = s.start_device(&cli, "devices", "desktop");
    let before = now_secs();
    let r = s.put(
        "/api/v1/devices/verify",
        &trusted.access,
        json!({ "user_code": started.user_code, "trusted_device": true }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["trusted_device"], true);
    let api_expires = rfc3339_secs(&r.body["expires"]);
    assert!(
        (before + 3600 - 1..=now_secs() + 3600 + 1).contains(&api_expires),
        "{}",
        r.text
    );

    let approved_at = now_ms();
    let untrusted = login_with(&s, &env, &cli, "alice", "kiosk", false);
    let d = device(&s, &trusted.access, &untrusted.device_id);
    assert_eq!(d["trusted_device"], false);
    let expires = rfc3339_secs(&d["expires"]);
    assert!(
        (approved_at / 1000 + 3 - 1..=now_secs() + 3 + 1).contains(&expires),
        "untrusted device expires in 3s: {}",
        d["expires"]
    );
    let i = introspection(&s, &svc, &secret, &untrusted.refresh);
    assert!(i["exp"].as_i64().unwrap() <= expires, "{i} vs {expires}");
    // Rotation does not extend the device's life.
    let rotated = refreshed(&s, &cli, &untrusted.refresh);
    let i = introspection(&s, &svc, &secret, &rotated.refresh);
    assert_eq!(i["active"], true, "{i}");
    assert!(i["exp"].as_i64().unwrap() <= expires, "{i} vs {expires}");

    // Past the device's expiry (which the API rounds down to the second).
    sleep_until_ms((expires + 1) * 1000 + 100);
    assert_oauth_error(&s.refresh(&cli, &rotated.refresh), 400, "invalid_grant");
    assert!(!s.introspect(&svc, &secret, &rotated.access));
    assert!(!s.introspect(&svc, &secret, &rotated.refresh));
    assert_eq!(s.get("/api/v1/devices", &rotated.access).status, 401);

    // The trusted device lives on.
    let t = refreshed(&s, &cli, &trusted.refresh);
    assert!(s.introspect(&svc, &secret, &t.access));
}

// ---------------------------------------------------------------------------------------------
// Client credentials and per-client rules
// ---------------------------------------------------------------------------------------------

#[test]
fn client_credentials_with_basic_and_post_authentication() {
    let s = Server::start();
    let (svc, secret) = s.add_client(
        "svc",
        "read write",
        &["--confidential", "--grant", "client_credentials"],
    );
    let secret = secret.expect("secret");
    let (public, _) = s.add_client("pub", "read", &[]);
    let (plain, plain_secret) = s.add_client("conf", "read", &["--confidential"]);
    let plain_secret = plain_secret.expect("secret");
    let cc = [("grant_type", "client_credentials"), ("scope", "read")];

    // client_secret_basic.
    let r = form_basic(&s, "/oauth/token", &svc, &secret, &cc);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["scope"], "read");
    assert!(r.body.get("refresh_token").is_none(), "RFC 6749 §4.4.3");
    let access = r.body["access_token"].as_str().unwrap().to_string();
    let claims = verify(&s, &access, Algorithm::EdDSA, None).expect("verifies");
    assert_eq!(claims["sub"], svc.as_str());
    assert_eq!(claims["client_id"], svc.as_str());
    assert!(claims.get("device_id").is_none(), "{claims}");
    let i = introspection(&s, &svc, &secret, &access);
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["sub"], svc.as_str());
    assert!(i.get("username").is_none() && i.get("device_id").is_none());

    // client_secret_post.
    let r = s.client_credentials(&svc, &secret, "read write");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["scope"], "read write");
    assert!(r.body.get("refresh_token").is_none());

    // Wrong secrets: 401 invalid_client, with WWW-Authenticate for Basic (RFC 6749 §5.2).
    let r = form_basic(&s, "/oauth/token", &svc, "wrong", &cc);
    assert_oauth_error(&r, 401, "invalid_client");
    assert!(r.header("www-authenticate").is_some(), "{:?}", r.headers);
    assert_oauth_error(
        &s.client_credentials(&svc, "wrong", "read"),
        401,
        "invalid_client",
    );
    let r = s.form(
        "/oauth/token",
        &[("grant_type", "client_credentials"), ("client_id", &svc)],
    );
    assert_oauth_error(&r, 401, "invalid_client");
    // Both methods at once are refused.
    let r = resp(
        http()
            .post(s.url("/oauth/token"))
            .basic_auth(&svc, Some(&secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_secret", secret.as_str()),
            ])
            .send()
            .unwrap(),
    );
    assert_oauth_error(&r, 400, "invalid_request");

    // A scope the client may not have.
    let r = s.client_credentials(&svc, &secret, "read admin");
    assert_oauth_error(&r, 400, "invalid_scope");

    // A public client cannot use the grant (and cannot be given it).
    let r = s.form(
        "/oauth/token",
        &[("grant_type", "client_credentials"), ("client_id", &public)],
    );
    assert_oauth_error(&r, 400, "unauthorized_client");
    let r = s.client_credentials(&public, "made-up", "read");
    assert_oauth_error(&r, 401, "invalid_client");
    let out = s.cli(
        &[
            "client",
            "add",
            "--name",
            "bad",
            "--grant",
            "client_credentials",
        ],
        None,
    );
    assert!(!out.status.success(), "a public client_credentials client");

    // A confidential client without the grant.
    let r = s.client_credentials(&plain, &plain_secret, "read");
    assert_oauth_error(&r, 400, "unauthorized_client");
    let r = form_basic(&s, "/oauth/token", &plain, &plain_secret, &cc);
    assert_oauth_error(&r, 400, "unauthorized_client");
}

#[test]
fn client_changes_apply_at_the_next_request_and_issued_tokens_live_to_expiry() {
    let w = World::with_env(&[("HALLPASS_OAUTH_ACCESS_TOKEN_LIFETIME", "3s")]);
    let admin = Admin::new(&w);
    let r = w.post(
        "/api/v1/admin/oauth/clients",
        &admin.token(),
        Some(json!({ "name": "app", "allowed_scopes": ["devices", "extra"] })),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let app = r.body["client_id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/admin/oauth/clients/{app}");
    w.add_user("alice", false);
    let t = w.login(&app, "alice", "devices extra");
    assert_eq!(t.scope, "devices extra");
    let pending = w.start_device(&app, "extra", "later");
    w.approve(&pending.user_code, "alice", false);

    // Narrow the client's scopes.
    let r = w.patch(
        &path,
        &admin.token(),
        json!({ "allowed_scopes": ["extra"] }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // The issued access token stays valid, with its scope, until it expires.
    let i = introspection(&w, &w.svc, &w.svc_secret, &t.access);
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["scope"], "devices extra");
    // The next refresh is narrowed.
    let r = w.refresh(&app, &t.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["scope"], "extra");
    let narrowed = tokens(&r.body);
    assert_eq!(jwt_part(&narrowed.access, 1)["scope"], "extra");
    let i = introspection(&w, &w.svc, &w.svc_secret, &narrowed.refresh);
    assert_eq!(i["scope"], "extra", "{i}");
    // And so is a new authorization.
    let r = w.form(
        "/oauth/device_authorization",
        &[("client_id", &app), ("scope", "devices")],
    );
    assert_oauth_error(&r, 400, "invalid_scope");

    // Dropping the device_code grant stops the exchange of an already approved code.
    let r = w.patch(
        &path,
        &admin.token(),
        json!({ "allowed_grants": ["refresh_token"] }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_oauth_error(
        &w.poll(&app, &pending.device_code),
        400,
        "unauthorized_client",
    );
    let r = w.form("/oauth/device_authorization", &[("client_id", &app)]);
    assert_oauth_error(&r, 400, "unauthorized_client");
    // A public client may not be given client_credentials.
    let r = w.patch(
        &path,
        &admin.token(),
        json!({ "allowed_grants": ["client_credentials"] }),
    );
    assert_eq!(r.status, 400, "{}", r.text);

    // The original access token expires on time.
    let exp = jwt_part(&t.access, 1)["exp"].as_i64().unwrap();
    sleep_until_ms(exp * 1000 + 100);
    assert!(!w.active(&t.access), "expired access token");
    assert_eq!(w.get("/api/v1/devices", &t.access).status, 401);
}

// ---------------------------------------------------------------------------------------------
// Reserved scopes
// ---------------------------------------------------------------------------------------------

#[test]
fn admin_scope_needs_an_admin_approver_and_devices_scope_lists_own_devices() {
    let w = World::new();
    let (alice_id, alice) = w.user("alice");
    let root2_id = w.add_user("root2", true);

    // A non-admin cannot approve a code asking for `admin` (README: granted only when the
    // approving user is an admin); the code stays pending.
    let s = w.start_device(&w.cli, "admin devices", "admin-tool");
    let out = w.cli(
        &["device", "approve", &s.user_code, "--user", "alice"],
        None,
    );
    assert!(!out.status.success(), "alice approved an admin code");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("administrator"), "{err}");
    assert_oauth_error(
        &w.poll(&w.cli, &s.device_code),
        400,
        "authorization_pending",
    );

    // An admin approves it and gets `admin`.
    w.approve(&s.user_code, "root2", false);
    let r2 = w.exchange(&w.cli, &s.device_code);
    assert_eq!(r2.scope, "admin devices");
    assert_eq!(w.get("/api/v1/admin/users", &r2.access).status, 200);

    // Demoted, root2 keeps the device but the next refresh drops `admin`.
    let r = w.patch(
        &format!("/api/v1/admin/users/{root2_id}"),
        &w.root.access,
        json!({ "is_admin": false }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = w.refresh(&w.cli, &r2.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["scope"], "devices");
    let demoted = tokens(&r.body);
    assert_eq!(jwt_part(&demoted.access, 1)["scope"], "devices");
    assert_eq!(w.get("/api/v1/admin/users", &demoted.access).status, 403);

    // `devices`: a token lists its own user's devices only.
    let r = w.get("/api/v1/devices", &alice.access);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["total"], 1, "{}", r.text);
    assert_eq!(r.body["items"][0]["user_id"], alice_id.as_str());
    assert_eq!(r.body["items"][0]["id"], alice.device_id.as_str());
    // Without `devices`, the same user's token cannot.
    let extra = w.login(&w.cli, "alice", "extra");
    assert_eq!(w.get("/api/v1/devices", &extra.access).status, 403);
}

// ---------------------------------------------------------------------------------------------
// Revocation (RFC 7009) and introspection (RFC 7662)
// ---------------------------------------------------------------------------------------------

#[test]
fn revocation_of_refresh_and_access_tokens() {
    let w = World::new();
    let (_, a) = w.user("alice");
    let a1 = refreshed(&w, &w.cli, &a.refresh);

    // A refresh token: its whole family ends (the current member and any successor).
    let r = revoke(&w, &w.cli, &a1.refresh, Some("refresh_token"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_oauth_error(&w.refresh(&w.cli, &a1.refresh), 400, "invalid_grant");
    assert!(!w.active(&a1.refresh));
    // Revoking again, or revoking an older member, is still 200.
    assert_eq!(revoke(&w, &w.cli, &a1.refresh, None).status, 200);
    assert_eq!(revoke(&w, &w.cli, &a.refresh, None).status, 200);

    // An access token, even with the wrong hint (RFC 7009 §2.1: the server extends its
    // search): inactive at once, and refused by the API.
    let b = w.login(&w.cli, "alice", "devices");
    assert!(w.active(&b.access));
    let r = revoke(&w, &w.cli, &b.access, Some("refresh_token"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!w.active(&b.access));
    assert_eq!(w.get("/api/v1/devices", &b.access).status, 401);
    // A refresh token with the access_token hint.
    let r = revoke(&w, &w.cli, &b.refresh, Some("access_token"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_oauth_error(&w.refresh(&w.cli, &b.refresh), 400, "invalid_grant");

    // Unknown tokens: 200 (RFC 7009 §2.2).
    for token in ["not-a-token", "a.b.c", "x".repeat(300).as_str()] {
        let r = revoke(&w, &w.cli, token, None);
        assert_eq!(r.status, 200, "{token}: {}", r.text);
    }

    // Another client's token is not revoked (hallpass answers 200 so nothing is revealed).
    let c = w.login(&w.cli, "alice", "devices");
    let (other, _) = w.add_client("other", "devices", &[]);
    revoke(&w, &other, &c.refresh, None);
    revoke(&w, &other, &c.access, None);
    assert!(w.active(&c.access));
    let c1 = refreshed(&w, &w.cli, &c.refresh);

    // Client authentication is required: a confidential client without or with a wrong
    // secret, an unknown client.
    let r = w.form(
        "/oauth/revoke",
        &[("token", &c1.refresh), ("client_id", &w.svc)],
    );
    assert_oauth_error(&r, 401, "invalid_client");
    let r = form_basic(
        &w,
        "/oauth/revoke",
        &w.svc,
        "wrong",
        &[("token", &c1.refresh)],
    );
    assert_oauth_error(&r, 401, "invalid_client");
    let r = revoke(&w, "no-such-client", &c1.refresh, None);
    assert_oauth_error(&r, 401, "invalid_client");
    assert!(w.active(&c1.refresh));

    // A confidential client revokes its client_credentials token with Basic authentication.
    let r = w.client_credentials(&w.svc, &w.svc_secret, "extra");
    let cc = r.body["access_token"].as_str().unwrap().to_string();
    assert!(w.active(&cc));
    let r = form_basic(
        &w,
        "/oauth/revoke",
        &w.svc,
        &w.svc_secret,
        &[("token", &cc), ("token_type_hint", "access_token")],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!w.active(&cc));
}

/// RFC 7009 §2.1: "If the token passed to the request is a refresh token and the authorization
/// server supports the revocation of access tokens, then the authorization server SHOULD also
/// invalidate all access tokens based on the same authorization grant." hallpass supports
/// access-token revocation.
#[test]
fn revoking_a_refresh_token_ends_the_access_tokens_of_its_grant() {
    let w = World::new();
    let (_, a) = w.user("alice");
    let a1 = refreshed(&w, &w.cli, &a.refresh);
    assert!(w.active(&a1.access));
    let r = revoke(&w, &w.cli, &a1.refresh, Some("refresh_token"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!w.active(&a1.access), "the current access token");
    assert!(
        !w.active(&a.access),
        "an earlier access token of the same grant"
    );
}

#[test]
fn introspection_by_confidential_clients_only() {
    let w = World::new();
    let (alice_id, a) = w.user("alice");
    let claims = jwt_part(&a.access, 1);

    // Basic authentication, an access token: RFC 7662 §2.2 members.
    let r = form_basic(
        &w,
        "/oauth/introspect",
        &w.svc,
        &w.svc_secret,
        &[("token", &a.access)],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let i = r.body;
    assert_eq!(i["active"], true);
    assert_eq!(i["token_type"], "Bearer");
    assert_eq!(i["scope"], "devices");
    assert_eq!(i["client_id"], w.cli.as_str());
    assert_eq!(i["sub"], alice_id.as_str());
    assert_eq!(i["username"], "alice");
    assert_eq!(i["iss"], w.base.as_str());
    assert_eq!(i["device_id"], a.device_id.as_str());
    for claim in ["iat", "exp", "jti"] {
        assert_eq!(i[claim], claims[claim], "{claim}");
    }

    // Body authentication, a refresh token.
    let i = introspection(&w, &w.svc, &w.svc_secret, &a.refresh);
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["client_id"], w.cli.as_str());
    assert_eq!(i["sub"], alice_id.as_str());
    assert_eq!(i["device_id"], a.device_id.as_str());
    assert!(i["exp"].as_i64().unwrap() > now_secs());

    // Anything unknown is `{"active": false}` and nothing else.
    for token in ["garbage", "a.b.c", &a.access[..a.access.len() - 2]] {
        let i = introspection(&w, &w.svc, &w.svc_secret, token);
        assert_eq!(i, json!({ "active": false }), "{token}");
    }

    // A public client may not introspect; nor may a wrong secret or no credentials.
    let r = w.form(
        "/oauth/introspect",
        &[("token", &a.access), ("client_id", &w.cli)],
    );
    assert_oauth_error(&r, 401, "invalid_client");
    assert!(r.body.get("active").is_none());
    let r = form_basic(
        &w,
        "/oauth/introspect",
        &w.svc,
        "wrong",
        &[("token", &a.access)],
    );
    assert_oauth_error(&r, 401, "invalid_client");
    let r = w.form("/oauth/introspect", &[("token", &a.access)]);
    assert!(
        r.status == 400 || r.status == 401,
        "no credentials: {}",
        r.text
    );
    assert!(r.body.get("active").is_none(), "{}", r.text);
    // Credentials are checked before the request's parameters: without them a missing token
    // is still invalid_client; with them, invalid_request.
    let r = w.form("/oauth/introspect", &[("client_id", &w.cli)]);
    assert_oauth_error(&r, 401, "invalid_client");
    let r = form_basic(&w, "/oauth/introspect", &w.svc, &w.svc_secret, &[]);
    assert_oauth_error(&r, 400, "invalid_request");

    // Locked through the API: inactive at once; unlocked: active again.
    let path = format!("/api/v1/devices/{}", a.device_id);
    let r = w.put(&path, &w.root.access, json!({ "locked": true }));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!w.active(&a.access));
    let r = w.put(&path, &w.root.access, json!({ "locked": false }));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(w.active(&a.access));
    // Removed through the API: inactive at once.
    let r = w.delete(&path, &w.root.access);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!w.active(&a.access));
    assert!(!w.active(&a.refresh));

    // Both endpoints are advertised (RFC 8414 §2).
    let meta: Value = http()
        .get(w.url("/.well-known/oauth-authorization-server"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(meta["revocation_endpoint"], w.url("/oauth/revoke").as_str());
    assert_eq!(
        meta["introspection_endpoint"],
        w.url("/oauth/introspect").as_str()
    );
    let methods = meta["introspection_endpoint_auth_methods_supported"]
        .as_array()
        .expect("introspection auth methods");
    assert!(methods.contains(&json!("client_secret_basic")));
    assert!(methods.contains(&json!("client_secret_post")));
    assert!(!methods.contains(&json!("none")), "{meta}");
    assert!(meta["revocation_endpoint_auth_methods_supported"].is_array());
    let grants = meta["grant_types_supported"].as_array().unwrap();
    for g in ["refresh_token", "client_credentials"] {
        assert!(grants.contains(&json!(g)), "{meta}");
    }
}

// ---------------------------------------------------------------------------------------------
// Signing keys
// ---------------------------------------------------------------------------------------------

#[test]
fn key_rotation_and_revocation_from_the_command_line_checked_with_jsonwebtoken() {
    let w = World::with_env(&[("HALLPASS_OAUTH_ACCESS_TOKEN_LIFETIME", "4s")]);
    let (_, a) = w.user("alice");
    let old_kid = kid(&a.access);
    assert_eq!(published_kids(&w), std::slice::from_ref(&old_kid));
    verify(&w, &a.access, Algorithm::EdDSA, None).expect("the first token verifies");

    let rotated: Value = serde_json::from_str(&w.cli_ok(&["keys", "rotate"], None)).unwrap();
    assert_eq!(rotated["algorithm"], "EdDSA");
    let new_kid = rotated["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    // The retired key is still published, and its token still verifies and is active.
    let mut both = vec![old_kid.clone(), new_kid.clone()];
    both.sort();
    assert_eq!(published_kids(&w), both);
    verify(&w, &a.access, Algorithm::EdDSA, None).expect("an old token after rotation");
    assert!(w.active(&a.access));
    let listed: Value = serde_json::from_str(&w.cli_ok(&["keys", "list"], None)).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let old = listed
        .iter()
        .find(|k| k["kid"] == old_kid.as_str())
        .unwrap();
    assert!(old["retired"].is_string(), "{old}");

    // New tokens (the server re-reads the active key within a second) carry the new kid. The
    // refresh token issued before the rotation works across it.
    std::thread::sleep(Duration::from_millis(1100));
    let b = refreshed(&w, &w.cli, &a.refresh);
    assert_eq!(kid(&b.access), new_kid);
    verify(&w, &b.access, Algorithm::EdDSA, None).expect("a new-key token verifies");
    assert!(w.active(&b.access));

    // Revoking the old key removes it from the JWKS at once; its tokens die.
    let out = w.cli_ok(&["keys", "revoke", "--", &old_kid], None);
    assert!(out.contains(&old_kid), "{out}");
    assert_eq!(published_kids(&w), std::slice::from_ref(&new_kid));
    let err = verify(&w, &a.access, Algorithm::EdDSA, None).unwrap_err();
    assert!(err.contains("not in the JWKS"), "{err}");
    assert!(!w.active(&a.access), "a token of a revoked key");
    assert_eq!(w.get("/api/v1/devices", &a.access).status, 401);
    assert!(w.active(&b.access));
    let out = w.cli(&["keys", "revoke", "--", &old_kid], None);
    assert_eq!(out.status.code(), Some(1), "revoking an unknown kid");

    // A retired key leaves the JWKS once every token it signed has expired (the access token
    // lifetime after its retirement).
    let rotated: Value = serde_json::from_str(&w.cli_ok(&["keys", "rotate"], None)).unwrap();
    let third_kid = rotated["kid"].as_str().unwrap().to_string();
    let retired_at = now_ms();
    assert!(published_kids(&w).contains(&new_kid));
    sleep_until_ms(retired_at + 4000 + 200);
    assert_eq!(published_kids(&w), [third_kid]);
}

/// After `keys revoke` of the *active* key, no token should be issued with it: every token the
/// server hands out afterwards must verify against the JWKS. The server caches its signer for
/// up to a second, so it may go on signing with the deleted key.
#[test]
fn revoking_the_active_key_never_signs_with_it_again() {
    let w = World::new();
    let (_, a) = w.user("alice");
    let active = kid(&a.access);
    // Let the signer cache go stale, then refresh it with one issue.
    std::thread::sleep(Duration::from_millis(1100));
    let a1 = refreshed(&w, &w.cli, &a.refresh);
    assert_eq!(kid(&a1.access), active);
    w.cli_ok(&["keys", "revoke", "--", &active], None);
    assert!(!published_kids(&w).contains(&active));
    let a2 = refreshed(&w, &w.cli, &a1.refresh);
    assert_ne!(kid(&a2.access), active, "signed with the revoked key");
    verify(&w, &a2.access, Algorithm::EdDSA, None).expect("a fresh token verifies");
    assert!(w.active(&a2.access));
}

/// A kid is a base64url thumbprint, so one in 64 starts with `-`; `hallpass keys revoke KID`
/// must still take it as the kid (an unknown one here: exit 1, "no key"), not as a flag.
#[test]
fn keys_revoke_takes_a_kid_starting_with_a_dash() {
    let s = Server::start();
    let kid = "-E2HM6Pksz86bDc2dS41z10cyTdhuTZ308LwLlqITqE";
    let out = s.cli(&["keys", "revoke", kid], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no key"), "{err}");
}

#[test]
fn es256_tokens_verify_with_jsonwebtoken() {
    const ES256: [(&str, &str); 1] = [("HALLPASS_OAUTH_SIGNING_ALGORITHM", "ES256")];
    let w = World::with_env(&ES256);
    let (_, a) = w.user("alice");
    let header = jwt_part(&a.access, 0);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "at+jwt");

    let set = jwks(&w);
    assert_eq!(set.keys.len(), 1);
    let raw: Value = http()
        .get(w.url("/oauth/jwks"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let jwk = &raw["keys"][0];
    assert_eq!(
        (
            jwk["kty"].as_str(),
            jwk["crv"].as_str(),
            jwk["alg"].as_str()
        ),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert_eq!(jwk["use"], "sig");
    // kid = RFC 7638 thumbprint, as computed by jsonwebtoken.
    assert_eq!(
        set.keys[0].thumbprint(ThumbprintHash::SHA256),
        kid(&a.access)
    );

    let claims = verify(&w, &a.access, Algorithm::ES256, None).expect("ES256 verifies");
    assert_eq!(claims["scope"], "devices");
    assert!(
        verify(&w, &a.access, Algorithm::EdDSA, None).is_err(),
        "an ES256 token does not pass as EdDSA"
    );
    let mut parts: Vec<&str> = a.access.split('.').collect();
    let forged = b64url(&json!({ "sub": "root" }).to_string());
    parts[1] = &forged;
    assert!(verify(&w, &parts.join("."), Algorithm::ES256, None).is_err());

    // A client_credentials token, too.
    let r = w.client_credentials(&w.svc, &w.svc_secret, "extra");
    assert_eq!(r.status, 200, "{}", r.text);
    verify(
        &w,
        r.body["access_token"].as_str().unwrap(),
        Algorithm::ES256,
        None,
    )
    .expect("client_credentials ES256 token verifies");

    // Rotation makes another ES256 key.
    let rotated: Value = serde_json::from_str(&cli_with(&w, &ES256, &["keys", "rotate"])).unwrap();
    assert_eq!(rotated["algorithm"], "ES256");
    std::thread::sleep(Duration::from_millis(1100));
    let b = refreshed(&w, &w.cli, &a.refresh);
    assert_eq!(kid(&b.access), rotated["kid"].as_str().unwrap());
    verify(&w, &b.access, Algorithm::ES256, None).expect("the new ES256 key verifies");
    verify(&w, &a.access, Algorithm::ES256, None).expect("the retired ES256 key verifies");
}

/// base64url without padding, for forging token parts.
fn b64url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

// ---------------------------------------------------------------------------------------------
// RFC 9068
// ---------------------------------------------------------------------------------------------

#[test]
fn access_tokens_follow_rfc_9068() {
    const AUD: &str = "https://api.example.com";
    let w = World::with_env(&[
        ("HALLPASS_OAUTH_AUDIENCE", AUD),
        ("HALLPASS_OAUTH_ACCESS_TOKEN_LIFETIME", "10m"),
    ]);
    let (alice_id, a) = w.user("alice");
    let issued_at = now_secs();

    let header = jwt_part(&a.access, 0);
    assert_eq!(keys(&header), ["alg", "kid", "typ"]);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");

    let claims = verify(&w, &a.access, Algorithm::EdDSA, Some(AUD)).expect("verifies with aud");
    assert_eq!(
        keys(&claims),
        [
            "aud",
            "client_id",
            "device_id",
            "exp",
            "iat",
            "iss",
            "jti",
            "scope",
            "sub"
        ]
    );
    assert_eq!(claims["iss"], w.base.as_str());
    assert_eq!(claims["sub"], alice_id.as_str());
    assert_eq!(claims["aud"], AUD);
    assert_eq!(claims["client_id"], w.cli.as_str());
    assert_eq!(claims["scope"], "devices");
    assert_eq!(claims["device_id"], a.device_id.as_str());
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 600);
    assert!((iat - issued_at).abs() <= 3, "iat {iat} vs now {issued_at}");
    assert!(verify(
        &w,
        &a.access,
        Algorithm::EdDSA,
        Some("https://other.example")
    )
    .is_err());

    // The token response agrees; every token gets its own jti.
    let r = w.refresh(&w.cli, &a.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["expires_in"], 600);
    let b = tokens(&r.body);
    assert_ne!(jwt_part(&b.access, 1)["jti"], claims["jti"]);
    let i = introspection(&w, &w.svc, &w.svc_secret, &b.access);
    assert_eq!(i["aud"], AUD, "{i}");

    // client_credentials: the client is the subject; no device.
    let r = w.client_credentials(&w.svc, &w.svc_secret, "extra");
    assert_eq!(r.status, 200, "{}", r.text);
    let cc = verify(
        &w,
        r.body["access_token"].as_str().unwrap(),
        Algorithm::EdDSA,
        Some(AUD),
    )
    .expect("client_credentials token verifies");
    assert_eq!(
        keys(&cc),
        [
            "aud",
            "client_id",
            "exp",
            "iat",
            "iss",
            "jti",
            "scope",
            "sub"
        ]
    );
    assert_eq!(cc["sub"], w.svc.as_str());
    assert_eq!(cc["client_id"], w.svc.as_str());

    // Without a configured audience the aud claim is still there (RFC 9068 §2.2 makes it
    // REQUIRED; issue 19): the issuer, hallpass's own default resource (RFC 9068 §3).
    let plain = Server::start();
    let (svc, secret) = plain.add_client(
        "svc",
        "read",
        &["--confidential", "--grant", "client_credentials"],
    );
    let r = plain.client_credentials(&svc, &secret.unwrap(), "read");
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.body["access_token"].as_str().unwrap();
    assert_eq!(jwt_part(token, 1)["aud"], plain.base.as_str());
    verify(&plain, token, Algorithm::EdDSA, Some(&plain.base)).expect("verifies with aud");
}
