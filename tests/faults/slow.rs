//! Ten thousand slow connections (slowloris): TCP connections that send nothing, or a partial
//! request line a byte at a time, held open while a normal client uses the server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{assert_oauth_error, serial, Http, Node};

const SLOW: usize = 10_000;

/// The soft limit on open files of this process, after trying to raise it for the slow
/// connections (`prlimit` on our own pid: std has no setrlimit and libc is not a dependency).
/// Servers started afterwards inherit it.
fn raise_nofile(wanted: u64) -> u64 {
    let limits = || -> (u64, u64) {
        let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or_default()
            .split_whitespace()
            .skip(3) // "Max open files"
            .map(|w| w.parse().unwrap_or(u64::MAX)) // "unlimited"
            .collect::<Vec<u64>>();
        (
            line.first().copied().unwrap_or(1024),
            line.get(1).copied().unwrap_or(1024),
        )
    };
    let prlimit = |soft: u64, hard: u64| {
        let _ = std::process::Command::new("prlimit")
            .args([
                "--pid",
                &std::process::id().to_string(),
                &format!("--nofile={soft}:{hard}"),
            ])
            .stderr(std::process::Stdio::null())
            .status();
    };
    if limits().0 < wanted {
        prlimit(wanted, wanted);
    }
    let (soft, hard) = limits();
    if soft < wanted && soft < hard {
        // Not allowed to raise the hard limit: go as far as it allows.
        prlimit(hard.min(wanted), hard);
    }
    limits().0
}

/// What the normal client saw while the slow connections were held.
struct Report {
    opened: usize,
    shed: usize,
    answers: Vec<(&'static str, Result<u16, String>, Duration)>,
}

/// Opens up to `SLOW` slow connections to `node`, keeps them trickling for `hold`, and meanwhile
/// has a normal client call `/healthz` and `/oauth/token` on fresh connections.
fn slowloris(node: &Node, limit: u64, client_id: &str, hold: Duration) -> Report {
    let addr: SocketAddr = node.base.strip_prefix("http://").unwrap().parse().unwrap();
    let target = SLOW.min(limit.saturating_sub(1_000) as usize);
    // Openers in parallel; a connect the kernel does not complete within 200 ms counts as
    // refused (a full backlog drops SYNs), and an opener gives up after 10 in a row.
    let opening = Instant::now();
    let openers: Vec<_> = (0..8)
        .map(|o| {
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let mut misses = 0;
                for i in 0..target / 8 {
                    match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                        Ok(mut s) => {
                            misses = 0;
                            // Half send a request line that never ends, a byte a second; half
                            // send nothing at all.
                            let talks = (o + i) % 2 == 0;
                            if talks {
                                let _ = s.write_all(b"GET /healthz HT");
                            }
                            held.push((s, talks));
                        }
                        Err(_) => {
                            misses += 1;
                            if misses >= 10 {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                held
            })
        })
        .collect();
    let mut held: Vec<(TcpStream, bool)> = openers
        .into_iter()
        .flat_map(|o| o.join().unwrap())
        .collect();
    let opened = held.len();
    eprintln!(
        "open files limit {limit}; {opened} of {target} slow connections open in {:?}",
        opening.elapsed()
    );

    // The normal client, on fresh connections, while the slow ones trickle a byte each second.
    let stop = Arc::new(AtomicBool::new(false));
    let normal = {
        let (stop, base, client_id) = (stop.clone(), node.base.clone(), client_id.to_string());
        std::thread::spawn(move || {
            let http = Http::fresh(Duration::from_secs(30));
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let r = http.get(base.as_str(), "/healthz");
                answers.push(outcome("healthz", r));
                let r = http.poll(base.as_str(), &client_id, "NOT-A-REAL-DEVICE-CODE");
                if let Ok(r) = &r {
                    assert_oauth_error(r, &[400], &["invalid_grant"]);
                }
                answers.push(outcome("token", r));
                std::thread::sleep(Duration::from_millis(250));
            }
            answers
        })
    };
    let started = Instant::now();
    let mut shed = 0;
    while started.elapsed() < hold {
        std::thread::sleep(Duration::from_secs(1));
        let mut alive = Vec::with_capacity(held.len());
        for (mut s, talks) in held.drain(..) {
            let open = if talks {
                // A write the peer reset fails (SIGPIPE is ignored by Rust programs).
                s.write_all(b"T").is_ok()
            } else {
                // Closed by the server: end of stream (or a reset); open: nothing to read.
                let _ = s.set_nonblocking(true);
                matches!(s.read(&mut [0u8; 64]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            };
            if open {
                alive.push((s, talks));
            } else {
                shed += 1;
            }
        }
        held = alive;
    }
    stop.store(true, Ordering::SeqCst);
    let answers = normal.join().unwrap();
    drop(held);
    Report {
        opened,
        shed,
        answers,
    }
}

fn outcome(
    what: &'static str,
    r: Result<crate::Resp, reqwest::Error>,
) -> (&'static str, Result<u16, String>, Duration) {
    match r {
        Ok(r) => (what, Ok(r.status), r.took),
        Err(e) => (what, Err(e.to_string()), Duration::MAX),
    }
}

fn check(node: &mut Node, report: &Report) {
    let worst = report.answers.iter().map(|a| a.2).max().unwrap_or_default();
    eprintln!(
        "{} slow connections, {} shed by the server while held; normal client: {} requests, worst {:?}",
        report.opened,
        report.shed,
        report.answers.len(),
        worst
    );
    let slow: Vec<_> = report
        .answers
        .iter()
        .filter(|a| a.1.is_err() || a.2 > Duration::from_secs(3))
        .collect();
    assert!(
        report.answers.len() >= 4,
        "normal client barely got through"
    );
    assert!(
        slow.is_empty(),
        "normal requests failed or took over 3 s while slow connections were held: {slow:?}"
    );
    node.alive().expect("server survived");
    let r = Http::fresh(Duration::from_secs(10))
        .get(&*node, "/healthz")
        .unwrap();
    assert_eq!(r.status, 200);
}

/// Default configuration (`server.max_connections` 1024, header read timeout 10 s).
#[test]
fn slow_connections_do_not_starve_normal_clients() {
    let _serial = serial();
    let limit = raise_nofile(40_000);
    let mut node = Node::start(&[]);
    let client = node.add_client("normal", "read");
    let report = slowloris(&node, limit, &client, Duration::from_secs(12));
    check(&mut node, &report);
}

/// With `server.max_connections` above the number of slow connections.
#[test]
fn slow_connections_with_room_for_them_do_not_starve_normal_clients() {
    let _serial = serial();
    let limit = raise_nofile(40_000);
    let mut node = Node::start(&[("HALLPASS_SERVER_MAX_CONNECTIONS", "20000")]);
    let client = node.add_client("normal", "read");
    let report = slowloris(&node, limit, &client, Duration::from_secs(12));
    check(&mut node, &report);
    assert!(
        report.shed * 10 >= report.opened * 9,
        "the server should time out slow clients (header read timeout): {} of {} shed",
        report.shed,
        report.opened
    );
}
