//! Several hallpass processes on one PostgreSQL database (issue 22), behind no load balancer:
//! the tests spread requests over the instances themselves. A device code yields tokens once
//! whichever instances racing polls reach; `slow_down` holds across instances and a polite
//! client never meets it; a revocation or a lock on one instance is seen on another within a
//! second; `kill -9` of an instance loses no approval it acknowledged, and the reaper moves to
//! a survivor; instances starting together on an empty database make one signing key.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::database;
use crate::harness::{Resp, Server, BIN, DEVICE_GRANT, PASSWORD, USER_AGENT};

/// One `hallpass serve` on the test's database.
struct Instance {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    base: String,
    dir: tempfile::TempDir,
    http: reqwest::blocking::Client,
}

impl Instance {
    /// Starts an instance on `url` with `env` on top (EdDSA keys: cheap to make).
    fn start(url: &str, env: &[(&str, &str)]) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env("HALLPASS_DATABASE_URL", url)
            .env("HALLPASS_DATABASE_PATH", dir.path().join("unused.db"))
            .env("HALLPASS_SERVER_LISTEN", "127.0.0.1:0")
            .env("HALLPASS_OAUTH_SIGNING_ALGORITHM", "EdDSA")
            .env("HALLPASS_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            panic!("no `listening on` line, got {line:?}; log:\n{log}");
        };
        Instance {
            base: base.to_string(),
            child,
            _stdout: stdout,
            dir,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .user_agent(USER_AGENT)
                .build()
                .unwrap(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn form(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        Server::finish(
            self.http
                .post(format!("{}{path}", self.base))
                .form(fields)
                .send()
                .unwrap(),
        )
    }

    fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Server::finish(req.send().unwrap())
    }

    fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        Server::finish(
            self.http
                .put(format!("{}{path}", self.base))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .unwrap(),
        )
    }

    fn start_device(&self, client_id: &str) -> (String, String) {
        self.start_device_for(client_id, "openid")
    }

    fn start_device_for(&self, client_id: &str, scope: &str) -> (String, String) {
        let r = self.form(
            "/oauth/device_authorization",
            &[("client_id", client_id), ("scope", scope)],
        );
        assert_eq!(r.status, 200, "{}", r.text);
        (
            r.body["device_code"].as_str().unwrap().to_string(),
            r.body["user_code"].as_str().unwrap().to_string(),
        )
    }

    fn poll(&self, client_id: &str, device_code: &str) -> Resp {
        self.form(
            "/oauth/token",
            &[
                ("grant_type", DEVICE_GRANT),
                ("device_code", device_code),
                ("client_id", client_id),
            ],
        )
    }

    fn introspect(&self, rs: &(String, String), token: &str) -> bool {
        let r = self.form(
            "/oauth/introspect",
            &[
                ("token", token),
                ("client_id", &rs.0),
                ("client_secret", &rs.1),
            ],
        );
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["active"].as_bool().unwrap()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.base, self.log());
        }
    }
}

/// `hallpass ARGS` on `url`, which must succeed; its standard output as JSON.
fn cli(url: &str, args: &[&str], stdin: Option<&str>) -> Value {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("HALLPASS_DATABASE_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("HALLPASS_")) {
        c.env_remove(k);
    }
    c.env("HALLPASS_DATABASE_URL", url);
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "hallpass {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A user `alice` (admin), a public client and a confidential resource server on `url`:
/// (public client id, (resource server id, secret)).
fn populate(url: &str) -> (String, (String, String)) {
    cli(
        url,
        &["user", "add", "alice", "--password-stdin", "--admin"],
        Some(&format!("{PASSWORD}\n")),
    );
    let public = cli(
        url,
        &[
            "client",
            "add",
            "--name",
            "CLI",
            "--scope",
            "openid devices admin",
        ],
        None,
    );
    let rs = cli(
        url,
        &[
            "client",
            "add",
            "--name",
            "RS",
            "--scope",
            "openid",
            "--confidential",
        ],
        None,
    );
    (
        public["client_id"].as_str().unwrap().to_string(),
        (
            rs["client_id"].as_str().unwrap().to_string(),
            rs["client_secret"].as_str().unwrap().to_string(),
        ),
    )
}

/// Tokens for `alice` through instance `a`, with the management API's scopes: (access,
/// refresh, device id).
fn login(url: &str, a: &Instance, client_id: &str) -> (String, String, String) {
    let (device_code, user_code) = a.start_device_for(client_id, "openid devices admin");
    cli(
        url,
        &["device", "approve", &user_code, "--user", "alice"],
        None,
    );
    let r = a.poll(client_id, &device_code);
    assert_eq!(r.status, 200, "{}", r.text);
    (
        r.body["access_token"].as_str().unwrap().to_string(),
        r.body["refresh_token"].as_str().unwrap().to_string(),
        crate::harness::jwt_part(r.body["access_token"].as_str().unwrap(), 1)["device_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Waits up to `limit` for `f` to hold; answers how long it took.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// 32 polls of one approved code, racing over three instances, yield one token; the others
/// hear `invalid_grant`.
#[test]
fn racing_polls_over_three_instances_yield_one_token() {
    let db = database!();
    let url = db.url();
    let first = Instance::start(&url, &[]);
    let (client_id, _) = populate(&url);
    let others = [Instance::start(&url, &[]), Instance::start(&url, &[])];
    let (device_code, user_code) = first.start_device(&client_id);
    cli(
        &url,
        &["device", "approve", &user_code, "--user", "alice"],
        None,
    );
    let instances = [&first, &others[0], &others[1]];
    let barrier = Arc::new(Barrier::new(32));
    let answers: Vec<Resp> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (barrier, instance) = (barrier.clone(), instances[i % 3]);
                let (client_id, device_code) = (&client_id, &device_code);
                s.spawn(move || {
                    barrier.wait();
                    instance.poll(client_id, device_code)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let issued = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        issued,
        1,
        "{:?}",
        answers.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.body["error"], "invalid_grant", "{}", r.text);
    }
}

/// Instances A and B on `url`'s database, started with a 1 s poll interval, and the public
/// client that [`populate`] made between them.
fn two_instances_polling_each_second(url: &str) -> (Instance, Instance, String) {
    let env = [("HALLPASS_OAUTH_POLL_INTERVAL", "1s")];
    let a = Instance::start(url, &env);
    let (client_id, _) = populate(url);
    let b = Instance::start(url, &env);
    (a, b, client_id)
}

/// A device polling instance A and then, too soon, instance B is told to slow down by B; a
/// device that waits its interval between polls is never told so, whichever instance it asks.
#[test]
fn slow_down_holds_across_instances_and_spares_a_polite_client() {
    let db = database!();
    let (a, b, client_id) = two_instances_polling_each_second(&db.url());
    let (impatient, _) = a.start_device(&client_id);
    let r = a.poll(&client_id, &impatient);
    assert_eq!(r.body["error"], "authorization_pending", "{}", r.text);
    let r = b.poll(&client_id, &impatient);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"], "slow_down", "{}", r.text);
    assert!(r.body["interval"].as_i64().unwrap() > 1, "{}", r.text);

    let (polite, _) = b.start_device(&client_id);
    for i in 0..6 {
        let instance = if i % 2 == 0 { &a } else { &b };
        let r = instance.poll(&client_id, &polite);
        assert_eq!(
            r.body["error"], "authorization_pending",
            "poll {i}: {}",
            r.text
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
}

/// An instance that remembers a code's read (the device polls it fast) does not answer
/// `authorization_pending` from memory: another instance may have seen a later poll, which
/// makes this one too soon. Here the device polls A, A again (A remembers the read), B too soon
/// (B says slow_down, and the interval grows), then A at a time A alone would find polite.
#[test]
fn a_later_poll_seen_by_another_instance_is_not_overlooked_from_memory() {
    let db = database!();
    let (a, b, client_id) = two_instances_polling_each_second(&db.url());
    let (device, _) = a.start_device(&client_id);
    let (other, _) = a.start_device(&client_id);
    let start = Instant::now();
    let at = |ms: u64| {
        let due = start + Duration::from_millis(ms);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    };
    let error = |r: &Resp| r.body["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(error(&a.poll(&client_id, &device)), "authorization_pending");
    // 700 ms on a 1 s interval is within the grace (750 ms): pending, and A now remembers the
    // code's read (polled twice within a second).
    at(700);
    assert_eq!(error(&a.poll(&client_id, &device)), "authorization_pending");
    at(800);
    let r = b.poll(&client_id, &device);
    assert_eq!(error(&r), "slow_down", "{}", r.text);
    // A reads the client again (its read from the first poll is over a second old), so the
    // next poll of `device` could be answered from memory.
    at(1050);
    assert_eq!(error(&a.poll(&client_id, &other)), "authorization_pending");
    // 750 ms after A's last poll, early by 300 ms: on time by A's own count, too soon after
    // B's (650 ms, at an interval grown to 6 s).
    at(1450);
    let r = a.poll(&client_id, &device);
    assert!(
        start.elapsed() < Duration::from_millis(1650),
        "the schedule slipped"
    );
    assert_eq!(error(&r), "slow_down", "{}", r.text);
}

/// A refresh token revoked on one instance, a device locked on one, a client's secret
/// rotated by the command line: every other instance acts on it within a second.
#[test]
fn changes_on_one_instance_are_seen_on_another_within_a_second() {
    let db = database!();
    let url = db.url();
    let a = Instance::start(&url, &[]);
    let (client_id, rs) = populate(&url);
    let b = Instance::start(&url, &[]);
    // Revocation of a refresh token (its family) on A: B refuses it.
    let (_, refresh, _) = login(&url, &a, &client_id);
    let r = a.form(
        "/oauth/revoke",
        &[("token", &refresh), ("client_id", &client_id)],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = b.form(
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ],
    );
    assert_eq!(r.body["error"], "invalid_grant", "{}", r.text);

    // A device locked through A's API: B's introspection says inactive within a second.
    let (access, _, _) = login(&url, &a, &client_id);
    let (admin_access, _, _) = login(&url, &a, &client_id);
    assert!(b.introspect(&rs, &access));
    let devices = a.get("/api/v1/devices", Some(&admin_access));
    assert_eq!(devices.status, 200, "{}", devices.text);
    // The newest first: the admin's own device, then the one to lock (then the first login's).
    let items = devices.body["items"].as_array().expect("a page of devices");
    assert_eq!(items.len(), 3, "{}", devices.text);
    let id = items[1]["id"].as_str().unwrap();
    let locked = a.put(
        &format!("/api/v1/devices/{id}"),
        &admin_access,
        serde_json::json!({"locked": true}),
    );
    assert_eq!(locked.status, 200, "{}", locked.text);
    let took = within(Duration::from_secs(3), || !b.introspect(&rs, &access));
    assert!(
        took.is_some_and(|t| t <= Duration::from_secs(1)),
        "a lock on A was seen on B after {took:?}"
    );

    // The resource server's secret rotated from the command line: the old one fails on B
    // within a second (B had just authenticated with it).
    let (access, _, _) = login(&url, &b, &client_id);
    assert!(b.introspect(&rs, &access));
    let rotated = cli(&url, &["client", "rotate-secret", &rs.0], None);
    let new = (
        rs.0.clone(),
        rotated["client_secret"].as_str().unwrap().to_string(),
    );
    let took = within(Duration::from_secs(3), || {
        b.form(
            "/oauth/introspect",
            &[
                ("token", &access),
                ("client_id", &rs.0),
                ("client_secret", &rs.1),
            ],
        )
        .status
            == 401
    });
    assert!(
        took.is_some_and(|t| t <= Duration::from_secs(1)),
        "a rotated secret was still accepted on B after {took:?}"
    );
    assert!(b.introspect(&new, &access));
}

/// `kill -9` of the instance running the reaper while approvals stream through both: every
/// approval it acknowledged is there afterwards, and the survivor takes the reaper over.
#[test]
fn kill_9_loses_no_acknowledged_approval_and_the_reaper_moves() {
    let db = database!();
    let url = db.url();
    let env = [("HALLPASS_REAPER_INTERVAL", "1s")];
    let a = Instance::start(&url, &env);
    let (client_id, _) = populate(&url);
    let b = Instance::start(&url, &env);
    let runs_reaper = |i: &Instance| i.log().contains("this instance runs the reaper");
    assert!(
        within(Duration::from_secs(5), || runs_reaper(&a)
            || runs_reaper(&b))
        .is_some(),
        "no instance took the reaper"
    );
    let (mut holder, survivor) = if runs_reaper(&a) { (a, b) } else { (b, a) };
    assert!(!runs_reaper(&survivor), "both instances run the reaper");

    // Approvals through the holder's API, as fast as one client sends them; then kill -9.
    let (admin_access, _, _) = login(&url, &survivor, &client_id);
    let mut codes = Vec::new();
    for _ in 0..40 {
        codes.push(survivor.start_device(&client_id));
    }
    let mut acknowledged = Vec::new();
    let killer = {
        let pid = holder.child.id();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        })
    };
    for (device_code, user_code) in &codes {
        let r = holder
            .http
            .put(format!("{}/api/v1/devices/verify", holder.base))
            .bearer_auth(&admin_access)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "user_code": user_code }).to_string())
            .send();
        if r.is_ok_and(|r| r.status().is_success()) {
            acknowledged.push(device_code.clone());
        }
    }
    killer.join().unwrap();
    let _ = holder.child.wait();
    assert!(!acknowledged.is_empty(), "no approval before the kill");
    for device_code in &acknowledged {
        let r = survivor.poll(&client_id, device_code);
        assert_eq!(
            r.status, 200,
            "an acknowledged approval was lost: {}",
            r.text
        );
    }
    // The lease lasts three intervals: the survivor takes it within them (and a margin).
    assert!(
        within(Duration::from_secs(8), || runs_reaper(&survivor)).is_some(),
        "the survivor did not take the reaper over"
    );
}

/// Wrong user codes entered on one instance count on the other: four wrong codes spread over
/// two instances spend an allowance of four, and the fifth entry is refused on either (with
/// one bucket per instance it would get eight).
#[test]
fn failed_code_entries_are_counted_across_instances() {
    let db = database!();
    let url = db.url();
    let env = [("HALLPASS_LIMITS_CODE_ENTRY_FAILURES_PER_MINUTE", "4")];
    let a = Instance::start(&url, &env);
    let (client_id, _) = populate(&url);
    let b = Instance::start(&url, &env);
    let (access, _, _) = login(&url, &a, &client_id);
    let verify = |i: &Instance, code: &str| {
        Server::finish(
            i.http
                .put(format!("{}/api/v1/devices/verify", i.base))
                .bearer_auth(&access)
                .header("content-type", "application/json")
                .body(serde_json::json!({ "user_code": code }).to_string())
                .send()
                .unwrap(),
        )
    };
    let wrong = ["BCDFGHJK", "BCDFGHJL", "BCDFGHJM", "BCDFGHJN", "BCDFGHJP"];
    for (n, code) in wrong[..4].iter().enumerate() {
        let instance = if n % 2 == 0 { &a } else { &b };
        let r = verify(instance, code);
        assert_eq!(r.status, 404, "wrong code {n}: {}", r.text);
    }
    for instance in [&a, &b] {
        let r = verify(instance, wrong[4]);
        assert_eq!(r.status, 429, "{}", r.text);
    }
}

/// Three instances starting at once on an empty database make one signing key, and publish
/// the same keys.
#[test]
fn simultaneous_first_starts_make_one_key() {
    let db = database!();
    let url = db.url();
    let instances: Vec<Instance> = std::thread::scope(|s| {
        let barrier = Arc::new(Barrier::new(3));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let (barrier, url) = (barrier.clone(), &url);
                s.spawn(move || {
                    barrier.wait();
                    Instance::start(url, &[])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let keys = cli(&url, &["keys", "list"], None);
    let active: Vec<&Value> = keys
        .as_array()
        .expect("keys list prints an array")
        .iter()
        .filter(|k| !k["activated"].is_null() && k["retired"].is_null())
        .collect();
    assert_eq!(active.len(), 1, "{keys}");
    let jwks: Vec<Value> = instances
        .iter()
        .map(|i| i.get("/.well-known/jwks.json", None).body)
        .collect();
    assert!(jwks.iter().all(|j| *j == jwks[0]), "{jwks:?}");
}
