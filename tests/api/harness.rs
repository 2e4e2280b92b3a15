//! Runs the real binary for the API tests: `hallpass --config F serve` on port 0 with a
//! temporary database, the command line against the same database, and HTTP helpers for the
//! device flow and the JSON API. The server gets SIGTERM when the [`Server`] is dropped; its log
//! is printed when a test fails.
//!
//! The database is a SQLite file in the server's temporary directory, or, with
//! `TEST_BACKEND=postgres`, a new database on the throwaway PostgreSQL cluster of
//! tests/support/pg.rs (every crate that includes this file includes that one as `crate::pg`),
//! named by `database.url` in the configuration file that the server and every command line
//! read ([`database_section`]). It is dropped after the server stops. Tests about the SQLite
//! file itself return early on PostgreSQL ([`on_postgres`]).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::blocking::Client as Http;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_hallpass");

/// The device code grant's URI.
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The User-Agent of every test request (kept in `device_metadata`).
pub const USER_AGENT: &str = "hallpass-api-tests/1";

/// A password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

/// Whether the suites run on PostgreSQL (`TEST_BACKEND=postgres`) instead of SQLite files.
/// A test about the SQLite file itself (its mode, WAL, a replaced or read-only file, raw
/// rusqlite access, `hallpass backup`, ...) returns early when this is true, saying why.
pub fn on_postgres() -> bool {
    std::env::var("TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// The `[database]` section of a test configuration: `path = FILE` on SQLite; on PostgreSQL
/// (see [`on_postgres`]) also `url = ...` of a new database on the test cluster, returned with
/// it (keep it as long as anything uses the database: it is dropped with the value).
/// `TEST_BACKEND=postgres` without a PostgreSQL server is a failure, not a silent SQLite run.
pub fn database_section(file: &Path) -> (String, Option<crate::pg::TestDb>) {
    let path = format!("path = {:?}\n", file.to_str().expect("utf-8 database path"));
    if !on_postgres() {
        return (format!("[database]\n{path}"), None);
    }
    let db = crate::pg::database()
        .expect("TEST_BACKEND=postgres, but no PostgreSQL server was found (see the line above)");
    (
        format!("[database]\n{path}url = {:?}\n", db.url()),
        Some(db),
    )
}

/// Reads rows from a test server's database, on either backend: the SQLite `file`, or `pg`
/// when given. `sql` numbers its parameters `$1`, `$2`... (both engines read that; SQLite
/// binds `$N` by order of first appearance, so number them in order); `params` are JSON
/// integers, strings or null. Each row comes back as JSON values: integers, text, booleans
/// (SQLite has none: its 0/1 are integers), null, and blobs/BYTEA as arrays of bytes.
/// For checks of what the server stored; not for writing (another program's writes are a
/// SQLite-file test).
#[allow(dead_code)] // not every crate that includes the harness reads rows
pub fn query(
    file: &Path,
    pg: Option<&crate::pg::TestDb>,
    sql: &str,
    params: &[Value],
) -> Vec<Vec<Value>> {
    let bytes = |b: &[u8]| Value::Array(b.iter().map(|x| Value::from(*x)).collect());
    let Some(pg) = pg else {
        // Read-write (a WAL file needs it to be read without its -shm), but never created.
        let conn = rusqlite::Connection::open_with_flags(
            file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )
        .unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
        let params: Vec<rusqlite::types::Value> = params
            .iter()
            .map(|p| match p {
                Value::Null => rusqlite::types::Value::Null,
                Value::Number(n) => n.as_i64().expect("an integer parameter").into(),
                Value::String(s) => s.clone().into(),
                other => panic!("parameter {other}: integers, strings or null"),
            })
            .collect();
        let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let n = stmt.column_count();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), |r| {
                (0..n)
                    .map(|i| {
                        use rusqlite::types::ValueRef;
                        Ok(match r.get_ref(i)? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(v) => v.into(),
                            ValueRef::Real(v) => v.into(),
                            ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                            ValueRef::Blob(b) => bytes(b),
                        })
                    })
                    .collect()
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        return rows
            .map(|r| r.unwrap_or_else(|e| panic!("{sql}: {e}")))
            .collect();
    };
    use tokio_postgres::types::{ToSql, Type};
    let params: Vec<Box<dyn ToSql + Sync>> = params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync> {
            match p {
                Value::Null => Box::new(None::<String>),
                Value::Number(n) => Box::new(n.as_i64().expect("an integer parameter")),
                Value::String(s) => Box::new(s.clone()),
                other => panic!("parameter {other}: integers, strings or null"),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
    let (client, rt) = pg.client();
    let rows = rt
        .block_on(client.query(sql, &refs))
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    let t = row.columns()[i].type_();
                    let v = |o: Option<Value>| o.unwrap_or(Value::Null);
                    match *t {
                        Type::INT2 => v(row.get::<_, Option<i16>>(i).map(Into::into)),
                        Type::INT4 => v(row.get::<_, Option<i32>>(i).map(Into::into)),
                        Type::INT8 => v(row.get::<_, Option<i64>>(i).map(Into::into)),
                        Type::FLOAT8 => v(row.get::<_, Option<f64>>(i).map(Into::into)),
                        Type::BOOL => v(row.get::<_, Option<bool>>(i).map(Into::into)),
                        Type::TEXT | Type::VARCHAR | Type::NAME => {
                            v(row.get::<_, Option<String>>(i).map(Into::into))
                        }
                        Type::BYTEA => v(row.get::<_, Option<Vec<u8>>>(i).map(|b| bytes(&b))),
                        _ => panic!("{sql}: column {i} is {t}; cast it"),
                    }
                })
                .collect()
        })
        .collect()
}

/// A running server with its own temporary directory and database.
pub struct Server {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    http: Http,
    /// The PostgreSQL database, when on PostgreSQL; dropped after the server has stopped
    /// ([`Drop`] of `Server` runs before its fields are dropped).
    pg: Option<crate::pg::TestDb>,
}

/// An HTTP answer: status, headers and the body as JSON (`Value::Null` if it is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Tokens from a device flow, with the device they belong to.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub scope: String,
    pub device_id: String,
}

/// A started device authorization.
#[derive(Debug, Clone)]
pub struct Started {
    pub device_code: String,
    pub user_code: String,
}

impl Server {
    /// A server with the default configuration.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server with `HALLPASS_*` environment overrides, e.g.
    /// `("HALLPASS_OAUTH_ACCESS_TOKEN_LIFETIME", "2s")`.
    ///
    /// Its configuration file sets `oauth.signing_algorithm = "EdDSA"` (an environment
    /// override still wins): these tests were written when EdDSA was the default, and a new
    /// RSA key (the default since issue 19) costs each server start ~0.13 s of CPU. Tests of
    /// the default use [`Server::start_with_default_algorithm`].
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        Server::launch(
            env,
            "[oauth]\nsigning_algorithm = \"EdDSA\"\n",
            on_postgres(),
        )
    }

    /// A server with the binary's default signing algorithm (nothing in the file).
    pub fn start_with_default_algorithm(env: &[(&str, &str)]) -> Server {
        Server::launch(env, "", on_postgres())
    }

    /// [`Server::start_with`] on a SQLite file whatever `TEST_BACKEND` says (for tests that
    /// make a SQLite database to move elsewhere).
    #[allow(dead_code)] // tests/postgres only
    pub fn start_sqlite_with(env: &[(&str, &str)]) -> Server {
        Server::launch(env, "[oauth]\nsigning_algorithm = \"EdDSA\"\n", false)
    }

    fn launch(env: &[(&str, &str)], extra_config: &str, postgres: bool) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("hallpass.toml");
        let db = dir.path().join("hallpass.db");
        let (database, pg) = if postgres {
            database_section(&db)
        } else {
            (
                format!(
                    "[database]\npath = {:?}\n",
                    db.to_str().expect("utf-8 path")
                ),
                None,
            )
        };
        std::fs::write(
            &config,
            format!("[server]\nlisten = \"127.0.0.1:0\"\n{database}{extra_config}"),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hallpass serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read stdout");
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            panic!("no `listening on` line, got {line:?}; log:\n{log}");
        };
        let base = base.to_string();
        let http = Http::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        Server {
            child,
            _stdout: stdout,
            base,
            dir,
            config,
            http,
            pg,
        }
    }

    /// The database file (SQLite; on PostgreSQL nothing is there, but its directory holds
    /// `hallpass.toml` and `server.log`).
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("hallpass.db")
    }

    /// Rows of `sql` on the server's database, either backend (see [`query`]).
    #[allow(dead_code)] // not every crate that includes the harness reads rows
    pub fn query(&self, sql: &str, params: &[Value]) -> Vec<Vec<Value>> {
        query(&self.db_path(), self.pg.as_ref(), sql, params)
    }

    /// Runs `hallpass --config F ARGS…` with `stdin`.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hallpass");
        {
            let mut input = child.stdin.take().expect("stdin");
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).expect("write stdin");
            }
        }
        child.wait_with_output().expect("wait hallpass")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "hallpass {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Creates a user from the command line; returns its id.
    pub fn add_user(&self, name: &str, admin: bool) -> String {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        if admin {
            args.push("--admin");
        }
        let out: Value = serde_json::from_str(&self.cli_ok(&args, Some(&format!("{PASSWORD}\n"))))
            .expect("user add prints JSON");
        assert_eq!(out["username"], name);
        assert_eq!(out["is_admin"], admin);
        out["id"].as_str().expect("id").to_string()
    }

    /// Creates a client from the command line; returns its id and (confidential) secret.
    pub fn add_client(&self, name: &str, scope: &str, extra: &[&str]) -> (String, Option<String>) {
        let mut args = vec!["client", "add", "--name", name, "--scope", scope];
        args.extend_from_slice(extra);
        let out: Value =
            serde_json::from_str(&self.cli_ok(&args, None)).expect("client add prints JSON");
        (
            out["client_id"].as_str().expect("client_id").to_string(),
            out["client_secret"].as_str().map(str::to_string),
        )
    }

    /// Approves a user code from the command line as `user`.
    pub fn approve(&self, user_code: &str, user: &str, trusted: bool) {
        let mut args = vec!["device", "approve", user_code, "--user", user];
        if trusted {
            args.push("--trusted");
        }
        self.cli_ok(&args, None);
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Reads a reqwest answer into a [`Resp`].
    pub fn finish(resp: reqwest::blocking::Response) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    /// POSTs a form to an OAuth endpoint.
    pub fn form(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        Server::finish(
            self.http
                .post(self.url(path))
                .form(fields)
                .send()
                .expect("POST form"),
        )
    }

    /// A request with optional bearer token and JSON body.
    pub fn api(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        Server::finish(req.send().expect("API request"))
    }

    /// A request with raw headers and body, for the error cases.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        Server::finish(req.send().expect("request"))
    }

    /// A JSON request whose body is sent chunked, without a Content-Length, on a connection
    /// that is not reused.
    pub fn chunked(&self, method: &str, path: &str, token: &str, body: Vec<u8>) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("connection", "close")
            .body(reqwest::blocking::Body::new(std::io::Cursor::new(body)));
        Server::finish(req.send().expect("chunked request"))
    }

    pub fn get(&self, path: &str, token: &str) -> Resp {
        self.api("GET", path, Some(token), None)
    }

    pub fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.api("PUT", path, Some(token), Some(body))
    }

    pub fn post(&self, path: &str, token: &str, body: Option<Value>) -> Resp {
        self.api("POST", path, Some(token), body)
    }

    pub fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.api("PATCH", path, Some(token), Some(body))
    }

    pub fn delete(&self, path: &str, token: &str) -> Resp {
        self.api("DELETE", path, Some(token), None)
    }

    /// `POST /oauth/device_authorization` for a public client.
    pub fn start_device(&self, client_id: &str, scope: &str, name: &str) -> Started {
        let r = self.form(
            "/oauth/device_authorization",
            &[
                ("client_id", client_id),
                ("scope", scope),
                ("device_name", name),
                ("os", "linux"),
                ("hostname", &format!("{name}.local")),
            ],
        );
        assert_eq!(r.status, 200, "device_authorization: {}", r.text);
        Started {
            device_code: r.body["device_code"].as_str().expect("device_code").into(),
            user_code: r.body["user_code"].as_str().expect("user_code").into(),
        }
    }

    /// One device-code poll of `/oauth/token`.
    pub fn poll(&self, client_id: &str, device_code: &str) -> Resp {
        self.form(
            "/oauth/token",
            &[
                ("grant_type", DEVICE_GRANT),
                ("device_code", device_code),
                ("client_id", client_id),
            ],
        )
    }

    /// Exchanges an approved code for tokens.
    pub fn exchange(&self, client_id: &str, device_code: &str) -> Tokens {
        let r = self.poll(client_id, device_code);
        assert_eq!(r.status, 200, "token: {}", r.text);
        tokens(&r.body)
    }

    /// A whole device flow: ask for a code, approve it as `user` from the command line,
    /// exchange it.
    pub fn login(&self, client_id: &str, user: &str, scope: &str) -> Tokens {
        self.login_named(client_id, user, scope, &format!("{user}-device"), false)
    }

    /// [`Server::login`] with a device name and the "trusted" choice.
    pub fn login_named(
        &self,
        client_id: &str,
        user: &str,
        scope: &str,
        name: &str,
        trusted: bool,
    ) -> Tokens {
        let s = self.start_device(client_id, scope, name);
        self.approve(&s.user_code, user, trusted);
        self.exchange(client_id, &s.device_code)
    }

    /// `grant_type=refresh_token` for a public client.
    pub fn refresh(&self, client_id: &str, refresh_token: &str) -> Resp {
        self.form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", client_id),
            ],
        )
    }

    /// `grant_type=client_credentials`.
    pub fn client_credentials(&self, client_id: &str, secret: &str, scope: &str) -> Resp {
        self.form(
            "/oauth/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", scope),
            ],
        )
    }

    /// RFC 7662 introspection with a confidential client's credentials: `active`.
    pub fn introspect(&self, client_id: &str, secret: &str, token: &str) -> bool {
        let r = self.form(
            "/oauth/introspect",
            &[
                ("token", token),
                ("client_id", client_id),
                ("client_secret", secret),
            ],
        );
        assert_eq!(r.status, 200, "introspect: {}", r.text);
        r.body["active"].as_bool().expect("active")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log"));
            eprintln!("--- server log ---\n{}", log.unwrap_or_default());
        }
    }
}

/// [`Tokens`] from a token response.
pub fn tokens(body: &Value) -> Tokens {
    let access = body["access_token"].as_str().expect("access_token");
    Tokens {
        access: access.to_string(),
        refresh: body["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        scope: body["scope"].as_str().unwrap_or_default().to_string(),
        device_id: jwt_part(access, 1)["device_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

/// The decoded header (0) or claims (1) of a JWT, unverified.
pub fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

/// Checks the API error shape `{error, message, suggested, metadata}` (nothing else), the
/// status and the code; returns `metadata`.
pub fn assert_error(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(
        r.status, status,
        "expected {status} {code}, got: {}",
        r.text
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "content type of {}",
        r.text
    );
    let obj = r.body.as_object().expect("error body is an object");
    let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["error", "message", "metadata", "suggested"],
        "{}",
        r.text
    );
    assert_eq!(r.body["error"], code, "{}", r.text);
    assert!(
        r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.text
    );
    assert!(
        r.body["suggested"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.text
    );
    assert!(r.body["metadata"].is_object(), "{}", r.text);
    r.body["metadata"].clone()
}

/// A 400 naming `field` in its metadata.
pub fn assert_bad_field(r: &Resp, field: &str) {
    let meta = assert_error(r, 400, "bad_request");
    assert_eq!(meta, json!({ "field": field }), "{}", r.text);
}

/// The sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// A server with an admin `root`, a public client `cli` (scopes `devices admin extra`), a
/// confidential client `svc` for introspection and client_credentials, and root's admin token.
pub struct World {
    pub server: Server,
    pub root_id: String,
    pub cli: String,
    pub svc: String,
    pub svc_secret: String,
    pub root: Tokens,
}

impl World {
    pub fn new() -> World {
        World::with_env(&[])
    }

    pub fn with_env(env: &[(&str, &str)]) -> World {
        World::around(Server::start_with(env))
    }

    /// A world whose server has the binary's default signing algorithm.
    pub fn with_default_algorithm(env: &[(&str, &str)]) -> World {
        World::around(Server::start_with_default_algorithm(env))
    }

    fn around(server: Server) -> World {
        let root_id = server.add_user("root", true);
        let (cli, _) = server.add_client("cli", "devices admin extra", &[]);
        let (svc, secret) = server.add_client(
            "svc",
            "devices extra",
            &["--confidential", "--grant", "client_credentials"],
        );
        let root = server.login(&cli, "root", "devices admin");
        assert_eq!(root.scope, "admin devices");
        World {
            server,
            root_id,
            cli,
            svc,
            svc_secret: secret.expect("confidential client secret"),
            root,
        }
    }

    /// A new user (not an admin) and their token with scope `devices` from `cli`.
    pub fn user(&self, name: &str) -> (String, Tokens) {
        let id = self.server.add_user(name, false);
        let t = self.server.login(&self.cli, name, "devices");
        (id, t)
    }

    /// Whether introspection with `svc` calls `token` active.
    pub fn active(&self, token: &str) -> bool {
        self.server.introspect(&self.svc, &self.svc_secret, token)
    }
}

impl std::ops::Deref for World {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}
