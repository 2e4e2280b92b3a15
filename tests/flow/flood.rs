//! A public client's id is no secret: a flood of device authorizations from a few addresses
//! must not lock out a device at another address (issue 18 §4). The cap on pending codes
//! (`limits.max_pending_codes_per_client`) is shared fairly by address: at the cap, an address
//! holding fewer codes ends the oldest code of the address holding the most.
//!
//! Each flooding address is a loopback address of its own (127.0.0.2 … 127.0.0.21: the client
//! socket binds it), and the server trusts no proxy, so the TCP peer address is what counts.

use std::net::IpAddr;

use serde_json::Value;

use super::{cli, spawn, write_config, DEVICE_GRANT};

/// An HTTP client whose connections come from `127.0.0.{n}`.
fn from(n: u8) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, n]))
        .build()
        .unwrap()
}

/// A device authorization for `client` from `127.0.0.{n}`: the status and the body.
fn ask(base: &str, n: u8, client: &str) -> (u16, Value) {
    let r = from(n)
        .post(format!("{base}/oauth/device_authorization"))
        .form(&[("client_id", client), ("device_name", &format!("d{n}"))])
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// One poll of `device_code`: its `error`, or "ok".
fn poll(base: &str, client: &str, device_code: &str) -> String {
    let r: Value = reqwest::blocking::Client::new()
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", DEVICE_GRANT),
            ("device_code", device_code),
            ("client_id", client),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    r["error"].as_str().unwrap_or("ok").to_string()
}

/// Live, undecided authorizations of the client in the database (the SQLite file `db`, or
/// `pg`), by device address.
fn pending_by_address(
    db: &std::path::Path,
    pg: Option<&crate::pg::TestDb>,
) -> std::collections::BTreeMap<String, u32> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    crate::harness::query(
        db,
        pg,
        "SELECT d.ip_address, count(*) FROM device_authorizations a \
         JOIN devices d ON d.id = a.device_id \
         WHERE a.expires_at > $1 AND a.approved_at IS NULL AND a.denied_at IS NULL \
         AND a.consumed_at IS NULL GROUP BY d.ip_address",
        &[now.into()],
    )
    .into_iter()
    .map(|r| {
        let address = r[0].as_str().expect("an address").to_string();
        (address, r[1].as_u64().expect("a count") as u32)
    })
    .collect()
}

/// Sends `rounds` requests from each of `addresses` concurrently (one thread per address, its
/// requests one after another); returns the statuses.
fn flood(base: &str, client: &str, addresses: &[u8], rounds: usize) -> Vec<u16> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = addresses
            .iter()
            .map(|&n| {
                scope.spawn(move || {
                    (0..rounds)
                        .map(|_| ask(base, n, client).0)
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<u16>>()
    })
}

#[test]
fn a_flood_at_the_default_limits_leaves_room_for_a_device_elsewhere() {
    // The finding as reported: every address at its own rate limit (60 a minute), the cap at
    // its default of 1,000, 20 addresses × 60 requests.
    let dir = tempfile::tempdir().unwrap();
    let (config, pg) = write_config(dir.path(), "");
    // The server creates the database; admin commands never do.
    let (mut child, base) = spawn(&config);
    let out = cli(&config, &["client", "add", "--name", "tv"], "");
    let client: Value = serde_json::from_slice(&out.stdout).unwrap();
    let client = client["client_id"].as_str().unwrap().to_string();
    let flooders: Vec<u8> = (2..=21).collect();
    let statuses = flood(&base, &client, &flooders, 60);
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let held = pending_by_address(&dir.path().join("hallpass.db"), pg.as_ref());
    let total: u32 = held.values().sum();
    assert!(total <= 1000, "the cap still bounds storage: {held:?}");
    // Shared out: no flooding address holds much more than its twentieth.
    assert!(held.values().all(|n| *n <= 60), "{held:?}");
    // Their rate limit is spent, and the cap is full: a device elsewhere still gets a code.
    assert_eq!(ask(&base, 2, &client).0, 429);
    let (status, body) = ask(&base, 50, &client);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        poll(&base, &client, body["device_code"].as_str().unwrap()),
        "authorization_pending"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn flooding_addresses_lose_their_oldest_codes_and_a_restart_keeps_the_shares() {
    let dir = tempfile::tempdir().unwrap();
    let (config, pg) = write_config(
        dir.path(),
        "[limits]\nmax_pending_codes_per_client = 40\ndevice_authorization_per_minute = 0\n",
    );
    let add = |args: &[&str], stdin: &str| {
        let out = cli(&config, args, stdin);
        assert!(out.status.success(), "{out:?}");
        out.stdout
    };
    // The server creates the database; admin commands never do.
    let (mut child, base) = spawn(&config);
    add(
        &["user", "add", "alice", "--password-stdin"],
        "long enough pw\n",
    );
    let client: Value =
        serde_json::from_slice(&add(&["client", "add", "--name", "tv"], "")).unwrap();
    let client = client["client_id"].as_str().unwrap().to_string();
    let db = dir.path().join("hallpass.db");

    // 127.0.0.2 fills the cap on its own, and is then refused.
    let first = ask(&base, 2, &client).1;
    for _ in 1..40 {
        assert_eq!(ask(&base, 2, &client).0, 200);
    }
    assert_eq!(ask(&base, 2, &client).0, 429);
    // Nineteen more addresses take turns: each new code ends one of 127.0.0.2's, oldest
    // first, until every address holds two; then all of them are refused.
    let mut statuses = Vec::new();
    for _round in 0..4 {
        for n in 3..=21 {
            statuses.push(ask(&base, n, &client).0);
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        38,
        "{statuses:?}"
    );
    let held = pending_by_address(&db, pg.as_ref());
    assert_eq!(held.len(), 20, "{held:?}");
    assert!(held.values().all(|n| *n == 2), "{held:?}");
    // The first code of 127.0.0.2 was ended: its device hears expired_token, and a person
    // typing it is told it has expired.
    let code = first["device_code"].as_str().unwrap();
    assert_eq!(poll(&base, &client, code), "expired_token");
    let out = cli(
        &config,
        &[
            "device",
            "approve",
            first["user_code"].as_str().unwrap(),
            "--user",
            "alice",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expired"),
        "{out:?}"
    );
    let metrics = reqwest::blocking::get(format!("{base}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("hallpass_pending_codes_evicted_total 38\n"),
        "{metrics}"
    );

    // A device at another address gets a code, and no amount of flooding takes it away.
    let (status, device) = ask(&base, 50, &client);
    assert_eq!(status, 200, "{device}");
    let flooders: Vec<u8> = (2..=21).collect();
    let statuses = flood(&base, &client, &flooders, 3);
    assert!(statuses.iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(
        poll(&base, &client, device["device_code"].as_str().unwrap()),
        "authorization_pending"
    );
    assert!(pending_by_address(&db, pg.as_ref()).values().sum::<u32>() <= 40);
    add(
        &[
            "device",
            "approve",
            device["user_code"].as_str().unwrap(),
            "--user",
            "alice",
        ],
        "",
    );
    assert_eq!(
        poll(&base, &client, device["device_code"].as_str().unwrap()),
        "ok"
    );

    // After a restart the shares are read back from the database with each device's address.
    // The approved code left one place: a new address takes it. Then a flooder holding two is
    // refused (were the addresses lost, it would seem to hold none and take one), and another
    // new address still gets in.
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, base) = spawn(&config);
    assert_eq!(ask(&base, 51, &client).0, 200);
    let held = pending_by_address(&db, pg.as_ref());
    assert_eq!(held.values().sum::<u32>(), 40, "{held:?}");
    let (heavy, _) = held
        .iter()
        .find(|(_, n)| **n == 2)
        .expect("an address with two");
    let heavy: u8 = heavy.rsplit('.').next().unwrap().parse().unwrap();
    assert_eq!(
        ask(&base, heavy, &client).0,
        429,
        "127.0.0.{heavy}: {held:?}"
    );
    assert_eq!(ask(&base, 52, &client).0, 200);
    assert!(pending_by_address(&db, pg.as_ref()).values().sum::<u32>() <= 40);
    child.kill().unwrap();
    child.wait().unwrap();
}
