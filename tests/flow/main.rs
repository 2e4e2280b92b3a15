//! Integration tests of the device flow (issue 2) against the real binary: a complete flow with
//! the `oauth2` crate's device-flow client and an independent JWT check, every token-endpoint
//! error, concurrent polls, a `kill -9` in the middle, bad input, configuration errors and
//! graceful shutdown.

mod durations;
mod flood;
#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;
mod mmdb;
#[path = "../support/pg.rs"]
mod pg;
mod polling;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use harness::{jwt_part, Server, BIN, DEVICE_GRANT};
use serde_json::Value;

/// GETs a JSON document from the server.
fn get_json<T: serde::de::DeserializeOwned>(s: &Server, path: &str) -> T {
    reqwest::blocking::get(s.url(path)).unwrap().json().unwrap()
}

/// A server polled at a 1 s interval, so slow_down tests take seconds, not minutes.
fn fast_server(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("HALLPASS_OAUTH_POLL_INTERVAL", "1s")];
    env.extend_from_slice(extra);
    Server::start_with(&env)
}

#[test]
fn oauth2_crate_device_flow_and_jwt_verified_independently() {
    use oauth2::basic::BasicClient;
    use oauth2::{
        AuthType, ClientId, DeviceAuthorizationUrl, Scope, StandardDeviceAuthorizationResponse,
        TokenResponse, TokenUrl,
    };

    let s = fast_server(&[]);
    let user_id = s.add_user("alice", false);
    let (client_id, _) = s.add_client("Living room TV", "read write", &[]);
    let client = BasicClient::new(ClientId::new(client_id.clone()))
        .set_auth_type(AuthType::RequestBody)
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(s.url("/oauth/device_authorization")).unwrap(),
        )
        .set_token_uri(TokenUrl::new(s.url("/oauth/token")).unwrap());
    let http = oauth2::reqwest::blocking::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scope(Scope::new("read".into()))
        .request(&http)
        .expect("device authorization");
    let user_code = details.user_code().secret().clone();
    assert!(
        details
            .verification_uri_complete()
            .expect("complete uri")
            .secret()
            .ends_with(&format!("/device?user_code={user_code}")),
        "verification_uri_complete carries the code"
    );
    assert_eq!(details.verification_uri().as_str(), s.url("/device"));

    // A person approves while the device polls, from a script, in lower case without the dash.
    let typed = user_code.replace('-', "").to_lowercase();
    let approver = {
        let config = s.db_path().with_file_name("hallpass.toml");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            let out = Command::new(BIN)
                .args(["--config", config.to_str().unwrap()])
                .args([
                    "device",
                    "approve",
                    &format!("  {typed} "),
                    "--user",
                    "alice",
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
    };
    let token = client
        .exchange_device_access_token(&details)
        .request(&http, std::thread::sleep, Some(Duration::from_secs(30)))
        .expect("tokens after approval");
    approver.join().unwrap();
    assert!(token.refresh_token().is_some());
    assert_eq!(
        token
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        Some(vec!["read".to_string()])
    );

    // Verify the JWT with an independent JOSE implementation against the published JWKS.
    let jwt = token.access_token().secret();
    let jwks: jsonwebtoken::jwk::JwkSet = get_json(&s, "/oauth/jwks");
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.expect("kid in the header");
    let jwk = jwks.find(&kid).expect("the kid is in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&[s.base.as_str()]);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .expect("signature verifies")
        .claims;
    assert_eq!(claims["sub"], user_id.as_str());
    assert_eq!(claims["client_id"], client_id.as_str());
    assert_eq!(claims["scope"], "read");
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert!(claims["device_id"].as_str().is_some_and(|d| !d.is_empty()));

    // A tampered token fails the same check.
    let mut parts: Vec<String> = jwt.split('.').map(str::to_string).collect();
    parts[1] = parts[1].chars().rev().collect();
    assert!(jsonwebtoken::decode::<Value>(&parts.join("."), &key, &validation).is_err());
}

#[test]
fn user_code_format_and_verification_uris() {
    let s = fast_server(&[]);
    let (client_id, _) = s.add_client("cli", "", &[]);
    let r = s.form(
        "/oauth/device_authorization",
        &[("client_id", &client_id), ("device_name", "tv")],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let code = r.body["user_code"].as_str().unwrap();
    let alphabet = "BCDFGHJKLMNPQRSTVWXZ";
    let (a, b) = code.split_once('-').expect("XXXX-XXXX");
    assert!(a.len() == 4 && b.len() == 4);
    assert!(
        a.chars().chain(b.chars()).all(|c| alphabet.contains(c)),
        "{code}"
    );
    assert_eq!(r.body["verification_uri"], s.url("/device").as_str());
    assert_eq!(
        r.body["verification_uri_complete"],
        format!("{}?user_code={code}", s.url("/device")).as_str()
    );
    assert_eq!(r.body["interval"], 1);
    assert_eq!(r.body["expires_in"], 600);
    assert_eq!(
        r.body["device_code"].as_str().unwrap().len(),
        61,
        "48 bits of time and 256 random bits, in base32"
    );
}

#[test]
fn every_token_endpoint_error_for_real() {
    let s = fast_server(&[]);
    s.add_user("alice", false);
    let (client_id, _) = s.add_client("cli", "", &[]);
    let (other_id, _) = s.add_client("other", "", &[]);

    // authorization_pending, then slow_down with an interval that grows and stays grown.
    let started = s.start_device(&client_id, "", "tv");
    let r = s.poll(&client_id, &started.device_code);
    assert_oauth_error(&r, 400, "authorization_pending");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = s.poll(&client_id, &started.device_code);
    assert_oauth_error(&r, 400, "slow_down");
    assert_eq!(r.body["interval"], 6, "1 s + 5 s");
    // Waiting the original interval is not enough any more.
    std::thread::sleep(Duration::from_millis(1500));
    let r = s.poll(&client_id, &started.device_code);
    assert_oauth_error(&r, 400, "slow_down");
    assert_eq!(r.body["interval"], 11);

    // invalid_grant for a code of another client, and for an unknown code.
    assert_oauth_error(
        &s.poll(&other_id, &started.device_code),
        400,
        "invalid_grant",
    );
    assert_oauth_error(&s.poll(&client_id, "NOT-A-REAL-CODE"), 400, "invalid_grant");

    // access_denied after a deny.
    let denied = s.start_device(&client_id, "", "tv");
    s.cli_ok(&["device", "deny", &denied.user_code], None);
    assert_oauth_error(
        &s.poll(&client_id, &denied.device_code),
        400,
        "access_denied",
    );

    // invalid_grant for a second exchange.
    let ok = s.start_device(&client_id, "", "tv");
    s.approve(&ok.user_code, "alice", false);
    assert_eq!(s.poll(&client_id, &ok.device_code).status, 200);
    assert_oauth_error(&s.poll(&client_id, &ok.device_code), 400, "invalid_grant");

    // invalid_client: unknown client (401 with WWW-Authenticate).
    let r = s.form(
        "/oauth/token",
        &[
            ("grant_type", DEVICE_GRANT),
            ("device_code", &ok.device_code),
            ("client_id", "no-such-client"),
        ],
    );
    assert_oauth_error(&r, 401, "invalid_client");
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Basic")));

    // A missing device_code is invalid_request even with bad credentials, whether or not the
    // client was just read (polls remember it for a second): the parameter is checked first.
    for _ in 0..2 {
        assert_oauth_error(&s.poll(&client_id, &ok.device_code), 400, "invalid_grant");
        let r = s.form(
            "/oauth/token",
            &[
                ("grant_type", DEVICE_GRANT),
                ("client_id", &client_id),
                ("client_secret", "a public client has none"),
            ],
        );
        assert_oauth_error(&r, 400, "invalid_request");
    }

    // unsupported_grant_type.
    let r = s.form(
        "/oauth/token",
        &[("grant_type", "password"), ("client_id", &client_id)],
    );
    assert_oauth_error(&r, 400, "unsupported_grant_type");
}

#[test]
fn expired_token_after_the_code_lifetime() {
    let s = fast_server(&[("HALLPASS_OAUTH_DEVICE_CODE_LIFETIME", "2s")]);
    s.add_user("alice", false);
    let (client_id, _) = s.add_client("cli", "", &[]);
    let started = s.start_device(&client_id, "", "tv");
    std::thread::sleep(Duration::from_millis(2200));
    assert_oauth_error(
        &s.poll(&client_id, &started.device_code),
        400,
        "expired_token",
    );
    // The expired code can no longer be approved either.
    let out = s.cli(
        &["device", "approve", &started.user_code, "--user", "alice"],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));
}

#[test]
fn pending_codes_per_client_are_capped_until_used_or_expired() {
    let s = fast_server(&[
        ("HALLPASS_LIMITS_MAX_PENDING_CODES_PER_CLIENT", "3"),
        ("HALLPASS_OAUTH_DEVICE_CODE_LIFETIME", "3s"),
    ]);
    s.add_user("alice", false);
    let (client_id, _) = s.add_client("cli", "", &[]);
    let (other, _) = s.add_client("other", "", &[]);
    let ask = |client: &str| {
        s.form(
            "/oauth/device_authorization",
            &[("client_id", client), ("device_name", "tv")],
        )
    };
    let first = s.start_device(&client_id, "", "tv");
    s.start_device(&client_id, "", "tv");
    s.start_device(&client_id, "", "tv");
    let full = ask(&client_id);
    assert_eq!(full.status, 429, "{}", full.text);
    assert_eq!(full.header("retry-after"), Some("60"));
    assert_eq!(
        full.body["error"], "temporarily_unavailable",
        "{}",
        full.text
    );
    // The cap is per client.
    s.start_device(&other, "", "tv");

    // A used code frees its place (the database is read again at most once a second).
    s.approve(&first.user_code, "alice", false);
    s.exchange(&client_id, &first.device_code);
    std::thread::sleep(Duration::from_millis(1100));
    s.start_device(&client_id, "", "tv");
    assert_eq!(ask(&client_id).status, 429);

    // And so does an expired one.
    std::thread::sleep(Duration::from_millis(3100));
    for _ in 0..3 {
        s.start_device(&client_id, "", "tv");
    }
    assert_eq!(ask(&client_id).status, 429);
}

#[test]
fn metrics_count_the_group_commit_writers_batches() {
    if harness::on_postgres() {
        return; // the group-commit writer is SQLite's (one writer thread on the file)
    }
    let s = Server::start();
    let (client_id, _) = s.add_client("cli", "", &[]);
    for _ in 0..3 {
        s.start_device(&client_id, "", "tv");
    }
    let text = reqwest::blocking::get(s.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    // Three device authorizations, each a job of the writer; none needed an undo.
    assert_eq!(value("hallpass_db_write_jobs_total"), 3);
    assert!((1..=3).contains(&value("hallpass_db_write_batches_total")));
    assert_eq!(value("hallpass_db_write_replays_total"), 0);
}

#[test]
fn confidential_client_authenticates_with_its_secret() {
    let s = fast_server(&[]);
    let (id, secret) = s.add_client("svc", "", &["--confidential"]);
    let secret = secret.expect("a secret for a confidential client");
    let http = reqwest::blocking::Client::new();
    let ok = http
        .post(s.url("/oauth/device_authorization"))
        .basic_auth(&id, Some(&secret))
        .form(&[("device_name", "box")])
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = http
        .post(s.url("/oauth/device_authorization"))
        .basic_auth(&id, Some("wrong"))
        .form(&[("device_name", "box")])
        .send()
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(bad.headers().contains_key("www-authenticate"));
    let body: Value = bad.json().unwrap();
    assert_eq!(body["error"], "invalid_client");
    // Without its secret, the confidential client is refused too.
    let r = s.form("/oauth/device_authorization", &[("client_id", &id)]);
    assert_oauth_error(&r, 401, "invalid_client");
}

#[test]
fn concurrent_polls_of_one_approved_code_yield_tokens_once() {
    let s = Arc::new(fast_server(&[]));
    s.add_user("alice", false);
    let (client_id, _) = s.add_client("cli", "", &[]);
    let started = s.start_device(&client_id, "", "tv");
    s.approve(&started.user_code, "alice", false);
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let (s, barrier) = (s.clone(), barrier.clone());
            let (client_id, code) = (client_id.clone(), started.device_code.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = s.poll(&client_id, &code);
                (r.status, r.body["error"].as_str().map(str::to_string))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wins = results.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(wins, 1, "{results:?}");
    for (status, error) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!((*status, error.as_deref()), (400, Some("invalid_grant")));
    }
}

/// Starts `hallpass --config F serve` by hand, for tests that kill or signal it.
fn spawn(config: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("no listening line: {line:?}"))
        .to_string();
    (child, base)
}

/// Writes `dir/hallpass.toml` for [`spawn`] and [`cli`], with the database of
/// [`harness::database_section`] (returned: keep it while the server runs).
fn write_config(dir: &std::path::Path, extra: &str) -> (std::path::PathBuf, Option<pg::TestDb>) {
    let config = dir.join("hallpass.toml");
    let (database, pg) = harness::database_section(&dir.join("hallpass.db"));
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{database}{extra}"),
    )
    .unwrap();
    (config, pg)
}

fn cli(config: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn approval_survives_kill_9_and_the_code_still_works_once() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _db) = write_config(dir.path(), "[oauth]\npoll_interval = \"1s\"\n");
    // The server creates the database; admin commands never do.
    let (mut child, base) = spawn(&config);
    assert!(cli(
        &config,
        &["user", "add", "alice", "--password-stdin"],
        "long enough pw\n"
    )
    .status
    .success());
    let out = cli(&config, &["client", "add", "--name", "cli"], "");
    let client: Value = serde_json::from_slice(&out.stdout).unwrap();
    let client_id = client["client_id"].as_str().unwrap().to_string();
    let http = reqwest::blocking::Client::new();
    let started: Value = http
        .post(format!("{base}/oauth/device_authorization"))
        .form(&[("client_id", client_id.as_str())])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let approve = cli(
        &config,
        &[
            "device",
            "approve",
            started["user_code"].as_str().unwrap(),
            "--user",
            "alice",
        ],
        "",
    );
    assert!(approve.status.success());
    child.kill().unwrap(); // SIGKILL: no chance to flush anything
    child.wait().unwrap();

    let (mut child, base) = spawn(&config);
    let form = [
        ("grant_type", DEVICE_GRANT),
        ("device_code", started["device_code"].as_str().unwrap()),
        ("client_id", client_id.as_str()),
    ];
    let first = http
        .post(format!("{base}/oauth/token"))
        .form(&form)
        .send()
        .unwrap();
    assert_eq!(first.status(), 200, "the acknowledged approval survived");
    let second: Value = http
        .post(format!("{base}/oauth/token"))
        .form(&form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(second["error"], "invalid_grant", "still only once");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _db) = write_config(dir.path(), "");
    let (mut child, base) = spawn(&config);
    assert_eq!(
        reqwest::blocking::get(format!("{base}/healthz"))
            .unwrap()
            .status(),
        200
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn bad_input_gets_clear_errors() {
    let s = fast_server(&[("HALLPASS_SERVER_MAX_BODY_SIZE", "1024")]);
    let (client_id, _) = s.add_client("cli", "", &[]);
    let http = reqwest::blocking::Client::new();
    let url = s.url("/oauth/token");

    // Missing parameter.
    let r = s.form("/oauth/token", &[("client_id", &client_id)]);
    assert_oauth_error(&r, 400, "invalid_request");
    assert!(r.body["error_description"]
        .as_str()
        .unwrap()
        .contains("grant_type"));
    // Repeated parameter (RFC 6749 §3.1).
    let r = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type={DEVICE_GRANT}&device_code=x&client_id={client_id}&client_id={client_id}"
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("repeated"));
    // Wrong content type.
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(r.json::<Value>().unwrap()["error"], "invalid_request");
    // A body over the limit.
    let r = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type={}", "x".repeat(4096)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    // Unknown path and wrong method.
    let r = http.get(s.url("/oauth/nope")).send().unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(&url).send().unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    // Malformed Basic credentials.
    let r = http
        .post(&url)
        .header("authorization", "Basic !!!")
        .form(&[("grant_type", DEVICE_GRANT), ("device_code", "x")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // The server is still healthy after all of it.
    assert_eq!(http.get(s.url("/healthz")).send().unwrap().status(), 200);
}

#[test]
fn discovery_metadata_and_jwks() {
    let s = fast_server(&[]);
    s.add_client("cli", "read write", &[]);
    let meta: Value = get_json(&s, "/.well-known/oauth-authorization-server");
    assert_eq!(meta["issuer"], s.base.as_str());
    assert_eq!(
        meta["device_authorization_endpoint"],
        s.url("/oauth/device_authorization").as_str()
    );
    assert_eq!(meta["token_endpoint"], s.url("/oauth/token").as_str());
    assert_eq!(meta["jwks_uri"], s.url("/oauth/jwks").as_str());
    assert!(meta["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&Value::from(DEVICE_GRANT)));
    assert!(meta["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&Value::from("none")));
    assert_eq!(
        meta["scopes_supported"],
        serde_json::json!(["read", "write"])
    );
    let jwks: Value = get_json(&s, "/oauth/jwks");
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let _ = jwt_part; // the shared harness's JWT reader is used by other suites
}

#[test]
fn configuration_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &str, env: &[(&str, &str)]| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["--config", path.to_str().unwrap(), "check"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run("[oauth]\nnope = 1\n", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("oauth.nope"));
    let out = run("[oauth]\npoll_interval = \"5 parsecs\"\n", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("oauth.poll_interval"));
    let out = run("", &[("HALLPASS_OAUTH_POLL_INTERVAL", "soon")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HALLPASS_OAUTH_POLL_INTERVAL"));
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/hallpass.toml", "serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn env_and_flags_override_the_file() {
    let s = Server::start_with(&[("HALLPASS_OAUTH_POLL_INTERVAL", "7s")]);
    let (client_id, _) = s.add_client("cli", "", &[]);
    let r = s.form("/oauth/device_authorization", &[("client_id", &client_id)]);
    assert_eq!(r.body["interval"], 7);
    if harness::on_postgres() {
        return; // the rest serves a SQLite file named by --db
    }

    // --db and --listen beat the file and the defaults.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("flag.db");
    let mut child = Command::new(BIN)
        .args([
            "--db",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "serve",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    assert!(!line.trim().ends_with(":8080"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(db.exists());
}

#[test]
fn foreign_database_files_are_refused() {
    if harness::on_postgres() {
        return; // SQLite files (tests/postgres refuses foreign PostgreSQL databases)
    }
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE notes (x TEXT)")
        .unwrap();
    for (file, words) in [
        (&junk, "not a SQLite database"),
        (&other, "not a hallpass database"),
    ] {
        let out = Command::new(BIN)
            .args([
                "--db",
                file.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "serve",
            ])
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(words), "{err}");
    }
}

#[test]
fn cli_errors_are_one_line_and_non_zero() {
    let s = fast_server(&[]);
    s.add_user("alice", false);
    let (client_id, _) = s.add_client("cli", "", &[]);
    let started = s.start_device(&client_id, "", "tv");
    for (args, stdin, words) in [
        (
            vec![
                "device",
                "approve",
                started.user_code.as_str(),
                "--user",
                "nobody",
            ],
            None,
            "no user",
        ),
        (
            vec!["device", "approve", "BCDF-GHJK", "--user", "alice"],
            None,
            "not valid",
        ),
        (
            vec!["user", "add", "alice", "--password-stdin"],
            Some("long enough pw\n"),
            "already exists",
        ),
        (
            vec!["user", "add", "bob", "--password-stdin"],
            Some("short\n"),
            "8 to 1024",
        ),
    ] {
        let out = s.cli(&args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(words), "{args:?}: {err}");
    }
}

/// Checks an RFC 6749 §5.2 error: status, `error` code, a description, JSON, and no caching.
fn assert_oauth_error(r: &harness::Resp, status: u16, code: &str) {
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
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{}",
        r.text
    );
    assert_eq!(r.header("cache-control"), Some("no-store"), "{}", r.text);
}

/// The city, region and country stored for the device started with `extra` headers.
fn located(
    s: &Server,
    client_id: &str,
    headers: &[(&str, &str)],
) -> (Option<String>, Option<String>, Option<String>) {
    let mut req = reqwest::blocking::Client::new()
        .post(s.url("/oauth/device_authorization"))
        .form(&[("client_id", client_id)]);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    let code = body["user_code"].as_str().unwrap().replace('-', "");
    let rows = s.query(
        "SELECT d.city, d.region, d.country FROM devices d \
         JOIN device_authorizations a ON a.device_id = d.id WHERE a.user_code = $1",
        &[code.into()],
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let text = |v: &Value| v.as_str().map(str::to_string);
    (text(&rows[0][0]), text(&rows[0][1]), text(&rows[0][2]))
}

#[test]
fn location_from_a_maxmind_file_and_from_trusted_proxy_headers() {
    use mmdb::V;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("city.mmdb");
    let record = V::Map(vec![
        (
            "city",
            V::Map(vec![("names", V::Map(vec![("en", V::Str("Utrecht"))]))]),
        ),
        (
            "country",
            V::Map(vec![
                ("iso_code", V::Str("NL")),
                ("names", V::Map(vec![("en", V::Str("Netherlands"))])),
            ]),
        ),
        (
            "subdivisions",
            V::Array(vec![V::Map(vec![(
                "names",
                V::Map(vec![("en", V::Str("Utrecht Province"))]),
            )])]),
        ),
    ]);
    std::fs::write(&file, mmdb::ipv4_database([203, 0, 113, 0], 24, &record)).unwrap();
    let file = file.to_str().unwrap();

    // Behind a trusted proxy: the forwarded address is looked up in the file.
    let s = Server::start_with(&[
        ("HALLPASS_LOCATION_DATABASE", file),
        ("HALLPASS_LOCATION_COUNTRY_HEADER", "X-Geo-Country"),
        ("HALLPASS_SERVER_TRUSTED_PROXIES", "127.0.0.1/32"),
    ]);
    let (client_id, _) = s.add_client("tv", "", &[]);
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        located(&s, &client_id, &[("X-Forwarded-For", "203.0.113.7")]),
        (
            some("Utrecht"),
            some("Utrecht Province"),
            some("Netherlands")
        )
    );
    // An address the file does not cover: unknown, not an error.
    assert_eq!(
        located(&s, &client_id, &[("X-Forwarded-For", "198.51.100.1")]),
        (None, None, None)
    );
    // The proxy's own location header wins over the file.
    assert_eq!(
        located(
            &s,
            &client_id,
            &[
                ("X-Forwarded-For", "203.0.113.7"),
                ("X-Geo-Country", "Iceland")
            ]
        ),
        (None, None, some("Iceland"))
    );
    drop(s);

    // Not from a trusted proxy: neither X-Forwarded-For nor the location header is believed.
    let s = Server::start_with(&[
        ("HALLPASS_LOCATION_DATABASE", file),
        ("HALLPASS_LOCATION_COUNTRY_HEADER", "X-Geo-Country"),
    ]);
    let (client_id, _) = s.add_client("tv", "", &[]);
    assert_eq!(
        located(
            &s,
            &client_id,
            &[
                ("X-Forwarded-For", "203.0.113.7"),
                ("X-Geo-Country", "Iceland")
            ]
        ),
        (None, None, None)
    );

    // A location file that is not one stops start-up with exit 2, naming the key.
    let bad = dir.path().join("bad.mmdb");
    std::fs::write(&bad, b"not a database").unwrap();
    let out = Command::new(BIN)
        .args(["--db", dir.path().join("x.db").to_str().unwrap(), "check"])
        .env("HALLPASS_LOCATION_DATABASE", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("location.database"));
}

/// Polls faster than the interval are answered from memory (no database read) for up to 1 s
/// after a read; an approval from another process (the command line) must still be seen by
/// the very next poll, and the grown interval must reach the database.
#[test]
fn a_poll_flood_still_sees_a_command_line_approval_at_once() {
    let s = fast_server(&[]);
    s.add_user("alice", false);
    let (client_id, _) = s.add_client("tv", "", &[]);
    let started = s.start_device(&client_id, "", "tv");
    assert_oauth_error(
        &s.poll(&client_id, &started.device_code),
        400,
        "authorization_pending",
    );
    for _ in 0..20 {
        assert_oauth_error(&s.poll(&client_id, &started.device_code), 400, "slow_down");
    }
    s.approve(&started.user_code, "alice", false);
    let mut r = s.poll(&client_id, &started.device_code);
    if harness::on_postgres() {
        // There the approval reaches the server as a notification (NOTIFY hallpass_changes),
        // a few milliseconds after the command's commit, and at worst when the remembered
        // read expires (1 s): until then the flood hears slow_down, never anything else.
        let deadline = Instant::now() + Duration::from_millis(1100);
        while r.status != 200 && Instant::now() < deadline {
            assert_oauth_error(&r, 400, "slow_down");
            std::thread::sleep(Duration::from_millis(20));
            r = s.poll(&client_id, &started.device_code);
        }
    }
    assert_eq!(r.status, 200, "{}", r.text);
    // Another client presenting the code is refused from memory as from the database.
    let (other, _) = s.add_client("other", "", &[]);
    let again = s.start_device(&client_id, "", "tv2");
    s.poll(&client_id, &again.device_code);
    assert_oauth_error(&s.poll(&other, &again.device_code), 400, "invalid_grant");
}

/// The reaper writes the poll time and the interval `slow_down` grew back to the database, in
/// `reaper.batch_size` batches: what admins see, and what a restart starts from.
#[test]
fn poll_times_and_grown_intervals_reach_the_database() {
    let s = fast_server(&[
        ("HALLPASS_REAPER_INTERVAL", "1s"),
        ("HALLPASS_REAPER_BATCH_SIZE", "1"),
    ]);
    s.add_user("alice", false);
    let (client_id, _) = s.add_client("tv", "", &[]);
    let codes: Vec<_> = (0..3)
        .map(|i| s.start_device(&client_id, "", &format!("tv{i}")))
        .collect();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for c in &codes {
        assert_oauth_error(
            &s.poll(&client_id, &c.device_code),
            400,
            "authorization_pending",
        );
    }
    // The second code polls too fast: its interval grows from 1 s to 6 s.
    assert_oauth_error(&s.poll(&client_id, &codes[1].device_code), 400, "slow_down");
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let rows: Vec<(Option<i64>, i64)> = s
            .query(
                "SELECT a.last_polled_at, a.poll_interval_seconds FROM device_authorizations a \
                 JOIN devices d ON d.id = a.device_id ORDER BY d.name",
                &[],
            )
            .iter()
            .map(|r| (r[0].as_i64(), r[1].as_i64().expect("an interval")))
            .collect();
        if rows.iter().all(|r| r.0.is_some()) || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        stored.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![1, 6, 1],
        "{stored:?}"
    );
    for (at, _) in &stored {
        let at = at.expect("every poll time written back within 10 s");
        assert!(at >= before, "{at} vs {before}");
    }
}
