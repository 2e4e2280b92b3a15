//! `hallpass migrate-db` (issue 22): a populated SQLite database, served while it moves, copied
//! into an empty PostgreSQL database; every row compared.
//!
//! The fixture ([`populate`]) is built through the real server and command line, so that it
//! holds what a running hallpass writes: users, a public and a confidential client, devices
//! that are active, trusted, locked and pending, authorizations pending, approved, exchanged
//! and denied, refresh tokens fresh, used and rotated, a revoked access token, signing keys
//! sealed and unsealed, active and retired, of two algorithms, a browser session, audit events.
//! Then a server on the PostgreSQL database serves what was moved: the fixture's tokens refresh
//! and introspect there, the approved code is exchanged, the pending one still pending, the
//! revoked and locked stay so.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::harness::{Server, Tokens, PASSWORD};
use crate::{database, hallpass};

/// What the fixture made that a later check can use: the tokens and codes for the round trip on
/// a PostgreSQL server (refresh, introspect, exchange the approved code, poll the pending one).
pub struct Fixture {
    pub public_client: String,
    pub confidential_client: (String, String),
    /// Ada's device's tokens, after one refresh.
    pub ada: Tokens,
    /// Bob's (trusted, then locked) device's tokens; its access token was revoked.
    pub bob: Tokens,
    /// A code approved by Ada but not yet exchanged.
    pub approved_code: String,
    /// A code nobody has approved yet.
    pub pending_code: String,
    /// The sealing secrets file that opens the sealed keys (and its directory).
    pub secrets: (tempfile::TempDir, std::path::PathBuf),
}

/// A server on a temporary SQLite file with every kind of row; its signing keys are unsealed
/// (the server has no sealing secret) and sealed (a rotation from the command line with one).
pub fn populate() -> (Server, Fixture) {
    // Device authorizations keep coming during the copy: no per-address limit on them.
    let s = Server::start_sqlite_with(&[("HALLPASS_LIMITS_DEVICE_AUTHORIZATION_PER_MINUTE", "0")]);
    s.add_user("ada", true);
    s.add_user("bob", false);
    let (public_client, _) = s.add_client("CLI", "read write", &[]);
    let (svc, secret) = s.add_client(
        "Service",
        "read",
        &[
            "--confidential",
            "--grant",
            "client_credentials",
            "--signing-alg",
            "ES256",
            "--resource",
            "https://api.example.org",
        ],
    );
    let secret = secret.expect("a confidential client's secret");

    let first = s.login(&public_client, "ada", "read");
    let r = s.refresh(&public_client, &first.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    let ada = crate::harness::tokens(&r.body);
    let bob = s.login_named(&public_client, "bob", "read write", "bob-laptop", true);
    let r = s.form(
        "/oauth/revoke",
        &[("token", &bob.access), ("client_id", &public_client)],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    s.cli_ok(&["device", "lock", &bob.device_id], None);

    let approved = s.start_device(&public_client, "read", "approved-box");
    s.approve(&approved.user_code, "ada", false);
    let pending = s.start_device(&public_client, "write", "pending-box");
    let denied = s.start_device(&public_client, "", "denied-box");
    s.cli_ok(&["device", "deny", &denied.user_code], None);

    // An ES256 key made by the server for the confidential client's first token (unsealed),
    // then a rotation from the command line with a sealing secret: the new keys are sealed,
    // the old ones retired.
    let r = s.client_credentials(&svc, &secret, "read");
    assert_eq!(r.status, 200, "{}", r.text);
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("sealing-secrets");
    std::fs::write(
        &secrets,
        "c2VhbGluZy1zZWNyZXQtZm9yLXRoZS1taWdyYXRlLWRiLXRlc3Q=\n",
    )
    .unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let db = s.db_path();
    let out = hallpass(
        &["--db", db.to_str().unwrap(), "keys", "rotate"],
        &[
            (
                "HALLPASS_KEYS_SEALING_SECRETS_FILE",
                secrets.to_str().unwrap(),
            ),
            ("HALLPASS_OAUTH_SIGNING_ALGORITHM", "EdDSA"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Value = serde_json::from_str(&s.cli_ok(&["keys", "list"], None)).unwrap();
    let keys = keys.as_array().unwrap();
    assert!(keys.iter().any(|k| k["sealed"] == true), "{keys:?}");
    assert!(keys.iter().any(|k| k["sealed"] == false), "{keys:?}");
    assert!(keys.iter().any(|k| !k["retired"].is_null()), "{keys:?}");

    sign_in(&s, "ada");
    (
        s,
        Fixture {
            public_client,
            confidential_client: (svc, secret),
            ada,
            bob,
            approved_code: approved.device_code,
            pending_code: pending.device_code,
            secrets: (dir, secrets),
        },
    )
}

/// Signs in on the page, which stores a session.
fn sign_in(s: &Server, user: &str) {
    let page = s.raw("GET", "/login?next=%2Fdevices", &[], None);
    assert_eq!(page.status, 200, "{}", page.text);
    let cookie = page
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.contains("hallpass_login"))
        .expect("a sign-in cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let at = page.text.find("name=\"csrf\"").expect("a csrf field");
    let value = &page.text[at..];
    let start = value.find("value=\"").unwrap() + 7;
    let csrf = &value[start..start + value[start..].find('"').unwrap()];
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("username", user)
        .append_pair("password", PASSWORD)
        .append_pair("csrf", csrf)
        .append_pair("next", "/devices")
        .finish();
    let r = s.raw(
        "POST",
        "/login",
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Some(body.into_bytes()),
    );
    assert_eq!(r.status, 303, "sign-in: {}", r.text);
}

/// The tables, each with its primary key.
const TABLES: &[(&str, &str)] = &[
    ("users", "id"),
    ("oauth_clients", "client_id"),
    ("devices", "id"),
    ("device_authorizations", "id"),
    ("refresh_tokens", "token_hash"),
    ("revoked_access_tokens", "jti"),
    ("signing_keys", "kid"),
    ("sessions", "id_hash"),
    ("audit_events", "id"),
];

/// Every row of every table of the SQLite file, each value as text (integers in decimal,
/// blobs in hex, NULL as "NULL"), keyed by table.
fn sqlite_rows(path: &std::path::Path) -> BTreeMap<&'static str, Vec<Vec<String>>> {
    use rusqlite::types::ValueRef;
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut out = BTreeMap::new();
    for (table, key) in TABLES {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY {key}"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            ValueRef::Null => "NULL".to_string(),
                            ValueRef::Integer(v) => v.to_string(),
                            ValueRef::Real(v) => v.to_string(),
                            ValueRef::Text(t) => String::from_utf8(t.to_vec()).unwrap(),
                            ValueRef::Blob(b) => hex(b),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        out.insert(*table, rows);
    }
    out
}

/// The same from PostgreSQL (booleans as 0/1).
fn postgres_rows(
    client: &tokio_postgres::Client,
    rt: &tokio::runtime::Runtime,
) -> BTreeMap<&'static str, Vec<Vec<String>>> {
    use tokio_postgres::types::Type;
    let mut out = BTreeMap::new();
    for (table, key) in TABLES {
        let rows = rt
            .block_on(client.query(&format!("SELECT * FROM {table} ORDER BY {key}"), &[]))
            .unwrap();
        let rows = rows
            .iter()
            .map(|r| {
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match *c.type_() {
                        Type::BOOL => r
                            .get::<_, Option<bool>>(i)
                            .map_or("NULL".into(), |b| i64::from(b).to_string()),
                        Type::INT4 => r
                            .get::<_, Option<i32>>(i)
                            .map_or("NULL".into(), |v| v.to_string()),
                        Type::INT8 => r
                            .get::<_, Option<i64>>(i)
                            .map_or("NULL".into(), |v| v.to_string()),
                        Type::TEXT => r.get::<_, Option<String>>(i).unwrap_or("NULL".into()),
                        Type::BYTEA => r
                            .get::<_, Option<Vec<u8>>>(i)
                            .map_or("NULL".into(), |b| hex(&b)),
                        ref t => panic!("{table}: unexpected type {t}"),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        out.insert(*table, rows);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The whole database moves, while the server keeps taking device authorizations: every
/// table arrives, signing keys byte for byte, and PostgreSQL holds exactly the snapshot the
/// copy read (what came after it is in SQLite only). A second run refuses the non-empty target.
#[test]
fn migrate_db_moves_every_row_while_the_server_runs() {
    let db = database!();
    let (s, fx) = populate();
    let before = sqlite_rows(&s.db_path());
    for (table, rows) in &before {
        assert!(!rows.is_empty(), "the fixture has no {table}");
    }

    // Writes during the copy.
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::new(s);
    let writer = {
        let (s, stop, client) = (s.clone(), stop.clone(), fx.public_client.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 400 {
                s.start_device(&client, "read", &format!("during-{n}"));
                n += 1;
            }
            n
        })
    };
    let url = db.url();
    let out = s.cli(&["migrate-db", "--to", &url], None);
    stop.store(true, Ordering::Relaxed);
    let written_during = writer.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("verified"), "{stdout}");
    assert!(written_during > 0);
    eprintln!("{written_during} device authorizations during the copy\n{stdout}");

    let after = sqlite_rows(&s.db_path());
    let (client, rt) = db.client();
    let moved = postgres_rows(&client, &rt);
    for (table, _) in TABLES {
        let pg = &moved[table];
        let (old, new) = (&before[table], &after[table]);
        // The snapshot lies between the state before the copy and the state after it.
        assert!(pg.len() >= old.len() && pg.len() <= new.len(), "{table}");
        for row in old {
            if *table == "device_authorizations" || *table == "devices" {
                // last_polled_at and friends may move; the row itself must be there.
                assert!(
                    pg.iter().any(|r| r[0] == row[0]),
                    "{table}: {:?} missing",
                    row[0]
                );
            } else {
                assert!(pg.contains(row), "{table}: {row:?} missing");
            }
        }
        for row in pg {
            assert!(new.contains(row), "{table}: {row:?} is not SQLite's");
        }
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(table))
            .unwrap_or_else(|| panic!("no summary line for {table}: {stdout}"));
        assert!(line.contains(&format!(" {} rows", pg.len())), "{line}");
    }
    // Keys byte for byte, sealed ones included (the comparison above is of every column;
    // this says it for the reader).
    assert_eq!(moved["signing_keys"], after["signing_keys"]);

    // audit_events' ids keep growing after the move.
    let max: i64 = before["audit_events"]
        .iter()
        .map(|r| r[0].parse::<i64>().unwrap())
        .max()
        .unwrap();
    let id: i64 = rt
        .block_on(client.query_one(
            "INSERT INTO audit_events (at, action) VALUES (0, 'test') RETURNING id",
            &[],
        ))
        .unwrap()
        .get(0);
    assert!(id > max, "{id} after {max}");

    // Again into the same (now non-empty) database: refused, nothing changed.
    let out = s.cli(&["migrate-db", "--to", &url], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");
    let users: i64 = rt
        .block_on(client.query_one("SELECT count(*) FROM users", &[]))
        .unwrap()
        .get(0);
    assert_eq!(users, 2);

    // What the rows mean survived too: Bob's device is trusted and locked, Ada's active.
    let device = |id: &str| -> (String, bool) {
        let r = rt
            .block_on(client.query_one(
                "SELECT status, trusted_device FROM devices WHERE id = $1",
                &[&id],
            ))
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(device(&fx.bob.device_id), ("locked".into(), true));
    assert_eq!(device(&fx.ada.device_id), ("active".into(), false));
    drop(s);

    // The round trip: a server on the moved database serves what was moved.
    let pg = Server::start_with(&[
        ("HALLPASS_DATABASE_URL", &url),
        (
            "HALLPASS_KEYS_SEALING_SECRETS_FILE",
            fx.secrets.1.to_str().unwrap(),
        ),
    ]);
    let (svc, secret) = &fx.confidential_client;
    assert!(
        pg.introspect(svc, secret, &fx.ada.access),
        "Ada's moved access token"
    );
    let r = pg.refresh(&fx.public_client, &fx.ada.refresh);
    assert_eq!(r.status, 200, "Ada's moved refresh token: {}", r.text);
    let refreshed = crate::harness::tokens(&r.body);
    assert!(pg.introspect(svc, secret, &refreshed.access));
    assert!(pg.introspect(svc, secret, &refreshed.refresh));
    // The used one is spent: presented again, it is reuse and ends the family.
    let r = pg.refresh(&fx.public_client, &fx.ada.refresh);
    assert_eq!(r.body["error"], "invalid_grant", "{}", r.text);
    assert!(!pg.introspect(svc, secret, &refreshed.refresh));
    // Bob's revoked access token and locked device stay so.
    assert!(!pg.introspect(svc, secret, &fx.bob.access));
    let r = pg.refresh(&fx.public_client, &fx.bob.refresh);
    assert_eq!(r.body["error"], "invalid_grant", "{}", r.text);
    // The approved code yields tokens once; the pending one is still pending.
    let tokens = pg.exchange(&fx.public_client, &fx.approved_code);
    assert!(pg.introspect(svc, secret, &tokens.access));
    let r = pg.poll(&fx.public_client, &fx.pending_code);
    assert_eq!(r.body["error"], "authorization_pending", "{}", r.text);
    // The confidential client's moved secret still works, for its own grant.
    let r = pg.client_credentials(svc, secret, "read");
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A database left empty by a failed copy: a copy that cannot finish (here, the SQLite file's
/// schema has an extra column PostgreSQL's lacks) commits nothing.
#[test]
fn a_copy_that_fails_leaves_the_target_empty() {
    let db = database!();
    let s = Server::start_sqlite_with(&[]);
    s.add_user("ada", true);
    // Another program's change to the file: migrate-db cannot map it and must stop.
    let conn = rusqlite::Connection::open(s.db_path()).unwrap();
    conn.execute_batch("ALTER TABLE users ADD COLUMN nickname TEXT")
        .unwrap();
    drop(conn);
    let out = s.cli(&["migrate-db", "--to", &db.url()], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nickname"), "{stderr}");
    let (client, rt) = db.client();
    let tables: i64 = rt
        .block_on(client.query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        ))
        .unwrap()
        .get(0);
    assert_eq!(
        tables, 0,
        "the schema's creation was rolled back with the copy"
    );
}

/// Without `--to` and without database.url there is nowhere to copy to: a usage error.
#[test]
fn migrate_db_needs_a_target() {
    let out = hallpass(&["--db", "/nonexistent/x.db", "migrate-db"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--to"), "{stderr}");
}
