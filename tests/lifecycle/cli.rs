//! The command line (issue 21): `user list | passwd | disable | enable | remove`, `client remove
//! | rotate-secret`, short grant names, admin commands that refuse a missing database, the
//! start-up warnings of `serve`, and the nearest-key hint for a mistyped configuration key.
//! Each admin command prints JSON on success and exits 1 with one line on stderr on failure;
//! they apply the same rules as the admin API (src/domain/admin.rs, src/app/admin.rs).

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{self, Server, PASSWORD};

/// Runs a command that must succeed and parses its JSON output.
#[track_caller]
fn json_of(s: &Server, args: &[&str], stdin: Option<&str>) -> Value {
    let out = s.cli_ok(args, stdin);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

/// Asserts a failed command: exit 1, one line on stderr containing `words`, nothing on stdout.
#[track_caller]
fn assert_fails(out: &Output, words: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(words), "{words:?} not in {err:?}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Signs in on the page with `password`: the status of the sign-in POST (303 signed in, 401
/// refused) and, when signed in, the session cookie (`name=value`).
fn sign_in(s: &Server, user: &str, password: &str) -> (u16, Option<String>) {
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http.get(s.url("/login")).send().unwrap();
    let cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("hallpass_login="))
        .expect("sign-in cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = form.text().unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("csrf field") + marker.len();
    let token = &html[start..start + html[start..].find('"').unwrap()];
    let r = http
        .post(s.url("/login"))
        .header("cookie", &cookie)
        .form(&[
            ("username", user),
            ("password", password),
            ("csrf", token),
            ("next", "/devices"),
        ])
        .send()
        .unwrap();
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("hallpass_session=") && !c.starts_with("hallpass_session=;"))
        .map(|c| c.split(';').next().unwrap().to_string());
    (r.status().as_u16(), session)
}

/// Whether the session cookie still opens /devices.
fn session_works(s: &Server, cookie: &str) -> bool {
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(s.url("/devices"))
        .header("cookie", cookie)
        .send()
        .unwrap();
    r.status() == 200
}

#[test]
fn user_list_passwd_disable_enable_and_remove() {
    let s = Server::start();
    let root_id = s.add_user("root", true);
    let alice_id = s.add_user("alice", false);
    let (cli, _) = s.add_client("cli", "devices", &[]);
    let alice = s.login(&cli, "alice", "devices");

    // list: every user, by name, in the admin API's shape.
    let list = json_of(&s, &["user", "list"], None);
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["username"], "alice");
    assert_eq!(list[0]["id"], alice_id.as_str());
    assert_eq!(list[0]["is_admin"], false);
    assert_eq!(list[0]["disabled"], false);
    assert_eq!(list[1]["username"], "root");
    assert_eq!(list[1]["id"], root_id.as_str());
    assert_eq!(list[1]["is_admin"], true);
    assert!(list[0]["created"].is_string());
    assert!(list[0].get("password_hash").is_none());

    // passwd: the new password signs in, the old one no longer does, and the browser that was
    // signed in is signed out.
    let (status, session) = sign_in(&s, "alice", PASSWORD);
    assert_eq!(status, 303);
    let session = session.expect("a session");
    assert!(session_works(&s, &session));
    let u = json_of(
        &s,
        &["user", "passwd", "alice", "--password-stdin"],
        Some("a brand new password\n"),
    );
    assert_eq!(u["username"], "alice");
    assert!(!session_works(&s, &session), "a new password ends sessions");
    assert_eq!(sign_in(&s, "alice", PASSWORD).0, 401);
    assert_eq!(sign_in(&s, "alice", "a brand new password").0, 303);
    // Too short, or an unknown user: exit 1, nothing changed.
    assert_fails(
        &s.cli(
            &["user", "passwd", "alice", "--password-stdin"],
            Some("short\n"),
        ),
        "8 to 1024",
    );
    assert_eq!(sign_in(&s, "alice", "a brand new password").0, 303);
    assert_fails(
        &s.cli(
            &["user", "passwd", "nobody", "--password-stdin"],
            Some("long enough password\n"),
        ),
        "no user named \"nobody\"",
    );

    // disable: no sign-in, no refresh; enable: both again.
    let (_, session) = sign_in(&s, "alice", "a brand new password");
    let session = session.unwrap();
    let u = json_of(&s, &["user", "disable", "alice"], None);
    assert_eq!(u["disabled"], true);
    assert!(!session_works(&s, &session), "disabling ends sessions");
    assert_eq!(sign_in(&s, "alice", "a brand new password").0, 401);
    let r = s.refresh(&cli, &alice.refresh);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"], "invalid_grant");
    let u = json_of(&s, &["user", "enable", "alice"], None);
    assert_eq!(u["disabled"], false);
    assert_eq!(sign_in(&s, "alice", "a brand new password").0, 303);
    let r = s.refresh(&cli, &alice.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    let alice = harness::tokens(&r.body);

    // The last enabled administrator can be neither disabled nor removed.
    assert_fails(
        &s.cli(&["user", "disable", "root"], None),
        "last enabled administrator",
    );
    assert_fails(
        &s.cli(&["user", "remove", "root"], None),
        "last enabled administrator",
    );
    assert_eq!(json_of(&s, &["user", "list"], None)[1]["disabled"], false);

    // remove: gone from the list, their device's tokens with them.
    let out = json_of(&s, &["user", "remove", "alice"], None);
    assert_eq!(out["username"], "alice");
    assert_eq!(out["id"], alice_id.as_str());
    assert_eq!(out["deleted"], true);
    let list = json_of(&s, &["user", "list"], None);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let r = s.refresh(&cli, &alice.refresh);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_fails(&s.cli(&["user", "remove", "alice"], None), "no user named");
    assert_fails(&s.cli(&["user", "enable", "alice"], None), "no user named");
}

#[test]
fn client_remove_and_rotate_secret() {
    let s = Server::start();
    s.add_user("alice", false);
    let (svc, secret) = s.add_client(
        "svc",
        "read",
        &["--confidential", "--grant", "client_credentials"],
    );
    let secret = secret.unwrap();
    assert_eq!(s.client_credentials(&svc, &secret, "read").status, 200);

    // rotate-secret: printed once; the old secret stops at once, the new one works.
    let out = json_of(&s, &["client", "rotate-secret", &svc], None);
    assert_eq!(out["client_id"], svc.as_str());
    let fresh = out["client_secret"].as_str().expect("a new secret");
    assert_ne!(fresh, secret);
    let r = s.client_credentials(&svc, &secret, "read");
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.body["error"], "invalid_client");
    assert_eq!(s.client_credentials(&svc, fresh, "read").status, 200);

    // A public client has no secret to rotate; an unknown client is named.
    let (cli, _) = s.add_client("cli", "read", &[]);
    assert_fails(
        &s.cli(&["client", "rotate-secret", &cli], None),
        "a public client has no secret",
    );
    assert_fails(
        &s.cli(
            &[
                "client",
                "rotate-secret",
                "00000000-0000-4000-8000-000000000000",
            ],
            None,
        ),
        "no client \"00000000-0000-4000-8000-000000000000\"",
    );

    // remove: the client's devices and their tokens go with it, and the removal is audited.
    let device = s.login(&cli, "alice", "read");
    assert_eq!(s.refresh(&cli, &device.refresh).status, 200);
    let out = json_of(&s, &["client", "remove", &cli], None);
    assert_eq!(out["client_id"], cli.as_str());
    assert_eq!(out["name"], "cli");
    assert_eq!(out["deleted"], true);
    let list = json_of(&s, &["client", "list"], None);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["client_id"].as_str())
        .collect();
    assert_eq!(ids, [svc.as_str()]);
    let r = s.form(
        "/oauth/device_authorization",
        &[("client_id", cli.as_str())],
    );
    assert_eq!(r.status, 401, "a removed client gets no codes: {}", r.text);
    assert_eq!(crate::audit_count(&s, "client.delete"), 1);
    assert_fails(&s.cli(&["client", "remove", &cli], None), "no client");
}

#[test]
fn grants_by_their_short_names() {
    let s = Server::start();
    let (id, _) = s.add_client(
        "tv",
        "",
        &["--grant", "device_code", "--grant", "refresh_token"],
    );
    let (svc, _) = s.add_client(
        "svc",
        "",
        &["--confidential", "--grant", "client_credentials"],
    );
    let (urn, _) = s.add_client("old", "", &["--grant", harness::DEVICE_GRANT]);
    let list = json_of(&s, &["client", "list"], None);
    let grants = |client: &str| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["client_id"] == client)
            .unwrap()["allowed_grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(grants(&id), [harness::DEVICE_GRANT, "refresh_token"]);
    assert_eq!(grants(&svc), ["client_credentials"]);
    assert_eq!(grants(&urn), [harness::DEVICE_GRANT]);
    // The short name really works: the client gets a code.
    s.start_device(&id, "", "tv");
    assert_fails(
        &s.cli(&["client", "add", "--name", "x", "--grant", "nope"], None),
        "known: device_code, refresh_token, client_credentials",
    );
}

#[test]
fn admin_commands_never_create_a_database() {
    if harness::on_postgres() {
        return; // a SQLite file at a mistyped --db path
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo.db");
    let path = missing.to_str().unwrap();
    let backup = dir.path().join("copy.db");
    let commands: Vec<Vec<&str>> = vec![
        vec!["user", "list"],
        vec!["user", "add", "alice", "--password-stdin"],
        vec!["user", "disable", "alice"],
        vec!["client", "list"],
        vec!["client", "add", "--name", "x"],
        vec!["device", "list", "--user", "alice"],
        vec!["keys", "list"],
        vec!["backup", backup.to_str().unwrap()],
    ];
    for args in commands {
        let out = Command::new(harness::BIN)
            .args(["--db", path])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_fails(
            &out,
            &format!("no database at {path}; `hallpass serve` creates one"),
        );
        assert!(!missing.exists(), "{args:?} created {path}");
        assert!(!backup.exists());
    }
}

/// Starts `serve` with `args`, returns what it wrote to stderr in its first moments (it is
/// stopped once `wanted` appears in it, or after 5 s).
fn serve_log(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)], wanted: &str) -> String {
    let log = dir.join(format!("serve-{}.log", args.join("_").replace('/', "")));
    let mut child = Command::new(harness::BIN)
        .args(args)
        .arg("serve")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&log).unwrap();
        if text.contains(wanted) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    text
}

#[test]
fn serve_warns_about_an_unreachable_verification_uri_and_hints_at_the_first_user() {
    if harness::on_postgres() {
        return; // serves a new SQLite file named by --db; the hint names that file
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.db");
    let db = db.to_str().unwrap();
    // On every address, without server.public_url: the warning names the key to set.
    let log = serve_log(
        dir.path(),
        &["--db", db, "--listen", "0.0.0.0:0"],
        &[],
        "user add",
    );
    assert!(
        log.contains("server.public_url is not set")
            && log.contains("verification_uri would be http://0.0.0.0:")
            && log.contains("set server.public_url (HALLPASS_SERVER_PUBLIC_URL)"),
        "{log}"
    );
    // No users yet: the one line that says how to make the first one, for this database.
    let hint = log
        .lines()
        .find(|l| l.contains("no users yet"))
        .unwrap_or_else(|| panic!("no hint: {log}"));
    assert!(
        hint.contains(&format!(
            "hallpass --db {db} user add admin --admin --password-stdin"
        )),
        "{hint}"
    );
    // The command in the hint works.
    let out = Command::new(harness::BIN)
        .args([
            "--db",
            db,
            "user",
            "add",
            "admin",
            "--admin",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(PASSWORD.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());

    // With a public URL on every address, and with users: neither line.
    let log = serve_log(
        dir.path(),
        &["--db", db, "--listen", "0.0.0.0:0"],
        &[("HALLPASS_SERVER_PUBLIC_URL", "https://auth.example.org")],
        "serving",
    );
    assert!(log.contains("serving"), "{log}");
    assert!(!log.contains("public_url"), "{log}");
    assert!(!log.contains("no users yet"), "{log}");
    // On loopback, a public URL is not needed.
    let log = serve_log(
        dir.path(),
        &["--db", db, "--listen", "127.0.0.1:0"],
        &[],
        "serving",
    );
    assert!(!log.contains("public_url"), "{log}");
}

#[test]
fn a_mistyped_configuration_key_gets_the_nearest_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hallpass.toml");
    std::fs::write(&config, "[oauth]\npoll_intervall = \"5s\"\n").unwrap();
    let out = Command::new(harness::BIN)
        .args(["--config", config.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown key `oauth.poll_intervall`; did you mean `oauth.poll_interval`?"),
        "{err}"
    );
    assert!(!err.contains("server.listen"), "not every key: {err}");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(harness::BIN)
        .args(["--config", config.to_str().unwrap(), "check"])
        .env("HALLPASS_OAUTH_POLL_INTERVALL", "5s")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("unknown environment variable HALLPASS_OAUTH_POLL_INTERVALL; did you mean HALLPASS_OAUTH_POLL_INTERVAL?"),
        "{err}"
    );
}
