//! A throwaway PostgreSQL cluster for the tests: one per test binary, started on first use
//! from the machine's `initdb` and `postgres` (Debian's `postgresql` package:
//! /usr/lib/postgresql/*/bin, or the directory in `PG_BIN`), with a database per test.
//!
//! Include it with `#[path = "../support/pg.rs"] mod pg;`. A test asks for a database with
//! [`database`] and returns early when it gets `None`: then PostgreSQL is not installed and a
//! line says how to enable the runs, unless `REQUIRE_POSTGRES=1` (CI), where that is a failure.
//!
//! The cluster lives in a temporary directory, listens on 127.0.0.1 at a free port with TLS
//! (a CA and a certificate for `localhost` made per run, see [`Cluster::ca_file`]), and trusts
//! every local connection; fsync is off (nothing here must survive a power loss). `initdb`
//! refuses to run as root, so as root (CI) the server runs as the `postgres` user (which the
//! package creates) through `setpriv`. It is stopped and its directory removed when the test
//! process ends, however it ends: a small shell watchdog holds the server and waits for its
//! standard input, a pipe from this process, to close.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The running cluster.
pub struct Cluster {
    /// 127.0.0.1's port it listens on.
    pub port: u16,
    /// Its directory (data, socket, certificates, log).
    pub dir: PathBuf,
    /// The PostgreSQL binaries used.
    pub bin: PathBuf,
    /// The watchdog; its stdin closes when this process ends, which stops the server.
    _watchdog: std::sync::Mutex<Child>,
}

/// One test's database, dropped (with `WITH (FORCE)`) when this is dropped.
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// Its cluster.
    pub cluster: &'static Cluster,
}

impl TestDb {
    /// A URL for hallpass (`database.url`): superuser `postgres`, no password (trust), with
    /// `sslmode` as given.
    pub fn url_with(&self, sslmode: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}?sslmode={sslmode}",
            self.cluster.port, self.name
        )
    }

    /// [`TestDb::url_with`] `disable`: the tests' default (TLS is tested on its own).
    pub fn url(&self) -> String {
        self.url_with("disable")
    }

    /// A connected client (no TLS) and the runtime its connection task runs on.
    pub fn client(&self) -> (tokio_postgres::Client, tokio::runtime::Runtime) {
        self.cluster.client(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (client, rt) = self.cluster.client("postgres");
        let _ = rt.block_on(client.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )));
    }
}

/// A new empty database on the cluster, or `None` (after saying why) when PostgreSQL is not
/// installed and not required.
pub fn database() -> Option<TestDb> {
    let cluster = cluster()?;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let (client, rt) = cluster.client("postgres");
    rt.block_on(client.batch_execute(&format!("CREATE DATABASE {name}")))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e:?}"));
    Some(TestDb { name, cluster })
}

/// The cluster of this test binary, started on first use; `None` when PostgreSQL is not
/// installed (and `REQUIRE_POSTGRES` is not 1).
pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let required = std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
            match find_bin() {
                Some(bin) => Some(Cluster::start(bin)),
                None if required => panic!(
                    "REQUIRE_POSTGRES=1 but no PostgreSQL server was found (initdb and postgres \
                     in PG_BIN, /usr/lib/postgresql/*/bin, or pg_config --bindir); install the \
                     `postgresql` package"
                ),
                None => {
                    // Straight to stderr: the test harness captures eprintln! of passing tests.
                    let _ = writeln!(
                        std::io::stderr(),
                        "skipping the PostgreSQL tests: no PostgreSQL server found. Install it \
                         (Debian/Ubuntu: apt-get install postgresql) or set PG_BIN to the \
                         directory holding initdb and postgres; REQUIRE_POSTGRES=1 makes a \
                         missing server a failure"
                    );
                    None
                }
            }
        })
        .as_ref()
}

/// The directory holding `initdb` and `postgres`: `PG_BIN`, else the newest
/// /usr/lib/postgresql/N/bin, else `pg_config --bindir`.
fn find_bin() -> Option<PathBuf> {
    let usable = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(d) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return usable(&d).then_some(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| usable(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let d = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    usable(&d).then_some(d)
}

/// Whether this process runs as root (initdb refuses to).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// `program args...`, as the `postgres` user when this process is root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--reset-env",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs a command to completion, panicking with its output when it fails.
fn run(mut c: Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The watchdog: starts the server given as its arguments, waits for its stdin to close (this
/// process ending), then stops the server (fast shutdown) and removes the directory.
const WATCHDOG: &str = r#"
dir=$1; shift
"$@" >>"$dir/postgres.log" 2>&1 </dev/null &
pid=$!
read -r _ || true
kill -INT "$pid" 2>/dev/null
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$dir"
"#;

impl Cluster {
    fn start(bin: PathBuf) -> Cluster {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("hallpass-pg-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let data = dir.join("data");
        let root = is_root();
        if root {
            let mut c = Command::new("chown");
            c.arg("postgres:postgres").arg(&dir);
            run(
                c,
                "chown postgres (run as root: the server runs as the postgres user)",
            );
        }
        let mut initdb = as_server_user(&bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdout(Stdio::piped());
        run(initdb, "initdb");
        write_certificates(&dir, root);

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = vec![bin.join("postgres").into_os_string()];
        if root {
            server = [
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--reset-env",
                "--",
            ]
            .iter()
            .map(Into::into)
            .chain(server)
            .collect();
        }
        // Nothing here must survive a power loss, except for the benchmark, which measures
        // PostgreSQL as it runs in production (`PG_DURABLE=1`).
        let durability = match std::env::var("PG_DURABLE").is_ok_and(|v| v == "1") {
            true => "on",
            false => "off",
        };
        let settings = [
            "listen_addresses=127.0.0.1".to_string(),
            format!("port={port}"),
            format!("unix_socket_directories={}", dir.display()),
            format!("fsync={durability}"),
            format!("synchronous_commit={durability}"),
            format!("full_page_writes={durability}"),
            "max_connections=300".into(),
            "shared_buffers=64MB".into(),
            "ssl=on".into(),
            format!("ssl_cert_file={}", dir.join("server.crt").display()),
            format!("ssl_key_file={}", dir.join("server.key").display()),
            "log_min_messages=warning".into(),
        ];
        let mut watchdog = Command::new("bash");
        watchdog
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(&dir)
            .args(&server)
            .arg("-D")
            .arg(&data);
        for s in &settings {
            watchdog.arg("-c").arg(s);
        }
        let child = watchdog
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the PostgreSQL watchdog (bash)");
        let cluster = Cluster {
            port,
            dir,
            bin,
            _watchdog: std::sync::Mutex::new(child),
        };
        cluster.wait_ready();
        eprintln!(
            "PostgreSQL test cluster on 127.0.0.1:{port} ({}), ready in {} ms",
            cluster.dir.display(),
            started.elapsed().as_millis()
        );
        cluster
    }

    /// Waits (up to 60 s) for the server to accept connections.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let rt = runtime();
        loop {
            let url = format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
                self.port
            );
            match rt.block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls)) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!(
                    "the PostgreSQL test cluster did not start: {e}\n{}",
                    std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// A client connected (without TLS) to database `name`, and the runtime its connection
    /// runs on (keep both).
    pub fn client(&self, name: &str) -> (tokio_postgres::Client, tokio::runtime::Runtime) {
        let rt = runtime();
        let url = format!(
            "host=127.0.0.1 port={} user=postgres dbname={name} sslmode=disable",
            self.port
        );
        let (client, conn) = rt
            .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
            .unwrap_or_else(|e| panic!("connect to {name}: {e:?}"));
        rt.spawn(conn);
        (client, rt)
    }

    /// The PEM file of the CA that signed the server's certificate (for `localhost` and
    /// `db.hallpass.test`; not for 127.0.0.1, so that a connection to the address fails
    /// verify-full and passes verify-ca).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The PEM file of another CA, which signed nothing here.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }
}

/// A runtime for the support code's own connections.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Makes a CA, a certificate it signed for `localhost` and `db.hallpass.test` with its key
/// (the server's, mode 0600, the server user's), and a second unrelated CA.
fn write_certificates(dir: &Path, root: bool) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca = |name: &str| {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("a CA certificate");
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("hallpass test CA");
    let (other, _) = ca("hallpass other CA");
    let key = KeyPair::generate().expect("a server key");
    let mut params = CertificateParams::new(vec!["localhost".into(), "db.hallpass.test".into()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("a server certificate");
    let write = |name: &str, text: &str, private: bool| {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).expect("a certificate file");
        f.write_all(text.as_bytes())
            .expect("write a certificate file");
        if private {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod 600");
        }
        if root {
            let mut c = Command::new("chown");
            c.arg("postgres:postgres").arg(&path);
            run(c, "chown a certificate file");
        }
    };
    write("ca.pem", &ca_cert.pem(), false);
    write("other-ca.pem", &other.pem(), false);
    write("server.crt", &cert.pem(), false);
    write("server.key", &key.serialize_pem(), true);
}
