//! Fault-injection tests (issue 6) against the real binary: `kill -9` in the middle of a load of
//! device flows, a database write-locked by another process, a database file removed or made
//! read-only while serving, ten thousand slow connections, and (issue 18) a closed stderr or
//! stdout and a full disk.
//!
//! Every test here is heavy or timing-sensitive, so they run one at a time ([`serial`]), each
//! against its own server ([`Node`]) that can be killed and restarted on the same directory.

#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;
#[path = "../support/pg.rs"]
mod pg;

mod crash;
mod disk;
mod files;
mod lock;
mod modes;
mod output;
mod replaced;
mod sealing;
mod slow;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use harness::{BIN, DEVICE_GRANT, PASSWORD, USER_AGENT};
use serde_json::Value;

/// Rate limits off: the load here comes from one address and would otherwise get 429s.
pub const NO_LIMITS: &[(&str, &str)] = &[
    ("HALLPASS_LIMITS_DEVICE_AUTHORIZATION_PER_MINUTE", "0"),
    ("HALLPASS_LIMITS_TOKEN_PER_MINUTE", "0"),
    ("HALLPASS_LIMITS_SIGN_IN_PER_MINUTE", "0"),
    ("HALLPASS_LIMITS_CODE_ENTRY_FAILURES_PER_MINUTE", "0"),
];

/// One test at a time: they load the machine and measure latencies.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A server process on a temporary directory that outlives it: it can be killed with SIGKILL
/// and started again on the same configuration and database. Its stderr goes to `server.log`
/// (appended across restarts), printed when a test fails.
pub struct Node {
    pub dir: tempfile::TempDir,
    /// Where the database and `server.log` are: `dir`, unless made elsewhere (a small disk).
    pub data: PathBuf,
    pub config: PathBuf,
    /// Start the server with its stderr a pipe whose read end is closed (no `server.log`).
    pub close_stderr: bool,
    /// The environment of the server and the command line.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    _stdout: Option<BufReader<ChildStdout>>,
    /// `http://127.0.0.1:PORT` of the current process.
    pub base: String,
    /// The umask the server and the command line run under (through `sh -c 'umask …'`), when
    /// set; else this process's.
    pub umask: Option<&'static str>,
    /// The PostgreSQL database with `TEST_BACKEND=postgres` (see [`harness::database_section`]);
    /// dropped after the server (`Drop` of `Node` runs first).
    _pg: Option<pg::TestDb>,
}

impl Node {
    /// A new directory and configuration, the environment overrides `env` (on top of
    /// [`NO_LIMITS`]), and a started server.
    pub fn start(env: &[(&str, &str)]) -> Node {
        let mut node = Node::create(env, None);
        node.restart();
        node
    }

    /// Like [`Node::start`] without starting the server, with the database and `server.log`
    /// in `data` (default: the node's directory).
    pub fn create(env: &[(&str, &str)], data: Option<&Path>) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = data.unwrap_or(dir.path()).to_path_buf();
        let config = dir.path().join("hallpass.toml");
        let (database, pg) = harness::database_section(&data.join("hallpass.db"));
        std::fs::write(
            &config,
            format!("[server]\nlisten = \"127.0.0.1:0\"\n{database}"),
        )
        .expect("write config");
        let env = NO_LIMITS
            .iter()
            .chain(env)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Node {
            dir,
            data,
            config,
            close_stderr: false,
            env,
            child: None,
            _stdout: None,
            base: String::new(),
            umask: None,
            _pg: pg,
        }
    }

    /// `hallpass --config F ARGS…` with the node's environment (and umask, when set).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match self.umask {
            Some(umask) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
                    .arg(BIN);
                sh
            }
            None => Command::new(BIN),
        };
        cmd.arg("--config").arg(&self.config).args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the server (again) on the same configuration; waits for `listening on`.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let stderr = if self.close_stderr {
            Stdio::piped()
        } else {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .expect("log file");
            Stdio::from(log)
        };
        let mut cmd = self.command(&["serve"]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().expect("spawn hallpass serve");
        // The read end closed at once: from here on every write to stderr fails (EPIPE).
        drop(child.stderr.take());
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read stdout");
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no `listening on` line, got {line:?}; log:\n{}", self.log());
        };
        self.base = base.to_string();
        self.child = Some(child);
        self._stdout = Some(stdout);
    }

    /// `hallpass serve` that must refuse to start: its exit status and output. Panics if it
    /// starts (it is killed after 30 s).
    pub fn serve_refused(&self) -> Output {
        let mut child = self
            .command(&["serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hallpass serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait");
                panic!(
                    "the server started: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("wait")
    }

    /// SIGKILL: no chance to flush or finish anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        self._stdout = None;
    }

    /// SIGTERM and wait for the exit (SIGKILL after 15 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self._stdout = None;
    }

    /// Whether the server process is still running (`Err` with its exit status if not).
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => Err(format!("server exited: {status}")),
            Some(Err(e)) => Err(format!("wait failed: {e}")),
            None => Err("not started".into()),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data.join("hallpass.db")
    }

    /// The PostgreSQL database, with `TEST_BACKEND=postgres`.
    pub fn pg(&self) -> Option<&pg::TestDb> {
        self._pg.as_ref()
    }

    /// Rows of `sql` on the node's database, either backend (see [`harness::query`]).
    pub fn query(&self, sql: &str, params: &[Value]) -> Vec<Vec<Value>> {
        harness::query(&self.db_path(), self.pg(), sql, params)
    }

    pub fn log_path(&self) -> PathBuf {
        self.data.join("server.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `hallpass --config F ARGS…` against the same database, with the same environment.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn hallpass");
        {
            let mut input = child.stdin.take().expect("stdin");
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).expect("write stdin");
            }
        }
        child.wait_with_output().expect("wait hallpass")
    }

    fn cli_json(&self, args: &[&str], stdin: Option<&str>) -> Value {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "hallpass {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    }

    /// A user (password [`PASSWORD`]); returns its id.
    pub fn add_user(&self, name: &str) -> String {
        let v = self.cli_json(
            &["user", "add", name, "--password-stdin"],
            Some(&format!("{PASSWORD}\n")),
        );
        v["id"].as_str().expect("id").to_string()
    }

    /// A public client allowed `scope`; returns its id.
    pub fn add_client(&self, name: &str, scope: &str) -> String {
        let v = self.cli_json(&["client", "add", "--name", name, "--scope", scope], None);
        v["client_id"].as_str().expect("client_id").to_string()
    }

    /// `device approve CODE --user NAME`: whether it was acknowledged (exit 0).
    pub fn cli_approve(&self, user_code: &str, user: &str) -> Result<(), String> {
        let out = self.cli(&["device", "approve", user_code, "--user", user], None);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A whole device flow for `user` approved from the command line: the access token.
    pub fn login(&self, http: &Http, client_id: &str, user: &str, scope: &str) -> String {
        let started = http.start(self, client_id, scope).expect("request");
        assert_eq!(started.status, 200, "{}", started.text);
        let user_code = started.body["user_code"].as_str().expect("user_code");
        let device_code = started.body["device_code"].as_str().expect("device_code");
        self.cli_approve(user_code, user).expect("approve");
        let r = http.poll(self, client_id, device_code).expect("request");
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["access_token"]
            .as_str()
            .expect("access_token")
            .into()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- server log (last {} lines) ---\n{}",
                tail.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// Where requests go: a [`Node`], or a base URL.
pub trait Base {
    fn url(&self, path: &str) -> String;
}

impl Base for Node {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Base for str {
    fn url(&self, path: &str) -> String {
        format!("{self}{path}")
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub retry_after: Option<String>,
    pub cache_control: Option<String>,
    pub content_type: Option<String>,
    /// How long the request took.
    pub took: Duration,
}

/// A blocking HTTP client with one timeout for every request; transport errors are returned,
/// not panicked on (a killed server refuses connections).
pub struct Http(reqwest::blocking::Client);

impl Http {
    pub fn new(timeout: Duration) -> Http {
        Http(
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .user_agent(USER_AGENT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
        )
    }

    /// A fresh connection for every request (no pool), for clients that must not reuse an
    /// already-accepted connection.
    pub fn fresh(timeout: Duration) -> Http {
        Http(
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .user_agent(USER_AGENT)
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
        )
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Result<Resp, reqwest::Error> {
        let started = Instant::now();
        let resp = req.send()?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = resp.status().as_u16();
        let (retry_after, cache_control, content_type) = (
            header("retry-after"),
            header("cache-control"),
            header("content-type"),
        );
        let text = resp.text()?;
        Ok(Resp {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            retry_after,
            cache_control,
            content_type,
            took: started.elapsed(),
        })
    }

    pub fn get(&self, node: &(impl Base + ?Sized), path: &str) -> Result<Resp, reqwest::Error> {
        self.send(self.0.get(node.url(path)))
    }

    pub fn form(
        &self,
        node: &(impl Base + ?Sized),
        path: &str,
        fields: &[(&str, &str)],
    ) -> Result<Resp, reqwest::Error> {
        self.send(self.0.post(node.url(path)).form(fields))
    }

    /// A JSON API request with a bearer token.
    pub fn api(
        &self,
        node: &(impl Base + ?Sized),
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Resp, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.0.request(method, node.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        self.send(req)
    }

    /// `POST /oauth/device_authorization`.
    pub fn start(
        &self,
        node: &(impl Base + ?Sized),
        client_id: &str,
        scope: &str,
    ) -> Result<Resp, reqwest::Error> {
        self.form(
            node,
            "/oauth/device_authorization",
            &[
                ("client_id", client_id),
                ("scope", scope),
                ("device_name", "fault-test"),
            ],
        )
    }

    /// One device-code poll of `/oauth/token`.
    pub fn poll(
        &self,
        node: &(impl Base + ?Sized),
        client_id: &str,
        device_code: &str,
    ) -> Result<Resp, reqwest::Error> {
        self.form(
            node,
            "/oauth/token",
            &[
                ("grant_type", DEVICE_GRANT),
                ("device_code", device_code),
                ("client_id", client_id),
            ],
        )
    }

    /// `PUT /api/v1/devices/verify` as the owner of `token`.
    pub fn verify(
        &self,
        node: &(impl Base + ?Sized),
        token: &str,
        user_code: &str,
    ) -> Result<Resp, reqwest::Error> {
        self.api(
            node,
            "PUT",
            "/api/v1/devices/verify",
            token,
            Some(serde_json::json!({ "user_code": user_code, "trusted_device": false })),
        )
    }
}

/// An RFC 6749 §5.2 error body: exactly `error` (one of `codes`) and a non-empty
/// `error_description`, JSON, not cacheable.
pub fn assert_oauth_error(r: &Resp, status: &[u16], codes: &[&str]) {
    assert!(
        status.contains(&r.status),
        "status {} not in {status:?}: {}",
        r.status,
        r.text
    );
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/json"),
        "{}",
        r.text
    );
    assert_eq!(r.cache_control.as_deref(), Some("no-store"), "{}", r.text);
    let code = r.body["error"].as_str().unwrap_or_default();
    assert!(
        codes.contains(&code),
        "error {code:?} not in {codes:?}: {}",
        r.text
    );
    assert!(
        r.body["error_description"]
            .as_str()
            .is_some_and(|d| !d.trim().is_empty()),
        "no error_description: {}",
        r.text
    );
}

/// The management API's error body `{error, message, suggested, metadata}`.
pub fn assert_api_error(r: &Resp, status: &[u16], codes: &[&str]) {
    assert!(
        status.contains(&r.status),
        "status {} not in {status:?}: {}",
        r.status,
        r.text
    );
    let code = r.body["error"].as_str().unwrap_or_default();
    assert!(
        codes.contains(&code),
        "error {code:?} not in {codes:?}: {}",
        r.text
    );
    for k in ["message", "suggested"] {
        assert!(
            r.body[k].as_str().is_some_and(|m| !m.trim().is_empty()),
            "no {k}: {}",
            r.text
        );
    }
    assert!(r.body["metadata"].is_object(), "{}", r.text);
}

/// `PRAGMA integrity_check` and `PRAGMA foreign_key_check` of a database no server is using.
pub fn assert_db_consistent(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open database");
    let check: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(check, ["ok"], "integrity_check of {}", db.display());
    let fk: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0, "foreign_key_check of {}", db.display());
}

/// Retries `f` until it returns `Some` or `within` passes.
pub fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
