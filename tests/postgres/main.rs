//! The PostgreSQL backend's foundations (issue 22) against a throwaway cluster (see
//! tests/support/pg.rs): the schema (created once by instances starting together, refused
//! when foreign or newer, SQLite's tables column for column), TLS as libpq's sslmode says,
//! retried transactions, errors that never show the password, `check` and `backup` with a
//! PostgreSQL URL, and `migrate-db`.
//!
//! Every test returns early, after a line saying how to enable it, where PostgreSQL is not
//! installed; with REQUIRE_POSTGRES=1 (CI) that is a failure instead.

#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;
#[path = "../support/pg.rs"]
mod pg;

mod coordination;
mod instances;
mod migrate_db;
mod plans;
mod tls;
mod transactions;

use std::process::{Command, Output};

use hallpass::config::Config;
use hallpass::store::postgres::{self, schema, PgError};

/// A test's database, or return: PostgreSQL is not installed (and not required).
macro_rules! database {
    () => {
        match crate::pg::database() {
            Some(db) => db,
            None => return,
        }
    };
}
pub(crate) use database;

/// A configuration whose `database.url` is `url`, with `env` on top.
pub fn config(url: &str, env: &[(&str, &str)]) -> Config {
    let mut vars = vec![("HALLPASS_DATABASE_URL".to_string(), url.to_string())];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_sources(None, None, &vars).expect("a valid configuration")
}

/// A runtime for the library's async functions.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `hallpass ARGS` with `env` (and nothing from this process's HALLPASS_* variables).
pub fn hallpass(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(harness::BIN);
    c.args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("HALLPASS_")) {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run hallpass")
}

/// Instances that start together on an empty database create the schema once: the others
/// wait on the migration lock and find it made.
#[test]
fn instances_starting_together_create_the_schema_once() {
    let db = database!();
    let config = config(&db.url(), &[]);
    let rt = runtime();
    let outcomes = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let config = config.clone();
            tasks.push(tokio::spawn(async move {
                let pool = postgres::connect(&config).await?;
                let mut conn = pool.get().await?;
                schema::migrate(&mut conn).await
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap().unwrap());
        }
        out
    });
    let created = outcomes
        .iter()
        .filter(|o| **o == schema::Migrated::Created)
        .count();
    assert_eq!(created, 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, schema::Migrated::Created | schema::Migrated::Current)));
    let (client, rt2) = db.client();
    let rows = rt2
        .block_on(client.query("SELECT application, version FROM hallpass_schema", &[]))
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "hallpass");
    assert_eq!(rows[0].get::<_, i32>(1), schema::CURRENT_VERSION);
    // Opening again finds it current.
    rt.block_on(async {
        let pool = postgres::open(&config).await.unwrap();
        let mut conn = pool.get().await.unwrap();
        assert_eq!(
            schema::migrate(&mut conn).await.unwrap(),
            schema::Migrated::Current
        );
    });
}

/// Someone else's database is refused, untouched; so is one a newer hallpass wrote.
#[test]
fn foreign_and_newer_databases_are_refused() {
    let db = database!();
    let (client, crt) = db.client();
    crt.block_on(client.batch_execute("CREATE TABLE invoices (id INT PRIMARY KEY)"))
        .unwrap();
    let rt = runtime();
    let e = rt
        .block_on(postgres::open(&config(&db.url(), &[])))
        .unwrap_err();
    assert!(matches!(e, PgError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("not a hallpass database"), "{e}");
    let tables: i64 = crt
        .block_on(client.query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        ))
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "nothing was created beside the foreign table");

    let db = database!();
    let config = config(&db.url(), &[]);
    rt.block_on(postgres::open(&config)).unwrap();
    let (client, crt) = db.client();
    crt.block_on(client.batch_execute("UPDATE hallpass_schema SET version = version + 1"))
        .unwrap();
    let e = rt.block_on(postgres::open(&config)).unwrap_err();
    assert!(matches!(e, PgError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("newer than this binary's"), "{e}");
}

/// The data tables have SQLite's columns in SQLite's order, and SQLite's indexes by name with
/// the same uniqueness and partial conditions, so that a database moves row for row.
#[test]
fn the_schema_is_sqlites_column_for_column_and_index_for_index() {
    let db = database!();
    runtime()
        .block_on(postgres::open(&config(&db.url(), &[])))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
    sqlite
        .execute_batch(hallpass::store::sqlite::db::migrate::SCHEMA)
        .unwrap();
    let (client, crt) = db.client();
    for (table, _) in schema::DATA_TABLES {
        let mut stmt = sqlite
            .prepare("SELECT name, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid")
            .unwrap();
        let theirs: Vec<(String, bool)> = stmt
            .query_map([table], |r| {
                Ok((r.get(0)?, r.get::<_, bool>(1)? || r.get::<_, i64>(2)? > 0))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let ours: Vec<(String, bool)> = crt
            .block_on(client.query(
                "SELECT column_name::text, is_nullable = 'NO' FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                &[table],
            ))
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(ours, theirs, "{table}: (column, NOT NULL)");
    }
    let mut stmt = sqlite
        .prepare(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL \
             ORDER BY name",
        )
        .unwrap();
    let indexes: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(indexes.len() >= 10, "{indexes:?}");
    for (name, sql) in indexes {
        let row = crt
            .block_on(client.query_opt(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND indexname = $1",
                &[&name],
            ))
            .unwrap()
            .unwrap_or_else(|| panic!("no index {name} in PostgreSQL"));
        let def: String = row.get(0);
        assert_eq!(
            def.contains("UNIQUE"),
            sql.contains("UNIQUE"),
            "{name}: {def} / {sql}"
        );
        assert_eq!(
            def.contains(" WHERE "),
            sql.contains(" WHERE "),
            "{name}: {def} / {sql}"
        );
    }
}

/// Usernames are unique as SQLite's NOCASE makes them: ASCII case folds, other letters do
/// not (so every SQLite file's users fit).
#[test]
fn usernames_fold_ascii_case_only_as_sqlite_does() {
    let db = database!();
    runtime()
        .block_on(postgres::open(&config(&db.url(), &[])))
        .unwrap();
    let (client, crt) = db.client();
    let add = |id: &str, name: &str| {
        crt.block_on(client.execute(
            "INSERT INTO users (id, username, password_hash, created, updated) \
             VALUES ($1, $2, 'x', 0, 0)",
            &[&id, &name],
        ))
    };
    add("1", "Ada").unwrap();
    let e = add("2", "aDA").unwrap_err();
    assert!(postgres::is_unique_violation(&e), "{e:?}");
    add("3", "Émile").unwrap();
    add("4", "émile").unwrap();
}

/// `hallpass check` with a PostgreSQL URL connects and says what the database holds; a
/// server it cannot reach is exit 1, a CA file it cannot read exit 2; neither message shows
/// the password.
#[test]
fn check_connects_and_never_shows_the_password() {
    let db = database!();
    let ca = db.cluster.ca_file();
    let url = format!(
        "postgres://postgres:pw-Hush42@localhost:{}/{}?sslmode=verify-full",
        db.cluster.port, db.name
    );
    let env = [
        ("HALLPASS_DATABASE_URL", url.as_str()),
        ("HALLPASS_DATABASE_CA_FILE", ca.to_str().unwrap()),
    ];
    let out = hallpass(&["check"], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("connected: PostgreSQL"), "{stdout}");
    assert!(stdout.contains("is empty"), "{stdout}");
    assert!(
        stdout.contains("postgres://postgres:***@localhost"),
        "{stdout}"
    );
    assert!(!format!("{stdout}{stderr}").contains("Hush42"));

    // Nobody listening: exit 1, the URL redacted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = format!("postgres://postgres:pw-Hush42@127.0.0.1:{port}/x?sslmode=disable");
    let out = hallpass(
        &["check"],
        &[
            ("HALLPASS_DATABASE_URL", &down),
            ("HALLPASS_DATABASE_CONNECT_TIMEOUT", "2s"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to postgres://postgres:***@127.0.0.1"),
        "{stderr}"
    );
    assert!(!stderr.contains("Hush42"), "{stderr}");

    // A CA file that is not there: a configuration error.
    let out = hallpass(
        &["check"],
        &[
            ("HALLPASS_DATABASE_URL", &url),
            ("HALLPASS_DATABASE_CA_FILE", "/nonexistent/ca.pem"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("database.ca_file /nonexistent/ca.pem"),
        "{stderr}"
    );
    assert!(!stderr.contains("Hush42"), "{stderr}");
}

/// `hallpass backup` on PostgreSQL says to use pg_dump; serving and the admin commands use the
/// PostgreSQL URL (never the SQLite file) and say so when it cannot be reached, without its
/// password.
#[test]
fn backup_points_to_pg_dump_and_commands_use_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("copy.db");
    let env = [(
        "HALLPASS_DATABASE_URL",
        "postgres://u:pw-Hush42@db.example.org/h",
    )];
    let out = hallpass(&["backup", target.to_str().unwrap()], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(!stderr.contains("Hush42"), "{stderr}");
    assert!(!target.exists());
    // Nothing listens on port 1: refused at once.
    let db = dir.path().join("hallpass.db");
    let env = [
        (
            "HALLPASS_DATABASE_URL",
            "postgres://u:pw-Hush42@127.0.0.1:1/h?sslmode=disable",
        ),
        ("HALLPASS_DATABASE_PATH", db.to_str().unwrap()),
    ];
    for args in [&["serve"][..], &["user", "list"], &["keys", "list"]] {
        let out = hallpass(args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("cannot connect to"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Hush42"), "{stderr}");
    }
    assert!(!db.exists(), "no SQLite file is made when the URL is set");
}

/// Instances that start together and each create the first key of an algorithm meet the
/// unique index on active keys: one insert wins, the other gets a unique violation (which the
/// store answers by reading the winner's key), also when the two race.
#[test]
fn two_first_keys_of_an_algorithm_cannot_both_be_active() {
    let db = database!();
    let config = config(&db.url(), &[]);
    runtime().block_on(async {
        let a = postgres::open(&config).await.unwrap();
        let b = postgres::connect(&config).await.unwrap();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for (pool, kid) in [(a, "first-a"), (b, "first-b")] {
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = pool.get().await.unwrap();
                let tx = conn.transaction().await.unwrap();
                let none: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM signing_keys WHERE algorithm = 'EdDSA' \
                         AND activated IS NOT NULL AND retired IS NULL",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(none, 0);
                // Both saw no key; both insert one.
                barrier.wait().await;
                let inserted = tx
                    .execute(
                        "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, \
                         created, activated) VALUES ($1, 'EdDSA', '\\x00', '\\x00', 1, 1)",
                        &[&kid],
                    )
                    .await;
                match inserted {
                    Ok(_) => tx.commit().await.map(|_| true).unwrap(),
                    Err(e) => {
                        assert!(postgres::is_unique_violation(&e), "{e:?}");
                        false
                    }
                }
            }));
        }
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1);
    });
}
