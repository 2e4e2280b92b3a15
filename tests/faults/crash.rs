//! `kill -9` in the middle of a load of device flows, then a restart on the same database.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{jwt_part, on_postgres};
use crate::{assert_db_consistent, serial, Http, Node};

/// What one worker saw of one device flow.
#[derive(Debug, Default, Clone)]
struct Flow {
    device_code: String,
    user_code: String,
    /// Approved through the API (else the command line).
    via_api: bool,
    /// The approval was acknowledged: HTTP 200 or exit code 0.
    approved: bool,
    /// Token responses (access, refresh) received before the kill.
    tokens: Vec<(String, String)>,
}

/// Answers that were not what an unloaded server gives, with what was asked.
type Oddities = Vec<String>;

const WORKERS: usize = 4;

const ROUNDS: usize = 3;

#[test]
fn kill_9_under_load_loses_no_acknowledged_approval_and_no_code_pays_twice() {
    let _serial = serial();
    let mut node = Node::start(&[("HALLPASS_OAUTH_POLL_INTERVAL", "1s")]);
    node.add_user("alice");
    let client = node.add_client("load", "devices read");
    let http = Http::new(Duration::from_secs(20));
    let alice = node.login(&http, &client, "alice", "devices");

    // (device code, access token, refresh token) of every token set, in every round.
    let mut all_tokens: Vec<(String, String, String)> = Vec::new();
    let mut all_flows: Vec<Flow> = Vec::new();
    let mut all_unseen: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let flows = load_then_kill(&mut node, &client, &alice, 40 + 40 * round);
        node.restart();
        let (tokens, unseen) = check_after_restart(&node, &client, &flows);
        all_tokens.extend(tokens);
        all_unseen.extend(unseen);
        all_flows.extend(flows);
    }

    // Every token set ever received is still good: its refresh token works after the restarts
    // (the exchange was acknowledged, so it must be durable), and no device got two.
    let mut devices = HashSet::new();
    for (code, access, refresh) in &all_tokens {
        let device = jwt_part(access, 1)["device_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(devices.insert(device.clone()), "device {device} paid twice");
        let r = http
            .form(
                &node,
                "/oauth/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                    ("client_id", &client),
                ],
            )
            .unwrap();
        assert_eq!(
            r.status, 200,
            "refresh token of an acknowledged exchange ({code}) after kill -9: {}",
            r.text
        );
    }
    node.stop();

    if !on_postgres() {
        // The file's own consistency (PostgreSQL's is the server's business).
        assert_db_consistent(&node.db_path());
    }
    let state: HashMap<String, (Option<i64>, Option<i64>)> = node
        .query(
            "SELECT user_code, approved_at, consumed_at FROM device_authorizations",
            &[],
        )
        .into_iter()
        .map(|r| {
            let code = r[0].as_str().expect("a user code").to_string();
            (code, (r[1].as_i64(), r[2].as_i64()))
        })
        .collect();
    for f in &all_flows {
        let key = f.user_code.replace('-', "");
        let (approved_at, consumed_at) = state
            .get(&key)
            .copied()
            .unwrap_or_else(|| panic!("{} vanished", f.user_code));
        if f.approved {
            assert!(approved_at.is_some(), "{} lost its approval", f.user_code);
            assert!(consumed_at.is_some(), "{} not consumed", f.user_code);
        }
        if all_unseen.contains(&f.user_code) {
            assert!(
                consumed_at.is_some(),
                "{}: invalid_grant but not consumed",
                f.user_code
            );
        }
    }
    let twice: Vec<Value> = node
        .query(
            "SELECT device_id FROM refresh_tokens GROUP BY device_id \
             HAVING count(DISTINCT family) > 1",
            &[],
        )
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect();
    assert!(
        twice.is_empty(),
        "devices with two token families: {twice:?}"
    );
}

/// Runs workers against `node` and SIGKILLs it once `after` flows are done; returns what the
/// workers saw.
fn load_then_kill(node: &mut Node, client: &str, alice: &str, after: usize) -> Vec<Flow> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    // Workers need the node only for its URL and the command line, both fixed until the kill.
    let shared = Arc::new(Shared {
        base: node.base.clone(),
        config: node.config.clone(),
        env: node.env.clone(),
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (stop, done, shared) = (stop.clone(), done.clone(), shared.clone());
            let (client, alice) = (client.to_string(), alice.to_string());
            std::thread::spawn(move || worker(w, &shared, &client, &alice, &stop, &done))
        })
        .collect();

    // Kill while flows are in every phase: after enough completed ones, at an arbitrary moment.
    let started = Instant::now();
    while done.load(Ordering::SeqCst) < after && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 20,
    );
    std::thread::sleep(Duration::from_millis(jitter));
    node.kill9();
    let killed_after = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut flows = Vec::new();
    let mut oddities = Vec::new();
    for w in workers {
        let (f, o) = w.join().expect("worker");
        flows.extend(f);
        oddities.extend(o);
    }
    assert!(
        oddities.is_empty(),
        "answers before the kill that an unloaded server would not give: {oddities:#?}"
    );
    let acked = flows.iter().filter(|f| f.approved).count();
    let paid = flows.iter().filter(|f| !f.tokens.is_empty()).count();
    eprintln!(
        "kill -9 after {killed_after:?}: {} flows, {acked} approvals acknowledged, {paid} exchanged before the kill",
        flows.len()
    );
    assert!(
        acked >= after / 2 && paid >= after / 2,
        "not enough load before the kill"
    );
    assert!(
        flows.iter().all(|f| f.tokens.len() <= 1),
        "a code paid twice before the kill"
    );
    flows
}

/// Polls every code of `flows` after the restart: an acknowledged approval must still be there
/// (tokens now, or `invalid_grant` because it was exchanged), a code never pays twice. Returns
/// the token sets received now and the codes consumed in the instant of the kill.
fn check_after_restart(
    node: &Node,
    client: &str,
    flows: &[Flow],
) -> (Vec<(String, String, String)>, Vec<String>) {
    let http = Http::new(Duration::from_secs(20));
    let mut tokens: Vec<(String, String, String)> = flows
        .iter()
        .flat_map(|f| {
            f.tokens
                .iter()
                .map(|(a, r)| (f.device_code.clone(), a.clone(), r.clone()))
        })
        .collect();
    let mut unseen = Vec::new();
    let mut late = 0;
    for f in flows {
        let via = if f.via_api { "API" } else { "CLI" };
        let r = http
            .poll(node, client, &f.device_code)
            .expect("poll after restart");
        match (r.status, r.body["error"].as_str()) {
            (200, _) => {
                assert!(
                    f.tokens.is_empty(),
                    "{} (approved via {via}) yielded a second token set after the restart: {}",
                    f.user_code,
                    r.text
                );
                late += 1;
                tokens.push((
                    f.device_code.clone(),
                    r.body["access_token"].as_str().unwrap().into(),
                    r.body["refresh_token"].as_str().unwrap().into(),
                ));
                let again = http.poll(node, client, &f.device_code).unwrap();
                assert_eq!(
                    (again.status, again.body["error"].as_str()),
                    (400, Some("invalid_grant")),
                    "a code works only once: {}",
                    again.text
                );
            }
            (400, Some("invalid_grant")) => {
                if f.tokens.is_empty() {
                    // Exchanged in the instant of the kill: the database must say so.
                    unseen.push(f.user_code.clone());
                }
            }
            (400, Some("authorization_pending")) => assert!(
                !f.approved,
                "acknowledged approval of {} (via {via}) lost by kill -9",
                f.user_code
            ),
            _ => panic!(
                "poll of {} after restart: {} {}",
                f.user_code, r.status, r.text
            ),
        }
    }
    eprintln!(
        "after restart: {late} codes exchanged now, {} consumed without an answer",
        unseen.len()
    );
    assert!(
        unseen.len() <= WORKERS,
        "more codes consumed without an answer than requests in flight: {unseen:?}"
    );
    (tokens, unseen)
}

/// What workers need of the node: its URL and how to run the command line.
struct Shared {
    base: String,
    config: std::path::PathBuf,
    env: Vec<(String, String)>,
}

impl Shared {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn approve_cli(&self, user_code: &str) -> bool {
        let mut cmd = std::process::Command::new(crate::harness::BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .args(["device", "approve", user_code, "--user", "alice"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.status().is_ok_and(|s| s.success())
    }
}

/// One worker: device flows back to back until the server dies (a transport error) or `stop`.
fn worker(
    w: usize,
    shared: &Shared,
    client: &str,
    alice: &str,
    stop: &AtomicBool,
    done: &AtomicUsize,
) -> (Vec<Flow>, Oddities) {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut flows = Vec::new();
    let mut odd = Vec::new();
    let mut i = 0usize;
    let form = |path: &str, fields: &[(&str, &str)]| {
        http.post(shared.url(path))
            .form(fields)
            .send()
            .and_then(|r| Ok((r.status().as_u16(), r.json::<serde_json::Value>()?)))
    };
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let Ok((status, body)) = form(
            "/oauth/device_authorization",
            &[("client_id", client), ("scope", "read")],
        ) else {
            break;
        };
        if status != 200 {
            odd.push(format!("device_authorization: {status} {body}"));
            continue;
        }
        let mut flow = Flow {
            device_code: body["device_code"].as_str().unwrap().into(),
            user_code: body["user_code"].as_str().unwrap().into(),
            via_api: (w + i) % 2 == 0,
            ..Flow::default()
        };
        let mut dead = false;
        if flow.via_api {
            match http
                .put(shared.url("/api/v1/devices/verify"))
                .bearer_auth(alice)
                .json(&serde_json::json!({ "user_code": flow.user_code, "trusted_device": false }))
                .send()
            {
                Ok(r) if r.status() == 200 => flow.approved = true,
                Ok(r) => odd.push(format!("verify: {} {:?}", r.status(), r.text())),
                Err(_) => dead = true,
            }
        } else {
            flow.approved = shared.approve_cli(&flow.user_code);
            if !flow.approved && !stop.load(Ordering::SeqCst) {
                odd.push(format!("device approve {} failed", flow.user_code));
            }
        }
        if flow.approved && !dead {
            match form(
                "/oauth/token",
                &[
                    ("grant_type", crate::harness::DEVICE_GRANT),
                    ("device_code", &flow.device_code),
                    ("client_id", client),
                ],
            ) {
                Ok((200, t)) => flow.tokens.push((
                    t["access_token"].as_str().unwrap().into(),
                    t["refresh_token"].as_str().unwrap().into(),
                )),
                Ok((s, t)) => odd.push(format!("exchange: {s} {t}")),
                Err(_) => dead = true,
            }
        }
        flows.push(flow);
        done.fetch_add(1, Ordering::SeqCst);
        if dead {
            break;
        }
    }
    (flows, odd)
}
