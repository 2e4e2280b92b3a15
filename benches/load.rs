//! Load benchmark: hallpass against a bare hyper server, on one machine, in one run.
//!
//! ```sh
//! cargo bench --bench load                       # defaults: 64 connections, 10 s per workload
//! cargo bench --bench load -- --connections 32 --seconds 5 --only W1,W4
//! BENCH_HALLPASS=/tmp/hallpass-old cargo bench --bench load -- --only W1   # another build
//! cargo bench --bench load -- --postgres         # on PostgreSQL: one instance, then two
//! BENCH_DATABASE_URL=postgres://… cargo bench --bench load -- --postgres   # on your server
//! ```
//!
//! With `--postgres`, hallpass runs on PostgreSQL instead of SQLite: on `BENCH_DATABASE_URL`
//! (an empty database the benchmark may fill), or else on a throwaway cluster it starts from
//! the machine's PostgreSQL binaries (tests/support/pg.rs) with durable settings (`fsync`,
//! `synchronous_commit` and `full_page_writes` on, as SQLite's `synchronous = full`). The
//! database server's CPU time per request is printed beside hallpass's (`db CPU`: every
//! process named `postgres` on the machine, so run it where no other PostgreSQL works). W1, W2, W4 and W6 run on one instance directly, then W1 and W2 through
//! a TCP round-robin (a second process of this benchmark, `--proxy`) to one instance and to
//! two: the cost of coordinating two instances through the database, measured against one
//! instance behind the same proxy.
//!
//! It starts the release `hallpass` binary on a temp database and, as a second process, a bare
//! hyper 1.x server that answers every request with a fixed small JSON body — the ceiling of
//! what HTTP alone costs here. A keep-alive HTTP/1.1 load generator (below, hand-written so its
//! own overhead is small and known) drives each workload and prints requests per second,
//! p50/p99/p99.9/max latency, the ratio to the bare server, errors, and the server's peak RSS.
//!
//! Workloads: W1 device authorizations; W2 token polls over 10,000 live pending codes; W3
//! complete flows (request, approve through the API, exchange); W4 refresh-token rotations;
//! W6 introspections of one access token by a confidential client (a resource server's
//! check); W5 the W2 polls while the reaper deletes 1,000,000 expired records; then the W2
//! polls over 100,000 and over 1,000,000 live codes (`--only W2L`, with their peak RSS and the
//! p99 ratio to 10,000 codes); W7 device authorizations on an eighth of the connections while
//! the rest poll 100,000 live codes (the latency a write sees while the reaper writes poll
//! times back). Also: idle RSS, start-up time to the "listening on" line with an empty
//! database and with 1,000,000 rows, and the release binary's size.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// The binary under test: this build's, or `BENCH_HALLPASS` to compare another build in the
/// same run conditions.
fn hallpass_bin() -> String {
    std::env::var("BENCH_HALLPASS").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hallpass").to_string())
}

#[derive(Clone)]
struct Options {
    connections: usize,
    seconds: u64,
    only: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        connections: 64,
        seconds: 10,
        only: None,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--connections" => {
                o.connections = args[i + 1].parse().expect("--connections N");
                i += 1;
            }
            "--seconds" => {
                o.seconds = args[i + 1].parse().expect("--seconds N");
                i += 1;
            }
            "--only" => {
                o.only = Some(args[i + 1].clone());
                i += 1;
            }
            "--postgres" => {}
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    o
}

#[path = "../tests/support/pg.rs"]
mod pg;

fn main() {
    if std::env::args().any(|a| a == "--bare-server") {
        bare_server();
        return;
    }
    if let Some(i) = std::env::args().position(|a| a == "--proxy") {
        let backends: Vec<SocketAddr> = std::env::args()
            .skip(i + 1)
            .map(|a| a.parse().expect("--proxy ADDR..."))
            .collect();
        proxy(backends);
        return;
    }
    if std::env::args().any(|a| a == "--postgres") {
        postgres_main();
        return;
    }
    let opts = options();
    let want = |w: &str| {
        opts.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == w))
    };
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "hallpass load benchmark: {} connections, {} s per workload, {} cores",
        opts.connections,
        opts.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let bin = hallpass_bin();
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!("release binary: {:.2} MiB ({bin})", size as f64 / 1048576.0);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The ceiling: a bare hyper server in its own process.
    let mut bare = Server::start_bare();
    let used0 = bare.usage();
    let ceiling = rt.block_on(drive(&opts, bare.addr, |_, _| Req::get("/")));
    ceiling.print("bare hyper", None, bare.peak_rss(), bare.usage() - used0);
    bare.stop();
    let base = ceiling.rps();

    // hallpass with an empty database. The load comes from one address, and W3 approves with one
    // user's token from 64 connections at once: the per-address and per-user limits are off
    // (with the code-entry limit on, W3's approvals go through five at a time, as a burst of
    // right codes from one user does since the limit reserves before the lookup).
    let db = dir.path().join("bench.db");
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 4096\n\
             [database]\npath = {db:?}\n\
             [oauth]\ndevice_code_lifetime = \"1h\"\npoll_interval = \"1s\"\n\
             [reaper]\ninterval = \"1s\"\n\
             [limits]\ndevice_authorization_per_minute = 0\ntoken_per_minute = 0\n\
             code_entry_failures_per_minute = 0\nmax_pending_codes_per_client = 1000000\n"
        ),
    )
    .unwrap();
    let (server, startup) = Server::start(&config);
    println!(
        "start-up to listening, empty database: {:.1} ms",
        ms(startup)
    );
    std::thread::sleep(Duration::from_millis(300));
    println!("idle RSS: {:.1} MiB", server.rss() as f64 / 1048576.0);

    let cli = |args: &[&str], stdin: &str| run_cli(&config, args, stdin);
    let client_id = bench_client(&cli);
    let auth_form = format!("client_id={client_id}&device_name=bench");

    if want("W1") {
        let form = auth_form.clone();
        let used0 = server.usage();
        let r = rt.block_on(drive(&opts, server.addr, move |_, _| {
            Req::form("/oauth/device_authorization", &form)
        }));
        let used = server.usage() - used0;
        r.print(
            "W1 device authorizations",
            Some(base),
            server.peak_rss(),
            used,
        );
    }

    // An admin token for the API (approving through PUT /api/v1/devices/verify).
    let admin_token = rt.block_on(admin_token(server.addr, &client_id, &cli));

    let polls = |codes: Arc<Vec<(String, String)>>, client_id: String| {
        move |conn: usize, n: usize| {
            let (dc, _) = &codes[(conn * 7919 + n) % codes.len()];
            Req::form(
                "/oauth/token",
                &format!(
                    "grant_type=urn:ietf:params:oauth:grant-type:device_code&device_code={dc}&client_id={client_id}"
                ),
            )
        }
    };

    let mut w2_p99 = None;
    if want("W2") || want("W2L") {
        let codes = Arc::new(rt.block_on(request_codes(server.addr, &client_id, "", 10_000)));
        let used0 = server.usage();
        rt.block_on(check_pending(server.addr, &client_id, &codes));
        let r = rt.block_on(drive(&opts, server.addr, polls(codes, client_id.clone())));
        let used = server.usage() - used0;
        r.print(
            "W2 polls, 10,000 live codes",
            Some(base),
            server.peak_rss(),
            used,
        );
        w2_p99 = Some(r.p99());
    }

    if want("W3") {
        // One complete flow per iteration: three requests on the same connection.
        let used0 = server.usage();
        let r = rt.block_on(drive_flows(&opts, server.addr, &client_id, &admin_token));
        let used = server.usage() - used0;
        r.print(
            "W3 complete flows (3 requests each)",
            None,
            server.peak_rss(),
            used,
        );
    }

    if want("W4") {
        // One refresh-token chain per connection.
        let tokens = rt.block_on(refresh_chains(
            server.addr,
            &client_id,
            &admin_token,
            opts.connections,
        ));
        let used0 = server.usage();
        let r = rt.block_on(drive_refresh(&opts, server.addr, &client_id, tokens));
        let used = server.usage() - used0;
        r.print("W4 refresh rotations", Some(base), server.peak_rss(), used);
    }

    if want("W6") {
        // A resource server checking an access token on every request it serves (RFC 7662):
        // introspection by a confidential client, HTTP Basic.
        let req = introspection_request(&cli, &admin_token);
        let addr = server.addr;
        let (status, answer) = rt.block_on(async {
            let req = Req {
                bytes: req.clone().into_bytes(),
            };
            Conn::open(addr).await.call(&req).await.unwrap()
        });
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!((status, &answer["active"]), (200, &true.into()), "{answer}");
        let used0 = server.usage();
        let r = rt.block_on(drive(&opts, server.addr, move |_, _| Req {
            bytes: req.clone().into_bytes(),
        }));
        let used = server.usage() - used0;
        r.print(
            "W6 introspections of an access token",
            Some(base),
            server.peak_rss(),
            used,
        );
    }

    let mut server = server;
    if want("W5") {
        server.stop();
        let n = seed_expired(&db, 1_000_000);
        let (s, startup) = Server::start(&config);
        println!("start-up to listening, {n} rows: {:.1} ms", ms(startup));
        server = s;
        let codes = Arc::new(rt.block_on(request_codes(server.addr, &client_id, "", 10_000)));
        let started = Instant::now();
        let used0 = server.usage();
        rt.block_on(check_pending(server.addr, &client_id, &codes));
        let r = rt.block_on(drive(&opts, server.addr, polls(codes, client_id.clone())));
        let used = server.usage() - used0;
        r.print(
            "W5 polls during a 1M-row purge",
            Some(base),
            server.peak_rss(),
            used,
        );
        // Wait for the purge to finish (bounded).
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let left = count_expired(&db);
            if left == 0 {
                println!(
                    "purge of {n} rows finished within {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                break;
            }
            if Instant::now() > deadline {
                println!("purge NOT finished after 300 s: {left} rows left");
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    if want("W2L") || want("W7") {
        // The same polls over many more live codes, written straight into the file (requesting
        // a million codes over HTTP would take minutes). Each size runs on a freshly started
        // server, so its peak RSS is its own.
        let mut codes = Vec::new();
        let mut seeded = 0;
        for (total, label) in [(100_000, "100,000"), (1_000_000, "1,000,000")] {
            if total > 100_000 && !want("W2L") {
                break;
            }
            server.stop();
            // Numbered from where the last batch stopped (a batch may skip a few numbers).
            codes.extend(seed_live(&db, &client_id, seeded, total - seeded));
            seeded = total;
            let (s, startup) = Server::start(&config);
            server = s;
            println!(
                "start-up to listening, {total} live codes: {:.1} ms",
                ms(startup)
            );
            let all = Arc::new(codes.clone());
            rt.block_on(check_pending(server.addr, &client_id, &all));
            if want("W2L") {
                let used0 = server.usage();
                let r = rt.block_on(drive(
                    &opts,
                    server.addr,
                    polls(all.clone(), client_id.clone()),
                ));
                let used = server.usage() - used0;
                r.print(
                    &format!("W2 polls, {label} live codes"),
                    Some(base),
                    server.peak_rss(),
                    used,
                );
                if let Some(small) = w2_p99 {
                    println!(
                        "  p99 with {label} live codes / p99 with 10,000: {:.2}x",
                        r.p99().as_secs_f64() / small.as_secs_f64()
                    );
                }
            }
            if total == 100_000 && want("W7") {
                // Device authorizations (an eighth of the connections) while the others poll:
                // the reaper's write-back of the poll times (every second here) must not stall
                // the writes queued behind it.
                // Its longest wait also holds the first request's recount of the client's
                // pending codes, up to the cap this config raises to 1,000,000 (docs/performance.md).
                let writers = (opts.connections / 8).max(1);
                let pollers = Options {
                    connections: opts.connections - writers,
                    ..opts.clone()
                };
                let authorizers = Options {
                    connections: writers,
                    ..opts.clone()
                };
                let form = auth_form.clone();
                let used0 = server.usage();
                let (p, a) = rt.block_on(async {
                    tokio::join!(
                        drive(&pollers, server.addr, polls(all.clone(), client_id.clone())),
                        drive(&authorizers, server.addr, move |_, _| {
                            Req::form("/oauth/device_authorization", &form)
                        })
                    )
                });
                // One CPU and disk figure for the mix: the server's usage over both runs'
                // requests.
                let used = server.usage() - used0;
                let share = |r: &Run| {
                    let all = (a.latencies.len() + a.errors + p.latencies.len() + p.errors).max(1);
                    used.share((r.latencies.len() + r.errors) as f64 / all as f64)
                };
                a.print(
                    &format!("W7 device authorizations ({writers} conns)"),
                    None,
                    server.peak_rss(),
                    share(&a),
                );
                p.print(
                    &format!("   meanwhile polls over {label} codes"),
                    None,
                    server.peak_rss(),
                    share(&p),
                );
            }
        }
    }
    server.stop();
}

/// Writes `n` live pending device authorizations (numbered from `from`) into the database of
/// a stopped server, the way `POST /oauth/device_authorization` stores them, and returns their
/// device codes and user codes.
fn seed_live(db: &Path, client: &str, from: usize, n: usize) -> Vec<(String, String)> {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    let now = hallpass::clock::now_ms();
    let expires = now + 3_600_000;
    let alphabet = hallpass::protocol::codes::ALPHABET;
    // Codes the server issued over HTTP earlier in the run: skip any number that would repeat one.
    let taken: std::collections::HashSet<String> = conn
        .prepare("SELECT user_code FROM device_authorizations")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Vec::with_capacity(n);
    let tx = conn.transaction().unwrap();
    {
        let mut dev = tx
            .prepare(
                "INSERT INTO devices (id, client_id, name, status, expires, created, updated) \
                 VALUES (?1, ?2, 'bench', 'pending', ?3, ?4, ?4)",
            )
            .unwrap();
        let mut auth = tx
            .prepare(
                "INSERT INTO device_authorizations (id, created_at, client_id, device_id, \
                 device_code_hash, user_code, expires_at, poll_interval_seconds) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)",
            )
            .unwrap();
        for i in from..from + n {
            // Distinct user codes: i in base 20, with a leading letter no live HTTP-issued
            // code is likely to share (and UNIQUE would catch it if one did).
            let mut user_code = String::from("Z");
            let mut k = i;
            for _ in 0..7 {
                user_code.insert(1, alphabet[k % alphabet.len()] as char);
                k /= alphabet.len();
            }
            if taken.contains(&user_code) {
                continue;
            }
            // As the server makes them (flow::start): ordered device codes, UUIDv7 ids.
            let device_code = hallpass::secrets::new_ordered_token();
            let dev_id = uuid::Uuid::now_v7().to_string();
            dev.execute(rusqlite::params![dev_id, client, expires, now])
                .unwrap();
            auth.execute(rusqlite::params![
                uuid::Uuid::now_v7().to_string(),
                now,
                client,
                dev_id,
                hallpass::secrets::token_key(&device_code),
                user_code,
                expires,
            ])
            .unwrap();
            out.push((device_code, user_code));
        }
    }
    tx.commit().unwrap();
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A request to send: method, path, optional form body.
struct Req {
    bytes: Vec<u8>,
}

impl Req {
    fn get(path: &str) -> Req {
        Req {
            bytes: format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes(),
        }
    }

    fn form(path: &str, body: &str) -> Req {
        Req {
            bytes: format!(
                "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        }
    }

    fn json(method: &str, path: &str, token: &str, body: &str) -> Req {
        Req {
            bytes: format!(
                "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        }
    }
}

/// One keep-alive connection: send a request, read the whole response.
struct Conn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        Conn {
            stream: tokio::io::BufReader::new(s),
        }
    }

    /// Returns the status and body.
    async fn call(&mut self, req: &Req) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.get_mut().write_all(&req.bytes).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// Latencies and counts of one run.
struct Run {
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
    statuses: std::collections::BTreeMap<u16, usize>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile of the latencies (0.5 for the median).
    fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }

    fn p99(&self) -> Duration {
        self.percentile(0.99)
    }

    /// Prints the run's line. `used` is what the server used during the run, printed per
    /// request: its CPU time (all threads, user + system), steadier across runs than
    /// requests/s since it does not count the time the load generator took from the server,
    /// and the bytes it wrote to storage (WAL frames, checkpoints), what an appliance's flash
    /// wears by.
    fn print(&self, name: &str, base: Option<f64>, peak_rss: u64, used: Usage) {
        let pct = |p: f64| self.percentile(p);
        let requests = (self.latencies.len() + self.errors).max(1);
        let max = self.latencies.iter().max().copied().unwrap_or_default();
        let ratio = base.map_or(String::new(), |b| {
            format!("  {:5.1}% of bare", 100.0 * self.rps() / b)
        });
        println!(
            "{name:<40} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  max {:>7.2} ms  errors {}  statuses {:?}  peak RSS {:.1} MiB  CPU {:.1} µs/req  disk {:.1} KiB/req{ratio}",
            self.rps(),
            ms(pct(0.50)),
            ms(pct(0.99)),
            ms(pct(0.999)),
            ms(max),
            self.errors,
            self.statuses,
            peak_rss as f64 / 1048576.0,
            used.cpu.as_secs_f64() * 1e6 / requests as f64,
            used.written as f64 / 1024.0 / requests as f64,
        );
    }
}

/// What a server process used: CPU time (all threads, user + system) and bytes it caused to be
/// written to storage (`/proc/PID/io` `write_bytes`, counted when a page is first dirtied).
#[derive(Clone, Copy, Default)]
struct Usage {
    cpu: Duration,
    written: u64,
}

impl Usage {
    /// The part of this usage that `fraction` of the requests stands for.
    fn share(self, fraction: f64) -> Usage {
        Usage {
            cpu: self.cpu.mul_f64(fraction),
            written: (self.written as f64 * fraction) as u64,
        }
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, other: Usage) -> Usage {
        Usage {
            cpu: self.cpu + other.cpu,
            written: self.written + other.written,
        }
    }
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, earlier: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            written: self.written.saturating_sub(earlier.written),
        }
    }
}

/// Runs `opts.connections` keep-alive connections for `opts.seconds`, each sending
/// `make(connection, n)` in a loop. A 5xx or an I/O error counts as an error.
async fn drive<F>(opts: &Options, addr: SocketAddr, make: F) -> Run
where
    F: Fn(usize, usize) -> Req + Send + Sync + 'static + Clone,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..opts.connections {
        let make = make.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0;
            let mut statuses = std::collections::BTreeMap::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let req = make(c, n);
                n += 1;
                let t = Instant::now();
                match conn.call(&req).await {
                    Ok((status, _)) => {
                        lat.push(t.elapsed());
                        *statuses.entry(status).or_insert(0) += 1;
                        if status >= 500 {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        conn = Conn::open(addr).await;
                    }
                }
            }
            (lat, errors, statuses)
        }));
    }
    tokio::time::sleep(Duration::from_secs(opts.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut run = Run {
        latencies: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
        statuses: Default::default(),
    };
    for t in tasks {
        let (l, e, s) = t.await.unwrap();
        run.latencies.extend(l);
        run.errors += e;
        for (k, v) in s {
            *run.statuses.entry(k).or_insert(0) += v;
        }
    }
    run.elapsed = started.elapsed();
    run
}

/// Checks that the first and the last of `codes` are live and pending for `client_id`, so the
/// polls measured are the ones meant (a 400 is also what an unknown code gets).
async fn check_pending(addr: SocketAddr, client_id: &str, codes: &[(String, String)]) {
    let mut conn = Conn::open(addr).await;
    for (dc, _) in [codes.first(), codes.last()].into_iter().flatten() {
        let req = Req::form(
            "/oauth/token",
            &format!(
                "grant_type=urn:ietf:params:oauth:grant-type:device_code&device_code={dc}&client_id={client_id}"
            ),
        );
        let (_, body) = conn.call(&req).await.unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            answer["error"] == "authorization_pending" || answer["error"] == "slow_down",
            "a seeded code is not pending: {answer}"
        );
    }
}

/// W3: each iteration requests a code, approves it through the API, and exchanges it.
async fn drive_flows(opts: &Options, addr: SocketAddr, client_id: &str, token: &str) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..opts.connections {
        let stop = stop.clone();
        let client_id = client_id.to_string();
        let token = token.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut statuses = std::collections::BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = async {
                    let (s, b) = conn
                        .call(&Req::form("/oauth/device_authorization", &format!("client_id={client_id}")))
                        .await
                        .ok()?;
                    if s != 200 {
                        return None;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
                    let body = format!(r#"{{"user_code":"{}"}}"#, v["user_code"].as_str()?);
                    let (s, _) = conn.call(&Req::json("PUT", "/api/v1/devices/verify", &token, &body)).await.ok()?;
                    if s != 200 {
                        return None;
                    }
                    let form = format!(
                        "grant_type=urn:ietf:params:oauth:grant-type:device_code&device_code={}&client_id={client_id}",
                        v["device_code"].as_str()?
                    );
                    let (s, _) = conn.call(&Req::form("/oauth/token", &form)).await.ok()?;
                    Some(s)
                }
                .await;
                match ok {
                    Some(200) => {
                        lat.push(t.elapsed());
                        *statuses.entry(200).or_insert(0) += 1;
                    }
                    other => {
                        errors += 1;
                        *statuses.entry(other.unwrap_or(0)).or_insert(0) += 1;
                        conn = Conn::open(addr).await;
                    }
                }
            }
            (lat, errors, statuses)
        }));
    }
    tokio::time::sleep(Duration::from_secs(opts.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    collect(tasks, started).await
}

/// W4: each connection rotates its own refresh-token chain.
async fn drive_refresh(
    opts: &Options,
    addr: SocketAddr,
    client_id: &str,
    tokens: Vec<String>,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut refresh in tokens {
        let stop = stop.clone();
        let client_id = client_id.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut statuses = std::collections::BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                let form = format!(
                    "grant_type=refresh_token&refresh_token={refresh}&client_id={client_id}"
                );
                let t = Instant::now();
                match conn.call(&Req::form("/oauth/token", &form)).await {
                    Ok((200, body)) => {
                        lat.push(t.elapsed());
                        *statuses.entry(200).or_insert(0) += 1;
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        refresh = v["refresh_token"].as_str().unwrap().to_string();
                    }
                    Ok((s, _)) => {
                        errors += 1;
                        *statuses.entry(s).or_insert(0) += 1;
                        break; // the chain is broken; stop this connection
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (lat, errors, statuses)
        }));
    }
    tokio::time::sleep(Duration::from_secs(opts.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    collect(tasks, started).await
}

type TaskResult = (Vec<Duration>, usize, std::collections::BTreeMap<u16, usize>);

async fn collect(tasks: Vec<tokio::task::JoinHandle<TaskResult>>, started: Instant) -> Run {
    let mut run = Run {
        latencies: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
        statuses: Default::default(),
    };
    for t in tasks {
        let (l, e, s) = t.await.unwrap();
        run.latencies.extend(l);
        run.errors += e;
        for (k, v) in s {
            *run.statuses.entry(k).or_insert(0) += v;
        }
    }
    run.elapsed = started.elapsed();
    run
}

/// Requests `n` codes over 16 connections; returns (device_code, user_code) pairs.
async fn request_codes(
    addr: SocketAddr,
    client_id: &str,
    scope: &str,
    n: usize,
) -> Vec<(String, String)> {
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16.min(n) {
        let done = done.clone();
        let form = format!("client_id={client_id}&scope={scope}&device_name=bench");
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut out = Vec::new();
            while done.fetch_add(1, Ordering::Relaxed) < n {
                let (s, b) = conn
                    .call(&Req::form("/oauth/device_authorization", &form))
                    .await
                    .unwrap();
                assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                out.push((
                    v["device_code"].as_str().unwrap().to_string(),
                    v["user_code"].as_str().unwrap().to_string(),
                ));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn exchange(addr: SocketAddr, client_id: &str, device_code: &str) -> serde_json::Value {
    let mut conn = Conn::open(addr).await;
    let form = format!(
        "grant_type=urn:ietf:params:oauth:grant-type:device_code&device_code={device_code}&client_id={client_id}"
    );
    let (s, b) = conn.call(&Req::form("/oauth/token", &form)).await.unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

async fn approve_api(addr: SocketAddr, token: &str, user_code: &str) {
    let mut conn = Conn::open(addr).await;
    let body = format!(r#"{{"user_code":"{user_code}"}}"#);
    let (s, b) = conn
        .call(&Req::json("PUT", "/api/v1/devices/verify", token, &body))
        .await
        .unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
}

/// Inserts `n` expired devices with one expired authorization each (2n rows in all), directly
/// into the database while the server is stopped.
fn seed_expired(db: &Path, n: usize) -> usize {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    let client: String = conn
        .query_row("SELECT client_id FROM oauth_clients LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut dev = tx
            .prepare(
                "INSERT INTO devices (id, client_id, status, expires, created, updated) \
                 VALUES (?1, ?2, 'pending', 1, 0, 0)",
            )
            .unwrap();
        let mut auth = tx
            .prepare(
                "INSERT INTO device_authorizations (id, created_at, client_id, device_id, \
                 device_code_hash, user_code, expires_at, poll_interval_seconds) \
                 VALUES (?1, 0, ?2, ?3, ?4, ?5, 1, 5)",
            )
            .unwrap();
        for i in 0..n / 2 {
            let id = format!("seed-dev-{i}");
            dev.execute(rusqlite::params![id, client]).unwrap();
            auth.execute(rusqlite::params![
                format!("seed-auth-{i}"),
                client,
                id,
                format!("hash-{i}").into_bytes(),
                format!("SEED{i:012}"),
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    n
}

fn count_expired(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT (SELECT count(*) FROM devices WHERE id LIKE 'seed-%') + \
         (SELECT count(*) FROM device_authorizations WHERE id LIKE 'seed-%')",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// A server process under test.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// A TCP round-robin over `backends` in its own process (`--proxy`).
    fn start_proxy(backends: &[SocketAddr]) -> Server {
        let exe: PathBuf = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .arg("--proxy")
            .args(backends.iter().map(|b| b.to_string()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start proxy");
        let addr = listening(&mut child);
        Server { child, addr }
    }

    fn start(config: &Path) -> (Server, Duration) {
        let t = Instant::now();
        let mut child = Command::new(hallpass_bin())
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("HALLPASS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hallpass");
        let addr = listening(&mut child);
        (Server { child, addr }, t.elapsed())
    }

    fn start_bare() -> Server {
        let exe: PathBuf = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .arg("--bare-server")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start bare server");
        let addr = listening(&mut child);
        Server { child, addr }
    }

    fn status_field(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// What the process used so far.
    fn usage(&self) -> Usage {
        let io =
            std::fs::read_to_string(format!("/proc/{}/io", self.child.id())).unwrap_or_default();
        let written = io
            .lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Usage {
            cpu: self.cpu(),
            written,
        }
    }

    /// CPU time the process used so far, all threads, user + system (`/proc/PID/stat` fields
    /// 14 and 15, in USER_HZ = 100 ticks a second on Linux).
    fn cpu(&self) -> Duration {
        let s =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name, which may contain spaces.
        let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        Duration::from_millis(f.iter().sum::<u64>() * 10)
    }

    fn rss(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    fn peak_rss(&self) -> u64 {
        self.status_field("VmHWM:")
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A server left running when the benchmark panics would hold its output pipe open.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn listening(child: &mut Child) -> SocketAddr {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr = addr.parse().unwrap();
    std::thread::spawn(move || for _ in out.lines() {});
    addr
}

/// The ceiling: hyper 1.x answering every request with `{}`, multi-threaded like hallpass.
fn bare_server() {
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening on http://{}", listener.local_addr().unwrap());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    let mut r = hyper::Response::new(Full::new(bytes::Bytes::from_static(b"{}")));
                    r.headers_mut().insert(
                        "content-type",
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// A TCP round-robin: each new connection goes to the next backend, bytes copied both ways
/// (as a layer-4 load balancer does).
fn proxy(backends: Vec<SocketAddr>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening on http://{}", listener.local_addr().unwrap());
        let mut next = 0usize;
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let backend = backends[next % backends.len()];
            next += 1;
            tokio::spawn(async move {
                let _ = inbound.set_nodelay(true);
                let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
}

/// `--postgres`: the workloads that hold for several instances, on PostgreSQL (see the module
/// comment).
fn postgres_main() {
    let opts = options();
    let want = |w: &str| {
        opts.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == w))
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // The throwaway cluster's database lives as long as this.
    let mut _db = None;
    let url = match std::env::var("BENCH_DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            // Durable, as SQLite's `synchronous = full` is (tests/support/pg.rs reads this).
            std::env::set_var("PG_DURABLE", "1");
            let db = pg::database().expect("PostgreSQL is not installed: see tests/support/pg.rs");
            let url = db.url();
            _db = Some(db);
            url
        }
    };
    let (client, rt) = connect_for_report(&url);
    let version: String = rt
        .block_on(client.query_one("SHOW server_version", &[]))
        .map(|r| r.get(0))
        .unwrap_or_default();
    let settings: Vec<String> = ["fsync", "synchronous_commit", "full_page_writes"]
        .iter()
        .map(|k| {
            let v: String = rt
                .block_on(client.query_one(&format!("SHOW {k}"), &[]))
                .map(|r| r.get(0))
                .unwrap_or_default();
            format!("{k}={v}")
        })
        .collect();
    println!(
        "hallpass load benchmark on PostgreSQL {version} ({}): {} connections, {} s per workload, {} cores",
        settings.join(" "),
        opts.connections,
        opts.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut bare = Server::start_bare();
    let ceiling = rt.block_on(drive(&opts, bare.addr, |_, _| Req::get("/")));
    ceiling.print("bare hyper", None, bare.peak_rss(), Usage::default());
    bare.stop();
    let base = ceiling.rps();

    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 4096\n\
             [database]\nurl = {url:?}\npath = {:?}\npool_size = 16\n\
             [oauth]\ndevice_code_lifetime = \"1h\"\npoll_interval = \"1s\"\n\
             [reaper]\ninterval = \"1s\"\n\
             [limits]\ndevice_authorization_per_minute = 0\ntoken_per_minute = 0\n\
             code_entry_failures_per_minute = 0\nmax_pending_codes_per_client = 1000000\n",
            dir.path().join("unused.db")
        ),
    )
    .unwrap();
    let (a, startup) = Server::start(&config);
    println!(
        "start-up to listening, empty database: {:.1} ms",
        ms(startup)
    );
    let cli = |args: &[&str], stdin: &str| run_cli(&config, args, stdin);
    let client_id = bench_client(&cli);
    let auth_form = format!("client_id={client_id}&device_name=bench");
    let admin_token = rt.block_on(admin_token(a.addr, &client_id, &cli));
    let codes = Arc::new(rt.block_on(request_codes(a.addr, &client_id, "", 10_000)));
    let polls = |codes: Arc<Vec<(String, String)>>, client_id: String| {
        move |conn: usize, n: usize| {
            let (dc, _) = &codes[(conn * 7919 + n) % codes.len()];
            Req::form(
                "/oauth/token",
                &format!(
                    "grant_type=urn:ietf:params:oauth:grant-type:device_code&device_code={dc}&client_id={client_id}"
                ),
            )
        }
    };
    // W1 and W2 at `addr`, served by `servers`; their figures, labelled.
    let w1_w2 = |label: &str, addr: SocketAddr, servers: &[&Server]| -> (f64, f64) {
        let usage = || {
            servers
                .iter()
                .map(|s| s.usage())
                .fold(Usage::default(), |a, b| a + b)
        };
        let peak = || servers.iter().map(|s| s.peak_rss()).max().unwrap_or(0);
        let db_cpu = |before: Duration, r: &Run| {
            let n = (r.latencies.len() + r.errors).max(1) as f64;
            println!(
                "  db CPU {:.1} µs/req",
                (postgres_cpu().saturating_sub(before)).as_secs_f64() * 1e6 / n
            );
        };
        let mut out = (0.0, 0.0);
        if want("W1") {
            let form = auth_form.clone();
            let (used0, db0) = (usage(), postgres_cpu());
            let r = rt.block_on(drive(&opts, addr, move |_, _| {
                Req::form("/oauth/device_authorization", &form)
            }));
            r.print(
                &format!("W1 device authorizations, {label}"),
                Some(base),
                peak(),
                usage() - used0,
            );
            db_cpu(db0, &r);
            out.0 = r.rps();
        }
        if want("W2") {
            rt.block_on(check_pending(addr, &client_id, &codes));
            let (used0, db0) = (usage(), postgres_cpu());
            let r = rt.block_on(drive(&opts, addr, polls(codes.clone(), client_id.clone())));
            r.print(
                &format!("W2 polls, 10,000 codes, {label}"),
                Some(base),
                peak(),
                usage() - used0,
            );
            db_cpu(db0, &r);
            out.1 = r.rps();
        }
        out
    };
    w1_w2("one instance", a.addr, &[&a]);
    if want("W4") {
        let tokens = rt.block_on(refresh_chains(
            a.addr,
            &client_id,
            &admin_token,
            opts.connections,
        ));
        let used0 = a.usage();
        let r = rt.block_on(drive_refresh(&opts, a.addr, &client_id, tokens));
        r.print(
            "W4 refresh rotations, one instance",
            Some(base),
            a.peak_rss(),
            a.usage() - used0,
        );
    }
    if want("W6") {
        let req = introspection_request(&cli, &admin_token);
        let used0 = a.usage();
        let r = rt.block_on(drive(&opts, a.addr, move |_, _| Req {
            bytes: req.clone().into_bytes(),
        }));
        r.print(
            "W6 introspections, one instance",
            Some(base),
            a.peak_rss(),
            a.usage() - used0,
        );
    }
    // The cost of coordination: one instance and two behind the same round-robin.
    let mut proxy = Server::start_proxy(&[a.addr]);
    let one = w1_w2("one instance behind the proxy", proxy.addr, &[&a]);
    proxy.stop();
    let (b, _) = Server::start(&config);
    // B's first device authorization reads the client's pending codes (the cap's first count,
    // app::limits): once, before measuring, as A's was.
    rt.block_on(request_codes(b.addr, &client_id, "", 1));
    let mut proxy = Server::start_proxy(&[a.addr, b.addr]);
    let two = w1_w2("two instances behind the proxy", proxy.addr, &[&a, &b]);
    proxy.stop();
    if want("W1") {
        println!(
            "two instances / one, behind the proxy: W1 {:.2}x",
            two.0 / one.0.max(1.0)
        );
    }
    if want("W2") {
        println!(
            "two instances / one, behind the proxy: W2 {:.2}x",
            two.1 / one.1.max(1.0)
        );
    }
}

/// CPU time used so far by every process named `postgres` (user + system).
fn postgres_cpu() -> Duration {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        ticks += rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum::<u64>();
    }
    Duration::from_millis(ticks * 10)
}

/// A connection to `url` for reading the server's version and settings.
fn connect_for_report(url: &str) -> (tokio_postgres::Client, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))
        .expect("connect to BENCH_DATABASE_URL (sslmode=disable for this report)");
    rt.spawn(conn);
    (client, rt)
}

/// `n` refresh tokens, each the start of its own chain: `n` codes approved through the API
/// and exchanged.
async fn refresh_chains(
    addr: SocketAddr,
    client_id: &str,
    admin_token: &str,
    n: usize,
) -> Vec<String> {
    let codes = request_codes(addr, client_id, "", n).await;
    let mut out = Vec::new();
    for (dc, uc) in &codes {
        approve_api(addr, admin_token, uc).await;
        let t = exchange(addr, client_id, dc).await;
        out.push(t["refresh_token"].as_str().unwrap().to_string());
    }
    out
}

/// `hallpass --config CONFIG ARGS` with `stdin`, which must succeed; its standard output.
fn run_cli(config: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(hallpass_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hallpass {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The benchmark's admin user and public client (scopes `devices admin`); the client's id.
fn bench_client(cli: &impl Fn(&[&str], &str) -> String) -> String {
    cli(
        &["user", "add", "bench", "--admin", "--password-stdin"],
        "benchmark-password\n",
    );
    let client: serde_json::Value = serde_json::from_str(&cli(
        &[
            "client",
            "add",
            "--name",
            "bench",
            "--scope",
            "devices admin",
        ],
        "",
    ))
    .unwrap();
    client["client_id"].as_str().unwrap().to_string()
}

/// An admin's access token for the API (approving through PUT /api/v1/devices/verify).
async fn admin_token(
    addr: SocketAddr,
    client_id: &str,
    cli: &impl Fn(&[&str], &str) -> String,
) -> String {
    let codes = request_codes(addr, client_id, "devices admin", 1).await;
    cli(&["device", "approve", &codes[0].1, "--user", "bench"], "");
    let t = exchange(addr, client_id, &codes[0].0).await;
    t["access_token"].as_str().unwrap().to_string()
}

/// W6's request: a resource server (a new confidential client, HTTP Basic) introspecting
/// `token` (RFC 7662). Id and secret are URL-safe, so they need no form-encoding first (RFC
/// 6749 §2.3.1).
fn introspection_request(cli: &impl Fn(&[&str], &str) -> String, token: &str) -> String {
    let svc: serde_json::Value = serde_json::from_str(&cli(
        &["client", "add", "--name", "api", "--confidential"],
        "",
    ))
    .unwrap();
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!(
            "{}:{}",
            svc["client_id"].as_str().unwrap(),
            svc["client_secret"].as_str().unwrap()
        ),
    );
    let body = format!("token={token}");
    format!(
        "POST /oauth/introspect HTTP/1.1\r\nHost: bench\r\nAuthorization: Basic {basic}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}
